"""Debian packages for lab hosts: one shared apt-cacher-ng on loopback, one socat per lab.

Why this shape: labs come and go while others keep installing. One apt-cacher-ng bound to several
bridge addresses would have to restart on every `lab up`/`lab down`, cutting the downloads of the
other labs; one instance per lab would share a cache folder between daemons that do not lock it.
So a single apt-cacher-ng listens on 127.0.0.1:3142 only (never on 0.0.0.0) and never restarts
while a lab is up, and each lab runs a socat that listens on its own bridge address, port 3142, and
forwards to it. ForceManaged=1 limits the cache to the Debian (and other distribution) mirrors it
knows, so the proxy is not a general way out of the lab.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from aicc.installer.errors import RunFailed
from aicc.installer.lab.locks import file_lock
from aicc.installer.lab.prereqs import find_command
from aicc.installer.lab.state import Resource, all_labs, proc_start_time, process_alive, state_root

PORT = 3142
LOOPBACK = "127.0.0.1"
CACHE_DIR = Path("/var/cache/aicc/apt-cacher-ng")


def _acng_dir() -> Path:
    return state_root() / ".apt-cacher-ng"


def _pid_file() -> Path:
    return _acng_dir() / "process.json"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.1)
    return False


def spawn(cmd: list[str], log: Path, label: str) -> Resource:
    """Start a daemon in its own session (PID 1 here is not systemd) and describe it for the state."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Resource(kind="process", name=label, pid=proc.pid, start_time=proc_start_time(proc.pid))


def stop_process(res: Resource, grace: float = 10.0, group: bool = True) -> None:
    """SIGTERM (its whole session when group), then SIGKILL after grace seconds; only if it is ours."""
    if res.pid is None or not process_alive(res):
        return
    send = os.killpg if group else os.kill
    try:
        send(res.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(res.pid)
        if not process_alive(res):
            return
        time.sleep(0.1)
    try:
        send(res.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(50):
        _reap(res.pid)
        if not process_alive(res):
            return
        time.sleep(0.1)


def _reap(pid: int) -> None:
    # A daemon started by this very process is our child: collect it so it does not linger as a zombie.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def ensure_shared_cache() -> None:
    """Start the shared apt-cacher-ng on loopback unless ours is already running."""
    with file_lock(state_root() / ".apt-cacher-ng.lock"):
        current = _load_pid()
        if current is not None and process_alive(current):
            return
        if port_open(LOOPBACK, PORT):
            raise RunFailed(
                f"something else listens on {LOOPBACK}:{PORT}",
                where="apt cache for lab hosts",
                fix=f"stop it (see `ss -ltnp 'sport = :{PORT}'`), then run `aicc lab up` again",
            )
        acng = find_command("apt-cacher-ng")
        if acng is None:
            raise RunFailed("apt-cacher-ng is not installed", fix="apt-get install apt-cacher-ng")
        d = _acng_dir()
        for sub in ("log", "run"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        cmd = [
            acng,
            "-c",
            "/etc/apt-cacher-ng",
            "ForeGround=1",
            f"BindAddress={LOOPBACK}",
            f"Port={PORT}",
            f"CacheDir={CACHE_DIR}",
            f"LogDir={d / 'log'}",
            f"SocketPath={d / 'run' / 'socket'}",
            f"PidFile={d / 'run' / 'pid'}",
            "ForceManaged=1",
        ]
        res = spawn(cmd, d / "log" / "stdout.log", "apt-cacher-ng")
        _pid_file().write_text(res.model_dump_json(), encoding="utf-8")
        if not wait_port(LOOPBACK, PORT, 15):
            stop_process(res)
            raise RunFailed(
                f"apt-cacher-ng did not start listening on {LOOPBACK}:{PORT} within 15 s",
                where=str(d / "log"),
                fix="read its logs there",
            )


def stop_shared_cache_if_unused(leaving: str) -> bool:
    """Stop the shared apt-cacher-ng when no lab other than `leaving` remains."""
    with file_lock(state_root() / ".apt-cacher-ng.lock"):
        if [lab for lab in all_labs() if lab != leaving]:
            return False
        current = _load_pid()
        if current is None:
            return False
        stop_process(current)
        _pid_file().unlink(missing_ok=True)
        return True


def shared_cache_running() -> bool:
    current = _load_pid()
    return current is not None and process_alive(current)


def _load_pid() -> Resource | None:
    try:
        return Resource.model_validate_json(_pid_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def forwarder_command(bridge_address: str) -> list[str]:
    return [
        "socat",
        f"TCP-LISTEN:{PORT},bind={bridge_address},reuseaddr,fork",
        f"TCP:{LOOPBACK}:{PORT}",
    ]
