"""Tickets and SLA policies. A ticket is created from a call, a chat, an email, the bot or by an agent;
agents and supervisors work it (tickets.write), auditors read it (tickets.read). Every answer carries
the SLA computed from the ticket's event history at the time of the request (appliance/tickets/sla.py).

Lifecycle: new -> open | pending | resolved; open -> pending | resolved; pending -> open | resolved;
resolved -> open (re-open) | closed; closed is final. Closing needs the customer's confirmation
(POST .../confirm) after the latest resolve. A customer's comment re-opens a pending or resolved
ticket, and an agent's public reply opens a new one, as Zammad and Chatwoot do.

A ticket finished (closed, or resolved and left so) longer than ticket_retention_days is purged
(appliance/retention/purge.py: no customer, description or texts; `purged_at` set): it is final too.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
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
from aicc.appliance.connectors.phone import e164
from aicc.appliance.conversations import store as conversations
from aicc.appliance.tickets import store
from aicc.appliance.tickets.sla import Priority, SlaPolicy, SlaStatus, Status, compute

router = APIRouter(tags=["tickets"], responses=COMMON_ERRORS)

Source = Literal["call", "chat", "email", "bot", "agent", "api"]
GroupName = Annotated[str, Field(pattern=r"^([a-z0-9][a-z0-9_-]{0,40})?$")]
PolicyName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")]
Number = Annotated[str, Field(pattern=r"^T-[0-9]{6,}$")]
Phone = Annotated[str, Field(pattern=r"^\+?[0-9]{2,20}$")]

# Allowed status moves; the same status is a no-op, anything else is 409.
TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"open", "pending", "resolved"}),
    "open": frozenset({"pending", "resolved"}),
    "pending": frozenset({"open", "resolved"}),
    "resolved": frozenset({"open", "closed"}),
    "closed": frozenset(),
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Customer(Strict):
    """Who the ticket is for: any of their identities (the customer record comes with contacts)."""

    name: Annotated[str, Field(max_length=200)] = ""
    phone: Phone | None = None
    email: Annotated[str, Field(pattern=r"^[^@\s]{1,64}@[^@\s]{1,190}$")] | None = None
    external_id: Annotated[str, Field(max_length=100)] | None = None


class TicketCreate(Strict):
    subject: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=20_000)] = ""
    type: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")] = "question"
    priority: Priority = "normal"
    group: GroupName = ""
    assignee: Annotated[int, Field(ge=1, le=2**62)] | None = Field(None, description="a user id")
    customer: Customer = Field(default_factory=Customer)
    language: Annotated[str, Field(pattern=r"^([a-z]{2})?$")] = ""
    source: Source = "agent"
    call_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    contact_id: UUID | None = None
    conversation_id: UUID | None = Field(
        None,
        description="the chat (or other conversation) it comes from: the customer's identities come with it",
    )
    sla_policy: PolicyName = "default"


class TicketChange(Strict):
    status: Status | None = None
    priority: Priority | None = None
    assignee: Annotated[int, Field(ge=1, le=2**62)] | None = Field(None, description="null: unassign")
    group: GroupName | None = None


class CommentCreate(Strict):
    body: Annotated[str, Field(min_length=1, max_length=20_000)]
    visibility: Literal["public", "internal"] = "public"
    author: Literal["agent", "customer"] = Field(
        "agent", description="customer: what the customer said, recorded by the agent"
    )


class Confirmation(Strict):
    note: Annotated[str, Field(max_length=2000)] = Field("", description="how the customer confirmed")


class Ticket(BaseModel):
    number: str
    subject: str
    description: str
    type: str
    priority: Priority
    status: Status
    group: str
    assignee: int | None
    customer: dict[str, str | None]
    language: str
    source: Source
    call_id: str | None
    contact_id: str | None
    conversation_id: str | None = None
    sla_policy: str
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    purged_at: dt.datetime | None = Field(
        None,
        description="when the retention purge removed the customer's data and the texts (ticket_retention_"
        "days after the ticket was last changed, closed or resolved); a purged ticket is final",
    )
    sla: SlaStatus


class TicketEvent(BaseModel):
    id: int
    at: dt.datetime
    kind: str
    actor: str
    data: dict[str, Any]


def _customer(customer: dict[str, Any], principal: Principal) -> dict[str, str | None]:
    out = dict(customer)
    if out.get("phone"):
        out["phone"] = mask_number(str(out["phone"]), principal)
    return out


def _ticket(
    row: dict[str, Any], events: list[dict[str, Any]], policy: SlaPolicy, principal: Principal
) -> Ticket:
    fields = {k: v for k, v in row.items() if k != "id"}
    sla = compute(policy, store.sla_events(events), _now())
    return Ticket(**{**fields, "customer": _customer(row["customer"], principal)}, sla=sla)


async def _policies(conn: AsyncConnection[DictRow]) -> dict[str, SlaPolicy]:
    return {p.name: p for p in await store.list_policies(conn)}


async def _locked(conn: AsyncConnection[DictRow], number: str) -> dict[str, Any]:
    ticket = await store.get(conn, number, lock=True)
    if ticket is None:
        raise not_found("ticket", number)
    if ticket["purged_at"] is not None:  # what a comment or a re-open would add has no place to go
        raise conflict(
            f"ticket {number} is past the ticket retention and its customer data was purged; it is final "
            "(open a new one)"
        )
    return ticket


async def _answer(conn: AsyncConnection[DictRow], ticket: dict[str, Any], principal: Principal) -> Ticket:
    events = (await store.events(conn, [ticket["id"]]))[ticket["id"]]
    policy = await store.get_policy(conn, ticket["sla_policy"])
    assert policy is not None  # a foreign key keeps it
    return _ticket(ticket, events, policy, principal)


def _audit_view(ticket: dict[str, Any]) -> dict[str, Any]:
    return {k: ticket[k] for k in ("number", "status", "priority", "group", "assignee", "sla_policy")}


async def _from_conversation(
    conn: AsyncConnection[DictRow], conversation_id: UUID, fields: dict[str, Any]
) -> None:
    """The customer of the conversation fills what the agent left out: name, phone and email as the
    customer's identities hold them (agents see them masked), and the conversation's language."""
    conversation = await conversations.get_conversation(conn, conversation_id)
    if conversation is None:
        raise invalid("conversation_id", f"no conversation {conversation_id}")
    customer = await conversations.get_customer(conn, conversation["customer_id"])
    assert customer is not None  # a foreign key keeps it
    found = {"name": customer["name"]} if customer["name"] else {}
    for identity in customer["identities"]:
        if identity["kind"] == "phone":
            found.setdefault("phone", e164(identity["value"]) or identity["value"])
        elif identity["kind"] == "email":
            found.setdefault("email", identity["value"])
    fields["customer"] = {**found, **{k: v for k, v in fields["customer"].items() if v}}
    fields["language"] = fields["language"] or conversation["language"]


@router.post("/api/tickets", response_model=Ticket, status_code=201)
async def create_ticket(
    body: TicketCreate,
    request: Request,
    principal: Annotated[Principal, Depends(require("tickets.write"))],
    pool: PoolDep,
) -> Ticket:
    # Checked here, not in the model, so that the 422 names the field.
    if body.source == "call" and body.call_id is None:
        raise invalid("call_id", "a ticket from a call names its call_id")
    if body.source == "chat" and body.conversation_id is None:
        raise invalid("conversation_id", "a ticket from a chat names its conversation_id")
    async with pool.connection() as conn:
        if await store.get_policy(conn, body.sla_policy) is None:
            raise invalid("sla_policy", f"no SLA policy {body.sla_policy!r}")
        if body.assignee is not None and not await store.user_exists(conn, body.assignee):
            raise invalid("assignee", f"no enabled user {body.assignee} who works tickets")
        fields = body.model_dump(mode="json")
        fields["customer"] = body.customer.model_dump(exclude_none=True)
        if body.customer.phone is None and (body.call_id or body.contact_id):
            # The agent sees the caller's number masked; the ticket keeps the real one, from the call.
            phone = e164(await store.caller_of(conn, body.call_id, fields["contact_id"]))
            if phone:
                fields["customer"]["phone"] = phone
        if body.conversation_id is not None:
            await _from_conversation(conn, body.conversation_id, fields)
        row = await store.create(conn, fields, principal.user_id, principal.username, _now())
        await audit.record(
            conn,
            principal,
            "ticket.create",
            "ticket",
            row["number"],
            None,
            _audit_view(row),
            client_address(request),
        )
        return await _answer(conn, row, principal)


@router.get("/api/tickets", response_model=list[Ticket])
async def list_tickets(
    principal: Annotated[Principal, Depends(require("tickets.read"))],
    pool: PoolDep,
    status: Status | None = None,
    assignee: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    group: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")] = None,
    priority: Priority | None = None,
    phone: Annotated[str | None, Query(pattern=r"^\+?[0-9]{2,20}$", description="the customer's")] = None,
    unassigned: Annotated[bool, Query(description="only tickets nobody is assigned")] = False,
    conversation_id: Annotated[UUID | None, Query(description="those opened from this conversation")] = None,
    sla: Annotated[
        Literal["breached", "warning"] | None, Query(description="the worst target's state")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[Ticket]:
    """Newest first. With `sla`, the matching tickets' SLA is computed before paging (it is not stored)."""
    filters = store.Filters(
        status,
        assignee,
        group,
        priority,
        phone,
        unassigned,
        None if conversation_id is None else str(conversation_id),
    )
    async with pool.connection() as conn:
        rows = await store.listing(conn, filters, None if sla else limit, 0 if sla else offset)
        events = await store.events(conn, [r["id"] for r in rows])
        policies = await _policies(conn)
    tickets = [_ticket(r, events[r["id"]], policies[r["sla_policy"]], principal) for r in rows]
    if sla is not None:
        tickets = [t for t in tickets if t.sla.state == sla][offset : offset + limit]
    return tickets


