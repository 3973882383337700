"""The flow interpreter: walks a checked Flow node by node, talking to the call through a FlowIO.

The same runner drives a real call (the voice gateway's FlowIO), the simulator (simulate.ScriptedIO)
and tests. Each node visit is one Step of the path (node, type, what was said, heard and decided).

Replies and speech: the IO reports what it heard and decides nothing. Keys come back as kind "dtmf"
(the terminator removed), a transcript as kind "speech", silence as kind "none". The runner matches
a transcript against a menu's words itself (a word or phrase found in the transcript; the longest
match wins; a transcript that is only a digit, "two" or "二", picks that key), and reads the digits
of collect and survey answers from speech. `words` are passed to the IO only to help it hear them
(ASR hot words). One rule for every IO, and testable without audio.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from aicc.appliance.ivr.calendar import Calendar
from aicc.appliance.ivr.flow import (
    BotNode,
    BotTransfer,
    CallbackNode,
    CollectNode,
    Flow,
    HangupNode,
    HoursNode,
    LookupNode,
    MenuNode,
    MenuOption,
    PlayNode,
    QueueNode,
    QueueRef,
    SetNode,
    SurveyNode,
    Text,
    render,
    text_in,
)
from aicc.appliance.voice.numbers import digits_in


class CallerHungUp(Exception):
    """Raised by a FlowIO, from any await, when the caller hangs up."""


class FlowError(Exception):
    """The flow cannot go on (e.g. a variable set a language the flow has no texts for)."""


@dataclass(frozen=True)
class Reply:
    kind: Literal["dtmf", "speech", "none"]
    value: str = ""


@dataclass(frozen=True)
class BotRequest:
    bot: str
    language: str
    variables: dict[str, str]
    overflow: bool = False  # the node has a transfer: the host may send the call there when bots are busy


@dataclass(frozen=True)
class BotResult:
    outcome: Literal["transfer", "end", "hangup", "busy"]  # busy: every bot place was taken
    reason: str = ""
    intent: str = ""
    summary: str = ""
    language: str = ""  # the caller's language at the end of the bot's talk; "" = unchanged


QueueOutcome = Literal["served", "callback", "no_agents", "timeout", "failed", "hangup"]


@dataclass(frozen=True)
class QueueRequest:
    queue: str
    priority: int
    tier: str | None  # None: the routing policy's default tier
    skills: dict[str, int]
    language: str
    variables: dict[str, str]
    summary: str
    intent: str


@dataclass(frozen=True)
class QueueResult:
    outcome: QueueOutcome
    detail: str = ""  # for the path, e.g. which agent served


class FlowIO(Protocol):
    """The call as the runner sees it. Every await may raise CallerHungUp."""

    async def say(self, text: str, language: str) -> None: ...

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
        """Say `prompt` (keys and speech may interrupt it) and return what the caller answered."""
        ...

    async def bot(self, request: BotRequest) -> BotResult: ...

    async def queue(self, request: QueueRequest) -> QueueResult: ...

    async def callback(self, queue: str, language: str, variables: dict[str, str]) -> bool:
        """Register a callback to the caller's number; False when it could not be registered."""
        ...

    async def lookup(self, tool: str, args: dict[str, str]) -> dict[str, Any]:
        """A connector tool's result; raises when the lookup fails."""
        ...

    async def survey(self, score: int) -> None: ...

    async def hangup(self) -> None: ...

    def now(self) -> datetime: ...


@dataclass(frozen=True)
class Step:
    node: str
    type: str
    detail: str


@dataclass
class FlowResult:
    outcome: str  # hangup_by_flow | caller_hung_up | loop_limit | "error: ..."
    path: list[Step]
    variables: dict[str, str] = field(default_factory=dict)


# A callback offer is taken with key 1 or a yes word; a refusal word wins ("不需要" holds "需要").
YES_WORDS = {
    "en": ["yes", "yeah", "sure", "please", "okay", "ok", "call me back"],
    "zh": ["好", "是", "可以", "需要", "要", "行", "回电", "回拨"],
}
NO_WORDS = {"en": ["no", "not", "don't", "nope"], "zh": ["不", "别", "没"]}
_CJK = re.compile(r"[\u3400-\u9fff]")


