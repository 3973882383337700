"""Seconds from `lab up` to every host SSH-ready: cold (empty image cache) and warm; RAM per host; and
over --boots warm boots, how many hosts came up "degraded" (a failed unit) and which units failed.

Run as root: `.venv/bin/python bench/lab_boot.py [--hosts 3]`. The cold run builds the base image
into a temporary cache folder (AICC_LAB_CACHE), so the real cache under /var/cache/aicc/lab is
neither used nor destroyed. The lab is `aiccbnch` on 10.231.202.0/24 and is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from aicc.installer.lab import lifecycle
from aicc.installer.lab.ssh import run_ssh
from aicc.installer.lab.state import LabState
from aicc.installer.lab.steps import Steps

NAME, SUBNET = "aiccbnch", "10.231.202.0/24"


def children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(d.name))
    return tree


def memory_mib(root_pid: int) -> tuple[float, float]:
    """(PSS, RSS) of a container: nspawn and every process below it. PSS shares the pages of the
    common image between hosts; RSS counts them in full for each host (an upper bound)."""
    tree, todo, pss, rss = children_of(), [root_pid], 0, 0
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
        except OSError:
            continue
    return pss / 1024, rss / 1024


def timed_up(hosts: int, site: Path, cache: Path) -> tuple[float, LabState]:
    started = time.monotonic()
    state = lifecycle.up(NAME, SUBNET, hosts, site, force=True, cache=cache, steps=Steps(quiet=True))
    return time.monotonic() - started, state


def system_states(state: LabState) -> dict[str, str]:
    """Each host's `systemctl is-system-running --wait`, with the failed units when it is not running."""
    found = {}
    for h in state.plan.hosts:
        res = run_ssh(
            Path(state.site),
            h.address,
            "systemctl is-system-running --wait; systemctl --failed --plain --no-legend | cut -d' ' -f1",
            timeout=120,
        )
        lines = res.stdout.split()
        found[h.name] = (
            lines[0] + (f" ({', '.join(lines[1:])})" if lines[1:] else "") if lines else "no answer"
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds to wait before measuring RAM")
    parser.add_argument(
        "--boots", type=int, default=3, help="warm boots whose hosts' system state is counted"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    work = Path(tempfile.mkdtemp(prefix="aicc-lab-bench-", dir="/var/tmp"))
    cache, site = work / "cache", work / "site"
    try:
        cold, _ = timed_up(args.hosts, site, cache)
        lifecycle.down(NAME, Steps(quiet=True))
        warm, state = timed_up(args.hosts, site, cache)
        time.sleep(args.settle)
        ram = [
            memory_mib(r.pid)
            for r in state.resources
            if r.name.startswith("systemd-nspawn") and r.pid is not None
        ]
        states = [system_states(state)]
        for _ in range(args.boots - 1):
            lifecycle.down(NAME, Steps(quiet=True))
            _, state = timed_up(args.hosts, site, cache)
            states.append(system_states(state))
    finally:
        lifecycle.down(NAME, Steps(quiet=True))
        shutil.rmtree(work, ignore_errors=True)
    print(f"hosts: {args.hosts}")
    print(f"cold (image built, then boot to SSH-ready): {cold:.1f} s")
    print(f"warm (cached image, boot to SSH-ready):     {warm:.1f} s")
    print(f"cold/warm: {cold / warm:.1f}x")
    print(f"RAM per idle host, {args.settle:.0f} s after boot (PSS / RSS):")
    for i, (pss, rss) in enumerate(ram, start=1):
        print(f"  lab{i}: {pss:.0f} MiB / {rss:.0f} MiB")
    print(f"RAM per host, mean PSS: {sum(p for p, _ in ram) / len(ram):.0f} MiB")
    bad = [
        f"boot {i}: {h} {s}" for i, boot in enumerate(states, 1) for h, s in boot.items() if s != "running"
    ]
    total = sum(len(b) for b in states)
    print(f"host boots without a degraded host: {total - len(bad)} of {total} ({len(states)} boots)")
    for line in bad:
        print(f"  {line}")


if __name__ == "__main__":
    main()
