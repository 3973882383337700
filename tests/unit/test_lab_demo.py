"""`aicc demo` as a Typer command, and its last step: the smoke call on the demo's inventory."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from aicc.installer.lab import demo as demo_mod
from aicc.installer.site import Site


def test_demo_mounts_as_a_typer_command_with_its_options() -> None:
    app = typer.Typer()
    app.command("demo")(demo_mod.demo)
    app.command("other")(lambda: None)  # two commands, so `demo` stays a named sub-command
    res = CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for option in ("--site", "--hosts", "--name", "--subnet", "--force"):
        assert option in res.output


def test_last_step_places_the_smoke_call_and_reports_its_result(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1 if len(calls) > 1 else 0)

    monkeypatch.setattr(demo_mod.subprocess, "run", fake_run)
    site = Site(tmp_path)
    assert demo_mod._smoke(site) is True
    assert calls[0][1:] == ["smoke", "-i", str(site.inventory_path)]
    assert demo_mod._smoke(site) is False  # a failed call fails the demo
