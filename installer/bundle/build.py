"""`aicc bundle build`: gather every artifact (the caches under /var/cache/aicc, built or fetched once),
lay them out in a staging folder of hard links, sign, and write one archive.

A second build with nothing changed reuses every cache and every file hash, and leaves an archive
whose manifest would not change untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from aicc.installer import gnupg
from aicc.installer.bundle import aptrepo, sbom
from aicc.installer.bundle.archive import (
    HEAD,
    MANIFEST,
    PUBLIC_KEY,
    SIGNATURE,
    FileEntry,
    HashCache,
    Manifest,
    now_iso,
    write_archive,
)
from aicc.installer.bundle.contents import role_packages
from aicc.installer.errors import InputError

CACHE = Path(os.environ.get("AICC_BUNDLE_CACHE", "/var/cache/aicc/bundle"))
# The release key that signs every bundle this machine builds (sites pin it on first import).
KEY_HOME = CACHE / "signing"
LLAMA_SERVER = "llama-server/llama-server"


@dataclass
class BuildResult:
    archive: Path
    manifest: Manifest
    debs_named: int
    debs_total: int
    unchanged: bool
    seconds: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        parts: dict[str, int] = {}
        for f in self.manifest.files:
            part = f.path.split("/", 1)[0]
            parts[part] = parts.get(part, 0) + f.size
        return {
            "archive": str(self.archive),
            "aicc_version": self.manifest.aicc_version,
            "signing_key": self.manifest.signing_key,
            "files": len(self.manifest.files),
            "bytes": self.manifest.total_size(),
            "bytes_by_part": parts,
            "debs_named": self.debs_named,
            "debs_total": self.debs_total,
            "models": self.manifest.models,
            "unchanged": self.unchanged,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
        }


def aicc_version() -> str:
    return metadata.version("aicc")


def ensure_release_key(home: Path = KEY_HOME) -> str:
    return gnupg.ensure_key(
        home, f"aicc offline bundle release key ({socket.gethostname()}) <aicc-bundle@invalid>"
    )


def trusted_key_of_this_machine(home: Path = KEY_HOME) -> bytes | None:
    fpr = gnupg.fingerprint(home)
    return gnupg.export_public(home, fpr) if fpr else None


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def build(
    out: Path,
    *,
    models: list[str] | None,
    with_debs: list[Path],
    console: Console,
    quiet: bool = False,
) -> BuildResult:
    import time

    from aicc.installer.artifacts import ensure_artifacts
    from aicc.installer.lab import image
    from aicc.installer.playbook import roles_dir
    from aicc.models import store
    from aicc.models.catalog import load_catalog
    from aicc.models.llama_build import DEFAULT_CACHE, cached_binary
    from aicc.models.wheelhouse import DEFAULT_WHEELHOUSE

    def log(msg: str) -> None:
        if not quiet:
            console.print(msg, highlight=False, markup=False)

    if out.is_dir():
        raise InputError(
            "--out is a folder; give the archive's file name", where=str(out), fix="--out aicc-bundle.tar"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.monotonic()
    seconds.update(ensure_artifacts(console, quiet=quiet))
    catalog = load_catalog()
    if models is None:
        chosen = [m for m in catalog.models if m.tier == "embedded" and m.default]
    else:
        names = {m.name: m for m in catalog.models}
        unknown = [n for n in models if n not in names]
        if unknown:
            raise InputError(
                f"unknown model(s): {', '.join(unknown)}", fix="`aicc models list` shows the catalog"
            )
        chosen = [names[n] for n in models]
    for entry in chosen:
        if not store.installed(entry):
            raise InputError(
                f"model {entry.name} is not in the model store", where=str(store.DEFAULT_STORE),
                fix=f"aicc models fetch {entry.name}",
            )  # fmt: skip

    t = time.monotonic()
    log("apt: the closure is resolved against the lab's clean Debian 12 image (built once) ...")
    rootfs, _ = image.ensure_image(image.cache_root())
    status = rootfs / "var/lib/dpkg/status"
    named = role_packages(roles_dir())
    debs = aptrepo.resolve(named, with_debs, status, CACHE / "apt", log)
    fpr = ensure_release_key()
    stage = CACHE / "stage"
    for part in stage.glob("*") if stage.is_dir() else []:
        if part.name not in ("apt", "apt.stamp"):
            shutil.rmtree(part) if part.is_dir() else part.unlink()
    aptrepo.build_repository(debs, stage / "apt", KEY_HOME, fpr)
    seconds["debs"] = time.monotonic() - t

    t = time.monotonic()
    origin = {d.file_name: d.source for d in debs}
    sources: dict[str, str] = {}
    for path in sorted((stage / "apt").rglob("*")):
        if path.is_file():
            sources[path.relative_to(stage).as_posix()] = origin.get(path.name, "aicc")
    for wheel in sorted(DEFAULT_WHEELHOUSE.glob("*.whl")):
        _link(wheel, stage / "wheels" / wheel.name)
        sources[f"wheels/{wheel.name}"] = "aicc" if wheel.name.startswith("aicc-") else "pypi"
    for entry in chosen:
        for f in entry.files:
            rel = f"models/{entry.name}/{f.path}"
            _link(store.file_path(store.DEFAULT_STORE, entry, f), stage / rel)
            sources[rel] = f"model:{entry.name}"
    binary = cached_binary(DEFAULT_CACHE)
    assert binary is not None  # ensure_artifacts built it
    _link(binary, stage / LLAMA_SERVER)
    sources[LLAMA_SERVER] = "build"

    hashes = HashCache(CACHE / "hashes.json")
    files = [
        FileEntry(path=rel, size=(stage / rel).stat().st_size, sha256=hashes.digest(stage / rel), source=src)
        for rel, src in sorted(sources.items())
    ]
    (stage / "sbom.cdx.json").write_text(sbom.render(aicc_version(), debs, files), encoding="utf-8")
    files.append(
        FileEntry(
            path="sbom.cdx.json",
            size=(stage / "sbom.cdx.json").stat().st_size,
            sha256=hashes.digest(stage / "sbom.cdx.json"),
            source="aicc",
        )
    )
    hashes.save()
    manifest = Manifest(
        aicc_version=aicc_version(),
        built_at=now_iso(),
        suite=aptrepo.SUITE,
        arch=aptrepo.ARCH,
        signing_key=fpr,
        named_packages=named,
        models=[m.name for m in chosen],
        files=files,
    )
    seconds["hash"] = time.monotonic() - t

    t = time.monotonic()
    unchanged = _same_contents(out, manifest)
    if unchanged:
        log(f"bundle: nothing changed since {out} was built; kept it")
    else:
        need = manifest.total_size() + (64 << 20)
        free = shutil.disk_usage(out.parent).free
        if free < need:
            raise InputError(
                f"not enough disk for the bundle: {need / 2**30:.1f} GiB needed, {free / 2**30:.1f} GiB free",
                where=str(out.parent),
                fix="free space there or pass --out on a larger disk",
            )
        (stage / MANIFEST).write_text(manifest.model_dump_json(indent=1), encoding="utf-8")
        gnupg.sign(KEY_HOME, fpr, stage / MANIFEST, stage / SIGNATURE)
        (stage / PUBLIC_KEY).write_bytes(gnupg.export_public(KEY_HOME, fpr))
        with Progress(
            TextColumn("writing the bundle"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
            transient=True,
        ) as bar:
            task = bar.add_task("write", total=manifest.total_size())
            write_archive(stage, manifest, out, lambda n: bar.advance(task, n))
    seconds["archive"] = time.monotonic() - t
    seconds["total"] = time.monotonic() - started
    return BuildResult(out, manifest, len(named), len(debs), unchanged, seconds)


def _same_contents(out: Path, manifest: Manifest) -> bool:
    """True when `out` is a bundle of exactly these files (its manifest, read from the head only)."""
    import tarfile

    if not out.is_file():
        return False
    try:
        with tarfile.open(out, "r|") as tar:
            member = tar.next()
            if member is None or member.name != HEAD[0]:
                return False
            reader = tar.extractfile(member)
            old = json.loads(reader.read()) if reader else {}
    except (tarfile.TarError, OSError, ValueError):
        return False
    new = manifest.model_dump(mode="json")
    return all(
        old.get(k) == new[k] for k in ("aicc_version", "files", "models", "named_packages", "signing_key")
    )