@router.get("/api/tickets/{number}", response_model=Ticket, responses=error_responses(404))
async def get_ticket(
    number: str,
    principal: Annotated[Principal, Depends(require("tickets.read"))],
    pool: PoolDep,
) -> Ticket:
    async with pool.connection() as conn:
        row = await store.get(conn, number)
        if row is None:
            raise not_found("ticket", number)
        return await _answer(conn, row, principal)


async def _confirmed_since_resolved(conn: AsyncConnection[DictRow], ticket_id: int) -> bool:
    history = (await store.events(conn, [ticket_id]))[ticket_id]
    confirmed = False
    for event in history:
        if event["kind"] == "status_changed" and event["data"].get("to") == "resolved":
            confirmed = False  # a confirmation counts for the resolution it followed only
        elif event["kind"] == "customer_confirmed":
            confirmed = True
    return confirmed


@router.patch("/api/tickets/{number}", response_model=Ticket, responses=error_responses(404, 409))
async def change_ticket(
    number: str,
    body: TicketChange,
    request: Request,
    principal: Annotated[Principal, Depends(require("tickets.write"))],
    pool: PoolDep,
) -> Ticket:
    """Status, priority, assignee (null unassigns), group. Pending stops the SLA clocks."""
    changes = body.model_dump(exclude_unset=True)
    for key in ("status", "priority", "group"):
        if key in changes and changes[key] is None:
            raise invalid(key, "may not be null")
    async with pool.connection() as conn:
        ticket = await _locked(conn, number)
        if ticket["status"] == "closed" and changes:
            raise conflict(f"ticket {number} is closed; closed tickets are final (open a new one)")
        new_status = changes.get("status")
        if new_status is not None and new_status != ticket["status"]:
            if new_status not in TRANSITIONS[ticket["status"]]:
                allowed = ", ".join(sorted(TRANSITIONS[ticket["status"]])) or "none"
                raise conflict(
                    f"ticket {number} cannot go from {ticket['status']} to {new_status} (allowed: {allowed})"
                )
            if new_status == "closed" and not await _confirmed_since_resolved(conn, ticket["id"]):
                raise conflict(
                    f"ticket {number} closes only after the customer confirmed the resolution "
                    f"(POST /api/tickets/{number}/confirm)"
                )
        if changes.get("assignee") is not None and not await store.user_exists(conn, changes["assignee"]):
            raise invalid("assignee", f"no enabled user {changes['assignee']} who works tickets")
        after = await store.change(conn, ticket, changes, principal.user_id, principal.username, _now())
        if after is not ticket:
            await audit.record(
                conn,
                principal,
                "ticket.update",
                "ticket",
                number,
                _audit_view(ticket),
                _audit_view(after),
                client_address(request),
            )
        return await _answer(conn, after, principal)


