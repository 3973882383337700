"""Queues (QueueConfig). Every change asks the ACD to reload, in the same transaction.

A queue may only name skills in the catalog and overflow into queues that exist; one that contacts
are waiting in, that an IVR flow in force routes to, or that another queue overflows into cannot be
deleted.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from aicc.appliance.acd.policy import QueueConfig
from aicc.appliance.api import audit
from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    ApiError,
    PoolDep,
    Principal,
    client_address,
    conflict,
    error_responses,
    not_found,
    require,
)
from aicc.appliance.api.routes import request_acd_reload
from aicc.appliance.api.routes.skills import unknown_skills

router = APIRouter(tags=["queues"], responses=COMMON_ERRORS)


async def queue_problems(conn: AsyncConnection[DictRow], queue: QueueConfig) -> list[tuple[str, str]]:
    """(field, message) for each skill the catalog lacks and each overflow target that does not exist."""
    problems = []
    for skill in await unknown_skills(conn, queue.skills):
        problems.append((f"skills.{skill}", "not in the skill catalog (POST /api/skills to add it)"))
    for i, step in enumerate(queue.overflow):
        for skill in await unknown_skills(conn, step.skills or {}):
            problems.append((f"overflow[{i}].skills.{skill}", "not in the skill catalog"))
        target = await _load(conn, step.queue) if step.queue is not None else None
        if step.queue is not None and target is None:
            problems.append((f"overflow[{i}].queue", f"no queue {step.queue!r}"))
        elif target is not None and target.channel != queue.channel:
            # A chat moved into a voice queue would wait for an agent's phone it cannot ring.
            why = f"queue {step.queue!r} takes {target.channel} contacts, this one {queue.channel}"
            problems.append((f"overflow[{i}].queue", why))
    return problems


async def check_queue(conn: AsyncConnection[DictRow], queue: QueueConfig) -> None:
    problems = await queue_problems(conn, queue)
    if problems:
        raise ApiError(
            422, "invalid_reference", f"queue {queue.name!r} names unknown things", problems=problems
        )


async def _load(conn: AsyncConnection[DictRow], name: str, *, lock: bool = False) -> QueueConfig | None:
    query = sql.SQL("SELECT config FROM aicc.queues WHERE name = %s {}").format(
        sql.SQL("FOR UPDATE" if lock else "")
    )
    row = await (await conn.execute(query, (name,))).fetchone()
    return QueueConfig.model_validate(row["config"]) if row else None


async def insert_queue(conn: AsyncConnection[DictRow], queue: QueueConfig) -> bool:
    """Add a queue (references unchecked); False when one of that name exists."""
    cur = await conn.execute(
        "INSERT INTO aicc.queues (name, config) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
        (queue.name, _json(queue)),
    )
    return cur.rowcount == 1


def _json(queue: QueueConfig) -> Jsonb:
    return Jsonb(queue.model_dump(mode="json"))


async def queue_users(conn: AsyncConnection[DictRow], name: str) -> list[str]:
    """What still needs queue `name`: contacts in it, pending callbacks, flows in force, other queues."""
    uses = []
    row = await (
        await conn.execute("SELECT count(*) AS n FROM aicc.acd_contacts WHERE queue = %s", (name,))
    ).fetchone()
    if row and row["n"]:
        uses.append(f"{row['n']} contact(s) waiting or connected")
    row = await (
        await conn.execute(
            "SELECT count(*) AS n FROM aicc.acd_callbacks WHERE queue = %s AND status = 'pending'", (name,)
        )
    ).fetchone()
    if row and row["n"]:
        uses.append(f"{row['n']} pending callback(s)")
    flows = await (
        await conn.execute(
            "SELECT f.name FROM aicc.ivr_active a JOIN aicc.ivr_flows f USING (name, version) "
            "WHERE jsonb_path_exists(f.document, 'strict $.**.queue ? (@ == $q)', "
            "jsonb_build_object('q', %s::text)) "
            "ORDER BY f.name",
            (name,),
        )
    ).fetchall()
    uses += [f"flow {r['name']}" for r in flows]
    for other in await (await conn.execute("SELECT config FROM aicc.queues ORDER BY name")).fetchall():
        q = QueueConfig.model_validate(other["config"])
        if any(step.queue == name for step in q.overflow):
            uses.append(f"queue {q.name} (overflow)")
    return uses


@router.get("/api/queues", response_model=list[QueueConfig])
async def list_queues(
    principal: Annotated[Principal, Depends(require("config.read"))], pool: PoolDep
) -> list[QueueConfig]:
    async with pool.connection() as conn:
        rows = await (await conn.execute("SELECT config FROM aicc.queues ORDER BY name")).fetchall()
    return [QueueConfig.model_validate(r["config"]) for r in rows]


@router.get("/api/queues/{name}", response_model=QueueConfig, responses=error_responses(404))
async def get_queue(
    name: str, principal: Annotated[Principal, Depends(require("config.read"))], pool: PoolDep
) -> QueueConfig:
    async with pool.connection() as conn:
        queue = await _load(conn, name)
    if queue is None:
        raise not_found("queue", name)
    return queue


@router.post("/api/queues", response_model=QueueConfig, status_code=201, responses=error_responses(409))
async def create_queue(
    body: QueueConfig,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> QueueConfig:
    async with pool.connection() as conn:
        await check_queue(conn, body)
        if not await insert_queue(conn, body):
            raise conflict(f"queue {body.name!r} exists already; PUT /api/queues/{body.name} changes it")
        await request_acd_reload(conn)
        await audit.record(
            conn, principal, "queue.create", "queue", body.name, None, body, client_address(request)
        )
    return body


@router.put("/api/queues/{name}", response_model=QueueConfig, responses=error_responses(404))
async def replace_queue(
    name: str,
    body: QueueConfig,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> QueueConfig:
    """Replace a queue's whole configuration (its name cannot change)."""
    if body.name != name:
        raise ApiError(
            422,
            "name_mismatch",
            f"the body names queue {body.name!r} but the path {name!r}; a queue cannot be renamed",
            problems=[("name", f"must be {name!r}")],
        )
    async with pool.connection() as conn:
        before = await _load(conn, name, lock=True)
        if before is None:
            raise not_found("queue", name)
        await check_queue(conn, body)
        await conn.execute(
            "UPDATE aicc.queues SET config = %s, updated_at = now() WHERE name = %s", (_json(body), name)
        )
        await request_acd_reload(conn)
        await audit.record(
            conn, principal, "queue.update", "queue", name, before, body, client_address(request)
        )
    return body


@router.delete("/api/queues/{name}", status_code=204, responses=error_responses(404, 409))
async def delete_queue(
    name: str,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> Response:
    """Remove a queue nothing uses any more (see the 409's message for what still does)."""
    async with pool.connection() as conn:
        before = await _load(conn, name, lock=True)
        if before is None:
            raise not_found("queue", name)
        uses = await queue_users(conn, name)
        if uses:
            raise conflict(f"queue {name!r} is in use: {'; '.join(uses)}")
        await conn.execute("DELETE FROM aicc.queues WHERE name = %s", (name,))
        await request_acd_reload(conn)
        await audit.record(
            conn, principal, "queue.delete", "queue", name, before, None, client_address(request)
        )
    return Response(status_code=204)
