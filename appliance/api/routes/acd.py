"""Working with the ACD: an agent's own status and wrap-up, a supervisor setting an agent's status
(audited), the live figures, and the callback list.

Status changes are commands to the active ACD (appliance/acd/commands.py): the answer is the ACD's,
so an agent whose phone is not registered is told so (409), and with no active ACD the API says that
(503) instead of pretending.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import BaseModel, Field

from aicc.appliance.acd import commands as cmds
from aicc.appliance.acd.client import AcdRejected, AcdUnavailable
from aicc.appliance.api import audit
from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    AcdDep,
    ApiError,
    PoolDep,
    Principal,
    client_address,
    error_responses,
    mask_number,
    not_found,
    require,
)
from aicc.appliance.api.routes import Strict

router = APIRouter(tags=["acd"], responses=COMMON_ERRORS)

Reason = Annotated[str, Field("", max_length=40, pattern=r"^[a-z0-9_]*$", description="e.g. break, training")]


class StatusChange(Strict):
    status: Literal["ready", "away", "logged_out"]
    reason: Reason = ""


class AgentNow(BaseModel):
    agent_id: int
    status: str
    state: str
    reason: str = ""


class WrapUp(Strict):
    contact_id: str | None = Field(None, description="the contact wrapped up (the last one when absent)")
    disposition: str = Field(pattern=r"^[a-z0-9_]{1,40}$")
    note: str = Field("", max_length=2000)


class LiveAgent(BaseModel):
    agent_id: int
    username: str
    display_name: str
    extension: str | None
    status: str
    state: str
    reason: str
    since: datetime | None


class LiveContact(BaseModel):
    contact_id: str
    queue: str
    state: str
    language: str
    caller: str
    waiting_s: float
    agent_id: int | None


class Callback(BaseModel):
    id: str
    queue: str
    number: str
    language: str
    requested_at: datetime
    status: str
    note: str
    updated_at: datetime
    updated_by: str


class CallbackChange(Strict):
    status: Literal["pending", "done", "cancelled"]
    note: str = Field("", max_length=2000)


async def _ask(acd: AcdDep, cmd: cmds.Command) -> dict[str, Any]:
    try:
        result = await acd.submit(cmd)
    except AcdRejected as exc:
        status = 404 if exc.code in ("unknown_agent", "unknown_contact") else 409
        raise ApiError(status, exc.code, str(exc)) from None
    except AcdUnavailable as exc:
        raise ApiError(503, "acd_unavailable", str(exc), headers={"Retry-After": "5"}) from None
    return result or {}


async def _agent_state(conn: AsyncConnection[DictRow], agent_id: int) -> dict[str, Any] | None:
    row = await (
        await conn.execute("SELECT state FROM aicc.acd_agent_state WHERE user_id = %s", (agent_id,))
    ).fetchone()
    return dict(row["state"]) if row else None


async def _is_agent(conn: AsyncConnection[DictRow], agent_id: int) -> bool:
    row = await (await conn.execute("SELECT 1 FROM aicc.agents WHERE user_id = %s", (agent_id,))).fetchone()
    return row is not None


@router.post("/api/agents/me/status", response_model=AgentNow, responses=error_responses(404, 409))
async def set_my_status(
    body: StatusChange,
    principal: Annotated[Principal, Depends(require("agent.self"))],
    pool: PoolDep,
    acd: AcdDep,
) -> AgentNow:
    """Go ready, away (with a reason) or log out. Ready needs a registered phone (409 otherwise)."""
    async with pool.connection() as conn:
        if not await _is_agent(conn, principal.user_id):
            raise not_found("agent profile for user", principal.username)
    cmd = cmds.AgentStatus(
        agent_id=principal.user_id, status=body.status, reason=body.reason, by=principal.username
    )
    result = await _ask(acd, cmd)
    return AgentNow(agent_id=principal.user_id, **_now(result))


@router.post("/api/agents/{agent_id}/status", response_model=AgentNow, responses=error_responses(404, 409))
async def set_agent_status(
    agent_id: int,
    body: StatusChange,
    request: Request,
    principal: Annotated[Principal, Depends(require("agents.state.write"))],
    pool: PoolDep,
    acd: AcdDep,
) -> AgentNow:
    """A supervisor sets an agent's status (audited with before and after)."""
    async with pool.connection() as conn:
        if not await _is_agent(conn, agent_id):
            raise not_found("agent", agent_id)
        before = await _agent_state(conn, agent_id)
    cmd = cmds.AgentStatus(agent_id=agent_id, status=body.status, reason=body.reason, by=principal.username)
    result = await _ask(acd, cmd)
    after = AgentNow(agent_id=agent_id, **_now(result))
    async with pool.connection() as conn:
        await audit.record(
            conn,
            principal,
            "agent.state",
            "agent",
            str(agent_id),
            {"status": (before or {}).get("status"), "reason": (before or {}).get("reason")},
            after.model_dump(),
            client_address(request),
        )
    return after


def _now(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": result.get("status", ""),
        "state": result.get("state", ""),
        "reason": result.get("reason", ""),
    }


