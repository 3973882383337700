"""The email channel's tables (conversations migration 0007): which thread and address a conversation
is, the ledger of messages in and out by Message-ID, and where reading the mailbox got to."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from aicc.appliance.channels.tencent_hub import Window
from aicc.appliance.conversations import store
from aicc.appliance.conversations.store import CONVERSATION

THREAD_MAX = 20


@dataclass(frozen=True)
class Peer:
    """Whom an email conversation is with, and the thread a message belongs to: `thread` is the ids it
    answers (inbound) or the conversation's ids, newest first (a reply's In-Reply-To and References)."""

    address: str
    name: str = ""
    subject: str = ""
    thread: tuple[str, ...] = ()


async def claim_inbound(
    conn: AsyncConnection[DictRow], msgid: str, peer: Peer, sent_at: dt.datetime | None
) -> bool:
    """Take a customer's message by its Message-ID: False when it was taken before (a duplicate)."""
    cur = await conn.execute(
        "INSERT INTO aicc.email_messages (direction, msgid, address, status, at) "
        "VALUES ('in', %s, %s, 'stored', %s) ON CONFLICT DO NOTHING RETURNING 1",
        (msgid, peer.address, sent_at),
    )
    return await cur.fetchone() is not None


async def open_conversation(conn: AsyncConnection[DictRow], peer: Peer) -> dict[str, Any] | None:
    """The conversation one of the ids the message answers belongs to (the newest such), if any: the
    customer's address need not match (a colleague may answer in the same thread). A resolved one opens
    again and waits for an agent: a customer's answer to a closed case is a new question on it."""
    if not peer.thread:
        return None
    cur = await conn.execute(
        f"SELECT {CONVERSATION} FROM aicc.conversations c JOIN aicc.email_messages m "  # noqa: S608
        "ON m.conversation_id = c.id WHERE m.msgid = ANY(%s) ORDER BY m.created_at DESC LIMIT 1",
        (list(peer.thread),),
    )
    conversation = await cur.fetchone()
    if conversation is not None and conversation["status"] == "resolved":
        return await store.update_conversation(
            conn, conversation["id"], status="open", handler="queue", assignee=None
        )
    return conversation


async def link(conn: AsyncConnection[DictRow], conversation_id: UUID, peer: Peer) -> None:
    await conn.execute(
        "INSERT INTO aicc.email_conversations (conversation_id, address, name, subject) "
        "VALUES (%s, %s, %s, %s)",
        (conversation_id, peer.address, peer.name, peer.subject),
    )


async def peer_of(conn: AsyncConnection[DictRow], conversation_id: UUID) -> Peer | None:
    """The conversation's customer and its thread (the Message-IDs in and out, newest first)."""
    cur = await conn.execute(
        "SELECT address, name, subject FROM aicc.email_conversations WHERE conversation_id = %s",
        (conversation_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    cur = await conn.execute(
        "SELECT msgid FROM aicc.email_messages WHERE conversation_id = %s AND status <> 'refused' "
        "ORDER BY created_at DESC, direction LIMIT %s",
        (conversation_id, THREAD_MAX),
    )
    thread = tuple(str(r["msgid"]) for r in await cur.fetchall())
    return Peer(str(row["address"]), str(row["name"]), str(row["subject"]), thread)


async def window(conn: AsyncConnection[DictRow], peer: Peer) -> Window:
    """Email has no reply window (EmailHub.plan never asks)."""
    raise NotImplementedError("email has no reply window")


async def add_outbound(
    conn: AsyncConnection[DictRow], msgid: str, peer: Peer, conversation_id: UUID, message_id: int
) -> None:
    await conn.execute(
        "INSERT INTO aicc.email_messages (direction, msgid, address, conversation_id, message_id, status) "
        "VALUES ('out', %s, %s, %s, %s, 'pending')",
        (msgid, peer.address, conversation_id, message_id),
    )


async def sent(conn: AsyncConnection[DictRow], msgids: tuple[str, ...]) -> dict[str, Any] | None:
    """The reply of ours among `msgids` that went out (a bounce names it), if any."""
    if not msgids:
        return None
    cur = await conn.execute(
        "SELECT msgid, address, conversation_id, message_id, attempts FROM aicc.email_messages "
        "WHERE direction = 'out' AND msgid = ANY(%s) AND status = 'sent' LIMIT 1 FOR UPDATE",
        (list(msgids),),
    )
    return await cur.fetchone()


# --- the mailbox ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    uidvalidity: int | None
    last_uid: int


async def lease(conn: AsyncConnection[DictRow], mailbox: str, owner: str, seconds: float) -> Position | None:
    """Read the mailbox for `seconds` more, unless another process holds it: its position, or None."""
    cur = await conn.execute(
        "INSERT INTO aicc.email_mailboxes AS b (mailbox, owner, lease_until) "
        "VALUES (%s, %s, now() + make_interval(secs => %s)) ON CONFLICT (mailbox) DO UPDATE "
        "SET owner = excluded.owner, lease_until = excluded.lease_until "
        "WHERE b.owner = excluded.owner OR b.lease_until < now() RETURNING uidvalidity, last_uid",
        (mailbox, owner, seconds),
    )
    row = await cur.fetchone()
    return None if row is None else Position(row["uidvalidity"], int(row["last_uid"]))


async def release(conn: AsyncConnection[DictRow], mailbox: str, owner: str) -> None:
    await conn.execute(
        "UPDATE aicc.email_mailboxes SET lease_until = '-infinity' WHERE mailbox = %s AND owner = %s",
        (mailbox, owner),
    )


async def advance(
    conn: AsyncConnection[DictRow], mailbox: str, owner: str, uidvalidity: int, last_uid: int
) -> bool:
    """Record that the mailbox was read up to `last_uid`; False when this process lost the lease."""
    cur = await conn.execute(
        "UPDATE aicc.email_mailboxes SET uidvalidity = %s, last_uid = %s, updated_at = now() "
        "WHERE mailbox = %s AND owner = %s RETURNING 1",
        (uidvalidity, last_uid, mailbox, owner),
    )
    return await cur.fetchone() is not None
