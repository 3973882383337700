"""Customers, their identities, conversations and messages in PostgreSQL (async psycopg 3, dict rows).

A message takes the next `seq` of its conversation under a row lock on the conversation, so two
writers (the visitor's socket and an agent's reply) number them without gaps or doubles; a message
with a `client_id` the conversation already has is not stored again (the first one is returned).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Literal, LiteralString
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from aicc.appliance.connectors.phone import e164

Channel = Literal["webchat", "voice", "email", "wecom", "wechat_oa", "sms", "app"]
Status = Literal["open", "pending", "snoozed", "resolved"]
Handler = Literal["bot", "queue", "agent"]
IdentityKind = Literal["phone", "email", "wecom", "openid", "app", "webchat"]
Author = Literal["customer", "bot", "agent", "system"]
BODY_MAX = 4000

CONVERSATION: LiteralString = (
    "c.id, c.customer_id, c.channel, c.status, c.handler, c.priority, c.assignee, c.queue, c.language, "
    "c.tags, c.bot, c.summary, c.created_at, c.updated_at, c.last_message_at, c.resolved_at, c.queued_at, "
    # Routing by the ACD (api/chat_routing.py).
    "c.acd_contact, c.route_error, c.offer_agent, c.offer_expires_at, c.accepted_at, c.reply_due_at"
)
MESSAGE: LiteralString = (
    "id, conversation_id, seq, direction, author, author_id, body, client_id, created_at, delivered_at"
)


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    handler: str | None = None
    assignee: int | None = None
    channel: str | None = None
    customer_id: UUID | None = None
    unassigned: bool = False  # only those nobody holds (assignee null)


Order = Literal["activity", "waiting"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- customers -------------------------------------------------------------------------------------


async def create_customer(conn: AsyncConnection[DictRow], *, name: str = "", language: str = "") -> UUID:
    cur = await conn.execute(
        "INSERT INTO aicc.customers (name, language) VALUES (%s, %s) RETURNING id", (name, language)
    )
    row = await cur.fetchone()
    assert row is not None
    return UUID(str(row["id"]))


def identity_value(kind: IdentityKind, value: str) -> str:
    """An identity as stored: phone numbers in E.164 (the form call records are matched by), emails in
    lower case; others as given."""
    if kind == "phone":
        return e164(value) or value
    if kind == "email":
        return value.strip().lower()
    return value


async def add_identity(
    conn: AsyncConnection[DictRow], customer_id: UUID, kind: IdentityKind, value: str
) -> None:
    await conn.execute(
        "INSERT INTO aicc.customer_identities (customer_id, kind, value) VALUES (%s, %s, %s)",
        (customer_id, kind, identity_value(kind, value)),
    )


async def customer_by_identity(conn: AsyncConnection[DictRow], kind: IdentityKind, value: str) -> UUID | None:
    cur = await conn.execute(
        "SELECT customer_id FROM aicc.customer_identities WHERE kind = %s AND value = %s",
        (kind, identity_value(kind, value)),
    )
    row = await cur.fetchone()
    return None if row is None else UUID(str(row["customer_id"]))


async def get_customer(conn: AsyncConnection[DictRow], customer_id: UUID) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT id, name, language, created_at FROM aicc.customers WHERE id = %s", (customer_id,)
    )
    row = await cur.fetchone()
    if row is None:
        return None
    cur = await conn.execute(
        "SELECT kind, value FROM aicc.customer_identities WHERE customer_id = %s ORDER BY kind, value",
        (customer_id,),
    )
    return {**row, "identities": [dict(r) for r in await cur.fetchall()]}


# --- conversations ---------------------------------------------------------------------------------


async def create_conversation(
    conn: AsyncConnection[DictRow],
    customer_id: UUID,
    channel: Channel,
    *,
    language: str = "",
    handler: Handler = "bot",
    bot: str = "",
    queue: str = "",
) -> dict[str, Any]:
    cur = await conn.execute(
        "INSERT INTO aicc.conversations (customer_id, channel, language, handler, bot, queue, queued_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, CASE WHEN %s = 'queue' THEN now() END) RETURNING id",
        (customer_id, channel, language, handler, bot, queue, handler),
    )
    row = await cur.fetchone()
    assert row is not None
    found = await get_conversation(conn, UUID(str(row["id"])))
    assert found is not None
    return found


async def get_conversation(
    conn: AsyncConnection[DictRow], conversation_id: UUID, *, lock: bool = False
) -> dict[str, Any] | None:
    query: LiteralString = f"SELECT {CONVERSATION} FROM aicc.conversations c WHERE c.id = %s"  # noqa: S608
    if lock:
        query += " FOR UPDATE"
    cur = await conn.execute(query, (conversation_id,))
    return await cur.fetchone()


async def open_conversation_of(
    conn: AsyncConnection[DictRow], customer_id: UUID, channel: Channel
) -> dict[str, Any] | None:
    """The customer's latest conversation on `channel` that is not resolved, if any."""
    cur = await conn.execute(
        f"SELECT {CONVERSATION} FROM aicc.conversations c WHERE c.customer_id = %s AND c.channel = %s "  # noqa: S608
        "AND c.status <> 'resolved' ORDER BY c.created_at DESC LIMIT 1",
        (customer_id, channel),
    )
    return await cur.fetchone()


