"""Dialogue manager: planning, validation, confirmation, compound requests, transfer, graceful lines."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import pytest

from aicc.appliance.bots.definition import PromptKey
from aicc.appliance.calls.record import CallRecord
from aicc.appliance.kb.search import Doc
from aicc.appliance.voice.dialogue import (
    HISTORY_MAX_MESSAGES,
    DialogueManager,
    DialogueParams,
    compact,
    yes_or_no,
)
from aicc.appliance.voice.frames import (
    DTMFFrame,
    Frame,
    HangupFrame,
    LLMTextFrame,
    NoInputFrame,
    SpeakFrame,
    StartFrame,
    ToolResultFrame,
    TranscriptionFrame,
    TransferFrame,
)
from aicc.appliance.voice.knowledge import Knowledge
from aicc.appliance.voice.numbers import digit_runs
from aicc.appliance.voice.pipeline import Pipeline
from aicc.models.engines.base import ChatMessage, Language
from tests.unit.test_voice_fakes import RETAIL, FakeConnector, FakeLLM, anyio_backend, retail_on  # noqa: F401

pytestmark = pytest.mark.anyio

STATUS = {"intent": "tools", "actions": [{"tool": "get_order_status", "arguments": {"order_id": "100234"}}]}
COMPOUND = {
    "intent": "tools",
    "actions": [
        {"tool": "get_order_status", "arguments": {"order_id": "100234"}},
        {"tool": "change_address", "arguments": {"order_id": "100234", "new_address": "88 Nanjing Road"}},
    ],
}


class Harness:
    def __init__(
        self,
        llm: FakeLLM,
        connector: FakeConnector,
        language: str = "en",
        knowledge: Knowledge | None = None,
        **params: Any,
    ) -> None:
        self.out: list[Frame] = []
        self.metrics: list[tuple[str, float, dict[str, str]]] = []
        self.record = CallRecord(call_id="t1")
        params.setdefault("hold_line", False)  # its own tests turn it on
        self.dm = DialogueManager(
            llm,
            retail_on(connector),
            self.record,
            DialogueParams(notice=False, **params),
            autostart="retail",
            knowledge=knowledge,
        )

        async def sink(frame: Frame) -> None:
            self.out.append(frame)

        self.pipeline = Pipeline(
            [self.dm], downstream_sink=sink, reporter=lambda n, v, labels: self.metrics.append((n, v, labels))
        )
        self.language = language

    async def __aenter__(self) -> Harness:
        self.pipeline.start()
        self.pipeline.queue(StartFrame(call_id="t1", language=self.language, caller="+86138"))  # type: ignore[arg-type]
        await self.pipeline.idle()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pipeline.stop()

    async def say(self, text: str, confidence: float = 0.9, language: str = "en") -> list[Frame]:
        start = len(self.out)
        self.pipeline.queue(
            TranscriptionFrame(text=text, language=language, confidence=confidence, duration_s=1.0)
        )
        await self.pipeline.idle()
        return self.out[start:]

    async def send(self, frame: Frame) -> list[Frame]:
        start = len(self.out)
        self.pipeline.queue(frame)
        await self.pipeline.idle()
        return self.out[start:]


def spoken(frames: list[Frame]) -> list[str]:
    return [f.text for f in frames if isinstance(f, SpeakFrame)]


def line(key: PromptKey, language: Language = "en") -> str:
    """What the retail bot says for a prompt key."""
    return RETAIL.prompt(key, language)


async def test_greeting_in_service_language() -> None:
    async with Harness(FakeLLM({}), FakeConnector(), language="zh") as h:
        assert spoken(h.out) == [line("greeting", "zh")]


async def test_order_status_runs_tool_and_speaks_result() -> None:
    conn = FakeConnector()
    async with Harness(FakeLLM({"order": STATUS}), conn) as h:
        out = await h.say("what is the status of order 1 0 0 2 3 4")
    assert conn.calls == [("get_order_status", {"order_id": "100234"})]
    assert spoken(out)[0] == "Order 100234 has shipped."
    assert any(isinstance(f, ToolResultFrame) and f.ok for f in out)
    assert h.record.tool_calls[0].tool == "get_order_status"
    assert ("tool_calls", 1.0, {"tool": "get_order_status", "result": "ok"}) in h.metrics


async def test_plan_schema_constrains_to_tool_names() -> None:
    llm = FakeLLM({"order": STATUS})
    async with Harness(llm, FakeConnector()) as h:
        await h.say("order 100234")
    variants = llm.schemas[0]["properties"]["actions"]["items"]["anyOf"]
    assert {v["properties"]["tool"]["const"] for v in variants} == {"get_order_status", "change_address"}


async def test_plan_request_carries_the_worked_examples_as_compact_json() -> None:
    llm = FakeLLM({"order": STATUS})
    async with Harness(llm, FakeConnector()) as h:
        await h.say("order 100234")
        await h.say("and order 100234 again")
    first, second = llm.requests
    roles = [m.role for m in first]
    # system, the one example whose tool exists (user + assistant), then the caller's words
    assert roles == ["system", "user", "assistant", "user"]
    assert first[2].content == (
        '{"intent":"tools","actions":[{"tool":"get_order_status","arguments":{"order_id":"555001"}}]}'
    )
    assert "refund" not in " ".join(m.content for m in first)
    # the same prefix every time (the LLM server's cache holds it); history comes after it, compact too
    assert second[:3] == first[:3]
    assert second[4].content == compact(STATUS) and " " not in second[4].content


async def test_each_plan_request_extends_the_last_so_the_llm_cache_holds_the_call() -> None:
    llm = FakeLLM({"order": STATUS})
    turns = HISTORY_MAX_MESSAGES // 2 + 2
    async with Harness(llm, FakeConnector()) as h:
        for i in range(turns):
            await h.say(f"order 100234, question {i}")
    reqs = llm.requests
    prefix = len(reqs[0]) - 1
    # Until the history is full, every request starts with the whole previous one: the server
    # re-reads only the newest turn, not a window that shifted under its cache.
    full = HISTORY_MAX_MESSAGES // 2 + 1
    for before, after in itertools.pairwise(reqs[:full]):
        assert after[: len(before)] == before
    # Then the history starts again from the last turn, and stays bounded.
    assert [m.content for m in reqs[full][prefix:]] == [
        "order 100234, question " + str(full - 1),
        compact(STATUS),
        "order 100234, question " + str(full),
    ]
    assert all(len(r) - prefix - 1 <= HISTORY_MAX_MESSAGES for r in reqs)


async def test_compound_request_confirms_write_then_runs_both() -> None:
    conn = FakeConnector()
    async with Harness(FakeLLM({"address": COMPOUND}), conn) as h:
        out = await h.say("status of order 100234 and change the address to 88 Nanjing Road")
        assert spoken(out)[0] == "Order 100234 has shipped."
        assert "88 Nanjing Road" in spoken(out)[1]
        assert conn.addresses["100234"] == "old street"  # not before the caller confirms
        out = await h.say("yes please")
    assert conn.addresses["100234"] == "88 Nanjing Road"
    assert "Address changed." in spoken(out)
    assert [c[0] for c in conn.calls] == ["get_order_status", "change_address"]
    assert h.record.tool_calls[-1].confirmed is True


async def test_write_declined_changes_nothing() -> None:
    conn = FakeConnector()
    async with Harness(FakeLLM({"address": COMPOUND}), conn, language="zh") as h:
        await h.say("查询订单100234并修改地址 address")
        out = await h.say("不用了，取消")
    assert conn.addresses["100234"] == "old street"
    assert spoken(out) == [line("cancelled", "zh")]


async def test_invalid_arguments_are_not_executed() -> None:
    conn = FakeConnector()
    bad = {"intent": "tools", "actions": [{"tool": "get_order_status", "arguments": {"order_id": "12"}}]}
    async with Harness(FakeLLM({"order": bad}), conn) as h:
        out = await h.say("what about my order")
    assert conn.calls == []
    assert spoken(out) == [line("ask_id")]


@pytest.mark.parametrize("said", ["转人工", "我要在员工客服"])  # the second: 我要转人工客服 over G.711
async def test_transfer_on_request_in_chinese(said: str) -> None:
    async with Harness(FakeLLM({}), FakeConnector(), language="zh") as h:
        out = await h.say(said, language="zh")
    transfers = [f for f in out if isinstance(f, TransferFrame)]
    assert transfers and transfers[0].reason == "requested" and transfers[0].intent == "requested"
    assert spoken(out) == [line("transfer", "zh")]
    assert transfers[0].summary.endswith("。")


async def test_transfer_after_repeated_misunderstanding() -> None:
    async with Harness(FakeLLM({}), FakeConnector()) as h:
        first = await h.say("blah blah")
        await h.say("blah blah")
        third = await h.say("blah blah")
    assert spoken(first) == [line("unclear")]
    assert any(isinstance(f, TransferFrame) and f.reason == "misunderstood" for f in third)


async def test_low_confidence_reprompts_then_transfers() -> None:
    async with Harness(FakeLLM({}), FakeConnector()) as h:
        first = await h.say("order", confidence=0.1)
        await h.say("order", confidence=0.1)
        third = await h.say("order", confidence=0.1)
    assert spoken(first) == [line("sorry_asr")]
    assert any(isinstance(f, TransferFrame) and f.reason == "low_confidence" for f in third)


async def test_confidence_threshold_is_per_language() -> None:
    """Whisper scores right Mandarin transcripts lower than English ones: 0.3 is a fair Mandarin
    score and a doubtful English one."""
    async with Harness(FakeLLM({}), FakeConnector(), language="zh") as h:
        zh = await h.say("转人工", confidence=0.3, language="zh")
    async with Harness(FakeLLM({}), FakeConnector()) as h:
        en = await h.say("I want a human agent", confidence=0.3)
    assert spoken(zh) == [line("transfer", "zh")]
    assert spoken(en) == [line("sorry_asr")]


async def test_connector_failure_gives_graceful_line() -> None:
    async with Harness(FakeLLM({"order": STATUS}), FakeConnector(fail=True)) as h:
        out = await h.say("order 100234")
    assert spoken(out)[0] == line("connector_trouble")
    assert h.record.tool_calls[0].ok is False


async def test_connector_timeout_gives_graceful_line() -> None:
    async with Harness(FakeLLM({"order": STATUS}), FakeConnector(delay_s=1.0), tool_timeout_s=0.05) as h:
        out = await h.say("order 100234")
    assert spoken(out)[0] == line("connector_trouble")
    assert h.record.tool_calls[0].error == "timeout"


async def test_not_found_order_is_an_answer_not_an_error() -> None:
    plan = {"intent": "tools", "actions": [{"tool": "get_order_status", "arguments": {"order_id": "999999"}}]}
    async with Harness(FakeLLM({"order": plan}), FakeConnector()) as h:
        out = await h.say("order 999999")
    assert spoken(out)[0] == "I couldn't find that order."


async def test_llm_failure_transfers_with_graceful_line() -> None:
    async with Harness(FakeLLM({}, fail=True), FakeConnector()) as h:
        out = await h.say("order 100234")
    assert spoken(out) == [line("engine_trouble")]
    assert any(isinstance(f, TransferFrame) and f.reason == "engine_failure" for f in out)


async def test_hold_line_at_once_when_the_caller_names_an_order_number() -> None:
    llm = FakeLLM({"order": STATUS}, token_s=0.04)  # the plan takes about a second
    async with Harness(llm, FakeConnector(), hold_line=True) as h:
        said_at = time.monotonic()
        out = await h.say("what is the status of order 1 0 0 2 3 4")
    speak = [f for f in out if isinstance(f, SpeakFrame)]
    assert [f.text for f in speak[:2]] == [line("hold"), "Order 100234 has shipped."]
    assert speak[0].hold and speak[0].created - said_at < 0.2  # before the LLM has planned anything
    assert speak[1].created - said_at > 0.8


async def test_hold_line_only_when_the_streamed_plan_needs_tools() -> None:
    plans = {"parcel": STATUS, "open": {"intent": "chat", "actions": []}}
    async with Harness(FakeLLM(plans, token_s=0.01), FakeConnector(), hold_line=True) as h:
        lookup = spoken(await h.say("where is my parcel"))
        chat = spoken(await h.say("when are you open"))
        repeat = spoken(await h.send(DTMFFrame(digit="9")))
    # no number named: the hold line once the plan shows a lookup, then the bot asks which order
    assert lookup[:2] == [line("hold"), line("ask_id")]
    assert line("hold") not in chat  # no lookup: the answer itself comes as fast
    assert line("hold") not in repeat  # "repeat" repeats the answer, not the hold line
    hold_frames = [f for f in h.out if isinstance(f, SpeakFrame) and f.hold]
    assert [f.text for f in hold_frames] == [line("hold")]


async def test_chat_streams_llm_tokens() -> None:
    async with Harness(FakeLLM({"open": {"intent": "chat", "actions": []}}), FakeConnector()) as h:
        out = await h.say("when are you open")
    text = "".join(f.text for f in out if isinstance(f, LLMTextFrame))
    assert text.strip() == "We are open nine to six."


RETURNS_ZH = Doc(
    7,
    3,
    "zh",
    "退货政策",
    "签收后7天内可以无理由退货，商品需保持完好。退货运费由买家承担，质量问题由我们承担。",
    "public",
)
RETURNS_EN = Doc(8, 1, "en", "Return policy", "You can return an item within 7 days of delivery.", "public")
FEES_INTERNAL = Doc(9, 1, "zh", "运费内部核算规则", "退货运费内部由仓库核算，不对外。", "internal")
CHAT = {"intent": "chat", "actions": []}


async def test_a_general_question_is_answered_from_the_public_article_it_names() -> None:
    kb = Knowledge(None, docs=[RETURNS_ZH, RETURNS_EN, FEES_INTERNAL])
    llm = FakeLLM({"退货": CHAT}, chat="签收后七天内可以退货。")
    async with Harness(llm, FakeConnector(), language="zh", knowledge=kb) as h:
        out = await h.say("请问退货的运费谁来出？", language="zh")
    said = "".join(f.text for f in out if isinstance(f, LLMTextFrame))
    assert said.startswith("根据《退货政策》，签收后七天内可以退货。")
    # The LLM was given the article (and only the public one) to answer from.
    system = llm.chat_requests[-1][0].content
    assert "退货运费由买家承担" in system and "内部" not in system
    step = h.record.tool_calls[-1]
    assert (step.tool, step.ok, step.result) == (
        "kb_answer",
        True,
        {"article": 7, "version": 3, "title": "退货政策"},
    )
    assert h.record.lines[-1].text.startswith("根据《退货政策》")


async def test_without_an_article_the_bot_says_so_rather_than_inventing_one() -> None:
    kb = Knowledge(None, docs=[RETURNS_ZH, RETURNS_EN, FEES_INTERNAL])
    llm = FakeLLM({"pets": CHAT}, chat="I don't have that information.")
    async with Harness(llm, FakeConnector(), knowledge=kb) as h:
        out = await h.say("can I bring my pets to your store")
    said = "".join(f.text for f in out if isinstance(f, LLMTextFrame))
    assert not said.startswith("According to")
    assert "Never invent facts" in llm.chat_requests[-1][0].content
    assert (h.record.tool_calls[-1].tool, h.record.tool_calls[-1].ok) == ("kb_answer", False)


async def test_an_article_the_model_finds_beside_the_point_is_not_quoted() -> None:
    kb = Knowledge(None, docs=[RETURNS_ZH, RETURNS_EN])

    def answer(messages: Sequence[ChatMessage]) -> str:
        return "NOANSWER" if "Article:" in messages[0].content else "I don't have that information."

    llm = FakeLLM({"return": CHAT}, chat=answer)
    async with Harness(llm, FakeConnector(), knowledge=kb) as h:
        out = await h.say("what is the return policy for an item after delivery")
    said = "".join(f.text for f in out if isinstance(f, LLMTextFrame))
    assert said.strip() == "I don't have that information."  # no article named, no verdict spoken
    assert len(llm.chat_requests) == 2 and "Never invent facts" in llm.chat_requests[1][0].content
    step = h.record.tool_calls[-1]
    assert (step.tool, step.ok) == ("kb_answer", False) and "does not answer" in step.error
    assert h.record.lines[-1].text == "I don't have that information."


async def test_words_the_planner_finds_unclear_are_answered_when_an_article_answers_them() -> None:
    kb = Knowledge(None, docs=[RETURNS_ZH, RETURNS_EN])
    llm = FakeLLM({}, chat="Within 7 days of delivery.")  # every plan: unclear
    async with Harness(llm, FakeConnector(), knowledge=kb) as h:
        answered = await h.say("how many days do I have to return an item")
        gibberish = await h.say("blue elephant fourteen")
    assert "".join(f.text for f in answered if isinstance(f, LLMTextFrame)).startswith(
        'According to our article "Return policy": Within 7 days'
    )
    assert spoken(gibberish) == [line("unclear")]


async def test_language_follows_the_caller() -> None:
    plan = {"intent": "tools", "actions": [{"tool": "get_order_status", "arguments": {"order_id": "100234"}}]}
    async with Harness(FakeLLM({"订单": plan}), FakeConnector(), language="en") as h:
        out = await h.say("查询订单一零零二三四", language="zh")
    assert spoken(out)[0] == "订单100234已发货。"
    assert h.record.language == "zh"


async def test_dtmf_zero_transfers_and_nine_repeats() -> None:
    async with Harness(FakeLLM({}), FakeConnector()) as h:
        again = await h.send(DTMFFrame(digit="9"))
        out = await h.send(DTMFFrame(digit="0"))
    assert spoken(again) == [line("greeting")]
    assert any(isinstance(f, TransferFrame) and f.reason == "dtmf" for f in out)


async def test_dtmf_confirms_pending_write() -> None:
    conn = FakeConnector()
    async with Harness(FakeLLM({"address": COMPOUND}), conn) as h:
        await h.say("order 100234 and address 88 Nanjing Road")
        await h.send(DTMFFrame(digit="1"))
    assert conn.addresses["100234"] == "88 Nanjing Road"


async def test_no_input_reprompts_then_hangs_up() -> None:
    async with Harness(FakeLLM({}), FakeConnector()) as h:
        first = await h.send(NoInputFrame(count=1))
        last = await h.send(NoInputFrame(count=3))
    assert spoken(first) == [line("no_input")]
    hang = [f for f in last if isinstance(f, HangupFrame)]
    assert hang and hang[0].outcome == "abandoned"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("查询订单一零零二三四，地址改成南京路88号", ["100234", "88"]),
        ("order 1 0 0 2 3 4 and 12 Main Street", ["100234", "12"]),
        ("order one zero zero two three four", ["100234"]),
    ],
)
def test_digit_runs(text: str, expected: list[str]) -> None:
    assert digit_runs(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("不是", False), ("是的", True), ("yes please", True), ("don't do it", False), ("hmm", None)],
)
def test_yes_or_no(text: str, expected: bool | None) -> None:
    assert yes_or_no(text) is expected


async def test_a_part_the_plan_dropped_is_recovered_from_the_callers_words() -> None:
    conn = FakeConnector()
    async with Harness(FakeLLM({"订单": STATUS}), conn, language="zh") as h:
        out = await h.say("查询订单一零零二三四的状态，再把地址改成上海市南京路八号", language="zh")
        assert "确认修改地址吗？" in spoken(out)
        await h.say("对", language="zh")
    assert conn.calls == [
        ("get_order_status", {"order_id": "100234"}),
        ("change_address", {"order_id": "100234", "new_address": "上海市南京路八号"}),
    ]
    assert ("plan_completed", 1.0, {}) in h.metrics


async def test_english_dropped_part_takes_the_address_after_the_word_address() -> None:
    conn = FakeConnector()
    async with Harness(FakeLLM({"order": STATUS}), conn) as h:
        out = await h.say(
            "I want to know the status of order 100234 and change the address to 8 Nanjing Road."
        )
    assert any("8 Nanjing Road" in s for s in spoken(out)), spoken(out)


async def test_an_order_number_the_caller_did_not_say_is_not_used() -> None:
    conn = FakeConnector()
    invented = {
        "intent": "tools",
        "actions": [{"tool": "get_order_status", "arguments": {"order_id": "002340"}}],
    }
    async with Harness(FakeLLM({"order": invented}), conn) as h:
        out = await h.say("status of order 0 0 2 3 4 please")  # five digits heard: the model padded them
    assert conn.calls == []
    # read back as heard, not "which order?": the caller hears what the bot understood
    assert spoken(out) == [line("heard_id").format(value="0 0 2 3 4")]


async def test_order_number_keyed_in_after_the_bot_asks_for_it() -> None:
    conn = FakeConnector()
    bad = {"intent": "tools", "actions": [{"tool": "get_order_status", "arguments": {"order_id": ""}}]}
    async with Harness(FakeLLM({"order": bad}), conn) as h:
        await h.say("what about my order")
        for d in "100234":
            await h.send(DTMFFrame(digit=d))
        out = await h.send(DTMFFrame(digit="#"))
    assert conn.calls == [("get_order_status", {"order_id": "100234"})]
    assert spoken(out)[0] == "Order 100234 has shipped."
