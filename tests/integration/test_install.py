"""The whole site installed on the lab, seen as customer IT and an auditor would see it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aicc.installer.site import Site
from tests.integration.site_fixture import PROBE_DEPENDS, PROBE_PACKAGE, InstalledSite

pytestmark = pytest.mark.lab
AICC = str(Path(sys.executable).parent / "aicc")


def aicc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AICC, *args], capture_output=True, text=True, timeout=600, check=False)


def test_install_report_covers_every_host(installed_site: InstalledSite) -> None:
    report = installed_site.report
    assert report["ok"] and not report["failures"]
    assert set(report["hosts"]) >= set(installed_site.hosts)
    assert Path(report["log"]).is_file()


def test_status_shows_every_service_active_with_version_and_ports(installed_site: InstalledSite) -> None:
    res = aicc("status", "-i", str(installed_site.inventory), "--json")
    doc = json.loads(res.stdout)
    inactive = [(s["host"], s["service"], s["active"]) for s in doc["services"] if s["active"] != "active"]
    assert res.returncode == 0 and not inactive, inactive
    by = {(s["host"], s["service"]): s for s in doc["services"]}
    db = installed_site.hosts_in("db")[0]
    pg = by[(db, "postgresql@15-main")]
    assert pg["version"].startswith("15") and any(p.endswith(":5432/tcp") for p in pg["ports"])


def test_preflight_still_passes_on_the_installed_site(installed_site: InstalledSite) -> None:
    # Ports now held by aicc's own services must not count as conflicts.
    res = aicc("preflight", "-i", str(installed_site.inventory), "--json")
    doc = json.loads(res.stdout)
    assert res.returncode == 0, [c for c in doc["checks"] if c["status"] == "fail"]


def test_no_secret_in_logs_or_runner_artifacts(installed_site: InstalledSite) -> None:
    secrets = [v for v in Site(installed_site.site).secrets().values() if len(v) >= 8]
    leaks = []
    for folder in (installed_site.site / "logs", installed_site.site / ".runner"):
        for path in folder.rglob("*"):
            if not path.is_file() or path.name == "site-vars.yml":
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            leaks += [str(path) for s in secrets if s in text]
    assert not leaks, f"secret values found in: {sorted(set(leaks))}"


def test_second_install_changes_nothing(installed_site: InstalledSite) -> None:
    second = installed_site.second_install()
    assert second["ok"], second.get("failures")
    changed = {h: s["changed"] for h, s in second["hosts"].items() if s["changed"]}
    assert not changed, f"not idempotent: changed tasks per host {changed}; log {second['log']}"


def test_a_customer_deb_from_the_bundle_is_on_every_host_with_its_dependency(
    installed_site: InstalledSite,
) -> None:
    """`aicc bundle build --with-deb` + packages.extra: installed from the bundle's repository, and
    the Debian package it depends on (named by no role) came along in the closure."""
    for host in installed_site.hosts:
        res = installed_site.ssh(
            host, f"dpkg-query -W -f '${{Package}} ${{Status}}\\n' {PROBE_PACKAGE} {PROBE_DEPENDS}"
        )
        assert res.returncode == 0, (host, res.stdout, res.stderr)
        assert res.stdout.split("\n")[:2] == [
            f"{PROBE_PACKAGE} install ok installed",
            f"{PROBE_DEPENDS} install ok installed",
        ], (host, res.stdout)
        origin = installed_site.ssh(host, f"apt-cache policy {PROBE_PACKAGE}").stdout
        assert "aicc" in origin or "https://" in origin, (host, origin)