@router.post(
    "/api/tickets/{number}/comments",
    response_model=Ticket,
    status_code=201,
    responses=error_responses(404, 409),
)
async def comment_ticket(
    number: str,
    body: CommentCreate,
    request: Request,
    principal: Annotated[Principal, Depends(require("tickets.write"))],
    pool: PoolDep,
) -> Ticket:
    """A public agent comment answers the customer (first or next response); an internal one is a note."""
    if body.author == "customer" and body.visibility == "internal":
        raise invalid("visibility", "a customer's message is public; internal notes are the agents'")
    at = _now()
    async with pool.connection() as conn:
        ticket = await _locked(conn, number)
        if ticket["status"] == "closed":
            raise conflict(f"ticket {number} is closed; closed tickets are final (open a new one)")
        await store.append_event(
            conn, ticket["id"], "commented", body.model_dump(), principal.user_id, principal.username, at
        )
        reopen = body.author == "customer" and ticket["status"] in ("pending", "resolved")
        answer = body.author == "agent" and body.visibility == "public" and ticket["status"] == "new"
        if reopen or answer:
            ticket = await store.change(
                conn, ticket, {"status": "open"}, principal.user_id, principal.username, at
            )
        else:
            await store.touch(conn, ticket["id"], at)
        await audit.record(
            conn,
            principal,
            "ticket.comment",
            "ticket",
            number,
            None,
            {"visibility": body.visibility, "author": body.author, "status": ticket["status"]},
            client_address(request),
        )
        return await _answer(conn, ticket, principal)


