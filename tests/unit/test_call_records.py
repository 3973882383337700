"""Call records written as the call goes, kept in a spool while PostgreSQL is away, replayed after; and
the migrations refusing a database that is newer than the code. Against a real throwaway cluster."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.calls.record import CallRecord
from aicc.appliance.calls.store import CallStore, record_as_dict, record_from_dict
from aicc.appliance.calls.writer import RecordWriter
from aicc.appliance.db.migrate import MigrationError, all_migrations, apply, pending
from aicc.appliance.db.scratch import scratch_cluster

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with scratch_cluster("aicc-rec-", "-c fsync=off -c full_page_writes=off") as d:
        apply(d, all_migrations())
        yield d


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    p: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
    await p.open(wait=True)
    yield p
    await p.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def down_pool() -> AsyncConnectionPool[Any]:
    """A pool whose server is away: every connection attempt fails within a second."""
    p: AsyncConnectionPool[Any] = AsyncConnectionPool(
        f"host=127.0.0.1 port={closed_port()} user=x dbname=x connect_timeout=1",
        min_size=1,
        max_size=1,
        timeout=1.0,
        open=False,
    )
    await p.open(wait=False)
    return p


def rows(dsn: str, query: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, args).fetchall()  # type: ignore[arg-type]


def call(call_id: str) -> CallRecord:
    rec = CallRecord(call_id=call_id, caller="13800138000", service="4000", language="en", gateway="gw1")
    rec.add_line("bot", "Hello, how can I help?")
    return rec


def test_a_database_newer_than_the_code_is_refused(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO aicc.schema_migrations (component, version, name, sha256) "
            "VALUES ('acd', 9999, '9999_from_the_future.sql', 'x')"
        )
    try:
        with pytest.raises(MigrationError, match=r"newer than this aicc.*acd/9999_from_the_future\.sql"):
            apply(dsn, all_migrations())
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM aicc.schema_migrations WHERE version = 9999")
    assert pending(dsn, all_migrations()) == []


async def test_lines_go_in_as_the_call_goes_and_a_save_writes_nothing_twice(
    pool: AsyncConnectionPool[Any], dsn: str
) -> None:
    store = CallStore(pool)
    writer = RecordWriter(store, None, delay_s=0.01)
    await writer.start("gw1")
    rec = call("c-progress")
    writer.changed(rec)
    rec.add_line("caller", "Where is my order?")
    writer.changed(rec)
    await _settle(writer)
    assert [
        r[0]
        for r in rows(dsn, "SELECT text FROM aicc.call_lines WHERE call_id = %s ORDER BY seq", "c-progress")
    ] == [
        "Hello, how can I help?",
        "Where is my order?",
    ]
    assert rows(dsn, "SELECT ended_at FROM aicc.calls WHERE call_id = %s", "c-progress") == [(None,)]
    rec.add_tool_call("get_order_status", {"order_id": "100234"}, ok=True, result={"status": "shipped"})
    rec.ended_at, rec.outcome = datetime.now(UTC), "resolved"
    await writer.save_now(rec)
    await writer.save_now(rec)
    assert rows(dsn, "SELECT count(*) FROM aicc.call_lines WHERE call_id = %s", "c-progress") == [(2,)]
    assert rows(dsn, "SELECT tool, ok FROM aicc.call_tool_calls WHERE call_id = %s", "c-progress") == [
        ("get_order_status", True)
    ]
    assert rows(dsn, "SELECT outcome FROM aicc.calls WHERE call_id = %s", "c-progress") == [("resolved",)]
    await writer.close()


async def test_records_wait_in_the_spool_while_the_database_is_away(
    pool: AsyncConnectionPool[Any], dsn: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    away = await down_pool()
    writer = RecordWriter(CallStore(away), spool, delay_s=0.01)
    rec = call("c-spooled")
    rec.add_line("caller", "I want to change my address.")
    await writer.save_now(rec)
    rec.add_line("bot", "To which address?")
    await writer.save_now(rec)
    assert writer.failures == 2 and len(list(spool.glob("*.json"))) == 1
    await away.close()

    # The next run of the gateway (the database is back) saves it, whole, and closes what was left open.
    writer = RecordWriter(CallStore(pool), spool, delay_s=0.01)
    await writer.start("gw1")
    assert not list(spool.glob("*.json"))
    texts = rows(dsn, "SELECT text FROM aicc.call_lines WHERE call_id = %s ORDER BY seq", "c-spooled")
    assert [t[0] for t in texts] == [
        "Hello, how can I help?",
        "I want to change my address.",
        "To which address?",
    ]
    await writer.close()


async def test_a_restarted_gateway_closes_the_calls_it_left_open(
    pool: AsyncConnectionPool[Any], dsn: str
) -> None:
    store = CallStore(pool)
    await store.save(call("c-killed"))  # saved mid-call, then the gateway was killed
    writer = RecordWriter(store, None)
    await writer.start("gw1")
    assert rows(
        dsn, "SELECT outcome, end_reason, ended_at IS NOT NULL FROM aicc.calls WHERE call_id = %s", "c-killed"
    ) == [("failed", "gateway_restart", True)]
    assert rows(dsn, "SELECT count(*) FROM aicc.call_lines WHERE call_id = %s", "c-killed") == [(1,)]
    await writer.close()


def test_a_spooled_record_round_trips() -> None:
    import json

    rec = call("c-json")
    rec.add_tool_call(
        "change_address", {"order_id": "1", "new_address": "上海市南京路8号"}, ok=True, result={}
    )
    rec.turns.append({"vad": 0.5, "turn": 2.0})
    back = record_from_dict(json.loads(json.dumps(record_as_dict(rec), default=str)))
    assert record_as_dict(back) == record_as_dict(rec)


async def _settle(writer: RecordWriter) -> None:
    import asyncio

    for _ in range(100):
        await asyncio.sleep(0.02)
        if not writer._dirty:
            await asyncio.sleep(0.05)
            return
