"""The lab hosts themselves: they boot, answer SSH, see each other and nothing outside the lab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from aicc.installer.lab import lifecycle
from aicc.installer.lab.ssh import run_ssh
from aicc.installer.lab.state import load_state, process_alive, state_path
from aicc.installer.lab.steps import Steps
from tests.integration.conftest import Lab, processes_of
from tests.integration.site_fixture import InstalledSite

pytestmark = pytest.mark.lab
AICC = str(Path(sys.executable).parent / "aicc")

# A TCP connect from Python: prints "ok" or the errno name, so failures are told apart.
CONNECT = (
    "python3 -c 'import socket,sys,errno\n"
    "s=socket.socket(); s.settimeout(3)\n"
    'try:\n s.connect((sys.argv[1], int(sys.argv[2]))); print("ok")\n'
    "except OSError as e: print(errno.errorcode.get(e.errno, str(e)))' {addr} {port}"
)


def aicc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AICC, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_every_host_boots_systemd_to_running(lab: Lab) -> None:
    for host in lab.hosts:
        res = lab.ssh(host, "systemctl is-system-running --wait; systemctl --failed --no-legend --plain")
        assert res.stdout.splitlines()[0] == "running", (host, res.stdout, res.stderr)


def test_a_unit_that_failed_during_the_boot_gets_one_restart(lab: Lab) -> None:
    """What `lab up` does once a new host answers: a unit that failed once recovers, one that fails
    again stays failed (and the host "degraded")."""
    host, address = list(lab.hosts.items())[-1]
    units = {
        "aicc-flaky": "test -e /run/aicc-flaky || { touch /run/aicc-flaky; exit 3; }",
        "aicc-broken": "exit 4",
    }
    for unit, script in units.items():
        unit_file = f"[Service]\nType=oneshot\nExecStart=/bin/sh -c '{script}'\n"
        lab.ssh(host, f'printf "{unit_file}" > /run/systemd/system/{unit}.service')
    lab.ssh(host, "systemctl daemon-reload; systemctl start aicc-flaky aicc-broken")
    try:
        restarted = lifecycle.settle_boot(lab.site, address)
        assert sorted(restarted) == ["aicc-broken.service 4", "aicc-flaky.service 3"]
        failed = lab.ssh(host, "systemctl --failed --no-legend --plain").stdout.split()
        assert "aicc-flaky.service" not in failed and "aicc-broken.service" in failed
    finally:
        lab.ssh(host, "rm -f /run/systemd/system/aicc-*.service /run/aicc-flaky; systemctl daemon-reload")
        lab.ssh(host, "systemctl reset-failed")
    assert lab.ssh(host, "systemctl is-system-running").stdout.strip() == "running"


def test_ssh_reaches_each_host_with_its_own_identity(lab: Lab) -> None:
    machine_ids = set()
    for host, address in lab.hosts.items():
        res = lab.ssh(host, "hostname; cat /etc/machine-id; ip -4 -o addr show dev eth0")
        assert res.returncode == 0, res.stderr
        name, machine_id, addr_line = res.stdout.splitlines()
        assert name == host
        assert f"inet {address}/" in addr_line
        machine_ids.add(machine_id)
    assert len(machine_ids) == len(lab.hosts)
    # Host keys differ per host and are pinned in known_hosts (StrictHostKeyChecking=yes above).
    keys = [line.split()[2] for line in (lab.site / "ssh" / "known_hosts").read_text().splitlines()]
    assert len(set(keys)) == len(lab.hosts)


def test_hosts_reach_each_other_and_the_bridge(lab: Lab) -> None:
    for host in lab.hosts:
        for other, address in lab.hosts.items():
            # node_exporter's port: open between site hosts once installed and hardened (SSH is for the
            # admin sources only then); before install the host answers with a refusal.
            res = lab.ssh(host, CONNECT.format(addr=address, port=9100))
            assert res.stdout.strip() in ("ok", "ECONNREFUSED"), (host, other, res.stdout, res.stderr)
            assert lab.ssh(host, f"getent hosts {other}").stdout.split()[0] == address  # /etc/hosts


def test_hosts_reach_nothing_outside_the_lab(lab: Lab) -> None:
    """The only way out is the bridge address, which forwards nothing; every host's namespace refuses
    (and counts) anything addressed outside the subnet, set from outside the host before it booted.
    No probe is sent from these hosts: the suite ends by checking that nothing tried to leave them
    (the probes run on a lab of their own, below)."""
    health = lifecycle.lab_health(lab.state(), check_ssh=False)
    for host in lab.hosts:
        routes = json.loads(lab.ssh(host, "ip -j -4 route show table main").stdout)
        assert {(r["dst"], r.get("gateway")) for r in routes} == {
            ("default", lab.bridge_address),
            (lab.subnet, None),
        }, (host, routes)
        v6 = lab.ssh(host, "ip -6 route show default").stdout.strip()
        assert v6 == "", (host, v6)
        # Nor a proxy: packages come from the offline bundle the installer serves during an install.
        assert "Proxy" not in lab.ssh(host, "apt-config dump Acquire::http").stdout, host
    assert all(h.egress.policy for h in health.hosts), health.hosts
    with open("/proc/sys/net/ipv4/ip_forward", encoding="ascii") as fh:
        assert fh.read().strip() == "0"


def test_lab_cli_status_ssh_and_second_up(lab: Lab) -> None:
    res = aicc("lab", "status", "--name", lab.name, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["healthy"] and [h["name"] for h in doc["hosts"]] == list(lab.hosts)
    assert all(h["running"] and h["ssh_ok"] for h in doc["hosts"])

    res = aicc("lab", "ssh", "lab1", "--name", lab.name, "--", "hostname")
    assert res.returncode == 0 and res.stdout.strip() == "lab1", res.stdout + res.stderr

    secrets_before = (lab.site / "secrets.yml").read_bytes()
    state_before = lab.state()
    res = aicc(
        "lab",
        "up",
        "--name",
        lab.name,
        "--subnet",
        lab.subnet,
        "--hosts",
        str(len(lab.hosts)),
        "--site",
        str(lab.site),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "already up" in res.stderr
    assert lab.state().resources == state_before.resources  # nothing was recreated
    assert (lab.site / "secrets.yml").read_bytes() == secrets_before

    res = aicc("lab", "up", "--name", lab.name, "--subnet", "10.231.1.0/24", "--site", str(lab.site))
    assert res.returncode == 2 and "already up" in res.stderr, res.stderr


def test_ansible_reaches_every_host_with_the_lab_inventory_alone(lab: Lab, tmp_path: Path) -> None:
    """The inventory carries key, pinned host keys and interpreter: plain Ansible needs nothing else."""
    env = {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path),
        "HOME": str(tmp_path),
    }  # no ~/.ssh or ansible.cfg of this machine helps
    res = subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "all", "-i", str(lab.inventory), "-m", "ping"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("SUCCESS") == len(lab.hosts), res.stdout


def test_preflight_passes_on_the_lab(lab: Lab) -> None:
    res = aicc("preflight", "-i", str(lab.inventory), "--json")
    doc = json.loads(res.stdout)
    failed = [c for c in doc["checks"] if c["status"] == "fail"]
    assert res.returncode == 0, failed


def test_preflight_names_a_stopped_host(lab: Lab, tmp_path: Path) -> None:
    """On a lab of its own (2 hosts), so the shared test lab's converged hosts keep running."""
    name, site = "aicctpf", tmp_path / "site"
    try:
        state = lifecycle.up(name, "10.231.204.0/24", 2, site, force=True, steps=Steps(quiet=True))
        inventory = str(site / "inventory.ini")
        assert aicc("preflight", "-i", inventory, "--json").returncode == 0
        lifecycle.stop_host(state, "lab2")
        res = aicc("preflight", "-i", inventory, "--json")
        doc = json.loads(res.stdout)
        failed = [c for c in doc["checks"] if c["status"] == "fail"]
        assert res.returncode == 1
        assert {"host": "lab2", "check": "ssh"} in [{"host": c["host"], "check": c["check"]} for c in failed]
        # lab1 is up; at most its reach to lab2 fails.
        assert all(
            c["check"] == "network" and "lab2" in c["message"] for c in failed if c["host"] == "lab1"
        ), failed
        table = aicc("preflight", "-i", inventory)
        assert table.returncode == 1
        rows = [line for line in table.stdout.splitlines() if "lab2" in line and "fail" in line]
        assert rows, table.stdout
        lifecycle.start_host(state, "lab2")  # and back: the host comes up again from its overlay
        assert aicc("preflight", "-i", inventory, "--json").returncode == 0
    finally:
        lifecycle.down(name, Steps(quiet=True))
    assert lifecycle.find_leftovers(name) == []


