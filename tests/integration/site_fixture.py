"""Session fixture `installed_site`: the full `aicc install` run once on the test lab.

Tests of every role share it, so the lab converges once per run. A second install (for the
changed=0 check) runs lazily, once, when a test first asks for it. Both install times are printed
in pytest's terminal summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

AICC = str(Path(sys.executable).parent / "aicc")
TIMINGS: dict[str, float] = {}


def run_install(inventory: Path) -> tuple[dict[str, Any], float, str]:
    started = time.monotonic()
    proc = subprocess.run(
        [AICC, "install", "-i", str(inventory), "--json"],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
        env={**os.environ},
    )
    seconds = time.monotonic() - started
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = {"ok": False, "error": proc.stdout[-2000:] + proc.stderr[-2000:]}
    return report, seconds, proc.stderr


@dataclass
class InstalledSite:
    lab: Any
    report: dict[str, Any]
    seconds: float
    _second: dict[str, Any] | None = field(default=None)

    @property
    def site(self) -> Path:
        return Path(self.lab.site)

    @property
    def inventory(self) -> Path:
        return Path(self.lab.inventory)

    @property
    def hosts(self) -> dict[str, str]:
        return dict(self.lab.hosts)

    def ssh(self, host: str, cmd: str) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.lab.ssh(host, cmd)
        return result

    def hosts_in(self, group: str) -> list[str]:
        from aicc.installer.inventory import load_inventory

        return [h.name for h in load_inventory(self.inventory).group(group)]

    def address_of(self, group: str) -> str:
        return self.hosts[self.hosts_in(group)[0]]

    def second_install(self) -> dict[str, Any]:
        if self._second is None:
            self._second, TIMINGS["second install (s)"], _ = run_install(self.inventory)
        return self._second


PROBE_PACKAGE = "aicc-lab-probe"
PROBE_DEPENDS = "tree"  # in Debian, in no role's package list, not in the base image


def probe_deb(folder: Path) -> Path:
    """A customer-style .deb, built once (reproducibly: SOURCE_DATE_EPOCH) so the bundle stays cached."""
    deb = folder / f"{PROBE_PACKAGE}_1.0_all.deb"
    if deb.is_file():
        return deb
    root = folder / "src"
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {PROBE_PACKAGE}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: aicc tests <tests@aicc.invalid>\n"
        f"Depends: {PROBE_DEPENDS}\nDescription: stands for a customer package added with --with-deb\n",
        encoding="utf-8",
    )
    doc = root / "usr" / "share" / "doc" / PROBE_PACKAGE
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "README").write_text(
        "Installed from the aicc offline bundle by the test suite.\n", encoding="utf-8"
    )
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)],
        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
        capture_output=True,
        check=True,
    )
    return deb


@pytest.fixture(scope="session")
def installed_site(lab: Any) -> InstalledSite:
    from rich.console import Console

    from aicc.installer.bundle.build import CACHE, build
    from aicc.installer.bundle.site_import import import_bundle
    from aicc.installer.lab.sitefiles import set_package_source, set_packages
    from aicc.installer.site import Site

    # Every lab install is from the offline bundle, as on a customer's site: built from the machine's
    # caches (llama-server, models, wheelhouse, .debs; each built once per machine), checked and
    # imported into the lab's site; the hosts' packages then come only from it over HTTPS.
    # A customer's own .deb rides along (--with-deb) and is installed on every host (packages.extra);
    # it depends on a Debian package no role names, so the closure must follow it.
    built = build(
        CACHE / "aicc-test-bundle.tar",
        models=None,
        with_debs=[probe_deb(CACHE / "test-debs")],
        console=Console(stderr=True),
        quiet=True,
    )
    for step, took in built.seconds.items():
        TIMINGS[f"bundle: {step} (s)"] = took
    started = time.monotonic()
    verdict = import_bundle(built.archive, Path(lab.site), None, lambda n: None)
    assert verdict.ok, verdict.problems
    TIMINGS["bundle: import (s)"] = time.monotonic() - started
    set_package_source(Site(Path(lab.site)), "bundle", "")
    set_packages(Site(Path(lab.site)), extra=[PROBE_PACKAGE])
    report, seconds, stderr = run_install(Path(lab.inventory))
    TIMINGS["first install (s)"] = seconds
    if not report.get("ok"):
        failures = report.get("failures") or report.get("error") or stderr[-3000:]
        pytest.fail(
            f"aicc install failed on the test lab after {seconds:.0f} s: {failures}\nlog: {report.get('log')}"
        )
    return InstalledSite(lab=lab, report=report, seconds=seconds)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.section("aicc install timings")
        for name, value in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {value:.1f}")
