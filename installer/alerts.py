"""`aicc alerts` and the alerts part of `aicc status`: what the site's Prometheus has firing or
pending now, with each alert's runbook link. Asked on the monitoring host itself (over ssh), since
Prometheus listens on that host's address only."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from aicc.installer import remote
from aicc.installer.errors import RunFailed
from aicc.installer.inventory import Inventory

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class FiringAlert:
    name: str
    state: str  # firing or pending
    severity: str
    host: str
    summary: str
    since: str
    runbook_url: str
    labels: dict[str, str]


def prometheus_url(inventory: Inventory, port: int) -> tuple[str, str]:
    """(monitoring host name, Prometheus URL on its address)."""
    host = inventory.monitoring_host("nothing evaluates alerts")
    address = f"[{host.address}]" if ":" in host.address else host.address
    return host.name, f"http://{address}:{port}"


def collect(inventory: Inventory, port: int) -> list[FiringAlert]:
    name, url = prometheus_url(inventory, port)
    script = Path(str(resources.files("aicc.installer.probes").joinpath("prometheus_alerts.py")))
    result = remote.run_python(inventory.hosts[name], script, [url], timeout=30)
    if not result.ok:
        raise RunFailed(
            f"could not ask Prometheus on {name}: {remote.short_error(result)}",
            where=name,
            fix="check the host is up (`aicc status`)",
        )
    data = json.loads(result.stdout)
    if not data["ok"]:
        raise RunFailed(
            f"Prometheus at {url} did not answer: {data['error']}",
            where=name,
            fix="check `systemctl status prometheus` on that host",
        )
    return parse(data["alerts"])


def parse(raw: list[dict[str, object]]) -> list[FiringAlert]:
    alerts = []
    for a in raw:
        labels = {str(k): str(v) for k, v in dict(a.get("labels") or {}).items()}  # type: ignore[call-overload]
        notes = dict(a.get("annotations") or {})  # type: ignore[call-overload]
        alerts.append(
            FiringAlert(
                name=labels.get("alertname", "?"),
                state=str(a.get("state", "")),
                severity=labels.get("severity", ""),
                host=labels.get("host", ""),
                summary=str(notes.get("summary", "")),
                since=str(a.get("activeAt", ""))[:19].replace("T", " "),
                runbook_url=str(notes.get("runbook_url", "")),
                labels=labels,
            )
        )
    return sorted(
        alerts, key=lambda x: (x.state != "firing", SEVERITY_ORDER.get(x.severity, 9), x.name, x.host)
    )


def as_json(alerts: list[FiringAlert]) -> list[dict[str, object]]:
    return [asdict(a) for a in alerts]
