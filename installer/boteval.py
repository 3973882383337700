"""`aicc bot eval`: a conversation test suite for the voice bot, for us and for the customer.

Each conversation is a YAML file (validated by the models below; a bad file names the file, the field,
what was expected and what was found): who calls, in which language, the caller's turns (speech
synthesised by the local TTS, DTMF digits, N seconds of silence, or speech while the bot talks) and
what must happen: the tool calls with their arguments, a clear yes before every write, a transfer
within N turns, the language of the replies, words that must and must not be said. The runner places
real calls through Kamailio with the smoke caller and reads what the bot did from the call record
the gateway stores (aicc.calls, call_lines, call_tool_calls, call_turns). The checker and the
aggregation are pure functions on that data, so they are unit-tested without a lab.

The suite shipped with the wheel (aicc/appliance/bots/eval/{zh,en}/*.yml) matches the demo retail
backend's seed (appliance/connectors/migrations/0002_demo_seed.sql).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Lang = Literal["zh", "en"]

# Failure classes, in the order the report lists them.
FAILURE_CLASSES = (
    "call",  # the call failed: not answered, no greeting, no record stored
    "tool_missing",  # an expected tool call did not run (or not with the expected outcome)
    "tool_args",  # an expected tool ran with other arguments
    "tool_unexpected",  # a forbidden tool ran, or a write nobody asked for
    "unconfirmed_write",  # a write ran without a clear yes
    "transfer",  # no transfer, a late one, or one that was not wanted
    "language",  # a reply in the other language
    "forbidden",  # the bot said something it must not (an invented status)
    "reply",  # the bot never said what it had to
)
FailureClass = Literal[
    "call",
    "tool_missing",
    "tool_args",
    "tool_unexpected",
    "unconfirmed_write",
    "transfer",
    "language",
    "forbidden",
    "reply",
]

# A knowledge-base lookup in the call record (appliance/voice/dialogue.py KB_STEP): the bot searching
# before it answers a general question is no tool call a conversation must name.
KB_STEP = "kb_answer"
# The demo connectors' write tools (ToolSpec.write): they must only run after a clear yes.
WRITE_TOOLS = frozenset({"change_address", "create_return", "block_card", "report_lost_card"})
SUITE_PACKAGE = "aicc.appliance.bots"
SUITE_FOLDER = "eval"


# --- the conversation files ---------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Turn(_Strict):
    """One caller turn: exactly one of say, dtmf, silence."""

    say: str | None = Field(None, min_length=1, description="words the caller speaks (local TTS)")
    dtmf: str | None = Field(None, pattern=r"^[0-9*#]+$", description="keys pressed, e.g. 100234#")
    silence: float | None = Field(None, gt=0, le=60, description="seconds the caller says nothing")
    barge_in: bool = Field(False, description="speak while the bot is still talking")
    barge_after_s: float = Field(1.0, ge=0, le=10, description="that many seconds into the bot's reply")

    @model_validator(mode="after")
    def _one_kind(self) -> Turn:
        kinds = [k for k in ("say", "dtmf", "silence") if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = " and ".join(kinds) if kinds else "none of them"
            raise ValueError(f"exactly one of say, dtmf, silence; found {found}")
        if self.barge_in and self.say is None:
            raise ValueError("barge_in only goes with say")
        return self

    @property
    def kind(self) -> str:
        return "say" if self.say is not None else "dtmf" if self.dtmf is not None else "silence"


class ArgMatch(_Strict):
    """An argument that matches a regular expression (addresses heard through G.711 vary)."""

    match: str = Field(min_length=1)

    @model_validator(mode="after")
    def _compiles(self) -> ArgMatch:
        try:
            re.compile(self.match)
        except re.error as exc:
            raise ValueError(f"a regular expression; found {self.match!r} ({exc})") from None
        return self


class ToolExpect(_Strict):
    tool: str = Field(min_length=1)
    args: dict[str, str | ArgMatch] = Field(default_factory=dict)
    ok: bool | None = Field(None, description="true: it succeeded; false: it failed (e.g. not found)")
    declined: bool = Field(False, description="a write the caller refused: proposed, never run")


class TransferExpect(_Strict):
    within: int = Field(1, ge=1, le=10, description="at most this many caller turns from from_turn")
    from_turn: int = Field(1, ge=1, description="the caller turn (1-based) that asks for it")


class Expect(_Strict):
    tools: list[ToolExpect] = Field(default_factory=list)
    exact: bool = Field(False, description="no tool calls other than the expected ones")
    forbid_tools: list[str] = Field(default_factory=list)
    transfer: TransferExpect | Literal[False] | None = Field(
        None, description="a transfer (within N turns), false: none, absent: not checked"
    )
    says: list[list[str]] = Field(
        default_factory=list, description="each group: the bot says one of these words at least once"
    )
    forbidden: list[str] = Field(default_factory=list, description="words the bot must never say")
    language: Lang | None = Field(None, description="the replies' language; the conversation's by default")


class Conversation(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    lang: Lang
    description: str = ""
    caller: str = Field("+8613800000001", pattern=r"^\+?[0-9A-Za-z_-]+$")
    tags: list[str] = Field(default_factory=list)
    turns: list[Turn] = Field(min_length=1)
    expect: Expect

    @model_validator(mode="after")
    def _coherent(self) -> Conversation:
        t = self.expect.transfer
        if t and t.from_turn > len(self.turns):
            raise ValueError(
                f"expect.transfer.from_turn: a turn of the conversation (1..{len(self.turns)}); "
                f"found {t.from_turn}"
            )
        if self.turns[0].barge_in:
            raise ValueError("turns[0].barge_in: the first turn cannot barge in (the greeting is waited for)")
        return self


class SuiteError(ValueError):
    """Conversation files that do not validate: one (file, field, message) per problem."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{w}: {f}: {m}" if f else f"{w}: {m}" for w, f, m in problems))

    def as_dict(self) -> dict[str, Any]:
        return {"problems": [{"file": w, "field": f, "message": m} for w, f, m in self.problems]}


