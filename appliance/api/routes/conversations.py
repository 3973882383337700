"""Conversations on every channel, as agents work them (conversations.read / conversations.write:
agents and supervisors; auditors read). The visitor's side of web chat is routes/webchat.py.

- GET /api/conversations?status=&handler=&assignee=&unassigned=&channel=&order=: newest activity
  first, or (order=waiting) longest waiting for an agent first; each with its last message's start,
  seq and author.
- GET /api/conversations/{id}[?after_seq=N]: the conversation, its customer and every message (or
  those after seq N); whether the visitor is connected (to this API process) and typing.
- POST /api/conversations/{id}/messages: an agent's reply, pushed to the visitor at once. The agent
  takes the conversation with it (handler agent; assignee: the agent, when nobody holds it) and the
  bot answers no more. A `client_id` makes a retry harmless: the message is stored once. In a WeCom or
  WeChat official account conversation, 409 (and why) when the platform would not take it: over 48
  hours since the customer's last message, or 5 replies since it; else it goes to the platform in the
  background (channels/tencent_hub.py).
- POST /api/conversations/{id}/assign: take it (or give it to `assignee`; `unassigned_only` refuses
  with 409 when someone else holds it); POST .../resolve: end it.
- POST /api/conversations/{id}/accept and .../decline: the chat the ACD offers the agent now
  (api/chat_routing.py): accepted, it is theirs and their first reply is due within
  chat_first_reply_s; declined (or let ring out), the ACD offers it to the next agent. A chat taken,
  assigned or resolved otherwise leaves the ACD at once, so it is never offered twice. An agent whose
  profile gives chats a capacity takes no more than that many by hand (409).
- POST /api/conversations/{id}/typing: the visitor sees "agent typing".
- GET /api/customers/{id}/history: every conversation of the customer on any channel and every call
  from their phone numbers (aicc.calls, matched in E.164), oldest first.

The two reads answer with an ETag and 304 Not Modified to an If-None-Match that matches, so the agent
desktop, which polls them every few seconds while its Chats tab is shown, moves no bytes when nothing
changed (there is no push of conversations to agents yet).

Agents see phone numbers masked unless their role has numbers.full. Taking, assigning and resolving
are audited; messages are the conversation itself and are not copied into the audit log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import BaseModel, Field, TypeAdapter

from aicc.appliance.acd import commands as cmds
from aicc.appliance.acd.client import AcdRejected, AcdUnavailable
from aicc.appliance.api import audit, chat_routing
from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    AcdDep,
    ApiError,
    PoolDep,
    Principal,
    api_state,
    client_address,
    conflict,
    error_responses,
    invalid,
    mask_number,
    not_found,
    require,
)
from aicc.appliance.api.redact import redact_for
from aicc.appliance.api.routes import Strict
from aicc.appliance.channels.tencent_hub import MessagingHub, ReplyRefused
from aicc.appliance.channels.webchat import CLIENT_ID, WebChatHub, message_frame, status_frame
from aicc.appliance.channels.wecom import WeComHub
from aicc.appliance.conversations import store
from aicc.appliance.conversations.store import Author, Channel, Handler, Order, Status

router = APIRouter(tags=["conversations"], responses=COMMON_ERRORS)
UserId = Annotated[int, Field(ge=1, le=2**62)]
CACHED: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "ETag": {
                "description": "the answer's tag: send it back as If-None-Match to get 304 while it holds",
                "schema": {"type": "string"},
            }
        }
    },
    304: {"description": "Not modified: the If-None-Match given is the answer's ETag"},
}


class Message(BaseModel):
    id: int
    seq: int
    direction: Literal["in", "out"]
    author: Author
    author_id: int | None
    body: str
    client_id: str | None = Field(None, description="the sender's id for the message (idempotency key)")
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
    queued_at: dt.datetime | None = Field(
        None, description="when it last went to the agents (handler queue): the wait for an agent starts"
    )
    acd_contact: UUID | None = Field(None, description="its contact in the ACD now (waiting, offered, held)")
    route_error: str = Field("", description="why the ACD does not route it: an agent takes it by hand")
    offer_agent: int | None = Field(None, description="the agent the ACD offers it to now")
    offer_expires_at: dt.datetime | None = Field(None, description="when that offer rings out")
    accepted_at: dt.datetime | None = Field(None, description="when its agent accepted the ACD's offer")
    reply_due_at: dt.datetime | None = Field(
        None, description="the agent's first reply is due by then, else it goes back to the queue"
    )
    last_message: str | None = Field(None, description="the last message's first 200 characters")
    last_seq: int | None = Field(None, description="the last message's seq")
    last_author: Author | None = Field(None, description="who wrote the last message")


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
    messages: list[Message] = Field(description="oldest first: every message, or those after after_seq")
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
    client_id: Annotated[str, Field(pattern=CLIENT_ID.pattern)] | None = Field(
        None,
        description="the sender's id for this message (1-64 letters, digits, - or _): sent again, as a "
        "retry after a lost answer, it is stored once and the stored message answers (200)",
    )


class Assignment(Strict):
    assignee: UserId | None = Field(None, description="a user id; none: the caller takes it")
    unassigned_only: bool = Field(
        False, description="refuse (409) when another user holds it already: two agents taking one chat"
    )


_CONVERSATIONS = TypeAdapter(list[Conversation])


def _etagged(request: Request, body: bytes) -> Response:
    """A JSON answer with its ETag, or 304 without a body when the client's If-None-Match has it."""
    tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    given = request.headers.get("if-none-match", "")
    if any(t.strip().removeprefix("W/") in (tag, "*") for t in given.split(",") if t.strip()):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _hub(request: Request) -> WebChatHub:
    hub: WebChatHub = request.app.state.webchat
    return hub


