"""TTS processor: sentences -> bot audio. Prompts synthesised before the call is answered are cached,
so the greeting plays at pickup and the graceful error lines still play when TTS is down."""

from __future__ import annotations

import asyncio
import logging
import time

from aicc.appliance.voice.audio import resample
from aicc.appliance.voice.frames import Frame, OutputAudioFrame, SpeakFrame
from aicc.appliance.voice.numbers import read_aloud
from aicc.appliance.voice.pipeline import Direction, FrameProcessor
from aicc.models.engines.base import Language, TTSEngine

log = logging.getLogger(__name__)


class TTSProcessor(FrameProcessor):
    name = "tts"
    cancel_on_interruption = True

    def __init__(self, engine: TTSEngine, out_rate: int, *, timeout_s: float = 10.0) -> None:
        super().__init__()
        self.engine = engine
        self.out_rate = out_rate
        self.timeout_s = timeout_s
        self.cache: dict[tuple[str, str], bytes] = {}
        self.fallback: dict[str, str] = {}  # language -> text of the line to play when TTS fails

    async def synthesize_all(self, text: str, language: Language) -> bytes:
        parts: list[bytes] = []
        async with asyncio.timeout(self.timeout_s):
            async for chunk in self.engine.synthesize(read_aloud(text, language), language=language):
                parts.append(resample(chunk.pcm, chunk.sample_rate, self.out_rate))
        return b"".join(parts)

    async def prewarm(self, lines: list[tuple[str, Language]]) -> None:
        """Synthesise prompts ahead of time (before answering the call)."""
        for text, language in lines:
            if (text, language) not in self.cache:
                self.cache[(text, language)] = await self.synthesize_all(text, language)

    async def process(self, frame: Frame, direction: Direction) -> None:
        if not isinstance(frame, SpeakFrame):
            await self.push(frame, direction)
            return
        # A hold line's audio is not the answer's: it leaves the answer's TTS mark alone.
        clock = None if frame.hold else frame.clock
        cached = self.cache.get((frame.text, frame.language))
        if cached is not None:
            if clock is not None:
                clock.tts_first_audio = time.monotonic()
            await self._out(cached, frame)
            return
        first = True
        chunks = aiter(
            self.engine.synthesize(read_aloud(frame.text, frame.language), language=frame.language)
        )
        try:
            while True:
                # The deadline is per chunk: a long sentence may take longer in all, but an engine
                # that stops producing audio is caught within timeout_s.
                try:
                    async with asyncio.timeout(self.timeout_s):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                if first and clock is not None:
                    clock.tts_first_audio = time.monotonic()
                first = False
                await self._out(resample(chunk.pcm, chunk.sample_rate, self.out_rate), frame)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("TTS failed for a %s sentence", frame.language, exc_info=True)
            self.report("engine_errors", engine="tts")
            line = self.fallback.get(frame.language)
            audio = self.cache.get((line, frame.language)) if line else None
            if audio is not None and first:
                await self._out(audio, frame)
        finally:
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()  # stop the engine's worker (barge-in or failure)

    async def _out(self, pcm: bytes, frame: SpeakFrame) -> None:
        await self.push(
            OutputAudioFrame(
                pcm=pcm,
                sample_rate=self.out_rate,
                interruptible=frame.interruptible,
                clock=frame.clock,
                text=frame.text,
                hold=frame.hold,
            )
        )
