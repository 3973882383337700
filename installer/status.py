"""`aicc status`: per host and service, whether it is active, its version and its listening ports."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from aicc.installer import remote
from aicc.installer.inventory import Host, Inventory
from aicc.installer.sizing import COMMON_SERVICES, SERVICES


@dataclass(frozen=True)
class ServiceStatus:
    host: str
    service: str
    active: str
    enabled: str
    version: str
    ports: list[str]


def services_for(host: Host) -> list[tuple[str, str]]:
    wanted = list(COMMON_SERVICES)
    for group in host.groups:
        wanted += [s for s in SERVICES.get(group, []) if s not in wanted]
    return wanted


def collect(inventory: Inventory, hosts: list[Host]) -> list[ServiceStatus]:
    script = Path(str(resources.files("aicc.installer.probes").joinpath("service_status.py")))
    results = remote.run_all(
        hosts, lambda h: remote.run_python(h, script, [f"{u}={p}" for u, p in services_for(h)])
    )
    rows: list[ServiceStatus] = []
    for host in hosts:
        res = results[host.name]
        if not res.ok:
            why = "unreachable" if res.unreachable else "error"
            rows.append(ServiceStatus(host.name, "-", why, "-", remote.short_error(res), []))
            continue
        data = json.loads(res.stdout)
        for unit, _pkg in services_for(host):
            info = data[unit]
            rows.append(
                ServiceStatus(
                    host.name, unit, info["active"], info["enabled"], info["version"], info["ports"]
                )
            )
    return rows


def healthy(rows: list[ServiceStatus]) -> bool:
    return all(r.active == "active" for r in rows)


def as_json(rows: list[ServiceStatus]) -> dict[str, object]:
    return {"ok": healthy(rows), "services": [asdict(r) for r in rows]}
