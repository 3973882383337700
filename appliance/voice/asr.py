"""ASR processor: utterance -> transcript, in one of the site's languages.

The language is detected until it is sure, then kept: sure when the caller speaks the service
number's language, or another configured language in one long utterance or two in a row. A detection
outside the configured languages (a short 转人工 heard as Vietnamese) is never used: the utterance is
transcribed again in the service language, so the request is understood in the same turn.

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

    def __init__(
        self,
        engine: ASREngine,
        *,
        timeout_s: float = 10.0,
        detect_language: bool = True,
        languages: tuple[Language, ...] = ("zh", "en"),
        long_s: float = 2.0,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.timeout_s = timeout_s
        self.detect_language = detect_language
        self.languages = languages  # the site's: never a third
        self.long_s = long_s  # an utterance this long in another configured language is enough
        self.language: Language | None = None
        self._service_language: Language = "en"
        self._early: asyncio.Task[Transcript] | None = None
        self._other: Language | None = None  # the other language heard last, not yet kept

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
        detected: Language = self._service_language
        if self.language is None and result.text.strip():
            if result.language in self.languages:
                detected = result.language
            else:
                self.report("foreign_language", 1.0, heard=str(result.language))
                try:
                    result = await self._transcribe(frame.pcm, frame.sample_rate, self._service_language)
                except Exception as exc:
                    self.report("engine_errors", engine="asr")
                    await self.push(ErrorFrame(source="asr", message=str(exc) or type(exc).__name__))
                    return
            self._keep(detected, frame.duration_s)
        frame.clock.transcript = time.monotonic()
        await self.push(
            TranscriptionFrame(
                text=result.text.strip(),
                language=self.language or detected,
                confidence=result.confidence,
                duration_s=frame.duration_s,
                clock=frame.clock,
            )
        )

    def _keep(self, detected: Language, duration_s: float) -> None:
        """Keep the service language at once; another only when sure (long, or twice in a row)."""
        if detected == self._service_language or duration_s >= self.long_s or self._other == detected:
            self.language, self._other = detected, None
        else:
            self._other = detected

    async def _transcribe(self, pcm: bytes, sample_rate: int, language: Language | None = None) -> Transcript:
        return await asyncio.wait_for(
            self.engine.transcribe(Audio(pcm, sample_rate), language=language or self.language),
            self.timeout_s,
        )

    def _drop_early(self) -> None:
        if self._early is not None:
            self._early.cancel()
            # A failure of a transcription nobody waits for is not worth a warning.
            self._early.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._early = None
