"""Dialogue state by class of input, in English and Mandarin: answers answer the question just asked,
confirmations fail safe, an intent survives the question for its missing detail, numbers are read in
the caller's language and kept apart, numbers of the wrong form are read back, a chat reply is never
confirmed into, the language never switches on one short utterance, a pause after a continuation
word does not end the turn."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from aicc.appliance.voice.answers import answer, is_bare_answer, is_transfer_request
from aicc.appliance.voice.dialogue import near_ids
from aicc.appliance.voice.endpoint import EndOfTurnParams, TurnJoiner, continues
from aicc.appliance.voice.frames import (
    DTMFFrame,
    HangupFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TransferFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from aicc.appliance.voice.numbers import digit_runs, normalize, script_language
from aicc.appliance.voice.pipeline import Pipeline
from aicc.models.engines.base import ToolSpec
from tests.unit.test_voice_dialogue import COMPOUND, STATUS, Harness, line, spoken
from tests.unit.test_voice_fakes import ORDER, FakeConnector, FakeLLM, anyio_backend  # noqa: F401
from tests.unit.test_voice_pipeline import Collect

# --- answers ----------------------------------------------------------------------------------------

CLEAR_YES = [
    "Yes.",
    "Yes please.",
    "yes please",
    "Yes, go ahead.",
    "Yeah, sounds good",
    "Sure, go for it",
    "okay sure",
    "That's right, thank you",
    "Correct.",
    "yep",
    "对",
    "对的",
    "是的",
    "是",
    "好的",
    "好的，谢谢",
    "可以",
    "可以，就这么改。",
    "行",
    "确认",
    "没问题",
    "对，没错",
    "嗯，对",
    "好，改吧",
]
REFUSALS = [
    "no",
    "No.",
    "no, don't change it",
    "don't",
    "Do not do that",
    "nope",
    "not yet",
    "cancel",
    "stop, that's wrong",
    "never mind",
    "wait",
    "不用了",
    "不用",
    "别改",
    "不要",
    "不要改了",
    "不是",
    "不对",
    "不行",
    "取消",
    "算了",
    "先别改",
    "等一下",
    "错了",
]
UNCLEAR = [
    "要改",  # 不要改 with its first syllable lost
    "用了",  # 不用了
    "要了",  # 不要了
    "用改",  # 不用改
    "change it",  # don't change it
    "hmm",
    "嗯",
    "what?",
    "yes but to 9 Nanjing Road",  # a new value: not a yes to what was read back
    "yes, and also track my parcel",
    "对，改成人民路25号",
    "好的，不过地址是人民路二十五号",
    "I guess",
    "",
]


@pytest.mark.parametrize("text", CLEAR_YES)
def test_a_clear_yes_is_a_yes(text: str) -> None:
    assert answer(text) == "yes"


@pytest.mark.parametrize("text", REFUSALS)
def test_a_refusal_is_a_no(text: str) -> None:
    assert answer(text) == "no"


@pytest.mark.parametrize("text", UNCLEAR)
def test_anything_else_is_not_a_yes(text: str) -> None:
    assert answer(text) is None


RETURN_WORDS = ("退货", "退掉", "退回", "return it", "send it back")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("对，确认退货", "yes"),
        ("对,却愿退货", "yes"),  # Whisper over G.711, heard on the lab: 确认 -> 却愿
        ("是的，退货吧", "yes"),
        ("yes, send it back", "yes"),
        ("对，不退货了", "no"),
        ("退货", None),  # the action named, no yes
        ("对，退货，再改一下地址", None),  # more than the pending action
        ("yes, and also track my parcel", None),
    ],
)
def test_a_yes_that_names_the_pending_action_is_still_clear(text: str, expected: str | None) -> None:
    assert answer(text, RETURN_WORDS) == expected
    if expected == "yes":
        assert answer(text) in ("yes", None)  # without the action's words it may be unsure, never a no


@pytest.mark.parametrize(
    "text", ["Yes.", "Yes please.", "对", "好的", "是的", "No thanks", "不用了", "嗯，好的", "OK", "no"]
)
def test_bare_answers(text: str) -> None:
    assert is_bare_answer(text)
    assert not is_transfer_request(text)  # "Yes." is never a transfer request


@pytest.mark.parametrize(
    "text",
    ["yes, order 100234", "是的，我要退货", "I want to return an item", "查一下订单", "yes and track it"],
)
def test_not_bare_answers(text: str) -> None:
    assert not is_bare_answer(text)


TRANSFER = [
    "转人工",
    "人工",
    "人工。",
    "人工吧",
    "我要人工",
    "给我转个人工",
    "人工客服",
    "找人工",
    "我要转人工客服",
    "agent",
    "Agent.",
    "agent please",
    "operator",
    "Operator!",
    "Can I talk to a real person",
    "I want to speak to a human",
    "transfer me please",
    "get me a representative",
]
NOT_TRANSFER = [
    "Yes.",
    "Yes please.",
    "对",
    "好的",
    "不用转人工",
    "别转人工了",
    "不需要人工",
    "I don't need an agent",
    "do not transfer me to an operator",
    "我想问一下人工智能音箱",
    "track my parcel",
]


@pytest.mark.parametrize("text", TRANSFER)
def test_transfer_requests(text: str) -> None:
    assert is_transfer_request(text)


@pytest.mark.parametrize("text", NOT_TRANSFER)
def test_not_transfer_requests(text: str) -> None:
    assert not is_transfer_request(text)


# --- numbers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "meant"),
    [
        ("five Main Street", "5 Main Street"),
        ("change it to twenty five Main Street", "change it to 25 Main Street"),
        ("one hundred and five Oak Road", "105 Oak Road"),
        ("three hundred twelve Park Avenue", "312 Park Avenue"),
        ("五 main street", "5 main street"),  # a Mandarin numeral among English words
        ("八 Nanjing Road", "8 Nanjing Road"),
        ("order one double oh two three four", "order 100234"),
        ("the one I ordered", "the one I ordered"),  # a pronoun, not a number
        ("Oh, that one", "Oh, that one"),
        ("人民路二十五号", "人民路25号"),
        ("世纪大道一百号", "世纪大道100号"),
        ("建国路八十八号", "建国路88号"),
        ("订单一零零二三四", "订单100234"),
        ("订单两零零二三四", "订单200234"),  # 两 = 2
        ("我要一个工单，三天内回复", "我要一个工单，三天内回复"),
        ("十分感谢", "十分感谢"),
        ("两三天", "两三天"),
    ],
)
def test_numbers_in_the_callers_language(said: str, meant: str) -> None:
    assert normalize(said) == meant


@pytest.mark.parametrize(
    ("said", "runs"),
    [
        ("order one two three four five six, 25 Main Street", ["123456", "25"]),
        ("order one two three four five six twenty five Main Street", ["123456", "25"]),
        ("order 123456 25 Main Street", ["123456", "25"]),
        ("order 1 2 3 4 5 6 25 Main Street", ["123456", "25"]),
        ("订单一二三四五六，地址是人民路二十五号", ["123456", "25"]),
        ("订单一二三四五六人民路二十五号", ["123456", "25"]),
        ("订单一二三四五六二十五号", ["123456", "25"]),
        ("order 100 234", ["100234"]),
        ("phone 138 0013 8000", ["13800138000"]),
        ("order 100-234", ["100234"]),
        ("card ending 5 3 0 7 and 8 4 2 1", ["5307", "8421"]),
        ("订单幺幺幺二二二", ["111222"]),
        ("order triple one two double two", ["111222"]),
    ],
)
def test_numbers_next_to_each_other_stay_apart(said: str, runs: list[str]) -> None:
    assert digit_runs(said) == runs


_ZH_SAY = {
    "0": ["零", "〇"],
    "1": ["一", "幺"],
    "2": ["二", "两"],
    **{d: [c] for d, c in zip("3456789", "三四五六七八九", strict=True)},
}
_EN_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_EN_SAY = dict(zip("0123456789", _EN_WORDS, strict=True))


def _say_zh(digits: str, rng: random.Random) -> str:
    return "".join(rng.choice(_ZH_SAY[d]) for d in digits)


def _say_en(digits: str, rng: random.Random) -> str:
    """Digit by digit as English callers say them: runs of two or three as double / triple."""
    words: list[str] = []
    i = 0
    while i < len(digits):
        run = 1
        while i + run < len(digits) and digits[i + run] == digits[i] and run < 3:
            run += 1
        if run > 1 and rng.random() < 0.7:
            words += ["double" if run == 2 else "triple", _EN_SAY[digits[i]]]
        else:
            run = 1
            words.append("oh" if digits[i] == "0" and words and rng.random() < 0.5 else _EN_SAY[digits[i]])
        i += run
    return " ".join(words)


def _digit_strings(seed: int, count: int = 300) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        length = rng.randint(3, 12)
        # many repeats: runs of one digit are where counts went wrong
        alphabet = rng.sample("0123456789", rng.randint(1, 4))
        out.append("".join(rng.choice(alphabet) for _ in range(length)))
    return out


def test_digit_strings_read_digit_by_digit_keep_every_digit_in_mandarin() -> None:
    rng = random.Random(7)
    for digits in _digit_strings(1):
        said = _say_zh(digits, rng)
        assert digit_runs(f"订单号{said}") == [digits], said
        assert digit_runs(f"订单号是{said}，地址是人民路二十五号") == [digits, "25"], said


def test_digit_strings_read_digit_by_digit_keep_every_digit_in_english() -> None:
    rng = random.Random(8)
    for digits in _digit_strings(2):
        said = _say_en(digits, rng)
        assert digit_runs(f"order {said}") == [digits], said
        assert digit_runs(f"order {said}, 25 Main Street") == [digits, "25"], said


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("转人工", "zh"),
        ("我要查order 100234", "zh"),
        ("what is the status", "en"),
        ("五 main street", "en"),
        ("Chuyển nhân công", None),  # Vietnamese: not one of the bot's languages
        ("Tôi muốn gặp nhân viên", None),
        ("123", None),
        ("", None),
    ],
)
def test_script_language(text: str, language: str | None) -> None:
    assert script_language(text) == language


@pytest.mark.parametrize(
    ("heard", "own", "offered"),
    [
        ("100243", ["100234"], []),  # two digits swapped: two away
        ("100235", ["100234", "100299"], ["100234"]),
        ("10234", ["100234"], ["100234"]),  # one dropped
        ("1002344", ["100234"], ["100234"]),  # one added
        ("100234", ["100234"], []),  # the same: nothing to offer
        ("8431", ["8421", "5307"], ["8421"]),
    ],
)
def test_near_ids(heard: str, own: list[str], offered: list[str]) -> None:
    assert near_ids(heard, own) == offered


# --- the dialogue -----------------------------------------------------------------------------------

RETURN = {"type": "object", "properties": {"order_id": ORDER, "reason": {"type": "string", "minLength": 2}}}


class Shop(FakeConnector):
    """The fake connector with returns and tickets, and the caller's own orders."""

    def __init__(self, own: list[str] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.own = own if own is not None else ["100234"]

    def tools(self) -> list[ToolSpec]:
        ret = {**RETURN, "required": ["order_id", "reason"], "additionalProperties": False}
        ticket = {
            "type": "object",
            "properties": {"summary": {"type": "string", "minLength": 3}, "order_id": ORDER},
            "required": ["summary"],
            "additionalProperties": False,
        }
        return [
            *super().tools(),
            ToolSpec("create_return", "return", ret, write=True),
            ToolSpec("create_ticket", "ticket", ticket),
        ]

    async def caller_ids(self, caller: str) -> list[str]:
        return list(self.own)

    async def call(self, tool: str, arguments: dict[str, Any], *, caller: str, **_: Any) -> dict[str, Any]:
        if tool == "create_ticket":
            self.calls.append((tool, arguments))
            return {"ticket_id": 7}
        if tool == "create_return":
            await super().call("get_order_status", arguments, caller=caller)  # not found: raises
            self.calls[-1] = (tool, arguments)
            return {"created": True}
        return await super().call(tool, arguments, caller=caller)

    def describe(self, tool: str, arguments: dict[str, Any], result: dict[str, Any], language: str) -> str:
        if tool == "create_return":
            return "退货已受理。" if language == "zh" else "Return registered."
        if tool == "create_ticket":
            return "工单已创建。" if language == "zh" else "Ticket opened."
        return super().describe(tool, arguments, result, language)  # type: ignore[arg-type]

    def confirm_line(self, tool: str, arguments: dict[str, Any], language: str) -> str:
        if tool == "create_return":
            oid = arguments["order_id"]
            return f"为订单{oid}申请退货，对吗？" if language == "zh" else f"Start a return for order {oid}?"
        return super().confirm_line(tool, arguments, language)  # type: ignore[arg-type]


def writes(conn: FakeConnector) -> list[str]:
    return [c[0] for c in conn.calls if c[0] in ("change_address", "create_return")]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("said", "lang"), [(t, "en") for t in CLEAR_YES[:10]] + [(t, "zh") for t in CLEAR_YES[10:]]
)
async def test_a_write_runs_on_a_clear_yes_to_the_values_read_back(said: str, lang: str) -> None:
    conn = Shop()
    async with Harness(FakeLLM({"address": COMPOUND}), conn, language=lang) as h:
        out = await h.say("status of order 100234 and change the address to 88 Nanjing Road", language=lang)
        assert any("88 Nanjing Road" in s for s in spoken(out))  # the exact value, read back
        await h.say(said, language=lang)
    assert conn.addresses["100234"] == "88 Nanjing Road"
    assert h.record.tool_calls[-1].confirmed is True


