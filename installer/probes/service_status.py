"""Print JSON: for each UNIT=PACKAGE argument, whether the unit is active and enabled, the package
version and the ports its processes listen on. Runs on the target with python3 (stdlib only)."""

import json
import os
import subprocess
import sys
from typing import Any


def sh(*cmd: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def unit_pids(unit: str) -> set[str]:
    """Every process in the unit's cgroup: unified (v2) hierarchy, else the v1 systemd one."""
    group = sh("systemctl", "show", "-p", "ControlGroup", "--value", unit)
    if not group:
        return set()
    pids: set[str] = set()
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"):
        for root, _dirs, files in os.walk(base + group):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(root, "cgroup.procs"), encoding="utf-8") as fh:
                        pids.update(line.strip() for line in fh if line.strip())
                except OSError:
                    pass
        if pids:
            break
    return pids


def sockets_of(pids: set[str]) -> set[str]:
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    return inodes


def listening(inodes: set[str]) -> list[str]:
    ports: list[str] = []
    for proto, fname in (("tcp", "tcp"), ("tcp", "tcp6"), ("udp", "udp"), ("udp", "udp6")):
        try:
            with open(f"/proc/net/{fname}", encoding="utf-8") as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    state, inode = parts[3], parts[9]
                    if (
                        inode not in inodes
                        or (proto == "tcp" and state != "0A")
                        or (proto == "udp" and state != "07")
                    ):
                        continue
                    addr_hex, port_hex = parts[1].rsplit(":", 1)
                    ports.append(f"{decode(addr_hex)}:{int(port_hex, 16)}/{proto}")
        except OSError:
            continue
    return sorted(set(ports))


def decode(addr_hex: str) -> str:
    if len(addr_hex) == 8:
        raw = bytes.fromhex(addr_hex)[::-1]
        return ".".join(str(b) for b in raw)
    return "[" + ("::" if set(addr_hex) == {"0"} else addr_hex.lower()) + "]"


def main() -> None:
    result: dict[str, Any] = {}
    for arg in sys.argv[1:]:
        unit, _, package = arg.partition("=")
        version = sh("dpkg-query", "-W", "-f", "${Version}", package) if package else ""
        result[unit] = {
            "active": sh("systemctl", "is-active", unit) or "unknown",
            "enabled": sh("systemctl", "is-enabled", unit) or "unknown",
            "version": version or "not installed",
            "ports": listening(sockets_of(unit_pids(unit))),
        }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
