"""Bots as data. A definition says who the bot is (persona, prompts in its languages), which connector
it acts on and which of that connector's tools the planner may use, what identifies the thing a caller
asks about (an order number, a card's last four digits), and the few rules that complete a small
model's plans (part words, argument recovery) and summarise a call for the agent.

Shipped definitions live in appliance/bots/definitions/*.yml; a site adds bots, or overrides shipped
ones by name, with its own files in /etc/aicc/bots. Errors name the file, the field, what was expected
and what was found (aicc.appliance.documents).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from aicc.appliance.documents import DocumentError, load_text, read_document

Language = Literal["en", "zh"]
PromptKey = Literal[
    "greeting",
    "notice",
    "sorry_asr",
    "unclear",
    "hold",
    "progress",
    "no_agent",
    "transfer",
    "engine_trouble",
    "connector_trouble",
    "no_input",
    "goodbye",
    "max_length",
    "dtmf_menu",
    "cancelled",
    "confirm_again",
    "ask_id",
    "anything_else",
    "heard_id",
    "did_you_mean",
    "id_format",
    "not_done",
    "go_on",
    "not_confirmed",
]
PROMPT_KEYS: tuple[PromptKey, ...] = get_args(PromptKey)

# The generic bot's lines; a definition's `prompts` replace any of them for that bot. Nothing here
# names a business ("order", "card"): that wording lives in the definitions.
PROMPTS: dict[PromptKey, dict[Language, str]] = {
    "greeting": {
        "en": "Hello, this is the virtual assistant. How can I help you today?",
        "zh": "您好，我是智能客服助手，请问有什么可以帮您？",
    },
    # Said first, not interruptible: the caller is told they talk to an AI (China's rules on labelling
    # AI-generated content) and that the call is recorded (PIPL Art. 17), before anything else.
    "notice": {
        "en": "You are talking to an AI assistant. This call is recorded.",
        "zh": "您正在与人工智能助手通话，本次通话将被录音。",
    },
    "sorry_asr": {
        "en": "Sorry, I didn't catch that. Could you say it again?",
        "zh": "抱歉，我没有听清楚，请您再说一遍。",
    },
    "unclear": {
        "en": "Sorry, I'm not sure I understood. Could you say it in other words?",
        "zh": "抱歉，我没太理解，请您换个说法再说一遍。",
    },
    "hold": {"en": "One moment, please.", "zh": "好的，请稍等。"},
    # Said once when the answer is still not there a second after the hold line; soft cues follow.
    "progress": {"en": "I'm still checking. Thank you for waiting.", "zh": "正在为您查询，请您稍候。"},
    "no_agent": {
        "en": "Sorry, no colleague is free to take your call right now. I can create a ticket so that "
        "someone calls you back, or help you with something else.",
        "zh": "抱歉，目前没有空闲的人工客服。我可以为您创建工单，稍后安排专人回电，或者继续为您服务。",
    },
    "transfer": {
        "en": "Let me transfer you to a colleague. Please hold.",
        "zh": "好的，正在为您转接人工客服，请稍候。",
    },
    "engine_trouble": {
        "en": "Sorry, I'm having a technical problem. Let me transfer you to a colleague.",
        "zh": "抱歉，系统出现了技术问题，我为您转接人工客服。",
    },
    "connector_trouble": {
        "en": "Sorry, I can't reach our systems right now. Please try again in a few minutes, "
        "or say agent to talk to a colleague.",
        "zh": "抱歉，业务系统暂时无法访问，请稍后再试，或者说转人工。",
    },
    "no_input": {
        "en": "Are you still there? How can I help you?",
        "zh": "您还在吗？请问有什么可以帮您？",
    },
    "goodbye": {
        "en": "Thank you for calling. Goodbye.",
        "zh": "感谢您的来电，再见。",
    },
    "max_length": {
        "en": "We have reached the time limit for this call. Thank you for calling. Goodbye.",
        "zh": "本次通话已达到时长上限，感谢您的来电，再见。",
    },
    "dtmf_menu": {
        "en": "Press 0 for an agent, or 9 to hear that again.",
        "zh": "转人工请按0，重听请按9。",
    },
    "cancelled": {
        "en": "All right, I haven't changed anything. Anything else?",
        "zh": "好的，我没有做任何修改。还有其他需要吗？",
    },
    "confirm_again": {
        "en": "Please say yes to go ahead, or no to cancel. You can also press 1 for yes or 2 for no.",
        "zh": "确认请说“是”，取消请说“不”。也可以按1确认，按2取消。",
    },
    "ask_id": {
        "en": "Which one is it about? Please say the number, or key it in and press hash.",
        "zh": "请问是哪一个？请说出号码，或者在按键上输入，以井号键结束。",
    },
    "anything_else": {
        "en": "Anything else I can help with?",
        "zh": "还有其他可以帮您的吗？",
    },
    # {value}: the number as heard, read digit by digit; {label}: the identifier's label.
    "heard_id": {"en": "I heard {value}. Is that right?", "zh": "我听到的是{value}，对吗？"},
    "did_you_mean": {"en": "Did you mean {label} {value}?", "zh": "您是说{label}{value}吗？"},
    "id_format": {
        "en": "That number doesn't have the right number of digits. Please say it again digit by digit, "
        "or key it in and press hash.",
        "zh": "这个号码的位数不对，请您再逐位说一遍，或者在按键上输入，以井号键结束。",
    },
    "not_done": {
        "en": "I haven't done anything yet. What would you like me to do?",
        "zh": "我这边还没有为您办理任何业务。请问您需要办理什么？",
    },
    "go_on": {"en": "Sure, what can I do for you?", "zh": "好的，请问您还需要办理什么？"},
    "not_confirmed": {
        "en": "I haven't changed anything, since I didn't hear a clear yes. Anything else?",
        "zh": "没有听到您明确确认，我没有做任何修改。还有其他需要吗？",
    },
}

BotName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
ConnectorName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
ToolName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
ArgName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Text = Annotated[str, Field(min_length=1, max_length=2000)]
Word = Annotated[str, Field(min_length=1, max_length=40)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Names(_Doc):
    """A short text in both languages (display names, summary labels)."""

    en: Text
    zh: Text

    def get(self, language: Language) -> str:
        return self.en if language == "en" else self.zh


class Texts(_Doc):
    """A text per language; which languages are required depends on the bot's `languages`."""

    en: Text | None = None
    zh: Text | None = None

    def get(self, language: Language) -> str | None:
        return self.en if language == "en" else self.zh


