"""Personal numbers in free text (transcripts, chat messages, summaries), masked for roles that need
not see them (PIPL minimisation; MLPS 8.1.4.11). `Principal`s with numbers.full read the text as it is.

What counts as a personal number, in ASCII or full-width digits or spoken Chinese numerals (一三八…,
幺 for 1), with spaces or hyphens between groups:
- a mainland mobile number: 11 digits 1[3-9]…, also after 86 / +86 / 0086;
- a landline with its area code: 0 + 9 to 11 more digits (010-12345678, 0755 8888 6666);
- any number written with + and 8 to 15 digits (E.164);
- a resident ID number: 17 digits and a check digit or X that fits GB 11643-1999, or 15 digits
  (the old form) whose 7th-12th digits are a date;
- a bank card number: 16 to 19 digits that pass the Luhn check.
Order numbers, amounts, card endings (4 digits), dates and times are none of these and stay. A masked
number keeps its first 3 and last 4 digits (ID and card numbers their last 4 only, as banks print
them); separators and the writing (digits or numerals) stay where they were.
"""

from __future__ import annotations

import re
from typing import Any

from aicc.appliance.api.deps import Principal

_NUMERALS = "零〇一二两三四五六七八九幺"
_NUMERAL_VALUE = dict(zip(_NUMERALS, "0012234567891", strict=True))
_DIGIT_CHARS = f"0-9\uff10-\uff19{_NUMERALS}"
# A run of digits with single spaces or hyphens between groups, the check character of an ID at its
# end (X or x), and a leading + when there is one.
_RUN = re.compile(
    rf"(?<![0-9A-Za-z\uff10-\uff19{_NUMERALS}])"
    rf"\+?[{_DIGIT_CHARS}](?:[ \-\u2010-\u2013]?[{_DIGIT_CHARS}])*[Xx]?"
    rf"(?![0-9A-Za-z\uff10-\uff19])"
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def _digit(char: str) -> str:
    if "\uff10" <= char <= "\uff19":
        return chr(ord(char) - 0xFF10 + ord("0"))
    return _NUMERAL_VALUE.get(char, char)


def _luhn(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_id(digits: str) -> bool:
    if len(digits) == 18:
        if not digits[:17].isdigit():
            return False
        check = sum(int(d) * w for d, w in zip(digits, _ID_WEIGHTS, strict=False)) % 11
        return digits[17].upper() == _ID_CHECK[check]
    if len(digits) == 15 and digits.isdigit():
        month, day = int(digits[8:10]), int(digits[10:12])
        return 1 <= month <= 12 and 1 <= day <= 31
    return False


def _kept(digits: str, plus: bool) -> tuple[int, int] | None:
    """How many leading and trailing digits of a personal number stay; None: not a personal number."""
    n = len(digits)
    bare = digits.removeprefix("0086").removeprefix("86") if n > 11 else digits
    if _is_id(digits):
        return 0, 4
    if not digits.isdigit():
        return None
    if len(bare) == 11 and bare[0] == "1" and bare[1] in "3456789":
        return n - 8, 4  # the country code stays with the first 3 digits of the number
    if plus and 8 <= n <= 15:
        return 3, 4
    if digits[0] == "0" and 10 <= n <= 12:
        return 3, 4
    if 16 <= n <= 19 and _luhn(digits):
        return 0, 4
    return None


_SEPARATORS = re.compile(r"([ \-\u2010-\u2013])")


def _mask_run(match: re.Match[str]) -> str:
    return _masked(match.group(0))


def _masked(run: str) -> str:
    positions = [i for i, c in enumerate(run) if c not in " -\u2010\u2011\u2012\u2013+"]
    digits = "".join(_digit(run[i]) for i in positions).upper()
    kept = _kept(digits, run.startswith("+"))
    if kept is None:
        # "order 100234 13800138000": not one number, but one of its groups may be.
        parts = _SEPARATORS.split(run)
        return (
            run
            if len(parts) == 1
            else "".join(_masked(p) if p.strip(" -\u2010\u2011\u2012\u2013") else p for p in parts)
        )
    head, tail = kept
    hidden = set(positions[head : len(positions) - tail])
    return "".join("*" if i in hidden else c for i, c in enumerate(run))


def redact_numbers(text: str) -> str:
    """`text` with every personal number in it masked (see the module's docstring)."""
    return _RUN.sub(_mask_run, text)


def redact_for(text: str, principal: Principal) -> str:
    """`text` as `principal` may read it: whole with numbers.full, else with personal numbers masked."""
    return text if principal.can("numbers.full") else redact_numbers(text)


def redact_json(value: Any, principal: Principal) -> Any:
    """The strings inside a JSON value (a tool call's arguments or result) as `principal` may read them."""
    if principal.can("numbers.full"):
        return value
    if isinstance(value, str):
        return redact_numbers(value)
    if isinstance(value, dict):
        return {k: redact_json(v, principal) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v, principal) for v in value]
    return value
