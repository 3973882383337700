"""`aicc smoke` pieces that need no lab: WAV input checks, the reply check, site parameters."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path
from types import SimpleNamespace

import pytest

from aicc.appliance.voice.audio import tone
from aicc.installer import smoke
from aicc.installer.errors import InputError
from aicc.installer.smoke import DEFAULT_EXPECT, check_reply, read_wav


def write_wav(path: Path, *, width: int = 2, channels: int = 1, seconds: float = 1.0) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(16000)
        frames = int(16000 * seconds)
        w.writeframes(
            tone(440, seconds, 16000) * channels if width == 2 else bytes(frames * channels * width)
        )
    return path


def test_read_wav_accepts_16_bit_mono_and_mixes_stereo(tmp_path: Path) -> None:
    pcm, rate = read_wav(write_wav(tmp_path / "a.wav"))
    assert rate == 16000 and len(pcm) == 32000
    pcm, _ = read_wav(write_wav(tmp_path / "b.wav", channels=2))
    assert len(pcm) == 32000


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: write_wav(p, width=1), "16-bit PCM"),
        (lambda p: write_wav(p, seconds=0.1), "shorter than half a second"),
        (lambda p: (p.write_bytes(b"RIFF0000WAVEjunk"), p)[1], "not a WAV file"),
        (lambda p: p, "not found"),
    ],
)
def test_read_wav_rejects_bad_input_clearly(tmp_path: Path, make: object, message: str) -> None:
    path = make(tmp_path / "x.wav")  # type: ignore[operator]
    with pytest.raises(InputError, match=message):
        read_wav(path)


def test_check_reply() -> None:
    assert (
        check_reply("Your order 1 0 0 2 3 4, a pair of running shoes, has shipped.", DEFAULT_EXPECT["en"])
        == ""
    )
    assert check_reply("您的订单100234（一双跑鞋）已发货。", DEFAULT_EXPECT["zh"]) == ""
    assert check_reply("您的订单是1230,是医生跑鞋一发火。", DEFAULT_EXPECT["zh"]) == ""  # heard as homophones
    assert "does not mention" in check_reply("您的订单已签收。", DEFAULT_EXPECT["zh"])
    assert "does not mention" in check_reply("Your order was delivered.", DEFAULT_EXPECT["en"])
    assert check_reply("Your order 100234 has chipped.", DEFAULT_EXPECT["en"]) == ""  # one sound blurred
    assert "does not mention" in check_reply("Your order is shipping soon.", DEFAULT_EXPECT["en"])
    assert "said nothing" in check_reply("  ", ())
    assert "apology" in check_reply("Sorry, I'm having a technical problem.", ())
    assert check_reply("We are open from nine to six.", ()) == ""


class _Heard:
    """Voice heard at given (start, end) monotonic offsets from the test's start."""

    def __init__(self, t0: float, spans: list[tuple[float, float]]) -> None:
        self.t0, self.spans = t0, spans

    def _now(self) -> float:
        return time.monotonic() - self.t0

    def first_voice_after(self, since: float) -> float | None:
        starts = [self.t0 + a for a, _ in self.spans if a <= self._now()]
        return min(starts) if starts else None

    def last_voice(self) -> float | None:
        ends = [self.t0 + min(b, self._now()) for a, b in self.spans if a <= self._now()]
        return max(ends) if ends else None


def test_the_reply_after_a_hold_line_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hold line (short), 4 s of silence on a loaded host, then the answer: the answer is the reply."""
    monkeypatch.setattr(smoke, "HOLD_SILENCE_S", 5.0)
    t0 = time.monotonic()
    caller = SimpleNamespace(heard=_Heard(t0, [(0.1, 1.2), (5.2, 8.0)]))
    start, end = asyncio.run(smoke.wait_quiet(caller, t0, timeout=30, silence=1.0))
    assert start == pytest.approx(t0 + 0.1, abs=0.01) and end == pytest.approx(t0 + 8.0, abs=0.15)


def test_a_long_reply_ends_after_the_normal_silence() -> None:
    t0 = time.monotonic()
    caller = SimpleNamespace(heard=_Heard(t0, [(0.1, 2.6)]))
    asyncio.run(smoke.wait_quiet(caller, t0, timeout=30, silence=1.0))
    assert time.monotonic() - t0 < 4.0
