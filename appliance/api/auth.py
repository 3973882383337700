"""Passwords, tokens and login throttling.

- Passwords: argon2id (RFC 9106 low-memory profile), hashed in a worker thread with a bound on how many
  run at once (each takes 64 MiB), so a burst of logins cannot exhaust memory or stall the event loop.
- Tokens: "aicc_" + 43 URL-safe characters. Only HMAC-SHA256(api_secret_key, token) is stored, with a
  short display prefix: a copy of the database does not let anyone in.
- Throttling: per user (failed_logins and locked_until in aicc.users) and per client address (an
  in-process sliding window; each API process keeps its own, which is enough to slow guessing down).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.profiles import RFC_9106_LOW_MEMORY
from psycopg import AsyncConnection
from psycopg.rows import DictRow

TOKEN_PREFIX = "aicc_"  # noqa: S105  # the tokens' visible marker, not a secret
DISPLAY_PREFIX_CHARS = 12
MIN_PASSWORD = 12
LONG_PASSWORD = 16
MAX_PASSWORD = 1024
TokenKind = Literal["api", "session"]

_CLASSES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("lower case", str.islower),
    ("upper case", str.isupper),
    ("digits", str.isdigit),
    ("other characters", lambda c: not c.isalnum()),
)


def weak_password_reason(password: str, username: str) -> str | None:
    """Why `password` is refused, or None when it is acceptable."""
    if len(password) > MAX_PASSWORD:
        return f"a password has at most {MAX_PASSWORD} characters"
    name, text = username.lower(), password.lower()
    # Short usernames ("li") occur inside good passwords by chance; longer ones are a pattern.
    if name and (text == name or (len(name) >= 4 and name in text)):
        return "the password must not contain the username"
    if len(password) >= LONG_PASSWORD:
        return None
    kinds = sum(1 for _, test in _CLASSES if any(test(c) for c in password))
    if len(password) >= MIN_PASSWORD and kinds >= 3:
        return None
    return (
        f"too weak: use at least {MIN_PASSWORD} characters with 3 of lower case, upper case, digits and "
        f"other characters, or at least {LONG_PASSWORD} characters of any kind"
    )


class Passwords:
    """argon2id hashing off the event loop, at most `parallel` at a time."""

    def __init__(self, parallel: int = 2, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY)
        self._slots = asyncio.Semaphore(parallel)
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """True when `password` matches `stored`. A missing hash (unknown user, no password set) still
        costs one verification, so response times do not tell which usernames exist."""
        if stored is None:
            if self._dummy is None:
                self._dummy = await self.hash(secrets.token_urlsafe(16))
            stored = self._dummy  # a random password nobody knows: never matches
        async with self._slots:
            try:
                return await asyncio.to_thread(self._hasher.verify, stored, password)
            except (VerificationError, InvalidHashError):
                return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(key: bytes, token: str) -> bytes:
    return hmac.new(key, token.encode(), hashlib.sha256).digest()


def display_prefix(token: str) -> str:
    return token[:DISPLAY_PREFIX_CHARS]


@dataclass(frozen=True)
class TokenRecord:
    id: int
    user_id: int
    kind: str
    name: str
    prefix: str
    expires_at: datetime | None
    created_at: datetime


async def issue_token(
    conn: AsyncConnection[DictRow],
    key: bytes,
    *,
    user_id: int,
    kind: TokenKind,
    name: str = "",
    expires_in_s: float | None = None,
    source: str = "",
) -> tuple[TokenRecord, str]:
    """Store a new token (its keyed hash only); returns its record and the token, shown once."""
    token = new_token()
    cur = await conn.execute(
        "INSERT INTO aicc.api_tokens (user_id, kind, name, token_hash, prefix, source, expires_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s)) "
        "RETURNING id, user_id, kind, name, prefix, expires_at, created_at",
        (user_id, kind, name, token_digest(key, token), display_prefix(token), source, expires_in_s),
    )
    row = await cur.fetchone()
    assert row is not None
    return TokenRecord(**row), token


@dataclass(frozen=True)
class TokenCheck:
    """A presented token and its user, or why it is refused (`refused` is a message for the caller)."""

    token_id: int
    user_id: int
    username: str
    role: str
    kind: str
    refused: str | None


async def check_token(
    conn: AsyncConnection[DictRow], key: bytes, token: str, *, idle_s: float
) -> TokenCheck | None:
    """Look a token up and mark it used. None: no such token. Expiry and idleness are judged by the
    database's clock, the one that wrote the timestamps."""
    cur = await conn.execute(
        "SELECT t.id AS token_id, t.user_id, u.username, u.role, t.kind, u.disabled, "
        "t.revoked_at IS NOT NULL AS revoked, "
        "t.expires_at IS NOT NULL AND t.expires_at <= now() AS expired, "
        "t.kind = 'session' AND coalesce(t.last_used_at, t.created_at) "
        "  <= now() - make_interval(secs => %(idle)s) AS idle, "
        "t.last_used_at IS NULL OR t.last_used_at <= now() - make_interval(secs => %(touch)s) AS stale "
        "FROM aicc.api_tokens t JOIN aicc.users u ON u.id = t.user_id WHERE t.token_hash = %(digest)s",
        # Touching last_used_at on every request would be a write per request; a fraction of the idle
        # timeout is precise enough.
        {"digest": token_digest(key, token), "idle": idle_s, "touch": min(60.0, idle_s / 4)},
    )
    row = await cur.fetchone()
    if row is None:
        return None
    refused = None
    if row["revoked"]:
        refused = "this token was revoked (logged out, or revoked by its owner or an admin)"
    elif row["disabled"]:
        refused = f"user {row['username']!r} is disabled"
    elif row["expired"]:
        refused = "this token has expired; log in again (or create a new API token)"
    elif row["idle"]:
        refused = f"this session was idle for more than {idle_s:g} s; log in again"
    elif row["stale"]:
        await conn.execute(
            "UPDATE aicc.api_tokens SET last_used_at = now() WHERE id = %s", (row["token_id"],)
        )
    return TokenCheck(
        token_id=row["token_id"],
        user_id=row["user_id"],
        username=row["username"],
        role=row["role"],
        kind=row["kind"],
        refused=refused,
    )


class LoginThrottle:
    """Failed logins per client address in a sliding window. Memory is bounded: past `max_addresses`
    the address seen least recently is forgotten."""

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 10000,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            return deque()
        horizon = self._clock() - self.window_s
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None when it may try now."""
        times = self._recent(address)
        if len(times) < self.max_failures:
            return None
        # Allowed again once enough of the window's failures have aged out.
        release = times[len(times) - self.max_failures] + self.window_s
        return max(1, math.ceil(release - self._clock()))

    def failed(self, address: str) -> None:
        times = self._recent(address)
        times.append(self._clock())
        self._failures[address] = times
        self._failures.move_to_end(address)
        while len(self._failures) > self._max_addresses:
            self._failures.popitem(last=False)
