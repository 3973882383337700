"""`aicc ivr ...` verbs: validate a flow file, simulate a call through it without a phone.

The flow modules are imported by the verbs, not here: `aicc --help` stays fast.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from aicc.installer import output
from aicc.installer.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, AiccError, InputError

if TYPE_CHECKING:
    from aicc.appliance.documents import DocumentError
    from aicc.appliance.ivr.calendar import Calendar
    from aicc.appliance.ivr.flow import Flow

app = typer.Typer(
    help=(
        "IVR flows: check a flow file, and walk a call through it without a phone.\n\n"
        "The shipped flows are in appliance/ivr/flows/ (retail-en, retail-zh, bank-card).\n\n"
        "Exit codes: 0 ok, 1 the simulated call ended in an error or a loop, 2 an invalid flow or input."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

FileArg = Annotated[Path, typer.Argument(help="The flow's YAML file.", show_default=False)]
CalendarsOpt = Annotated[
    Path | None,
    typer.Option(
        "--calendars",
        help="A calendars YAML (`calendars: [...]`) adding to, or replacing by name, the shipped "
        "`always` and `cn-office`.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of text.")]


def _fail(exc: AiccError | DocumentError, as_json: bool) -> typer.Exit:
    """Print what is wrong (every problem of a document) and give the exit code: 2, input error."""
    from aicc.appliance.documents import DocumentError

    if as_json:
        if isinstance(exc, DocumentError):
            output.emit_json({"ok": False, "error": str(exc), **exc.as_dict()})
        else:
            output.emit_json({"ok": False, **exc.as_dict()})
    elif isinstance(exc, DocumentError):
        output.err_console.print(
            f"[bold red]invalid:[/bold red] {escape(exc.where)}: {len(exc.problems)} problem(s)",
            highlight=False,
        )
        for field, message in exc.problems:
            line = f"{exc.where}: {field}: {message}" if field else f"{exc.where}: {message}"
            output.err_console.print(f"  {escape(line)}", highlight=False)
    else:
        output.err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)
    return typer.Exit(exc.exit_code if isinstance(exc, AiccError) else EXIT_USAGE)


def _load(file: Path, calendars_file: Path | None) -> tuple[Flow, dict[str, Calendar]]:
    from aicc.appliance.ivr.calendar import load_calendars
    from aicc.appliance.ivr.flow import load_flow

    calendars = load_calendars(calendars_file)
    return load_flow(file, calendars=calendars), calendars


def print_line(text: str) -> None:
    output.console.print(text, markup=False, highlight=False, soft_wrap=True)


def parse_at(text: str | None) -> datetime:
    """--at: a date and time; without a UTC offset it is the local time of the flow's calendars."""
    if text is None:
        return datetime.now(UTC)
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"--at {text!r} is not a date and time",
            fix='write it as "2026-12-24 20:00" (the calendar\'s local time) or 2026-12-24T20:00+08:00',
        ) from None


@app.command()
def validate(file: FileArg, calendars: CalendarsOpt = None, json_out: JsonOpt = False) -> None:
    """Check a flow: its fields, that every edge names a node, that every node is reachable from
    start, that something ends the call, that texts cover the flow's languages, menus and calendars.

    Prints `ok: N nodes, languages ...`, or every problem (file: field: what is wrong), exit 2.

    Example: `aicc ivr validate appliance/ivr/flows/retail-en.yml`
    """
    from aicc.appliance.documents import DocumentError

    try:
        flow, _ = _load(file, calendars)
    except DocumentError as exc:
        raise _fail(exc, json_out) from None
    if json_out:
        output.emit_json(
            {
                "ok": True,
                "file": str(file),
                "name": flow.name,
                "nodes": len(flow.nodes),
                "languages": flow.languages,
            }
        )
        return
    print_line(f"ok: {len(flow.nodes)} nodes, languages {', '.join(flow.languages)} ({flow.name}, {file})")


@app.command("simulate")
def simulate_cmd(
    file: FileArg,
    inputs: Annotated[
        str,
        typer.Option(
            "--input",
            help="The caller's script, comma-separated: keys (1, #, 123456#), say:TEXT, timeout, "
            "bot:transfer[:intent], bot:end, bot:hangup, bot:busy, queue:OUTCOME (served, callback, "
            'no_agents, timeout, failed, hangup), lookup:{"tier": "vip"}, lookup:fail, hangup.',
        ),
    ] = "",
    at: Annotated[
        str | None,
        typer.Option(
            help='When the call happens, e.g. "2026-12-24 20:00" (the calendar\'s local time); default now.'
        ),
    ] = None,
    lang: Annotated[
        str | None, typer.Option(help="The call's starting language (default: the flow's).")
    ] = None,
    caller: Annotated[str, typer.Option(help="The caller's number.")] = "13800138000",
    calendars: CalendarsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Walk a call through a flow without a phone, and print its path: one line per node (what was
    said, heard and decided), then the outcome.

    Each input is taken, in order, by the next node that waits for the caller, the bot or the queue.
    With no input left the caller is silent, a bot ends the conversation and a queue serves the call.

    Example: `aicc ivr simulate retail-en.yml --input 1,bot:transfer:create_return,queue:served,5`

    Example: `aicc ivr simulate my-flow.yml --calendars cal.yml --at "2026-10-02 10:00" --lang zh`
    """
    from aicc.appliance.documents import DocumentError
    from aicc.appliance.ivr.simulate import ScriptError, simulate, split_inputs

    try:
        flow, known = _load(file, calendars)
        when = parse_at(at)
        if lang is not None and lang not in flow.languages:
            raise InputError(
                f"--lang {lang!r} is not one of the flow's languages",
                fix=f"use one of: {', '.join(flow.languages)}",
            )
        script = split_inputs(inputs)
        try:
            result, io = asyncio.run(
                simulate(flow, script, at=when, caller=caller, calendars=known, language=lang)
            )
        except ScriptError as exc:
            raise InputError(f"--input: {exc}") from None
    except (AiccError, DocumentError) as exc:
        raise _fail(exc, json_out) from None
    ended_well = result.outcome in ("hangup_by_flow", "caller_hung_up")
    # A script that does not fit the flow is an input error; a flow that loops or fails is a failed check.
    code = EXIT_USAGE if io.script_error else EXIT_OK if ended_well else EXIT_FAILED
    if json_out:
        doc: dict[str, Any] = {
            "ok": code == EXIT_OK,
            "flow": flow.name,
            "at": when.isoformat(),
            "caller": caller,
            "outcome": result.outcome,
            "path": [{"node": s.node, "type": s.type, "detail": s.detail} for s in result.path],
            "variables": result.variables,
            "unused_inputs": io.unused,
        }
        if io.script_error:
            doc["error"] = f"--input: {io.script_error}"
        output.emit_json(doc)
        raise typer.Exit(code)
    print_line(
        f"{flow.name} at {when.isoformat(' ', 'minutes')}, caller {caller}, language {lang or flow.language}"
    )
    width = max(len(s.node) for s in result.path)
    for number, step in enumerate(result.path, 1):
        print_line(f"{number:>3}  {step.node:<{width}}  {step.type:<8}  {step.detail}")
    print_line(f"outcome: {result.outcome}")
    print_line("variables: " + ", ".join(f"{k}={v}" for k, v in result.variables.items()))
    if io.unused and not io.script_error:
        print_line(f"unused inputs (the call ended first): {', '.join(io.unused)}")
    if io.script_error:
        output.err_console.print(
            f"[bold red]error:[/bold red] --input: {escape(str(io.script_error))}", highlight=False
        )
    raise typer.Exit(code)