def _wecom(request: Request) -> WeComHub:
    hub: WeComHub = request.app.state.wecom
    return hub


def _messaging(request: Request, channel: str) -> MessagingHub[Any] | None:
    """The hub of a conversation's messaging channel (WeCom, the WeChat official account, email), else
    None (web chat: its own hub)."""
    hubs: dict[str, MessagingHub[Any]] = {
        "wecom": _wecom(request),
        "wechat_oa": request.app.state.wechat_oa,
        "email": request.app.state.email,
    }
    return hubs.get(channel)


async def _stop_bots(request: Request, conversation_id: UUID) -> None:
    """An agent has the conversation (or it is resolved): no channel's bot answers in it any more."""
    await _hub(request).stop_bot(conversation_id)
    await _wecom(request).stop_bot(conversation_id)
    await request.app.state.wechat_oa.stop_bot(conversation_id)
    await request.app.state.email.stop_bot(conversation_id)


def _identities(rows: list[dict[str, Any]], principal: Principal) -> list[Identity]:
    out = []
    for row in rows:
        if row["kind"] == "webchat":
            continue  # a digest of the visitor's secret: nothing an agent can use
        value = mask_number(row["value"], principal) if row["kind"] == "phone" else row["value"]
        out.append(Identity(kind=row["kind"], value=value))
    return out


async def _detail(
    conn: AsyncConnection[DictRow],
    conversation: dict[str, Any],
    principal: Principal,
    hub: WebChatHub,
    after_seq: int = 0,
) -> ConversationDetail:
    customer = await store.get_customer(conn, conversation["customer_id"])
    assert customer is not None  # a foreign key keeps it
    rows = await store.messages(conn, conversation["id"], after_seq=after_seq)
    cid = conversation["id"]
    last = await store.last_message(conn, cid)
    return ConversationDetail(
        **{**conversation, "summary": redact_for(conversation["summary"], principal)},
        customer_name=customer["name"],
        last_seq=last["seq"] if last else None,
        last_author=last["author"] if last else None,
        customer=Customer(**{**customer, "identities": _identities(customer["identities"], principal)}),
        messages=[Message(**{**m, "body": redact_for(m["body"], principal)}) for m in rows],
        visitor_connected=hub.connected(cid),
        visitor_typing=hub.visitor_typing(cid),
    )


async def _locked(conn: AsyncConnection[DictRow], conversation_id: UUID) -> dict[str, Any]:
    conversation = await store.get_conversation(conn, conversation_id, lock=True)
    if conversation is None:
        raise not_found("conversation", str(conversation_id))
    return conversation


def _conversation(row: dict[str, Any], principal: Principal) -> Conversation:
    """A conversation with the personal numbers in its summary and last message masked by role."""
    last = row.get("last_message")
    return Conversation(
        **{
            **row,
            "summary": redact_for(row["summary"], principal),
            "last_message": None if last is None else redact_for(last, principal),
        }
    )


def _held_by_other(conversation: dict[str, Any], principal: Principal) -> None:
    """409 when another user holds the conversation and the principal may not step in (agents)."""
    holder = conversation["assignee"]
    if holder not in (None, principal.user_id) and not principal.can("conversations.assign"):
        raise conflict(f"user {holder} holds this conversation; a supervisor can reassign it")


def _view(c: dict[str, Any]) -> dict[str, Any]:
    return {"status": c["status"], "handler": c["handler"], "assignee": c["assignee"]}


def _routed(request: Request, event: str) -> None:
    routing = api_state(request).chat_routing
    if routing is not None:
        routing.metrics.events.labels(event).inc()


