"""IVR flows as data: a YAML document of named nodes joined by edges (the names of other nodes).

    name: retail-en
    languages: [en]            # every text must cover these
    language: en               # the call's starting language
    calendar: always           # default calendar of hours nodes
    start: menu
    nodes:
      menu: {type: menu, say: "For orders press 1.", options: {"1": {next: bot, words: {en: [orders]}}}}
      bot:  {type: bot, bot: retail, transfer: queue, next: bye}
      ...

Edges: `next` is required wherever a node type has one. Every other edge is optional and a missing one
ends the call (the flow hangs up), except that a missing `holiday` takes `closed` and a missing lookup
`fail` takes `next`. Texts are a plain string (every language) or {en: ..., zh: ...}; `${name}` is
replaced by a call variable (caller, number, language, intent, summary, and any a collect, lookup,
set or menu option sets); an unset one reads as "".

`load_flow*` and `parse_flow` check the schema and then the graph (start and every edge name a node,
every node is reachable, something ends the call, texts cover the languages ...), and report every
problem with the file, the field path and what is wrong:
"flows/x.yml: nodes.menu.options.1.next: unknown node 'queu' (nodes: bot, queue, bye)".
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from aicc.appliance.acd.policy import QueueName, Skills
from aicc.appliance.documents import DocumentError, describe, parse_text, read_document

FLOWS_DIR = Path(__file__).parent / "flows"

Language = Literal["en", "zh"]
NodeName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
VarName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,40}$")]
CalendarName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")]
BotName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")]
ToolName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Word = Annotated[str, Field(min_length=1, max_length=60)]
NonEmpty = Annotated[str, Field(min_length=1)]


def _shape(value: Any) -> str:
    # Called with the input when validating and with the field's value (a model) when serializing.
    return "(mapping)" if isinstance(value, dict | BaseModel) else "(plain)"


# "A string, or one per language": chosen by the value's shape, so an error is about that shape only
# (the tags are taken out of error paths).
SHAPE_TAGS = ("(plain)", "(mapping)")
Text = Annotated[
    Annotated[NonEmpty, Tag("(plain)")] | Annotated[dict[Language, NonEmpty], Tag("(mapping)")],
    Discriminator(_shape),
]
QueueRef = Annotated[
    Annotated[QueueName, Tag("(plain)")] | Annotated[dict[Language, QueueName], Tag("(mapping)")],
    Discriminator(_shape),
]

# Variables every call has: caller and number (the dialled service number) from the call, language
# (the call's language from then on), intent and summary (set when a bot transfers the call).
BUILTIN_VARS = ("caller", "number", "language", "intent", "summary")
DTMF_KEYS = "0123456789*#"
_VAR = re.compile(r"\$\{([^}]*)\}")


def variables_in(template: str) -> list[str]:
    return _VAR.findall(template)


def render(template: str, variables: Mapping[str, str]) -> str:
    return _VAR.sub(lambda m: variables.get(m.group(1), ""), template)


def text_in(text: Text, language: str, fallback: str) -> str:
    """The text for `language`; a validated flow covers its languages, the fallback is for a language
    the flow does not have (a bot that switched to it)."""
    if isinstance(text, str):
        return text
    by_language = {str(lang): value for lang, value in text.items()}
    return by_language.get(language) or by_language.get(fallback) or next(iter(by_language.values()))


class _Doc(BaseModel):
    # Numbers become strings: YAML reads menu keys 1, 2 and a numeric say as ints.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class _Node(_Doc):
    def edges(self) -> dict[str, str | None]:
        """field path (relative to the node) -> the node it names, None where an optional edge is unset."""
        return {}

    def texts(self) -> dict[str, Text]:
        return {}

    def assigns(self) -> dict[str, tuple[str, str]]:
        """field path -> (variable, value template) for every variable this node sets from the flow."""
        return {}

    def sets_vars(self) -> list[str]:
        """Variables this node sets at run time, whatever their value."""
        return [var for var, _ in self.assigns().values()]


def _texts(**fields: Text | None) -> dict[str, Text]:
    return {name: text for name, text in fields.items() if text is not None}


class PlayNode(_Node):
    type: Literal["play"]
    say: Text
    next: str

    def edges(self) -> dict[str, str | None]:
        return {"next": self.next}

    def texts(self) -> dict[str, Text]:
        return _texts(say=self.say)


class MenuOption(_Doc):
    next: str
    words: dict[Language, list[Word]] = Field(
        default_factory=dict, description="spoken words or phrases that choose this option"
    )
    set: dict[VarName, str] = Field(default_factory=dict, description="variables set when chosen")


class MenuNode(_Node):
    """Ask for one key (or a spoken choice); after `retries` more tries, no_input or no_match (by the
    last failure) is taken."""

    type: Literal["menu"]
    say: Text
    options: dict[str, MenuOption] = Field(min_length=1)
    timeout_s: float = Field(6.0, gt=0, le=60)
    retries: int = Field(2, ge=0, le=5)
    retry_say: Text | None = Field(None, description="said before asking again")
    no_input: str | None = None
    no_match: str | None = None

    def edges(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {f"options.{k}.next": o.next for k, o in self.options.items()}
        return out | {"no_input": self.no_input, "no_match": self.no_match}

    def texts(self) -> dict[str, Text]:
        return _texts(say=self.say, retry_say=self.retry_say)

    def assigns(self) -> dict[str, tuple[str, str]]:
        return {
            f"options.{k}.set.{var}": (var, value)
            for k, o in self.options.items()
            for var, value in o.set.items()
        }


class CollectNode(_Node):
    """Digits into a variable: min_digits..max_digits keys, ended by the terminator or the timeout."""

    type: Literal["collect"]
    say: Text
    var: VarName
    min_digits: int = Field(1, ge=1, le=32)
    max_digits: int = Field(20, ge=1, le=32)
    terminator: Literal["#", "*"] | None = "#"
    timeout_s: float = Field(8.0, gt=0, le=120)
    retries: int = Field(2, ge=0, le=5)
    retry_say: Text | None = None
    next: str
    fail: str | None = None

    def edges(self) -> dict[str, str | None]:
        return {"next": self.next, "fail": self.fail}

    def texts(self) -> dict[str, Text]:
        return _texts(say=self.say, retry_say=self.retry_say)

    def sets_vars(self) -> list[str]:
        return [self.var]


class BotTransfer(_Doc):
    default: str
    intents: dict[str, str] = Field(default_factory=dict, description="the bot's intent -> node")


class BotNode(_Node):
    """Hand the call to a bot. `transfer`: where a transfer goes (a node, or by the bot's intent);
    `next`: where the call goes when the bot ends the conversation normally."""

    type: Literal["bot"]
    bot: BotName
    transfer: (
        Annotated[
            Annotated[str, Tag("(plain)")] | Annotated[BotTransfer, Tag("(mapping)")], Discriminator(_shape)
        ]
        | None
    ) = None
    next: str

    def edges(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {"next": self.next}
        if isinstance(self.transfer, BotTransfer):
            out["transfer.default"] = self.transfer.default
            out |= {f"transfer.intents.{i}": n for i, n in self.transfer.intents.items()}
        else:
            out["transfer"] = self.transfer
        return out

    def sets_vars(self) -> list[str]:
        return ["intent", "summary"]


class QueueNode(_Node):
    """Route the call to an ACD queue (`queue` may differ by language: {zh: support-zh, en: ...})."""

    type: Literal["queue"]
    queue: QueueRef
    say: Text | None = Field(None, description="said before the caller waits")
    priority: int = Field(0, ge=0, le=100)
    skills: Skills = Field(default_factory=dict, description="skills required on top of the queue's")
    next: str = Field(description="after the agent conversation, caller still on the line")
    callback: str | None = Field(None, description="the caller took a callback instead of waiting")
    no_agents: str | None = None
    timeout: str | None = None
    failed: str | None = None

    def edges(self) -> dict[str, str | None]:
        return {
            "next": self.next,
            "callback": self.callback,
            "no_agents": self.no_agents,
            "timeout": self.timeout,
            "failed": self.failed,
        }

    def texts(self) -> dict[str, Text]:
        return _texts(say=self.say)


class HoursNode(_Node):
    type: Literal["hours"]
    calendar: CalendarName | None = Field(None, description="default: the flow's calendar")
    open: str
    closed: str
    holiday: str | None = Field(None, description="default: closed")

    def edges(self) -> dict[str, str | None]:
        return {"open": self.open, "closed": self.closed, "holiday": self.holiday}


class CallbackNode(_Node):
    """Offer a callback to the caller's number: key 1 (or a spoken yes) takes it."""

    type: Literal["callback"]
    say: Text
    queue: QueueRef
    timeout_s: float = Field(6.0, gt=0, le=60)
    next: str = Field(description="the callback is registered")
    declined: str | None = None
    fail: str | None = Field(None, description="the callback could not be registered")

    def edges(self) -> dict[str, str | None]:
        return {"next": self.next, "declined": self.declined, "fail": self.fail}

    def texts(self) -> dict[str, Text]:
        return _texts(say=self.say)


class LookupNode(_Node):
    """Call a connector tool; `set` copies fields of its result into variables (variable: field)."""

    type: Literal["lookup"]
    tool: ToolName
    args: dict[str, str] = Field(default_factory=dict)
    set: dict[VarName, str] = Field(default_factory=dict)
    next: str
    fail: str | None = Field(None, description="default: next")

    def edges(self) -> dict[str, str | None]:
        return {"next": self.next, "fail": self.fail}

    def sets_vars(self) -> list[str]:
        return list(self.set)


class SetNode(_Node):
    type: Literal["set"]
    vars: dict[VarName, str] = Field(min_length=1)
    next: str

    def edges(self) -> dict[str, str | None]:
        return {"next": self.next}

    def assigns(self) -> dict[str, tuple[str, str]]:
        return {f"vars.{var}": (var, value) for var, value in self.vars.items()}


class SurveyNode(_Node):
    """A post-call question answered with one key, 1 to 5."""

    type: Literal["survey"]
    say: Text
    timeout_s: float = Field(8.0, gt=0, le=60)
    retries: int = Field(1, ge=0, le=5)
    retry_say: Text | None = None
    next: str

    def edges(self) -> dict[str, str | None]:
        return {"next": self.next}

    def texts(self) -> dict[str, Text]:
        return _texts(say=self.say, retry_say=self.retry_say)


class HangupNode(_Node):
    type: Literal["hangup"]
    say: Text | None = None

    def texts(self) -> dict[str, Text]:
        return _texts(say=self.say)


Node = Annotated[
    PlayNode
    | MenuNode
    | CollectNode
    | BotNode
    | QueueNode
    | HoursNode
    | CallbackNode
    | LookupNode
    | SetNode
    | SurveyNode
    | HangupNode,
    Field(discriminator="type"),
]
# The type names in file order of the union above, for messages.
NODE_TYPES: tuple[str, ...] = tuple(
    get_args(model.model_fields["type"].annotation)[0] for model in get_args(get_args(Node)[0])
)


class Flow(_Doc):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    description: str = ""
    languages: list[Language] = Field(min_length=1, max_length=2)
    language: Language = Field(description="the call's starting language")
    calendar: CalendarName | None = Field(None, description="default calendar of hours nodes")
    start: str
    nodes: dict[NodeName, Node] = Field(min_length=1)

    def known_variables(self) -> list[str]:
        known = list(BUILTIN_VARS)
        for node in self.nodes.values():
            known += [v for v in node.sets_vars() if v not in known]
        return known


def _schema_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """pydantic's errors with node paths as a reader writes them: nodes.menu.retries, not
    nodes.menu.menu.retries (the union's tag), and a clear word for an unknown node type."""
    fixed: list[InitErrorDetails] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if loc[:1] == ("nodes",) and len(loc) == 2 and err["type"] == "union_tag_invalid":
            message = "expected a node type: " + ", ".join(NODE_TYPES)
            tag = err.get("ctx", {}).get("tag")
            fixed.append(
                {"type": PydanticCustomError("node_type", message), "loc": (*loc, "type"), "input": tag}
            )
            continue
        if loc[:1] == ("nodes",) and len(loc) == 2 and err["type"] == "union_tag_not_found":
            fixed.append({"type": "missing", "loc": (*loc, "type"), "input": err["input"]})
            continue
        if loc[:1] == ("nodes",) and len(loc) >= 3 and loc[2] in NODE_TYPES:
            loc = loc[:2] + loc[3:]
        # A mapping key's error is about the key: its path ends at the key, without "[key]".
        loc = tuple(part for part in loc if part not in SHAPE_TAGS and part != "[key]")
        detail: InitErrorDetails = {"type": err["type"], "loc": loc, "input": err["input"]}
        if "ctx" in err:
            detail["ctx"] = err["ctx"]
        fixed.append(detail)
    return describe(ValidationError.from_exception_data(exc.title, fixed))


def _names(names: Collection[str]) -> str:
    return ", ".join(names) if names else "none"


def _reachable(flow: Flow) -> list[str]:
    seen = {flow.start}
    todo = [flow.start]
    while todo:
        node = flow.nodes.get(todo.pop())
        for target in node.edges().values() if node else ():
            if target is not None and target in flow.nodes and target not in seen:
                seen.add(target)
                todo.append(target)
    return [name for name in flow.nodes if name in seen]


def _word_key(word: str) -> str:
    return " ".join(word.casefold().split())


def _text_problems(flow: Flow, field: str, text: Text, known: list[str]) -> Iterator[tuple[str, str]]:
    if isinstance(text, dict):
        for lang in flow.languages:
            if lang not in text:
                yield field, f"no {lang} text (the flow's languages: {_names(flow.languages)})"
    for template in [text] if isinstance(text, str) else list(text.values()):
        yield from _template_problems(field, template, known)


def _template_problems(field: str, template: str, known: list[str]) -> Iterator[tuple[str, str]]:
    for var in variables_in(template):
        if var not in known:
            yield field, f"unknown variable ${{{var}}} (known: {_names(known)})"


def _node_problems(flow: Flow, name: str, node: _Node, known: list[str]) -> Iterator[tuple[str, str]]:
    at = f"nodes.{name}"
    for field, target in node.edges().items():
        if target is not None and target not in flow.nodes:
            yield f"{at}.{field}", f"unknown node {target!r} (nodes: {_names(flow.nodes)})"
    for field, text in node.texts().items():
        yield from _text_problems(flow, f"{at}.{field}", text, known)
    for field, (var, value) in node.assigns().items():
        yield from _template_problems(f"{at}.{field}", value, known)
        if var == "language" and not variables_in(value) and value not in flow.languages:
            yield f"{at}.{field}", f"{value!r} is not one of the flow's languages ({_names(flow.languages)})"
    if isinstance(node, MenuNode):
        yield from _menu_problems(at, node)
    elif isinstance(node, CollectNode) and node.min_digits > node.max_digits:
        yield f"{at}.min_digits", f"{node.min_digits} is more than max_digits ({node.max_digits})"
    elif isinstance(node, QueueNode | CallbackNode) and isinstance(node.queue, dict):
        for lang in flow.languages:
            if lang not in node.queue:
                yield f"{at}.queue", f"no queue for {lang} (the flow's languages: {_names(flow.languages)})"
    elif isinstance(node, LookupNode):
        for arg, value in node.args.items():
            yield from _template_problems(f"{at}.args.{arg}", value, known)


def _menu_problems(at: str, node: MenuNode) -> Iterator[tuple[str, str]]:
    owner: dict[tuple[str, str], str] = {}
    for key, option in node.options.items():
        if len(key) != 1 or key not in DTMF_KEYS:
            yield f"{at}.options.{key}", "an option key is one DTMF key: 0-9, * or # (quote * and # in YAML)"
        for lang, words in option.words.items():
            for word in words:
                first = owner.setdefault((lang, _word_key(word)), key)
                if first != key:
                    yield (
                        f"{at}.options.{key}.words.{lang}",
                        f"{word!r} is also a word of option {first} (a spoken word must choose one option)",
                    )


def check_flow(flow: Flow, calendars: Collection[str] | None = None) -> list[tuple[str, str]]:
    """Every problem of a schema-valid flow beyond its schema, as (field path, message) pairs.
    `calendars`: the calendar names hours nodes may use (None: not checked)."""
    problems: list[tuple[str, str]] = []
    if len(set(flow.languages)) != len(flow.languages):
        problems.append(("languages", f"a language is listed twice: {_names(flow.languages)}"))
    if flow.language not in flow.languages:
        problems.append(("language", f"{flow.language!r} is not one of languages ({_names(flow.languages)})"))
    if calendars is not None and flow.calendar is not None and flow.calendar not in calendars:
        problems.append(("calendar", f"unknown calendar {flow.calendar!r} (calendars: {_names(calendars)})"))
    if flow.start not in flow.nodes:
        problems.append(("start", f"unknown node {flow.start!r} (nodes: {_names(flow.nodes)})"))
    known = flow.known_variables()
    for name, node in flow.nodes.items():
        problems += _node_problems(flow, name, node, known)
        if isinstance(node, HoursNode):
            cal = node.calendar or flow.calendar
            if cal is None:
                problems.append((f"nodes.{name}.calendar", "no calendar here and no flow-level calendar"))
            elif calendars is not None and node.calendar is not None and cal not in calendars:
                problems.append(
                    (f"nodes.{name}.calendar", f"unknown calendar {cal!r} (calendars: {_names(calendars)})")
                )
    if flow.start in flow.nodes:
        reached = set(_reachable(flow))
        dead = [name for name in flow.nodes if name not in reached]
        if dead:
            problems.append(
                (
                    "nodes",
                    f"not reachable from start {flow.start!r}: {_names(dead)} "
                    "(a dead node is a mistake: link it from another node or delete it)",
                )
            )
    if not any(isinstance(node, HangupNode) for node in flow.nodes.values()):
        problems.append(("nodes", "no node ends the call: add one, e.g. bye: {type: hangup, say: ...}"))
    return problems


def parse_flow(data: Any, where: str, *, calendars: Collection[str] | None = None) -> Flow:
    """Plain data (parsed YAML or JSON) -> a checked Flow; DocumentError lists every problem."""
    if not isinstance(data, dict):
        raise DocumentError(
            where, [("", f"expected a mapping at the top level; found {type(data).__name__}")]
        )
    try:
        flow = Flow.model_validate(data)
    except ValidationError as exc:
        raise DocumentError(where, _schema_problems(exc)) from None
    problems = check_flow(flow, calendars)
    if problems:
        raise DocumentError(where, problems)
    return flow


def load_flow_text(text: str, where: str, *, calendars: Collection[str] | None = None) -> Flow:
    return parse_flow(parse_text(text, where), where, calendars=calendars)


def load_flow(path: Path, *, calendars: Collection[str] | None = None) -> Flow:
    return load_flow_text(read_document(path, "flow"), str(path), calendars=calendars)


def shipped_flows() -> dict[str, Path]:
    """The flows shipped with aicc (appliance/ivr/flows/*.yml but calendars.yml), by file stem."""
    return {p.stem: p for p in sorted(FLOWS_DIR.glob("*.yml")) if p.name != "calendars.yml"}
