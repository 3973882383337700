"""Personal numbers in free text (appliance/api/redact.py): every written form of a mobile, landline,
E.164, resident ID and bank card number is masked, generated rather than listed; the numbers a
conversation needs (order numbers, card endings, amounts, dates, times) stay."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from aicc.appliance.api.deps import Principal
from aicc.appliance.api.redact import redact_for, redact_json, redact_numbers

NUMERALS = "零一二三四五六七八九"
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
AGENT = Principal(1, "a", "agent", 0)
ADMIN = Principal(2, "b", "admin", 0)


def id_number(body: str) -> str:
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, WEIGHTS, strict=True)) % 11]


def luhn_complete(body: str) -> str:
    for last in "0123456789":
        digits = body + last
        total = sum(
            (d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 else d
            for i, d in enumerate(int(c) for c in reversed(digits))
        )
        if total % 10 == 0:
            return digits
    raise AssertionError


def grouped(digits: str, sizes: list[int], sep: str) -> str:
    out, i = [], 0
    for size in sizes:
        out.append(digits[i : i + size])
        i += size
    out.append(digits[i:])
    return sep.join(p for p in out if p)


def hidden_digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit() or c in NUMERALS or c in "Xx")


mobiles = st.builds(
    lambda second, rest: "1" + second + rest,
    st.sampled_from("3456789"),
    st.text("0123456789", min_size=9, max_size=9),
)


@settings(max_examples=200)
@given(
    number=mobiles,
    form=st.sampled_from(["plain", "spaced", "dashed", "plus86", "spoken", "fullwidth"]),
    before=st.sampled_from(["我的手机是", "call me on ", "号码：", "", "Tel "]),
    after=st.sampled_from(["，谢谢", " thanks", "。", ""]),
)
def test_a_mobile_number_is_masked_in_every_written_form(
    number: str, form: str, before: str, after: str
) -> None:
    written = {
        "plain": number,
        "spaced": grouped(number, [3, 4], " "),
        "dashed": grouped(number, [3, 4], "-"),
        "plus86": "+86 " + number,
        "spoken": "".join(NUMERALS[int(d)] for d in number),
        "fullwidth": "".join(chr(ord(d) - ord("0") + 0xFF10) for d in number),
    }[form]
    out = redact_numbers(before + written + after)
    assert out.startswith(before) and out.endswith(after)
    middle = out[len(before) : len(out) - len(after)]
    assert middle.count("*") == 4, (written, middle)
    # the first 3 and last 4 digits stay, in the writing the caller used
    kept = [c for c in middle if c not in " -+*"]
    assert len(kept) == (9 if form == "plus86" else 7)


@settings(max_examples=200)
@given(
    region=st.sampled_from(["110105", "310104", "440300", "510107"]),
    year=st.integers(1930, 2010),
    month=st.integers(1, 12),
    day=st.integers(1, 28),
    seq=st.text("0123456789", min_size=3, max_size=3),
)
def test_a_resident_id_is_masked_but_its_last_four_and_a_wrong_checksum_stay(
    region: str, year: int, month: int, day: int, seq: str
) -> None:
    body = f"{region}{year}{month:02}{day:02}{seq}"
    good = id_number(body)
    out = redact_numbers(f"身份证号{good}。")
    assert out == "身份证号" + "*" * 14 + good[-4:] + "。"
    # 18 digits that are no ID (and no card: not Luhn-valid) are an order number of some shop
    wrong = next(body + c for c in "0123456789" if body + c not in (good, luhn_complete(body)))
    assert redact_numbers(wrong) == wrong


@settings(max_examples=100)
@given(body=st.text("0123456789", min_size=14, max_size=17).map(lambda s: "6" + s))
def test_a_bank_card_number_keeps_its_last_four(body: str) -> None:
    card = luhn_complete(body)
    out = redact_numbers(f"卡号 {grouped(card, [4, 4, 4], ' ')} 谢谢")
    assert hidden_digits(out) == card[-4:]


def test_numbers_a_conversation_needs_stay() -> None:
    for text in (
        "订单100234已发货，金额1299.00元",
        "尾号1234的卡",
        "2026-12-04 10:30 到 18:00",
        "order 100234 and 100236",
        "我买了三个，一百二十块",
        "Ticket T-000123, queue 4000, extension 1001",
        "一二三四五六",  # a spoken order number
        "1380013800",  # ten digits: not a mobile number
    ):
        assert redact_numbers(text) == text


def test_groups_of_a_longer_run_are_judged_one_by_one() -> None:
    assert redact_numbers("order 100234 13800138000") == "order 100234 138****8000"
    assert redact_numbers("座机 010-12345678 转 8021") == "座机 010-****5678 转 8021"
    assert redact_numbers("+4915112345678") == "+491******5678"


def test_roles_with_numbers_full_read_the_text_as_it_is() -> None:
    text = "回拨 13800138000"
    assert redact_for(text, ADMIN) == text
    assert redact_for(text, AGENT) == "回拨 138****8000"
    args = {
        "new_address": "上海路8号，电话13800138000",
        "order_id": "100234",
        "n": 3,
        "tags": ["13900139000"],
    }
    assert redact_json(args, AGENT) == {
        "new_address": "上海路8号，电话138****8000",
        "order_id": "100234",
        "n": 3,
        "tags": ["139****9000"],
    }
    assert redact_json(args, ADMIN) is args


def test_no_digit_of_a_masked_number_leaks_through_its_neighbours() -> None:
    out = redact_numbers("A13800138000B")  # glued to letters: an identifier, not a number
    assert out == "A13800138000B"
    out = redact_numbers("电话13800138000和13900139000")
    assert re.findall(r"\d{3}\*{4}\d{4}", out) == ["138****8000", "139****9000"]
