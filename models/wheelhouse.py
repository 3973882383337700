"""A wheelhouse for hosts without internet: aicc and every dependency as wheels, in one folder.

The [speech] (and [voicebot]) hosts install aicc with its engines from this folder with
`pip --no-index`; the offline bundle carries the same folder. Built on the installer host with pip,
the ordinary client; wheels already in the folder are reused (`--find-links`), so a rerun is quick.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from aicc.installer.errors import RunFailed

DEFAULT_WHEELHOUSE = Path("/var/cache/aicc/wheelhouse")


def source_requirement(extras: str = "engines") -> str:
    """This checkout (editable installs, CI) or the installed release, with the engine extras."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "aicc"' in pyproject.read_text(encoding="utf-8"):
        return f"{root}[{extras}]"
    return f"aicc[{extras}]=={metadata.version('aicc')}"


def build_wheelhouse(dest: Path = DEFAULT_WHEELHOUSE, extras: str = "engines") -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("aicc-*.whl"):
        old.unlink()  # always rebuild aicc itself: a stale wheel would install yesterday's code
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--disable-pip-version-check",
            "-q",
            "--find-links",
            str(dest),
            "-w",
            str(dest),
            source_requirement(extras),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RunFailed(
            f"pip could not build the wheelhouse: {proc.stderr.strip()[-600:]}",
            where=str(dest),
            fix="check access to the package index (or copy the bundle's wheels there)",
        )
    return sorted(dest.glob("*.whl"))
