"""Walk a flow without a phone: a FlowIO that plays a script of caller inputs and records the call.

Inputs are consumed in order by each node that waits for the caller, the bot or the queue:

    1  #  123456#             keys (a collect's terminator ends the digits and is not kept)
    say:退货                   the caller speaks
    timeout                   the caller says nothing
    bot:transfer[:intent]     the bot transfers (intent e.g. create_return)
    bot:end  bot:hangup       the bot ends the conversation / the caller hangs up during it
    bot:busy                  every bot place is taken (max_bot_calls): on to the node's transfer
    queue:served|callback|no_agents|timeout|failed|hangup
    lookup:{"tier": "vip"}    the next lookup's result (lookup:fail: the lookup fails)
    hangup                    the caller hangs up (at whatever consumes it)

With no input left, the caller is silent (timeout), a bot ends the conversation and a queue serves
the call. A lookup with no lookup: input next returns {"tier": "standard", "name": "Test Caller"}.
An input of the wrong kind for the node that takes it (bot:end where a menu asks) ends the run with
an error that names both, so a script that drifts from the flow is noticed.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from aicc.appliance.ivr.calendar import Calendar
from aicc.appliance.ivr.flow import Flow
from aicc.appliance.ivr.runner import (
    BotRequest,
    BotResult,
    CallerHungUp,
    FlowResult,
    QueueOutcome,
    QueueRequest,
    QueueResult,
    Reply,
    run_flow,
)

DEFAULT_LOOKUP: dict[str, Any] = {"tier": "standard", "name": "Test Caller"}
_KEYS = re.compile(r"^[0-9*#]{1,40}$")
_OUTCOMES: dict[str, QueueOutcome] = {name: name for name in get_args(QueueOutcome)}
_BOT = re.compile(r"^bot:(end|hangup|busy|transfer(:[A-Za-z0-9_.-]{1,64})?)$")
InputKind = Literal["caller", "bot", "queue", "lookup", "hangup"]
_FOR = {
    "caller": "a node that asks the caller (keys, say:..., timeout)",
    "bot": "a bot node (bot:transfer[:intent], bot:end, bot:hangup, bot:busy)",
    "queue": "a queue node (queue:served|callback|no_agents|timeout|failed|hangup)",
    "lookup": "a lookup node (lookup:{json} or lookup:fail)",
}


class ScriptError(ValueError):
    """An input that is not one of the forms above, or of the wrong kind for the node taking it."""


def input_kind(item: str) -> InputKind:
    """The kind of node an input is for; ScriptError (naming the accepted forms) when it is none."""
    if item == "hangup":
        return "hangup"
    if _KEYS.match(item) or item == "timeout" or (item.startswith("say:") and item[4:].strip()):
        return "caller"
    if _BOT.match(item):
        return "bot"
    if item.startswith("queue:") and item[6:] in _OUTCOMES:
        return "queue"
    if item == "lookup:fail":
        return "lookup"
    if item.startswith("lookup:"):
        try:
            result = json.loads(item[7:])
        except json.JSONDecodeError as exc:
            raise ScriptError(f"{item!r}: lookup: needs a JSON object: {exc}") from None
        if not isinstance(result, dict):
            raise ScriptError(f'{item!r}: lookup: needs a JSON object, e.g. lookup:{{"tier": "vip"}}')
        return "lookup"
    forms = "keys (1, #, 123456#), say:TEXT, timeout, bot:..., queue:..., lookup:{json}, hangup"
    raise ScriptError(f"{item!r} is not an input; the forms are: {forms}")


def split_inputs(text: str) -> list[str]:
    """'1,say:退货,lookup:{"a": 1, "b": 2}' -> inputs; commas inside {...} belong to the JSON."""
    items, current, depth = [], "", 0
    for char in text:
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        current += char
    items.append(current.strip())
    return [item for item in items if item]


@dataclass
class ScriptedIO:
    """A FlowIO from a script. It records what the flow did, for the simulator's output and tests."""

    inputs: list[str]
    at: datetime
    caller: str
    said: list[tuple[str, str]] = field(default_factory=list)  # (text, language)
    bot_requests: list[BotRequest] = field(default_factory=list)
    queue_requests: list[QueueRequest] = field(default_factory=list)
    callbacks: list[tuple[str, str]] = field(default_factory=list)  # (queue, number)
    scores: list[int] = field(default_factory=list)
    hung_up: bool = False
    script_error: ScriptError | None = None  # the input that did not fit the node that took it
    _left: deque[tuple[int, str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for number, item in enumerate(self.inputs, 1):
            try:
                input_kind(item)
            except ScriptError as exc:
                raise ScriptError(f"input {number}: {exc}") from None
        self._left = deque(enumerate(self.inputs, 1))

    @property
    def unused(self) -> list[str]:
        return [item for _, item in self._left]

    def _take(self, kind: InputKind) -> str | None:
        if not self._left:
            return None
        number, item = self._left[0]
        found = input_kind(item)
        if found not in (kind, "hangup"):
            self.script_error = ScriptError(
                f"input {number} {item!r} is for {_FOR[found]}, but this is {_FOR[kind]}"
            )
            raise self.script_error
        self._left.popleft()
        if found == "hangup":
            raise CallerHungUp
        return item

    async def say(self, text: str, language: str) -> None:
        self.said.append((text, language))

    async def ask(
        self,
        prompt: str | None,
        language: str,
        *,
        max_digits: int,
        terminator: str | None,
        timeout_s: float,
        words: dict[str, list[str]] | None = None,
    ) -> Reply:
        if prompt:
            self.said.append((prompt, language))
        item = self._take("caller")
        if item is None or item == "timeout":
            return Reply("none")
        if item.startswith("say:"):
            return Reply("speech", item[4:].strip())
        # A terminator ends the entry and is not part of it; keys past max_digits are not read.
        keys = item.split(terminator, 1)[0] if terminator and item != terminator else item
        return Reply("dtmf", "" if item == terminator else keys[:max_digits])

    async def bot(self, request: BotRequest) -> BotResult:
        self.bot_requests.append(request)
        item = self._take("bot")
        if item is None or item == "bot:end":
            return BotResult("end", reason="the caller's request was handled")
        if item == "bot:hangup":
            return BotResult("hangup", reason="the caller hung up")
        if item == "bot:busy":
            return BotResult("busy", reason="bots_busy", summary="(simulated) every bot was busy")
        intent = item.split(":", 2)[2] if item.count(":") == 2 else ""
        summary = f"(simulated) the caller asked for {intent or 'an agent'}"
        return BotResult("transfer", reason="requested", intent=intent, summary=summary)

    async def queue(self, request: QueueRequest) -> QueueResult:
        self.queue_requests.append(request)
        item = self._take("queue")
        outcome = "served" if item is None else _OUTCOMES[item[6:]]
        return QueueResult(outcome, "simulated agent" if outcome == "served" else "")

    async def callback(self, queue: str, language: str, variables: dict[str, str]) -> bool:
        self.callbacks.append((queue, variables.get("caller", self.caller)))
        return True

    async def lookup(self, tool: str, args: dict[str, str]) -> dict[str, Any]:
        if not self._left or input_kind(self._left[0][1]) != "lookup":
            return dict(DEFAULT_LOOKUP)
        item = self._left.popleft()[1]
        if item == "lookup:fail":
            raise LookupError(f"{tool}: simulated failure")
        result: dict[str, Any] = json.loads(item[7:])
        return result

    async def survey(self, score: int) -> None:
        self.scores.append(score)

    async def hangup(self) -> None:
        self.hung_up = True

    def now(self) -> datetime:
        return self.at


async def simulate(
    flow: Flow,
    inputs: list[str],
    *,
    at: datetime,
    caller: str,
    calendars: Mapping[str, Calendar],
    language: str | None = None,
    number: str = "",
    max_steps: int = 200,
) -> tuple[FlowResult, ScriptedIO]:
    """Run `flow` on a script; ScriptError (before anything runs) for an input of no known form."""
    io = ScriptedIO(inputs, at, caller)
    variables = {"caller": caller, "number": number, "language": language or flow.language}
    result = await run_flow(flow, io, variables=variables, calendars=calendars, max_steps=max_steps)
    return result, io