async def list_conversations(
    conn: AsyncConnection[DictRow],
    filters: Filters,
    *,
    limit: int = 50,
    offset: int = 0,
    order: Order = "activity",
) -> list[dict[str, Any]]:
    """With the customer's name and the last message (its start, seq and author). Order `activity`:
    newest activity first; `waiting`: longest waiting for an agent first (queued_at, then created)."""
    where: list[LiteralString] = []
    params: list[Any] = []
    for column, value in (
        ("c.status", filters.status),
        ("c.handler", filters.handler),
        ("c.assignee", filters.assignee),
        ("c.channel", filters.channel),
        ("c.customer_id", filters.customer_id),
    ):
        if value is not None:
            where.append(f"{column} = %s")  # column names: the literals above
            params.append(value)
    if filters.unassigned:
        where.append("c.assignee IS NULL")
    clause: LiteralString = ("WHERE " + " AND ".join(where)) if where else ""
    ordering: LiteralString = (
        "coalesce(c.queued_at, c.created_at), c.id"
        if order == "waiting"
        else "coalesce(c.last_message_at, c.created_at) DESC, c.id"
    )
    cur = await conn.execute(
        f"SELECT {CONVERSATION}, cu.name AS customer_name, lm.last_message, lm.last_seq, lm.last_author "  # noqa: S608
        "FROM aicc.conversations c JOIN aicc.customers cu ON cu.id = c.customer_id "
        "LEFT JOIN LATERAL (SELECT left(m.body, 200) AS last_message, m.seq AS last_seq, "
        " m.author AS last_author FROM aicc.conversation_messages m WHERE m.conversation_id = c.id "
        f" ORDER BY m.seq DESC LIMIT 1) lm ON true {clause} "
        f"ORDER BY {ordering} LIMIT %s OFFSET %s",
        (*params, limit, offset),
    )
    return await cur.fetchall()


async def update_conversation(
    conn: AsyncConnection[DictRow], conversation_id: UUID, **changes: Any
) -> dict[str, Any] | None:
    """Set columns (status, handler, assignee, queue, language, summary, priority, tags); a status of
    resolved stamps resolved_at; handler queue, from another handler, stamps queued_at (the wait for
    an agent starts). Returns the conversation as it is now, None when there is none."""
    allowed = ("status", "handler", "assignee", "queue", "language", "summary", "priority", "tags")
    sets: list[LiteralString] = []
    params: list[Any] = []
    for column in allowed:
        if column in changes:
            sets.append(f"{column} = %s")  # names from `allowed`
            params.append(changes[column])
    unknown = set(changes) - set(allowed)
    if unknown:
        raise ValueError(f"unknown conversation fields {sorted(unknown)}")
    if changes.get("handler") == "queue":
        # SET reads the row as it was: a conversation already waiting keeps its place.
        sets.append("queued_at = CASE WHEN handler = 'queue' THEN coalesce(queued_at, now()) ELSE now() END")
    if changes.get("status") == "resolved":
        sets.append("resolved_at = now()")
    elif "status" in changes:
        sets.append("resolved_at = NULL")
    sets.append("updated_at = now()")
    await conn.execute(
        f"UPDATE aicc.conversations SET {', '.join(sets)} WHERE id = %s",  # noqa: S608
        (*params, conversation_id),
    )
    return await get_conversation(conn, conversation_id)


# --- messages --------------------------------------------------------------------------------------


async def message_by_client_id(
    conn: AsyncConnection[DictRow], conversation_id: UUID, client_id: str
) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {MESSAGE} FROM aicc.conversation_messages WHERE conversation_id = %s AND client_id = %s",  # noqa: S608
        (conversation_id, client_id),
    )
    return await cur.fetchone()