async def _capacity_left(conn: AsyncConnection[DictRow], user_id: int) -> None:
    """409 when the agent holds as many chats as their profile's chat capacity (the ACD offers no
    more than that either)."""
    held, capacity = await chat_routing.chats_held(conn, user_id)
    if capacity is not None and held >= capacity:
        raise conflict(
            f"you hold {held} chats, your chat capacity is {capacity}: resolve one before taking another"
        )


@router.get("/api/conversations", response_model=list[Conversation], responses=CACHED)
async def list_conversations(
    request: Request,
    principal: Annotated[Principal, Depends(require("conversations.read"))],
    pool: PoolDep,
    status: Status | None = None,
    handler: Handler | None = None,
    assignee: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    unassigned: Annotated[bool, Query(description="only those nobody holds")] = False,
    channel: Channel | None = None,
    order: Annotated[
        Order, Query(description="activity: newest activity first; waiting: longest waiting first")
    ] = "activity",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    filters = store.Filters(
        status=status, handler=handler, assignee=assignee, channel=channel, unassigned=unassigned
    )
    async with pool.connection() as conn:
        rows = await store.list_conversations(conn, filters, limit=limit, offset=offset, order=order)
    return _etagged(request, _CONVERSATIONS.dump_json([_conversation(r, principal) for r in rows]))


@router.get(
    "/api/conversations/{conversation_id}",
    response_model=ConversationDetail,
    responses={**error_responses(404), **CACHED},
)
async def get_conversation(
    conversation_id: UUID,
    request: Request,
    principal: Annotated[Principal, Depends(require("conversations.read"))],
    pool: PoolDep,
    after_seq: Annotated[
        int, Query(ge=0, le=2**31 - 1, description="only the messages after this seq (those not seen yet)")
    ] = 0,
) -> Response:
    async with pool.connection() as conn:
        conversation = await store.get_conversation(conn, conversation_id)
        if conversation is None:
            raise not_found("conversation", str(conversation_id))
        detail = await _detail(conn, conversation, principal, _hub(request), after_seq)
    return _etagged(request, detail.model_dump_json().encode())


@router.post(
    "/api/conversations/{conversation_id}/messages",
    response_model=Message,
    status_code=201,
    responses={
        **error_responses(404, 409),
        200: {"model": Message, "description": "sent before with this client_id: the message stored then"},
    },
)
async def reply(
    conversation_id: UUID,
    body: Reply,
    request: Request,
    response: Response,
    principal: Annotated[Principal, Depends(require("conversations.write"))],
    pool: PoolDep,
) -> Message:
    hub = _hub(request)
    text = body.body.strip()
    if not text:
        raise invalid("body", "empty")
    async with pool.connection() as conn, conn.transaction():
        before = await _locked(conn, conversation_id)
        if body.client_id is not None:
            earlier = await store.message_by_client_id(conn, conversation_id, body.client_id)
            if earlier is not None:  # a retry: the message went in the first time
                if earlier["author"] != "agent" or earlier["author_id"] != principal.user_id:
                    raise invalid("client_id", "another message of this conversation has this client_id")
                response.status_code = 200
                return Message(**earlier)
        if before["status"] == "resolved":
            raise conflict("the conversation is resolved; the customer starts a new one to write again")
        _held_by_other(before, principal)
        plan = None
        channel_hub = _messaging(request, before["channel"])
        if channel_hub is not None:  # WeCom and WeChat take replies only within limits: say so now
            try:
                plan = await channel_hub.plan(conn, before, text)
            except ReplyRefused as exc:
                raise conflict(exc.message) from None
        after = before
        if before["handler"] != "agent" or before["assignee"] is None:
            changes: dict[str, Any] = {"handler": "agent"}
            if before["assignee"] is None:
                await _capacity_left(conn, principal.user_id)
                changes["assignee"] = principal.user_id
            routed = await chat_routing.withdraw(
                conn, before, keep=changes.get("assignee", before["assignee"]), ended_by="system"
            )
            if routed is not None:
                _routed(request, routed)
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
            client_id=body.client_id,
            delivered=hub.connected(conversation_id),
        )
        await chat_routing.replied(conn, conversation_id)
        outgoing = (
            []
            if channel_hub is None or plan is None
            else await channel_hub.enqueue(conn, plan, conversation_id, row["id"])
        )
    await _stop_bots(request, conversation_id)
    if channel_hub is not None:
        channel_hub.deliver(outgoing)
    if after is not before:
        hub.publish(conversation_id, status_frame(after))
    hub.publish(conversation_id, message_frame(row))
    (hub.metrics if channel_hub is None else channel_hub.metrics).messages.labels("agent").inc()
    return Message(**row)


