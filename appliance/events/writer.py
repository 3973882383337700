"""Writes contact-center events into aicc.cc_events: buffered, in COPY batches, never lost while the
database is away.

Producers call `EventWriter.append` (it never blocks and never raises); a background task writes what
is pending every `interval_s`, or at once when a batch is full. Each batch goes in with COPY; a unique
violation (an event written before, replayed) makes the batch go in again with INSERT ... ON CONFLICT
(uid) DO NOTHING, so a replay is harmless.

While the database cannot be reached, events stay in memory and, once more than `batch` are pending
(and on close), are appended to this writer's spool file (JSON lines, fsynced) in `spool_dir`. A retry
with backoff (up to `max_backoff_s`) writes the spool, then memory, when the database is back, and
removes the spool file. Each live writer holds an exclusive lock on its own spool file; a writer that
starts claims every unlocked spool file in the directory (left by a process that stopped or crashed)
and replays it before its own events.

Code that writes its events in the same transaction as its own state (the ACD) uses
`insert_events(conn, events)` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.events.kinds import Event

log = logging.getLogger(__name__)

_COPY = "COPY aicc.cc_events (uid, at, kind, contact_id, call_id, queue, agent_id, data) FROM STDIN"
_INSERT_MISSING = (
    "INSERT INTO aicc.cc_events (uid, at, kind, contact_id, call_id, queue, agent_id, data) "
    "SELECT * FROM unnest(%s::uuid[], %s::timestamptz[], %s::text[], %s::uuid[], %s::text[], %s::text[], "
    "%s::bigint[], %s::jsonb[]) ON CONFLICT (uid) DO NOTHING"
)
_BIGINT_MAX = 2**63 - 1
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SPOOL_GLOB = "events-*.jsonl"

# One table row: uid, at, kind, contact_id, call_id, queue, agent_id, data (JSON text).
Row = tuple[str, datetime, str, str | None, str | None, str | None, int | None, str]


class EventRejected(ValueError):
    """An event that aicc.cc_events cannot hold (bad uid or contact_id, naive time, data not JSON)."""


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# One encoder for every event: json.dumps with options builds a new encoder per call (twice as slow).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=_json_default)


def _uuid(name: str, value: object) -> str:
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):  # the common case, 8x faster
        return value
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise EventRejected(f"{name} must be a UUID, got {value!r}") from None


def _text(name: str, value: str | None) -> str | None:
    """Text PostgreSQL accepts: no NUL character, valid UTF-8 (no lone surrogates)."""
    if value is None:
        return None
    try:
        if not isinstance(value, str) or "\x00" in value:
            raise ValueError
        value.encode()
    except (ValueError, UnicodeEncodeError):
        raise EventRejected(
            f"{name} must be text without NUL characters or lone surrogates, got {value!r}"
        ) from None
    return value


def to_row(event: Event) -> Row:
    """The event as a table row, checked now so that a bad event cannot block a whole batch later."""
    uid = _uuid("uid", event.uid)
    if not isinstance(event.at, datetime) or event.at.utcoffset() is None:
        raise EventRejected(f"at must be a datetime with a time zone (datetime.now(UTC)), got {event.at!r}")
    contact_id = None if event.contact_id is None else _uuid("contact_id", event.contact_id)
    agent_id = event.agent_id
    if agent_id is not None and (
        isinstance(agent_id, bool) or not isinstance(agent_id, int) or not 0 <= agent_id <= _BIGINT_MAX
    ):
        raise EventRejected(f"agent_id must be a user id (a positive integer), got {agent_id!r}")
    try:
        data = _ENCODER.encode(event.data)
    except (TypeError, ValueError) as exc:
        raise EventRejected(f"data must be JSON (no NaN, no objects): {exc}") from None
    if "\\u0000" in data:  # jsonb refuses an escaped NUL as text columns refuse NUL
        raise EventRejected("data must not contain NUL characters")
    _text("data", data)
    call_id, queue = _text("call_id", event.call_id), _text("queue", event.queue)
    return (uid, event.at, event.kind, contact_id, call_id, queue, agent_id, data)


def _row_to_json(row: Row) -> str:
    uid, at, kind, contact_id, call_id, queue, agent_id, data = row
    return json.dumps(
        [uid, at.isoformat(), kind, contact_id, call_id, queue, agent_id, data], ensure_ascii=False
    )


def _row_from_json(line: bytes) -> Row:
    uid, at, kind, contact_id, call_id, queue, agent_id, data = json.loads(line)
    return (uid, datetime.fromisoformat(at), kind, contact_id, call_id, queue, agent_id, data)


async def _copy(conn: psycopg.AsyncConnection[Any], rows: Sequence[Row]) -> None:
    async with conn.cursor() as cur, cur.copy(_COPY) as copy:
        for row in rows:
            await copy.write_row(row)


async def _insert_missing(conn: psycopg.AsyncConnection[Any], rows: Sequence[Row]) -> int:
    """Insert the rows not there yet (by uid); returns how many were inserted."""
    columns = [list(col) for col in zip(*rows, strict=True)]
    async with conn.cursor() as cur:
        await cur.execute(_INSERT_MISSING, columns)
        return max(cur.rowcount, 0)


async def insert_events(conn: psycopg.AsyncConnection[Any], events: Sequence[Event]) -> None:
    """Write events within the caller's transaction (COPY; events already there are skipped), so that
    they commit or roll back with the caller's own changes. Raises EventRejected for an invalid event
    before anything is written."""
    rows = [to_row(e) for e in events]
    if not rows:
        return
    try:
        async with conn.transaction():  # a savepoint inside the caller's transaction
            await _copy(conn, rows)
    except errors.UniqueViolation:
        await _insert_missing(conn, rows)


@dataclass
class WriterStats:
    written: int = 0  # rows inserted
    duplicates: int = 0  # rows skipped because their uid was already there (a replay)
    buffered: int = 0  # events in memory now, not yet written nor spooled
    spooled: int = 0  # events appended to spool files while the database was away
    retries: int = 0  # failed write attempts
    rejected: int = 0  # invalid events refused by append (logged with their content)


@dataclass
class _SpoolFile:
    """A spool file this writer holds locked: its own, or one left by a writer that stopped."""

    path: Path
    handle: IO[bytes]
    read_pos: int = 0

    def release(self, *, remove: bool) -> None:
        if remove:
            self.path.unlink(missing_ok=True)
        self.handle.close()  # releases the lock


def _claim(path: Path) -> _SpoolFile | None:
    """Lock a spool file found in the directory; None when a live writer holds it (or it is gone)."""
    try:
        handle = path.open("r+b")
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    if not path.exists():  # drained and removed by its owner between the scan and the lock
        handle.close()
        return None
    return _SpoolFile(path, handle)


def _new_spool(spool_dir: Path) -> _SpoolFile:
    """Create this writer's spool file, locked before it gets the name other writers look for."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    stem = f"events-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp = spool_dir / f".{stem}.tmp"
    handle = tmp.open("a+b")
    fcntl.flock(handle, fcntl.LOCK_EX)
    path = spool_dir / f"{stem}.jsonl"
    tmp.rename(path)
    return _SpoolFile(path, handle)


