"""`aicc egress report`: per host, the outbound allowlist the hardening firewall enforces (table
`inet aicc_hardening`, chain output) and what it dropped since boot, read live from nftables.

A host without the table is reported as "no egress policy" (not hardened yet): that is a finding, not
an error. The drop log lines (prefix aicc-egress-drop:) name what tried to leave, where the kernel
logs them (not inside containers, which log nothing from a network namespace).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from aicc.installer import remote
from aicc.installer.inventory import Host

TABLE = "inet aicc_hardening"
# nft JSON of the table, then the last drop log lines, separated by a marker line.
_SCRIPT = (
    "nft -j list table inet aicc_hardening 2>/dev/null || echo '{}'; echo '--- drops'; "
    "journalctl -k -b --no-pager -q -o cat --grep 'aicc-egress-drop:' -n 20 2>/dev/null || true"
)
_FIELD = re.compile(r"\b(SRC|DST|PROTO|SPT|DPT)=(\S+)")


@dataclass
class Allowed:
    what: str
    rule: str
    packets: int


@dataclass
class HostEgress:
    host: str
    reachable: bool
    policy: bool = False  # the output chain exists with policy drop
    allowed: list[Allowed] = field(default_factory=list)
    sets: dict[str, list[str]] = field(default_factory=dict)
    dropped_packets: int = 0
    dropped_bytes: int = 0
    recent_drops: list[dict[str, str]] = field(default_factory=list)
    error: str = ""


def _expr_text(expr: list[dict[str, Any]]) -> str:
    """A short human reading of a rule's match (daddr/dport/sport), enough to say what it allows."""
    parts: list[str] = []
    for e in expr:
        match = e.get("match")
        if not match:
            continue
        left, right = match.get("left", {}), match.get("right")
        key = left.get("payload", {}).get("field") if isinstance(left, dict) else None
        if key is None and isinstance(left, dict) and "meta" in left:
            key = left["meta"].get("key")
        if isinstance(right, str) and right.startswith("@"):
            value = right
        elif isinstance(right, dict) and "set" in right:
            value = "{" + ", ".join(str(v) for v in right["set"]) + "}"
        elif isinstance(right, dict) and "range" in right:
            value = "-".join(str(v) for v in right["range"])
        else:
            value = json.dumps(right) if isinstance(right, dict | list) else str(right)
        if key:
            parts.append(f"{key} {value}")
    return " ".join(parts)


def _element(e: Any) -> str:
    if isinstance(e, dict) and "prefix" in e:
        return f"{e['prefix']['addr']}/{e['prefix']['len']}"
    if isinstance(e, dict) and "range" in e:
        return "-".join(str(v) for v in e["range"])
    return str(e)


def parse(host: str, text: str) -> HostEgress:
    table, _, drops = text.partition("--- drops")
    result = HostEgress(host=host, reachable=True)
    try:
        items = json.loads(table.strip() or "{}").get("nftables", [])
    except ValueError:
        result.error = "nft printed no JSON"
        return result
    for item in items:
        if "set" in item:
            s = item["set"]
            result.sets[s["name"]] = [_element(e) for e in s.get("elem", [])]
        elif "chain" in item and item["chain"].get("name") == "output":
            result.policy = item["chain"].get("policy") == "drop"
        elif "rule" in item and item["rule"].get("chain") == "output":
            expr = item["rule"].get("expr", [])
            counter = next((e["counter"] for e in expr if "counter" in e), None)
            if any("drop" in e for e in expr):
                if counter:
                    result.dropped_packets += int(counter["packets"])
                    result.dropped_bytes += int(counter["bytes"])
            elif any("accept" in e for e in expr) and counter is not None:
                result.allowed.append(
                    Allowed(item["rule"].get("comment", ""), _expr_text(expr), int(counter["packets"]))
                )
    for line in drops.strip().splitlines():
        fields = dict(_FIELD.findall(line))
        if fields:
            result.recent_drops.append(fields)
    return result


def _one(host: Host) -> HostEgress:
    cmd = _SCRIPT if host.user == "root" else f"sudo -n sh -c {json.dumps(_SCRIPT)}"
    res = remote.run(host, cmd, timeout=30)
    if res.returncode != 0:
        return HostEgress(host=host.name, reachable=False, error=remote.short_error(res))
    return parse(host.name, res.stdout)


def collect(hosts: list[Host]) -> list[HostEgress]:
    found = remote.run_all(hosts, _one)
    return [found[h.name] for h in hosts]


def as_json(rows: list[HostEgress]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
