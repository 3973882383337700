"""Running commands on site hosts over SSH (OpenSSH, the same client and options Ansible uses).

Preflight and status run one small script per host in parallel; the site's known_hosts and key come
from the inventory so no prompt ever appears.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aicc.installer.inventory import Host

CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class Result:
    host: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def unreachable(self) -> bool:
        # OpenSSH exits 255 when it cannot connect or authenticate.
        return self.returncode == 255


def ssh_command(host: Host, remote: str) -> list[str]:
    args = [
        "ssh",
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=2",
        "-p", str(host.port),
        "-l", host.user,
    ]  # fmt: skip
    if host.key_file:
        args += ["-i", host.key_file, "-o", "IdentitiesOnly=yes"]
    extra = host.vars.get("ansible_ssh_common_args", "")
    args += shlex.split(extra)
    args += [host.address, remote]
    return args


def run(host: Host, remote: str, *, stdin: str | None = None, timeout: float = 60) -> Result:
    try:
        proc = subprocess.run(
            ssh_command(host, remote),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Result(host.name, 255, "", f"no answer within {timeout:.0f} s")
    except FileNotFoundError:
        return Result(
            host.name, 255, "", "ssh client not found on this machine: apt-get install openssh-client"
        )
    return Result(host.name, proc.returncode, proc.stdout, proc.stderr.strip())


def run_python(host: Host, script: Path, args: list[str], timeout: float = 60) -> Result:
    """Run a stdlib-only Python script on the host with its system python3."""
    remote = "python3 - " + " ".join(shlex.quote(a) for a in args)
    if host.user != "root":
        remote = "sudo -n " + remote
    return run(host, remote, stdin=script.read_text(encoding="utf-8"), timeout=timeout)


T = TypeVar("T")


def run_all(hosts: list[Host], fn: Callable[..., T], *args: Any) -> dict[str, T]:
    """Call fn(host, *args) for every host in parallel; results by host name."""
    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        futures = {h.name: pool.submit(fn, h, *args) for h in hosts}
        return {name: f.result() for name, f in futures.items()}


def short_error(result: Result) -> str:
    text = (result.stderr or result.stdout).strip().splitlines()
    meaningful = [line for line in text if not line.startswith("Warning: Permanently added")]
    return meaningful[-1] if meaningful else f"exit code {result.returncode}"