def test_second_lab_coexists_and_recovers_from_a_crash(lab: Lab, tmp_path: Path) -> None:
    """A 1-host lab beside the test lab: killed hard, `lab up` cleans and reboots it; down twice."""
    name, subnet = "aicctcr", "10.231.201.0/24"
    site = tmp_path / "site"
    try:
        state = lifecycle.up(name, subnet, 1, site, force=True, steps=Steps(quiet=True))
        inventory = (site / "inventory.ini").read_text()
        for group in ("sip_proxy", "media", "voicebot", "speech", "llm", "app", "db", "monitoring"):
            assert f"[{group}]\nlab1" in inventory
        secrets_before = (site / "secrets.yml").read_bytes()
        nspawn = next(r for r in state.resources if r.name.startswith("systemd-nspawn"))
        assert nspawn.pid is not None
        subprocess.run(["kill", "-9", str(nspawn.pid)], check=True)
        # kill returns before the process is gone: `up` must find it dead, not racing its exit
        for _ in range(100):
            if not process_alive(nspawn):
                break
            time.sleep(0.05)
        lifecycle.up(name, subnet, 1, site, steps=Steps(quiet=True))
        again = load_state(name)
        assert again is not None and again.complete
        assert lifecycle.lab_health(again).healthy
        assert (site / "secrets.yml").read_bytes() == secrets_before
        # The test lab was not touched.
        assert all(h.running and h.ssh_ok for h in lifecycle.lab_health(lab.state()).hosts)
        # Its egress policy came back with it: a try to leave is refused at once, counted and named.
        address = again.plan.hosts[0].address
        for outside in ("192.0.2.1", "10.231.254.1"):
            res = run_ssh(site, address, CONNECT.format(addr=outside, port=80))
            assert res.stdout.strip() == "ECONNREFUSED", (outside, res.stdout, res.stderr)
        egress = lifecycle.lab_health(again, check_ssh=False).hosts[0].egress
        assert egress.policy and egress.packets >= 2, egress
        assert {"192.0.2.1 tcp/80", "10.231.254.1 tcp/80"} <= set(egress.tried), egress
        status = json.loads(aicc("lab", "status", "--name", name, "--json").stdout)
        assert status["hosts"][0]["egress"]["tried"] == egress.tried and status["healthy"] is True
        # A run cut short (state file gone, container still up): named, then removed with --force.
        state_path(name).unlink()
        res = aicc("lab", "up", "--name", name, "--subnet", subnet, "--hosts", "1", "--site", str(site))
        assert res.returncode != 0 and "no state file" in res.stderr and "kill " in res.stderr, res.stderr
        res = aicc("lab", "down", "--name", name, "--yes", "--force")
        assert res.returncode == 0, res.stderr
        assert lifecycle.find_leftovers(name) == []
    finally:
        lifecycle.down(name, Steps(quiet=True))
    assert lifecycle.find_leftovers(name) == []
    assert processes_of(name, "10.231.201.1") == []
    assert lifecycle.down(name, Steps(quiet=True)) is False  # safe to run twice
    res = aicc("lab", "down", "--name", name, "--yes")
    assert res.returncode == 0 and "not up" in res.stdout


