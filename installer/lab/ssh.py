"""SSH to lab hosts: the lab's key pair in the site folder and host keys pinned in known_hosts."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from aicc.installer.errors import RunFailed


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def key_file(site: Path) -> Path:
    return site / "ssh" / "id_ed25519"


def known_hosts_file(site: Path) -> Path:
    return site / "ssh" / "known_hosts"


def ensure_keypair(site: Path, comment: str) -> str:
    """The lab's root key (kept across `lab up`s so the site stays usable); returns the public key."""
    key = key_file(site)
    key.parent.mkdir(parents=True, exist_ok=True)
    key.parent.chmod(0o700)
    if not key.exists():
        _keygen(key, comment)
    key.chmod(0o600)
    return key.with_suffix(".pub").read_text(encoding="utf-8").strip()


def _keygen(path: Path, comment: str) -> None:
    proc = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RunFailed(f"ssh-keygen failed: {proc.stderr.strip()}", where=str(path))


def host_keygen(path: Path, comment: str) -> str:
    _keygen(path, comment)
    return path.with_suffix(".pub").read_text(encoding="utf-8").strip()


def write_known_hosts(site: Path, entries: dict[str, str]) -> None:
    """entries: address -> host public key line ("ssh-ed25519 AAAA... comment")."""
    lines = []
    for address, pub in entries.items():
        keytype, blob = pub.split()[:2]
        lines.append(f"{address} {keytype} {blob}\n")
    known_hosts_file(site).write_text("".join(lines), encoding="utf-8")


def ssh_args(site: Path, address: str, *, batch: bool = True, timeout: int = 5) -> list[str]:
    args = [
        "ssh",
        "-i",
        str(key_file(site).resolve()),
        "-o",
        f"UserKnownHostsFile={known_hosts_file(site).resolve()}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"ConnectTimeout={timeout}",
        "-o",
        "LogLevel=ERROR",
    ]
    if batch:
        args += ["-o", "BatchMode=yes"]
    return [*args, f"root@{address}"]


def run_ssh(site: Path, address: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ssh_args(site, address), command],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def ssh_ok(site: Path, address: str) -> bool:
    if not port_open(address, 22, timeout=1):
        return False
    try:
        return run_ssh(site, address, "true", timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def wait_ssh(site: Path, address: str, deadline: float) -> str | None:
    """None once the host answers SSH with our key and pinned host key; else the last error."""
    last = "port 22 never opened"
    while time.monotonic() < deadline:
        if port_open(address, 22, timeout=0.5):
            try:
                proc = run_ssh(site, address, "true", timeout=10)
            except subprocess.TimeoutExpired:
                last = "ssh timed out"
            else:
                if proc.returncode == 0:
                    return None
                last = proc.stderr.strip() or f"ssh exit {proc.returncode}"
        time.sleep(0.2)
    return last
