"""ASR processor: utterance -> transcript (language detected on the first turn, then kept).

A SpeechPauseFrame starts a transcription early, during the VAD's hang-over; the utterance that
follows uses it when the caller said nothing more, else it is thrown away and the whole utterance is
transcribed.
"""

from __future__ import annotations

import asyncio
import time

from aicc.appliance.voice.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    SpeechPauseFrame,
    StartFrame,
    TranscriptionFrame,
    UtteranceFrame,
)
from aicc.appliance.voice.pipeline import Direction, FrameProcessor
from aicc.models.engines.base import ASREngine, Audio, Language, Transcript


class ASRProcessor(FrameProcessor):
    name = "asr"

    def __init__(self, engine: ASREngine, *, timeout_s: float = 10.0, detect_language: bool = True) -> None:
        super().__init__()
        self.engine = engine
        self.timeout_s = timeout_s
        self.detect_language = detect_language
        self.language: Language | None = None
        self._service_language: Language = "en"
        self._early: asyncio.Task[Transcript] | None = None

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, StartFrame):
            self._service_language = frame.language
            self.language = None if self.detect_language else frame.language
        if isinstance(frame, SpeechPauseFrame):
            self._drop_early()
            self._early = asyncio.ensure_future(self._transcribe(frame.pcm, frame.sample_rate))
            return
        if isinstance(frame, EndFrame):
            self._drop_early()
        if not isinstance(frame, UtteranceFrame):
            await self.push(frame, direction)
            return
        early, self._early = self._early, None
        if early is not None and frame.same_as_pause:
            self.report("early_transcripts", 1.0, used="yes")
            pending = early
        else:
            if early is not None:
                self.report("early_transcripts", 1.0, used="no")
                self._early = early
                self._drop_early()
            pending = asyncio.ensure_future(self._transcribe(frame.pcm, frame.sample_rate))
        try:
            result = await pending
        except Exception as exc:
            self.report("engine_errors", engine="asr")
            await self.push(ErrorFrame(source="asr", message=str(exc) or type(exc).__name__))
            return
        frame.clock.transcript = time.monotonic()
        if self.language is None:
            detected = result.language if result.language in ("zh", "en") else self._service_language
            if result.text.strip():
                self.language = "zh" if detected == "zh" else "en"
        await self.push(
            TranscriptionFrame(
                text=result.text.strip(),
                language=self.language or self._service_language,
                confidence=result.confidence,
                duration_s=frame.duration_s,
                clock=frame.clock,
            )
        )

    async def _transcribe(self, pcm: bytes, sample_rate: int) -> Transcript:
        return await asyncio.wait_for(
            self.engine.transcribe(Audio(pcm, sample_rate), language=self.language), self.timeout_s
        )

    def _drop_early(self) -> None:
        if self._early is not None:
            self._early.cancel()
            # A failure of a transcription nobody waits for is not worth a warning.
            self._early.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._early = None
