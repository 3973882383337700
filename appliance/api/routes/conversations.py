"""Conversations on every channel, as agents work them (conversations.read / conversations.write:
agents and supervisors; auditors read). The visitor's side of web chat is routes/webchat.py.

- GET /api/conversations?status=&handler=&assignee=&channel=: newest activity first.
- GET /api/conversations/{id}: the conversation, its customer and every message; whether the visitor
  is connected (to this API process) and typing.
- POST /api/conversations/{id}/messages: an agent's reply, pushed to the visitor at once. The agent
  takes the conversation with it (handler agent; assignee: the agent, when nobody holds it) and the
  bot answers no more.
- POST /api/conversations/{id}/assign: take it (or give it to `assignee`); POST .../resolve: end it.
- POST /api/conversations/{id}/typing: the visitor sees "agent typing".
- GET /api/customers/{id}/history: every conversation of the customer on any channel and every call
  from their phone numbers (aicc.calls, matched in E.164), oldest first.

Agents see phone numbers masked unless their role has numbers.full. Taking, assigning and resolving
are audited; messages are the conversation itself and are not copied into the audit log.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import BaseModel, Field

from aicc.appliance.api import audit
from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    PoolDep,
    Principal,
    client_address,
    conflict,
    error_responses,
    invalid,
    mask_number,
    not_found,
    require,
)
from aicc.appliance.api.routes import Strict
from aicc.appliance.channels.webchat import WebChatHub, message_frame, status_frame
from aicc.appliance.conversations import store
from aicc.appliance.conversations.store import Channel, Handler, Status

router = APIRouter(tags=["conversations"], responses=COMMON_ERRORS)
UserId = Annotated[int, Field(ge=1, le=2**62)]


class Message(BaseModel):
    id: int
    seq: int
    direction: Literal["in", "out"]
    author: Literal["customer", "bot", "agent", "system"]
    author_id: int | None
    body: str
    created_at: dt.datetime
    delivered_at: dt.datetime | None


class Conversation(BaseModel):
    id: UUID
    customer_id: UUID
    customer_name: str = ""
    channel: Channel
    status: Status
    handler: Handler
    priority: str
    assignee: int | None
    queue: str
    language: str
    tags: list[str]
    bot: str
    summary: str
    created_at: dt.datetime
    updated_at: dt.datetime
    last_message_at: dt.datetime | None
    resolved_at: dt.datetime | None
    last_message: str | None = None


class Identity(BaseModel):
    kind: str
    value: str


class Customer(BaseModel):
    id: UUID
    name: str
    language: str
    created_at: dt.datetime
    identities: list[Identity]


class ConversationDetail(Conversation):
    customer: Customer
    messages: list[Message]
    visitor_connected: bool = Field(description="a visitor socket is open on the API process that answered")
    visitor_typing: bool


class HistoryItem(BaseModel):
    kind: Literal["conversation", "call"]
    channel: str
    at: dt.datetime
    id: UUID | None = Field(None, description="the conversation's id")
    status: str | None = None
    handler: str | None = None
    messages: int | None = None
    summary: str = ""
    call_id: str | None = Field(None, description="the call's id (GET /api/calls/{call_id})")
    outcome: str | None = None
    ended_at: dt.datetime | None = None
    caller: str | None = None


class Reply(Strict):
    body: Annotated[str, Field(min_length=1, max_length=store.BODY_MAX)]


class Assignment(Strict):
    assignee: UserId | None = Field(None, description="a user id; none: the caller takes it")


def _hub(request: Request) -> WebChatHub:
    hub: WebChatHub = request.app.state.webchat
    return hub


def _identities(rows: list[dict[str, Any]], principal: Principal) -> list[Identity]:
    out = []
    for row in rows:
        if row["kind"] == "webchat":
            continue  # a digest of the visitor's secret: nothing an agent can use
        value = mask_number(row["value"], principal) if row["kind"] == "phone" else row["value"]
        out.append(Identity(kind=row["kind"], value=value))
    return out


async def _detail(
    conn: AsyncConnection[DictRow], conversation: dict[str, Any], principal: Principal, hub: WebChatHub
) -> ConversationDetail:
    customer = await store.get_customer(conn, conversation["customer_id"])
    assert customer is not None  # a foreign key keeps it
    rows = await store.messages(conn, conversation["id"])
    cid = conversation["id"]
    return ConversationDetail(
        **conversation,
        customer_name=customer["name"],
        customer=Customer(**{**customer, "identities": _identities(customer["identities"], principal)}),
        messages=[Message(**m) for m in rows],
        visitor_connected=hub.connected(cid),
        visitor_typing=hub.visitor_typing(cid),
    )


async def _locked(conn: AsyncConnection[DictRow], conversation_id: UUID) -> dict[str, Any]:
    conversation = await store.get_conversation(conn, conversation_id, lock=True)
    if conversation is None:
        raise not_found("conversation", str(conversation_id))
    return conversation


def _view(c: dict[str, Any]) -> dict[str, Any]:
    return {"status": c["status"], "handler": c["handler"], "assignee": c["assignee"]}


@router.get("/api/conversations", response_model=list[Conversation])
async def list_conversations(
    principal: Annotated[Principal, Depends(require("conversations.read"))],
    pool: PoolDep,
    status: Status | None = None,
    handler: Handler | None = None,
    assignee: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    channel: Channel | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[Conversation]:
    filters = store.Filters(status=status, handler=handler, assignee=assignee, channel=channel)
    async with pool.connection() as conn:
        rows = await store.list_conversations(conn, filters, limit=limit, offset=offset)
    return [Conversation(**r) for r in rows]


@router.get(
    "/api/conversations/{conversation_id}", response_model=ConversationDetail, responses=error_responses(404)
)
async def get_conversation(
    conversation_id: UUID,
    request: Request,
    principal: Annotated[Principal, Depends(require("conversations.read"))],
    pool: PoolDep,
) -> ConversationDetail:
    async with pool.connection() as conn:
        conversation = await store.get_conversation(conn, conversation_id)
        if conversation is None:
            raise not_found("conversation", str(conversation_id))
        return await _detail(conn, conversation, principal, _hub(request))


@router.post(
    "/api/conversations/{conversation_id}/messages",
    response_model=Message,
    status_code=201,
    responses=error_responses(404, 409),
)
async def reply(
    conversation_id: UUID,
    body: Reply,
    request: Request,
    principal: Annotated[Principal, Depends(require("conversations.write"))],
    pool: PoolDep,
) -> Message:
    hub = _hub(request)
    text = body.body.strip()
    if not text:
        raise invalid("body", "empty")
    async with pool.connection() as conn, conn.transaction():
        before = await _locked(conn, conversation_id)
        if before["status"] == "resolved":
            raise conflict("the conversation is resolved; the customer starts a new one to write again")
        after = before
        if before["handler"] != "agent" or before["assignee"] is None:
            changes: dict[str, Any] = {"handler": "agent"}
            if before["assignee"] is None:
                changes["assignee"] = principal.user_id
            after = await store.update_conversation(conn, conversation_id, **changes) or before
            await audit.record(
                conn,
                principal,
                "conversation.take",
                "conversation",
                conversation_id,
                _view(before),
                _view(after),
                client_address(request),
            )
        row, _ = await store.add_message(
            conn,
            conversation_id,
            direction="out",
            author="agent",
            author_id=principal.user_id,
            body=text,
            delivered=hub.connected(conversation_id),
        )
    await hub.stop_bot(conversation_id)
    if after is not before:
        hub.publish(conversation_id, status_frame(after))
    hub.publish(conversation_id, message_frame(row))
    hub.metrics.messages.labels("agent").inc()
    return Message(**row)


@router.post(
    "/api/conversations/{conversation_id}/assign",
    response_model=ConversationDetail,
    responses=error_responses(404, 409),
)
async def assign(
    conversation_id: UUID,
    body: Assignment,
    request: Request,
    principal: Annotated[Principal, Depends(require("conversations.write"))],
    pool: PoolDep,
) -> ConversationDetail:
    hub = _hub(request)
    assignee = body.assignee or principal.user_id
    async with pool.connection() as conn, conn.transaction():
        before = await _locked(conn, conversation_id)
        if before["status"] == "resolved":
            raise conflict("the conversation is resolved")
        cur = await conn.execute(
            "SELECT 1 FROM aicc.users WHERE id = %s AND NOT disabled AND role <> 'auditor'", (assignee,)
        )
        if await cur.fetchone() is None:
            raise invalid("assignee", f"no enabled user {assignee} who works conversations")
        after = await store.update_conversation(conn, conversation_id, handler="agent", assignee=assignee)
        assert after is not None
        await audit.record(
            conn,
            principal,
            "conversation.assign",
            "conversation",
            conversation_id,
            _view(before),
            _view(after),
            client_address(request),
        )
        detail = await _detail(conn, after, principal, hub)
    await hub.stop_bot(conversation_id)
    hub.publish(conversation_id, status_frame(after))
    return detail


@router.post(
    "/api/conversations/{conversation_id}/resolve",
    response_model=ConversationDetail,
    responses=error_responses(404),
)
async def resolve(
    conversation_id: UUID,
    request: Request,
    principal: Annotated[Principal, Depends(require("conversations.write"))],
    pool: PoolDep,
) -> ConversationDetail:
    hub = _hub(request)
    async with pool.connection() as conn, conn.transaction():
        before = await _locked(conn, conversation_id)
        after = before
        if before["status"] != "resolved":
            after = await store.update_conversation(conn, conversation_id, status="resolved") or before
            await audit.record(
                conn,
                principal,
                "conversation.resolve",
                "conversation",
                conversation_id,
                _view(before),
                _view(after),
                client_address(request),
            )
        detail = await _detail(conn, after, principal, hub)
    await hub.stop_bot(conversation_id)
    hub.publish(conversation_id, status_frame(after))
    return detail


@router.post("/api/conversations/{conversation_id}/typing", status_code=204, responses=error_responses(404))
async def agent_typing(
    conversation_id: UUID,
    request: Request,
    principal: Annotated[Principal, Depends(require("conversations.write"))],
    pool: PoolDep,
) -> None:
    async with pool.connection() as conn:
        if await store.get_conversation(conn, conversation_id) is None:
            raise not_found("conversation", str(conversation_id))
    _hub(request).publish(conversation_id, {"type": "typing", "author": "agent"})


@router.get(
    "/api/customers/{customer_id}/history", response_model=list[HistoryItem], responses=error_responses(404)
)
async def customer_history(
    customer_id: UUID,
    principal: Annotated[Principal, Depends(require("conversations.read"))],
    pool: PoolDep,
) -> list[HistoryItem]:
    async with pool.connection() as conn:
        if await store.get_customer(conn, customer_id) is None:
            raise not_found("customer", str(customer_id))
        items = await store.history(conn, customer_id)
    out = []
    for item in items:
        if item["kind"] == "call":
            out.append(
                HistoryItem(
                    kind="call",
                    channel="voice",
                    at=item["at"],
                    call_id=item["call_id"],
                    outcome=item["outcome"],
                    ended_at=item["ended_at"],
                    summary=item["summary"],
                    caller=mask_number(item["caller"], principal),
                )
            )
        else:
            out.append(
                HistoryItem(
                    kind="conversation",
                    channel=item["channel"],
                    at=item["at"],
                    id=item["id"],
                    status=item["status"],
                    handler=item["handler"],
                    messages=item["messages"],
                    summary=item["summary"],
                )
            )
    return out
