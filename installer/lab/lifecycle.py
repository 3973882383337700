"""`lab up`, `lab down` and the lab's health: the order in which things are made and unmade."""

from __future__ import annotations

import ipaddress
import os
import signal
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from aicc.installer.errors import InputError, RunFailed
from aicc.installer.lab import hosts, image, net, prereqs, procs
from aicc.installer.lab.fsutil import remove_tree
from aicc.installer.lab.groups import groups_by_host
from aicc.installer.lab.locks import file_lock
from aicc.installer.lab.plan import LabPlan, make_plan, validate_name
from aicc.installer.lab.sitefiles import write_site
from aicc.installer.lab.ssh import ensure_keypair, run_ssh, ssh_ok, wait_ssh, write_known_hosts
from aicc.installer.lab.state import (
    STATE_FILE,
    LabState,
    Resource,
    all_labs,
    lab_dir,
    load_state,
    proc_start_time,
    process_alive,
    record,
    save_state,
    state_root,
)
from aicc.installer.lab.steps import Steps

SSH_TIMEOUT = 120.0
NSPAWN_GRACE = 20.0  # seconds for a container's orderly shutdown before SIGKILL


class HostHealth(BaseModel):
    name: str
    address: str
    groups: list[str]
    running: bool
    ssh_ok: bool
    egress: net.EgressAttempts


class LabHealth(BaseModel):
    name: str
    subnet: str
    bridge: str
    bridge_address: str
    site: str
    inventory: str
    complete: bool
    hosts: list[HostHealth]

    @property
    def healthy(self) -> bool:
        return self.complete and self.hosts_ok and all(h.egress.policy for h in self.hosts)

    @property
    def hosts_ok(self) -> bool:
        return all(h.running and h.ssh_ok for h in self.hosts)


def _lock(name: str) -> Path:
    return state_root() / f".{name}.lock"


def up(
    name: str,
    subnet: str,
    n_hosts: int,
    site: Path,
    *,
    force: bool = False,
    cache: Path | None = None,
    steps: Steps | None = None,
    ssh_timeout: float = SSH_TIMEOUT,
) -> LabState:
    steps = steps or Steps()
    prereqs.check_root()
    plan = make_plan(name, subnet, n_hosts)
    site = site.resolve()
    with file_lock(_lock(name)):
        existing = load_state(name)
        if existing is not None:
            if _keep_existing(existing, plan, site, force, steps):
                return existing
        else:
            _clear_leftovers(name, force, steps, fix="pick another --name, or --force to remove them")
        _check_subnet_free(plan)
        prereqs.ensure_kernel_limits(steps.say)
        installed = prereqs.ensure_packages(steps.say)
        if installed:
            steps.say(f"installed: {' '.join(installed)}")
        root = image.cache_root(cache)
        with steps.step(f"base image in {root} (cached: {'yes' if image.is_cached(root) else 'no'})") as s:
            lower, cached = image.ensure_image(root)
            s["note"] = f"{image.image_dir(root).name}" + (" (built now)" if not cached else "")
        state = LabState(plan=plan, site=str(site), image=str(lower))
        try:
            _create(state, lower, site, steps, ssh_timeout)
        except BaseException:
            steps.say(f"[red]lab {name!r} did not come up; removing what was created[/red]")
            teardown(state)
            raise
        return state


def _keep_existing(existing: LabState, plan: LabPlan, site: Path, force: bool, steps: Steps) -> bool:
    """True: the lab is up as asked, use it. False: it was removed (leftovers, or --force)."""
    name = plan.name
    health = lab_health(existing, check_ssh=True)
    same = existing.plan == plan and Path(existing.site) == site
    if health.healthy and not force:
        if same:
            steps.say(
                f"lab {name!r} is already up ({len(plan.hosts)} hosts on {plan.subnet}, "
                f"site {existing.site}); use --force to recreate it"
            )
            _write_site_files(existing)  # in case the site's files were removed meanwhile
            return True
        raise InputError(
            f"lab {name!r} is already up with {len(existing.plan.hosts)} hosts on "
            f"{existing.plan.subnet}, site {existing.site}",
            where="--name",
            fix=f"use the same options, pass --force to recreate it, or run `aicc lab down --name {name}`",
        )
    down_hosts = [h.name for h in health.hosts if not (h.running and h.ssh_ok)]
    if health.healthy:
        reason = "recreating (--force)"
    elif down_hosts:
        reason = f"lab {name!r} is half up (not answering: {', '.join(down_hosts)})"
    else:
        reason = f"lab {name!r} did not finish coming up last time"
    with steps.step(f"{reason}: removing what it left"):
        teardown(existing)
    return False


