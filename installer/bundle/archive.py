"""The bundle archive: a plain tar (its parts are compressed already) whose first three members are
MANIFEST.json, its detached signature and the signer's public key, so one streaming pass checks the
signature before anything else is read, then every member against the manifest while it is hashed
(and, on import, written to a temporary folder that becomes the site's bundle only if all is well).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aicc.installer import gnupg

MANIFEST = "MANIFEST.json"
SIGNATURE = "MANIFEST.json.asc"
PUBLIC_KEY = "bundle-key.asc"
HEAD = (MANIFEST, SIGNATURE, PUBLIC_KEY)
CHUNK = 1 << 20


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(pattern=r"^[A-Za-z0-9_+%~.-]+(/[A-Za-z0-9_+%~.-]+)*$")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str = Field(
        description="where the file came from: debian, customer, pypi, model:NAME, build, aicc"
    )


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = 1
    aicc_version: str
    built_at: str
    suite: str
    arch: str
    signing_key: str = Field(
        description="fingerprint of the key that signs this manifest and the apt Release"
    )
    named_packages: list[str] = Field(description="the Debian packages the roles name")
    models: list[str]
    files: list[FileEntry]

    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class HashCache:
    """sha256 by (path, size, mtime): a warm build re-reads nothing that did not change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, list[object]] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}

    def digest(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        hit = self.data.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return str(hit[2])
        digest = sha256_file(path)
        self.data[key] = [st.st_size, st.st_mtime_ns, digest]
        return digest

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data), encoding="utf-8")


def write_archive(stage: Path, manifest: Manifest, out: Path, progress: Callable[[int], None]) -> None:
    """Head first, then every listed file, into out.partial renamed to out when complete."""
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in HEAD:
            tar.add(stage / name, arcname=name, recursive=False)
        for entry in manifest.files:
            tar.add(stage / entry.path, arcname=entry.path, recursive=False)
            progress(entry.size)
    partial.replace(out)


@dataclass
class Verdict:
    manifest: Manifest | None = None
    fingerprint: str = ""
    problems: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return self.manifest is not None and not self.problems


def _safe_name(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and name not in ("", ".")


def check_archive(
    archive: Path,
    trusted_key: bytes,
    *,
    version: str,
    extract_to: Path | None = None,
    progress: Callable[[int], None] = lambda n: None,
) -> Verdict:
    """Every check the bundle can fail, in one pass; with extract_to, the files land there as read."""
    verdict = Verdict()
    last = "(start of the archive)"
    try:
        with tarfile.open(archive, "r|") as tar:
            members = iter(tar)
            head: dict[str, bytes] = {}
            for expected in HEAD:
                member = next(members, None)
                if member is None or member.name != expected or not member.isfile():
                    found = member.name if member else "end of archive"
                    verdict.problems.append(f"{expected}: expected as member {len(head) + 1}, found {found}")
                    return verdict
                reader = tar.extractfile(member)
                head[expected] = reader.read() if reader else b""
                last = expected
            if not _check_head(head, trusted_key, verdict):
                return verdict
            manifest = verdict.manifest
            assert manifest is not None  # _check_head set it
            if manifest.aicc_version != version:
                verdict.problems.append(
                    f"{MANIFEST}: the bundle is for aicc {manifest.aicc_version}, this is aicc {version} "
                    "(build the bundle with the same aicc version as the installer)"
                )
            listed = {f.path: f for f in manifest.files}
            seen: set[str] = set()
            for member in members:
                last = member.name
                if not _safe_name(member.name) or not (member.isfile() or member.isdir()):
                    verdict.problems.append(f"{member.name}: not a plain file with a relative path (refused)")
                    continue
                if member.isdir():
                    continue
                entry = listed.get(member.name)
                if entry is None:
                    verdict.problems.append(f"{member.name}: not in the manifest")
                    continue
                seen.add(member.name)
                digest, size = _consume(tar, member, extract_to, progress)
                verdict.checked += 1
                if size != entry.size or digest != entry.sha256:
                    verdict.problems.append(
                        f"{member.name}: changed (expected sha256 {entry.sha256}, {entry.size} bytes; "
                        f"found {digest}, {size} bytes)"
                    )
            for path in listed.keys() - seen:
                verdict.problems.append(f"{path}: missing (listed in the manifest)")
    except (tarfile.TarError, EOFError, OSError) as exc:
        verdict.problems.append(f"the archive is truncated or damaged after {last}: {exc}")
    verdict.problems.sort()
    return verdict


def _check_head(head: dict[str, bytes], trusted_key: bytes, verdict: Verdict) -> bool:
    with tempfile.TemporaryDirectory(prefix="aicc-bundle-head-") as tmp:
        man, sig = Path(tmp) / MANIFEST, Path(tmp) / SIGNATURE
        man.write_bytes(head[MANIFEST])
        sig.write_bytes(head[SIGNATURE])
        trusted = gnupg.verify_detached(trusted_key, sig, man)
        if not trusted.valid:
            own = gnupg.verify_detached(head[PUBLIC_KEY], sig, man)
            if own.valid:
                verdict.problems.append(
                    f"{SIGNATURE}: signed by key {own.fingerprint}, which is not the trusted bundle key "
                    f"(trusted: {_key_fingerprint(trusted_key) or 'none readable'})"
                )
            else:
                verdict.problems.append(
                    f"{SIGNATURE}: bad signature: {MANIFEST} was altered or the signature broken"
                )
            return False
    verdict.fingerprint = trusted.fingerprint
    try:
        verdict.manifest = Manifest.model_validate_json(head[MANIFEST])
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        verdict.problems.append(f"{MANIFEST}: field {loc}: {err['msg']}")
        return False
    return True


def _key_fingerprint(key: bytes) -> str:
    with tempfile.TemporaryDirectory(prefix="aicc-gpg-show-") as tmp:
        Path(tmp).chmod(0o700)
        proc = gnupg.gpg(Path(tmp), "--with-colons", "--import-options", "show-only", "--import", stdin=key)
    return next((ln.split(":")[9] for ln in proc.stdout.decode().splitlines() if ln.startswith("fpr:")), "")


def _consume(
    tar: tarfile.TarFile, member: tarfile.TarInfo, extract_to: Path | None, progress: Callable[[int], None]
) -> tuple[str, int]:
    reader = tar.extractfile(member)
    h = hashlib.sha256()
    size = 0
    out = None
    if extract_to is not None:
        dest = extract_to / member.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        out = dest.open("wb")
    try:
        while reader is not None and (chunk := reader.read(CHUNK)):
            h.update(chunk)
            size += len(chunk)
            progress(len(chunk))
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
            (extract_to / member.name).chmod(member.mode & 0o755 | 0o400)  # type: ignore[operator]
    return h.hexdigest(), size


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
