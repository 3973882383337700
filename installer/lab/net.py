"""Bridge, network namespaces and veth pairs, with iproute2; each host's egress policy, with nftables.

No ip_forward change and no NAT: a host reaches the bridge address and the other hosts, nothing else.
Like a customer's perimeter, every host's namespace also has a default-deny egress table set from
outside the host (the host's own software never installs it, and the hardening role's table sits
beside it): anything addressed outside the lab subnet is refused at once (TCP reset, ICMP otherwise,
so nothing hangs), counted, and its destination remembered. The default route via the bridge address
exists only so that such attempts reach that table; this machine forwards nothing.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

from pydantic import BaseModel

from aicc.installer.errors import RunFailed

EGRESS_TABLE = "aicc_lab"


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


def egress_ruleset(subnet: str) -> str:
    """nft script: replace the lab's table; allow loopback, the lab subnet and IPv6 link-local only."""
    return f"""table inet {EGRESS_TABLE}
delete table inet {EGRESS_TABLE}
table inet {EGRESS_TABLE} {{
\tset tried4 {{
\t\ttype ipv4_addr . inet_proto . inet_service
\t\tflags dynamic
\t\tsize 4096
\t}}
\tchain output {{
\t\ttype filter hook output priority filter - 10; policy accept;
\t\toif "lo" accept
\t\tip daddr {subnet} accept
\t\tip6 daddr {{ fe80::/10, ff02::/16 }} accept
\t\tmeta l4proto {{ tcp, udp }} update @tried4 {{ ip daddr . meta l4proto . th dport }}
\t\tcounter log prefix "aicc-lab-egress: " meta l4proto tcp reject with tcp reset
\t\tcounter log prefix "aicc-lab-egress: " reject with icmpx admin-prohibited
\t}}
}}
"""


def _nft(netns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "nft", *args], input=stdin, capture_output=True, text=True, check=False
    )


def apply_egress_policy(netns: str, subnet: str, bridge_address: str) -> None:
    ip("-n", netns, "route", "replace", "default", "via", bridge_address)
    proc = _nft(netns, "-f", "-", stdin=egress_ruleset(subnet))
    if proc.returncode != 0:
        raise RunFailed(
            f"could not load the lab's egress policy in {netns}: {proc.stderr.strip()}", where=netns
        )


class EgressAttempts(BaseModel):
    """What a host tried to send out of the lab since it booted."""

    policy: bool  # the table is there (a host that removed it would show False)
    packets: int = 0
    tried: list[str] = []  # "198.51.100.7 udp/53"


def egress_attempts(netns: str) -> EgressAttempts:
    proc = _nft(netns, "-j", "list", "table", "inet", EGRESS_TABLE)
    if proc.returncode != 0:
        return EgressAttempts(policy=False)
    items = json.loads(proc.stdout).get("nftables", [])
    packets = 0
    tried: list[str] = []
    for item in items:
        if "rule" in item:
            packets += sum(int(e["counter"]["packets"]) for e in item["rule"]["expr"] if "counter" in e)
        elif "set" in item and item["set"].get("name") == "tried4":
            for elem in item["set"].get("elem", []):
                # plain {"concat": [...]}, or {"elem": {"val": {"concat": [...]}, ...}} with extras
                addr, proto, port = elem.get("elem", {}).get("val", elem)["concat"]
                tried.append(f"{addr} {proto}/{port}")
    return EgressAttempts(policy=True, packets=packets, tried=sorted(tried))