def load_conversation_text(text: str, where: str) -> Conversation:
    from aicc.appliance.documents import DocumentError, load_text

    try:
        return load_text(Conversation, text, where)
    except DocumentError as exc:
        raise SuiteError([(exc.where, f, m) for f, m in exc.problems]) from None


def load_conversation(path: Path) -> Conversation:
    from aicc.appliance.documents import DocumentError, read_document

    try:
        text = read_document(path, "conversation")
    except DocumentError as exc:
        raise SuiteError([(exc.where, f, m) for f, m in exc.problems]) from None
    return load_conversation_text(text, str(path))


def default_suite() -> Path:
    from importlib.resources import files

    return Path(str(files(SUITE_PACKAGE))) / SUITE_FOLDER


def load_suite(folder: Path, lang: str | None = None, only: str | None = None) -> list[Conversation]:
    """Every *.yml / *.yaml under the folder (sorted); all problems in all files at once. A name used
    twice is an error; --lang and --only filter (--only: a name, or a part of one)."""
    if not folder.is_dir():
        raise SuiteError([(str(folder), "", "not a folder of conversation files")])
    paths = sorted(p for p in folder.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
    if not paths:
        raise SuiteError([(str(folder), "", "no conversation files (*.yml) in it")])
    problems: list[tuple[str, str, str]] = []
    convs: list[Conversation] = []
    seen: dict[str, Path] = {}
    for p in paths:
        try:
            c = load_conversation(p)
        except SuiteError as exc:
            problems += exc.problems
            continue
        if c.name in seen:
            problems.append(
                (str(p), "name", f"a name no other file uses; found {c.name!r}, as in {seen[c.name]}")
            )
            continue
        seen[c.name] = p
        convs.append(c)
    if problems:
        raise SuiteError(problems)
    if lang:
        convs = [c for c in convs if c.lang == lang]
    if only:
        exact = [c for c in convs if c.name == only]
        convs = exact or [c for c in convs if only in c.name]
    return convs


# --- what a call left, and the checker ----------------------------------------------------------


@dataclass
class ToolCallSeen:
    tool: str
    arguments: dict[str, Any]
    ok: bool
    confirmed: bool | None = None
    error: str = ""

    @property
    def declined(self) -> bool:
        return self.confirmed is False and not self.ok

    @property
    def ran(self) -> bool:
        return not self.declined


@dataclass
class CallData:
    """One conversation's call: the stored record plus what the caller heard and measured."""

    call_id: str = ""
    problem: str = ""  # the call itself failed (no answer, no greeting, no record)
    outcome: str = ""
    lines: list[tuple[str, str]] = field(default_factory=list)  # (speaker, text), as stored
    tool_calls: list[ToolCallSeen] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)  # the caller's ASR of each reply
    first_audio_s: list[float] = field(default_factory=list)  # end of caller speech -> bot audio
    answer_s: list[float] = field(default_factory=list)  # the gateway's per-turn 'turn' stage
    stages: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Failure:
    cls: FailureClass
    detail: str


