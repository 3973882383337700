"""Phone numbers as callers present them (a SIP From URI, a dialled string) in one form, E.164, so a
backend can find the customer whose number is calling; and the customer lookup tool built on it."""

from __future__ import annotations

import re
from typing import Any

from aicc.models.engines.base import Language, ToolSpec

_URI_USER = re.compile(r"(?:sips?|tel):([^@;>]+)", re.IGNORECASE)
_SEPARATORS = re.compile(r"[\s\-().]")


def e164(caller: str, country: str = "86") -> str:
    """+8613800138000 for "sip:13800138000@host", "<sip:+86 138-0013-8000@h>;tag=x", "008613800138000"
    or "13800138000"; "" when there is no phone number in it (an extension such as 1001, a name).

    Numbers without a country code are taken as mainland China's (`country`): an 11-digit mobile
    number, or an area code with its trunk 0 (021...)."""
    match = _URI_USER.search(caller)
    user = _SEPARATORS.sub("", match.group(1) if match else caller)
    if user.startswith("+"):
        digits = user[1:]
    elif user.startswith("00"):
        digits = user[2:]
    elif re.fullmatch(r"1\d{10}", user):
        digits = country + user
    elif re.fullmatch(r"0[1-9]\d{8,10}", user):
        digits = country + user[1:]
    elif user.startswith(country) and len(user) == len(country) + 11:
        digits = user
    else:
        return ""
    return f"+{digits}" if re.fullmatch(r"[1-9]\d{7,14}", digits) else ""


# The IVR's lookup node (caller -> name, value tier, language); no bot offers it to its planner.
LOOKUP_CUSTOMER = ToolSpec(
    "lookup_customer",
    "the customer calling from a phone number: name, value tier (standard, gold, vip) and language",
    {
        "type": "object",
        "properties": {
            "phone": {
                "type": "string",
                "minLength": 3,
                "maxLength": 200,
                "description": "the caller's number or SIP URI",
            }
        },
        "required": ["phone"],
        "additionalProperties": False,
    },
)


def customer_line(result: dict[str, Any], language: Language) -> str:
    """What a lookup found, as one line (for logs and the IVR simulator; no caller hears it)."""
    if language == "zh":
        return f"来电客户：{result['name']}，等级{result['tier']}。"
    return f"The caller is {result['name']}, tier {result['tier']}."
