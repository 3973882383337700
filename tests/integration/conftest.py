"""Session fixture `lab`: real Debian 12 hosts (systemd-nspawn) booted once per test run.

The lab is named `aicctest` on 10.231.200.0/24 so it never meets a developer's own lab or the demo.
It is recreated fresh at the start (--force) and removed at the end; teardown then checks that no
process, network namespace, interface or folder of it is left. When the lab cannot start, every
test that uses it FAILS with the reason: a skipped integration suite would hide a broken installer.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from aicc.installer.errors import AiccError
from aicc.installer.lab import lifecycle
from aicc.installer.lab.ssh import run_ssh
from aicc.installer.lab.state import LabState, load_state
from aicc.installer.lab.steps import Steps
from tests.integration.appliance_fixture import appliance  # noqa: F401
from tests.integration.site_fixture import installed_site, pytest_terminal_summary  # noqa: F401

LAB_NAME = os.environ.get("AICC_TEST_LAB_NAME", "aicctest")
LAB_SUBNET = os.environ.get("AICC_TEST_LAB_SUBNET", "10.231.200.0/24")
LAB_HOSTS = int(os.environ.get("AICC_TEST_LAB_HOSTS", "3"))


@dataclass
class Lab:
    name: str
    site: Path
    inventory: Path
    hosts: dict[str, str]  # host name -> address
    bridge_address: str
    subnet: str

    def state(self) -> LabState:
        state = load_state(self.name)
        assert state is not None, f"lab {self.name} has no state file"
        return state

    def ssh(self, host: str, cmd: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_ssh(self.site, self.hosts[host], cmd, timeout=timeout)

    def stop_host(self, host: str) -> None:
        lifecycle.stop_host(self.state(), host)

    def start_host(self, host: str) -> None:
        lifecycle.start_host(self.state(), host)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (network namespaces, bridges, systemd-nspawn); run the tests as root")
    site = tmp_path_factory.mktemp("aicc-lab-site")
    steps = Steps(Console(stderr=True), quiet=False)
    try:
        state = lifecycle.up(LAB_NAME, LAB_SUBNET, LAB_HOSTS, site, force=True, steps=steps)
    except AiccError as exc:
        pytest.fail(f"the test lab did not start: {exc}")
    plan = state.plan
    try:
        yield Lab(
            name=plan.name,
            site=site,
            inventory=site / "inventory.ini",
            hosts={h.name: h.address for h in plan.hosts},
            bridge_address=plan.bridge_address,
            subnet=plan.subnet,
        )
    finally:
        lifecycle.down(LAB_NAME, Steps(quiet=True))
        left = [x.command for x in lifecycle.find_leftovers(LAB_NAME)] + processes_of(
            LAB_NAME, plan.bridge_address
        )
        if left:
            pytest.fail(f"lab teardown left: {left}")


def processes_of(name: str, bridge_address: str) -> list[str]:
    """Live processes whose command line names this lab (its containers or its apt forwarder)."""
    found = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"--machine {name}-lab" in cmdline or f"bind={bridge_address}," in cmdline:
            found.append(f"pid {pid_dir.name}: {cmdline.strip()}")
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `last` check what the whole run did to the lab: they go to the end."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)  # stable: order kept
