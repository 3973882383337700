"""Keys a caller presses while the IVR's welcome plays are type-ahead for the next menu; digits the
ASR splits at odd places still make the identifier the caller read out."""

from __future__ import annotations

import pytest

from aicc.appliance.voice.flowcall import TYPE_AHEAD, FlowProcessor
from aicc.appliance.voice.frames import DTMFFrame, TranscriptionFrame
from aicc.appliance.voice.numbers import id_candidates
from aicc.appliance.voice.pipeline import Direction

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _speech(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text=text, language="en", confidence=0.9, duration_s=1.0)


async def test_keys_pressed_during_the_welcome_reach_the_next_menu() -> None:
    proc = FlowProcessor()
    for frame in (DTMFFrame(digit="9"), _speech("hello?"), DTMFFrame(digit="1")):
        await proc.process(frame, Direction.DOWNSTREAM)  # nothing is listening: a prompt plays
    proc.forget_input()  # the menu asks
    proc.listening = True
    kept = [proc.inbox.get_nowait() for _ in range(proc.inbox.qsize())]
    assert [f.digit for f in kept if isinstance(f, DTMFFrame)] == ["9", "1"]
    assert not any(isinstance(f, TranscriptionFrame) for f in kept)  # speech before a question is stale


async def test_type_ahead_is_bounded_and_the_callback_offer_takes_no_earlier_key() -> None:
    proc = FlowProcessor()
    for i in range(TYPE_AHEAD + 5):
        await proc.process(DTMFFrame(digit=str(i % 10)), Direction.DOWNSTREAM)
    proc.forget_input()
    assert proc.inbox.qsize() == TYPE_AHEAD
    proc.forget_input(keep_keys=False)
    assert proc.inbox.empty()


@pytest.mark.parametrize(
    ("said", "pattern", "expected"),
    [
        ("the status of my card ending in 842 1.", r"^[0-9]{4}$", ["8421"]),
        ("ending in 8 421", r"^[0-9]{4}$", ["8421"]),
        ("尾号84 21的卡", r"^[0-9]{4}$", ["8421"]),
        ("card 8421", r"^[0-9]{4}$", ["8421"]),
        ("order 1 00 234", r"^[0-9]{6}$", ["100234"]),
        ("order 10023 4 please", r"^[0-9]{6}$", ["100234"]),
        # a number that fits on its own is never joined to the next one
        ("order 123456 25 Main Street", r"^[0-9]{6}$", ["123456"]),
        ("订单一二三四五六，地址是人民路二十五号", r"^[0-9]{6}$", ["123456"]),
        # groups apart (a word between them) are not joined
        ("card 842 and 1", r"^[0-9]{4}$", []),
        ("no digits at all", r"^[0-9]{4}$", []),
    ],
)
def test_split_digit_groups_make_the_identifier(said: str, pattern: str, expected: list[str]) -> None:
    assert id_candidates(said, pattern) == expected
