"""`aicc preflight`: check every host before anything is changed; all problems in one table.

Facts are gathered over SSH by probes/host_facts.py (read-only on the host); the checks themselves
are pure functions of those facts, the inventory and the settings, so they are unit-tested directly.
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from aicc.installer import remote
from aicc.installer.errors import InputError
from aicc.installer.inventory import Host, Inventory
from aicc.installer.settings import SiteSettings
from aicc.installer.site import channel_secret_problems, load_secrets
from aicc.installer.sizing import common_listeners, host_minimum, listeners

Status = Literal["ok", "warn", "fail"]
MAX_CLOCK_SKEW_S = 2.0


@dataclass(frozen=True)
class Check:
    host: str
    check: str
    status: Status
    message: str
    fix: str = ""


Gathered = tuple[remote.Result, float, float]


def gather(hosts: list[Host], inventory: Inventory, settings: SiteSettings) -> dict[str, Gathered]:
    script = Path(str(resources.files("aicc.installer.probes").joinpath("host_facts.py")))
    return remote.run_all(hosts, _gather_one, script, _peers(inventory, settings))


def _gather_one(host: Host, script: Path, peers: list[str]) -> Gathered:
    sent = time.time()
    result = remote.run_python(host, script, [p for p in peers if not p.startswith(f"{host.address}:")])
    return result, sent, time.time()


def _peer(host: Host, settings: SiteSettings) -> str:
    # node_exporter's port: every host has it, and the hardened firewall opens it to the site's hosts
    # (SSH is for the admin sources only). Before install nothing listens there: a refusal is an answer.
    return f"{host.address}:{settings.monitoring.node_exporter_port}"


def _peers(inventory: Inventory, settings: SiteSettings) -> list[str]:
    peers = [_peer(h, settings) for h in inventory.hosts.values()]
    source = package_source(settings, inventory)
    if source:
        peers.append(source)
    return peers


def package_source(settings: SiteSettings, inventory: Inventory) -> str | None:
    """host:port of the apt proxy or repository the hosts install from: packages.url, or for a bundle
    without one, this machine's address towards the hosts and the port it serves the bundle on."""
    url = settings.packages.url
    if not url:
        if settings.packages.source != "bundle" or not inventory.hosts:
            return None
        from aicc.installer.bundle.serve import source_address

        first = next(iter(inventory.hosts.values()))
        try:
            address = source_address(first.address)
        except InputError:
            return None
        return f"{address}:{settings.packages.serve_port}"
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def evaluate(
    inventory: Inventory,
    settings: SiteSettings,
    gathered: dict[str, Gathered],
    *,
    hosts: list[Host] | None = None,
) -> list[Check]:
    """Every check for every host. `gathered` maps host name -> (Result, sent, received)."""
    checks: list[Check] = []
    for host in hosts or list(inventory.hosts.values()):
        result, sent, received = gathered[host.name]
        checks.extend(check_host(host, inventory, settings, result, sent, received))
    return checks


def check_host(
    host: Host,
    inventory: Inventory,
    settings: SiteSettings,
    result: remote.Result,
    sent: float,
    received: float,
) -> list[Check]:
    name = host.name
    if result.unreachable:
        return [
            Check(
                name,
                "ssh",
                "fail",
                f"cannot connect to {host.user}@{host.address}:{host.port}: {remote.short_error(result)}",
                "check the address, that sshd runs and that your SSH key is authorized on the host",
            )
        ]
    if not result.ok:
        err = remote.short_error(result)
        if "password is required" in err or "sudo" in err:
            return [
                Check(
                    name,
                    "sudo",
                    "fail",
                    f"sudo without a password failed: {err}",
                    f"allow {host.user} passwordless sudo, or connect as root",
                )
            ]
        if "python3" in err and ("not found" in err or "No such file" in err):
            return [Check(name, "python3", "fail", "python3 is not installed", "apt-get install python3")]
        return [
            Check(
                name, "facts", "fail", f"gathering facts failed: {err}", "run the command by hand to see why"
            )
        ]
    try:
        facts = json.loads(result.stdout)
    except json.JSONDecodeError:
        return [
            Check(
                name,
                "facts",
                "fail",
                "the host returned unreadable facts",
                "check the login shell prints nothing",
            )
        ]

    checks = [
        Check(
            name,
            "ssh",
            "ok",
            f"{host.user}@{host.address} (sudo ok)" if host.user != "root" else f"root@{host.address}",
        )
    ]
    checks.append(_os(name, facts))
    checks.extend(_resources(name, host.groups, settings, facts))
    checks.extend(_ports(name, host.groups, settings, facts))
    checks.append(_clock(name, facts, sent, received))
    checks.extend(_network(name, host, inventory, settings, facts))
    if "llm" in host.groups:
        checks.append(_llm_engine(name, settings, facts))
    return checks


