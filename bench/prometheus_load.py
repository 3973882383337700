"""Prometheus on an installed lab: series per scrape job, scrape time per target and rule evaluation
time, before and after N real calls. Baseline, in the same run: the same figures before the calls.
A ratio of series after/before near 1.0 is the point: no metric carries a per-call label, so
cardinality stays bounded however many calls the site takes.

    python bench/prometheus_load.py --site aicc-demo [--calls 100] [--parallel 4]

Each call goes through Kamailio and rtpengine to the voice bot (service number 4000), waits for the
greeting to start, listens 2 s and hangs up. Calls are bounded in number and each in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aicc.appliance.voice.caller import Caller  # noqa: E402
from aicc.installer.inventory import load_inventory  # noqa: E402
from aicc.installer.site import Site  # noqa: E402
from aicc.installer.smoke import local_ip_towards  # noqa: E402


def query(url: str, expr: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=30
    ) as r:
        return list(json.load(r)["data"]["result"])


def figures(url: str) -> dict[str, dict[str, float]]:
    def by(expr: str, label: str) -> dict[str, float]:
        # rule_group is "file;group": the group name is enough
        return {
            str(r["metric"].get(label, "")).rpartition(";")[2]: float(r["value"][1])  # type: ignore[union-attr,index]
            for r in query(url, expr)
        }

    return {
        "series per job": by('count by (job) ({__name__=~".+", job!=""})', "job"),
        "scrape seconds per job (max)": by("max by (job) (scrape_duration_seconds)", "job"),
        "rule group seconds": by("prometheus_rule_group_last_duration_seconds", "rule_group"),
    }


async def one_call(proxy: tuple[str, int], n: int) -> bool:
    caller = Caller(local_ip=local_ip_towards(*proxy), number=f"bench{n:04d}")
    await caller.start()
    try:
        await asyncio.wait_for(caller.call("sip:4000@aicc.local", proxy, ring_timeout=20), 30)
        deadline = time.monotonic() + 20
        while caller.heard.last_voice() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        return caller.heard.last_voice() is not None
    except Exception:  # a failed call is counted, the bench goes on
        return False
    finally:
        await caller.hangup()
        await caller.close()


async def calls(proxy: tuple[str, int], total: int, parallel: int) -> int:
    gate = asyncio.Semaphore(parallel)

    async def bounded(n: int) -> bool:
        async with gate:
            return await one_call(proxy, n)

    return sum(await asyncio.gather(*(bounded(n) for n in range(total))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", type=Path, required=True, help="the installed site's folder")
    ap.add_argument("--calls", type=int, default=100, help="calls to place (1-500)")
    ap.add_argument("--parallel", type=int, default=4, help="calls at once (1-20)")
    args = ap.parse_args()
    total, parallel = max(1, min(args.calls, 500)), max(1, min(args.parallel, 20))
    site = Site(args.site)
    settings = site.settings()
    inv = load_inventory(args.site / "inventory.ini")
    mon, sip = inv.group("monitoring")[0].address, inv.group("sip_proxy")[0].address
    url = f"http://{mon}:{settings.monitoring.prometheus_port}"
    wait = 2 * settings.monitoring.scrape_interval_s + 2

    before = figures(url)
    started = time.monotonic()
    ok = asyncio.run(calls((sip, settings.sip.udp_port), total, parallel))
    took = time.monotonic() - started
    time.sleep(wait)  # two scrapes and rule evaluations after the last call
    after = figures(url)

    print(f"{ok}/{total} calls heard the bot, {parallel} at a time, in {took:.0f} s")
    for name in before:
        print(f"\n{name}:")
        print(f"  {'':28} {'before':>10} {'after':>10} {'ratio':>7}")
        for key in sorted(set(before[name]) | set(after[name])):
            b, a = before[name].get(key, 0.0), after[name].get(key, 0.0)
            ratio = f"{a / b:.2f}" if b else "-"
            print(f"  {key[:28]:28} {b:10.4g} {a:10.4g} {ratio:>7}")
    total_b, total_a = sum(before["series per job"].values()), sum(after["series per job"].values())
    print(f"\nall series: {total_b:.0f} before, {total_a:.0f} after ({total_a / total_b:.3f}x)")


if __name__ == "__main__":
    main()
