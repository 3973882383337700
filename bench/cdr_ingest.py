"""Event rows per second into PostgreSQL: EventWriter's COPY batches vs row-by-row INSERTs, then the
reports over what was written (timings and the indexes their plans use).

Both writers get the same kind of events, in the same run, against the same scratch PostgreSQL 15
cluster (default durability settings: fsync and synchronous_commit on, as in production):
- COPY: every event appended to an EventWriter, then flushed; batches of --batch rows, --connections
  batches at a time (the writer's defaults). Timed from the first append to the end of the flush.
- row by row: one INSERT and one commit per event on one connection, as a naive producer writes.
  Bounded by --insert-rows and --max-insert-s; its rate is what it managed in that time.
Goal: >= 50,000 rows/s with COPY.

The events are those of a contact center's days: per contact call.started, contact.queued, offered,
answered, ended, wrapup_done, call.ended and the agent's four state changes (a survey for some, an
abandon for others), spread over --days days. With the table filled, ANALYZE, then each report for
one local day (Asia/Shanghai) is timed (best of 3) and its plan (EXPLAIN ANALYZE) is searched for the
indexes it uses.

    .venv/bin/python bench/cdr_ingest.py [--copy-rows 200000] [--insert-rows 20000] [--days 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.db.migrate import all_migrations, apply
from aicc.appliance.db.scratch import scratch_cluster
from aicc.appliance.events.kinds import Event
from aicc.appliance.events.writer import EventWriter, to_row
from aicc.appliance.reports import queries

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2025, 3, 1, tzinfo=TZ)
QUEUES = ["sales", "support", "vip", "billing"]
AGENTS = 100
REPORTS: dict[queries.ReportName, Callable[..., Awaitable[Sequence[object]]]] = {
    "queues": queries.queue_report,
    "agents": queries.agent_report,
    "bot": queries.bot_report,
}
_COPY = "COPY aicc.cc_events (uid, at, kind, contact_id, call_id, queue, agent_id, data) FROM STDIN"


def contact_events(rng: random.Random, t: datetime, seq: int) -> list[Event]:
    """One contact's events, as the ACD and the voice gateway write them."""

    def at(s: float) -> datetime:
        return t + timedelta(seconds=s)

    cid, call_id, queue, agent = str(uuid.uuid4()), f"call-{seq}", rng.choice(QUEUES), rng.randint(1, AGENTS)
    ids: dict[str, Any] = {"contact_id": cid, "call_id": call_id, "queue": queue}
    out = [
        Event("call.started", at=at(-20), call_id=call_id, data={"service": "shop", "flow": "main"}),
        Event("contact.queued", at=at(0), **ids, data={"channel": "voice", "language": "zh", "position": 3}),
    ]
    if rng.random() < 0.1:
        out.append(
            Event("contact.abandoned", at=at(rng.uniform(1, 120)), **ids, data={"reason": "caller_hangup"})
        )
        return out
    wait, talk, wrap = rng.uniform(2, 90), rng.uniform(30, 400), rng.uniform(5, 60)
    state: dict[str, Any] = {"agent_id": agent}
    out += [
        Event(
            "contact.offered",
            at=at(wait - 4),
            **ids,
            agent_id=agent,
            data={"reservation_id": str(uuid.uuid4())},
        ),
        Event("agent.state", at=at(wait - 4), **state, data={"status": "ready", "state": "reserved"}),
        Event("contact.answered", at=at(wait), **ids, agent_id=agent, data={"wait_s": wait}),
        Event("agent.state", at=at(wait), **state, data={"status": "ready", "state": "busy"}),
        Event("contact.ended", at=at(wait + talk), **ids, agent_id=agent, data={"talk_s": talk, "hold_s": 0}),
        Event("agent.state", at=at(wait + talk), **state, data={"status": "ready", "state": "wrap_up"}),
        Event(
            "call.ended",
            at=at(wait + talk + 1),
            call_id=call_id,
            data={"bot": "shop", "outcome": "transferred"},
        ),
        Event("contact.wrapup_done", at=at(wait + talk + wrap), **ids, agent_id=agent, data={"wrap_s": wrap}),
        Event("agent.state", at=at(wait + talk + wrap), **state, data={"status": "ready", "state": "idle"}),
    ]
    if rng.random() < 0.3:
        out.append(Event("contact.survey", at=at(wait + talk + 30), **ids, data={"score": rng.randint(1, 5)}))
    return out


def make_events(rng: random.Random, n: int, days: int) -> list[Event]:
    events: list[Event] = []
    span = days * 86400.0
    seq = 0
    while len(events) < n:
        events += contact_events(rng, START + timedelta(seconds=rng.uniform(0, span)), seq)
        seq += 1
    return events[:n]


async def copy_rate(dsn: str, events: list[Event], batch: int, connections: int) -> float:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, min_size=connections, max_size=connections, open=False
    )
    await pool.open(wait=True)
    writer = EventWriter(pool, spool_dir=None, batch=batch, connections=connections)
    t0 = time.perf_counter()
    for e in events:
        writer.append(e)
    written = await writer.flush()
    seconds = time.perf_counter() - t0
    await writer.close()
    await pool.close()
    assert written == len(events), (written, len(events))
    return written / seconds