class Persona(_Doc):
    # English for every caller's language: the planner's instructions are English (the small model
    # follows them best), and one fixed prefix per bot keeps the LLM server's cache warm for both.
    planner: Text = Field(description="the planner's first line: who the bot is and for whom")
    chat: Text = Field(description="the first line of a general answer (no tool): who is answering")


class Identifier(_Doc):
    """The argument that names what the caller asks about. The caller's own digits fill it (a small
    model drops or invents digits), the hold line starts as soon as one is said, and the caller may key
    it in on the keypad when asked (`ask_id`)."""

    name: ArgName = Field(description="the tools' argument, e.g. order_id or card_last4")
    label: Names = Field(description="what summaries call it before its value: 订单 / Order")
    lookup: ToolName = Field(description="the read tool run when the caller keys the number in")


class ArgumentRule(_Doc):
    """How the safety net fills one argument of a part the plan dropped: a fixed value per language,
    or the caller's words after one of `follows` (改成, to), looking from the last of `after` on (the
    word "address": the new address follows it, not an earlier "to")."""

    value: Texts | None = None
    follows: list[Word] = Field(default_factory=list)
    after: list[Word] = Field(default_factory=list)
    ask: Texts | None = Field(
        None, description="the question when the caller wants the action but did not say this argument"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ArgumentRule:
        if (self.value is None) == (not self.follows):
            raise ValueError("give either value (a fixed text per language) or follows (words before it)")
        if self.after and not self.follows:
            raise ValueError("after only applies with follows")
        return self


class ActionSummary(_Doc):
    """How the call summary says an action: 查询状态（已发货） / checked the status (shipped)."""

    say: Names
    result: ArgName | None = Field(None, description="the result field that tells the outcome")
    values: dict[str, Names] = Field(default_factory=dict, description="that field's values, as said")


class BotDefinition(_Doc):
    name: BotName
    display_name: Names
    languages: list[Language] = Field(min_length=1, max_length=2)
    connector: ConnectorName = Field(description="registry name of the connector, e.g. demo-retail")
    tools: list[ToolName] = Field(min_length=1, description="the connector tools the planner may use")
    persona: Persona
    planner_rules: list[Text] = Field(
        default_factory=list, description="instructions after the generic ones, before the tool list"
    )
    identifier: Identifier
    notice: bool = Field(
        True,
        description="say the notice (an AI speaks, the call is recorded) once per call, before the greeting; "
        "off fails the compliance report's AICC-PRIV-01",
    )
    prompts: dict[PromptKey, Texts] = Field(default_factory=dict)
    part_words: dict[ToolName, list[Word]] = Field(
        default_factory=dict,
        description="words that name a part of a request (tool -> words); for a fallback tool, the words "
        "that ask for it by name (without them, an article that answers the question is used instead)",
    )
    recover: dict[ToolName, dict[ArgName, ArgumentRule]] = Field(default_factory=dict)
    fallback_tools: list[ToolName] = Field(
        default_factory=list,
        description="tools for what no other tool does (a ticket): dropped from a plan when the caller's "
        "words name another part",
    )
    summary: dict[ToolName, ActionSummary] = Field(default_factory=dict)

    _source: str = PrivateAttr(default="<bot definition>")

    @property
    def source(self) -> str:
        """Where it was read from (errors found later, when its connector opens, name it)."""
        return self._source

    def prompt(self, key: PromptKey, language: Language) -> str:
        override = self.prompts.get(key)
        text = override.get(language) if override is not None else None
        return text or PROMPTS[key][language]

    def problems(self) -> list[tuple[str, str]]:
        """What a field-by-field validation cannot see: references between fields."""
        found: list[tuple[str, str]] = []
        if len(set(self.languages)) != len(self.languages):
            found.append(("languages", f"each language once; found {self.languages}"))
        dupes = sorted({t for t in self.tools if self.tools.count(t) > 1})
        if dupes:
            found.append(("tools", f"each tool once; found {dupes} more than once"))
        tools = set(self.tools)
        if self.identifier.lookup not in tools:
            found.append(
                (
                    "identifier.lookup",
                    _not_one_of("one of the bot's tools", self.tools, self.identifier.lookup),
                )
            )
        for field, keys in (
            ("part_words", self.part_words),
            ("recover", self.recover),
            ("summary", self.summary),
            ("fallback_tools", dict.fromkeys(self.fallback_tools)),
        ):
            found += [
                (f"{field}.{key}", _not_one_of("one of the bot's tools", self.tools, key))
                for key in keys
                if key not in tools
            ]
        for key, texts in self.prompts.items():
            found += [
                (f"prompts.{key}.{lang}", f"required: the bot speaks {', '.join(self.languages)}; missing")
                for lang in self.languages
                if texts.get(lang) is None
            ]
        return found

    def tool_problems(self, available: Mapping[str, Iterable[str]]) -> list[tuple[str, str]]:
        """Checks against the connector's tools (name -> its argument names), when the bot opens."""
        found: list[tuple[str, str]] = []
        for i, tool in enumerate(self.tools):
            if tool not in available:
                expected = f"a tool of connector {self.connector}"
                found.append((f"tools[{i}]", _not_one_of(expected, sorted(available), tool)))
        lookup_args = available.get(self.identifier.lookup)
        if lookup_args is not None and self.identifier.name not in lookup_args:
            found.append(
                (
                    "identifier.name",
                    _not_one_of(
                        f"an argument of {self.identifier.lookup}", sorted(lookup_args), self.identifier.name
                    ),
                )
            )
        for tool, rules in self.recover.items():
            args = set(available.get(tool, ()))
            found += [
                (f"recover.{tool}.{arg}", _not_one_of(f"an argument of {tool}", sorted(args), arg))
                for arg in rules
                if tool in available and arg not in args
            ]
        return found


def _not_one_of(expected: str, options: Iterable[str], found: str) -> str:
    return f"expected {expected} ({', '.join(options)}); found {found!r}"


def load_definition(source: Path | str, where: str | None = None) -> BotDefinition:
    """A definition from a file (Path: its name must be the bot's) or from YAML text; `where` names it
    in errors."""
    if isinstance(source, Path):
        return _load(read_document(source, "file", where), where or str(source), source.stem)
    return _load(source, where or "<bot definition>", None)


def _load(text: str, where: str, stem: str | None) -> BotDefinition:
    definition = load_text(BotDefinition, text, where)
    problems = definition.problems()
    if stem is not None and stem != definition.name:
        problems.append(
            ("name", f"expected the file's name without .yml ({stem!r}); found {definition.name!r}")
        )
    if problems:
        raise DocumentError(where, problems)
    definition._source = where
    return definition


def shipped_definitions() -> dict[str, BotDefinition]:
    """The bots that ship with aicc (appliance/bots/definitions/*.yml)."""
    folder = resources.files("aicc.appliance.bots.definitions")
    entries = sorted((e for e in folder.iterdir() if e.name.endswith(".yml")), key=lambda e: e.name)
    loaded = (
        _load(e.read_text(encoding="utf-8"), f"{e} (shipped)", e.name.removesuffix(".yml")) for e in entries
    )
    return {d.name: d for d in loaded}


def load_definitions(extra_dir: Path | None) -> dict[str, BotDefinition]:
    """The shipped bots, plus a site's own from extra_dir (e.g. /etc/aicc/bots: *.yml), which
    replace shipped ones of the same name."""
    found = shipped_definitions()
    if extra_dir is None:
        return found
    if not extra_dir.is_dir():
        raise DocumentError(
            str(extra_dir), [("", "expected a folder of bot definitions (*.yml); found none")]
        )
    for path in sorted(extra_dir.glob("*.yml")):
        definition = load_definition(path)
        found[definition.name] = definition
    return found
