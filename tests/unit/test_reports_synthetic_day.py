"""A synthetic contact-center day (seeded random, plus hand-placed edge cases), written through
EventWriter into a real PostgreSQL, and every figure of the queue, agent and bot reports compared with
what this test computes from the generated ground truth (the contacts, agent timelines and bot calls
it made up), not from the events.

The day is 2025-03-10 in Asia/Shanghai (UTC+8): its local midnight is 16:00 UTC the day before, so a
UTC day or hour would put contacts in the wrong rows. The simulation runs from 21:00 the day before to
02:00 the day after, so contacts, agents' shifts and surveys cross both day boundaries.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.acd.policy import QueueConfig, ServiceLevel
from aicc.appliance.db.migrate import all_migrations, apply
from aicc.appliance.db.scratch import scratch_cluster
from aicc.appliance.events.kinds import Event
from aicc.appliance.events.writer import EventWriter
from aicc.appliance.reports import definitions, queries

TZ = ZoneInfo("Asia/Shanghai")
DAY = datetime(2025, 3, 10, tzinfo=TZ)
NEXT_DAY = DAY + timedelta(days=1)
SIM_START = DAY - timedelta(hours=3)
SIM_END = NEXT_DAY + timedelta(hours=2)
# (service level seconds, short-abandon seconds); vip is not configured: QueueConfig's defaults apply.
THRESHOLDS = {
    "sales": (20.0, 5.0),
    "support": (30.0, 10.0),
    "vip": (float(ServiceLevel().seconds), float(QueueConfig.model_fields["short_abandon_s"].default)),
}
WORKING = ("reserved", "busy", "wrap_up")


def after(t: datetime, seconds: float) -> datetime:
    """t + seconds, to the millisecond (what the producers write)."""
    return t + timedelta(milliseconds=round(seconds * 1000))


# --- ground truth ---


@dataclass
class Contact:
    id: str
    call_id: str
    queue: str  # first queued here
    queued_at: datetime
    overflow_to: str | None = None
    outcome: str = "waiting"  # answered, abandoned, callback, waiting
    outcome_at: datetime | None = None
    agent: int | None = None
    ended_at: datetime | None = None
    talk_s: float = 0.0
    hold_s: float = 0.0
    wrap_s: float | None = None
    surveys: list[tuple[datetime, int]] = field(default_factory=list)

    @property
    def wait_s(self) -> float:
        assert self.outcome_at is not None
        return (self.outcome_at - self.queued_at).total_seconds()


@dataclass
class Offer:
    agent: int
    offered_at: datetime
    answered_at: datetime | None
    failed_at: datetime | None


@dataclass
class BotCall:
    bot: str
    ended_at: datetime
    outcome: str
    transferred: bool
    duration_s: float


class Day:
    """Makes up the day: contacts, agents' state changes, bot calls, and the events they produce."""

    def __init__(self, seed: int, agents: dict[int, list[str]]) -> None:
        self.rng = random.Random(seed)
        self.agents = agents
        self.contacts: list[Contact] = []
        self.offers: list[Offer] = []
        self.changes: dict[int, list[tuple[datetime, str, str]]] = {a: [] for a in agents}
        self.bot_calls: list[BotCall] = []
        self.events: list[Event] = []

    def emit(self, kind: str, at: datetime, **kw: Any) -> None:
        self.events.append(Event(kind, at=at, **kw))

    def state(self, agent: int, at: datetime, status: str, state: str, reason: str = "") -> None:
        previous = self.changes[agent][-1] if self.changes[agent] else (at, "logged_out", "idle")
        assert at > previous[0] or not self.changes[agent], "an agent's changes must be strictly in order"
        self.changes[agent].append((at, status, state))
        data = {"status": status, "state": state, "reason": reason, "previous_status": previous[1]}
        self.emit(
            "agent.state", at, agent_id=agent, data={**data, "previous_state": previous[2], "by": "acd"}
        )

    def contact(
        self, queue: str, queued_at: datetime, overflow: tuple[str, datetime] | None = None
    ) -> Contact:
        c = Contact(str(uuid.uuid4()), f"call-{len(self.contacts)}", queue, queued_at)
        self.contacts.append(c)
        self.emit("call.started", after(queued_at, -20), call_id=c.call_id, data={"service": "shop"})
        self.emit(
            "contact.queued",
            queued_at,
            contact_id=c.id,
            call_id=c.call_id,
            queue=queue,
            data={"channel": "voice", "language": "zh", "priority": 0, "tier": "standard", "position": 1},
        )
        if overflow is not None:
            c.overflow_to, at = overflow
            self.emit(
                "contact.overflowed",
                at,
                contact_id=c.id,
                queue=c.overflow_to,
                data={"from_queue": queue, "step": 1},
            )
            if self.rng.random() < 0.5:  # a producer may say "queued" again in the new queue
                self.emit(
                    "contact.queued",
                    after(at, 0.001),
                    contact_id=c.id,
                    call_id=c.call_id,
                    queue=c.overflow_to,
                )
        return c

    def leave(self, c: Contact, kind: str, at: datetime) -> None:
        c.outcome, c.outcome_at = {"contact.abandoned": "abandoned", "contact.callback": "callback"}[kind], at
        data: dict[str, Any] = {"wait_s": c.wait_s}
        if kind == "contact.abandoned":
            data |= {"position": 2, "entry_position": 3, "reason": "caller_hangup"}
        else:
            data["callback_id"] = str(uuid.uuid4())
        self.emit(kind, at, contact_id=c.id, queue=c.overflow_to or c.queue, data=data)

    def handle(
        self,
        agent: int,
        queue: str,
        offered_at: datetime,
        wait_before_offer: float,
        ring: float,
        talk: float,
        holds: list[tuple[float, float]],
        wrap: float,
        *,
        first_queue: str | None = None,
        away_during: bool = False,
        survey: tuple[float, int] | None = None,
    ) -> datetime:
        """An agent takes a contact; returns when the agent is idle again. `holds`: (seconds into the
        conversation, length)."""
        queued_at = after(offered_at, -wait_before_offer)
        overflow = (queue, after(queued_at, wait_before_offer / 2)) if first_queue else None
        c = self.contact(first_queue or queue, queued_at, overflow)
        answered_at = after(offered_at, ring)
        c.outcome, c.outcome_at, c.agent = "answered", answered_at, agent
        self.offers.append(Offer(agent, offered_at, answered_at, None))
        ids = {"contact_id": c.id, "call_id": c.call_id, "queue": queue, "agent_id": agent}
        self.emit("contact.offered", offered_at, **ids, data={"reservation_id": str(uuid.uuid4())})
        self.state(agent, offered_at, "ready", "reserved")
        self.emit("contact.answered", answered_at, **ids, data={"wait_s": c.wait_s})
        self.state(agent, answered_at, "ready", "busy")
        status = "ready"
        if away_during:  # the agent chooses away during the call: still working until wrap-up ends
            status = "away"
            self.state(agent, after(answered_at, 1), "away", "busy", "break")
        t = answered_at
        for into, length in holds:
            held = after(answered_at, into)
            self.emit("contact.held", held, contact_id=c.id, call_id=c.call_id)
            self.emit(
                "contact.resumed",
                after(held, length),
                contact_id=c.id,
                call_id=c.call_id,
                data={"hold_s": length},
            )
        c.talk_s, c.hold_s = talk, round(sum(length for _, length in holds), 3)
        c.ended_at = t = after(answered_at, talk + c.hold_s)
        self.emit("contact.ended", t, **ids, data={"talk_s": talk, "hold_s": c.hold_s, "ended_by": "caller"})
        self.state(agent, t, status, "wrap_up")
        self.emit(
            "call.ended", after(t, 0.5), call_id=c.call_id, data=self.bot_call("shop", after(t, 0.5), c)
        )
        c.wrap_s = wrap
        t = after(t, wrap)
        self.emit("contact.wrapup_done", t, **ids, data={"wrap_s": wrap, "disposition": "solved", "note": ""})
        self.state(agent, t, status, "idle")
        if survey is not None:
            at = after(c.ended_at, survey[0])
            c.surveys.append((at, survey[1]))
            self.emit("contact.survey", at, contact_id=c.id, call_id=c.call_id, data={"score": survey[1]})
        if away_during:
            t = after(t, self.rng.uniform(60, 600))
            self.state(agent, t, "ready", "idle")
        return t

    def bot_call(self, bot: str, ended_at: datetime, c: Contact) -> dict[str, Any]:
        duration = (ended_at - after(c.queued_at, -20)).total_seconds()
        self.bot_calls.append(BotCall(bot, ended_at, "transferred", True, duration))
        return {
            "outcome": "transferred",
            "end_reason": "bye",
            "bot": bot,
            "duration_s": duration,
            "transferred": True,
        }

    def miss(self, agent: int, queue: str, offered_at: datetime) -> datetime:
        """The agent lets an offer ring out (away, no_answer); the caller gives up later."""
        c = self.contact(queue, after(offered_at, -self.rng.uniform(1, 40)))
        failed_at = after(offered_at, 15)
        self.offers.append(Offer(agent, offered_at, None, failed_at))
        ids = {"contact_id": c.id, "call_id": c.call_id, "queue": queue, "agent_id": agent}
        self.emit("contact.offered", offered_at, **ids, data={"reservation_id": str(uuid.uuid4())})
        self.state(agent, offered_at, "ready", "reserved")
        self.emit("contact.offer_failed", failed_at, **ids, data={"reason": "no_answer"})
        self.state(agent, failed_at, "away", "idle", "no_answer")
        self.leave(c, "contact.abandoned", after(failed_at, self.rng.uniform(1, 60)))
        back = after(failed_at, self.rng.uniform(60, 300))
        self.state(agent, back, "ready", "idle")
        return back

    def shift(self, agent: int, login: datetime, logout: datetime) -> None:
        rng = self.rng
        self.state(agent, login, "ready", "idle")
        t = login
        while t < logout:
            t = after(t, rng.uniform(5, 400))
            r = rng.random()
            queue = rng.choice(self.agents[agent])
            if r < 0.1:
                self.state(agent, t, "away", "idle", "break")
                t = after(t, rng.uniform(120, 1800))
                self.state(agent, t, "ready", "idle")
            elif r < 0.15:
                t = self.miss(agent, queue, t)
            else:
                others = [q for q in THRESHOLDS if q != queue]
                t = self.handle(
                    agent,
                    queue,
                    t,
                    wait_before_offer=rng.choice([rng.uniform(0, 12), rng.uniform(12, 120)]),
                    ring=round(rng.uniform(2, 8), 3),
                    talk=round(rng.uniform(30, 400), 3),
                    holds=[(round(rng.uniform(5, 25), 3), round(rng.uniform(5, 60), 3))] if r < 0.45 else [],
                    wrap=round(rng.uniform(1, 60), 3),
                    first_queue=rng.choice(others) if rng.random() < 0.15 else None,
                    away_during=rng.random() < 0.08,
                    survey=(rng.uniform(5, 40), rng.randint(1, 5)) if rng.random() < 0.4 else None,
                )
        self.state(agent, after(t, 1), "logged_out", "idle")

    def walk_ins(self, n: int) -> None:
        """Contacts no agent took: short and long abandons, callbacks, some after an overflow."""
        rng = self.rng
        span = (SIM_END - SIM_START).total_seconds()
        for _ in range(n):
            queue = rng.choice(list(THRESHOLDS))
            queued_at = after(SIM_START, rng.uniform(0, span - 3600))
            short_s = THRESHOLDS[queue][1]
            kind, wait = rng.choice(
                [
                    ("contact.abandoned", rng.uniform(0.2, short_s - 0.01)),
                    ("contact.abandoned", rng.uniform(short_s + 0.01, 300)),
                    ("contact.callback", rng.uniform(30, 200)),
                ]
            )
            overflow = None
            if rng.random() < 0.1:
                overflow = (rng.choice([q for q in THRESHOLDS if q != queue]), after(queued_at, wait / 2))
            self.leave(self.contact(queue, queued_at, overflow), kind, after(queued_at, wait))

    def bots(self, n: int) -> None:
        rng = self.rng
        span = (SIM_END - SIM_START).total_seconds()
        for i in range(n):
            ended_at = after(SIM_START, rng.uniform(0, span))
            bot = rng.choice(["shop", "bank", ""])  # "": a call no bot handled (not in the bot report)
            outcome, transferred = rng.choice(
                [
                    ("resolved", False),
                    ("resolved", False),
                    ("resolved", True),
                    ("abandoned", False),
                    ("failed", False),
                ]
            )
            duration = round(rng.uniform(10, 300), 3)
            if bot:
                self.bot_calls.append(BotCall(bot, ended_at, outcome, transferred, duration))
            data = {"outcome": outcome, "end_reason": "bye", "bot": bot, "duration_s": duration}
            self.emit("call.ended", ended_at, call_id=f"bot-{i}", data={**data, "transferred": transferred})