@router.post("/api/agents/me/wrapup", response_model=AgentNow, responses=error_responses(404, 409, 422))
async def finish_wrapup(
    body: WrapUp,
    principal: Annotated[Principal, Depends(require("agent.self"))],
    pool: PoolDep,
    acd: AcdDep,
) -> AgentNow:
    """End after-contact work with a disposition code (and a note): the agent is available again."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT active FROM aicc.dispositions WHERE code = %s", (body.disposition,))
        ).fetchone()
        if row is None or not row["active"]:
            raise ApiError(
                422,
                "invalid_reference",
                f"no active disposition {body.disposition!r} (GET /api/dispositions lists them)",
                problems=[("disposition", "not an active disposition code")],
            )
    cmd = cmds.WrapupDone(
        agent_id=principal.user_id, contact_id=body.contact_id, disposition=body.disposition, note=body.note
    )
    result = await _ask(acd, cmd)
    return AgentNow(agent_id=principal.user_id, **_now(result))


@router.get("/api/live/queues")
async def live_queues(
    principal: Annotated[Principal, Depends(require("live.read"))], acd: AcdDep
) -> dict[str, Any]:
    """Each queue now, from the active ACD: waiting, longest wait, agents who qualify by status and
    state, how many are staffed and available."""
    result = await _ask(acd, cmds.Live())
    return {"queues": result.get("queues", {})}


@router.get("/api/live/agents", response_model=list[LiveAgent])
async def live_agents(
    principal: Annotated[Principal, Depends(require("live.read"))], pool: PoolDep
) -> list[LiveAgent]:
    """Every agent's status and state as the ACD last persisted them (within a second of a change)."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT a.user_id, u.username, u.display_name, a.extension, s.state "
                "FROM aicc.agents a JOIN aicc.users u ON u.id = a.user_id "
                "LEFT JOIN aicc.acd_agent_state s ON s.user_id = a.user_id ORDER BY u.username"
            )
        ).fetchall()
    out = []
    for r in rows:
        state = r["state"] or {}
        out.append(
            LiveAgent(
                agent_id=r["user_id"],
                username=r["username"],
                display_name=r["display_name"],
                extension=r["extension"],
                status=state.get("status", "logged_out"),
                state=state.get("state", "idle"),
                reason=state.get("reason", ""),
                since=_epoch(state.get("since")),
            )
        )
    return out


def _epoch(value: Any) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if isinstance(value, int | float) else None


@router.get("/api/live/contacts", response_model=list[LiveContact])
async def live_contacts(
    principal: Annotated[Principal, Depends(require("live.read"))], pool: PoolDep
) -> list[LiveContact]:
    """Contacts waiting, ringing an agent or talking to one; callers' numbers masked by role."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT id::text, queue, state, contact FROM aicc.acd_contacts ORDER BY seq")
        ).fetchall()
    now = time.time()
    return [LiveContact(**contact_view(r, principal, now)) for r in rows]


def contact_view(row: dict[str, Any], principal: Principal, now: float) -> dict[str, Any]:
    """An acd_contacts row (id, queue, state, contact) as `principal` may see it: LiveContact's fields,
    the caller's number masked by role. The live stream sends the same."""
    c = row["contact"]
    return {
        "contact_id": row["id"],
        "queue": row["queue"],
        "state": row["state"],
        "language": c.get("language", ""),
        "caller": mask_number(str(c.get("caller", "")), principal),
        "waiting_s": round(max(0.0, now - float(c.get("enqueued_at", now))), 1),
        "agent_id": (c.get("reservation") or {}).get("agent_id") or c.get("agent_id"),
    }


@router.get("/api/callbacks", response_model=list[Callback])
async def list_callbacks(
    principal: Annotated[Principal, Depends(require("callbacks.read"))],
    pool: PoolDep,
    status: Annotated[Literal["pending", "done", "cancelled"] | None, Query()] = "pending",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[Callback]:
    """Callbacks callers asked for, oldest first; numbers masked by role."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT id::text, queue, number, language, requested_at, status, note, updated_at, "
                "updated_by FROM aicc.acd_callbacks WHERE %s::text IS NULL OR status = %s "
                "ORDER BY requested_at LIMIT %s",
                (status, status, limit),
            )
        ).fetchall()
    return [Callback(**{**r, "number": mask_number(r["number"], principal)}) for r in rows]


@router.patch("/api/callbacks/{callback_id}", response_model=Callback, responses=error_responses(404))
async def change_callback(
    callback_id: str,
    body: CallbackChange,
    request: Request,
    principal: Annotated[Principal, Depends(require("callbacks.write"))],
    pool: PoolDep,
) -> Callback:
    """Mark a callback done or cancelled (or pending again), with a note; audited."""
    async with pool.connection() as conn:
        query = (
            "SELECT id::text, queue, number, language, requested_at, status, note, updated_at, updated_by "
            "FROM aicc.acd_callbacks WHERE id::text = %s"
        )
        before = await (await conn.execute(query + " FOR UPDATE", (callback_id,))).fetchone()
        if before is None:
            raise not_found("callback", callback_id)
        await conn.execute(
            "UPDATE aicc.acd_callbacks SET status = %s, note = %s, updated_at = now(), updated_by = %s "
            "WHERE id::text = %s",
            (body.status, body.note, principal.username, callback_id),
        )
        after = await (await conn.execute(query, (callback_id,))).fetchone()
        assert after is not None
        keep = ("status", "note")
        await audit.record(
            conn,
            principal,
            "callback.update",
            "callback",
            callback_id,
            {k: before[k] for k in keep},
            {k: after[k] for k in keep},
            client_address(request),
        )
    return Callback(**{**after, "number": mask_number(after["number"], principal)})
