"""The in-memory record of one call, filled while the call runs and stored when it ends."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Outcome = Literal["resolved", "transferred", "abandoned", "failed", "rejected", "callback"]
Speaker = Literal["caller", "bot"]


@dataclass
class Line:
    speaker: Speaker
    text: str
    at_s: float  # seconds from the start of the call
    duration_s: float = 0.0
    language: str = ""
    confidence: float | None = None


@dataclass
class ToolCallRecord:
    tool: str
    arguments: dict[str, Any]
    ok: bool
    result: dict[str, Any]
    error: str
    seconds: float
    at_s: float
    confirmed: bool | None = None  # write actions: did the caller confirm


@dataclass
class CallRecord:
    call_id: str
    caller: str = ""
    service: str = ""
    language: str = ""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: Outcome = "abandoned"
    end_reason: str = ""
    transfer_target: str = ""
    setup_s: float | None = None
    gateway: str = ""  # the gateway holding the call (it closes its calls left open after a crash)
    flow: str = ""
    bot: str = ""
    queue: str = ""
    contact_id: str | None = None  # the ACD contact, once queued
    agent: str = ""  # extension of the agent who answered
    summary: str = ""  # the bot's one line for the agent
    lines: list[Line] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    turns: list[dict[str, float]] = field(default_factory=list)
    barge_ins: int = 0
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def add_line(
        self,
        speaker: Speaker,
        text: str,
        *,
        language: str = "",
        duration_s: float = 0.0,
        confidence: float | None = None,
    ) -> None:
        self.lines.append(Line(speaker, text, round(self.elapsed(), 3), duration_s, language, confidence))

    def add_tool_call(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        ok: bool,
        result: dict[str, Any],
        error: str = "",
        seconds: float = 0.0,
        confirmed: bool | None = None,
    ) -> None:
        self.tool_calls.append(
            ToolCallRecord(
                tool, arguments, ok, result, error, round(seconds, 4), round(self.elapsed(), 3), confirmed
            )
        )

    def transcript_text(self) -> str:
        return "\n".join(f"[{ln.at_s:7.2f}] {ln.speaker}: {ln.text}" for ln in self.lines)
