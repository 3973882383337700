"""The API's routers, and what several of them share.

Another component's router joins the app by being listed in `routers()`; the access-matrix test
then checks its permissions like every other route's.
"""

from __future__ import annotations

from uuid import uuid4

from fastapi import APIRouter
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A request body: unknown fields are refused (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")


async def request_acd_reload(conn: AsyncConnection[DictRow], source: str = "api") -> None:
    """Tell the active ACD that queues, agents' profiles or the routing policy changed. Part of the
    caller's transaction: the command (and its NOTIFY) exists only if the change is committed."""
    await conn.execute(
        "INSERT INTO aicc.acd_commands (uid, kind, payload, source) VALUES (%s, 'reload', '{}', %s)",
        (uuid4(), source),
    )
    await conn.execute("NOTIFY acd_commands")


def routers() -> list[APIRouter]:
    from aicc.appliance.api.routes import (
        acd,
        agents,
        audit,
        auth,
        calls,
        conversations,
        dispositions,
        flows,
        health,
        kb,
        live,
        notifications,
        ops,
        pages,
        queues,
        reports,
        retention,
        routing_policy,
        skills,
        softphone,
        tickets,
        tokens,
        users,
        webchat,
        wechat_oa,
        wecom,
    )

    modules = (
        health,
        auth,
        users,
        tokens,
        audit,
        skills,
        queues,
        dispositions,
        agents,
        routing_policy,
        acd,
        flows,
        calls,
        tickets,
        notifications,
        kb,
        conversations,
        webchat,
        wecom,
        wechat_oa,
        reports,
        retention,
        softphone,
        live,
        ops,
        pages,
    )
    return [m.router for m in modules]
