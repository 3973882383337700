"""Shared yardsticks for tests and the bench: word/character error rate and the sample order tools."""

from __future__ import annotations

import re

from aicc.models.engines.base import ToolSpec

ORDER_ID = {"type": "string", "pattern": "^[0-9]{5,10}$", "description": "the order number, digits only"}

# Two tools of a contact center: one read, one write. Kept byte-identical between requests so the
# LLM server's prefix cache holds the system prompt built from them.
SAMPLE_TOOLS = (
    ToolSpec(
        "get_order_status",
        "Look up the status of an order by its number.",
        {
            "type": "object",
            "properties": {"order_id": ORDER_ID},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        "change_delivery_address",
        "Change the delivery address of an order.",
        {
            "type": "object",
            "properties": {
                "order_id": ORDER_ID,
                "new_address": {
                    "type": "string",
                    "minLength": 6,
                    "maxLength": 200,
                    "description": "the full new address as the customer said it",
                },
            },
            "required": ["order_id", "new_address"],
            "additionalProperties": False,
        },
        write=True,
    ),
)


def _edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[:], i
        for j, h in enumerate(hyp, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (r != h))
    return row[len(hyp)]


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def _chars(text: str) -> list[str]:
    return list(re.sub(r"[^\w]", "", text))


def wer(ref: str, hyp: str) -> float:
    """Word error rate (English): edits / reference words, punctuation and case ignored."""
    return _edit_distance(_words(ref), _words(hyp)) / max(1, len(_words(ref)))


def cer(ref: str, hyp: str) -> float:
    """Character error rate (Mandarin): edits / reference characters, punctuation ignored."""
    return _edit_distance(_chars(ref), _chars(hyp)) / max(1, len(_chars(ref)))
