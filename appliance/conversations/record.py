"""The customer record an agent's screen pop shows for a caller, found by the number the call came
from: the customer's name when one has that phone number, their last contacts on any channel (calls
from that number when no customer has it yet) and their open tickets. The caller of this module masks
what the agent's role must not see."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from aicc.appliance.connectors.phone import e164
from aicc.appliance.conversations.store import (
    customer_by_identity,
    get_customer,
    history,
    number_forms,
    phone_calls,
)

PREVIOUS = 5  # enough to see a pattern (third call this week) without scrolling the pop
OPEN_TICKETS = 5


async def caller_record(
    conn: AsyncConnection[DictRow], caller: str, call_id: str | None
) -> dict[str, Any] | None:
    """The record for a caller's number (any form a trunk gives), without the call `call_id` itself;
    None when the number is unknown everywhere (or withheld)."""
    number = e164(caller)
    if not number:
        return None
    record: dict[str, Any] = {}
    customer_id = await customer_by_identity(conn, "phone", number)
    customer = await get_customer(conn, customer_id) if customer_id is not None else None
    if customer is not None:
        items = await history(conn, customer["id"])
        if customer["name"]:
            record["name"] = customer["name"]
    else:
        items = await phone_calls(conn, {number})
    earlier = [i for i in items if i["kind"] != "call" or i["call_id"] != call_id]
    if earlier:
        record["contacts"] = len(earlier)
        record["previous"] = [_contact(i) for i in reversed(earlier[-PREVIOUS:])]
    tickets = await _open_tickets(conn, number, customer["id"] if customer is not None else None)
    if tickets:
        record["open_tickets"] = tickets
    return record or None


def _contact(item: dict[str, Any]) -> dict[str, Any]:
    at = item["at"]
    return {
        "date": at.strftime("%Y-%m-%d %H:%M") if at is not None else "",
        "channel": item.get("channel") or "",
        "outcome": (item.get("outcome") if item["kind"] == "call" else item.get("status")) or "",
        "summary": item.get("summary") or "",
    }


async def _open_tickets(
    conn: AsyncConnection[DictRow], number: str, customer_id: UUID | None
) -> list[dict[str, Any]]:
    # A ticket names the customer by phone (calls, the bot) or through its chat (tickets from chats).
    cur = await conn.execute(
        "SELECT number, subject, status, priority FROM aicc.tickets t "
        "WHERE status NOT IN ('resolved', 'closed') AND (customer ->> 'phone' = ANY(%s) "
        "OR conversation_id IN (SELECT id FROM aicc.conversations WHERE customer_id = %s)) "
        "ORDER BY created_at DESC LIMIT %s",
        (number_forms(number), customer_id, OPEN_TICKETS),
    )
    return [dict(r) for r in await cur.fetchall()]
