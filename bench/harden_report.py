"""Time `aicc harden report`'s evidence collection and rendering for 3 and for 10 hosts, parallel (as the
CLI does) against one host after another (the baseline, measured in the same run), and the report's size.

The 10-host inventory lists the lab's hosts several times under new names (same addresses), so the
collection really opens 10 SSH sessions and runs every check 10 times.

    .venv/bin/python bench/harden_report.py -i aicc-demo/inventory.ini [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from aicc.hardening.catalog import default_catalog
from aicc.hardening.evidence import Collected, collect
from aicc.hardening.render import render_html, write_data
from aicc.hardening.report import build_report
from aicc.installer.inventory import Host
from aicc.installer.playbook import scrubber
from aicc.installer.site import site_for_inventory


def widen(hosts: list[Host], n: int) -> list[Host]:
    return [hosts[i % len(hosts)].model_copy(update={"name": f"h{i + 1:02d}"}) for i in range(n)]


def sequential(hosts: list[Host], *args: object) -> Collected:
    parts = [collect([h], *args) for h in hosts]  # type: ignore[arg-type]
    return Collected(
        evidence=[e for p in parts for e in p.evidence],
        observations=[o for p in parts for o in p.observations],
        unreachable={k: v for p in parts for k, v in p.unreachable.items()},
        seconds=sum(p.seconds for p in parts),
        started_at=parts[0].started_at,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-i", "--inventory", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    site, inv = site_for_inventory(args.inventory)
    settings, catalog = site.settings(), default_catalog()
    scrub = scrubber(site.secrets())
    base = list(inv.hosts.values())
    print(f"{len(catalog.controls)} controls; lab hosts: {', '.join(h.name for h in base)}")
    print(f"{'hosts':>5} {'mode':>10} {'collect s':>10} {'render s':>9} {'checks':>7} {'report KiB':>11}")
    for n in (3, 10):
        hosts = widen(base, n)
        times: dict[str, list[float]] = {"parallel": [], "sequential": []}
        for _ in range(args.rounds):
            for mode, fn in (("parallel", collect), ("sequential", sequential)):
                started = time.monotonic()
                got = fn(hosts, catalog, settings, scrub)
                times[mode].append(time.monotonic() - started)
                assert not got.unreachable, got.unreachable
        started = time.monotonic()
        groups = {h.name: h.groups for h in hosts}
        rep = build_report(
            site=settings.site_name, version="bench", catalog=catalog, hosts=groups,
            collected=got, waivers=[], today=date.today(),
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            write_data(rep, got, out)
            (out / "report.html").write_text(
                render_html(rep, catalog, "zh", got.started_at), encoding="utf-8"
            )
            render_s = time.monotonic() - started
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1024
        for mode in ("parallel", "sequential"):
            print(
                f"{n:>5} {mode:>10} {statistics.median(times[mode]):>10.2f} {render_s:>9.2f} "
                f"{len(got.evidence):>7} {size:>11.0f}"
            )
        ratio = statistics.median(times["sequential"]) / statistics.median(times["parallel"])
        print(f"{n:>5} parallel is {ratio:.1f}x faster than one host after another")


if __name__ == "__main__":
    main()
