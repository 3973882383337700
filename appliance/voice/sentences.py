"""Sentence aggregator: streamed LLM tokens -> one SpeakFrame per sentence, so TTS starts early."""

from __future__ import annotations

import re

from aicc.appliance.voice.frames import Frame, LLMTextFrame, SpeakFrame, StartFrame, TurnClock
from aicc.appliance.voice.pipeline import Direction, FrameProcessor
from aicc.models.engines.base import Language

_END = re.compile(r"([。！？!?；;]|[.](?=\s|$))")


def _lang_of(text: str, default: Language) -> Language:
    if re.search(r"[\u4e00-\u9fff]", text):
        return "zh"
    return default


class SentenceAggregator(FrameProcessor):
    name = "sentences"

    def __init__(self, min_chars: int = 2) -> None:
        super().__init__()
        self.min_chars = min_chars
        self._buf = ""
        self._clock: TurnClock | None = None
        self._language: Language = "en"

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, StartFrame):
            self._language = frame.language
        if not isinstance(frame, LLMTextFrame):
            if self._buf.strip():
                await self._flush()
            await self.push(frame, direction)
            return
        if frame.clock is not None:
            self._clock = frame.clock
        self._buf += frame.text
        while True:
            match = _END.search(self._buf)
            if match is None or len(self._buf[: match.end()].strip()) < self.min_chars:
                break
            sentence, self._buf = self._buf[: match.end()], self._buf[match.end() :]
            await self._speak(sentence)
        if frame.text == "" and self._buf.strip():  # the end-of-answer marker flushes the rest
            await self._flush()

    async def _flush(self) -> None:
        text, self._buf = self._buf, ""
        await self._speak(text)

    async def _speak(self, text: str) -> None:
        text = text.strip()
        if text:
            await self.push(SpeakFrame(text=text, language=_lang_of(text, self._language), clock=self._clock))
            self._clock = None