@dataclass
class Verdict:
    name: str
    lang: str
    tags: list[str]
    ok: bool
    failures: list[Failure]
    data: CallData
    compound: bool = False
    compound_ok: bool | None = None  # compound requests: every part executed
    transfer_turns: int | None = None
    bad_writes: int = 0  # writes with wrong arguments or without a clear yes

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


TRANSFER_LINES = {
    "en": ("Let me transfer you to a colleague",),
    "zh": ("正在为您转接人工客服",),
}


def _norm(text: str) -> str:
    return re.sub(r"[\s,.;:!?，。；：！？、'\"-]+", "", str(text)).lower()


def arg_matches(want: str | ArgMatch, got: Any) -> bool:
    if isinstance(want, ArgMatch):
        return re.search(want.match, str(got), re.IGNORECASE) is not None
    return _norm(want) == _norm(got)


def call_matches(exp: ToolExpect, call: ToolCallSeen) -> bool:
    if call.tool != exp.tool or call.declined != exp.declined:
        return False
    if exp.ok is not None and not exp.declined and call.ok != exp.ok:
        return False
    return all(k in call.arguments and arg_matches(v, call.arguments[k]) for k, v in exp.args.items())


def caller_turns_before(lines: list[tuple[str, str]], index: int) -> int:
    """Caller turns before lines[index]: each utterance one, a run of DTMF keys one."""
    n, prev_dtmf = 0, False
    for speaker, text in lines[:index]:
        if speaker != "caller":
            prev_dtmf = False
            continue
        dtmf = text.startswith("<DTMF")
        if not (dtmf and prev_dtmf):
            n += 1
        prev_dtmf = dtmf
    return n


def transfer_turn(lines: list[tuple[str, str]], lang: str) -> int | None:
    """How many caller turns came before the bot's transfer line; None when it never said it."""
    for i, (speaker, text) in enumerate(lines):
        if speaker == "bot" and any(t in text for t in (*TRANSFER_LINES["en"], *TRANSFER_LINES["zh"])):
            return caller_turns_before(lines, i)
    return None


def reply_language(text: str) -> str | None:
    han = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    latin = len(re.findall(r"[A-Za-z]{2,}", text))
    if han == 0 and latin == 0:
        return None
    return "zh" if han >= latin else "en"


def _mentions(text: str, word: str) -> bool:
    if re.search(r"[A-Za-z]", word):
        return re.search(rf"(?<![A-Za-z]){re.escape(word.lower())}(?![A-Za-z])", text.lower()) is not None
    return word in text