@pytest.mark.anyio
@pytest.mark.parametrize("said", ["对，确认改地址", "对,却愿改地址", "yes, change the address"])
async def test_a_yes_that_names_the_action_being_confirmed_writes(said: str) -> None:
    conn = Shop()
    lang = "zh" if script_language(said) == "zh" else "en"
    async with Harness(FakeLLM({"address": COMPOUND}), conn, language=lang) as h:
        await h.say("status of order 100234 and change the address to 88 Nanjing Road", language=lang)
        await h.say(said, language=lang)
    assert conn.addresses["100234"] == "88 Nanjing Road"
    assert h.record.tool_calls[-1].confirmed is True


@pytest.mark.anyio
@pytest.mark.parametrize("said", REFUSALS + UNCLEAR[:-1])
async def test_a_refusal_or_anything_unclear_never_writes(said: str) -> None:
    conn = Shop()
    lang = "zh" if script_language(said) == "zh" else "en"
    request = {
        "en": "status of order 100234 and change the address to 88 Nanjing Road",
        "zh": "查询订单100234并修改地址 address",
    }[lang]
    async with Harness(FakeLLM({"address": COMPOUND}), conn, language=lang) as h:
        await h.say(request, language=lang)
        first = spoken(await h.say(said, language=lang))
        # asked again at most once (with the values read back again), then cancelled: never written
        second = spoken(await h.say(said, language=lang))
    assert "change_address" not in writes(conn) or conn.addresses["100234"] != "88 Nanjing Road"
    assert conn.addresses["100234"] in (
        "old street",
        *(a for a in conn.addresses.values() if a != "88 Nanjing Road"),
    )
    assert first and second
    if answer(said) == "no":
        assert first == [line("cancelled", lang)]  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_unclear_twice_cancels_and_a_later_yes_confirms_nothing() -> None:
    conn = Shop()
    async with Harness(FakeLLM({"address": COMPOUND}), conn, language="zh") as h:
        await h.say("查询订单100234并修改地址 address", language="zh")
        again = spoken(await h.say("要改", language="zh"))
        gave_up = spoken(await h.say("用了", language="zh"))
        after = spoken(await h.say("对", language="zh"))
    assert "确认修改地址吗？" in again[0] and line("confirm_again", "zh") in again[0]
    assert gave_up == [line("not_confirmed", "zh")]
    assert after == [line("go_on", "zh")]  # a yes to "anything else?": confirms nothing
    assert writes(conn) == []
    assert h.record.tool_calls[-1].confirmed is False


