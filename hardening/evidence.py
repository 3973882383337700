"""Collect evidence: every applicable control's check runs as root on each host, over SSH, all hosts in
parallel. The output of a check is its evidence; its exit code its result (catalog.Check).

The host side is a stdlib-only script (probe.py) fed on stdin with the checks for that host, so no aicc
code is installed on the hosts for this. Outputs are trimmed and scrubbed of the site's secrets before
anything is written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Literal

from pydantic import BaseModel

from aicc.hardening.catalog import Catalog
from aicc.installer import remote
from aicc.installer.inventory import Host
from aicc.installer.settings import SiteSettings
from aicc.installer.sizing import common_listeners, listeners

Status = Literal["pass", "fail", "na", "error"]
MAX_LINES = 80
MAX_CHARS = 6000

# Facts the report shows beside the controls (not pass/fail): software inventory and the egress audit.
OBSERVATIONS: dict[str, str] = {
    "packages": "dpkg-query -W -f='${Package} ${Version}\\n' | sort",
    "wheels": (
        'for py in /opt/aicc/*/bin/python /opt/aicc/*/venv/bin/python; do [ -x "$py" ] || continue; '
        'echo "# ${py%/bin/python}"; "$py" -m pip list --format=freeze --disable-pip-version-check '
        "2>/dev/null; done"
    ),
    "egress": "nft -j list chain inet aicc_hardening output 2>/dev/null || echo '{}'",
}


class Evidence(BaseModel):
    host: str
    control: str
    status: Status
    command: str
    output: str
    exit_code: int
    collected_at: str
    seconds: float


class EgressRule(BaseModel):
    comment: str
    used: bool  # packets matched since the firewall was loaded (counts move too often to hash)


class HostObservations(BaseModel):
    host: str
    packages: list[str]
    wheels: list[str]
    egress_dropped_packets: int | None  # None: no aicc egress filter on the host
    egress_rules: list[EgressRule]


def placeholders(host: Host, settings: SiteSettings) -> dict[str, str]:
    """Per-host values a check may use as @NAME@: its address, ports and the listeners it should have."""
    s = settings
    expected = [x for g in host.groups for x in listeners(g, s)] + common_listeners(s)
    tcp = sorted({x.port for x in expected if x.proto == "tcp"} | {host.port})
    udp = sorted({x.port for x in expected if x.proto == "udp"})
    ranges = []
    if "media" in host.groups:
        ranges.append(f"{s.media.port_min}-{s.media.port_max}")
    if "voicebot" in host.groups:
        ranges.append(f"{s.voicebot.rtp_port_min}-{s.voicebot.rtp_port_max}")
    return {
        "HOST_ADDRESS": host.address,
        "HTTPS_PORT": str(s.app.https_port),
        "SIP_TLS_PORT": str(s.sip.tls_port),
        "SIP_WSS_PORT": str(s.sip.wss_port),
        "NODE_EXPORTER_PORT": str(s.monitoring.node_exporter_port),
        "EXPECTED_TCP": " ".join(map(str, tcp)),
        "EXPECTED_UDP": " ".join(map(str, udp)),
        "EXPECTED_UDP_RANGES": " ".join(ranges),
    }


def render_command(command: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        command = command.replace(f"@{name}@", value)
    return command


def trim(text: str) -> str:
    lines = text.rstrip().splitlines()
    if len(lines) > MAX_LINES:
        half = MAX_LINES // 2
        lines = [*lines[:half], f"... ({len(lines) - MAX_LINES} lines left out) ...", *lines[-half:]]
    out = "\n".join(lines)
    return out if len(out) <= MAX_CHARS else out[:MAX_CHARS] + "\n... (cut)"


def judge(exit_code: int, output: str, timed_out: bool) -> Status:
    if timed_out:
        return "error"
    if exit_code == 0:
        # A pass without evidence is a defect: the check must show what it saw.
        return "pass" if output.strip() else "error"
    if exit_code == 1:
        return "fail"
    return "na" if exit_code == 3 else "error"


def _probe_source() -> str:
    return (resources.files("aicc.hardening") / "probe.py").read_text(encoding="utf-8")


def run_host(
    host: Host, catalog: Catalog, settings: SiteSettings, scrub: Callable[[str], str]
) -> tuple[list[Evidence], HostObservations | None, str]:
    """Run this host's checks; returns its evidence, its observations and an error ('' when reached)."""
    values = placeholders(host, settings)
    checks = [
        {"id": c.id, "command": render_command(c.check.command, values), "timeout": c.check.timeout_s}
        for c in catalog.controls
        if c.applies_to(host.groups)
    ]
    checks += [{"id": f"_{k}", "command": v, "timeout": 60} for k, v in OBSERVATIONS.items()]
    script = _probe_source() + "\nmain(" + repr(json.dumps(checks)) + ")\n"
    command = "python3 -" if host.user == "root" else "sudo -n python3 -"
    longest = sum(int(str(c["timeout"])) for c in checks)
    result = remote.run(host, command, stdin=script, timeout=min(longest, 600) + 30)
    if not result.ok:
        return [], None, remote.short_error(result)
    try:
        rows = json.loads(result.stdout)
    except json.JSONDecodeError:
        rows = None
    if not isinstance(rows, list):
        return [], None, f"the evidence probe failed: {(result.stdout or result.stderr)[-300:]!r}"
    evidence = []
    observed: dict[str, str] = {}
    for row in rows:
        output = scrub(row["output"])
        if row["id"].startswith("_"):
            observed[row["id"][1:]] = output
            continue
        command = next(str(c["command"]) for c in checks if c["id"] == row["id"])
        evidence.append(
            Evidence(
                host=host.name,
                control=row["id"],
                status=judge(row["exit"], output, row["timed_out"]),
                command=str(command).rstrip(),
                output=trim(output) if not row["timed_out"] else f"no result within {row['timeout']} s",
                exit_code=row["exit"],
                collected_at=row["at"],
                seconds=row["seconds"],
            )
        )
    return evidence, _observations(host.name, observed), ""


