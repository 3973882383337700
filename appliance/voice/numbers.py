"""Numbers as callers say them and the ASR writes them: 1 0 0 2, 一零零二, "one zero zero two".

DigitNormalizer turns number words into Arabic digits in the caller's own language (the script of the
utterance, not the line's): Mandarin numerals in a Mandarin utterance, English number words in an
English one ("five Main Street" -> "5 Main Street"; a Mandarin numeral the ASR wrote among English
words is a digit too, never "五 main street"). read_aloud does the reverse for the bot's voice.

Callers read ids digit by digit ("幺零零二三七", "one double oh two three seven"); every spoken digit
is one digit, so the count is exact. A Mandarin run of three or more digits becomes Arabic digits;
shorter runs are left alone ("一个", "两三天" are words, not numbers). Positional numbers (二十五,
twenty five) are a number of their own: next to a digit string they stay apart ("123456 25"), so an
order number read out and the house number after it are never merged.
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
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
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
_EN_TEENS = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_EN_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_EN_SCALES = {"hundred": 100, "thousand": 1000}
_EN_REPEAT = {"double": 2, "triple": 3}
# After these a lone "one" is a number ("to one Main Street", "number one"), elsewhere a pronoun
# ("the one I ordered", "no one").
_ONE_AFTER = frozenset({"number", "no", "to", "at", "is", "order", "card", "ending", "room", "unit", "floor"})
# A positional Mandarin number of two characters is converted only before one of these: 十五号 is a
# house number, 十分 ("very") is not a number.
_ZH_COUNTED = (
    "号",
    "路",
    "弄",
    "栋",
    "幢",
    "楼",
    "层",
    "室",
    "单元",
    "巷",
    "街",
    "村",
    "组",
    "块",
    "元",
    "个",
    "天",
    "月",
    "日",
    "年",
    "岁",
    "件",
    "分钟",
    "小时",
)
_CJK = re.compile(r"[\u4e00-\u9fff]")
_ZH_NUM_RUN = re.compile(rf"[{''.join(_CN_DIGITS)}{''.join(_CN_UNITS)}0-9]+")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]")
_NON_ASCII_LATIN = re.compile(r"[\u00c0-\u024f\u1e00-\u1eff]")


def script_language(text: str) -> Language | None:
    """The language an utterance is written in, among the two the bots speak: Mandarin (Han
    characters), English (ASCII Latin words); None for anything else (Vietnamese, with its
    diacritics, is not English) or too little text to tell."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    if cjk and cjk * 3 >= latin:
        return "zh"
    if latin >= 2:
        if len(_NON_ASCII_LATIN.findall(text)) * 10 > latin:
            return None
        return "en"
    return None


# --- Mandarin -------------------------------------------------------------------------------------


def _zh_positional(chars: str) -> int:
    """二十五 -> 25, 一百零五 -> 105, 一百五 (colloquial) -> 150, 一万二千 -> 12000."""
    total = section = 0
    num: int | None = None
    last_unit = 0
    colloquial = False  # the last digit came right after 百/千/万: 一百五 is 150
    after_unit = False
    for ch in chars:
        if ch in _CN_UNITS:
            unit = _CN_UNITS[ch]
            if unit == 10000:
                total = (total + section + (num or 0) or 1) * unit
                section = 0
            else:
                section += (1 if num is None else num) * unit
            num, last_unit, after_unit, colloquial = None, unit, True, False
        elif ch in "零〇":
            num, after_unit, colloquial = None, False, False
        else:
            num = int(_CN_DIGITS.get(ch, ch))
            colloquial, after_unit = after_unit and last_unit >= 100, False
    if num is not None and colloquial:
        num *= last_unit // 10
    return total + section + (num or 0)


def _zh_positional_end(run: str, start: int) -> int:
    """Where the positional number that starts at `start` ends: after a digit that no unit follows."""
    i = start
    while i < len(run):
        ch = run[i]
        if ch in _CN_UNITS or ch in "零〇":
            i += 1
            continue
        if i + 1 < len(run) and run[i + 1] in _CN_UNITS:
            i += 1
            continue
        return i + 1
    return i


def _zh_run(run: str, following: str) -> list[str]:
    """A run of numeral characters as pieces (digits, or the original words when it is not a number)."""
    first_unit = next((i for i, ch in enumerate(run) if ch in _CN_UNITS), None)
    if first_unit is None:
        if len(run) >= 3 or (len(run) >= 2 and any(c.isdigit() for c in run)):
            return ["".join(_CN_DIGITS.get(c, c) for c in run)]
        return [run]
    start = first_unit - 1 if first_unit > 0 and run[first_unit - 1] in _CN_DIGITS else first_unit
    prefix = run[:start]
    if prefix and len(prefix) < 3:
        return [run]  # 三四十个 ("thirty or forty"): words
    end = _zh_positional_end(run, start)
    chunk, rest = run[start:end], run[end:]
    pieces = [_zh_run(prefix, "")[0]] if prefix else []
    # A digit the multiplier of no unit ("十二" ends at 二): Mandarin digits only, no Arabic ones.
    if any(c.isdigit() for c in chunk):
        return [run]
    if len(chunk) >= 3 or rest or following.startswith(_ZH_COUNTED):
        pieces.append(str(_zh_positional(chunk)))
    else:
        pieces.append(chunk)
    if rest:
        pieces += _zh_run(rest, following)
    return pieces