def make_day(agent_ids: list[int]) -> Day:
    night, *others = agent_ids
    serves = [["sales"], ["sales", "vip"], ["support"], ["support", "sales"], ["vip", "support"], ["sales"]]
    day = Day(20250310, {night: ["sales", "support"], **dict(zip(others, serves, strict=True))})
    # The night agent: hand-placed contacts on the day's and an hour's boundaries.
    day.state(night, SIM_START, "ready", "idle")
    # queued 2 s before the local midnight, answered after it: the day before's contact, this day's answer
    t = day.handle(night, "sales", after(DAY, 3), 5, 3, 120, [(10, 30)], 20, survey=(10, 5))
    # waits exactly the service level threshold (20 s): within it; queued in hour 9, answered in hour 10
    t = day.handle(night, "sales", DAY.replace(hour=10, second=15, microsecond=500_000), 16, 4, 60, [], 10)
    day.state(night, DAY.replace(hour=10, minute=30), "away", "break")  # an away period across 11:00
    day.state(night, DAY.replace(hour=11, minute=30), "ready", "idle")
    # queued 1 ms before the next local midnight (this day's), answered in the next day, 1 ms over SL
    t = day.handle(night, "support", after(NEXT_DAY, 24.999), 25, 5.001, 90, [], 30, survey=(60, 4))
    day.state(night, after(t, 600), "logged_out", "idle")
    # abandons on the short-abandon threshold: exactly 5 s is not short in sales, 4.999 s and 9.999 s are
    for queue, queued_at, wait in [
        ("sales", DAY.replace(hour=12), 5.0),
        ("sales", DAY.replace(hour=12, minute=1), 4.999),
        ("support", DAY.replace(hour=12, minute=2), 9.999),
        ("sales", after(DAY, -0.5), 1.5),  # queued before midnight, left after: not this day's
    ]:
        day.leave(day.contact(queue, queued_at), "contact.abandoned", after(queued_at, wait))
    # queued before midnight, overflowed (and queued again) after it: the day before's contact
    late = day.contact("sales", after(DAY, -10), ("support", after(DAY, 5)))
    day.emit("contact.queued", after(DAY, 5.5), contact_id=late.id, call_id=late.call_id, queue="support")
    day.leave(late, "contact.abandoned", after(DAY, 60))
    for queued_at in (DAY.replace(hour=15), DAY.replace(hour=23, minute=58)):
        day.contact("vip", queued_at)  # still waiting (no outcome): offered, in the rates' base only
    rng = day.rng
    for agent in others:
        login = after(SIM_START, rng.uniform(0, 17 * 3600))
        day.shift(agent, login, min(after(login, rng.uniform(3 * 3600, 9 * 3600)), after(SIM_END, -1800)))
    day.walk_ins(160)
    day.bots(220)
    return day


