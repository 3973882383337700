"""`aicc smoke` pieces that need no lab: WAV input checks, the reply check, site parameters."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from aicc.appliance.voice.audio import tone
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