def _join(pieces: list[str]) -> str:
    """Numbers side by side keep a space between them (123456 25), so they are never one number."""
    out = ""
    for piece in pieces:
        if out and out[-1].isdigit() and piece[:1].isdigit():
            out += " "
        out += piece
    return out


def normalize_zh(text: str, *, min_run: int = 3) -> str:
    """Mandarin numerals as Arabic digits: digit strings of min_run or more, and positional numbers."""

    def one(match: re.Match[str]) -> str:
        run = match.group()
        following = text[match.end() : match.end() + 2]
        if min_run < 3 and not any(c in _CN_UNITS for c in run):
            return "".join(_CN_DIGITS.get(c, c) for c in run)
        return _join(_zh_run(run, following))

    return _ZH_NUM_RUN.sub(one, text)


def spoken_digits(text: str) -> str:
    """A Mandarin transcript's numbers as digits (kept under its old name for the ASR bench)."""
    return normalize_zh(text)


# --- English --------------------------------------------------------------------------------------

_EN_WORD = re.compile(r"[A-Za-z]+|\d+")


def _en_numberish(word: str) -> bool:
    return (
        word in _EN_DIGITS
        or word in _EN_TEENS
        or word in _EN_TENS
        or word in _EN_SCALES
        or word in _EN_REPEAT
        or word.isdigit()
    )


def _en_group(words: list[str]) -> list[str]:
    """Consecutive number words as numbers: digit strings ("one double oh two" -> "1002"), compounds
    ("twenty five" -> "25", "one hundred and five" -> "105"); a compound after a digit string is a
    number of its own."""
    numbers: list[str] = []
    seq = ""  # digits read one by one
    comp: int | None = None  # a compound number being built
    comp_open = False  # the compound can still take a smaller part (after twenty, after hundred)

    def flush_seq() -> None:
        nonlocal seq
        if seq:
            numbers.append(seq)
            seq = ""

    def flush_comp() -> None:
        nonlocal comp, comp_open
        if comp is not None:
            numbers.append(str(comp))
            comp, comp_open = None, False

    i = 0
    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w in _EN_REPEAT and nxt in _EN_DIGITS:
            flush_comp()
            seq += _EN_DIGITS[nxt] * _EN_REPEAT[w]
            i += 2
            continue
        if w == "and":
            i += 1  # only inside a compound ("hundred and five"): the group allows no other
            continue
        if w.isdigit() and len(w) == 1:
            flush_comp()
            seq += w  # "1 0 0 2" as the ASR writes digits read one by one
        elif w.isdigit():
            flush_comp()
            flush_seq()
            numbers.append(w)
        elif w in _EN_DIGITS:
            d = int(_EN_DIGITS[w])
            if comp is not None and comp_open and d > 0 and nxt not in _EN_SCALES:
                comp += d
                comp_open = False
            elif nxt in _EN_SCALES:
                flush_seq()
                if comp is None or not comp_open:
                    flush_comp()
                    comp, comp_open = d, True
                else:
                    comp += d
            else:
                flush_comp()
                seq += _EN_DIGITS[w]
        elif w in _EN_TEENS or w in _EN_TENS:
            value = _EN_TEENS.get(w) or _EN_TENS[w]
            if comp is not None and comp_open and comp % 100 == 0:
                comp += value
            else:
                flush_comp()
                flush_seq()
                comp = value
            comp_open = w in _EN_TENS
        elif w in _EN_SCALES:
            scale = _EN_SCALES[w]
            if comp is None:
                comp = 1
            if scale == 1000:
                comp *= scale
            else:
                comp = comp - comp % 1000 + (comp % 1000) * scale
            comp_open = True
        i += 1
    flush_comp()
    flush_seq()
    return numbers


