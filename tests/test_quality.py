"""Static quality gates run by the test suite: ruff, mypy (strict) and ansible-lint (production)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMPONENTS = ("installer", "appliance", "models", "hardening", "monitoring")


def run(
    cmd: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        env={**os.environ, **(env or {})},
    )


def test_ruff_lint_and_format() -> None:
    lint = run([str(BIN / "ruff"), "check", "."])
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run([str(BIN / "ruff"), "format", "--check", "."])
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict(tmp_path: Path) -> None:
    # The components import as aicc.<component> through setuptools' package-dir mapping, which mypy
    # cannot follow; a tree of symlinks gives it the same layout the wheel has.
    (tmp_path / "aicc").mkdir()
    for comp in COMPONENTS:
        (tmp_path / "aicc" / comp).symlink_to(ROOT / comp)
    args = [x for comp in COMPONENTS for x in ("-p", f"aicc.{comp}")]
    res = run([str(BIN / "mypy"), "--config-file", str(ROOT / "pyproject.toml"), *args], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_ansible_lint_production_profile() -> None:
    res = run(
        [
            str(BIN / "ansible-lint"),
            "--profile",
            "production",
            "--offline",
            "--nocolor",
            "installer/playbooks/site.yml",
            "installer/playbooks/harden.yml",
            "roles",
        ],
        env={"ANSIBLE_ROLES_PATH": str(ROOT / "roles")},
    )
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