def _found(word: str, transcript: str) -> bool:
    word = " ".join(word.casefold().split())
    if _CJK.search(word):  # Chinese has no spaces: a substring, spaces ignored
        return word.replace(" ", "") in transcript.casefold().replace(" ", "")
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", " ".join(transcript.casefold().split())) is not None


def match_words(transcript: str, words: Mapping[str, list[str]]) -> str | None:
    """The option whose word or phrase the transcript contains; the longest such word wins."""
    best: tuple[int, str] | None = None
    for key, options in words.items():
        for word in options:
            if _found(word, transcript) and (best is None or len(word) > best[0]):
                best = (len(word), key)
    return best[1] if best else None


_SPOKEN_KEY = re.compile(r"^(?:press|option|number|按|选)?\s*([a-z]+|\S)\W*$")


def spoken_key(transcript: str) -> str | None:
    """The key of a transcript that is only a digit ("2", "two", "press two", "二", "按二")."""
    match = _SPOKEN_KEY.match(transcript.casefold().strip())
    digits = digits_in(match.group(1)) if match else ""
    return digits if len(digits) == 1 else None


def _heard(reply: Reply) -> str:
    if reply.kind == "none":
        return "no input"
    return f"keys {reply.value or '(none)'}" if reply.kind == "dtmf" else f"speech {reply.value!r}"


def _digits(reply: Reply) -> str:
    """Keys pressed, or the digits a caller said ("一二三", "one two three", "1 2 3")."""
    if reply.kind == "dtmf":
        return reply.value
    return digits_in(reply.value) if reply.kind == "speech" else ""


def _quote(text: str, limit: int = 70) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


