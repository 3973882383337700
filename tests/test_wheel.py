"""A non-editable wheel carries every module, the roles and the playbooks, and works on its own."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("installer", "appliance", "models", "hardening", "monitoring")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        timeout=600,
    )
    return next(out.glob("aicc-*.whl"))


def test_wheel_carries_every_module_and_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *COMPONENTS, "roles"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    missing = []
    for rel in tracked:
        if "__pycache__" in rel or not (ROOT / rel).is_file():
            continue
        if f"aicc/{rel}" not in names:
            missing.append(rel)
    assert not missing, f"files not in the wheel (add their package to pyproject.toml): {missing[:20]}"
    # Built, not tracked: the desktop's JsSIP bundle and the operations page's uPlot (scripts/build-web).
    assert "aicc/appliance/web/static/vendor/jssip.min.js" in names
    assert "aicc/appliance/web/static/vendor/uPlot.iife.min.js" in names


def test_installed_wheel_runs_and_finds_its_roles(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    # Dependencies come from this test run's environment (no network needed); its editable hook for the
    # checkout is a .pth file that a path entry does not execute, so only the wheel's aicc is importable.
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    res = subprocess.run(
        [str(venv / "bin" / "aicc"), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr
    assert "preflight" in res.stdout
    probe = (
        "from aicc.installer.playbook import roles_dir, playbooks_dir; "
        "print(roles_dir()); print(playbooks_dir() / 'site.yml')"
    )
    roles, site_yml = subprocess.run(
        [str(py), "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout.split()
    assert roles.startswith(str(venv)) and Path(roles, "common", "tasks", "main.yml").is_file()
    assert site_yml.startswith(str(venv)) and Path(site_yml).is_file()
