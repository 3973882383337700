"""The demo backend, call records and migrations against a real, throwaway PostgreSQL cluster
(initdb + pg_ctl in a temp dir: no system service needed, so CI runs it too)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.calls.migrate import Migration, MigrationError, all_migrations, apply
from aicc.appliance.calls.record import CallRecord
from aicc.appliance.calls.scratchdb import scratch_cluster
from aicc.appliance.calls.store import CallStore
from aicc.appliance.connectors.base import ConnectorError
from aicc.appliance.connectors.demo import DemoBackend
from aicc.appliance.voice.dialogue import DialogueManager, DialogueParams
from aicc.appliance.voice.frames import SpeakFrame, StartFrame, TranscriptionFrame
from aicc.appliance.voice.pipeline import Pipeline
from tests.unit.test_voice_fakes import FakeLLM, anyio_backend  # noqa: F401


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A PostgreSQL 15 cluster on loopback for this test session, removed afterwards."""
    with scratch_cluster("aicc-pg-", "-c fsync=off -c full_page_writes=off") as dsn:
        yield dsn


@pytest.fixture(scope="session")
def migrated(pg_dsn: str) -> str:
    apply(pg_dsn, all_migrations())
    return pg_dsn


@pytest.fixture
async def pool(migrated: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    p: AsyncConnectionPool[Any] = AsyncConnectionPool(migrated, min_size=1, max_size=4, open=False)
    await p.open(wait=True)
    yield p
    await p.close()


def test_migrations_apply_once_and_refuse_edits(migrated: str) -> None:
    assert apply(migrated, all_migrations()) == []  # second run: nothing to do
    changed = [Migration(m.component, m.version, m.name, m.sql + "\n-- edited") for m in all_migrations()]
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply(migrated, changed[:1])


@pytest.mark.anyio
async def test_demo_backend_tools(pool: AsyncConnectionPool[Any]) -> None:
    demo = DemoBackend(pool)
    status = await demo.call("get_order_status", {"order_id": "100234"}, caller="+86")
    assert status["status"] == "shipped" and status["eta"] == "2026-11-27"
    assert demo.describe("get_order_status", {}, status, "en") == (
        # The record keeps the digits; the TTS stage reads them out one by one (numbers.read_aloud).
        "Your order 100234, a pair of running shoes, has shipped. It is expected to arrive on November 27."
    )
    assert (
        demo.describe("get_order_status", {}, status, "zh")
        == "您的订单100234（一双跑鞋）已发货。预计11月27日送达。"
    )
    track = await demo.call("track_shipment", {"order_id": "100234"}, caller="+86")
    assert track["last_event"]["location_en"] == "Hangzhou"
    assert "顺丰速运" in demo.describe("track_shipment", {}, track, "zh")
    changed = await demo.call(
        "change_address", {"order_id": "100237", "new_address": "上海市南京路88号"}, caller="x"
    )
    assert changed["changed"] is True
    refused = await demo.call(
        "change_address", {"order_id": "100235", "new_address": "anywhere 1"}, caller="x"
    )
    assert refused["changed"] is False  # already delivered
    ret = await demo.call("create_return", {"order_id": "100235", "reason": "too loud"}, caller="x")
    assert ret["created"] is True
    ticket = await demo.call(
        "create_ticket", {"summary": "box damaged", "category": "delivery"}, caller="+861"
    )
    assert ticket["ticket_id"] >= 1
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT delivery_address FROM aicc.demo_orders WHERE id = '100237'")
        assert (await cur.fetchone()) == ("上海市南京路88号",)
    with pytest.raises(ConnectorError) as err:
        await demo.call("get_order_status", {"order_id": "999999"}, caller="x")
    assert err.value.kind == "not_found"


@pytest.mark.anyio
async def test_backend_down_is_a_connector_error_and_a_graceful_line(pg_dsn: str) -> None:
    dead: AsyncConnectionPool[Any] = AsyncConnectionPool(
        "host=127.0.0.1 port=1 user=x dbname=x connect_timeout=1",
        min_size=0,
        max_size=1,
        open=False,
        timeout=1.0,
    )
    await dead.open(wait=False)
    demo = DemoBackend(dead)
    with pytest.raises(ConnectorError) as err:
        await demo.call("get_order_status", {"order_id": "100234"}, caller="x")
    assert err.value.kind == "unavailable"
    await dead.close()


@pytest.mark.anyio
async def test_compound_chinese_request_against_the_real_backend_and_stored_record(
    pool: AsyncConnectionPool[Any],
) -> None:
    plan = {
        "intent": "tools",
        "actions": [
            {"tool": "get_order_status", "arguments": {"order_id": "100236"}},
            {
                "tool": "change_address",
                "arguments": {"order_id": "100236", "new_address": "上海市徐汇区漕溪北路1号"},
            },
        ],
    }
    record = CallRecord(call_id="rec-1", caller="sip:+8613800000002@x", service="voicebot-zh")
    dm = DialogueManager(FakeLLM({"订单": plan}), DemoBackend(pool), record, DialogueParams(notice=False))
    said: list[str] = []

    async def sink(frame: object) -> None:
        if isinstance(frame, SpeakFrame):
            said.append(frame.text)

    pipe = Pipeline([dm], downstream_sink=sink)  # type: ignore[arg-type]
    pipe.start()
    pipe.queue(StartFrame(call_id="rec-1", language="zh"))
    pipe.queue(
        TranscriptionFrame(
            text="查询订单一零零二三六，再把地址改成上海市徐汇区漕溪北路1号",
            language="zh",
            confidence=0.9,
            duration_s=3.0,
        )
    )
    await pipe.idle()
    pipe.queue(TranscriptionFrame(text="对，确认", language="zh", confidence=0.9, duration_s=1.0))
    await pipe.idle()
    await pipe.stop()
    # greeting, the hold line while the plan streams, then the status read from PostgreSQL
    assert said[1:3] == ["好的，请稍等。", "您的订单100236（一个电饭煲）正在备货。预计11月29日送达。"]
    assert said[-2] == "好的，订单100236的收货地址已改为上海市徐汇区漕溪北路1号。"
    store = CallStore(pool)
    record.outcome = "resolved"
    record.turns.append({"asr": 0.4, "turn": 1.2})
    await store.save(record)
    await store.save(record)  # idempotent: saved before a transfer and again at the end
    loaded = await store.load("rec-1")
    assert loaded is not None and loaded["outcome"] == "resolved"
    assert [t["tool"] for t in loaded["tool_calls"]] == ["get_order_status", "change_address"]
    assert loaded["tool_calls"][1]["confirmed"] is True
    assert [ln["speaker"] for ln in loaded["lines"]][:3] == ["bot", "caller", "bot"]
    assert loaded["turns"][0]["stages"] == {"asr": 0.4, "turn": 1.2}
