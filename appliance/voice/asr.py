"""ASR processor: utterance -> transcript (language detected on the first turn, then kept)."""

from __future__ import annotations

import asyncio
import time

from aicc.appliance.voice.frames import ErrorFrame, Frame, StartFrame, TranscriptionFrame, UtteranceFrame
from aicc.appliance.voice.pipeline import Direction, FrameProcessor
from aicc.models.engines.base import ASREngine, Audio, Language


class ASRProcessor(FrameProcessor):
    name = "asr"

    def __init__(self, engine: ASREngine, *, timeout_s: float = 10.0, detect_language: bool = True) -> None:
        super().__init__()
        self.engine = engine
        self.timeout_s = timeout_s
        self.detect_language = detect_language
        self.language: Language | None = None
        self._service_language: Language = "en"

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, StartFrame):
            self._service_language = frame.language
            self.language = None if self.detect_language else frame.language
        if not isinstance(frame, UtteranceFrame):
            await self.push(frame, direction)
            return
        hint = self.language
        try:
            result = await asyncio.wait_for(
                self.engine.transcribe(Audio(frame.pcm, frame.sample_rate), language=hint), self.timeout_s
            )
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