def _os(name: str, facts: dict[str, Any]) -> Check:
    os_ = facts["os"]
    if os_["id"] == "debian" and os_["version_id"] == "12":
        return Check(name, "os", "ok", os_["pretty"])
    return Check(
        name,
        "os",
        "fail",
        f"unsupported operating system: {os_['pretty'] or 'unknown'}",
        "aicc supports Debian 12 (bookworm) only",
    )


def _resources(name: str, groups: list[str], settings: SiteSettings, facts: dict[str, Any]) -> list[Check]:
    need = host_minimum(groups, lab=settings.profile == "lab")
    ram_gib = facts["mem_total_kib"] / 2**20
    why = f"for {'+'.join(groups)}"
    return [
        _at_least(name, "cpu", facts["cpus"], need.cpus, "cores", why),
        _at_least(name, "memory", round(ram_gib, 1), need.ram_gib, "GiB", why),
        _at_least(name, "disk", facts["disk_free_gib"], need.disk_gib, "GiB free on /", why),
    ]


def _at_least(name: str, check: str, have: float, need: float, unit: str, why: str) -> Check:
    if have >= need:
        return Check(name, check, "ok", f"{have:g} {unit} (need {need:g} {why})")
    return Check(
        name,
        check,
        "fail",
        f"{have:g} {unit}, need {need:g} {why}",
        "add resources, or move a group to another host in the inventory",
    )


def _ports(name: str, groups: list[str], settings: SiteSettings, facts: dict[str, Any]) -> list[Check]:
    held = {(item["proto"], item["port"]): item["process"] for item in facts["listeners"]}
    wanted = common_listeners(settings) + [lst for g in groups for lst in listeners(g, settings)]
    problems = []
    for lst in wanted:
        owner = held.get((lst.proto, lst.port))
        # After an install the port belongs to our own service: that is fine (preflight is re-runnable).
        if owner is not None and not owner.startswith(lst.process[:15]):
            problems.append(f"{lst.port}/{lst.proto} ({lst.what}) is taken by {owner or 'another process'}")
    if problems:
        return [
            Check(
                name,
                "ports",
                "fail",
                "; ".join(problems),
                "stop that service, or change the port in aicc.yml",
            )
        ]
    return [Check(name, "ports", "ok", f"{len(wanted)} ports free or held by aicc services")]


def _clock(name: str, facts: dict[str, Any], sent: float, received: float) -> Check:
    # The host's clock was read between sent and received: compare with the midpoint, minus half the trip.
    skew = abs(facts["time"] - (sent + received) / 2) - (received - sent) / 2
    skew = max(skew, 0.0)
    if skew > MAX_CLOCK_SKEW_S:
        return Check(
            name,
            "clock",
            "fail",
            f"clock is {skew:.1f} s off this machine's",
            "enable time sync (chrony) against your NTP servers",
        )
    if facts["ntp_synced"] is False:
        return Check(
            name,
            "clock",
            "warn",
            f"within {MAX_CLOCK_SKEW_S:g} s of this machine, NTP not synced yet",
            "the install configures chrony; check your NTP servers are reachable",
        )
    return Check(name, "clock", "ok", f"within {MAX_CLOCK_SKEW_S:g} s of this machine")