async def add_message(
    conn: AsyncConnection[DictRow],
    conversation_id: UUID,
    *,
    direction: Literal["in", "out"],
    author: Author,
    body: str,
    author_id: int | None = None,
    client_id: str | None = None,
    delivered: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Append a message; (message, True), or (the message stored before, False) when `client_id` is
    one the conversation has. The body must fit BODY_MAX (callers refuse longer ones first)."""
    if not 1 <= len(body) <= BODY_MAX:
        raise ValueError(f"a message body has 1 to {BODY_MAX} characters; this one has {len(body)}")
    # The lock numbers messages in order and makes the client_id check and the insert one step.
    await conn.execute("SELECT 1 FROM aicc.conversations WHERE id = %s FOR UPDATE", (conversation_id,))
    if client_id is not None:
        earlier = await message_by_client_id(conn, conversation_id, client_id)
        if earlier is not None:
            return earlier, False
    cur = await conn.execute(
        "INSERT INTO aicc.conversation_messages (conversation_id, seq, direction, author, author_id, body, "  # noqa: S608
        "client_id, delivered_at) VALUES (%s, (SELECT coalesce(max(seq), 0) + 1 FROM "
        "aicc.conversation_messages WHERE conversation_id = %s), %s, %s, %s, %s, %s, %s) "
        f"RETURNING {MESSAGE}",
        (
            conversation_id,
            conversation_id,
            direction,
            author,
            author_id,
            body,
            client_id,
            _now() if delivered else None,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    await conn.execute(
        "UPDATE aicc.conversations SET last_message_at = %s, updated_at = now() WHERE id = %s",
        (row["created_at"], conversation_id),
    )
    return row, True


async def mark_delivered(conn: AsyncConnection[DictRow], message_ids: list[int]) -> None:
    if message_ids:
        await conn.execute(
            "UPDATE aicc.conversation_messages SET delivered_at = now() WHERE id = ANY(%s) "
            "AND delivered_at IS NULL",
            (message_ids,),
        )


async def messages(
    conn: AsyncConnection[DictRow], conversation_id: UUID, *, after_seq: int = 0, limit: int = 1000
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {MESSAGE} FROM aicc.conversation_messages WHERE conversation_id = %s AND seq > %s "  # noqa: S608
        "ORDER BY seq LIMIT %s",
        (conversation_id, after_seq, limit),
    )
    return await cur.fetchall()


async def last_message(conn: AsyncConnection[DictRow], conversation_id: UUID) -> dict[str, Any] | None:
    """The latest message's seq and author, None when the conversation has none."""
    cur = await conn.execute(
        "SELECT seq, author FROM aicc.conversation_messages WHERE conversation_id = %s "
        "ORDER BY seq DESC LIMIT 1",
        (conversation_id,),
    )
    return await cur.fetchone()


# --- a customer's history --------------------------------------------------------------------------


def number_forms(phone: str) -> list[str]:
    """The ways a caller's number may appear as a SIP user (aicc.calls.caller) for one E.164 number:
    +8613800138000, 8613800138000, 008613800138000, 13800138000 (and 021... for a landline)."""
    number = e164(phone)
    if not number:
        return []
    digits = number[1:]
    forms = {number, digits, "00" + digits}
    if digits.startswith("86"):
        national = digits[2:]
        forms.add(national if re.fullmatch(r"1\d{10}", national) else "0" + national)
    return sorted(forms)


async def history(conn: AsyncConnection[DictRow], customer_id: UUID) -> list[dict[str, Any]]:
    """Every conversation of the customer on any channel and every call from their phone numbers, oldest
    first: kind conversation (id, channel, status, handler, ...) or call (call_id, outcome, ...)."""
    cur = await conn.execute(
        f"SELECT {CONVERSATION}, (SELECT count(*) FROM aicc.conversation_messages m "  # noqa: S608
        "WHERE m.conversation_id = c.id) AS messages FROM aicc.conversations c WHERE c.customer_id = %s",
        (customer_id,),
    )
    items: list[dict[str, Any]] = [
        {"kind": "conversation", "at": row["created_at"], **row} for row in await cur.fetchall()
    ]
    cur = await conn.execute(
        "SELECT value FROM aicc.customer_identities WHERE customer_id = %s AND kind = 'phone'", (customer_id,)
    )
    items += await phone_calls(conn, {e164(str(r["value"])) for r in await cur.fetchall()})
    items.sort(key=lambda item: item["at"])
    return items


async def phone_calls(conn: AsyncConnection[DictRow], phones: set[str]) -> list[dict[str, Any]]:
    """Every call from these E.164 numbers, whatever form the trunk gave them, oldest first."""
    phones = phones - {""}
    forms = sorted({f for p in phones for f in number_forms(p)})
    if not forms:
        return []
    cur = await conn.execute(
        "SELECT call_id, caller, service, language, started_at, answered_at, ended_at, outcome, "
        "end_reason, bot, queue, agent, summary FROM aicc.calls WHERE caller = ANY(%s) ORDER BY started_at",
        (forms,),
    )
    return [
        {"kind": "call", "channel": "voice", "at": row["started_at"], **row}
        for row in await cur.fetchall()
        if e164(str(row["caller"])) in phones  # the same number, whatever form the trunk gave it
    ]