@pytest.mark.anyio
async def test_low_confidence_at_a_confirmation_is_never_a_yes() -> None:
    conn = Shop()
    async with Harness(FakeLLM({"address": COMPOUND}), conn) as h:
        await h.say("status of order 100234 and change the address to 88 Nanjing Road")
        await h.say("yes", confidence=0.2)
        await h.say("yes", confidence=0.2)
    assert writes(conn) == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("said", "lang", "address"),
    [
        ("no, change it to 9 Nanjing Road", "en", "9 Nanjing Road"),
        ("不对，改成人民路二十五号", "zh", "人民路25号"),
        ("不是，地址是世纪大道一百号", "zh", "世纪大道100号"),
    ],
)
async def test_a_correction_is_read_back_before_it_is_written(said: str, lang: str, address: str) -> None:
    conn = Shop()
    async with Harness(FakeLLM({"address": COMPOUND}), conn, language=lang) as h:
        await h.say("status of order 100234 and change the address to 88 Nanjing Road", language=lang)
        out = spoken(await h.say(said, language=lang))
        assert conn.addresses["100234"] == "old street"
        if lang == "en":
            assert address in out[0]
        await h.say("yes" if lang == "en" else "对", language=lang)
    assert conn.addresses["100234"] == address


@pytest.mark.anyio
@pytest.mark.parametrize("said", ["Yes.", "Yes please.", "yes", "Yeah.", "对", "好的", "是的", "对的"])
async def test_yes_after_the_bots_question_is_never_a_transfer_or_a_new_intent(said: str) -> None:
    llm = FakeLLM({said: {"intent": "transfer", "actions": []}, "order": STATUS})  # a model that would
    async with Harness(llm, Shop()) as h:
        await h.say("status of order 100234")  # ... anything else?
        yes = spoken(await h.say(said, language="zh" if script_language(said) == "zh" else "en"))
        first = spoken(await h.say(said))  # with nothing asked: nothing is done either
    assert not [f for f in h.out if isinstance(f, TransferFrame)]
    assert len(llm.requests) == 1  # never planned: an answer, not a request
    assert yes in ([line("go_on")], [line("go_on", "zh")])
    assert first in ([line("not_done")], [line("not_done", "zh")])