# --- expectations, from the ground truth ---


def bucket_of(t: datetime, since: datetime, group_by: str) -> datetime:
    """The start of t's period; the report's time zone is since's."""
    if group_by == "none":
        return since
    local = t.astimezone(since.tzinfo).replace(minute=0, second=0, microsecond=0)
    return local if group_by == "hour" else local.replace(hour=0)


def next_bucket(b: datetime, group_by: str) -> datetime:
    if group_by == "day":  # the next local midnight: 23 or 25 hours later on a DST change
        return (b.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=b.tzinfo)
    return (b.astimezone(UTC) + timedelta(hours=1)).astimezone(b.tzinfo)


def buckets(since: datetime, until: datetime, group_by: str) -> list[tuple[datetime, datetime, datetime]]:
    """(bucket, clipped start, clipped end) of every period in the range."""
    if group_by == "none":
        return [(since, since, until)]
    out, b = [], bucket_of(since, since, group_by)
    while b < until:
        out.append((b, max(b, since), min(next_bucket(b, group_by), until)))
        b = next_bucket(b, group_by)
    return out


def period(b: datetime, since: datetime, until: datetime, group_by: str) -> tuple[datetime, datetime]:
    return next((s, e) for bb, s, e in buckets(since, until, group_by) if bb == b)


