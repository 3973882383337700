"""The demo backends (retail and bank), call records and migrations against a real, throwaway PostgreSQL
cluster (initdb + pg_ctl in a temp dir: no system service needed, so CI runs it too)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.calls.record import CallRecord
from aicc.appliance.calls.store import CallStore
from aicc.appliance.connectors.bank import BankBackend
from aicc.appliance.connectors.base import ConnectorError
from aicc.appliance.connectors.demo import DemoBackend
from aicc.appliance.connectors.phone import e164
from aicc.appliance.db.migrate import Migration, MigrationError, all_migrations, apply
from aicc.appliance.db.scratch import scratch_cluster
from aicc.appliance.voice.dialogue import DialogueManager, DialogueParams
from aicc.appliance.voice.frames import SpeakFrame, StartFrame, TranscriptionFrame
from aicc.appliance.voice.pipeline import Pipeline
from tests.unit.test_voice_fakes import RETAIL, FakeLLM, anyio_backend  # noqa: F401


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
        "create_ticket",
        {"summary": "box damaged", "category": "delivery", "order_id": "100234"},
        caller="sip:13800138000@proxy",
        call_id="call-77@gw",
        language="zh",
    )
    # A real ticket in the agents' list: the caller's words, their phone, this call, its created event.
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT t.subject, t.type, t.source, t.call_id, t.customer, t.language, t.sla_policy, "
            "t.description, e.kind, e.actor FROM aicc.tickets t JOIN aicc.ticket_events e "
            "ON e.ticket_id = t.id WHERE t.number = %s",
            (ticket["ticket_id"],),
        )
        row = await cur.fetchone()
    assert row is not None and row[:8] == (
        "box damaged",
        "delivery",
        "bot",
        "call-77@gw",
        {"phone": "+8613800138000"},
        "zh",
        "default",
        row[7],
    )
    assert "order_id: 100234" in row[7] and row[8:] == ("created", "bot")
    assert demo.describe("create_ticket", {}, ticket, "en") == (
        f"I've opened ticket number {ticket['ticket_id']}; a colleague will follow up."
    )
    # In a web chat the ticket links the conversation (its customer is the conversation's).
    async with pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO aicc.customers (name, language) VALUES ('访客', 'zh') RETURNING id"
        )
        customer = (await cur.fetchone())[0]  # type: ignore[index]
        cur = await conn.execute(
            "INSERT INTO aicc.conversations (customer_id, channel, language, handler) "
            "VALUES (%s, 'webchat', 'zh', 'bot') RETURNING id::text",
            (customer,),
        )
        chat = (await cur.fetchone())[0]  # type: ignore[index]
    from_chat = await demo.call(
        "create_ticket",
        {"summary": "发票没收到", "category": "other"},
        caller="",
        conversation_id=chat,
        language="zh",
    )
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT conversation_id::text, call_id, customer, description FROM aicc.tickets "
            "WHERE number = %s",
            (from_chat["ticket_id"],),
        )
        linked = await cur.fetchone()
    assert linked is not None and linked[:3] == (chat, None, {})
    assert "during a web chat" in linked[3]
    with pytest.raises(ConnectorError) as err:  # a ticket about an order that does not exist: none
        await demo.call(
            "create_ticket", {"summary": "x y z", "category": "other", "order_id": "999999"}, caller="x"
        )
    assert err.value.kind == "not_found"
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
    dm = DialogueManager(
        FakeLLM({"订单": plan}),
        {"retail": (RETAIL, DemoBackend(pool))},
        record,
        DialogueParams(notice=False),
        autostart="retail",
    )
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


TEST_CALLER = "sip:13800138000@10.231.200.1"  # the lab's test calls: a customer of both demo backends


@pytest.mark.parametrize(
    ("caller", "number"),
    [
        ("sip:13800138000@10.231.200.1", "+8613800138000"),
        ("<sip:+86 138-0013-8000@proxy>;tag=a1", "+8613800138000"),
        ("008613800138000", "+8613800138000"),
        ("tel:02112345678", "+862112345678"),
        ("sip:1001@127.0.0.1", ""),  # an extension, not a phone number
        ("sip:t@127.0.0.1", ""),
    ],
)
def test_caller_numbers_in_one_form(caller: str, number: str) -> None:
    assert e164(caller) == number


@pytest.mark.anyio
async def test_lookup_customer_gives_name_tier_and_language(pool: AsyncConnectionPool[Any]) -> None:
    retail, bank = DemoBackend(pool), BankBackend(pool)
    assert "lookup_customer" not in RETAIL.tools  # for IVR lookups, not the planner
    found = await retail.call("lookup_customer", {"phone": TEST_CALLER}, caller=TEST_CALLER)
    assert found == {"name": "李雷", "tier": "gold", "language": "zh"}
    vip = await retail.call("lookup_customer", {"phone": "+8613800000002"}, caller="x")
    assert vip["tier"] == "vip"
    assert (await bank.call("lookup_customer", {"phone": "13800138000"}, caller="x"))["tier"] == "vip"
    for backend in (retail, bank):
        with pytest.raises(ConnectorError) as err:
            await backend.call("lookup_customer", {"phone": "sip:1001@pbx"}, caller="x")
        assert err.value.kind == "not_found"


@pytest.mark.anyio
async def test_bank_reads_the_callers_cards_and_says_them_in_both_languages(
    pool: AsyncConnectionPool[Any],
) -> None:
    bank = BankBackend(pool)
    status = await bank.call("get_card_status", {"card_last4": "8421"}, caller=TEST_CALLER)
    assert status["status"] == "active"
    # Card digits one by one: the TTS would read 8421 as a number.
    assert (
        bank.describe("get_card_status", {}, status, "en") == "Your debit card ending in 8 4 2 1 is active."
    )
    assert bank.describe("get_card_status", {}, status, "zh") == "您尾号八四二幺的借记卡状态正常。"
    recent = await bank.call("list_recent_transactions", {"card_last4": "8421"}, caller=TEST_CALLER)
    assert recent["count"] == 3 and recent["transactions"][0]["merchant_en"] == "Starbucks"
    assert bank.describe("list_recent_transactions", {}, recent, "en") == (
        "The last 3 payments with your card ending in 8 4 2 1: November 24, 36.5 yuan at Starbucks; "
        "November 23, 1280 yuan at JD.com; November 22, 58 yuan at Hema Fresh."
    )
    assert bank.describe("list_recent_transactions", {}, recent, "zh") == (
        "您尾号八四二幺的卡最近3笔交易：11月24日在星巴克消费36.5元；11月23日在京东商城消费1280元；"
        "11月22日在盒马鲜生消费58元。"
    )
    one = await bank.call("list_recent_transactions", {"card_last4": "5307", "count": 1}, caller=TEST_CALLER)
    assert [t["merchant_zh"] for t in one["transactions"]] == ["海底捞"]
    assert (
        bank.confirm_line("block_card", {"card_last4": "5307"}, "zh")
        == "请确认：冻结您尾号五三零七的卡，对吗？"
    )


@pytest.mark.anyio
async def test_bank_blocks_then_reports_lost_and_logs_each_change(pool: AsyncConnectionPool[Any]) -> None:
    bank = BankBackend(pool)
    caller = "sip:+8613800000001@proxy"  # Alice: card 1122
    blocked = await bank.call("block_card", {"card_last4": "1122"}, caller=caller)
    assert blocked["changed"] is True and blocked["status"] == "blocked"
    assert bank.describe("block_card", {}, blocked, "en") == (
        "Done. Your credit card ending in 1 1 2 2 is blocked; nobody can pay with it now."
    )
    again = await bank.call("block_card", {"card_last4": "1122"}, caller=caller)
    assert again["changed"] is False
    assert bank.describe("block_card", {}, again, "zh") == "您尾号幺幺二二的信用卡已冻结，无需再次办理。"
    lost = await bank.call("report_lost_card", {"card_last4": "1122"}, caller=caller)
    assert lost["changed"] is True and lost["status"] == "lost"
    assert "新卡将在7个工作日内寄出" in bank.describe("report_lost_card", {}, lost, "zh")
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT a.action, a.old_status, a.new_status, a.caller FROM aicc.demo_bank_card_actions a "
            "JOIN aicc.demo_bank_cards c ON c.id = a.card_id WHERE c.last4 = '1122' ORDER BY a.id"
        )
        assert await cur.fetchall() == [
            ("block", "active", "blocked", caller),
            ("report_lost", "blocked", "lost", caller),
        ]


@pytest.mark.anyio
async def test_bank_caller_reaches_only_their_own_cards(pool: AsyncConnectionPool[Any]) -> None:
    bank = BankBackend(pool)
    # 8421 is the test caller's (active) and 王芳's (blocked): each caller hears about their own.
    mine = await bank.call("get_card_status", {"card_last4": "8421"}, caller=TEST_CALLER)
    hers = await bank.call("get_card_status", {"card_last4": "8421"}, caller="sip:13800000002@proxy")
    assert (mine["status"], hers["status"]) == ("active", "blocked")
    for tool in ("get_card_status", "list_recent_transactions", "block_card", "report_lost_card"):
        with pytest.raises(ConnectorError) as err:
            await bank.call(tool, {"card_last4": "7788"}, caller=TEST_CALLER)  # 王芳's card
        assert err.value.kind == "not_found", tool
    with pytest.raises(ConnectorError) as err:
        await bank.call("get_card_status", {"card_last4": "8421"}, caller="sip:1001@pbx")
    assert err.value.kind == "not_found"  # a caller with no number has no cards
    with pytest.raises(ConnectorError):
        await bank.call(
            "create_ticket",
            {"summary": "charged twice", "category": "transaction", "card_last4": "7788"},
            caller=TEST_CALLER,
        )
    ticket = await bank.call(
        "create_ticket",
        {"summary": "charged twice", "category": "transaction", "card_last4": "8421"},
        caller=TEST_CALLER,
    )
    assert ticket["ticket_id"].startswith("T-")
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT description, customer FROM aicc.tickets WHERE number = %s", (ticket["ticket_id"],)
        )
        description, customer = await cur.fetchone()
    assert "ending 8421" in description and customer == {"phone": e164(TEST_CALLER)}
    anonymous = await bank.call(
        "create_ticket", {"summary": "card not arrived", "category": "card"}, caller="x"
    )
    assert anonymous["ticket_id"] != ticket["ticket_id"]
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT status FROM aicc.demo_bank_cards WHERE last4 = '7788'")
        assert await cur.fetchone() == ("active",)  # nothing changed on somebody else's card
    assert bank.not_found_line("block_card", {"card_last4": "7788"}, "en") == (
        "Sorry, I couldn't find a card ending in 7 7 8 8 in your name. Please check the last four digits."
    )


@pytest.mark.anyio
async def test_the_gateways_knowledge_base_reads_public_articles_over_its_shared_pool(
    pool: AsyncConnectionPool[Any],
) -> None:
    from psycopg.rows import dict_row

    from aicc.appliance.kb import store as kb_store
    from aicc.appliance.voice.knowledge import Knowledge

    async with pool.connection() as conn:
        conn.row_factory = dict_row
        await kb_store.seed_sets(conn, ["shop"])
        await conn.commit()
    kb = Knowledge(pool, refresh_s=0)
    hit = await kb.lookup("怎么开发票？", "zh")  # jieba reads 开发 + 票; the coverage sees 发票
    assert hit is not None and hit.doc.title == "开具发票" and hit.doc.visibility == "public"
    internal = await _internal_docs(pool)
    assert internal  # the shop's set has an agents-only article; the bot's index never holds it
    for doc in internal:  # asked by its very title, the bot still answers from public articles only
        hit = await kb.lookup(doc.title, doc.language)
        assert hit is None or hit.doc.visibility == "public", hit
    # The pool's connections are handed back as the connectors expect them (tuple rows).
    async with pool.connection() as conn:
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)


async def _internal_docs(pool: AsyncConnectionPool[Any]) -> list[Any]:
    from psycopg.rows import dict_row

    from aicc.appliance.kb import store as kb_store

    async with pool.connection() as conn:
        conn.row_factory = dict_row
        return await kb_store.docs(conn, ["internal"])