class _Call:
    def __init__(
        self, flow: Flow, io: FlowIO, variables: dict[str, str], calendars: Mapping[str, Calendar]
    ) -> None:
        self.flow = flow
        self.io = io
        self.vars = variables
        self.calendars = calendars
        self.notes: list[str] = []

    @property
    def lang(self) -> str:
        return self.vars["language"]

    def text(self, text: Text) -> str:
        return render(text_in(text, self.lang, self.flow.language), self.vars)

    async def say(self, text: Text | None) -> None:
        if text is not None:
            said = self.text(text)
            self.notes.append(f"said {_quote(said)}")
            await self.io.say(said, self.lang)

    def assign(self, var: str, value: str) -> None:
        if var == "language" and value not in self.flow.languages:
            raise FlowError(
                f"language {value!r} is not one of the flow's languages ({', '.join(self.flow.languages)})"
            )
        self.vars[var] = value
        self.notes.append(f"{var}={value}")

    def queue_name(self, ref: QueueRef) -> str:
        if isinstance(ref, str):
            return ref
        by_language = {str(lang): name for lang, name in ref.items()}
        return (
            by_language.get(self.lang)
            or by_language.get(self.flow.language)
            or next(iter(by_language.values()))
        )

    async def ask(self, prompt: Text, attempt: int, retry_say: Text | None, **kwargs: Any) -> Reply:
        if attempt > 0 and retry_say is not None:
            await self.say(retry_say)
        said = self.text(prompt)
        self.notes.append(f"asked {_quote(said)}")
        reply = await self.io.ask(said, self.lang, **kwargs)
        self.notes.append(f"heard {_heard(reply)}")
        return reply

    async def run(self, node: Any) -> str | None:
        """Run one node (by its type's handler, `_<type>`) and return the next node, None to hang up."""
        handler = getattr(self, f"_{node.type}")
        result: str | None = await handler(node)
        return result

    async def _play(self, node: PlayNode) -> str | None:
        await self.say(node.say)
        return node.next

    def _choice(
        self, reply: Reply, options: dict[str, MenuOption], words: dict[str, list[str]]
    ) -> str | None:
        if reply.kind == "dtmf":
            return reply.value if reply.value in options else None
        if reply.kind == "speech":
            key = match_words(reply.value, words) or spoken_key(reply.value)
            return key if key in options else None
        return None

    async def _menu(self, node: MenuNode) -> str | None:
        words: dict[str, list[str]] = {}
        for key, option in node.options.items():
            said = next((w for lang, w in option.words.items() if lang == self.lang), [])
            if said:
                words[key] = said
        failure = "no_input"
        for attempt in range(node.retries + 1):
            reply = await self.ask(
                node.say,
                attempt,
                node.retry_say,
                max_digits=1,
                terminator=None,
                timeout_s=node.timeout_s,
                words=words or None,
            )
            chosen = self._choice(reply, node.options, words)
            if chosen is not None:
                self.notes.append(f"option {chosen}")
                for var, template in node.options[chosen].set.items():
                    self.assign(var, render(template, self.vars))
                return node.options[chosen].next
            failure = "no_input" if reply.kind == "none" else "no_match"
            self.notes.append(f"{failure} ({attempt + 1}/{node.retries + 1})")
        return node.no_input if failure == "no_input" else node.no_match

    async def _collect(self, node: CollectNode) -> str | None:
        for attempt in range(node.retries + 1):
            reply = await self.ask(
                node.say,
                attempt,
                node.retry_say,
                max_digits=node.max_digits,
                terminator=node.terminator,
                timeout_s=node.timeout_s,
            )
            digits = _digits(reply)
            if digits.isdigit() and node.min_digits <= len(digits) <= node.max_digits:
                self.assign(node.var, digits)
                return node.next
            wanted = (
                f"{node.min_digits}"
                if node.min_digits == node.max_digits
                else f"{node.min_digits}-{node.max_digits}"
            )
            self.notes.append(f"not {wanted} digits ({attempt + 1}/{node.retries + 1})")
        return node.fail

    async def _bot(self, node: BotNode) -> str | None:
        self.notes.append(f"bot {node.bot}")
        result = await self.io.bot(
            BotRequest(node.bot, self.lang, dict(self.vars), overflow=node.transfer is not None)
        )
        if result.outcome == "busy":
            self.notes.append("every bot place taken: on to the transfer")
            self.vars["intent"], self.vars["summary"] = "", result.summary
            if isinstance(node.transfer, BotTransfer):
                return node.transfer.default
            return node.transfer
        if result.language and result.language != self.lang:
            if result.language in self.flow.languages:
                self.assign("language", result.language)
            else:
                self.notes.append(
                    f"bot spoke {result.language}, not a language of the flow: kept {self.lang}"
                )
        if result.outcome == "hangup":
            raise CallerHungUp
        if result.outcome == "end":
            self.notes.append("bot ended the conversation")
            return node.next
        self.vars["intent"], self.vars["summary"] = result.intent, result.summary
        self.notes.append(f"transfer intent={result.intent or '-'} reason={result.reason or '-'}")
        if isinstance(node.transfer, BotTransfer):
            return node.transfer.intents.get(result.intent, node.transfer.default)
        return node.transfer

    async def _queue(self, node: QueueNode) -> str | None:
        await self.say(node.say)
        request = QueueRequest(
            queue=self.queue_name(node.queue),
            priority=node.priority,
            tier=self.vars.get("tier") or None,
            skills=dict(node.skills),
            language=self.lang,
            variables=dict(self.vars),
            summary=self.vars.get("summary", ""),
            intent=self.vars.get("intent", ""),
        )
        self.notes.append(
            f"queue {request.queue} priority {request.priority} tier {request.tier or 'default'}"
        )
        result = await self.io.queue(request)
        self.notes.append(result.outcome + (f" ({result.detail})" if result.detail else ""))
        if result.outcome == "hangup":
            raise CallerHungUp
        edges = {"served": node.next, "callback": node.callback, "no_agents": node.no_agents}
        return (edges | {"timeout": node.timeout, "failed": node.failed})[result.outcome]

    async def _hours(self, node: HoursNode) -> str | None:
        name = node.calendar or self.flow.calendar or ""
        calendar = self.calendars.get(name)
        if calendar is None:
            raise FlowError(f"unknown calendar {name!r} (calendars: {', '.join(self.calendars) or 'none'})")
        at = calendar.local(self.io.now())
        state = calendar.is_open(at)
        self.notes.append(f"{name} at {at:%a %Y-%m-%d %H:%M} {calendar.timezone}: {state}")
        return {"open": node.open, "closed": node.closed, "holiday": node.holiday or node.closed}[state]

    async def _callback(self, node: CallbackNode) -> str | None:
        yes, no = YES_WORDS.get(self.lang, []), NO_WORDS.get(self.lang, [])
        reply = await self.ask(
            node.say, 0, None, max_digits=1, terminator=None, timeout_s=node.timeout_s, words={"1": yes}
        )
        accepted = (
            reply.value == "1"
            if reply.kind == "dtmf"
            else (
                reply.kind == "speech"
                and match_words(reply.value, {"no": no}) is None
                and match_words(reply.value, {"yes": yes}) is not None
            )
        )
        if not accepted:
            self.notes.append("declined")
            return node.declined
        queue = self.queue_name(node.queue)
        if await self.io.callback(queue, self.lang, dict(self.vars)):
            self.notes.append(f"callback to {self.vars.get('caller', '?')} registered in {queue}")
            return node.next
        self.notes.append(f"callback in {queue} could not be registered")
        return node.fail

    async def _lookup(self, node: LookupNode) -> str | None:
        args = {name: render(value, self.vars) for name, value in node.args.items()}
        self.notes.append(f"{node.tool}({', '.join(f'{k}={v}' for k, v in args.items())})")
        try:
            result = await self.io.lookup(node.tool, args)
        except CallerHungUp:
            raise
        except Exception as exc:
            self.notes.append(f"failed: {exc}")
            return node.fail or node.next
        for var, key in node.set.items():
            value = result.get(key)
            if value is None:
                self.notes.append(f"no {key} in the result")
            elif var == "language" and value not in self.flow.languages:
                self.notes.append(f"{key}={value} is not a language of the flow: kept {self.lang}")
            else:
                self.assign(var, str(value))
        return node.next

    async def _set(self, node: SetNode) -> str | None:
        for var, template in node.vars.items():
            self.assign(var, render(template, self.vars))
        return node.next

    async def _survey(self, node: SurveyNode) -> str | None:
        for attempt in range(node.retries + 1):
            reply = await self.ask(
                node.say, attempt, node.retry_say, max_digits=1, terminator=None, timeout_s=node.timeout_s
            )
            if reply.kind == "none":
                self.notes.append("no answer")
                return node.next
            digits = _digits(reply)
            if len(digits) == 1 and digits in "12345":
                await self.io.survey(int(digits))
                self.notes.append(f"score {digits}")
                return node.next
            self.notes.append(f"not a score 1-5 ({attempt + 1}/{node.retries + 1})")
        return node.next

    async def _hangup(self, node: HangupNode) -> str | None:
        await self.say(node.say)
        return None


