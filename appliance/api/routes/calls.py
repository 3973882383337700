"""Call records (CDRs): the list, one call with its way through the flow and the ACD (queue wait, the
agent, talk, hold, wrap-up, disposition, survey: from the event log), and its transcript, which is the
link the agent's leg carries (X-AICC-Transcript).

Supervisors and auditors read every call (calls.read); an agent reads the calls they answered.
Callers' numbers are masked for roles without numbers.full.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal, LiteralString

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import BaseModel

from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    PoolDep,
    Principal,
    error_responses,
    mask_number,
    not_found,
    require,
)
from aicc.appliance.api.redact import redact_for, redact_json
from aicc.appliance.reports.queries import cdr

router = APIRouter(tags=["calls"], responses=COMMON_ERRORS)

Outcome = Literal["resolved", "transferred", "abandoned", "failed", "rejected", "callback"]


class CallSummary(BaseModel):
    call_id: str
    caller: str
    service: str
    flow: str
    bot: str
    language: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None
    outcome: str
    end_reason: str
    queue: str
    agent: str
    contact_id: str | None
    summary: str
    transcript: str


class Line(BaseModel):
    speaker: str
    text: str
    at_s: float
    language: str


class ToolCall(BaseModel):
    tool: str
    arguments: dict[str, Any]
    ok: bool
    error: str
    confirmed: bool | None
    at_s: float


class ContactRecord(BaseModel):
    contact_id: str
    queue: str | None
    outcome: str
    agent_id: int | None
    wait_s: float | None
    talk_s: float | None
    hold_s: float | None
    wrap_s: float | None
    disposition: str | None
    csat: float | None
    legs: list[dict[str, Any]]


class CallDetail(CallSummary):
    contact: ContactRecord | None
    tool_calls: list[ToolCall]
    turns: list[dict[str, float]]


_COLUMNS: LiteralString = (
    "call_id, caller, service, flow, bot, language, started_at, answered_at, ended_at, "
    "extract(epoch FROM ended_at - started_at) AS duration_s, outcome, end_reason, queue, agent, "
    "contact_id::text, summary"
)


async def _own_extension(conn: AsyncConnection[DictRow], principal: Principal) -> str | None:
    """The agent's extension when the principal may read only their own calls, else None (all)."""
    if principal.can("calls.read"):
        return None
    row = await (
        await conn.execute("SELECT extension FROM aicc.agents WHERE user_id = %s", (principal.user_id,))
    ).fetchone()
    return str(row["extension"]) if row and row["extension"] else "\x00"  # no extension: no calls


def _summary(row: dict[str, Any], principal: Principal) -> CallSummary:
    return CallSummary(
        **{
            **row,
            "caller": mask_number(row["caller"], principal),
            "summary": redact_for(row["summary"] or "", principal),
        },
        transcript=f"/api/calls/{row['call_id']}/transcript",
    )


@router.get("/api/calls", response_model=list[CallSummary])
async def list_calls(
    principal: Annotated[Principal, Depends(require("calls.own.read"))],
    pool: PoolDep,
    since: Annotated[datetime | None, Query(description="calls started at or after")] = None,
    until: Annotated[datetime | None, Query(description="calls started before")] = None,
    outcome: Annotated[Outcome | None, Query()] = None,
    queue: Annotated[str | None, Query(max_length=41)] = None,
    agent: Annotated[str | None, Query(max_length=32, description="the agent's extension")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[CallSummary]:
    """Calls, newest first."""
    async with pool.connection() as conn:
        own = await _own_extension(conn, principal)
        rows = await (
            await conn.execute(
                "SELECT " + _COLUMNS + " FROM aicc.calls "  # noqa: S608  # a constant column list
                "WHERE (%(since)s::timestamptz IS NULL OR started_at >= %(since)s) "
                "AND (%(until)s::timestamptz IS NULL OR started_at < %(until)s) "
                "AND (%(outcome)s::text IS NULL OR outcome = %(outcome)s) "
                "AND (%(queue)s::text IS NULL OR queue = %(queue)s) "
                "AND (%(agent)s::text IS NULL OR agent = %(agent)s) "
                "AND (%(own)s::text IS NULL OR agent = %(own)s) "
                "ORDER BY started_at DESC LIMIT %(limit)s OFFSET %(offset)s",
                {
                    "since": since,
                    "until": until,
                    "outcome": outcome,
                    "queue": queue,
                    "agent": agent,
                    "own": own,
                    "limit": limit,
                    "offset": offset,
                },
            )
        ).fetchall()
    return [_summary(dict(r), principal) for r in rows]


async def _call(conn: AsyncConnection[DictRow], call_id: str, principal: Principal) -> dict[str, Any]:
    own = await _own_extension(conn, principal)
    row = await (
        await conn.execute(
            "SELECT " + _COLUMNS + " FROM aicc.calls WHERE call_id = %s",  # noqa: S608  # constant columns
            (call_id,),
        )
    ).fetchone()
    if row is None or (own is not None and row["agent"] != own):
        raise not_found("call", call_id)
    return dict(row)


@router.get("/api/calls/{call_id}", response_model=CallDetail, responses=error_responses(404))
async def get_call(
    call_id: str, principal: Annotated[Principal, Depends(require("calls.own.read"))], pool: PoolDep
) -> CallDetail:
    """One call: the record, its contact's legs from the event log (queue wait, agent, talk, hold,
    wrap-up, disposition, survey), the bot's tool calls and per-turn latencies."""
    async with pool.connection() as conn:
        row = await _call(conn, call_id, principal)
        record = await cdr(conn, row["contact_id"]) if row["contact_id"] else None
        tools = await (
            await conn.execute(
                "SELECT tool, arguments, ok, error, confirmed, at_s FROM aicc.call_tool_calls "
                "WHERE call_id = %s ORDER BY seq",
                (call_id,),
            )
        ).fetchall()
        turns = await (
            await conn.execute(
                "SELECT stages FROM aicc.call_turns WHERE call_id = %s ORDER BY turn", (call_id,)
            )
        ).fetchall()
    contact = None
    if record is not None:
        fields = asdict(record)
        fields["legs"] = [{**leg, "at": leg["at"].isoformat()} for leg in fields["legs"]]
        contact = ContactRecord(**{k: v for k, v in fields.items() if k in ContactRecord.model_fields})
    return CallDetail(
        **_summary(row, principal).model_dump(),
        contact=contact,
        tool_calls=[ToolCall(**{**t, "arguments": redact_json(t["arguments"], principal)}) for t in tools],
        turns=[t["stages"] for t in turns],
    )


@router.get(
    "/api/calls/{call_id}/transcript",
    response_model=list[Line],
    responses={**error_responses(404), 200: {"content": {"text/plain": {}}}},
)
async def call_transcript(
    call_id: str,
    principal: Annotated[Principal, Depends(require("calls.own.read"))],
    pool: PoolDep,
    format: Annotated[Literal["json", "text"], Query()] = "json",
) -> list[Line] | PlainTextResponse:
    """Both sides of the conversation, as the call went (the agent's leg links here)."""
    async with pool.connection() as conn:
        await _call(conn, call_id, principal)
        rows = await (
            await conn.execute(
                "SELECT speaker, text, at_s, language FROM aicc.call_lines WHERE call_id = %s ORDER BY seq",
                (call_id,),
            )
        ).fetchall()
    lines = [Line(**{**r, "text": redact_for(r["text"], principal)}) for r in rows]
    if format == "text":
        return PlainTextResponse("".join(f"[{ln.at_s:7.2f}] {ln.speaker}: {ln.text}\n" for ln in lines))
    return lines
