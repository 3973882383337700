"""One typed, async interface per engine kind. Each has a production and an embedded implementation.

Audio is 16-bit signed little-endian mono PCM throughout; every buffer carries its sample rate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Language = Literal["zh", "en"]


class EngineError(Exception):
    """An engine failed (not started, timed out, returned garbage). Names engine, host and model."""

    def __init__(
        self, message: str, *, engine: str, model: str | None = None, host: str | None = None
    ) -> None:
        where = ", ".join(
            x
            for x in (f"engine {engine}", f"model {model}" if model else "", f"host {host}" if host else "")
            if x
        )
        super().__init__(f"{message} ({where})")
        self.engine = engine
        self.model = model
        self.host = host


@dataclass(frozen=True)
class Audio:
    pcm: bytes  # s16le mono
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


# --- LLM -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    name: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may plan: JSON-schema parameters; write=True means it changes business data."""

    name: str
    description: str
    parameters: dict[str, Any]
    write: bool = False


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class LLMDelta:
    """One streamed piece of an answer: text tokens (first ones flagged by the client's timing)."""

    text: str
    finish_reason: str | None = None


@runtime_checkable
class LLMClient(Protocol):
    model: str

    def stream_chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int = 256, temperature: float = 0.2
    ) -> AsyncIterator[LLMDelta]: ...

    async def complete_json(
        self,
        messages: Sequence[ChatMessage],
        schema: dict[str, Any],
        *,
        max_tokens: int = 512,
        on_text: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """An answer constrained by the server to the JSON schema (guided decoding / grammar); with
        on_text, streamed, on_text called with the text so far after each token."""
        ...


# --- ASR -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    confidence: float  # 0..1
    segments: tuple[Segment, ...] = field(default_factory=tuple)


@runtime_checkable
class ASREngine(Protocol):
    name: str

    async def transcribe(self, audio: Audio, *, language: Language | None = None) -> Transcript:
        """Transcribe one utterance (VAD-segmented where the engine does not stream). Without a
        language the engine detects it and decodes with that language's settings, once."""
        ...


# --- TTS -------------------------------------------------------------------------------------------


@runtime_checkable
class TTSEngine(Protocol):
    name: str
    sample_rate: int

    def synthesize(self, text: str, *, language: Language) -> AsyncIterator[Audio]:
        """PCM chunks at `sample_rate`; the first one as early as the engine can give it."""
        ...


# --- VAD -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechProbability:
    probability: float
    is_speech: bool


@runtime_checkable
class VADEngine(Protocol):
    sample_rate: int
    frame_samples: int

    def speech_probability(self, frame: bytes) -> SpeechProbability:
        """Probability that one frame (frame_samples of s16le PCM at sample_rate) holds speech."""
        ...