def _check_subnet_free(plan: LabPlan) -> None:
    mine = ipaddress.ip_network(plan.subnet)
    for other in all_labs():
        if other == plan.name:
            continue
        st = load_state(other)
        if st and ipaddress.ip_network(st.plan.subnet).overlaps(mine):
            raise InputError(
                f"subnet {plan.subnet} overlaps lab {other!r} ({st.plan.subnet})",
                where="--subnet",
                fix="pick another 10.231.N.0/24; `aicc lab status --all` lists the labs",
            )
    routes = net.overlapping_routes(plan.subnet, plan.bridge)
    if routes:
        raise InputError(
            f"subnet {plan.subnet} overlaps routes of this machine: {'; '.join(routes)}",
            where="--subnet",
            fix="pick another 10.231.N.0/24",
        )


def _create(state: LabState, lower: Path, site: Path, steps: Steps, ssh_timeout: float) -> None:
    plan = state.plan
    ldir = lab_dir(plan.name)
    record(state, Resource(kind="dir", name=str(ldir)))
    ldir.mkdir(parents=True, exist_ok=True)
    with steps.step(f"network: bridge {plan.bridge} {plan.bridge_address}/{plan.prefixlen}"):
        _claim(state, Resource(kind="bridge", name=plan.bridge))
        net.create_bridge(plan.bridge, plan.bridge_address, plan.prefixlen)
        for h in plan.hosts:
            _claim(state, Resource(kind="netns", name=h.netns))
            net.create_netns(h.netns)
            _claim(state, Resource(kind="veth", name=h.veth))
            net.create_veth(h.veth, h.netns, h.address, plan.prefixlen, plan.bridge)
            net.apply_egress_policy(h.netns, plan.subnet, plan.bridge_address)
    with steps.step(f"hosts: keys and files for {len(plan.hosts)} hosts"):
        pub = ensure_keypair(site, f"aicc-lab-{plan.name}")
        for h in plan.hosts:
            hosts.prepare_upper(hosts.upper_dir(ldir, h), lower, plan, h, pub)
        write_known_hosts(site, _host_keys(state))
    t_boot = time.monotonic()
    with steps.step("booting " + ", ".join(h.name for h in plan.hosts)) as s:
        for h in plan.hosts:
            res = hosts.boot(lower, hosts.upper_dir(ldir, h), h, ldir / h.name / "console.log")
            record(state, res)
        deadline = time.monotonic() + ssh_timeout
        for h in plan.hosts:
            err = wait_ssh(site, h.address, deadline)
            if err is not None:
                log = ldir / h.name / "console.log"
                tail = _tail(log)
                fix = "see the console log above"
                if "Too many open files" in tail:
                    fix = (
                        "the machine ran out of inotify instances (all lab hosts share root's): stop labs "
                        "you do not need (`aicc lab status --all`), or raise the limit, e.g. "
                        "`sysctl -w fs.inotify.max_user_instances=4096`"
                    )
                raise RunFailed(
                    f"{h.name} ({h.address}) did not answer SSH within {ssh_timeout:.0f} s: {err}\n{tail}",
                    where=h.name,
                    fix=fix,
                )
            steps.say(f"  {h.name} {h.address}: SSH ready after {time.monotonic() - t_boot:.1f} s")
            for line in settle_boot(site, h.address):
                steps.say(f"  {h.name}: restarted {line} (failed during the boot)")
        s["note"] = f"(all hosts SSH-ready {time.monotonic() - t_boot:.1f} s after boot)"
    with steps.step(f"site {site}"):
        _write_site_files(state)
    state.complete = True
    save_state(state)


def _claim(state: LabState, res: Resource) -> None:
    """Record a kernel object before creating it, refusing one that already exists (not ours)."""
    netns = res.kind == "netns"
    if net.netns_exists(res.name) if netns else net.link_exists(res.name):
        remove = f"ip netns del {res.name}" if netns else f"ip link del {res.name}"
        raise RunFailed(
            f"{res.kind} {res.name} already exists and was not made by this `lab up`",
            where=res.name,
            fix=f"remove it (`{remove}`) if it is a leftover, or pick another --name",
        )
    record(state, res)