@pytest.mark.anyio
@pytest.mark.parametrize("said", ["No.", "no thanks", "不用了", "没有了"])
async def test_no_to_anything_else_ends_the_call(said: str) -> None:
    async with Harness(FakeLLM({"order": STATUS}), Shop()) as h:
        await h.say("status of order 100234")
        out = await h.say(said)
    assert any(isinstance(f, HangupFrame) and f.outcome == "resolved" for f in out)


RETURN_PLAN = {
    "intent": "tools",
    "actions": [{"tool": "create_return", "arguments": {"order_id": "", "reason": "来电申请"}}],
}
TICKET_PLAN = {
    "intent": "tools",
    "actions": [{"tool": "create_ticket", "arguments": {"summary": "caller wants to return an item"}}],
}
CHAT_PLAN: dict[str, Any] = {"intent": "chat", "actions": []}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("first", "number", "lang"),
    [
        ("我要退货", "订单号是一零零二三四", "zh"),
        ("我想退货", "幺零零二三四", "zh"),
        ("这个东西我要退掉", "一零零二三四", "zh"),
        ("I want to return an item", "it's one zero zero two three four", "en"),
        ("I'd like to send it back", "order 1 0 0 2 3 4", "en"),
        ("can I return it", "100234", "en"),
    ],
)
@pytest.mark.parametrize("plan", [RETURN_PLAN, TICKET_PLAN, CHAT_PLAN], ids=["return", "ticket", "chat"])
async def test_a_return_survives_the_question_for_its_order_number(
    first: str, number: str, lang: str, plan: dict[str, Any]
) -> None:
    """Whatever the model made of it (the return without its number, a ticket, chat), the caller named
    a return: the bot asks for the order number and the next answer completes the return."""
    conn = Shop()
    llm = FakeLLM({first: plan})
    async with Harness(llm, conn, language=lang) as h:
        asked = spoken(await h.say(first, language=lang))
        assert asked == [line("ask_id", lang)]  # type: ignore[arg-type]
        confirm = spoken(await h.say(number, language=lang))
        assert "100234" in confirm[0]
        await h.say("对" if lang == "zh" else "yes", language=lang)
    assert conn.calls == [("create_return", {"order_id": "100234", "reason": conn.calls[0][1]["reason"]})]
    assert len(llm.requests) == 1  # the number was the answer, not a new request to plan


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("number", "lang", "readback"),
    [
        ("订单号一零零二三", "zh", "我听到的是幺零零二三，对吗？"),
        ("一二三四五六七", "zh", "我听到的是幺二三四五六七，对吗？"),
        ("one two three four five", "en", "I heard 1 2 3 4 5. Is that right?"),
        ("order 1 2 3 4 5 6 7", "en", "I heard 1 2 3 4 5 6 7. Is that right?"),
    ],
)
async def test_a_number_of_the_wrong_form_is_read_back(number: str, lang: str, readback: str) -> None:
    conn = Shop(own=[])
    async with Harness(FakeLLM({"退货": RETURN_PLAN, "return": RETURN_PLAN}), conn, language=lang) as h:
        await h.say("我要退货" if lang == "zh" else "I want to return an item", language=lang)
        said = spoken(await h.say(number, language=lang))
        assert said == [readback]
        # no: the bot asks for the number again; and the right one then completes the return
        assert spoken(await h.say("不对" if lang == "zh" else "no", language=lang)) == [line("ask_id", lang)]  # type: ignore[arg-type]
        await h.say("100234", language=lang)
        await h.say("对" if lang == "zh" else "yes", language=lang)
    assert [c[0] for c in conn.calls] == ["create_return"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("heard", "lang", "offer"),
    [
        ("订单一零零二三五的状态", "zh", "您是说订单幺零零二三四吗？"),  # one digit misheard (not found)
        ("订单一零零二三的状态", "zh", "您是说订单幺零零二三四吗？"),  # one dropped (wrong form)
        ("status of order 1 0 0 2 3 4 4", "en", "Did you mean order 1 0 0 2 3 4?"),  # one added
    ],
)
async def test_a_number_one_digit_from_the_callers_own_order_is_offered(
    heard: str, lang: str, offer: str
) -> None:
    plan = {"intent": "tools", "actions": [{"tool": "get_order_status", "arguments": {"order_id": "100235"}}]}
    conn = Shop(own=["100234", "200999"])
    async with Harness(FakeLLM({"订单": plan, "order": plan}), conn, language=lang) as h:
        said = spoken(await h.say(heard, language=lang))
        assert said == [offer]
        out = spoken(await h.say("对" if lang == "zh" else "yes", language=lang))
    assert ("get_order_status", {"order_id": "100234"}) in conn.calls
    assert any("100234" in s for s in out)


