"""The WeChat official account's tables (conversations migration 0006): which follower (OpenID) a
conversation is with, and the ledger of messages in (by the platform's MsgId) and out (by our id)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from aicc.appliance.channels.tencent_hub import Window
from aicc.appliance.conversations.store import CONVERSATION


async def claim_inbound(
    conn: AsyncConnection[DictRow], msgid: str, openid: str, sent_at: dt.datetime | None
) -> bool:
    """Take a follower's message by its MsgId: False when it was taken before (a duplicate)."""
    cur = await conn.execute(
        "INSERT INTO aicc.wechat_oa_messages (direction, msgid, openid, status, at) "
        "VALUES ('in', %s, %s, 'stored', %s) ON CONFLICT DO NOTHING RETURNING 1",
        (msgid, openid, sent_at),
    )
    return await cur.fetchone() is not None


async def open_conversation(conn: AsyncConnection[DictRow], openid: str) -> dict[str, Any] | None:
    """The follower's latest unresolved conversation, if any."""
    cur = await conn.execute(
        f"SELECT {CONVERSATION} FROM aicc.conversations c JOIN aicc.wechat_oa_conversations w "  # noqa: S608
        "ON w.conversation_id = c.id WHERE w.openid = %s AND c.status <> 'resolved' "
        "ORDER BY c.created_at DESC LIMIT 1",
        (openid,),
    )
    return await cur.fetchone()


async def link(conn: AsyncConnection[DictRow], conversation_id: UUID, openid: str) -> None:
    await conn.execute(
        "INSERT INTO aicc.wechat_oa_conversations (conversation_id, openid) VALUES (%s, %s)",
        (conversation_id, openid),
    )


async def peer_of(conn: AsyncConnection[DictRow], conversation_id: UUID) -> str | None:
    cur = await conn.execute(
        "SELECT openid FROM aicc.wechat_oa_conversations WHERE conversation_id = %s", (conversation_id,)
    )
    row = await cur.fetchone()
    return None if row is None else str(row["openid"])


async def window(conn: AsyncConnection[DictRow], openid: str) -> Window:
    cur = await conn.execute(
        "WITH last AS (SELECT coalesce(at, created_at) AS at, created_at FROM aicc.wechat_oa_messages "
        " WHERE direction = 'in' AND openid = %s ORDER BY created_at DESC LIMIT 1) "
        "SELECT (SELECT at FROM last) AS last_in, (SELECT count(*) FROM aicc.wechat_oa_messages o, last "
        " WHERE o.direction = 'out' AND o.openid = %s AND o.status IN ('pending', 'sent') "
        " AND o.created_at > last.created_at) AS sent",
        (openid, openid),
    )
    row = await cur.fetchone()
    assert row is not None
    return Window(row["last_in"], int(row["sent"]))


async def add_outbound(
    conn: AsyncConnection[DictRow], msgid: str, openid: str, conversation_id: UUID, message_id: int
) -> None:
    await conn.execute(
        "INSERT INTO aicc.wechat_oa_messages (direction, msgid, openid, conversation_id, message_id, status) "
        "VALUES ('out', %s, %s, %s, %s, 'pending')",
        (msgid, openid, conversation_id, message_id),
    )
