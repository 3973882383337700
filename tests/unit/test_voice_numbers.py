"""Numbers between speech and text: as the ASR writes them (-> the order numbers the dialogue manager
needs) and as the bot reads them aloud."""

from __future__ import annotations

import pytest

from aicc.appliance.voice.frames import SpeakFrame, TranscriptionFrame
from aicc.appliance.voice.numbers import DigitNormalizer, read_aloud, spoken_digits
from aicc.appliance.voice.pipeline import Pipeline
from aicc.appliance.voice.tts import TTSProcessor
from aicc.models.engines.base import Language
from aicc.models.engines.embedded import ZH_DIGITS_PROMPT, without_prompt_echo
from tests.unit.test_voice_fakes import FakeTTS, anyio_backend  # noqa: F401
from tests.unit.test_voice_pipeline import Collect


@pytest.mark.parametrize(
    ("heard", "meant"),
    [
        ("查询订单一零零二三七的状态", "查询订单100237的状态"),
        ("订单号幺零零二三四", "订单号100234"),  # 幺: how callers read 1 in numbers
        ("电话一三八零零一三八零零零", "电话13800138000"),
        ("订单10二三七", "订单10237"),  # mixed output of the ASR
        ("我要一个工单，三天内回复", "我要一个工单，三天内回复"),  # words, not numbers
        ("一二", "一二"),
    ],
)
def test_spoken_digits(heard: str, meant: str) -> None:
    assert spoken_digits(heard) == meant


@pytest.mark.anyio
async def test_normalizer_rewrites_numbers_in_the_utterances_own_language() -> None:
    sink = Collect()
    pipe = Pipeline([DigitNormalizer(), sink])
    pipe.start()
    pipe.queue(TranscriptionFrame(text="订单一零零二三四", language="zh", confidence=0.9, duration_s=2.0))
    pipe.queue(TranscriptionFrame(text="one two three", language="en", confidence=0.9, duration_s=1.0))
    # English words on a Mandarin line: English numbers, never Mandarin numerals
    pipe.queue(TranscriptionFrame(text="five Main Street", language="zh", confidence=0.9, duration_s=1.0))
    pipe.queue(TranscriptionFrame(text="五 main street", language="zh", confidence=0.9, duration_s=1.0))
    await pipe.idle()
    texts = [f.text for f in sink.frames if isinstance(f, TranscriptionFrame)]
    assert texts == ["订单100234", "123", "5 Main Street", "5 main street"]
    await pipe.stop()


def test_prompt_echo_is_dropped_but_real_words_stay() -> None:
    assert without_prompt_echo("客服中心来电记录。", ZH_DIGITS_PROMPT) == ""
    assert without_prompt_echo("工单编号五三一七零八", ZH_DIGITS_PROMPT) == ""
    assert without_prompt_echo("没问题，工单编号五三一", ZH_DIGITS_PROMPT) == "没问题"
    said = "我要查工单编号一二三四五六。"  # a caller's own ticket number
    assert without_prompt_echo(said, ZH_DIGITS_PROMPT) == said


@pytest.mark.parametrize(
    ("text", "language", "said"),
    [
        ("您的订单100237（一件冬季外套）已发货。", "zh", "您的订单幺零零二三七（一件冬季外套）已发货。"),
        ("Your order 100234 has shipped.", "en", "Your order one zero zero two three four has shipped."),
        (
            "预计11月26日送达，退款129.50元。",
            "zh",
            "预计11月26日送达，退款129.50元。",
        ),  # dates, amounts: as numbers
        ("Refund of 1234567.80 issued.", "en", "Refund of 1234567.80 issued."),
    ],
)
def test_ids_are_read_digit_by_digit(text: str, language: Language, said: str) -> None:
    assert read_aloud(text, language) == said


@pytest.mark.anyio
async def test_tts_engine_gets_the_read_aloud_form_and_the_record_keeps_the_digits() -> None:
    engine = FakeTTS()
    pipe = Pipeline([TTSProcessor(engine, 8000), Collect()])
    pipe.start()
    pipe.queue(SpeakFrame(text="您的订单100237已发货。", language="zh"))
    await pipe.idle()
    await pipe.stop()
    assert engine.spoken == [("您的订单幺零零二三七已发货。", "zh")]