async def bare_copy_rate(dsn: str, events: list[Event], batch: int) -> float:
    """The database's share: the same batches COPYed from rows built beforehand, on one connection."""
    rows = [to_row(e) for e in events]
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        t0 = time.perf_counter()
        for i in range(0, len(rows), batch):
            async with conn.transaction(), conn.cursor() as cur, cur.copy(_COPY) as copy:
                for row in rows[i : i + batch]:
                    await copy.write_row(row)
        return len(rows) / (time.perf_counter() - t0)


async def insert_rate(dsn: str, events: list[Event], max_s: float) -> tuple[float, int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        t0 = time.perf_counter()
        done = 0
        for e in events:
            await conn.execute(
                "INSERT INTO aicc.cc_events (uid, at, kind, contact_id, call_id, queue, agent_id, data) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                to_row(e),
            )
            done += 1
            if time.perf_counter() - t0 > max_s:
                break
        return done / (time.perf_counter() - t0), done


def _indexes(plan: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(plan, dict):
        if "Index Name" in plan:
            found.add(plan["Index Name"])
        for v in plan.values():
            found |= _indexes(v)
    elif isinstance(plan, list):
        for v in plan:
            found |= _indexes(v)
    return found


def _seq_scans(plan: Any) -> int:
    if isinstance(plan, dict):
        own = 1 if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") == "cc_events" else 0
        return own + sum(_seq_scans(v) for v in plan.values())
    if isinstance(plan, list):
        return sum(_seq_scans(v) for v in plan)
    return 0


async def reports(dsn: str, day: datetime) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("ANALYZE aicc.cc_events")
        total = (await (await conn.execute("SELECT count(*) FROM aicc.cc_events")).fetchone() or [0])[0]
        print(f"\nreports for the local day {day:%Y-%m-%d} ({TZ.key}) over {total:,} events:")
        head = f"  {'report':<22}{'rows':>6}{'best of 3':>12}{'plan ms':>10}"
        print(f"{head}  indexes used (seq scans of cc_events)")
        cases: list[tuple[queries.ReportName, queries.GroupBy]] = [
            ("queues", "none"),
            ("queues", "hour"),
            ("agents", "none"),
            ("agents", "hour"),
            ("bot", "none"),
        ]
        for kind, group_by in cases:
            name = kind if group_by == "none" else f"{kind} by {group_by}"
            times: list[float] = []
            rows: Sequence[object] = []
            for _ in range(3):
                t0 = time.perf_counter()
                rows = await REPORTS[kind](conn, day, day + timedelta(days=1), tz=TZ.key, group_by=group_by)
                times.append(time.perf_counter() - t0)
            rng = queries.report_range(day, day + timedelta(days=1), TZ.key, group_by)
            query, params = queries.report_query(kind, rng)
            async with conn.transaction():
                await queries.report_session(conn, TZ.key)
                cur = await conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(query), params)
                row = await cur.fetchone()
            assert row is not None
            plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
            used = ", ".join(sorted(_indexes(plan))) or "none"
            print(
                f"  {name:<22}{len(rows):>6}{min(times) * 1000:>10.1f}ms{plan[0]['Execution Time']:>10.1f}"
                f"  {used} ({_seq_scans(plan)})"
            )


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(42)
    copy_events = make_events(rng, args.copy_rows, args.days)
    insert_events = make_events(rng, args.insert_rows, args.days)
    with scratch_cluster("aicc-bench-pg-") as dsn:  # default durability: fsync, synchronous_commit on
        apply(dsn, all_migrations())
        how = f"COPY, batch {args.batch}, {args.connections} at once"
        print(f"{args.copy_rows:,} events through EventWriter ({how})")
        copy = await copy_rate(dsn, copy_events, args.batch, args.connections)
        print(f"  {copy:>10,.0f} rows/s")
        bare = await bare_copy_rate(dsn, make_events(rng, args.copy_rows // 2, args.days), args.batch)
        print(f"  {bare:>10,.0f} rows/s: the database alone (pre-built rows, one connection, same batches)")
        limit = f"at most {args.max_insert_s:.0f} s"
        print(f"{args.insert_rows:,} events row by row (INSERT + commit each), {limit}")
        ins, done = await insert_rate(dsn, insert_events, args.max_insert_s)
        print(f"  {ins:>10,.0f} rows/s ({done:,} rows)")
        verdict = "met" if copy >= 50_000 else "NOT met"
        print(f"COPY / row-by-row: {copy / ins:.1f}x; goal >= 50,000 rows/s with COPY: {verdict}")
        await reports(dsn, START + timedelta(days=args.days // 2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copy-rows", type=int, default=200_000)
    ap.add_argument("--insert-rows", type=int, default=20_000)
    ap.add_argument("--max-insert-s", type=float, default=60.0)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--connections", type=int, default=2)
    asyncio.run(run(ap.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