@pytest.mark.last
def test_nothing_tried_to_leave_the_lab_during_the_whole_run(installed_site: InstalledSite) -> None:
    """Fresh hosts under default-deny egress from their first boot; a full install from the offline
    bundle and every test's calls, bots, pages, hardening and second install since: no host sent a
    packet to a real address outside the lab (counted by the policy, destinations remembered)."""
    health = lifecycle.lab_health(installed_site.lab.state(), check_ssh=False)
    assert all(h.egress.policy for h in health.hosts), health.hosts
    tried = {h.name: h.egress.tried for h in health.hosts if h.egress.packets}
    # This machine is also the agents' PC: the browser softphone offers its addresses as ICE host
    # candidates, and rtpengine checks every candidate. Those outside the lab subnet (this machine's
    # own uplink address) are refused by the lab's table; they are this machine, not the outside.
    own = this_machines_addresses()
    real = {host: [t for t in dests if t.split()[0] not in own] for host, dests in tried.items()}
    if tried != real:
        warnings.warn(
            f"lab hosts addressed this machine outside the lab subnet (refused): {tried}", stacklevel=1
        )
    assert not any(real.values()), tried
    # A refused packet that was not TCP or UDP names no destination: it cannot be explained away.
    assert all(tried.values()), health.hosts


def this_machines_addresses() -> set[str]:
    """Every address of this machine's own interfaces (`ip -j addr`)."""
    links = json.loads(
        subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout
    )
    return {a["local"] for link in links for a in link.get("addr_info", [])}