def pct(part: float, whole: float) -> float | None:
    return 100.0 * part / whole if whole else None


def avg(total: float, n: int) -> float | None:
    return total / n if n else None


def expected_queues(
    day: Day, since: datetime, until: datetime, group_by: str
) -> dict[tuple[Any, ...], dict[str, Any]]:
    acc: dict[tuple[str, datetime], dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    for c in day.contacts:
        if not since <= c.queued_at < until:
            continue
        b = bucket_of(c.queued_at, since, group_by)
        a = acc[(c.queue, b)]
        sl_s, short_s = THRESHOLDS[c.queue]
        a["offered"] += 1
        if c.outcome == "answered":
            a["answered"] += 1
            a["wait"] += c.wait_s
            a["answered_within_sl"] += c.wait_s <= sl_s
            if c.ended_at is not None:
                a["handled"] += 1
                a["talk"] += c.talk_s
                a["hold"] += c.hold_s
                a["wrap"] += c.wrap_s or 0.0
        elif c.outcome == "abandoned":
            a["abandoned"] += 1
            a["short_abandoned"] += c.wait_s < short_s
        elif c.outcome == "callback":
            a["callbacks"] += 1
        if c.overflow_to:
            a["overflowed_out"] += 1
            acc[(c.overflow_to, b)]["overflowed_in"] += 1
        for _, score in c.surveys:
            a["score"] += score
            a["csat_count"] += 1
    out = {}
    for (queue, b), a in acc.items():
        start, end = period(b, since, until, group_by)
        n = int(a["handled"])
        base = a["offered"] - a["callbacks"] - a["short_abandoned"]
        out[(queue, start)] = {
            "period_start": start,
            "period_end": end,
            "queue": queue,
            **{
                k: int(a[k])
                for k in (
                    "offered",
                    "answered",
                    "abandoned",
                    "short_abandoned",
                    "callbacks",
                    "overflowed_out",
                    "overflowed_in",
                    "answered_within_sl",
                    "handled",
                    "csat_count",
                )
            },
            "sl_threshold_s": THRESHOLDS[queue][0],
            "answer_rate": pct(a["answered"], base),
            "abandon_rate": pct(a["abandoned"] - a["short_abandoned"], base),
            "service_level": pct(
                a["answered_within_sl"], a["answered"] + a["abandoned"] - a["short_abandoned"]
            ),
            "asa_s": avg(a["wait"], int(a["answered"])),
            "aht_s": avg(a["talk"] + a["hold"] + a["wrap"], n),
            "avg_talk_s": avg(a["talk"], n),
            "avg_hold_s": avg(a["hold"], n),
            "avg_wrap_s": avg(a["wrap"], n),
            "csat": avg(a["score"], int(a["csat_count"])),
        }
    return out


def overlap_s(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> float:
    return max(0.0, (min(a1, b1) - max(a0, b0)).total_seconds())


def expected_agents(
    day: Day, names: dict[int, tuple[str, str]], since: datetime, until: datetime, group_by: str
) -> dict[tuple[Any, ...], dict[str, Any]]:
    acc: dict[tuple[int, datetime], dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(agent: int, at: datetime, key: str, value: float = 1.0) -> None:
        if since <= at < until:
            acc[(agent, bucket_of(at, since, group_by))][key] += value

    for o in day.offers:
        add(o.agent, o.offered_at, "offers")
        if o.answered_at:
            add(o.agent, o.answered_at, "answered")
        if o.failed_at:
            add(o.agent, o.failed_at, "missed")
    for c in day.contacts:
        if c.agent is not None and c.ended_at is not None:
            add(c.agent, c.ended_at, "handled")
            add(c.agent, c.ended_at, "talk", c.talk_s)
            add(c.agent, c.ended_at, "hold", c.hold_s)
            add(c.agent, c.ended_at, "wrap", c.wrap_s or 0.0)
        for at, score in c.surveys:
            assert c.agent is not None
            add(c.agent, at, "score", score)
            add(c.agent, at, "csat_count")
    for agent, changes in day.changes.items():
        ends = [t for t, _, _ in changes[1:]] + [SIM_END + timedelta(days=1)]
        for (start, status, state), end in zip(changes, ends, strict=True):
            working = state in WORKING
            for b, b0, b1 in buckets(since, until, group_by):
                sec = overlap_s(start, end, b0, b1)
                if sec <= 0 or not (working or status in ("ready", "away")):
                    continue
                a = acc[(agent, b)]
                a["staffed_s"] += sec if working or status == "ready" else 0.0
                a["available_s"] += sec if status == "ready" and state == "idle" else 0.0
                a["reserved_s"] += sec if state == "reserved" else 0.0
                a["busy_s"] += sec if state == "busy" else 0.0
                a["wrap_up_s"] += sec if state == "wrap_up" else 0.0
                a["away_s"] += sec if status == "away" and not working else 0.0
    out = {}
    for (agent, b), a in acc.items():
        start, end = period(b, since, until, group_by)
        n = int(a["handled"])
        out[(agent, start)] = {
            "period_start": start,
            "period_end": end,
            "agent_id": agent,
            "username": names[agent][0],
            "display_name": names[agent][1],
            **{k: int(a[k]) for k in ("offers", "answered", "missed", "handled", "csat_count")},
            "aht_s": avg(a["talk"] + a["hold"] + a["wrap"], n),
            "avg_talk_s": avg(a["talk"], n),
            "avg_hold_s": avg(a["hold"], n),
            "avg_wrap_s": avg(a["wrap"], n),
            **{k: a[k] for k in ("staffed_s", "available_s", "reserved_s", "busy_s", "wrap_up_s", "away_s")},
            "occupancy": pct(a["busy_s"] + a["wrap_up_s"], a["staffed_s"]),
            "csat": avg(a["score"], int(a["csat_count"])),
        }
    return out


def expected_bots(
    day: Day, since: datetime, until: datetime, group_by: str
) -> dict[tuple[Any, ...], dict[str, Any]]:
    acc: dict[tuple[str, datetime], list[BotCall]] = defaultdict(list)
    for call in day.bot_calls:
        if since <= call.ended_at < until:
            acc[(call.bot, bucket_of(call.ended_at, since, group_by))].append(call)
    out = {}
    for (bot, b), calls in acc.items():
        start, end = period(b, since, until, group_by)
        contained = sum(c.outcome == "resolved" and not c.transferred for c in calls)
        out[(bot, start)] = {
            "period_start": start,
            "period_end": end,
            "bot": bot,
            "calls": len(calls),
            "contained": contained,
            "transferred": sum(c.transferred or c.outcome == "transferred" for c in calls),
            "abandoned": sum(c.outcome == "abandoned" for c in calls),
            "failed": sum(c.outcome == "failed" for c in calls),
            "containment": pct(contained, len(calls)),
            "avg_duration_s": avg(sum(c.duration_s for c in calls), len(calls)),
        }
    return out


def assert_rows_match(
    actual: dict[tuple[Any, ...], dict[str, Any]], expected: dict[tuple[Any, ...], dict[str, Any]]
) -> None:
    assert sorted(actual) == sorted(expected)
    for key, want in expected.items():
        got = actual[key]
        assert sorted(got) == sorted(want), key
        for name, value in want.items():
            if isinstance(value, float):
                # the report rounds to 2 decimals; sums in another order may differ in the last one
                assert got[name] == pytest.approx(value, abs=0.006), (key, name, got[name], value)
            else:
                assert got[name] == value, (key, name, got[name], value)


# --- the database ---


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with scratch_cluster("aicc-pg-", "-c fsync=off -c full_page_writes=off") as d:
        apply(d, all_migrations())
        yield d


@dataclass
class Loaded:
    day: Day
    names: dict[int, tuple[str, str]]
    conn: psycopg.AsyncConnection[Any]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def loaded(dsn: str) -> AsyncIterator[Loaded]:
    names: dict[int, tuple[str, str]] = {}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for name in ("sales", "support"):
            sl_s, short_s = THRESHOLDS[name]
            config = QueueConfig(
                name=name,
                language="zh",
                service_level=ServiceLevel(seconds=int(sl_s)),
                short_abandon_s=int(short_s),
            )
            await conn.execute(
                "INSERT INTO aicc.queues (name, config) VALUES (%s, %s)", (name, config.model_dump_json())
            )
        for i in range(7):
            username, display = f"agent{i}", f"坐席 {i}"
            cur = await conn.execute(
                "INSERT INTO aicc.users (username, display_name, role) VALUES (%s, %s, 'agent') RETURNING id",
                (username, display),
            )
            row = await cur.fetchone()
            assert row is not None
            names[int(row[0])] = (username, display)
        day = make_day(sorted(names))
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=3, open=False)
        await pool.open(wait=True)
        writer = EventWriter(pool, spool_dir=None, batch=700)
        for e in day.events:
            writer.append(e)
        assert await writer.flush() == len(day.events)
        await writer.close()
        await pool.close()
        yield Loaded(day, names, conn)


def _keyed(rows: list[Any], key: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {(getattr(r, key), r.period_start): asdict(r) for r in rows}


NEW_YORK = ZoneInfo("America/New_York")
RANGES = [
    pytest.param(DAY, NEXT_DAY, "none", id="local-day"),
    pytest.param(DAY, NEXT_DAY, "hour", id="local-day-by-hour"),
    pytest.param(SIM_START, SIM_END, "day", id="three-local-days-clipped"),
    pytest.param(
        DAY.replace(hour=9, minute=30), DAY.replace(hour=11, minute=45), "hour", id="mid-hour-range"
    ),
    # New York's days around its switch to summer time (2025-03-09 is 23 hours long)
    pytest.param(
        datetime(2025, 3, 9, tzinfo=NEW_YORK),
        datetime(2025, 3, 11, tzinfo=NEW_YORK),
        "day",
        id="new-york-dst",
    ),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("since", "until", "group_by"), RANGES)
async def test_queue_report_matches_the_ground_truth(
    loaded: Loaded, since: datetime, until: datetime, group_by: queries.GroupBy
) -> None:
    rows = await queries.queue_report(loaded.conn, since, until, tz=str(since.tzinfo), group_by=group_by)
    expected = expected_queues(loaded.day, since, until, group_by)
    assert_rows_match(_keyed(rows, "queue"), expected)
    assert rows
    assert all(r.period_start.tzinfo == since.tzinfo for r in rows)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("since", "until", "group_by"), RANGES)
async def test_agent_report_matches_the_ground_truth(
    loaded: Loaded, since: datetime, until: datetime, group_by: queries.GroupBy
) -> None:
    rows = await queries.agent_report(loaded.conn, since, until, tz=str(since.tzinfo), group_by=group_by)
    assert_rows_match(
        _keyed(rows, "agent_id"), expected_agents(loaded.day, loaded.names, since, until, group_by)
    )


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("since", "until", "group_by"), RANGES)
async def test_bot_report_matches_the_ground_truth(
    loaded: Loaded, since: datetime, until: datetime, group_by: queries.GroupBy
) -> None:
    rows = await queries.bot_report(loaded.conn, since, until, tz=str(since.tzinfo), group_by=group_by)
    assert_rows_match(_keyed(rows, "bot"), expected_bots(loaded.day, since, until, group_by))


@pytest.mark.asyncio(loop_scope="module")
async def test_the_day_holds_what_the_test_means_to_cover(loaded: Loaded) -> None:
    """Guards the generator: a change that stopped producing a case would make the comparisons above
    prove less."""
    day_rows = await queries.queue_report(loaded.conn, DAY, NEXT_DAY, tz="Asia/Shanghai")
    by_queue = {r.queue: r for r in day_rows}
    assert set(by_queue) == {"sales", "support", "vip"}
    for r in day_rows:
        assert r.answered > 10 and r.abandoned > 3 and r.callbacks > 0 and r.short_abandoned > 0
        assert 0 < r.answered_within_sl < r.answered and r.overflowed_in > 0 and r.overflowed_out > 0
        assert r.csat_count > 0 and r.avg_hold_s and r.avg_hold_s > 0
    assert by_queue["support"].sl_threshold_s == 30 and by_queue["vip"].sl_threshold_s == 20
    agents = await queries.agent_report(loaded.conn, DAY, NEXT_DAY, tz="Asia/Shanghai")
    assert all(r.staffed_s > 0 for r in agents) and sum(r.missed for r in agents) > 0
    assert sum(r.away_s for r in agents) > 0 and all(r.occupancy is not None for r in agents)
    # the night agent was staffed across midnight: its day starts at the local midnight, not at login
    night = min(loaded.names)
    assert next(r for r in agents if r.agent_id == night).staffed_s > 20 * 3600
    bots = await queries.bot_report(loaded.conn, DAY, NEXT_DAY, tz="Asia/Shanghai")
    assert {r.bot for r in bots} == {"shop", "bank"}
    assert all(0 < r.contained < r.calls for r in bots)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_utc_day_is_a_different_day(loaded: Loaded) -> None:
    """The same calendar date read in UTC covers other hours: the time zone really moves the rows."""
    utc = datetime(2025, 3, 10, tzinfo=ZoneInfo("UTC"))
    rows = await queries.queue_report(loaded.conn, utc, utc + timedelta(days=1), tz="UTC")
    expected = expected_queues(loaded.day, utc, utc + timedelta(days=1), "none")
    assert_rows_match(_keyed(rows, "queue"), expected)
    local = await queries.queue_report(loaded.conn, DAY, NEXT_DAY, tz="Asia/Shanghai")
    assert sum(r.offered for r in rows) != sum(r.offered for r in local)


@pytest.mark.asyncio(loop_scope="module")
async def test_cdr_lists_a_contacts_legs_with_its_figures(loaded: Loaded) -> None:
    c = next(c for c in loaded.day.contacts if c.overflow_to and c.hold_s > 0 and c.surveys)
    record = await queries.cdr(loaded.conn, c.call_id)
    assert record is not None
    assert await queries.cdr(loaded.conn, c.id) == record
    assert (record.contact_id, record.call_id, record.queue, record.outcome) == (
        c.id,
        c.call_id,
        c.queue,
        "answered",
    )
    assert record.agent_id == c.agent and record.disposition == "solved"
    assert record.wait_s == pytest.approx(c.wait_s, abs=0.001)
    assert (record.talk_s, record.hold_s, record.wrap_s) == pytest.approx(
        (c.talk_s, c.hold_s, c.wrap_s), abs=0.01
    )
    assert record.csat == c.surveys[0][1]
    legs = sorted(
        (
            e
            for e in loaded.day.events
            if e.contact_id == c.id or (e.call_id == c.call_id and e.kind.startswith("call."))
        ),
        key=lambda e: e.at,
    )
    assert [(leg.at, leg.kind) for leg in record.legs] == [(e.at, e.kind) for e in legs]
    assert {"contact.overflowed", "contact.held", "contact.resumed", "contact.survey"} <= {
        e.kind for e in legs
    }
    abandoned = next(c for c in loaded.day.contacts if c.outcome == "abandoned")
    record = await queries.cdr(loaded.conn, abandoned.id)
    assert record is not None and record.outcome == "abandoned" and record.agent_id is None
    assert record.wait_s == pytest.approx(abandoned.wait_s, abs=0.001)
    assert await queries.cdr(loaded.conn, "no-such-call") is None
    assert await queries.cdr(loaded.conn, str(uuid.uuid4())) is None


def test_every_report_column_has_a_definition() -> None:
    for name, row_type in (
        ("queues", queries.QueueRow),
        ("agents", queries.AgentRow),
        ("bot", queries.BotRow),
    ):
        assert [f.name for f in fields(row_type)] == [m.name for m in definitions.REPORTS[name]]
    text = definitions.markdown()
    assert "**service_level** (%): answered_within_sl / (answered + abandoned - short_abandoned)" in text
