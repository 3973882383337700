"""`aicc models ...` verbs."""

from __future__ import annotations

import typer

app = typer.Typer(help="The model catalog: list, show, verify and fetch local AI models.", no_args_is_help=True)
