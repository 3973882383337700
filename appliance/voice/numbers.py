"""Numbers as callers say them and the ASR writes them: 1 0 0 2, 一零零二, "one zero zero two".

DigitNormalizer turns Mandarin digit strings into Arabic digits, so that order and phone numbers
reach the dialogue manager (and the LLM's worked examples) in one form; read_aloud does the reverse
for the bot's voice. Callers read numbers digit
by digit ("幺零零二三七"); the Mandarin ASR prompt makes Whisper write one Chinese digit per spoken
digit. A run of three or more becomes Arabic digits; shorter runs are left alone ("一个", "三天"
are words, not numbers).
"""

from __future__ import annotations

import re
from dataclasses import replace

from aicc.appliance.voice.frames import Frame, TranscriptionFrame
from aicc.appliance.voice.pipeline import Direction, FrameProcessor
from aicc.models.engines.base import Language

_CN_DIGITS = {
    "零": "0",
    "〇": "0",
    "一": "1",
    "幺": "1",
    "二": "2",
    "两": "2",
    "三": "3",
    "四": "4",
    "五": "5",
    "六": "6",
    "七": "7",
    "八": "8",
    "九": "9",
}
_EN_DIGITS = {
    "zero": "0",
    "oh": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_RUN = re.compile(rf"[{''.join(_CN_DIGITS)}0-9]{{3,}}")


def spoken_digits(text: str) -> str:
    return _RUN.sub(lambda m: "".join(_CN_DIGITS.get(c, c) for c in m.group()), text)


ID_DIGITS = 6  # an order or phone number; shorter runs are house numbers, counts, dates
_ID = re.compile(rf"(?<![\d.])\d{{{ID_DIGITS},}}(?![\d.])")
_SAY_ZH = dict(zip("0123456789", "零幺二三四五六七八九", strict=True))  # 幺: 1 in numbers read aloud
_SAY_EN = {digit: word for word, digit in _EN_DIGITS.items() if word != "oh"}


def read_aloud(text: str, language: Language) -> str:
    """Order and phone numbers (six digits or more) read digit by digit, as a caller reads them back:
    TTS front-ends would say 100237 as "十万零二百三十七" / "one hundred thousand two hundred..."."""
    if language == "zh":
        return _ID.sub(lambda m: "".join(_SAY_ZH[d] for d in m.group()), text)
    return _ID.sub(lambda m: " ".join(_SAY_EN[d] for d in m.group()), text)


def digits_in(text: str) -> str:
    """Digits a caller said, whether ASR wrote 1 0 0 2, 一零零二 or 'one zero zero two'."""
    out = []
    for token in re.findall(r"[A-Za-z]+|\d|[\u4e00-\u9fff]", text.lower()):
        if token.isdigit():
            out.append(token)
        elif token in _CN_DIGITS:
            out.append(_CN_DIGITS[token])
        elif token in _EN_DIGITS:
            out.append(_EN_DIGITS[token])
    return "".join(out)


def digit_runs(text: str) -> list[str]:
    """Separate numbers the caller said ("order 100234, to 88 Nanjing Road" -> 100234, 88)."""
    runs: list[str] = []
    current = ""
    for token in re.findall(r"[A-Za-z]+|\d|[\u4e00-\u9fff]|[^\s\w]|\s+", text.lower()):
        digit = token if token.isdigit() else _CN_DIGITS.get(token) or _EN_DIGITS.get(token)
        if digit is not None:
            current += digit
        elif token.isspace() or token in ("-", "‐"):
            continue  # "1 0 0 2 3 4" and "100-234" are one number
        elif current:
            runs.append(current)
            current = ""
    if current:
        runs.append(current)
    return runs


def names_an_id(text: str) -> bool:
    """The caller said an order or phone number, in any form digit_runs reads."""
    return any(len(run) >= ID_DIGITS for run in digit_runs(text))


class DigitNormalizer(FrameProcessor):
    name = "digits"

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, TranscriptionFrame) and frame.language == "zh":
            frame = replace(frame, text=spoken_digits(frame.text))
        await self.push(frame, direction)