def _observations(host: str, observed: dict[str, str]) -> HostObservations:
    dropped: int | None = None
    rules: list[EgressRule] = []
    try:
        chain = json.loads(observed.get("egress", "{}") or "{}")
    except json.JSONDecodeError:
        chain = {}
    for item in chain.get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        packets = next((e["counter"]["packets"] for e in rule.get("expr", []) if "counter" in e), None)
        verdicts = {k for e in rule.get("expr", []) for k in e if k in ("accept", "drop")}
        if "drop" in verdicts and packets is not None:
            dropped = int(packets)
        elif packets is not None:
            rules.append(EgressRule(comment=str(rule.get("comment", "")), used=int(packets) > 0))
    return HostObservations(
        host=host,
        packages=[line for line in observed.get("packages", "").splitlines() if line.strip()],
        wheels=[line for line in observed.get("wheels", "").splitlines() if line.strip()],
        egress_dropped_packets=dropped,
        egress_rules=rules,
    )


class Collected(BaseModel):
    evidence: list[Evidence]
    observations: list[HostObservations]
    unreachable: dict[str, str]
    seconds: float
    started_at: str


def collect(
    hosts: list[Host],
    catalog: Catalog,
    settings: SiteSettings,
    scrub: Callable[[str], str],
) -> Collected:
    started = time.monotonic()
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    results = remote.run_all(hosts, run_host, catalog, settings, scrub)
    evidence: list[Evidence] = []
    observations: list[HostObservations] = []
    unreachable: dict[str, str] = {}
    for name in sorted(results):
        ev, obs, error = results[name]
        if error:
            unreachable[name] = error
        evidence.extend(ev)
        if obs:
            observations.append(obs)
    return Collected(
        evidence=evidence,
        observations=observations,
        unreachable=unreachable,
        seconds=time.monotonic() - started,
        started_at=stamp,
    )
