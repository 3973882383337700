"""EventWriter against a real, throwaway PostgreSQL: COPY batches, replays, the database going away
(a TCP proxy in front of the cluster is cut and restored) and the spool file."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.db.migrate import all_migrations, apply
from aicc.appliance.db.scratch import scratch_cluster
from aicc.appliance.events.kinds import Event
from aicc.appliance.events.writer import EventRejected, EventWriter, insert_events


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with scratch_cluster("aicc-pg-", "-c fsync=off -c full_page_writes=off") as d:
        apply(d, all_migrations())
        yield d


def _port(dsn: str) -> int:
    return int(dict(part.split("=", 1) for part in dsn.split())["port"])


class Proxy:
    """A TCP relay to PostgreSQL that can be cut (every connection dropped, new ones refused) and
    restored on the same port: the database "away" as the network sees it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._relays: set[asyncio.Future[Any]] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        await asyncio.gather(*self._relays, return_exceptions=True)
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        relay = asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._relays.add(relay)
        try:
            await relay
        except asyncio.CancelledError:  # the test's loop is closing: nothing left to relay
            pass
        finally:
            self._relays.discard(relay)

    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=aicc_owner dbname=aicc connect_timeout=2"


@pytest_asyncio.fixture
async def pool(dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    p: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
    await p.open(wait=True)
    yield p
    await p.close()


@pytest_asyncio.fixture
async def proxy(dsn: str) -> AsyncIterator[Proxy]:
    px = Proxy(_port(dsn))
    await px.up()
    yield px
    if px._server is not None and px._server.is_serving():
        await px.down()


async def _proxied_pool(px: Proxy, *, wait: bool = True) -> AsyncConnectionPool[Any]:
    p: AsyncConnectionPool[Any] = AsyncConnectionPool(
        px.dsn(), min_size=1, max_size=3, open=False, reconnect_timeout=60
    )
    await p.open(wait=wait)
    return p


def _events(queue: str, n: int, start: datetime | None = None) -> list[Event]:
    t0 = start or datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
    return [
        Event(
            "contact.queued",
            at=t0 + timedelta(milliseconds=i),
            contact_id=str(uuid.uuid4()),
            call_id=f"call-{i}",
            queue=queue,
            data={"channel": "voice", "language": "zh", "position": i, "note": "排队\ttab\\back\nline"},
        )
        for i in range(n)
    ]


async def _rows(dsn: str, queue: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT uid::text, at, kind, contact_id::text, call_id, queue, agent_id, data "
            "FROM aicc.cc_events WHERE queue = %s ORDER BY at",
            (queue,),
        )
        return await cur.fetchall()


async def _until(condition: Any, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_events_go_in_by_batches_and_come_back_intact(dsn: str, pool: AsyncConnectionPool[Any]) -> None:
    counts: list[tuple[str, int]] = []
    writer = EventWriter(pool, spool_dir=None, batch=500, on_count=lambda name, n: counts.append((name, n)))
    events = _events("copy-batches", 1234)
    for e in events:
        writer.append(e)
    assert writer.stats.buffered == 1234
    assert await writer.flush() == 1234
    assert sorted(n for name, n in counts if name == "written") == [234, 500, 500]
    rows = await _rows(dsn, "copy-batches")
    assert len(rows) == 1234
    first = events[0]
    assert rows[0] == (
        first.uid,
        first.at,
        "contact.queued",
        first.contact_id,
        "call-0",
        "copy-batches",
        None,
        first.data,  # tabs, backslashes, newlines and Chinese survive COPY
    )
    assert writer.stats.written == 1234 and writer.stats.buffered == 0
    await writer.close()


@pytest.mark.asyncio
async def test_background_writer_writes_without_being_asked(dsn: str, pool: AsyncConnectionPool[Any]) -> None:
    writer = EventWriter(pool, spool_dir=None, interval_s=0.05)
    await writer.start()
    for e in _events("background", 30):
        writer.append(e)

    async def all_there() -> bool:
        return len(await _rows(dsn, "background")) == 30

    await _until(all_there, 5.0)
    await writer.close()


@pytest.mark.asyncio
async def test_a_replayed_event_is_written_once(dsn: str, pool: AsyncConnectionPool[Any]) -> None:
    writer = EventWriter(pool, spool_dir=None, batch=100)
    events = _events("replay", 150)
    for e in events[:100]:
        writer.append(e)
    assert await writer.flush() == 100
    # The same 100 again (a producer replaying after an outage) mixed with 50 new ones, in one batch.
    for e in events[50:]:
        writer.append(e)
    assert await writer.flush() == 50
    assert writer.stats.duplicates == 50
    assert sorted(r[0] for r in await _rows(dsn, "replay")) == sorted(e.uid for e in events)
    await writer.close()


@pytest.mark.asyncio
async def test_insert_events_commits_and_rolls_back_with_the_caller(dsn: str) -> None:
    events = _events("in-transaction", 3)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.transaction():
            await insert_events(conn, events[:2])
            raise psycopg.Rollback()
        assert await _rows(dsn, "in-transaction") == []
        async with conn.transaction():
            await insert_events(conn, events[:2])
        async with conn.transaction():
            # One already written: the caller's transaction goes on and the new one is added.
            await insert_events(conn, events)
            await conn.execute("CREATE TEMP TABLE still_usable (x int)")
        with pytest.raises(EventRejected, match="contact_id must be a UUID"):
            await insert_events(conn, [Event("contact.queued", contact_id="not-a-uuid")])
    assert len(await _rows(dsn, "in-transaction")) == 3


@pytest.mark.asyncio
async def test_append_refuses_events_that_cannot_be_stored_and_never_raises(
    dsn: str, pool: AsyncConnectionPool[Any]
) -> None:
    writer = EventWriter(pool, spool_dir=None)
    good = _events("refused", 1)[0]
    writer.append(Event("contact.queued", at=datetime(2026, 3, 10, 9, 0), queue="refused"))  # naive time
    writer.append(Event("contact.queued", contact_id="42", queue="refused"))
    writer.append(Event("contact.queued", queue="refused", data={"x": object()}))
    writer.append(Event("contact.queued", queue="refused", data={"x": "nul\x00"}))
    writer.append(Event("contact.queued", queue="refused", call_id="\ud800"))
    writer.append(good)
    assert writer.stats.rejected == 5
    assert await writer.flush() == 1
    assert [r[0] for r in await _rows(dsn, "refused")] == [good.uid]
    await writer.close()


def _spool_lines(spool_dir: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in spool_dir.glob("events-*.jsonl"))


@pytest.mark.asyncio
async def test_database_away_for_a_while_loses_and_duplicates_nothing(
    dsn: str, proxy: Proxy, tmp_path: Path
) -> None:
    p = await _proxied_pool(proxy)
    writer = EventWriter(
        p, spool_dir=tmp_path, batch=50, interval_s=0.05, max_backoff_s=0.5, acquire_timeout_s=0.5
    )
    await writer.start()
    events = _events("away", 400)
    for e in events[:100]:
        writer.append(e)

    async def written(n: int) -> Any:
        async def check() -> bool:
            return len(await _rows(dsn, "away")) == n

        return check

    await _until(await written(100), 5.0)
    await proxy.down()
    for i, e in enumerate(events[100:]):
        writer.append(e)
        if i % 20 == 0:
            await asyncio.sleep(0.05)

    async def spooled() -> bool:
        return writer.stats.retries > 0 and _spool_lines(tmp_path) > 0

    await _until(spooled, 10.0)
    assert len(await _rows(dsn, "away")) == 100
    assert writer.stats.buffered + _spool_lines(tmp_path) == 300  # in memory or in the spool, nowhere else
    await proxy.up()
    await _until(await written(400), 30.0)
    assert list(tmp_path.glob("events-*.jsonl")) == []  # the spool is removed once written
    assert sorted(r[0] for r in await _rows(dsn, "away")) == sorted(e.uid for e in events)
    assert writer.stats.written == 400
    await writer.close()
    await p.close()


@pytest.mark.asyncio
async def test_spool_written_on_close_is_replayed_by_the_next_writer(
    dsn: str, pool: AsyncConnectionPool[Any], proxy: Proxy, tmp_path: Path
) -> None:
    p = await _proxied_pool(proxy)
    await proxy.down()
    first = EventWriter(p, spool_dir=tmp_path, batch=500, acquire_timeout_s=0.5)
    await first.start()
    events = _events("spooled", 70)
    for e in events:
        first.append(e)
    await first.close()
    assert _spool_lines(tmp_path) == 70
    [spool] = tmp_path.glob("events-*.jsonl")
    assert json.loads(spool.read_text().splitlines()[0])[0] == events[0].uid
    await p.close()

    # A writer that is alive holds its spool file: another writer starting meanwhile leaves it alone.
    other_pool = await _proxied_pool(proxy, wait=False)
    other = EventWriter(other_pool, spool_dir=tmp_path, batch=5, acquire_timeout_s=0.5)
    for e in _events("spooled-live", 12):
        other.append(e)
    await other.flush()  # fails (database away) and spools its 12 events
    assert _spool_lines(tmp_path) == 82

    second = EventWriter(pool, spool_dir=tmp_path, interval_s=0.05)
    await second.start()

    async def replayed() -> bool:
        return len(await _rows(dsn, "spooled")) == 70

    await _until(replayed, 10.0)
    assert spool.exists() is False
    assert _spool_lines(tmp_path) == 12  # the live writer's spool is still there, untouched
    assert await _rows(dsn, "spooled-live") == []
    await second.close()
    await proxy.up()
    assert await other.flush() == 12  # the live writer writes its own spool when the database is back
    assert list(tmp_path.glob("events-*.jsonl")) == []
    await other.close()
    await other_pool.close()
    assert sorted(r[0] for r in await _rows(dsn, "spooled")) == sorted(e.uid for e in events)