@router.post("/api/tickets/{number}/confirm", response_model=Ticket, responses=error_responses(404, 409))
async def confirm_ticket(
    number: str,
    body: Confirmation,
    request: Request,
    principal: Annotated[Principal, Depends(require("tickets.write"))],
    pool: PoolDep,
) -> Ticket:
    """The customer confirmed the resolution (recorded by an agent); the ticket may then be closed."""
    at = _now()
    async with pool.connection() as conn:
        ticket = await _locked(conn, number)
        if ticket["status"] != "resolved":
            raise conflict(f"ticket {number} is {ticket['status']}: the customer confirms a resolved ticket")
        await store.append_event(
            conn,
            ticket["id"],
            "customer_confirmed",
            body.model_dump(),
            principal.user_id,
            principal.username,
            at,
        )
        await store.touch(conn, ticket["id"], at)
        await audit.record(
            conn, principal, "ticket.confirm", "ticket", number, None, body, client_address(request)
        )
        return await _answer(conn, ticket, principal)


@router.get("/api/tickets/{number}/events", response_model=list[TicketEvent], responses=error_responses(404))
async def ticket_events(
    number: str,
    principal: Annotated[Principal, Depends(require("tickets.read"))],
    pool: PoolDep,
) -> list[TicketEvent]:
    async with pool.connection() as conn:
        row = await store.get(conn, number)
        if row is None:
            raise not_found("ticket", number)
        history = (await store.events(conn, [row["id"]]))[row["id"]]
    return [TicketEvent(**e) for e in history]


@router.get("/api/sla-policies", response_model=list[SlaPolicy])
async def list_sla_policies(
    principal: Annotated[Principal, Depends(require("config.read"))],
    pool: PoolDep,
) -> list[SlaPolicy]:
    async with pool.connection() as conn:
        return await store.list_policies(conn)


@router.get("/api/sla-policies/{name}", response_model=SlaPolicy, responses=error_responses(404))
async def get_sla_policy(
    name: str,
    principal: Annotated[Principal, Depends(require("config.read"))],
    pool: PoolDep,
) -> SlaPolicy:
    async with pool.connection() as conn:
        policy = await store.get_policy(conn, name)
    if policy is None:
        raise not_found("SLA policy", name)
    return policy


@router.put("/api/sla-policies/{name}", response_model=SlaPolicy)
async def put_sla_policy(
    name: Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")],
    body: SlaPolicy,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> SlaPolicy:
    """Create or replace a policy. Open tickets' figures follow at once: they are computed, not stored.
    `escalations` (default: warning notifies the assignee, breached the supervisors and raises the
    priority a step) apply from the next pass of the escalation watcher."""
    if body.name != name:
        raise invalid("name", f"the body names {body.name!r}, the path {name!r}")
    async with pool.connection() as conn:
        before = await store.get_policy(conn, name)
        await store.put_policy(conn, body)
        await audit.record(
            conn, principal, "sla_policy.put", "sla_policy", name, before, body, client_address(request)
        )
    return body


class GroupMembers(Strict):
    members: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(
        max_length=1000, description="user ids: agents, supervisors or admins (not auditors)"
    )


class TicketGroup(BaseModel):
    group: str
    members: list[int]


@router.get("/api/ticket-groups", response_model=list[TicketGroup])
async def list_ticket_groups(
    principal: Annotated[Principal, Depends(require("config.read"))],
    pool: PoolDep,
) -> list[TicketGroup]:
    """The groups with members: who SLA escalations reach (notify_group; an unassigned ticket's
    notify_assignee; the group's supervisors for notify_supervisors, else every supervisor)."""
    async with pool.connection() as conn:
        groups = await store.ticket_groups(conn)
    return [TicketGroup(group=g, members=m) for g, m in groups.items()]


@router.put("/api/ticket-groups/{group}/members", response_model=TicketGroup)
async def put_ticket_group_members(
    group: Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")],
    body: GroupMembers,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> TicketGroup:
    """Replace the group's members ([] empties it)."""
    async with pool.connection() as conn:
        for i, user_id in enumerate(body.members):
            if not await store.user_exists(conn, user_id):
                raise invalid(f"members[{i}]", f"no enabled user {user_id} who works tickets")
        before = await store.set_group_members(conn, group, body.members)
        after = TicketGroup(group=group, members=sorted(set(body.members)))
        await audit.record(
            conn,
            principal,
            "ticket_group.put",
            "ticket_group",
            group,
            {"members": before},
            after,
            client_address(request),
        )
    return after
