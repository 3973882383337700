"""Bridge, network namespaces and veth pairs, with iproute2.

No ip_forward change and no NAT: a host reaches the bridge address and the other hosts, nothing else.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

from aicc.installer.errors import RunFailed


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RunFailed(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}", where="lab network")
    return proc


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def create_bridge(name: str, address: str, prefixlen: int) -> None:
    ip("link", "add", name, "type", "bridge")
    ip("addr", "add", f"{address}/{prefixlen}", "dev", name)
    ip("link", "set", name, "up")


def create_netns(name: str) -> None:
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")


def create_veth(host_if: str, netns: str, address: str, prefixlen: int, bridge: str) -> None:
    """A veth pair: host_if on the bridge, eth0 in the namespace with the host's address."""
    ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns)
    ip("link", "set", host_if, "master", bridge)
    ip("link", "set", host_if, "up")
    ip("-n", netns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0")
    ip("-n", netns, "link", "set", "eth0", "up")


def delete_link(name: str) -> None:
    if link_exists(name):
        ip("link", "del", name)


def delete_netns(name: str) -> None:
    if netns_exists(name):
        ip("netns", "del", name)


def overlapping_routes(subnet: str, ignore_dev: str) -> list[str]:
    """Routes of this machine that overlap the lab's subnet (other than the lab's own bridge)."""
    net = ipaddress.ip_network(subnet)
    proc = ip("-j", "-4", "route", "show", "table", "all")
    found: list[str] = []
    for route in json.loads(proc.stdout or "[]"):
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("dev") == ignore_dev or route.get("type") in ("broadcast",):
            continue
        try:
            other = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if other.version == 4 and net.overlaps(other):
            found.append(f"{dst} dev {route.get('dev', '?')}")
    return found