def check(conv: Conversation, data: CallData) -> Verdict:
    """The conversation's expectations against what its call left. Pure: no I/O."""
    exp = conv.expect
    failures: list[Failure] = []
    compound = "compound" in conv.tags
    v = Verdict(conv.name, conv.lang, list(conv.tags), False, failures, data, compound=compound)
    if data.problem:
        failures.append(Failure("call", data.problem))
        v.compound_ok = False if compound else None
        return v
    calls = data.tool_calls
    used: set[int] = set()
    expected_writes: list[ToolExpect] = []
    for e in exp.tools:
        if e.tool in WRITE_TOOLS and not e.declined:
            expected_writes.append(e)
        hit = next((i for i, c in enumerate(calls) if i not in used and call_matches(e, c)), None)
        if hit is not None:
            used.add(hit)
            continue
        same = [c for c in calls if c.tool == e.tool and c.declined == e.declined]
        want = {k: (w.match if isinstance(w, ArgMatch) else w) for k, w in e.args.items()}
        if same and not any(
            all(k in c.arguments and arg_matches(w, c.arguments[k]) for k, w in e.args.items()) for c in same
        ):
            failures.append(
                Failure(
                    "tool_args", f"{e.tool}: expected arguments {want}; found {[c.arguments for c in same]}"
                )
            )
        else:
            what = "declined" if e.declined else {None: "run", True: "succeed", False: "fail"}[e.ok]
            found = [
                f"{c.tool}{c.arguments} ok={c.ok} confirmed={c.confirmed}" for c in calls
            ] or "no tool call"
            failures.append(Failure("tool_missing", f"{e.tool} {want} to {what}; found {found}"))
    for i, c in enumerate(calls):
        if c.tool in exp.forbid_tools and c.ran:
            failures.append(
                Failure("tool_unexpected", f"{c.tool}{c.arguments} ran, which this conversation forbids")
            )
        elif (
            exp.exact
            and i not in used
            and c.ran
            and c.tool != KB_STEP
            and not any(c.tool == e.tool for e in exp.tools)
        ):
            failures.append(Failure("tool_unexpected", f"{c.tool}{c.arguments} ran, nobody asked for it"))
    # Writes: every one that ran needs a clear yes and the arguments the caller asked for.
    for c in calls:
        if c.tool not in WRITE_TOOLS or not c.ran:
            continue
        bad = False
        if c.confirmed is not True:
            failures.append(Failure("unconfirmed_write", f"{c.tool}{c.arguments} ran without a clear yes"))
            bad = True
        if not any(
            all(k in c.arguments and arg_matches(w, c.arguments[k]) for k, w in e.args.items())
            for e in expected_writes
            if e.tool == c.tool
        ):
            if c.tool not in exp.forbid_tools and not any(f.cls == "tool_args" for f in failures):
                failures.append(Failure("tool_unexpected", f"write {c.tool}{c.arguments} was not asked for"))
            bad = True
        v.bad_writes += bad
    # Transfer.
    v.transfer_turns = None
    at = transfer_turn(data.lines, conv.lang)
    if exp.transfer:
        if at is None:
            failures.append(Failure("transfer", "the bot never transferred the call"))
        else:
            v.transfer_turns = at - (exp.transfer.from_turn - 1)
            if v.transfer_turns > exp.transfer.within or v.transfer_turns < 1:
                failures.append(
                    Failure(
                        "transfer",
                        f"transfer after {v.transfer_turns} turn(s) from turn {exp.transfer.from_turn}; "
                        f"expected within {exp.transfer.within}",
                    )
                )
    elif exp.transfer is False and at is not None:
        failures.append(
            Failure("transfer", f"the bot transferred the call after {at} turn(s); none was wanted")
        )
    # What the bot said: the stored lines (what it meant to say), else what the caller heard.
    said = [t for s, t in data.lines if s == "bot"] or [h for h in data.heard if h]
    want_lang = exp.language or conv.lang
    for text in said:
        got = reply_language(text)
        if got is not None and got != want_lang and not re.fullmatch(r"[\s\dA-Z.,-]+", text):
            failures.append(Failure("language", f"a reply in {got}, expected {want_lang}: {text!r}"))
            break
    everything = "\n".join(said)
    for word in exp.forbidden:
        if _mentions(everything, word):
            failures.append(Failure("forbidden", f"the bot said {word!r}, which it must not"))
    for group in exp.says:
        if not any(_mentions(everything, w) for w in group):
            failures.append(Failure("reply", f"the bot never said {' or '.join(repr(w) for w in group)}"))
    if compound:
        v.compound_ok = not any(f.cls in ("tool_missing", "tool_args") for f in failures)
    v.ok = not failures
    return v


# --- aggregation --------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (k - lo), 3)