def normalize_en(text: str) -> str:
    """English number words (and any Mandarin numeral the ASR wrote among English words) as digits."""
    text = normalize_zh(text, min_run=1)
    tokens = list(_EN_WORD.finditer(text))
    out: list[str] = []
    pos = 0
    i = 0
    while i < len(tokens):
        m = tokens[i]
        word = m.group().lower()
        starts_digits = i + 1 < len(tokens) and tokens[i + 1].group().lower() in _EN_DIGITS
        if not _en_numberish(word) or word in _EN_SCALES or (word == "oh" and not starts_digits):
            i += 1
            continue
        # the group: number words separated only by spaces or hyphens ("and" only after a scale)
        j = i + 1
        while j < len(tokens):
            gap = text[tokens[j - 1].end() : tokens[j].start()]
            nxt = tokens[j].group().lower()
            prev = tokens[j - 1].group().lower()
            if not re.fullmatch(r"[\s-]*", gap):
                break
            if nxt == "and" and prev in _EN_SCALES and j + 1 < len(tokens):
                j += 1
                continue
            if not _en_numberish(nxt) or (nxt == "and"):
                break
            j += 1
        words = [t.group().lower() for t in tokens[i:j]]
        if j - i == 1 and word.isdigit():
            i = j
            continue
        if j - i == 1 and word == "one":
            before = tokens[i - 1].group().lower() if i > 0 else ""
            after = tokens[j].group() if j < len(tokens) else ""
            if before not in _ONE_AFTER and not (after[:1].isupper() and len(after) > 1):
                i = j
                continue
        out.append(text[pos : m.start()])
        out.append(" ".join(_en_group(words)))
        pos = tokens[j - 1].end()
        i = j
    out.append(text[pos:])
    return "".join(out)


def normalize(text: str, language: Language | None = None) -> str:
    """Numbers as digits, in the utterance's own language (its script; `language` when it has none)."""
    lang = script_language(text) or language
    if lang == "zh":
        return normalize_zh(text)
    if lang == "en":
        return normalize_en(text)
    return text


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


def say_digits(digits: str, language: Language) -> str:
    """A number read back digit by digit whatever its length (幺二三四五 / 1 2 3 4 5)."""
    if language == "zh":
        return "".join(_SAY_ZH.get(d, d) for d in digits)
    return " ".join(digits)


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


def _joins(before: str, after: str) -> bool:
    """Whether two groups of digits with a space between are one number: digits read one by one
    ("1 0 0 2"), or a number read in short groups ("100 234", "138 0013 8000"); not a whole number
    and the next one ("123456 25", "1 2 3 4 5 6 25")."""
    if len(before) == 1 and len(after) == 1:
        return True
    return 2 <= len(before) <= 4 and 2 <= len(after) <= 4


def digit_runs(text: str, language: Language | None = None) -> list[str]:
    """Separate numbers the caller said ("order 100234, to 88 Nanjing Road" -> 100234, 88), number
    words read in the utterance's language first."""
    runs: list[str] = []
    current = ""
    last_group = ""
    gap = ""
    for token in re.findall(r"\d+|[\s\-‐]+|[^\d\s\-‐]+", normalize(text, language)):
        if token.isdigit():
            if current and (
                (gap.strip(" ") == "" and _joins(last_group, token)) or gap.strip() in ("-", "‐")
            ):
                current += token
            else:
                if current:
                    runs.append(current)
                current = token
            last_group, gap = token, ""
        elif not token.strip() or token.strip() in ("-", "‐"):
            gap += token
        else:
            if current:
                runs.append(current)
            current, last_group, gap = "", "", ""
    if current:
        runs.append(current)
    return runs


def id_candidates(text: str, pattern: str, language: Language | None = None) -> list[str]:
    """Numbers of an identifier's form (`pattern`) the caller said: the separate numbers that fit;
    else digit groups the ASR split at odd places ("842 1", "8 421" for a card's 8421) joined, where
    only the join fits. A number that fits on its own is never joined to the next ("123456 25")."""
    fits = [r for r in digit_runs(text, language) if re.fullmatch(pattern, r)]
    if fits:
        return fits
    found: list[str] = []
    for seq in _spaced_groups(text, language):
        for i in range(len(seq)):
            for j in range(i + 2, len(seq) + 1):
                joined = "".join(seq[i:j])
                if re.fullmatch(pattern, joined) and joined not in found:
                    found.append(joined)
    return found


def _spaced_groups(text: str, language: Language | None) -> list[list[str]]:
    """Digit groups separated by nothing but spaces or hyphens, as lists."""
    seqs: list[list[str]] = [[]]
    for token in re.findall(r"\d+|[\s\-‐]+|[^\d\s\-‐]+", normalize(text, language)):
        if token.isdigit():
            seqs[-1].append(token)
        elif token.strip() and token.strip() not in ("-", "‐") and seqs[-1]:
            seqs.append([])
    return [s for s in seqs if len(s) > 1]


def names_an_id(text: str) -> bool:
    """The caller said an order or phone number, in any form digit_runs reads."""
    return any(len(run) >= ID_DIGITS for run in digit_runs(text))


class DigitNormalizer(FrameProcessor):
    """Transcripts with their numbers as digits, in the utterance's own language."""

    name = "digits"

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, TranscriptionFrame):
            lang = frame.language if frame.language in ("en", "zh") else None
            frame = replace(frame, text=normalize(frame.text, lang))  # type: ignore[arg-type]
        await self.push(frame, direction)