def _host_keys(state: LabState) -> dict[str, str]:
    """address -> host public key, read from each host's overlay (no trust on first use)."""
    ldir = lab_dir(state.plan.name)
    return {
        h.address: (hosts.upper_dir(ldir, h) / "etc/ssh/ssh_host_ed25519_key.pub").read_text(encoding="utf-8")
        for h in state.plan.hosts
    }


def _write_site_files(state: LabState) -> None:
    site = Path(state.site)
    ensure_keypair(site, f"aicc-lab-{state.plan.name}")
    write_known_hosts(site, _host_keys(state))
    write_site(site, state.plan)


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def teardown(state: LabState) -> None:
    """Remove, in reverse order, everything the state says this lab created. Safe to repeat."""
    running = [r for r in state.resources if r.kind == "process"]
    # Ask every container to shut down at once (nspawn turns SIGTERM into an orderly shutdown).
    for r in running:
        if r.pid is not None and process_alive(r) and r.name.startswith("systemd-nspawn"):
            os.kill(r.pid, signal.SIGTERM)
    for r in running:
        procs.stop_process(r, grace=NSPAWN_GRACE, group=not r.name.startswith("systemd-nspawn"))
    for r in reversed(state.resources):
        if r.kind == "veth":
            net.delete_link(r.name)
        elif r.kind == "netns":
            net.delete_netns(r.name)
        elif r.kind == "bridge":
            net.delete_link(r.name)
        elif r.kind == "dir":
            remove_tree(Path(r.name))
    _remove_lab_dir(lab_dir(state.plan.name))


def _remove_lab_dir(path: Path) -> None:
    """The state file goes last: a teardown cut short (a CI job killed) is then repeated by the
    next `up`/`down`, instead of leaving half a lab that nothing knows about."""
    if not path.exists():
        return
    for child in sorted(path.iterdir()):
        if child.name != STATE_FILE:
            if child.is_dir() and not child.is_symlink():
                remove_tree(child)
            else:
                child.unlink(missing_ok=True)
    remove_tree(path)


def down(name: str, steps: Steps | None = None, *, force: bool = False) -> bool:
    """True when a lab was removed; False when there was none.

    Without a state file, what is left of an interrupted run (processes, links, folders named like
    this lab's) is an error naming each thing; with force it is removed."""
    steps = steps or Steps()
    prereqs.check_root()
    validate_name(name)
    with file_lock(_lock(name)):
        state = load_state(name)
        if state is None:
            return _clear_leftovers(name, force, steps, fix="run `aicc lab down --force` to remove them")
        with steps.step(f"stopping lab {name!r} ({len(state.plan.hosts)} hosts)"):
            teardown(state)
        return True


class Leftover(BaseModel):
    kind: Literal["netns", "link", "process", "dir"]
    name: str
    pid: int | None = None

    @property
    def command(self) -> str:
        """The command that removes it by hand."""
        return {
            "netns": f"ip netns del {self.name}",
            "link": f"ip link del {self.name}",
            "process": f"kill {self.pid}  # {self.name}",
            "dir": f"rm -rf {self.name}",
        }[self.kind]


def find_leftovers(name: str) -> list[Leftover]:
    """Kernel objects, processes and folders named like this lab's (without a state file: a run cut short)."""
    plan = make_plan(name, "10.231.0.0/24", 1)  # only the names matter here
    found: list[Leftover] = []
    prefix_ns = f"aicc-{plan.name}-lab"
    netns_dir = Path("/run/netns")
    names = sorted(p.name for p in netns_dir.iterdir()) if netns_dir.is_dir() else []
    found += [
        Leftover(kind="netns", name=n)
        for n in names
        if n.startswith(prefix_ns) and n[len(prefix_ns) :].isdigit()
    ]
    links = sorted(p.name for p in Path("/sys/class/net").iterdir())
    veth_prefix = f"acv-{plan.name}-"
    found += [
        Leftover(kind="link", name=n)
        for n in links
        if n.startswith(veth_prefix) and n[len(veth_prefix) :].isdigit()
    ]
    if plan.bridge in links:
        found.append(Leftover(kind="link", name=plan.bridge))
    machine_prefix = f"--machine\0{plan.name}-lab"
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmdline = (pid_dir / "cmdline").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if cmdline.startswith("systemd-nspawn\0") and machine_prefix in cmdline:
            label = cmdline.replace(chr(0), " ").strip()
            found.append(Leftover(kind="process", name=label, pid=int(pid_dir.name)))
    if lab_dir(plan.name).exists():
        found.append(Leftover(kind="dir", name=str(lab_dir(plan.name))))
    return found