def summarize(verdicts: list[Verdict]) -> dict[str, Any]:
    """Per language: conversations right, pass rate, failures per class, compound requests with every
    part executed, transfers within one turn, bad writes, first-audio and answer latency p50/p95."""
    out: dict[str, Any] = {}
    for lang in sorted({v.lang for v in verdicts}):
        vs = [v for v in verdicts if v.lang == lang]
        by_class: dict[str, int] = dict.fromkeys(FAILURE_CLASSES, 0)
        for v in vs:
            for cls in {f.cls for f in v.failures}:
                by_class[cls] += 1
        compound = [v for v in vs if v.compound]
        transfers = [
            v for v in vs if v.transfer_turns is not None or any(f.cls == "transfer" for f in v.failures)
        ]
        wanted = [v for v in transfers if "transfer" in v.tags]
        first = [x for v in vs for x in v.data.first_audio_s]
        answer = [x for v in vs for x in v.data.answer_s]
        right = sum(v.ok for v in vs)
        out[lang] = {
            "conversations": len(vs),
            "right": right,
            "pass_rate": round(right / len(vs), 3) if vs else None,
            "failures_by_class": {k: n for k, n in by_class.items() if n},
            "compound": len(compound),
            "compound_all_parts": sum(bool(v.compound_ok) for v in compound),
            "transfers_wanted": len(wanted),
            "transfers_within_one_turn": sum(
                v.transfer_turns is not None and v.transfer_turns <= 1 for v in wanted
            ),
            "bad_writes": sum(v.bad_writes for v in vs),
            "first_audio_s": {"p50": percentile(first, 0.5), "p95": percentile(first, 0.95), "n": len(first)},
            "answer_s": {"p50": percentile(answer, 0.5), "p95": percentile(answer, 0.95), "n": len(answer)},
        }
    return out


def report_json(verdicts: list[Verdict]) -> dict[str, Any]:
    total = len(verdicts)
    right = sum(v.ok for v in verdicts)
    return {
        "ok": total > 0 and right == total,
        "conversations": total,
        "right": right,
        "pass_rate": round(right / total, 3) if total else None,
        "by_language": summarize(verdicts),
        "results": [v.as_dict() for v in verdicts],
    }


def print_report(verdicts: list[Verdict]) -> None:
    from aicc.installer import output

    c = output.console
    summary = summarize(verdicts)
    rows = []
    for lang, s in summary.items():
        fa, an = s["first_audio_s"], s["answer_s"]
        rows.append(
            (
                lang,
                f"{s['right']}/{s['conversations']} ({s['pass_rate'] * 100:.0f} %)",
                f"{s['compound_all_parts']}/{s['compound']}",
                f"{s['transfers_within_one_turn']}/{s['transfers_wanted']}",
                str(s["bad_writes"]),
                f"{fa['p50']} / {fa['p95']}",
                f"{an['p50']} / {an['p95']}",
            )
        )
    c.print(
        output.table(
            "conversations per language",
            [
                "lang",
                "right",
                "compound: all parts",
                "transfers <= 1 turn",
                "bad writes",
                "first audio p50/p95 s",
                "answer p50/p95 s",
            ],
            rows,
        )
    )
    cls_rows = [
        (cls, *(str(summary[lang]["failures_by_class"].get(cls, 0)) for lang in summary))
        for cls in FAILURE_CLASSES
        if any(summary[lang]["failures_by_class"].get(cls) for lang in summary)
    ]
    if cls_rows:
        c.print(output.table("failed conversations per failure class", ["class", *summary], cls_rows))
    for v in verdicts:
        if v.ok:
            continue
        c.print(f"\n[bold red]{v.name}[/bold red] ({v.lang}) call {v.data.call_id or '-'}", highlight=False)
        for f in v.failures:
            c.print(f"  {f.cls}: {f.detail}", highlight=False)
        for speaker, text in v.data.lines:
            c.print(f"    {speaker:>6}: {text}", highlight=False)
        if not v.data.lines:
            for h in v.data.heard:
                c.print(f"    heard: {h}", highlight=False)
        for t in v.data.tool_calls:
            c.print(f"    tool: {t.tool}{t.arguments} ok={t.ok} confirmed={t.confirmed}", highlight=False)