@router.post(
    "/api/conversations/{conversation_id}/assign",
    response_model=ConversationDetail,
    responses=error_responses(403, 404, 409),
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
        if body.unassigned_only and before["assignee"] not in (None, assignee):
            raise conflict(f"user {before['assignee']} has taken this conversation already")
        cur = await conn.execute(
            "SELECT 1 FROM aicc.users WHERE id = %s AND NOT disabled AND role <> 'auditor'", (assignee,)
        )
        if await cur.fetchone() is None:
            raise invalid("assignee", f"no enabled user {assignee} who works conversations")
        if assignee != principal.user_id and not principal.can("conversations.assign"):
            raise ApiError(403, "forbidden", "agents take conversations for themselves only")
        _held_by_other(before, principal)
        if assignee == principal.user_id and before["assignee"] != assignee:
            await _capacity_left(conn, assignee)
        # Taken or handed over by hand: the ACD connects it to the assignee (or lets it go), so that
        # nobody is offered it as well.
        routed = await chat_routing.withdraw(conn, before, keep=assignee, ended_by="system")
        if routed is not None:
            _routed(request, routed)
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
    await _stop_bots(request, conversation_id)
    hub.publish(conversation_id, status_frame(after))
    return detail


@router.post(
    "/api/conversations/{conversation_id}/resolve",
    response_model=ConversationDetail,
    responses=error_responses(404, 409),
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
            _held_by_other(before, principal)
            # Its contact ends (or leaves the queue): the agent's chat capacity frees.
            routed = await chat_routing.withdraw(conn, before, keep=None, ended_by="agent")
            if routed is not None:
                _routed(request, routed)
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
    await _stop_bots(request, conversation_id)
    hub.publish(conversation_id, status_frame(after))
    return detail


@router.post(
    "/api/conversations/{conversation_id}/accept",
    response_model=ConversationDetail,
    responses=error_responses(404, 409),
)
async def accept(
    conversation_id: UUID,
    request: Request,
    principal: Annotated[Principal, Depends(require("conversations.write"))],
    pool: PoolDep,
    acd: AcdDep,
) -> ConversationDetail:
    """Accept the chat the ACD offers the caller now: it is theirs (handler agent), their chat capacity
    holds it until it is resolved, and their first reply is due within chat_first_reply_s. 409 when it
    is not (or no longer) offered to them: another agent or process accepted it, it rang out, it was
    taken by hand."""
    hub = _hub(request)
    async with pool.connection() as conn, conn.transaction():
        # The row lock makes two accepts (two tabs, two API processes) one after the other: the second
        # finds the offer gone.
        before = await _locked(conn, conversation_id)
        if before["status"] == "resolved":
            raise conflict("the conversation is resolved")
        try:
            offer = await chat_routing.offer_of(conn, before, principal.user_id)
        except chat_routing.NotOffered as exc:
            raise conflict(str(exc)) from None
        try:
            await acd.submit(
                cmds.OfferResult(
                    reservation_id=offer.reservation_id, contact_id=offer.contact_id, outcome="answered"
                )
            )
        except AcdRejected as exc:
            raise conflict(f"the offer has ended (it rang out or was withdrawn): {exc}") from None
        except AcdUnavailable as exc:
            raise ApiError(503, "acd_unavailable", str(exc), headers={"Retry-After": "2"}) from None
        config = api_state(request).config
        after = await chat_routing.accepted(
            conn, conversation_id, principal.user_id, config.chat_first_reply_s
        )
        assert after is not None
        await audit.record(
            conn,
            principal,
            "conversation.accept",
            "conversation",
            conversation_id,
            _view(before),
            _view(after),
            client_address(request),
        )
        detail = await _detail(conn, after, principal, hub)
    _routed(request, "accepted")
    await _stop_bots(request, conversation_id)
    hub.publish(conversation_id, status_frame(after))
    return detail


@router.post(
    "/api/conversations/{conversation_id}/decline", status_code=204, responses=error_responses(404, 409)
)
async def decline(
    conversation_id: UUID,
    request: Request,
    principal: Annotated[Principal, Depends(require("conversations.write"))],
    pool: PoolDep,
) -> None:
    """Decline the chat the ACD offers the caller now: the ACD offers it to the next agent, and the
    caller goes away (reason rejected) as after a call let ring out."""
    async with pool.connection() as conn, conn.transaction():
        before = await _locked(conn, conversation_id)
        try:
            offer = await chat_routing.offer_of(conn, before, principal.user_id)
        except chat_routing.NotOffered as exc:
            raise conflict(str(exc)) from None
        await chat_routing.declined(conn, offer)
    _routed(request, "declined")


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
                    summary=redact_for(item["summary"] or "", principal),
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
                    summary=redact_for(item["summary"] or "", principal),
                )
            )
    return out
