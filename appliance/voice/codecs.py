"""Audio codecs the gateway speaks: G.711 mu-law (PCMU), A-law (PCMA) and G.722.

G.711 uses table lookups (ITU-T G.711 segment encoding); G.722 uses the `g722` C extension
(sippy's public-domain port of the ITU reference). Each call gets its own encoder and decoder
because ADPCM keeps state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from aicc.appliance.voice.audio import to_array


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    out = np.zeros(256, dtype=np.int16)
    for i in range(256):
        u = ~i & 0xFF
        sign = u & 0x80
        exponent = (u >> 4) & 0x07
        mantissa = u & 0x0F
        sample = ((mantissa << 3) + 0x84) << exponent
        sample -= 0x84
        out[i] = -sample if sign else sample
    return out


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    out = np.zeros(256, dtype=np.int16)
    for i in range(256):
        a = i ^ 0x55
        sign = a & 0x80
        exponent = (a >> 4) & 0x07
        mantissa = a & 0x0F
        sample = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
        out[i] = sample if sign else -sample
    return out


def _ulaw_encode(sample: int) -> int:
    # 14-bit mu-law as in the ITU/Sun reference (and CPython's audioop), for bit-exact interop.
    value = sample >> 2
    mask = 0xFF
    if value < 0:
        value = -value
        mask = 0x7F
    value = min(value, 8159) + 0x21
    seg = 0
    for seg, end in enumerate((0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)):  # noqa: B007
        if value <= end:
            break
    else:
        return 0x7F ^ mask
    return ((seg << 4) | ((value >> (seg + 1)) & 0x0F)) ^ mask


def _alaw_encode(sample: int) -> int:
    sign = 0x80 if sample >= 0 else 0
    if sample < 0:
        sample = -sample - 1
    sample = min(sample, 32767)
    if sample >= 256:
        exponent = 7
        mask = 0x4000
        while exponent > 1 and not sample & mask:
            exponent -= 1
            mask >>= 1
        mantissa = (sample >> (exponent + 3)) & 0x0F
        code = (exponent << 4) | mantissa
    else:
        code = sample >> 4
    return (code | sign) ^ 0x55


_ULAW_DEC = _ulaw_decode_table()
_ALAW_DEC = _alaw_decode_table()
# Encode tables indexed by the sample as uint16 (two's complement), built once at import.
_ULAW_ENC = np.array([_ulaw_encode(s - 65536 if s >= 32768 else s) for s in range(65536)], dtype=np.uint8)
_ALAW_ENC = np.array([_alaw_encode(s - 65536 if s >= 32768 else s) for s in range(65536)], dtype=np.uint8)


def ulaw_encode(pcm: bytes) -> bytes:
    return _ULAW_ENC[to_array(pcm).view(np.uint16)].tobytes()


def ulaw_decode(data: bytes) -> bytes:
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    return _ALAW_ENC[to_array(pcm).view(np.uint16)].tobytes()


def alaw_decode(data: bytes) -> bytes:
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


class Coder(Protocol):
    def encode(self, pcm: bytes) -> bytes: ...
    def decode(self, payload: bytes) -> bytes: ...


class _G711:
    def __init__(self, alaw: bool) -> None:
        self._enc = alaw_encode if alaw else ulaw_encode
        self._dec = alaw_decode if alaw else ulaw_decode

    def encode(self, pcm: bytes) -> bytes:
        return self._enc(pcm)

    def decode(self, payload: bytes) -> bytes:
        return self._dec(payload)


class _G722:
    def __init__(self) -> None:
        import G722  # type: ignore[import-not-found]  # C extension from the `g722` wheel

        self._encoder = G722.G722(16000, 64000)
        self._decoder = G722.G722(16000, 64000)

    def encode(self, pcm: bytes) -> bytes:
        return bytes(self._encoder.encode(to_array(pcm).astype(np.int16)))

    def decode(self, payload: bytes) -> bytes:
        return bytes(np.asarray(self._decoder.decode(payload), dtype="<i2").tobytes())


@dataclass(frozen=True)
class Codec:
    """A payload format: SDP name, static payload type, RTP clock rate and the PCM rate it carries."""

    name: str
    payload_type: int
    clock_rate: int
    sample_rate: int

    @property
    def samples_per_frame(self) -> int:
        """Samples of PCM in one 20 ms packet."""
        return self.sample_rate // 50

    @property
    def timestamp_step(self) -> int:
        # G.722's RTP clock is 8000 although it samples at 16 kHz (RFC 3551, 4.5.2).
        return self.clock_rate // 50

    def coder(self) -> Coder:
        if self.name == "G722":
            return _G722()
        return _G711(alaw=self.name == "PCMA")


PCMU = Codec("PCMU", 0, 8000, 8000)
PCMA = Codec("PCMA", 8, 8000, 8000)
G722 = Codec("G722", 9, 8000, 16000)
SUPPORTED: dict[str, Codec] = {c.name: c for c in (G722, PCMU, PCMA)}
# The gateway's preference when the offer lists several: wideband first for ASR accuracy.
PREFERENCE = ("G722", "PCMU", "PCMA")
