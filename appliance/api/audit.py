"""The audit log: one entry per change, written in the same transaction as the change (so there is
never a change without its entry, nor an entry for a change that was rolled back).

aicc.audit_log is append-only in the database itself (triggers refuse UPDATE, DELETE and TRUNCATE for
every login). Secrets never enter it: keys that name one are dropped from before/after.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from aicc.appliance.api.deps import Principal

# Keys ending in a secret's name: password, password_hash, new_password, token, token_hash,
# api_secret_key, client_secret, ... (but not password_changed_at or token_id).
_SECRET_KEY = re.compile(
    r"(^|_)(password|passwd|token|secret|secret_key|hash|credentials?|private_key|api_key)$"
)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key.lower()))


def scrub(value: Any) -> Any:
    """`value` as plain JSON data without secret-looking keys (at any depth)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): scrub(v) for k, v in value.items() if not is_secret_key(str(k))}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | Path):
        return str(value)
    if isinstance(value, Enum):
        return scrub(value.value)
    if isinstance(value, bytes | bytearray | memoryview):
        return None  # raw bytes in a record are hashes or keys: never shown
    return value


def _jsonb(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(scrub(value), dumps=json.dumps)


async def record(
    conn: AsyncConnection[DictRow],
    principal_or_actor: Principal | str,
    action: str,
    target_type: str,
    target_id: object,
    before: Any,
    after: Any,
    source: str = "",
) -> int:
    """Append one entry; returns its id. `principal_or_actor` is the caller, or a name such as
    "installer", "acd" or "system" for changes no user made."""
    if isinstance(principal_or_actor, Principal):
        actor_id: int | None = principal_or_actor.user_id
        actor = principal_or_actor.username
    else:
        actor_id, actor = None, principal_or_actor
    cur = await conn.execute(
        "INSERT INTO aicc.audit_log (actor_id, actor, source, action, target_type, target_id, before, "
        "after) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (actor_id, actor, source, action, target_type, str(target_id), _jsonb(before), _jsonb(after)),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])
