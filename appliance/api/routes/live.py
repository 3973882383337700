"""GET /api/live/stream: the live picture as server-sent events, pushed within a second of a change.

Each `snapshot` event is the whole picture for this caller (pages render it idempotently): queues
with today's counts, agents, contacts (callers masked by role) and, for an agent, `me`: their state,
the queues they serve, the call ringing or connected to them with the bot's transcript and summary
(the screen pop), the chat the ACD offers them (`chat_offer`: conversation, customer, summary, until
when it rings) and how many chats they hold of their chat capacity (`chats`). A `ping` event every
PING_S keeps proxies from closing a quiet stream and lets the page tell a live stream from a dead
one. The token is checked again every REVALIDATE_S: a revoked or expired session ends the stream
with an `end` event. An open stream counts as use of the session (an open desktop is an agent at
work).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from aicc.appliance.api.auth import check_token
from aicc.appliance.api.chat_routing import CHAT_CHANNEL
from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    SESSION_COOKIE,
    AcdDep,
    ApiError,
    PoolDep,
    Principal,
    api_state,
    require,
)
from aicc.appliance.api.live import Picture, Pool, queues_served
from aicc.appliance.api.redact import redact_for, redact_json
from aicc.appliance.api.routes.acd import contact_view
from aicc.appliance.conversations.record import caller_record

router = APIRouter(tags=["acd"], responses=COMMON_ERRORS)

PING_S = 15.0
REVALIDATE_S = 60.0
TRANSCRIPT_LINES = 40  # the pop shows the end of a long bot conversation


@router.get(
    "/api/live/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
)
async def live_stream(
    request: Request,
    principal: Annotated[Principal, Depends(require("live.read"))],
    pool: PoolDep,
    acd: AcdDep,
) -> StreamingResponse:
    """Live queues, agents and contacts (and the caller's own agent state and screen pop), pushed."""
    state = api_state(request)
    hub = state.live
    if hub is None:
        raise ApiError(503, "starting", "the service is starting; try again", headers={"Retry-After": "2"})
    auth = request.headers.get("authorization", "")
    token = auth[7:] if auth[:7].lower() == "bearer " else request.cookies.get(SESSION_COOKIE, "")

    async def events() -> AsyncIterator[str]:
        seen, checked = -1, time.monotonic()
        # Tell EventSource how long to wait before reconnecting after the stream ends.
        yield "retry: 2000\n\n"
        while True:
            if time.monotonic() - checked >= REVALIDATE_S:
                checked = time.monotonic()
                async with pool.connection() as conn:
                    check = await check_token(
                        conn, state.secret_key, token, idle_s=state.config.session_idle_s
                    )
                if check is None or check.refused:
                    reason = check.refused if check else "the session ended"
                    yield _event("end", {"code": "unauthorized", "message": reason})
                    return
            version = await hub.wait(seen, PING_S if seen >= 0 else 0.0)
            if version == seen:
                # A named event, not a comment: the page's EventSource sees it and knows the stream lives.
                yield _event("ping", {"at": time.time()})
                continue
            seen = version
            picture = await hub.picture(pool, acd)
            yield _event("snapshot", await snapshot(picture, principal, pool))

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        # No caching, and no buffering in nginx: each event must reach the page at once.
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def snapshot(picture: Picture, principal: Principal, pool: Pool) -> dict[str, Any]:
    now = time.time()
    contacts = [contact_view(c, principal, now) for c in picture.contacts]
    me = None
    if principal.user_id in picture.profiles:
        async with pool.connection() as conn:
            me = await _me(conn, picture, principal, now)
    return {
        "at": now,
        "acd_available": picture.acd_available,
        "queues": picture.queues,
        "agents": picture.agents,
        "contacts": contacts,
        "me": me,
    }


async def _me(
    conn: AsyncConnection[DictRow], picture: Picture, principal: Principal, now: float
) -> dict[str, Any]:
    state = picture.states.get(principal.user_id) or {}
    wraps = state.get("wraps") or []
    rows = {c["id"]: c for c in picture.contacts}
    connected: dict[str, str] = state.get("connected") or {}
    reserved = state.get("reserved_for")
    offered = rows.get(reserved) if reserved else None
    chat_offer = None
    if offered is not None and offered["contact"].get("channel") == CHAT_CHANNEL:
        # A chat ringing for the agent: the desk shows it apart, the phone's pop stays the call's.
        chat_offer, reserved = _chat_offer(offered, picture, principal, now), None
    # The phone's contact: the one ringing, else a call in progress (chats are the Chats tab's).
    calls = sorted(cid for cid, channel in connected.items() if channel != CHAT_CHANNEL)
    contact_id = reserved or next(iter(calls), None)
    contact = None
    if contact_id is not None:
        row = rows.get(contact_id)
        if row is not None:
            contact = await _pop(conn, row, principal, now)
    elif wraps:
        # The call ended: the desk still needs which contact it wraps up.
        w = wraps[-1]
        contact = {"contact_id": w["contact_id"], "call_id": w.get("call_id"), "queue": w["queue"]}
    return {
        "agent_id": principal.user_id,
        "status": state.get("status", "logged_out"),
        "state": state.get("state", "idle"),
        "reason": state.get("reason", ""),
        "since": state.get("since") or None,
        "queues": queues_served(picture.profiles[principal.user_id], picture.queue_configs),
        "wrapup_until": max((float(w["ends_at"]) for w in wraps), default=None),
        "contact": contact,
        "chat_offer": chat_offer,
        "chats": {
            "held": sum(1 for channel in connected.values() if channel == CHAT_CHANNEL),
            "capacity": picture.profiles[principal.user_id].capacity.get(CHAT_CHANNEL, 0),
        },
    }


def _chat_offer(row: dict[str, Any], picture: Picture, principal: Principal, now: float) -> dict[str, Any]:
    """A chat the ACD offers the agent: which conversation, and until when it rings."""
    c = row["contact"]
    attributes = c.get("attributes") or {}
    reservation = c.get("reservation") or {}
    config = picture.queue_configs.get(row["queue"])
    offered_at = float(reservation.get("created_at") or now)
    ring_s = config.ring_timeout_s if config is not None else 15
    return {
        **contact_view(row, principal, now),
        "conversation_id": attributes.get("conversation_id"),
        "channel": attributes.get("channel", ""),
        "customer": attributes.get("customer", ""),
        "summary": redact_for(attributes.get("summary", ""), principal),
        "offered_at": offered_at,
        "expires_at": offered_at + ring_s,
    }


async def _pop(
    conn: AsyncConnection[DictRow], row: dict[str, Any], principal: Principal, now: float
) -> dict[str, Any]:
    c = row["contact"]
    attributes = c.get("attributes") or {}
    call_id = c.get("call_id")
    transcript: list[dict[str, Any]] = []
    actions: list[str] = []
    if call_id:
        lines = await (
            await conn.execute(
                "SELECT speaker, text, at_s FROM (SELECT seq, speaker, text, at_s FROM aicc.call_lines "
                "WHERE call_id = %s ORDER BY seq DESC LIMIT %s) t ORDER BY seq",
                (call_id, TRANSCRIPT_LINES),
            )
        ).fetchall()
        transcript = [{**r, "text": redact_for(r["text"], principal)} for r in lines]
        tools = await (
            await conn.execute(
                "SELECT tool, arguments, ok FROM aicc.call_tool_calls WHERE call_id = %s ORDER BY seq",
                (call_id,),
            )
        ).fetchall()
        actions = []
        for t in tools:
            arguments = redact_json(t["arguments"] or {}, principal)
            said = ", ".join(f"{k}={v}" for k, v in arguments.items())
            actions.append(f"{t['tool']}({said})" + ("" if t["ok"] else " failed"))
    customer = await caller_record(conn, str(c.get("caller") or ""), call_id) or {}
    for item in customer.get("previous", []):
        item["summary"] = redact_for(item["summary"], principal)
    if actions:
        customer["bot_actions"] = actions
    return {
        **contact_view(row, principal, now),
        "call_id": call_id,
        "intent": attributes.get("intent", ""),
        "summary": redact_for(attributes.get("summary", ""), principal),
        "transcript": transcript,
        "customer": customer or None,
    }
