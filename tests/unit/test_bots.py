"""Bots as data: definitions load (shipped and a site's own), bad ones are refused naming file and
field; both shipped bots run compound requests through the dialogue manager on their real backends
(a throwaway PostgreSQL) with a fake LLM; writes wait for the caller's yes; a transfer carries the
intent and a summary in the caller's language; BotStartFrame switches bots; build_bot's opening bot."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.bots.definition import PROMPTS, BotDefinition, load_definition, load_definitions
from aicc.appliance.calls.record import CallRecord
from aicc.appliance.connectors.base import Connector
from aicc.appliance.connectors.registry import open_bots
from aicc.appliance.db.migrate import all_migrations, apply
from aicc.appliance.db.scratch import scratch_cluster
from aicc.appliance.documents import DocumentError
from aicc.appliance.voice.bot import BotEngines, build_bot
from aicc.appliance.voice.dialogue import DialogueManager, DialogueParams
from aicc.appliance.voice.frames import (
    BotStartFrame,
    DTMFFrame,
    Frame,
    SpeakFrame,
    StartFrame,
    TranscriptionFrame,
    TransferFrame,
)
from aicc.appliance.voice.pipeline import Direction, FrameProcessor, Pipeline
from tests.unit.hostile_files import HOSTILE, Hostile, write
from tests.unit.test_voice_fakes import FakeASR, FakeLLM, FakeTTS, FakeVAD, anyio_backend  # noqa: F401

SHIPPED = Path(__file__).resolve().parents[2] / "appliance" / "bots" / "definitions"
TEST_CALLER = "sip:13800138000@10.231.200.1"  # the lab's test calls: a customer of both backends
DEFINITIONS = load_definitions(None)
RETAIL, BANK = DEFINITIONS["retail"], DEFINITIONS["bank"]


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with scratch_cluster("aicc-bots-", "-c fsync=off -c full_page_writes=off") as dsn:
        apply(dsn, all_migrations())
        yield dsn


@pytest.fixture
async def bots(dsn: str) -> AsyncIterator[dict[str, tuple[BotDefinition, Connector]]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False)
    await pool.open(wait=True)
    yield open_bots(DEFINITIONS, pool)
    await pool.close()


async def scalar(bots: dict[str, tuple[BotDefinition, Connector]], sql: str) -> Any:
    pool = bots["bank"][1].pool  # type: ignore[attr-defined]
    async with pool.connection() as conn:
        row = await (await conn.execute(sql)).fetchone()
    return row[0]


class Call:
    """A dialogue manager holding every bot, fed frames the way the pipeline does."""

    def __init__(
        self,
        llm: FakeLLM,
        bots: dict[str, tuple[BotDefinition, Connector]],
        *,
        autostart: str | None = None,
        notice: bool = False,
    ) -> None:
        self.out: list[Frame] = []
        self.record = CallRecord(call_id="b1", caller=TEST_CALLER)
        params = DialogueParams(notice=notice, hold_line=False)
        self.dm = DialogueManager(llm, bots, self.record, params, autostart=autostart)

        async def sink(frame: Frame) -> None:
            self.out.append(frame)

        self.pipeline = Pipeline([self.dm], downstream_sink=sink)

    async def __aenter__(self) -> Call:
        self.pipeline.start()
        return await self.send(StartFrame(call_id="b1", language="en", caller=TEST_CALLER))

    async def __aexit__(self, *exc: object) -> None:
        await self.pipeline.stop()

    async def send(self, frame: Frame) -> Call:
        self.pipeline.queue(frame)
        await self.pipeline.idle()
        return self

    async def say(self, text: str, language: str = "en") -> list[str]:
        start = len(self.out)
        await self.send(TranscriptionFrame(text=text, language=language, confidence=0.9, duration_s=1.0))
        return spoken(self.out[start:])

    def transfers(self) -> list[TransferFrame]:
        return [f for f in self.out if isinstance(f, TransferFrame)]


def spoken(frames: list[Frame]) -> list[str]:
    return [f.text for f in frames if isinstance(f, SpeakFrame)]


def plan(*actions: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"intent": "tools", "actions": [{"tool": t, "arguments": a} for t, a in actions]}


# --- definitions ------------------------------------------------------------------------------------


def test_shipped_bots_load_and_open_on_their_connectors() -> None:
    assert set(DEFINITIONS) >= {"retail", "bank"}
    opened = open_bots(DEFINITIONS, None)  # type: ignore[arg-type]  # no call made: no pool needed
    assert {name: c.name for name, (_, c) in opened.items()} == {"retail": "demo-retail", "bank": "demo-bank"}
    assert BANK.identifier.name == "card_last4" and BANK.prompt("greeting", "zh") != RETAIL.prompt(
        "greeting", "zh"
    )
    # Generic lines name no business; the retail wording lives in its definition.
    assert not any("order" in t.lower() or "订单" in t for texts in PROMPTS.values() for t in texts.values())
    assert "订单" in RETAIL.prompt("ask_id", "zh") and "卡号后四位" in BANK.prompt("ask_id", "zh")


def test_a_sites_definition_overrides_a_shipped_one_and_adds_its_own(tmp_path: Path) -> None:
    retail = yaml.safe_load((SHIPPED / "retail.yml").read_text(encoding="utf-8"))
    retail["prompts"]["greeting"] = {"en": "Welcome to Acme orders.", "zh": "欢迎致电Acme订单服务。"}
    (tmp_path / "retail.yml").write_text(yaml.safe_dump(retail, allow_unicode=True), encoding="utf-8")
    outlet = {**retail, "name": "outlet", "tools": ["get_order_status", "create_ticket"], "part_words": {}}
    outlet.pop("recover")
    outlet.pop("summary")
    (tmp_path / "outlet.yml").write_text(yaml.safe_dump(outlet, allow_unicode=True), encoding="utf-8")
    loaded = load_definitions(tmp_path)
    assert loaded["retail"].prompt("greeting", "en") == "Welcome to Acme orders."
    assert loaded["retail"].source == str(tmp_path / "retail.yml")
    assert loaded["bank"] == BANK and loaded["outlet"].tools == ["get_order_status", "create_ticket"]


BAD = [
    ({"languages": ["fr"]}, "languages[0]", "'en' or 'zh'; found 'fr'"),
    ({"colour": "red"}, "colour", "not a known field"),
    ({"prompts": {"greetng": {"en": "Hi"}}}, "prompts.greetng", "'greeting'"),
    ({"prompts": {"greeting": {"en": "Hi"}}}, "prompts.greeting.zh", "missing"),
    ({"part_words": {"refund": ["refund"]}}, "part_words.refund", "found 'refund'"),
    ({"identifier": {"name": "card_last4", "label": {"en": "Card"}, "lookup": "get_card_status"}},
     "identifier.label.zh", "missing"),
    ({"recover": {"block_card": {"reason": {"after": ["card"]}}}}, "recover.block_card.reason", "follows"),
    ({"name": "banking"}, "name", "expected the file's name without .yml ('bank'); found 'banking'"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "field", "message"), BAD)
def test_a_bad_definition_names_file_field_expected_and_found(
    tmp_path: Path, change: dict[str, Any], field: str, message: str
) -> None:
    doc = {**yaml.safe_load((SHIPPED / "bank.yml").read_text(encoding="utf-8")), **change}
    path = tmp_path / "bank.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(DocumentError) as err:
        load_definition(path)
    assert err.value.where == str(path)
    assert any(f.startswith(field) and message in m for f, m in err.value.problems), err.value.problems
    assert str(path) in str(err.value)


def test_tools_the_connector_lacks_are_refused_when_the_bot_opens(tmp_path: Path) -> None:
    doc = yaml.safe_load((SHIPPED / "bank.yml").read_text(encoding="utf-8"))
    doc["tools"] = [*doc["tools"], "get_order_status"]
    (tmp_path / "bank.yml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(DocumentError) as err:
        open_bots(load_definitions(tmp_path), None)  # type: ignore[arg-type]
    assert err.value.where == str(tmp_path / "bank.yml")
    (field, message), *_ = err.value.problems
    assert field == "tools[5]" and "a tool of connector demo-bank" in message
    assert "block_card" in message and "found 'get_order_status'" in message
    doc["tools"], doc["connector"] = doc["tools"][:5], "core-banking"
    (tmp_path / "bank.yml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(DocumentError, match=r"connector: expected one of demo-bank, demo-retail; found"):
        open_bots(load_definitions(tmp_path), None)  # type: ignore[arg-type]


def test_yaml_syntax_errors_name_the_line() -> None:
    with pytest.raises(DocumentError, match=r"site/x\.yml: not valid YAML: line 2"):
        load_definition("name: x\n  tools: [", "site/x.yml")


# --- both bots in the dialogue manager ----------------------------------------------------------------


@pytest.mark.anyio
async def test_retail_compound_request_recovers_the_dropped_part_and_confirms_first(
    bots: dict[str, tuple[BotDefinition, Connector]],
) -> None:
    only_status = plan(("get_order_status", {"order_id": "100237"}))  # the model dropped the address
    async with Call(FakeLLM({"订单": only_status}), bots, autostart="retail") as call:
        said = await call.say("查一下订单一零零二三七的状态，再把地址改成上海市南京路88号", "zh")
        assert said[:2] == [
            "您的订单100237（一件冬季外套）已发货。预计11月26日送达。",
            "请确认：把订单100237的收货地址改为上海市南京路88号，对吗？",
        ]
        sql = "SELECT delivery_address FROM aicc.demo_orders WHERE id = '100237'"
        assert await scalar(bots, sql) == "北京市朝阳区建国路88号"  # not before the caller says yes
        said = await call.say("对", "zh")
    assert said[0] == "好的，订单100237的收货地址已改为上海市南京路88号。"
    assert await scalar(bots, sql) == "上海市南京路88号"
    assert call.dm.summary() == "订单100237：查询状态（已发货），修改地址（已修改）。"


@pytest.mark.anyio
async def test_bank_compound_request_reads_then_blocks_only_after_yes(
    bots: dict[str, tuple[BotDefinition, Connector]],
) -> None:
    both = plan(("list_recent_transactions", {"card_last4": "5307"}), ("block_card", {"card_last4": "5307"}))
    async with Call(FakeLLM({"payments": both}), bots, autostart="bank", notice=True) as call:
        greeting = spoken(call.out)
        said = await call.say("What were the last payments on my card ending 5 3 0 7, and block it please")
        assert said[:2] == [
            "The last 2 payments with your card ending in 5 3 0 7: November 24, 420 yuan at Haidilao; "
            "November 21, 3699 yuan at Apple Store.",
            "To confirm: block your card ending in 5 3 0 7. Shall I go ahead?",
        ]
        sql = "SELECT status FROM aicc.demo_bank_cards WHERE customer_id = 1 AND last4 = '5307'"
        assert await scalar(bots, sql) == "active"
        said = await call.say("yes")
    assert greeting == [PROMPTS["notice"]["en"], BANK.prompt("greeting", "en")]
    assert (
        said[0] == "Done. Your platinum credit card ending in 5 3 0 7 is blocked; nobody can pay with it now."
    )
    assert await scalar(bots, sql) == "blocked"
    assert [t.confirmed for t in call.record.tool_calls] == [None, True]


@pytest.mark.anyio
async def test_bank_dropped_part_is_recovered_and_a_declined_write_changes_nothing(
    bots: dict[str, tuple[BotDefinition, Connector]],
) -> None:
    lost_only = plan(("report_lost_card", {"card_last4": "8421"}))
    async with Call(FakeLLM({"8421": lost_only}), bots, autostart="bank") as call:
        said = await call.say("尾号8421的卡丢了，帮我挂失，再查一下最近的消费", "zh")
        assert said[0].startswith("您尾号八四二幺的卡最近3笔交易：11月24日在星巴克消费36.5元")
        assert said[1] == "请确认：挂失您尾号八四二幺的卡，挂失后这张卡将不能再使用，对吗？"
        said = await call.say("不用了", "zh")
    assert said == [BANK.prompt("cancelled", "zh")]
    sql = "SELECT status FROM aicc.demo_bank_cards WHERE customer_id = 1 AND last4 = '8421'"
    assert await scalar(bots, sql) == "active"
    assert call.dm.summary() == "尾号8421：查询交易（3），挂失（来电取消）。"


@pytest.mark.anyio
async def test_transfer_carries_intent_and_a_summary_in_the_callers_language(
    bots: dict[str, tuple[BotDefinition, Connector]],
) -> None:
    status = plan(("get_order_status", {"order_id": "100234"}))
    async with Call(FakeLLM({"订单": status}), bots, autostart="retail") as call:
        await call.say("查一下订单100234", "zh")
        await call.say("转人工", "zh")
    (transfer,) = call.transfers()
    assert transfer.intent == "get_order_status" and transfer.reason == "requested"
    assert transfer.summary == "订单100234：查询状态（已发货）；来电要求转人工。"

    block = plan(("block_card", {"card_last4": "5307"}))
    async with Call(FakeLLM({"block": block}), bots, autostart="bank") as call:
        await call.say("please block my card 5307")
        await call.send(DTMFFrame(digit="0"))  # the confirmation still open
    (transfer,) = call.transfers()
    assert transfer.intent == "block_card" and transfer.reason == "dtmf"
    assert transfer.summary == (
        "Card ending 5307: block the card (not confirmed yet); the caller pressed 0 for an agent."
    )

    async with Call(FakeLLM({}), bots, autostart="bank") as call:
        await call.say("I want to talk to a real person")
    (transfer,) = call.transfers()
    assert (transfer.intent, transfer.summary) == ("requested", "The caller asked for an agent.")


@pytest.mark.anyio
async def test_a_request_without_the_card_is_completed_by_digits_keyed_in(
    bots: dict[str, tuple[BotDefinition, Connector]],
) -> None:
    no_card = plan(("get_card_status", {"card_last4": ""}))
    async with Call(FakeLLM({"card": no_card}), bots, autostart="bank") as call:
        assert await call.say("is my card still working") == [BANK.prompt("ask_id", "en")]
        assert "details missing" in call.dm.summary()
        for digit in "8421#":
            await call.send(DTMFFrame(digit=digit))
    assert "Your debit card ending in 8 4 2 1 is active." in spoken(call.out)
    assert call.dm.summary() == "Card ending 8421: checked the status (active)."


@pytest.mark.anyio
async def test_a_ticket_needs_no_card_when_the_caller_names_none(
    bots: dict[str, tuple[BotDefinition, Connector]],
) -> None:
    ticket = plan(("create_ticket", {"summary": "new card has not arrived", "category": "card"}))
    async with Call(FakeLLM({"arrived": ticket}), bots, autostart="bank") as call:
        said = await call.say("my new card has not arrived yet")
    assert said[0].startswith("I've opened ticket number")  # not "which card is it about?"
    assert call.record.tool_calls[0].arguments == {"summary": "new card has not arrived", "category": "card"}
    assert call.dm.summary().startswith("Ticket (")


@pytest.mark.anyio
async def test_bot_start_frame_switches_bots_with_a_fresh_dialogue(
    bots: dict[str, tuple[BotDefinition, Connector]],
) -> None:
    llm = FakeLLM({"100234": plan(("get_order_status", {"order_id": "100234"}))})
    async with Call(llm, bots, notice=True) as call:
        assert spoken(call.out) == []  # no bot yet: StartFrame alone does not greet
        assert await call.say("order 100234") == []  # nor answer
        await call.send(BotStartFrame(bot="retail", language="en"))
        assert spoken(call.out) == [PROMPTS["notice"]["en"], RETAIL.prompt("greeting", "en")]
        await call.say("what about order 100234")
        start = len(call.out)
        await call.send(BotStartFrame(bot="bank", language="zh"))
        assert spoken(call.out[start:]) == [BANK.prompt("greeting", "zh")]  # the notice once per call
        assert call.dm.summary() == "暂无业务办理。"  # the retail dialogue is over
        said = await call.say("尾号5307的卡还能用吗", "zh")
        await call.send(BotStartFrame(bot="insurance", language="en"))
    # The bank planned with its own prefix, without the retail call's history.
    bank_request = llm.requests[-1]
    assert "bank" in bank_request[0].content and all("100234" not in m.content for m in bank_request)
    assert said == [BANK.prompt("unclear", "zh")]
    assert spoken(call.out)[-1] == PROMPTS["engine_trouble"]["zh"]  # a bot the gateway lacks
    assert call.transfers()[-1].reason == "engine_failure"


# --- build_bot ------------------------------------------------------------------------------------------


class StartsBank(FrameProcessor):
    """Stands in for an IVR flow: hands the caller to the bank bot as the call starts."""

    async def process(self, frame: Frame, direction: Direction) -> None:
        await self.push(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push(BotStartFrame(bot="bank", language="zh"), direction)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("bot", "flow", "opened", "greeting"),
    [
        (None, False, "retail", RETAIL.prompt("greeting", "en")),  # the gateway's call: the default bot
        ("bank", False, "bank", BANK.prompt("greeting", "en")),
        (None, True, "bank", BANK.prompt("greeting", "zh")),  # the processor before the bot chooses
    ],
)
async def test_build_bot_opens_with_the_given_bot_or_lets_the_processor_before_choose(
    bots: dict[str, tuple[BotDefinition, Connector]], bot: str | None, flow: bool, opened: str, greeting: str
) -> None:
    engines = BotEngines(llm=FakeLLM({}), asr=FakeASR({}), tts=FakeTTS(), vad=FakeVAD, bots=bots)
    record = CallRecord(call_id="b2")
    params = DialogueParams(notice=False)
    before = [StartsBank()] if flow else []
    session = build_bot(
        engines, record, 8000, params, bot=bot, before_dialogue=before, no_input_s=30, max_call_s=60
    )
    await session.prepare("en", engines)
    session.pipeline.start()
    session.pipeline.queue(StartFrame(call_id="b2", language="en", caller=TEST_CALLER))
    await session.pipeline.idle()
    await session.pipeline.stop()
    assert [ln.text for ln in record.lines if ln.speaker == "bot"] == [greeting]
    assert session.dialogue is not None and session.dialogue.bot.definition.name == opened


@pytest.mark.parametrize("case", HOSTILE, ids=[h.name for h in HOSTILE])
def test_a_definition_that_is_not_utf8_text_names_file_and_line(tmp_path: Path, case: Hostile) -> None:
    path = write(tmp_path / "bots", case, "bank.yml")
    for load in (lambda: load_definition(path), lambda: load_definitions(tmp_path / "bots")):
        with pytest.raises(DocumentError) as info:
            load()
        assert info.value.where == f"{path}:{case.line}" and case.says in str(info.value)


@pytest.mark.anyio
async def test_a_card_one_digit_from_the_callers_own_is_offered_not_rejected(
    bots: dict[str, tuple[BotDefinition, Connector]],
) -> None:
    """The backend tells the caller's own cards (8421, 5307): 8431, not found, is offered as 8421."""
    status = plan(("get_card_status", {"card_last4": "8431"}))
    async with Call(FakeLLM({"8431": status}), bots, autostart="bank") as call:
        assert await call.say("is my card ending 8 4 3 1 working") == ["Did you mean card ending 8 4 2 1?"]
        said = await call.say("yes")
    assert "Your debit card ending in 8 4 2 1 is active." in said
    assert await bots["retail"][1].caller_ids("sip:13800000001@x") == ["100234", "100235"]  # type: ignore[attr-defined]
