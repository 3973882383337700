"""How long one ACD routing decision takes with a busy site's state in memory, against a naive full scan.

The state: 10,000 waiting contacts and 2,000 agents, 50 skills; one queue per skill and language (100
queues, each requiring its skill at proficiency 1-3, some with a base priority, a few with overflow
steps passed); contacts spread over the queues with random tiers, priorities and arrival times in the
last 15 minutes, some with an extra skill of their own, some already missed by an agent; agents with
3-6 skills at random proficiency, one or two languages, voice capacity 1, half of them available.

Two decisions are timed, each on the router's indexes (aicc.appliance.acd.router.Router, the ones the
engine uses) and, as the baseline, by a naive scan applying the same rules to every contact and every
agent:
- agent: one agent becomes available -> the contact it gets (best score among all it qualifies for);
- contact: one contact arrives -> the agent it gets (per agent-selection policy: longest_idle, the
  default, then least_occupied and best_skilled; then longest_idle again on a busy site, where only
  2% of the agents are available).
On every decision the naive scan also makes, both must choose the same contact/agent (the naive scan is
the reference); a mismatch is printed and makes the exit status 1. Prints p50/p99 per decision and
decisions per second on this one process (one core), and the ratio to the naive scan. Goal: p99 <=
1 ms, >= 10,000 decisions/s. Bounded: --decisions per kind (naive: --naive), and --budget seconds.

    python bench/acd_routing.py [--decisions 3000] [--naive 150] [--seed 7] [--budget 60]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from aicc.appliance.acd.model import AgentRuntime, Contact, EnqueueResult
from aicc.appliance.acd.policy import AgentProfile, OverflowStep, QueueConfig, RoutingPolicy
from aicc.appliance.acd.router import (
    PoolKey,
    Router,
    clamp_priority,
    entry,
    pool_key,
    qualifies,
    requirement,
    score,
    selection_key,
)

NOW = 1_767_000_000.0
SKILLS = [f"s{i:02d}" for i in range(50)]
LANGUAGES = ("zh", "en")


class World:
    """Queues, agents (profiles + runtime) and waiting contacts, built from one seed."""

    def __init__(self, rng: random.Random, contacts: int, agents: int) -> None:
        self.rng = rng
        self.queues: dict[str, QueueConfig] = {}
        for skill in SKILLS:
            for lang in LANGUAGES:
                steps = (
                    [OverflowStep(after_s=60, skills={skill: 1})] if rng.random() < 0.2 else []
                )  # widened after a minute
                name = f"{skill}-{lang}"
                self.queues[name] = QueueConfig(
                    name=name,
                    language=lang,
                    skills={skill: rng.randint(1, 3)},
                    priority=rng.choice([0, 0, 0, 5, 10]),
                    overflow=steps,
                )
        self.profiles: dict[int, AgentProfile] = {}
        self.agents: dict[int, AgentRuntime] = {}
        for aid in range(1, agents + 1):
            skills = {s: rng.randint(1, 5) for s in rng.sample(SKILLS, rng.randint(3, 6))}
            langs: Any = rng.choice([["zh"], ["zh"], ["zh", "en"], ["en"]])
            self.profiles[aid] = AgentProfile(extension=f"{1000 + aid}", skills=skills, languages=langs)
            rt = AgentRuntime(
                agent_id=aid,
                status="ready",
                idle_since=NOW - rng.uniform(0, 3600),
                shift_start=NOW - rng.uniform(3600, 8 * 3600),
                handled_s=rng.uniform(0, 3600),
            )
            if rng.random() < 0.5:
                rt.connected[f"busy-{aid}"] = "voice"  # on a call: not available for voice
            self.agents[aid] = rt
        self.away: set[int] = set()
        self.contacts: dict[str, Contact] = {}
        for n in range(contacts):
            c = self.new_contact(n)
            self.contacts[c.id] = c

    def new_contact(self, n: int) -> Contact:
        rng = self.rng
        cfg = self.queues[rng.choice(sorted(self.queues))]
        tier = rng.choices(["standard", "gold", "vip", None], weights=[70, 15, 5, 10])[0]
        base = rng.choice([0, 0, 1, 2, 3])
        extra = {rng.choice(SKILLS): rng.randint(1, 3)} if rng.random() < 0.05 else {}
        at = NOW - rng.uniform(0, 900)
        c = Contact(
            id=f"c{n:06d}",
            seq=n,
            queue=cfg.name,
            channel="voice",
            language=cfg.language,
            base_priority=base,
            priority=clamp_priority(cfg.priority + base),
            tier=tier,
            skills=extra,
            attributes={},
            gateway="gw1",
            call_id=None,
            caller="",
            enqueued_at=at,
            entered_at=at,
            entry=EnqueueResult(position=0, ewt_s=None, staffed=0, callback_offer=False),
        )
        if cfg.overflow and NOW - at > cfg.overflow[0].after_s:
            c.step = 1
        if rng.random() < 0.03:
            c.refused = rng.sample(sorted(self.profiles), 2)
        return c

    def key(self, c: Contact) -> PoolKey:
        return pool_key(c.channel, c.language, requirement(c, self.queues[c.queue]))

    def channels(self, aid: int) -> list[str]:
        """The engine's availability rule for a ready agent with no reservation or wrap-up (agents in
        `away` count as away)."""
        if aid in self.away:
            return []
        load = Counter(self.agents[aid].connected.values())
        return [ch for ch, cap in self.profiles[aid].capacity.items() if load[ch] < cap]

    def router(self, policy: RoutingPolicy) -> Router:
        r = Router(policy, self.profiles, self.agents, self.contacts)
        for c in self.contacts.values():
            r.place(c.id, c.queue, self.key(c), entry(c, policy))
        for aid, rt in self.agents.items():
            r.set_open(aid, self.channels(aid), rt.idle_since)
        return r


class Naive:
    """Every contact x every agent, the same rules, no index."""

    def __init__(self, world: World, policy: RoutingPolicy) -> None:
        self.w = world
        self.policy = policy

    def open_for(self, aid: int, channel: str) -> bool:
        return channel in self.w.channels(aid)

    def other_agent(self, c: Contact, key: PoolKey, aid: int) -> bool:
        return any(
            b != aid and b not in c.refused and self.open_for(b, key[0]) and qualifies(prof, key)
            for b, prof in self.w.profiles.items()
        )

    def best_contact(self, aid: int) -> str | None:
        prof = self.w.profiles[aid]
        channels = self.w.channels(aid)
        best: tuple[float, int, str] | None = None
        for c in self.w.contacts.values():
            key = self.w.key(c)
            if c.channel not in channels or not qualifies(prof, key):
                continue
            rank = (-score(c, self.policy, NOW), c.seq, c.id)
            if best is not None and rank >= best:
                continue
            if aid in c.refused and self.other_agent(c, key, aid):
                continue
            best = rank
        return best[2] if best is not None else None

    def best_agent(self, c: Contact) -> int | None:
        key = self.w.key(c)
        cands = [
            aid
            for aid, prof in self.w.profiles.items()
            if self.open_for(aid, c.channel) and qualifies(prof, key)
        ]
        preferred = [aid for aid in cands if aid not in c.refused] or cands
        if not preferred:
            return None
        return min(
            preferred,
            key=lambda aid: selection_key(self.policy, self.w.agents[aid], self.w.profiles[aid], key, NOW),
        )


class Timings:
    """Per-decision CPU seconds of this thread (what one core spends on it) and wall seconds (which also
    count time the process was not running: on a shared machine their tail is other programs' work)."""

    def __init__(self) -> None:
        self.cpu: list[float] = []
        self.wall: list[float] = []

    def extend(self, other: Timings) -> None:
        self.cpu.extend(other.cpu)
        self.wall.extend(other.wall)


def timed(fn: Callable[[Any], Any], inputs: Sequence[Any], seconds: float) -> tuple[Timings, list[Any]]:
    """Timings and results of `fn` over `inputs`, for `seconds` at most."""
    t = Timings()
    results: list[Any] = []
    stop = time.perf_counter_ns() + int(seconds * 1e9)
    for x in inputs:
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        results.append(fn(x))
        c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
        t.cpu.append((c1 - c0) / 1e9)
        t.wall.append((w1 - w0) / 1e9)
        if w1 > stop:
            break
    return t, results


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def report(label: str, fast: Timings, slow: Timings) -> None:
    f50, f99, fw99 = pct(fast.cpu, 50) * 1e3, pct(fast.cpu, 99) * 1e3, pct(fast.wall, 99) * 1e3
    s50, s99 = pct(slow.cpu, 50) * 1e3, pct(slow.cpu, 99) * 1e3
    rate, naive_rate = len(fast.cpu) / sum(fast.cpu), len(slow.cpu) / sum(slow.cpu)
    print(label)
    print(
        f"    indexed: n={len(fast.cpu):>5}  p50 {f50:7.3f} ms  p99 {f99:7.3f} ms  (wall p99 {fw99:7.3f} ms)"
        f"  {rate:>9,.0f} decisions/s"
    )
    print(
        f"    naive:   n={len(slow.cpu):>5}  p50 {s50:7.2f} ms  p99 {s99:7.2f} ms"
        f"  {naive_rate:>25,.1f} decisions/s  -> ratio x{rate / naive_rate:,.0f}",
        flush=True,
    )


def contact_for(router: Router) -> Callable[[int], str | None]:
    return lambda aid: router.best_contact(aid)[0]


def agent_for(router: Router, world: World) -> Callable[[Contact], int | None]:
    return lambda c: router.best_agent(c, world.key(c), NOW)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contacts", type=int, default=10_000)
    ap.add_argument("--agents", type=int, default=2_000)
    ap.add_argument("--decisions", type=int, default=3_000, help="timed decisions per kind (indexed)")
    ap.add_argument("--naive", type=int, default=150, help="decisions per kind made by both (checked)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds for the whole run, about")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    rng = random.Random(args.seed)
    world = World(rng, args.contacts, args.agents)
    available = [aid for aid in world.agents if world.channels(aid)]
    print(
        f"state: {len(world.contacts):,} waiting contacts in {len(world.queues)} queues, "
        f"{len(world.agents):,} agents ({len(available):,} available), {len(SKILLS)} skills; "
        f"built in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    arrivals = [world.new_contact(args.contacts + n) for n in range(args.decisions)]
    agents = [rng.choice(available) for _ in range(args.decisions)]
    mismatches = 0
    fast_all = Timings()
    per_kind = max(2.0, args.budget - 10 - (time.perf_counter() - start)) / 5  # five kinds share it
    # The last scenario: a busy site, where 2% of the agents (40 of 2,000) are available.
    few = set(rng.sample(available, len(world.agents) // 50))
    for selection, sparse in [
        ("longest_idle", False),
        ("least_occupied", False),
        ("best_skilled", False),
        ("longest_idle", True),
    ]:
        policy = RoutingPolicy(agent_selection=selection)
        world.away = set(world.agents) - few if sparse else set()
        t0 = time.perf_counter()
        router = world.router(policy)
        naive = Naive(world, policy)
        print(f"(indexes for {selection} built in {time.perf_counter() - t0:.2f} s)", flush=True)
        kinds: list[tuple[str, Callable[[Any], Any], Callable[[Any], Any], Sequence[Any]]] = []
        if selection == "longest_idle" and not sparse:
            kinds.append(
                (
                    "one agent becomes available -> its contact",
                    contact_for(router),
                    naive.best_contact,
                    agents,
                )
            )
        detail = f"{selection}, {sum(1 for a in world.agents if world.channels(a))} agents available"
        kinds.append(
            (
                f"one contact arrives -> its agent ({detail})",
                agent_for(router, world),
                naive.best_agent,
                arrivals,
            )
        )
        gc.collect()
        gc.freeze()  # the built state is long-lived: keep collections of it out of the timings
        for label, fast_fn, slow_fn, inputs in kinds:
            fast, fast_res = timed(fast_fn, inputs, per_kind * 0.3)
            slow, slow_res = timed(slow_fn, inputs[: args.naive], per_kind * 0.7)
            bad = [(x, a, b) for x, a, b in zip(inputs, fast_res, slow_res, strict=False) if a != b]
            for x, a, b in bad[:5]:
                who = x.id if isinstance(x, Contact) else f"agent {x}"
                print(f"    MISMATCH for {who}: indexed chose {a!r}, naive {b!r}")
            mismatches += len(bad)
            report(label, fast, slow)
            checked = len(slow_res)
            chose = sum(1 for r in fast_res if r is not None) / len(fast_res)
            print(
                f"    same choice as the naive scan on {checked - len(bad)}/{checked} decisions;"
                f" {chose:.0%} of decisions found a match",
                flush=True,
            )
            fast_all.extend(fast)
        gc.unfreeze()
    p99 = pct(fast_all.cpu, 99) * 1e3
    rate = len(fast_all.cpu) / sum(fast_all.cpu)
    goal = "met" if p99 <= 1.0 and rate >= 10_000 else "NOT met"
    print(
        f"all indexed decisions (CPU time): p99 {p99:.3f} ms, {rate:,.0f} decisions/s on one core"
        f" (goal p99 <= 1 ms and >= 10,000/s: {goal})"
    )
    print(f"total {time.perf_counter() - start:.1f} s; mismatches: {mismatches}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