# --- real calls ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalParams:
    proxy: tuple[str, int]
    targets: dict[str, str]  # lang -> request URI
    dsn: str | None
    model_store: Path = Path("/var/cache/aicc/models")
    call_timeout_s: float = 120.0
    reply_timeout_s: float = 45.0


def params_from_site(inventory: Path, site_dir: Path | None) -> EvalParams:
    from aicc.installer import smoke

    targets: dict[str, str] = {}
    base = None
    for lang in ("en", "zh"):
        try:
            p = smoke.params_from_site(inventory, site_dir, lang, None, None)
        except Exception:
            if lang == "en":
                raise
            continue
        targets[lang] = p.target
        base = base or p
    assert base is not None
    if not base.dsn:
        from aicc.installer.errors import InputError

        raise InputError(
            "the inventory has no [db] host: the eval reads what the bot did from the call records",
            where=str(inventory),
        )
    return EvalParams(proxy=base.proxy, targets=targets, dsn=base.dsn)


async def _fetch_record(dsn: str, call_id: str, wait_s: float = 15.0) -> dict[str, Any] | None:
    """The stored record once the gateway closed it (it stores just after the BYE)."""
    import psycopg
    from psycopg.rows import dict_row

    deadline = time.monotonic() + wait_s
    while True:
        async with await psycopg.AsyncConnection.connect(
            dsn, connect_timeout=5, row_factory=dict_row
        ) as conn:
            cur = await conn.execute(
                "SELECT outcome, ended_at FROM aicc.calls WHERE call_id = %s", (call_id,)
            )
            row = await cur.fetchone()
            if row is not None and (row["ended_at"] is not None or time.monotonic() > deadline):
                lines = await (
                    await conn.execute(
                        "SELECT speaker, text FROM aicc.call_lines WHERE call_id = %s ORDER BY seq",
                        (call_id,),
                    )
                ).fetchall()
                tools = await (
                    await conn.execute(
                        "SELECT tool, arguments, ok, confirmed, error FROM aicc.call_tool_calls "
                        "WHERE call_id = %s ORDER BY seq",
                        (call_id,),
                    )
                ).fetchall()
                turns = await (
                    await conn.execute(
                        "SELECT stages FROM aicc.call_turns WHERE call_id = %s ORDER BY turn", (call_id,)
                    )
                ).fetchall()
                return {"outcome": row["outcome"], "lines": lines, "tools": tools, "turns": turns}
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.5)


