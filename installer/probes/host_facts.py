"""Print one JSON document of the facts preflight needs. Runs on the target with python3 (stdlib only).

Usage: python3 - PEER:PORT ...   (each peer is TCP-connected to test reachability; a refusal is an answer)
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

TCP_STATES_LISTEN = "0A"


def os_release() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.strip().partition("=")
                info[key] = value.strip('"')
    except OSError:
        pass
    return {
        "id": info.get("ID", ""),
        "version_id": info.get("VERSION_ID", ""),
        "pretty": info.get("PRETTY_NAME", ""),
    }


def mem_total_kib() -> int:
    with open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 0


def socket_owners() -> dict[str, str]:
    owners: dict[str, str] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8") as fh:
                comm = fh.read().strip()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    owners[target[8:-1]] = comm
        except OSError:
            continue
    return owners


def listeners() -> list[dict[str, Any]]:
    owners = socket_owners()
    found: list[dict[str, Any]] = []
    for proto, fname in (("tcp", "tcp"), ("tcp", "tcp6"), ("udp", "udp"), ("udp", "udp6")):
        try:
            with open(f"/proc/net/{fname}", encoding="utf-8") as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    local, state, inode = parts[1], parts[3], parts[9]
                    if proto == "tcp" and state != TCP_STATES_LISTEN:
                        continue
                    if proto == "udp" and state != "07":
                        continue
                    port = int(local.rsplit(":", 1)[1], 16)
                    found.append({"proto": proto, "port": port, "process": owners.get(inode, "")})
        except OSError:
            continue
    return found


def ntp_synced() -> bool | None:
    if not shutil.which("timedatectl"):
        return None
    try:
        out = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return value == "yes" if value in ("yes", "no") else None


def gpus() -> dict[str, Any]:
    if not shutil.which("nvidia-smi"):
        return {"driver": False, "devices": []}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {"driver": False, "devices": [], "error": "nvidia-smi did not answer"}
    if out.returncode != 0:
        return {"driver": False, "devices": [], "error": out.stderr.strip()[-200:]}
    devices: list[dict[str, Any]] = []
    for line in out.stdout.strip().splitlines():
        name, _, mem = line.rpartition(",")
        devices.append({"name": name.strip(), "memory_mib": int(float(mem.strip() or 0))})
    return {"driver": True, "devices": devices}


def reach(peer: str) -> dict[str, Any]:
    host, _, port = peer.rpartition(":")
    start = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            return {"ok": True, "ms": round((time.monotonic() - start) * 1000, 1)}
    except ConnectionRefusedError as exc:
        # The host answered (no service on that port): reachable, but not a working service.
        return {"ok": False, "answered": True, "error": exc.strerror or str(exc)}
    except OSError as exc:
        return {"ok": False, "error": exc.strerror or str(exc)}


def resolves_self() -> dict[str, Any]:
    name = socket.gethostname()
    try:
        return {"hostname": name, "ok": bool(socket.gethostbyname(name))}
    except OSError:
        return {"hostname": name, "ok": False}


def main() -> None:
    disk = os.statvfs("/")
    facts = {
        "time": time.time(),
        "user": os.geteuid(),
        "os": os_release(),
        "cpus": os.cpu_count() or 0,
        "mem_total_kib": mem_total_kib(),
        "disk_free_gib": round(disk.f_bavail * disk.f_frsize / 2**30, 2),
        "listeners": listeners(),
        "ntp_synced": ntp_synced(),
        "gpu": gpus(),
        "python": sys.version.split()[0],
        "self": resolves_self(),
        "peers": {peer: reach(peer) for peer in sys.argv[1:]},
    }
    json.dump(facts, sys.stdout)


if __name__ == "__main__":
    main()
