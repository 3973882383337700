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

import contextlib
import hashlib
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
DEBIAN_MIRROR = "http://deb.debian.org/debian/"
# Our own configuration (the packaged one sends Debian requests to ftp.debian.org and may listen on
# every address). Requests for any known Debian mirror name are served from DEBIAN_MIRROR.
ACNG_CONF = """\
# Written by aicc lab: the apt cache for lab hosts. Only the lab's own settings; see aptcache.py.
SupportDir: /usr/lib/apt-cacher-ng
Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian
Remap-secdeb: security.debian.org security.debian.org/debian-security deb.debian.org/debian-security \
/debian-security cdn-fastly.deb.debian.org/debian-security ; deb.debian.org/debian-security
ExThreshold: 4
FollowIndexFileRemoval: 1
ForceManaged: 1
"""


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
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _config_id(cmd: list[str]) -> str:
    return hashlib.sha256(("\0".join(cmd) + ACNG_CONF + DEBIAN_MIRROR).encode()).hexdigest()[:16]


def ensure_shared_cache() -> None:
    """Start the shared apt-cacher-ng on loopback unless ours already runs with this configuration.

    One started by an older aicc (another configuration) is restarted: a short cut for labs that
    are downloading at that moment, which apt's retries cover.
    """
    with file_lock(state_root() / ".apt-cacher-ng.lock"):
        acng = find_command("apt-cacher-ng")
        if acng is None:
            raise RunFailed("apt-cacher-ng is not installed", fix="apt-get install apt-cacher-ng")
        d = _acng_dir()
        cmd = [
            acng,
            "-c",
            str(d / "conf"),
            "ForeGround=1",
            f"BindAddress={LOOPBACK}",
            f"Port={PORT}",
            f"CacheDir={CACHE_DIR}",
            f"LogDir={d / 'log'}",
            f"SocketPath={d / 'run' / 'socket'}",
            f"PidFile={d / 'run' / 'pid'}",
        ]
        config_id = _config_id(cmd)
        current = _load_pid()
        if current is not None and process_alive(current):
            if current.name == f"apt-cacher-ng {config_id}":
                return
            stop_process(current)
        if port_open(LOOPBACK, PORT):
            holder = _listener(PORT)
            fix = f"stop it (see `ss -ltnp 'sport = :{PORT}'`), then run `aicc lab up` again"
            if "apt-cacher-ng" in holder:
                # Typically the distribution's service, started when the package was installed.
                fix = (
                    "the lab runs its own apt-cacher-ng on 127.0.0.1 only; stop and disable the packaged "
                    "service: `systemctl disable --now apt-cacher-ng` (without systemd: "
                    "`service apt-cacher-ng stop && update-rc.d apt-cacher-ng disable`)"
                )
            raise RunFailed(
                f"port {PORT} on {LOOPBACK} is already taken: {holder or 'unknown process'}",
                where="apt cache for lab hosts",
                fix=fix,
            )
        for sub in ("log", "run", "conf"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "conf" / "acng.conf").write_text(ACNG_CONF, encoding="utf-8")
        (d / "conf" / "backends_debian").write_text(DEBIAN_MIRROR + "\n", encoding="utf-8")
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        res = spawn(cmd, d / "log" / "stdout.log", f"apt-cacher-ng {config_id}")
        _pid_file().write_text(res.model_dump_json(), encoding="utf-8")
        if not wait_port(LOOPBACK, PORT, 15):
            stop_process(res)
            raise RunFailed(
                f"apt-cacher-ng did not start listening on {LOOPBACK}:{PORT} within 15 s",
                where=str(d / "log"),
                fix="read its logs there",
            )


def _listener(port: int) -> str:
    """`ss`'s description of who listens on a TCP port on loopback (address and process), or ""."""
    proc = subprocess.run(
        ["ss", "-H", "-ltnp", f"sport = :{port}"], capture_output=True, text=True, check=False
    )
    # Only listeners that answer on loopback: the lab forwarders on bridge addresses are not in the way.
    loopback = {LOOPBACK, "0.0.0.0", "*", "[::]", "[::ffff:127.0.0.1]"}  # noqa: S104 - we only read ss
    rows = [line.split() for line in proc.stdout.splitlines()]
    return "; ".join(" ".join(r[3:]) for r in rows if len(r) > 3 and r[3].rsplit(":", 1)[0] in loopback)


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