class _Voices:
    """The caller's TTS per language and one ASR, opened once for the whole run."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.tts: dict[str, Any] = {}
        self.asr: Any = None
        self.cache: dict[tuple[str, str], tuple[bytes, int]] = {}

    async def speech(self, text: str, lang: str) -> tuple[bytes, int]:
        from aicc.installer.smoke import _open_tts

        if (lang, text) not in self.cache:
            if lang not in self.tts:
                self.tts[lang] = await asyncio.to_thread(_open_tts, self.store, lang)  # type: ignore[arg-type]
            parts = [c async for c in self.tts[lang].synthesize(text, language=lang)]
            if not parts:
                raise RuntimeError(f"the local TTS produced no audio for {text!r}")
            self.cache[(lang, text)] = (b"".join(p.pcm for p in parts), parts[0].sample_rate)
        return self.cache[(lang, text)]

    async def transcribe(self, pcm: bytes, rate: int, lang: str) -> str:
        from aicc.installer.smoke import _open_asr, _transcribe

        if self.asr is None:
            self.asr = await asyncio.to_thread(_open_asr, self.store)
        return await _transcribe(self.asr, pcm, rate, lang)  # type: ignore[arg-type]


async def _converse(conv: Conversation, params: EvalParams, voices: _Voices, data: CallData) -> None:
    from aicc.appliance.voice.caller import Caller
    from aicc.appliance.voice.dialog import CallFailed
    from aicc.installer.smoke import _slice, local_ip_towards, wait_quiet

    target = params.targets.get(conv.lang)
    if target is None:
        data.problem = f"no service number for {conv.lang}"
        return
    caller = Caller(local_ip=local_ip_towards(*params.proxy), number=conv.caller)
    await caller.start()
    try:
        try:
            await caller.call(target, params.proxy, ring_timeout=30)
        except CallFailed as exc:
            data.problem = f"the call was not answered: SIP {exc.status} {exc.reason}"
            return
        data.call_id = caller.dialog.call_id if caller.dialog else ""
        g_start, _ = await wait_quiet(caller, time.monotonic(), timeout=30)
        if g_start is None:
            data.problem = "no greeting within 30 s of answering"
            return
        for i, turn in enumerate(conv.turns):
            nxt = conv.turns[i + 1] if i + 1 < len(conv.turns) else None
            if turn.silence is not None:
                since = time.monotonic()
                await asyncio.sleep(turn.silence)
                start = caller.heard.first_voice_after(since)
                if start is not None:
                    _, end = await wait_quiet(caller, since, timeout=params.reply_timeout_s)
                    data.heard.append(
                        await voices.transcribe(_slice(caller, start, end), caller.sample_rate, conv.lang)
                    )
                continue
            if turn.dtmf is not None:
                for key in turn.dtmf:
                    caller.dtmf(key)
                    await asyncio.sleep(0.3)
                spoken_end = time.monotonic()
                if not turn.dtmf.endswith("#") and len(turn.dtmf) > 1:
                    continue  # keys without # are still being collected: no reply yet
            else:
                assert turn.say is not None
                pcm, rate = await voices.speech(turn.say, conv.lang)
                caller.play(pcm, rate)
                spoken_end = await caller.played()
            if nxt is not None and nxt.barge_in:
                # Speak into the bot's reply: wait for it to start, then the next turn interrupts.
                deadline = time.monotonic() + params.reply_timeout_s
                start = None
                while start is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                    start = caller.heard.first_voice_after(spoken_end)
                if start is not None:
                    data.first_audio_s.append(round(start - spoken_end, 3))
                    await asyncio.sleep(nxt.barge_after_s)
                continue
            r_start, r_end = await wait_quiet(caller, spoken_end, timeout=params.reply_timeout_s)
            if r_start is None:
                data.heard.append("")
                continue
            data.first_audio_s.append(round(r_start - spoken_end, 3))
            data.heard.append(
                await voices.transcribe(_slice(caller, r_start, r_end), caller.sample_rate, conv.lang)
            )
            if caller.remote_bye.is_set():
                break
    finally:
        await caller.hangup()
        await caller.close()


async def run_conversation(conv: Conversation, params: EvalParams, voices: _Voices) -> CallData:
    data = CallData()
    try:
        await asyncio.wait_for(_converse(conv, params, voices, data), timeout=params.call_timeout_s)
    except TimeoutError:
        data.problem = data.problem or f"the conversation took longer than {params.call_timeout_s:.0f} s"
    except OSError as exc:
        data.problem = f"cannot reach the SIP proxy {params.proxy[0]}:{params.proxy[1]}: {exc}"
    if not data.call_id or data.problem.startswith("the call was not answered") or params.dsn is None:
        return data
    try:
        rec = await _fetch_record(params.dsn, data.call_id)
    except Exception as exc:
        data.problem = data.problem or f"cannot read the call record: {type(exc).__name__}: {exc}"
        return data
    if rec is None:
        data.problem = data.problem or "the gateway stored no call record"
        return data
    data.outcome = str(rec["outcome"])
    data.lines = [(str(r["speaker"]), str(r["text"])) for r in rec["lines"]]
    data.tool_calls = [
        ToolCallSeen(
            str(r["tool"]), dict(r["arguments"]), bool(r["ok"]), r["confirmed"], str(r["error"] or "")
        )
        for r in rec["tools"]
    ]
    data.stages = [{str(k): float(x) for k, x in dict(r["stages"]).items()} for r in rec["turns"]]
    data.answer_s = [s["turn"] for s in data.stages if "turn" in s]
    return data


async def run_suite(convs: list[Conversation], params: EvalParams, progress: Any = None) -> list[Verdict]:
    voices = _Voices(params.model_store)
    verdicts = []
    for conv in convs:
        data = await run_conversation(conv, params, voices)
        verdict = check(conv, data)
        verdicts.append(verdict)
        if progress is not None:
            progress(verdict)
    return verdicts