@pytest.mark.anyio
async def test_a_new_address_is_asked_for_and_the_answer_completes_the_change() -> None:
    wants = {
        "intent": "tools",
        "actions": [{"tool": "change_address", "arguments": {"order_id": "100234", "new_address": ""}}],
    }
    conn = Shop()
    async with Harness(FakeLLM({"地址": wants}), conn, language="zh") as h:
        asked = spoken(await h.say("订单一零零二三四的地址要改一下", language="zh"))
        assert asked == ["请问新的收货地址是什么？"]
        confirm = spoken(await h.say("改成人民路二十五号", language="zh"))
        assert confirm == ["确认修改地址吗？"]
        await h.say("是的", language="zh")
    assert conn.addresses["100234"] == "人民路25号"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("said", "lang"),
    [
        ("查一下订单一零零二三四，然后把地址改成人民路二十五号", "zh"),
        ("订单100234的地址改成上海市南京路8号", "zh"),
        ("please change the address of order 100234 to 25 Main Street", "en"),
    ],
)
async def test_a_chat_answer_to_a_request_the_tools_serve_is_not_spoken(said: str, lang: str) -> None:
    """The model answers with chat ("好的，我明白了，请将地址改为……") and plans nothing: the bot does
    what was asked, reading the change back for a yes, and a yes then confirms that change."""
    llm = FakeLLM({said: CHAT_PLAN}, chat="好的，我明白了，请将地址改为人民路。")
    conn = Shop()
    async with Harness(llm, conn, language=lang) as h:
        out = await h.say(said, language=lang)
        assert not [s for s in spoken(out) if "我明白了" in s]
        assert conn.addresses["100234"] == "old street"
        await h.say("对" if lang == "zh" else "yes", language=lang)
    assert conn.addresses["100234"] != "old street"