def _clear_leftovers(name: str, force: bool, steps: Steps, fix: str) -> bool:
    """False when nothing was left; True when leftovers were removed (force); else an error listing them."""
    leftovers = find_leftovers(name)
    if not leftovers:
        return False
    if not force:
        raise InputError(
            f"lab {name!r} has no state file but these leftovers exist (an interrupted run?):\n  "
            + "\n  ".join(x.command for x in leftovers),
            where=str(lab_dir(name)),
            fix=f"{fix}, or remove them with the commands above",
        )
    with steps.step(f"removing what an interrupted run of lab {name!r} left ({len(leftovers)} things)"):
        # Containers first (they hold the namespaces and links), then links and namespaces, then files.
        order = {"process": 0, "link": 1, "netns": 2, "dir": 3}
        for x in sorted(leftovers, key=lambda x: order[x.kind]):
            if x.kind == "process" and x.pid is not None:
                procs.stop_process(
                    Resource(kind="process", name=x.name, pid=x.pid, start_time=proc_start_time(x.pid)),
                    grace=NSPAWN_GRACE,
                    group=False,
                )
            elif x.kind == "link":
                net.delete_link(x.name)
            elif x.kind == "netns":
                net.delete_netns(x.name)
            elif x.kind == "dir":
                _remove_lab_dir(Path(x.name))
    left = find_leftovers(name)
    if left:
        raise RunFailed(
            f"could not remove what lab {name!r} left:\n  " + "\n  ".join(x.command for x in left),
            where=str(lab_dir(name)),
            fix="remove them with the commands above",
        )
    return True


def lab_health(state: LabState, check_ssh: bool = True) -> LabHealth:
    plan = state.plan
    site = Path(state.site)
    running = {
        r.name.removeprefix("systemd-nspawn "): process_alive(r)
        for r in state.resources
        if r.kind == "process" and r.name.startswith("systemd-nspawn")
    }
    groups = groups_by_host(plan)
    host_health = []
    for h in plan.hosts:
        alive = running.get(h.machine, False)
        host_health.append(
            HostHealth(
                name=h.name,
                address=h.address,
                groups=groups[h.name],
                running=alive,
                ssh_ok=alive and check_ssh and ssh_ok(site, h.address),
                egress=net.egress_attempts(h.netns),
            )
        )
    return LabHealth(
        name=plan.name,
        subnet=plan.subnet,
        bridge=plan.bridge,
        bridge_address=plan.bridge_address,
        site=str(site),
        inventory=str(site / "inventory.ini"),
        complete=state.complete,
        hosts=host_health,
    )


def host_process(state: LabState, host: str) -> Resource | None:
    machine = state.plan.host(host).machine
    for r in state.resources:
        if r.kind == "process" and r.name == f"systemd-nspawn {machine}":
            return r
    return None


def stop_host(state: LabState, host: str) -> None:
    """Stop one host's container; its overlay stays, so start_host brings it back as it was."""
    r = host_process(state, host)
    if r is not None:
        procs.stop_process(r, grace=NSPAWN_GRACE, group=False)


def start_host(state: LabState, host: str, ssh_timeout: float = SSH_TIMEOUT) -> None:
    """Boot a stopped host again from its overlay and wait for SSH."""
    h = state.plan.host(host)
    old = host_process(state, host)
    if old is not None and process_alive(old):
        return
    ldir = lab_dir(state.plan.name)
    res = hosts.boot(Path(state.image), hosts.upper_dir(ldir, h), h, ldir / h.name / "console.log")
    state.resources = [r for r in state.resources if r is not old]
    record(state, res)
    err = wait_ssh(Path(state.site), h.address, time.monotonic() + ssh_timeout)
    if err is not None:
        raise RunFailed(f"{host} ({h.address}) did not answer SSH after a restart: {err}", where=host)


def settle_boot(site: Path, address: str) -> list[str]:
    """Give units that failed during a new host's first boot one restart (not on later boots: by then
    aicc's own units are there, and their failures must show); returns "UNIT EXIT-STATUS" of each."""
    proc = run_ssh(site, address, hosts.SETTLE_BOOT, timeout=120)
    return [line for line in proc.stdout.splitlines() if line.strip()]
