"""Spoken digit strings -> Arabic digits, so that order and phone numbers reach the dialogue manager
(and the LLM's worked examples) in one form whatever the ASR wrote.

Callers read numbers digit by digit ("幺零零二三七"); the Mandarin ASR prompt makes Whisper write
them as Chinese digits, one character per spoken digit. A run of three or more becomes Arabic
digits; shorter runs are left alone ("一个", "三天" are words, not numbers).
"""

from __future__ import annotations

import re
from dataclasses import replace

from aicc.appliance.voice.frames import Frame, TranscriptionFrame
from aicc.appliance.voice.pipeline import Direction, FrameProcessor

_DIGITS = str.maketrans("零〇一幺二两三四五六七八九", "0011223456789")
_RUN = re.compile(r"[零〇一幺二两三四五六七八九0-9]{3,}")


def spoken_digits(text: str) -> str:
    return _RUN.sub(lambda m: m.group().translate(_DIGITS), text)


class DigitNormalizer(FrameProcessor):
    name = "digits"

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, TranscriptionFrame) and frame.language == "zh":
            frame = replace(frame, text=spoken_digits(frame.text))
        await self.push(frame, direction)
