"""PCM helpers shared by the engines: resampling (soxr, band-limited) and format conversion."""

from __future__ import annotations

import io
import wave

import numpy as np
import numpy.typing as npt

from aicc.models.engines.base import Audio

Float32 = npt.NDArray[np.float32]


def to_float(audio: Audio) -> Float32:
    return np.frombuffer(audio.pcm, dtype="<i2").astype(np.float32) / 32768.0


def from_float(samples: Float32, sample_rate: int) -> Audio:
    clipped = np.clip(samples, -1.0, 1.0)
    return Audio((clipped * 32767.0).astype("<i2").tobytes(), sample_rate)


def resample(audio: Audio, rate: int) -> Audio:
    """High-quality resampling; telephone 8 kHz goes up to the 16 kHz the ASR models expect."""
    if audio.sample_rate == rate:
        return audio
    import soxr

    out = soxr.resample(to_float(audio), audio.sample_rate, rate, quality="HQ")
    return from_float(np.asarray(out, dtype=np.float32), rate)


def float_at(audio: Audio, rate: int) -> Float32:
    return to_float(resample(audio, rate))


def join(chunks: list[Audio]) -> Audio:
    if not chunks:
        raise ValueError("no audio")
    rates = {c.sample_rate for c in chunks}
    if len(rates) != 1:
        raise ValueError(f"chunks have different sample rates: {sorted(rates)}")
    return Audio(b"".join(c.pcm for c in chunks), chunks[0].sample_rate)


def to_wav(audio: Audio) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(audio.sample_rate)
        w.writeframes(audio.pcm)
    return buf.getvalue()


def from_wav(data: bytes) -> Audio:
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError("only 16-bit mono WAV is supported")
        return Audio(w.readframes(w.getnframes()), w.getframerate())
