"""Central logs against the live lab: a line logged on a host reaches the monitoring host's journal
(systemd-journal-upload -> systemd-journal-remote, HTTPS) and `aicc logs` finds it by host,
text and unit."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from typing import Any

from tests.integration.site_fixture import AICC, InstalledSite

ARRIVAL_S = 30


def aicc_logs(site: InstalledSite, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AICC, "logs", "-i", str(site.inventory), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def wait_for(site: InstalledSite, *args: str) -> tuple[list[dict[str, Any]], float]:
    started = time.monotonic()
    last = ""
    while True:
        res = aicc_logs(site, *args)
        last = res.stdout[-2000:] + res.stderr[-2000:]
        if res.returncode == 0:
            entries: list[dict[str, Any]] = json.loads(res.stdout)["entries"]
            if entries:
                return entries, time.monotonic() - started
        if time.monotonic() - started > ARRIVAL_S:
            raise AssertionError(f"aicc logs {' '.join(args)} found nothing in {ARRIVAL_S} s: {last}")
        time.sleep(2)


def sender(site: InstalledSite) -> str:
    monitoring = set(site.hosts_in("monitoring"))
    return next(h for h in site.hosts if h not in monitoring)


def test_a_line_logged_on_a_host_is_found_on_the_monitoring_host(installed_site: InstalledSite) -> None:
    host = sender(installed_site)
    marker = "aicc-logs-" + secrets.token_hex(8)
    logged = installed_site.ssh(host, f"logger -t aicc-test {marker}")
    assert logged.returncode == 0, logged.stderr
    entries, took = wait_for(installed_site, "--host", host, "--grep", marker)
    print(f"marker arrived after {took:.1f} s")
    assert [(e["host"], e["identifier"], e["message"]) for e in entries] == [(host, "aicc-test", marker)]
    assert entries[0]["time"].endswith("Z")
    # Another host's filter does not see it.
    other = next(h for h in installed_site.hosts if h != host)
    res = aicc_logs(installed_site, "--host", other, "--grep", marker, "--since", "-10min")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["entries"] == []


def test_unit_filter_returns_only_that_units_entries(installed_site: InstalledSite) -> None:
    host = sender(installed_site)
    marker = "aicc-logs-unit-" + secrets.token_hex(8)
    # A transient unit of its own, so the filter has exactly one known source.
    unit = "aicc-logs-test-" + secrets.token_hex(4)
    ran = installed_site.ssh(host, f"systemd-run --unit={unit} --wait --quiet /bin/echo {marker}")
    assert ran.returncode == 0, ran.stderr
    # journalctl -u also gives systemd's own lines about the unit (init.scope: "Started <unit> -
    # /bin/echo MARKER"), so the unit's own line is looked for among them.
    entries, _ = wait_for(installed_site, "--host", host, "--unit", unit, "--grep", f"^{marker}$")
    assert [(e["unit"], e["message"]) for e in entries] == [(f"{unit}.service", marker)]
    everything, _ = wait_for(installed_site, "--host", host, "--unit", unit, "--lines", "50")
    assert everything and all(
        e["unit"] == f"{unit}.service" or (e["unit"] == "init.scope" and unit in e["message"])
        for e in everything
    ), everything
    # Another unit's filter does not see it.
    res = aicc_logs(installed_site, "--host", host, "--unit", "systemd-journald", "--grep", marker)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["entries"] == []


def test_bad_arguments_are_refused(installed_site: InstalledSite) -> None:
    res = aicc_logs(installed_site, "--host", "no-such-host")
    assert res.returncode == 2
    assert "not a host of the inventory" in json.loads(res.stdout)["error"]
    res = aicc_logs(installed_site, "--unit", "x;reboot")
    assert res.returncode == 2
