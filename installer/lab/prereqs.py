"""This machine's own prerequisites for the lab, installed with apt when missing (after saying so)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from aicc.installer.errors import InputError, RunFailed

# Debian package -> a command it provides (what we check for after installing).
HOST_PACKAGES: dict[str, str] = {
    "systemd-container": "systemd-nspawn",
    "mmdebstrap": "mmdebstrap",
    "iproute2": "ip",
    "openssh-client": "ssh-keygen",
}


def find_command(cmd: str) -> str | None:
    """Like `which`, also looking in the sbin folders a non-login root shell may lack on PATH."""
    found = shutil.which(cmd)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin"):
        if Path(folder, cmd).exists():
            return str(Path(folder, cmd))
    return None


def missing_packages(which: Callable[[str], str | None] = find_command) -> list[str]:
    return [pkg for pkg, cmd in HOST_PACKAGES.items() if which(cmd) is None]


def check_root() -> None:
    if os.geteuid() != 0:
        raise InputError(
            "the lab needs root (network namespaces, bridges, containers)",
            fix="run it as root, e.g. `sudo aicc lab up`",
        )


def ensure_packages(say: Callable[[str], None]) -> list[str]:
    """Install what is missing; return what was installed."""
    missing = missing_packages()
    if not missing:
        return []
    if shutil.which("apt-get") is None:
        raise InputError(
            f"missing: {', '.join(missing)}, and this machine has no apt-get",
            fix="the lab needs a Debian 12 machine; install those packages by hand",
        )
    say(f"installing this machine's lab prerequisites with apt: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    proc = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        # A stale package list is the common cause: refresh once and retry.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        proc = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-10:])
        raise RunFailed(
            f"apt-get install {' '.join(missing)} failed:\n{tail}",
            fix="fix apt on this machine (sources, the Debian mirror), then run `aicc lab up` again",
        )
    still = missing_packages()
    if still:
        raise RunFailed(f"installed but still missing commands for: {', '.join(still)}")
    return missing


# Every container's systemd and its services take inotify instances from root's one limit (the
# containers share uid 0): with the kernel default of 128, about 15 lab hosts on the machine, all
# labs together, are enough to make the next one fail at boot ("Too many open files").
INOTIFY_LIMITS = {"fs/inotify/max_user_instances": 1024, "fs/inotify/max_user_watches": 65536}


def ensure_kernel_limits(say: Callable[[str], None], proc_sys: Path = Path("/proc/sys")) -> list[str]:
    """Raise (never lower) the inotify limits lab hosts need; return what was changed."""
    changed = []
    for key, wanted in INOTIFY_LIMITS.items():
        path = proc_sys / key
        current = int(path.read_text(encoding="utf-8").strip())
        if current < wanted:
            say(f"raising {key.replace('/', '.')} from {current} to {wanted} (lab hosts' systemd needs them)")
            path.write_text(f"{wanted}\n", encoding="utf-8")
            changed.append(key)
    return changed
