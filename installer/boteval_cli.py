"""`aicc bot`: the voice bot's conversation test suite (`aicc bot eval`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aicc.installer.errors import EXIT_FAILED, EXIT_OK, InputError

app = typer.Typer(help="The voice bot: run its conversation test suite against a site.", no_args_is_help=True)


@app.command("eval")
def bot_eval(
    inventory: Annotated[Path, typer.Option("--inventory", "-i", help="The site's inventory.ini.")],
    suite: Annotated[
        Path | None,
        typer.Option(
            "--suite", help="A folder of conversation files (*.yml); the shipped demo suite by default."
        ),
    ] = None,
    lang: Annotated[str | None, typer.Option("--lang", help="Only the zh or en conversations.")] = None,
    only: Annotated[
        str | None, typer.Option("--only", help="Only the conversation of this name (or part of one).")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON document: every result, transcripts.")
    ] = False,
    site: Annotated[Path | None, typer.Option("--site", help="Site folder, if not the inventory's.")] = None,
    call_timeout: Annotated[
        float, typer.Option("--call-timeout", help="Seconds one conversation may take.")
    ] = 120.0,
) -> None:
    """Place a real call through Kamailio for every conversation of the suite: speak each caller turn
    (local TTS), press its keys, stay silent or talk over the bot; then check the stored call record:
    tool calls and arguments, a clear yes before every write, transfers, the replies' language, words
    the bot must and must not say. Prints the pass rate per language and failure class and the
    transcripts of failures. Exit 0 when every conversation passed, 1 when one failed, 2 on a bad
    conversation file (named with the field, what was expected and what was found).
    """
    import asyncio

    from aicc.installer import boteval, output

    if lang is not None and lang not in ("zh", "en"):
        raise InputError(f"--lang must be zh or en, not {lang!r}")
    folder = suite if suite is not None else boteval.default_suite()
    try:
        convs = boteval.load_suite(folder, lang, only)
    except boteval.SuiteError as exc:
        raise InputError(
            "conversation files do not validate:\n"
            + "\n".join(f"  {w}: {f + ': ' if f else ''}{m}" for w, f, m in exc.problems),
            where=str(folder),
        ) from None
    if not convs:
        raise InputError("no conversation matches --lang/--only", where=str(folder))
    params = boteval.params_from_site(inventory, site)
    params = boteval.EvalParams(**{**params.__dict__, "call_timeout_s": call_timeout})

    def progress(v: boteval.Verdict) -> None:
        if not json_out:
            mark = (
                "[green]ok[/green]"
                if v.ok
                else "[red]FAIL[/red] " + ", ".join(sorted({f.cls for f in v.failures}))
            )
            output.console.print(f"{v.lang} {v.name}: {mark}", highlight=False)

    verdicts = asyncio.run(boteval.run_suite(convs, params, progress))
    ok = all(v.ok for v in verdicts)
    if json_out:
        output.emit_json(boteval.report_json(verdicts))
    else:
        boteval.print_report(verdicts)
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)