@pytest.mark.anyio
async def test_yes_after_a_chat_only_reply_confirms_no_write() -> None:
    llm = FakeLLM({"open": CHAT_PLAN}, chat="Sure, I will change the address for you.")
    conn = Shop()
    async with Harness(llm, conn) as h:
        await h.say("when are you open")
        out = spoken(await h.say("yes please"))
    assert out == [line("not_done")]
    assert writes(conn) == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("service", "said", "kept"),
    [
        ("zh", "OK", "zh"),  # short English on a Mandarin line
        ("zh", "Chuyển nhân công", "zh"),  # a third language: never
        ("zh", "yes please", "zh"),
        ("en", "对", "en"),
        ("en", "好的", "en"),
        ("en", "查询订单一零零二三四的状态", "zh"),  # one long clear utterance is enough
        ("zh", "what is the status of my order please", "en"),
    ],
)
async def test_the_language_never_switches_on_one_short_or_foreign_utterance(
    service: str, said: str, kept: str
) -> None:
    async with Harness(FakeLLM({}), Shop(), language=service) as h:
        await h.say(said, language=service)
        assert h.dm.language == kept


@pytest.mark.anyio
async def test_two_short_utterances_in_a_row_switch_the_language() -> None:
    async with Harness(FakeLLM({}), Shop(), language="zh") as h:
        await h.say("order status", language="zh")
        assert h.dm.language == "zh"
        await h.say("my order", language="zh")
        assert h.dm.language == "en"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("said", "lang"), [(t, "zh") for t in TRANSFER[:9]] + [(t, "en") for t in TRANSFER[9:]]
)
@pytest.mark.parametrize("service", ["zh", "en"])
async def test_a_short_transfer_request_transfers_within_one_turn(said: str, lang: str, service: str) -> None:
    llm = FakeLLM({})
    async with Harness(llm, Shop(), language=service) as h:
        out = await h.say(said, language=lang)
    assert [f.reason for f in out if isinstance(f, TransferFrame)] == ["requested"]
    assert llm.requests == []  # no plan needed


