"""A wheelhouse for hosts without internet: aicc and every dependency as wheels, in one folder.

The [speech] (and [voicebot]) hosts install aicc with its engines from this folder with
`pip --no-index`; the offline bundle carries the same folder. Built on the installer host with pip,
the ordinary client; wheels already in the folder are reused (`--find-links`), so a rerun is quick.

aicc's own wheel is rebuilt each time from a checkout (its version does not change with every
commit), but the file is only replaced when its contents differ: the roles copy the folder with
checksums, so an unchanged wheel keeps a second install at changed=0.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from aicc.installer.errors import RunFailed

DEFAULT_WHEELHOUSE = Path("/var/cache/aicc/wheelhouse")


def checkout_root() -> Path | None:
    """The source tree this aicc runs from (editable installs, CI), or None for an installed release."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "aicc"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def source_requirement(extras: str = "engines,app") -> str:
    """This checkout or the installed release, with the extras the hosts install (engines, app)."""
    root = checkout_root()
    return f"{root}[{extras}]" if root else f"aicc[{extras}]=={metadata.version('aicc')}"


def _contents(wheel: Path) -> set[tuple[str, int]]:
    """What a wheel holds, blind to the zip timestamps (RECORD is left out: it lists the same hashes)."""
    with zipfile.ZipFile(wheel) as z:
        return {(i.filename, i.CRC) for i in z.infolist() if not i.filename.endswith("/RECORD")}


def _pip_wheel(args: list[str], where: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RunFailed(
            f"pip could not build the wheelhouse: {proc.stderr.strip()[-600:]}",
            where=str(where),
            fix="check access to the package index (or copy the bundle's wheels there)",
        )


def build_web(root: Path) -> None:
    """The pages' npm bundle (JsSIP, uPlot) into the checkout's appliance/web/static/vendor, which the
    wheel carries: built from the pinned lock file, cached, so usually a copy."""
    proc = subprocess.run([str(root / "scripts" / "build-web")], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RunFailed(
            f"could not bundle the pages' JsSIP and uPlot: {proc.stderr.strip()[-600:]}",
            where=str(root / "appliance" / "web" / "package-lock.json"),
            fix="install npm (apt-get install npm) and allow access to the npm registry once",
        )


def refresh_own_wheel(dest: Path = DEFAULT_WHEELHOUSE) -> bool:
    """From a checkout, put this code's aicc wheel into the wheelhouse (aicc only, no dependencies);
    True when the wheel there changed. A release install has nothing to refresh: the bundle's
    wheelhouse already holds its own wheel."""
    root = checkout_root()
    if root is None:
        return False
    dest.mkdir(parents=True, exist_ok=True)
    build_web(root)
    with tempfile.TemporaryDirectory(prefix="aicc-wheel-") as tmp:
        _pip_wheel(["--no-deps", "-w", tmp, str(root)], dest)
        built = next(Path(tmp).glob("aicc-*.whl"))
        old = sorted(dest.glob("aicc-*.whl"))
        if [o.name for o in old] == [built.name] and _contents(old[0]) == _contents(built):
            return False
        for o in old:
            o.unlink()
        shutil.move(built, dest / built.name)
    return True


def build_wheelhouse(dest: Path = DEFAULT_WHEELHOUSE, extras: str = "engines,app") -> list[Path]:
    """aicc (fresh from a checkout) and every dependency of the extras the hosts install."""
    dest.mkdir(parents=True, exist_ok=True)
    refresh_own_wheel(dest)
    # From a checkout, pip resolves the dependencies of the path (and rewrites aicc's wheel, so keep
    # the refreshed one); from a release, of the pinned version.
    own = sorted(dest.glob("aicc-*.whl"))
    keep = {o: o.read_bytes() for o in own}
    _pip_wheel(["--find-links", str(dest), "-w", str(dest), source_requirement(extras)], dest)
    for path, data in keep.items():
        path.write_bytes(data)
    return sorted(dest.glob("*.whl"))