async def run_flow(
    flow: Flow,
    io: FlowIO,
    *,
    variables: dict[str, str],
    calendars: Mapping[str, Calendar],
    max_steps: int = 200,
) -> FlowResult:
    """Run `flow` on one call until it ends. `variables`: at least caller and number; language
    defaults to the flow's starting language. Never raises for the call's own troubles: they end it
    with outcome caller_hung_up, loop_limit or "error: ...", and the flow hangs up unless the caller did."""
    start = {"language": flow.language, **variables}
    if start["language"] not in flow.languages:
        start["language"] = flow.language
    call = _Call(flow, io, start, calendars)
    path: list[Step] = []
    name: str | None = flow.start
    outcome = "hangup_by_flow"
    while name is not None:
        if len(path) >= max_steps:
            recent = " -> ".join(s.node for s in path[-6:])
            path.append(
                Step(
                    name,
                    "limit",
                    f"not run: {max_steps} steps taken, the limit; the flow loops ({recent} -> {name})",
                )
            )
            outcome = "loop_limit"
            break
        node = flow.nodes[name]
        call.notes = []
        try:
            nxt = await call.run(node)
        except CallerHungUp:
            call.notes.append("caller hung up")
            path.append(Step(name, node.type, "; ".join(call.notes)))
            return FlowResult("caller_hung_up", path, call.vars)
        except Exception as exc:  # an IO or flow failure ends this call, not the process serving it
            reason = str(exc) or type(exc).__name__
            call.notes.append(f"error: {reason}")
            path.append(Step(name, node.type, "; ".join(call.notes)))
            outcome = f"error: node {name}: {reason}"
            break
        call.notes.append(f"-> {nxt}" if nxt is not None else "-> end of call")
        path.append(Step(name, node.type, "; ".join(call.notes)))
        name = nxt
    with contextlib.suppress(CallerHungUp):
        await io.hangup()
    return FlowResult(outcome, path, call.vars)