@pytest.mark.anyio
async def test_a_transfer_request_at_a_confirmation_transfers_and_writes_nothing() -> None:
    conn = Shop()
    async with Harness(FakeLLM({"address": COMPOUND}), conn) as h:
        await h.say("status of order 100234 and change the address to 88 Nanjing Road")
        out = await h.say("operator")
    assert [f.reason for f in out if isinstance(f, TransferFrame)] == ["requested"]
    assert writes(conn) == []


@pytest.mark.anyio
async def test_keypad_answers_a_number_read_back() -> None:
    conn = Shop()
    plan = {"intent": "tools", "actions": [{"tool": "get_order_status", "arguments": {"order_id": "100235"}}]}
    async with Harness(FakeLLM({"order": plan}), conn) as h:
        await h.say("order 100235")
        await h.send(DTMFFrame(digit="1"))
    assert conn.calls[-1] == ("get_order_status", {"order_id": "100234"})


# --- end of turn ------------------------------------------------------------------------------------

CONTINUES = [
    "查一下订单一零零二三四的状态，顺便",
    "查一下订单的状态，另外",
    "还有",
    "我想查一下订单，然后",
    "帮我把地址改成",
    "订单号是",
    "我要",
    "嗯",
    "What's the status of order 100234, and",
    "What's the status of order 100234 and also",
    "and then",
    "Change the address to",
    "My order number is",
    "I want to check my order,",
    "um",
    "Please track the parcel of order 100234 and.",
]
ENDS = [
    "查一下订单一零零二三四的状态。",
    "转人工",
    "对",
    "好的",
    "我要退货",
    "What's the status of order 100234?",
    "Yes please.",
    "agent",
    "Change the address to 25 Main Street.",
    "and what about the other one?",  # a question ends the turn
    "是",
    "就是",
    "我的包裹还没到",
    "他不在",
    "I think so",
    "ok then",
    "",
]


@pytest.mark.parametrize("text", CONTINUES)
def test_a_transcript_that_stops_mid_clause_continues(text: str) -> None:
    assert continues(text)


@pytest.mark.parametrize("text", ENDS)
def test_a_complete_transcript_ends_the_turn(text: str) -> None:
    assert not continues(text)


def _t(text: str, confidence: float = 0.9) -> TranscriptionFrame:
    return TranscriptionFrame(text=text, language="zh", confidence=confidence, duration_s=1.0)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("first", "second", "joined"),
    [
        (
            "查一下订单一零零二三四的状态，顺便",
            "把地址改成人民路二十五号",
            "查一下订单一零零二三四的状态，顺便把地址改成人民路二十五号",
        ),
        (
            "What's the status of order 100234, and",
            "change the address to 25 Main Street.",
            "What's the status of order 100234, and change the address to 25 Main Street.",
        ),
    ],
)
async def test_a_pause_after_a_continuation_word_is_one_turn(first: str, second: str, joined: str) -> None:
    joiner, sink = TurnJoiner(EndOfTurnParams(hold_s=0.5)), Collect()
    pipe = Pipeline([joiner, sink])
    pipe.start()
    pipe.queue(_t(first))
    await asyncio.sleep(0.1)
    await pipe.broadcast(UserStartedSpeakingFrame())  # the caller goes on within the hold
    await asyncio.sleep(0.6)  # longer than the hold: the caller is still talking, nothing is released
    assert not [f for f in sink.frames if isinstance(f, TranscriptionFrame)]
    pipe.queue(_t(second, confidence=0.7))
    await pipe.idle()
    await pipe.stop()
    (turn,) = [f for f in sink.frames if isinstance(f, TranscriptionFrame)]
    assert turn.text == joined and turn.duration_s == 2.0 and 0.7 <= turn.confidence <= 0.9


@pytest.mark.anyio
async def test_the_hold_is_bounded_when_the_caller_says_nothing_more() -> None:
    joiner, sink = TurnJoiner(EndOfTurnParams(hold_s=0.2)), Collect()
    pipe = Pipeline([joiner, sink])
    pipe.start()
    pipe.queue(_t("查一下订单的状态，顺便"))
    await asyncio.sleep(0.05)
    assert not [f for f in sink.frames if isinstance(f, TranscriptionFrame)]
    await asyncio.sleep(0.3)
    assert [f.text for f in sink.frames if isinstance(f, TranscriptionFrame)] == ["查一下订单的状态，顺便"]
    # a click after the pause: released at once, not held for another sound
    pipe.queue(_t("还有"))
    await asyncio.sleep(0.05)
    await pipe.broadcast(UserStartedSpeakingFrame())
    await pipe.broadcast(UserStoppedSpeakingFrame(duration_s=0.1, kept=False))
    await asyncio.sleep(0.05)
    assert [f.text for f in sink.frames if isinstance(f, TranscriptionFrame)][-1] == "还有"
    await pipe.stop()


