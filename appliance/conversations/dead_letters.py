"""Messages a channel could not deliver (aicc.channel_dead_letters): after the channel's retries, or at
once when the channel refused them for good. A row names the conversation and the message (whose text
stays in aicc.conversation_messages, under its retention), the recipient, the channel's own id of the
message, how often it was tried and the last error. Admins list them (GET /api/channels/dead-letters).
"""

from __future__ import annotations

from typing import Any, LiteralString
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from aicc.appliance.conversations.store import Channel

COLUMNS: LiteralString = (
    "id, channel, conversation_id, message_id, recipient, reference, attempts, error, created_at"
)


async def add(
    conn: AsyncConnection[DictRow],
    channel: Channel,
    *,
    conversation_id: UUID | None,
    message_id: int | None,
    recipient: str,
    reference: str,
    attempts: int,
    error: str,
) -> int:
    cur = await conn.execute(
        "INSERT INTO aicc.channel_dead_letters (channel, conversation_id, message_id, recipient, "
        "reference, attempts, error) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (channel, conversation_id, message_id, recipient[:300], reference[:128], attempts, error[:1000]),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def latest(
    conn: AsyncConnection[DictRow], *, channel: Channel | None = None, limit: int = 50, offset: int = 0
) -> list[dict[str, Any]]:
    """Newest first."""
    cur = await conn.execute(
        f"SELECT {COLUMNS} FROM aicc.channel_dead_letters WHERE %s::text IS NULL OR channel = %s "  # noqa: S608
        "ORDER BY id DESC LIMIT %s OFFSET %s",
        (channel, channel, limit, offset),
    )
    return await cur.fetchall()
