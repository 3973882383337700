"""The WeCom channel's tables (conversations migration 0004): which account and customer a conversation
is with, the sync cursor per account, and the ledger of messages in and out by WeCom msgid."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from aicc.appliance.channels.tencent_hub import Window
from aicc.appliance.conversations.store import CONVERSATION


@dataclass(frozen=True)
class Peer:
    """Whom a WeCom conversation is with: the account and the customer."""

    open_kfid: str
    external_userid: str


async def cursor(conn: AsyncConnection[DictRow], open_kfid: str) -> str:
    cur = await conn.execute("SELECT cursor FROM aicc.wecom_cursors WHERE open_kfid = %s", (open_kfid,))
    row = await cur.fetchone()
    return "" if row is None else str(row["cursor"])


async def set_cursor(conn: AsyncConnection[DictRow], open_kfid: str, value: str) -> None:
    await conn.execute(
        "INSERT INTO aicc.wecom_cursors (open_kfid, cursor) VALUES (%s, %s) ON CONFLICT (open_kfid) "
        "DO UPDATE SET cursor = excluded.cursor, updated_at = now()",
        (open_kfid, value),
    )


async def claim_inbound(
    conn: AsyncConnection[DictRow], msgid: str, peer: Peer, sent_at: dt.datetime | None
) -> bool:
    """Take a customer's message by its msgid: False when it was taken before (a duplicate)."""
    cur = await conn.execute(
        "INSERT INTO aicc.wecom_messages (direction, msgid, open_kfid, external_userid, status, at) "
        "VALUES ('in', %s, %s, %s, 'stored', %s) ON CONFLICT DO NOTHING RETURNING 1",
        (msgid, peer.open_kfid, peer.external_userid, sent_at),
    )
    return await cur.fetchone() is not None


async def open_conversation(conn: AsyncConnection[DictRow], peer: Peer) -> dict[str, Any] | None:
    """The customer's latest unresolved conversation on this account, if any."""
    cur = await conn.execute(
        f"SELECT {CONVERSATION} FROM aicc.conversations c JOIN aicc.wecom_conversations w "  # noqa: S608
        "ON w.conversation_id = c.id WHERE w.open_kfid = %s AND w.external_userid = %s "
        "AND c.status <> 'resolved' ORDER BY c.created_at DESC LIMIT 1",
        (peer.open_kfid, peer.external_userid),
    )
    return await cur.fetchone()


async def link(conn: AsyncConnection[DictRow], conversation_id: UUID, peer: Peer) -> None:
    await conn.execute(
        "INSERT INTO aicc.wecom_conversations (conversation_id, open_kfid, external_userid) "
        "VALUES (%s, %s, %s)",
        (conversation_id, peer.open_kfid, peer.external_userid),
    )


async def peer_of(conn: AsyncConnection[DictRow], conversation_id: UUID) -> Peer | None:
    cur = await conn.execute(
        "SELECT open_kfid, external_userid FROM aicc.wecom_conversations WHERE conversation_id = %s",
        (conversation_id,),
    )
    row = await cur.fetchone()
    return None if row is None else Peer(str(row["open_kfid"]), str(row["external_userid"]))


async def window(conn: AsyncConnection[DictRow], peer: Peer) -> Window:
    cur = await conn.execute(
        "WITH last AS (SELECT coalesce(at, created_at) AS at, created_at FROM aicc.wecom_messages "
        " WHERE direction = 'in' AND open_kfid = %s AND external_userid = %s "
        " ORDER BY created_at DESC LIMIT 1) "
        "SELECT (SELECT at FROM last) AS last_in, (SELECT count(*) FROM aicc.wecom_messages o, last "
        " WHERE o.direction = 'out' AND o.open_kfid = %s AND o.external_userid = %s "
        " AND o.status IN ('pending', 'sent') AND o.created_at > last.created_at) AS sent",
        (peer.open_kfid, peer.external_userid, peer.open_kfid, peer.external_userid),
    )
    row = await cur.fetchone()
    assert row is not None
    return Window(row["last_in"], int(row["sent"]))


async def add_outbound(
    conn: AsyncConnection[DictRow], msgid: str, peer: Peer, conversation_id: UUID, message_id: int
) -> None:
    await conn.execute(
        "INSERT INTO aicc.wecom_messages (direction, msgid, open_kfid, external_userid, conversation_id, "
        "message_id, status) VALUES ('out', %s, %s, %s, %s, %s, 'pending')",
        (msgid, peer.open_kfid, peer.external_userid, conversation_id, message_id),
    )
