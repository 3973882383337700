"""Daemons the lab starts (its containers): start in their own session, stop only if still ours."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from aicc.installer.lab.state import Resource, proc_start_time, process_alive


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
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