def _network(
    name: str, host: Host, inventory: Inventory, settings: SiteSettings, facts: dict[str, Any]
) -> list[Check]:
    checks = []
    peers: dict[str, dict[str, Any]] = facts["peers"]
    by_peer = {_peer(h, settings): h.name for h in inventory.hosts.values()}
    answered = {p for p, r in peers.items() if r["ok"] or r.get("answered")}
    unreached = [
        f"{by_peer.get(p, p)} ({p}): {r.get('error')}"
        for p, r in peers.items()
        if p not in answered and p in by_peer
    ]
    reached = sum(1 for p in answered if p in by_peer)
    if unreached:
        checks.append(
            Check(
                name,
                "network",
                "fail",
                "cannot reach " + "; ".join(unreached),
                "open the firewall between site hosts",
            )
        )
    else:
        checks.append(Check(name, "network", "ok", f"reaches {reached} other host(s)"))
    source = package_source(settings, inventory)
    if source and source in peers:
        served = (
            not settings.packages.url
        )  # the bundle server runs only during an install: a refusal is an answer
        label = settings.packages.url or f"https://{source}/ (this machine serves the bundle during installs)"
        if peers[source]["ok"] or (served and peers[source].get("answered")):
            checks.append(Check(name, "packages", "ok", f"package source {label} reachable"))
        else:
            checks.append(
                Check(
                    name,
                    "packages",
                    "fail",
                    f"package source {label} unreachable: {peers[source].get('error')}",
                    f"let the hosts reach this machine on port {settings.packages.serve_port}"
                    if served
                    else "start the package source, or correct packages.url in aicc.yml",
                )
            )
    if not facts["self"]["ok"]:
        checks.append(
            Check(
                name,
                "dns",
                "warn",
                f"own hostname {facts['self']['hostname']!r} does not resolve",
                "the install adds every site host to /etc/hosts",
            )
        )
    return checks


def _llm_engine(name: str, settings: SiteSettings, facts: dict[str, Any]) -> Check:
    gpu = facts["gpu"]
    best = max((d["memory_mib"] for d in gpu["devices"]), default=0) / 1024
    need = settings.engines.min_gpu_memory_gib
    choice = settings.engines.llm
    if choice == "llamacpp":
        return Check(name, "llm engine", "ok", "llama.cpp on CPU (set in aicc.yml)")
    if gpu["driver"] and best >= need:
        return Check(name, "llm engine", "ok", f"vLLM on GPU ({best:.0f} GiB >= {need} GiB)")
    reason = (
        f"GPU has {best:.0f} GiB, vLLM needs {need} GiB"
        if gpu["driver"]
        else "no NVIDIA driver (nvidia-smi not found)"
    )
    if choice == "vllm":
        return Check(
            name,
            "llm engine",
            "fail",
            f"vLLM requested but {reason}",
            "install the NVIDIA driver / a larger GPU, or set engines.llm: llamacpp (CPU engine)",
        )
    return Check(name, "llm engine", "ok", f"llama.cpp on CPU: {reason}")


def site_checks(settings: SiteSettings, secrets_path: Path) -> list[Check]:
    """Checks of the site folder itself (host "site") for the enabled messaging channels: their secrets
    in secrets.yml (never generated: the customer copies them in), and whether the hosts' firewall can
    let the [app] hosts reach their APIs (it allows addresses only)."""
    enabled = settings.channels.enabled()
    if not enabled:
        return []
    fix = (
        f'copy it from the platform\'s console into {secrets_path.name}, quoted (wecom_token: "..."); '
        "see appliance/README.md for where each is shown"
    )
    try:
        secrets = load_secrets(secrets_path)
    except InputError as exc:
        return [Check("site", "channel secrets", "fail", str(exc), exc.fix or "")]
    problems = channel_secret_problems(settings, secrets)
    checks = [Check("site", "channel secrets", "fail", f"{secrets_path}: {p}", fix) for p in problems]
    if not problems:
        names = ", ".join(n for n, _ in enabled)
        checks.append(
            Check("site", "channel secrets", "ok", f"{secrets_path.name} holds the secrets of {names}")
        )
    for name, channel in enabled:
        for url in channel.endpoints():
            checks.append(_egress_check(name, url))
    return checks


def _egress_check(name: str, url: str) -> Check:
    """Whether the [app] hosts' firewall can let them reach a channel's server (addresses only)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or 443
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return Check(
            "site",
            "channel egress",
            "warn",
            f"channels.{name}: the host {host} is a name: the hosts' firewall (aicc "
            "harden apply) allows addresses only, so the [app] hosts cannot reach it once hardened",
            f"add the addresses {host} has for your site (getent ahosts {host} on an [app] host) to "
            f"hardening.egress_allow (tcp {port}), and keep them current; or filter egress in the "
            "site's own firewall (hardening_firewall: false)",
        )
    return Check("site", "channel egress", "ok", f"the [app] hosts' firewall allows {host} tcp {port}")


def summary(checks: list[Check]) -> dict[str, int]:
    return {s: sum(1 for c in checks if c.status == s) for s in ("ok", "warn", "fail")}


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {
        "ok": not any(c.status == "fail" for c in checks),
        "summary": summary(checks),
        "checks": [asdict(c) for c in checks],
    }
