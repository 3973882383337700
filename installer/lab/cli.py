"""`aicc lab ...` verbs."""

from __future__ import annotations

import typer

app = typer.Typer(help="Local test hosts: Debian 12 containers on this machine (systemd-nspawn).", no_args_is_help=True)
