"""GnuPG, the one signing tool of the site: the compliance report's key and the bundle's release key.

Keys are Ed25519, made once in their own home folder (0700) and never leave it; verification always
runs in a throwaway home that holds only the key the caller trusts.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aicc.installer.errors import InputError


def gpg(home: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--quiet", *args],
            input=stdin,
            capture_output=True,
            check=False,
            timeout=120,
        )
    except FileNotFoundError:
        raise InputError("gpg is not installed on this machine", fix="apt-get install gnupg") from None


def fingerprint(home: Path) -> str:
    if not home.is_dir():
        return ""
    proc = gpg(home, "--with-colons", "--list-secret-keys")
    for line in proc.stdout.decode().splitlines():
        if line.startswith("fpr:"):
            return line.split(":")[9]
    return ""


def ensure_key(home: Path, uid: str) -> str:
    """The signing key in `home` (created on first use); returns its fingerprint."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)
    found = fingerprint(home)
    if found:
        return found
    proc = gpg(home, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
    if proc.returncode != 0:
        raise InputError(f"could not create the signing key: {proc.stderr.decode()[-300:]}", where=str(home))
    return fingerprint(home)


def export_public(home: Path, fpr: str) -> bytes:
    return gpg(home, "--armor", "--export", fpr).stdout


def sign(home: Path, fpr: str, source: Path, dest: Path, *, clear: bool = False) -> None:
    """A detached armored signature of `source` (or, with clear, an inline clear-signed copy)."""
    mode = "--clearsign" if clear else "--detach-sign"
    proc = gpg(home, "--yes", "--local-user", fpr, "--armor", mode, "-o", str(dest), str(source))
    if proc.returncode != 0:
        raise InputError(f"signing failed: {proc.stderr.decode()[-300:]}", where=str(source))


@dataclass
class Signature:
    valid: bool
    fingerprint: str  # of the key that made it, when valid


def verify_detached(public_key: bytes, signature: Path, data: Path) -> Signature:
    """Check `signature` over `data` against `public_key` alone (no other keyring is consulted)."""
    with tempfile.TemporaryDirectory(prefix="aicc-gpg-verify-") as tmp:
        home = Path(tmp)
        home.chmod(0o700)
        gpg(home, "--import", stdin=public_key)
        proc = gpg(home, "--status-fd", "1", "--verify", str(signature), str(data))
    status = proc.stdout.decode()
    fpr = next((ln.split()[2] for ln in status.splitlines() if ln.startswith("[GNUPG:] VALIDSIG")), "")
    return Signature(valid=proc.returncode == 0 and bool(fpr), fingerprint=fpr)