@pytest.mark.anyio
async def test_complete_transcripts_and_dtmf_pass_at_once_and_holds_per_turn_are_bounded() -> None:
    joiner, sink = TurnJoiner(EndOfTurnParams(hold_s=5.0, max_holds=2)), Collect()
    pipe = Pipeline([joiner, sink])
    pipe.start()
    pipe.queue(_t("转人工"))
    await pipe.idle()
    assert [f.text for f in sink.frames if isinstance(f, TranscriptionFrame)] == ["转人工"]
    # held twice, then the third part ends the turn whatever its last word
    for part in ("订单的状态，然后", "地址，还有", "还有"):
        pipe.queue(_t(part))
        await asyncio.sleep(0.05)
    texts = [f.text for f in sink.frames if isinstance(f, TranscriptionFrame)]
    assert texts[-1] == "订单的状态，然后地址，还有还有"
    # a key pressed while a transcript is held: the transcript first, then the key
    pipe.queue(_t("我要"))
    pipe.queue(DTMFFrame(digit="0"))
    await asyncio.sleep(0.05)
    kinds = [type(f).__name__ for f in sink.frames if isinstance(f, TranscriptionFrame | DTMFFrame)]
    assert kinds[-2:] == ["TranscriptionFrame", "DTMFFrame"]
    await pipe.stop()


@pytest.mark.anyio
async def test_a_question_planned_as_a_ticket_gets_the_article_unless_a_ticket_is_asked_for() -> None:
    from aicc.appliance.kb.search import Doc
    from aicc.appliance.voice.knowledge import Knowledge

    invoice = Doc(5, 2, "zh", "开具发票", "下单时在结算页选择开具发票；签收后90天内可以申请补开。", "public")
    ticket = {"intent": "tools", "actions": [{"tool": "create_ticket", "arguments": {"summary": "要发票"}}]}
    conn = Shop()
    llm = FakeLLM({"发票": ticket}, chat="签收后90天内可以补开。")
    async with Harness(llm, conn, language="zh", knowledge=Knowledge(None, docs=[invoice])) as h:
        answered = await h.say("请问怎么开发票？", language="zh")
        asked = await h.say("发票一直没收到，帮我登记一个工单", language="zh")
    assert "".join(f.text for f in answered if isinstance(f, LLMTextFrame)).startswith("根据《开具发票》")
    assert [c[0] for c in conn.calls] == ["create_ticket"]  # only the second time, asked for by name
    assert not any(isinstance(f, LLMTextFrame) and f.text.startswith("根据") for f in asked)


@pytest.mark.anyio
async def test_a_question_planned_as_a_lookup_without_a_number_gets_the_article() -> None:
    """Small planners send "优惠券能一起用吗？" to an order lookup with no order: the caller named no
    order, so an article that answers it beats "which order?"; words about their order still get asked."""
    from aicc.appliance.kb.search import Doc
    from aicc.appliance.voice.knowledge import Knowledge

    coupons = Doc(6, 1, "zh", "优惠券使用规则", "每笔订单限用一张优惠券，不能叠加使用；过期作废。", "public")
    lookup = {"intent": "tools", "actions": [{"tool": "get_order_status", "arguments": {}}]}
    conn = Shop()
    llm = FakeLLM({"优惠券": lookup, "订单": lookup}, chat="每笔订单只能用一张，不能叠加。")
    async with Harness(llm, conn, language="zh", knowledge=Knowledge(None, docs=[coupons])) as h:
        answered = await h.say("优惠券能不能几张一起用？", language="zh")
        asked = await h.say("我的订单优惠券怎么没用上？", language="zh")
    assert "".join(f.text for f in answered if isinstance(f, LLMTextFrame)).startswith(
        "根据《优惠券使用规则》"
    )
    assert line("ask_id", "zh") not in spoken(answered)
    assert spoken(asked) == [line("ask_id", "zh")]  # "订单": their own order, whose number is missing
    assert conn.calls == []
