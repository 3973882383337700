"""`aicc demo` as a Typer command, and its last step while `aicc smoke` does not exist yet."""

from __future__ import annotations

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


def test_without_a_smoke_command_the_demo_says_so_plainly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import aicc.installer.cli as root_cli

    fake = typer.Typer()
    fake.command("install")(lambda: None)
    fake.command("status")(lambda: None)
    monkeypatch.setattr(root_cli, "app", fake)
    assert demo_mod._smoke(Site(tmp_path)) is True
    assert "not available in this version yet" in capsys.readouterr().out.replace("\n", " ")