def _append_lines(spool: _SpoolFile, rows: Sequence[Row]) -> None:
    spool.handle.write("".join(_row_to_json(r) + "\n" for r in rows).encode())
    spool.handle.flush()
    os.fsync(spool.handle.fileno())


def _read_lines(spool: _SpoolFile, limit: int) -> tuple[list[Row], int]:
    """Up to `limit` rows from the spool's read position; returns them and the position after them.
    A line that does not parse (the tail a crash cut short) is logged and skipped."""
    spool.handle.seek(spool.read_pos)
    rows: list[Row] = []
    pos = spool.read_pos
    while len(rows) < limit:
        line = spool.handle.readline()
        if not line:
            break
        pos += len(line)
        try:
            rows.append(_row_from_json(line))
        except (ValueError, TypeError) as exc:
            log.error("spool %s: skipped a line that does not parse (%s): %r", spool.path, exc, line[:200])
    return rows, pos


class EventWriter:
    """Buffers events and writes them to aicc.cc_events in COPY batches; see the module docstring.

    Up to `connections` batches are written at once, each on its own pool connection.
    `append` must be called from the event loop's thread. Without a spool_dir, events wait in memory
    while the database is away (and those still unwritten at close are logged as lost).
    `on_count(name, n)`, if given, is called for every increment of a WriterStats counter (written,
    duplicates, spooled, retries, rejected), e.g. to feed Prometheus counters.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        spool_dir: Path | None,
        batch: int = 500,
        interval_s: float = 0.2,
        max_backoff_s: float = 5.0,
        acquire_timeout_s: float = 5.0,
        connections: int = 2,
        on_count: Callable[[str, int], None] | None = None,
    ) -> None:
        if batch < 1 or connections < 1:
            raise ValueError(f"batch and connections must be at least 1, got {batch} and {connections}")
        self._pool = pool
        self._spool_dir = spool_dir
        self._batch = batch
        self._interval_s = interval_s
        self._max_backoff_s = max(max_backoff_s, interval_s)
        self._acquire_timeout_s = acquire_timeout_s
        self._connections = connections
        self._on_count = on_count
        self.stats = WriterStats()
        self._pending: deque[Row] = deque()
        self._claimed: list[_SpoolFile] = []  # spool files left by writers that stopped
        self._own: _SpoolFile | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._down_since: float | None = None
        self._backoff_s = interval_s
        self._next_try = 0.0

    def append(self, event: Event) -> None:
        """Queue an event for writing. Never blocks, never raises; an invalid event is logged and counted
        in stats.rejected (it could never be stored)."""
        try:
            row = to_row(event)
        except EventRejected as exc:
            self._count("rejected", 1)
            log.error("event refused, it cannot be stored: %s; event: %r", exc, event)
            return
        except Exception:  # never raise into the producer
            self._count("rejected", 1)
            log.exception("event refused, it cannot be stored: %r", event)
            return
        self._pending.append(row)
        self.stats.buffered = len(self._pending)
        if len(self._pending) >= self._batch:
            self._wake.set()

    async def start(self) -> None:
        """Claim spool files left by earlier writers (written first) and start the background writer."""
        if self._task is not None:
            return
        if self._spool_dir is not None and self._spool_dir.is_dir():
            for path in sorted(self._spool_dir.glob(_SPOOL_GLOB)):
                spool = _claim(path)
                if spool is not None:
                    log.info("replaying spool file %s left by an earlier writer", path)
                    self._claimed.append(spool)
        self._task = asyncio.create_task(self._run(), name="event-writer")

    async def close(self) -> None:
        """Stop the background writer and write what is pending; what cannot be written is spooled."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        async with self._lock:
            if self._pending or self._own is not None or self._claimed:
                await self._flush_locked()
            if self._pending and self._spool_dir is not None:
                try:
                    await self._spool_pending()
                except OSError as exc:
                    log.error("cannot write the spool file in %s: %s", self._spool_dir, exc)
            if self._pending:
                log.error(
                    "%d events could not be written to aicc.cc_events and are lost: the database is "
                    "unreachable and they could not be spooled (spool_dir: %s)",
                    len(self._pending),
                    self._spool_dir,
                )
            # Closing the files releases their locks: the next writer to start replays them.
            for spool in [*self._claimed, *([self._own] if self._own else [])]:
                spool.release(remove=False)
            self._claimed.clear()
            self._own = None

    async def flush(self) -> int:
        """Write the spool files and what is pending now; returns the rows written. While the database
        is away it writes nothing (the events stay; see stats) and returns 0."""
        async with self._lock:
            return await self._flush_locked()

    # --- internals ---

    def _count(self, name: str, n: int) -> None:
        setattr(self.stats, name, getattr(self.stats, name) + n)
        if self._on_count is not None and n:
            try:
                self._on_count(name, n)
            except Exception:
                log.exception("event writer: on_count callback failed")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            timeout = self._interval_s if self._down_since is None else max(0.0, self._next_try - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if self._closing:
                break
            try:
                if self._down_since is None or loop.time() >= self._next_try:
                    await self.flush()
                elif len(self._pending) > self._batch and self._spool_dir is not None:
                    async with self._lock:
                        await self._spool_pending()
            except Exception as exc:  # a bug must not stop the writer: log it, keep the events, go on
                log.exception("event writer: unexpected error; events are kept and retried")
                self._went_down(loop.time(), exc)

    async def _flush_locked(self) -> int:
        loop = asyncio.get_running_loop()
        written = 0
        try:
            for spool in list(self._claimed):
                written += await self._drain(spool)
                spool.release(remove=True)
                self._claimed.remove(spool)
            if self._own is not None:
                written += await self._drain(self._own)
                self._own.release(remove=True)
                self._own = None
            while self._pending:
                written += await self._write_pending()
        except (psycopg.Error, OSError) as exc:
            self._went_down(loop.time(), exc)
            if len(self._pending) > self._batch and self._spool_dir is not None:
                await self._spool_pending()
            return written
        if self._down_since is not None:
            log.info(
                "event log writes resumed after %.1f s of failures; %d events written",
                time.monotonic() - self._down_since,
                written,
            )
            self._down_since = None
        self._backoff_s = self._interval_s
        return written

    def _went_down(self, now: float, exc: BaseException) -> None:
        self._count("retries", 1)
        if self._down_since is None:
            self._down_since = time.monotonic()
            where = f"spooling to {self._spool_dir}" if self._spool_dir else "no spool_dir: kept in memory"
            log.warning(
                "cannot write to aicc.cc_events (%s: %s); %d events pending (%s); retrying with backoff",
                type(exc).__name__,
                exc,
                len(self._pending),
                where,
            )
        self._next_try = now + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self._max_backoff_s)

    async def _write(self, rows: Sequence[Row]) -> int:
        async with self._pool.connection(timeout=self._acquire_timeout_s) as conn:
            try:
                async with conn.transaction():
                    await _copy(conn, rows)
                inserted = len(rows)
            except errors.UniqueViolation:
                async with conn.transaction():
                    inserted = await _insert_missing(conn, rows)
        self._count("written", inserted)
        self._count("duplicates", len(rows) - inserted)
        return inserted

    async def _write_pending(self) -> int:
        """Write up to `connections` batches from the front of the queue at once, each on its own
        connection (the server's index upkeep, not the client, bounds one COPY). Batches that fail stay
        at the front, in order; the first failure is raised once the others are done."""
        taken = min(len(self._pending), self._batch * self._connections)
        rows = [self._pending[i] for i in range(taken)]
        batches = [rows[i : i + self._batch] for i in range(0, taken, self._batch)]
        results = await asyncio.gather(*(self._write(b) for b in batches), return_exceptions=True)
        for _ in range(taken):  # events appended meanwhile went to the right end
            self._pending.popleft()
        failed = [
            row for b, r in zip(batches, results, strict=True) if isinstance(r, BaseException) for row in b
        ]
        self._pending.extendleft(reversed(failed))
        self.stats.buffered = len(self._pending)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return sum(r for r in results if isinstance(r, int))

    async def _drain(self, spool: _SpoolFile) -> int:
        written = 0
        while True:
            rows, pos = await asyncio.to_thread(_read_lines, spool, self._batch)
            if not rows and pos == spool.read_pos:
                return written
            if rows:
                written += await self._write(rows)
            spool.read_pos = pos

    async def _spool_pending(self) -> None:
        assert self._spool_dir is not None
        if not self._pending:
            return
        if self._own is None:
            self._own = await asyncio.to_thread(_new_spool, self._spool_dir)
        rows = list(self._pending)
        await asyncio.to_thread(_append_lines, self._own, rows)
        for _ in rows:
            self._pending.popleft()
        self.stats.buffered = len(self._pending)
        self._count("spooled", len(rows))
