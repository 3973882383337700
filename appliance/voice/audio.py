"""PCM helpers: resampling between the codec, engine and pipeline rates, and levels."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]


def to_array(pcm: bytes) -> Samples:
    if len(pcm) % 2:
        pcm = pcm[:-1]  # a torn sample from a bad peer must not raise deep in the media loop
    return np.frombuffer(pcm, dtype="<i2")


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Linear-interpolation resampler with a moving-average anti-alias filter when downsampling.

    Telephone-band speech only needs to stay intelligible for ASR and callers; this keeps the
    media loop free of heavy DSP dependencies.
    """
    if src_rate == dst_rate or not pcm:
        return pcm
    x: npt.NDArray[np.float64] = to_array(pcm).astype(np.float64)
    if dst_rate < src_rate:
        width = math.ceil(src_rate / dst_rate)
        if width > 1 and len(x) >= width:
            x = np.convolve(x, np.ones(width, dtype=np.float64) / width, mode="same")
    n_out = int(len(x) * dst_rate / src_rate)
    if n_out <= 0:
        return b""
    positions = np.arange(n_out, dtype=np.float64) * (src_rate / dst_rate)
    y = np.interp(positions, np.arange(len(x), dtype=np.float64), x)
    return np.clip(np.rint(y), -32768, 32767).astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    x = to_array(pcm)
    if len(x) == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64)))))


def dbfs(level: float) -> float:
    return 20 * math.log10(max(level, 1.0) / 32768.0)


def silence(samples: int) -> bytes:
    return bytes(2 * samples)


def tone(freq_hz: float, seconds: float, sample_rate: int, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (np.sin(2 * np.pi * freq_hz * t) * amplitude * 32767).astype("<i2").tobytes()


def soft_cue(sample_rate: int) -> bytes:
    """Two soft notes (E5, A5), 120 ms each with 10 ms fades, about -27 dBFS: heard as "still
    working" while the caller waits, never taken for speech."""
    n = int(0.12 * sample_rate)
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.01 * sample_rate))
    notes = [
        np.sin(2 * np.pi * hz * np.arange(n) / sample_rate) * fade * 0.06 * 32767 for hz in (659.3, 880.0)
    ]
    return np.concatenate(notes).astype("<i2").tobytes()
