"""Integrity of a report folder: MANIFEST.sha256 (`sha256sum -c` reads it) over every file, signed with
the site's report key (GnuPG, Ed25519, generated on first use in the site's keys/ folder, never leaving
it); signing-key.asc beside it carries the public key and its fingerprint for the auditor.

verify() checks the signature first, then every file: changed (expected vs found), missing, or not in
the manifest. It names each problem; nothing passes on a partial check.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from aicc.appliance.textfile import TextFileError, read_text_file
from aicc.installer import gnupg

MANIFEST = "MANIFEST.sha256"
SIGNATURE = "MANIFEST.sha256.asc"
PUBLIC_KEY = "signing-key.asc"
UNSIGNED = {MANIFEST, SIGNATURE, PUBLIC_KEY}


def ensure_key(home: Path, site: str) -> str:
    """The site's report-signing key (created once); returns its fingerprint."""
    return gnupg.ensure_key(home, f"aicc report signing ({site}) <aicc-report@{site}.invalid>")


def fingerprint(home: Path) -> str:
    return gnupg.fingerprint(home)


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() not in UNSIGNED
    }


def sign_folder(folder: Path, home: Path, site: str) -> str:
    """Write the manifest, its detached signature and the public key; returns the key's fingerprint."""
    fpr = ensure_key(home, site)
    lines = [f"{digest}  {name}" for name, digest in file_hashes(folder).items()]
    (folder / MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")
    gnupg.sign(home, fpr, folder / MANIFEST, folder / SIGNATURE)
    (folder / PUBLIC_KEY).write_bytes(gnupg.export_public(home, fpr))
    return fpr


@dataclass
class Verification:
    signature_ok: bool
    fingerprint: str
    trusted: bool  # signed by the expected key (the site's), not only by the key shipped in the folder
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.signature_ok and not self.problems


def verify_folder(folder: Path, expected_fingerprint: str | None = None) -> Verification:
    for name in (MANIFEST, SIGNATURE, PUBLIC_KEY):
        if not (folder / name).is_file():
            return Verification(False, "", False, [f"{name}: missing"])
    sig = gnupg.verify_detached((folder / PUBLIC_KEY).read_bytes(), folder / SIGNATURE, folder / MANIFEST)
    fpr = sig.fingerprint
    result = Verification(signature_ok=sig.valid, fingerprint=fpr, trusted=False)
    if not result.signature_ok:
        result.problems.append(f"{SIGNATURE}: the signature does not verify against {MANIFEST}")
        return result
    result.trusted = expected_fingerprint is not None and fpr == expected_fingerprint
    if expected_fingerprint is not None and not result.trusted:
        result.problems.append(
            f"{SIGNATURE}: signed by key {fpr}, expected the site's key {expected_fingerprint}"
        )
    try:
        manifest = read_text_file(folder / MANIFEST)
    except TextFileError as exc:
        result.problems.append(f"{MANIFEST}: {exc.reason}")
        return result
    listed: dict[str, str] = {}
    for n, line in enumerate(manifest.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            result.problems.append(f"{MANIFEST} line {n}: not 'SHA256  PATH'")
            continue
        listed[name] = digest
    found = file_hashes(folder)
    for name, digest in listed.items():
        if name not in found:
            result.problems.append(f"{name}: missing (listed in the manifest)")
        elif found[name] != digest:
            result.problems.append(f"{name}: changed (expected sha256 {digest}, found {found[name]})")
    for name in found:
        if name not in listed:
            result.problems.append(f"{name}: not in the manifest")
    return result
