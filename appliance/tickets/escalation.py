"""SLA escalations: what a warning or a breach of an open ticket's target does, and the watcher that
does it in the API process.

The decision is pure (`decide`: a policy, a ticket's events, `now` and what was escalated already in;
the escalations to make out), so a simulated clock tests it. An escalation is keyed by (target, state,
cycle): `cycle` is the start of the target's clock, so each next-response cycle escalates on its own and
every other transition escalates once. Only tickets whose clocks run (new, open) escalate: pending waits
on the customer, resolved and closed are done; a target met (even late) escalates no more.

The watcher (`EscalationWatcher`, one task per API process) runs `escalate_once` every N seconds
(ticket_escalation_interval_s). A pass reads the running tickets, computes their SLA (and the figures
Prometheus reads), then, under a transaction-level PostgreSQL advisory lock that makes it the site's
only escalating pass (a second API host's pass at the same moment skips), locks each ticket to escalate,
re-decides on its current history and applies the actions in one savepoint: priority and group changes
as the usual events (actor `sla`), an `escalated` event {target, state, cycle, due_at, actions, notified,
priority, group}, the notifications, an audit entry. A unique index on the `escalated` events keeps
each transition to one even if two passes ever met.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.api import audit
from aicc.appliance.tickets import store
from aicc.appliance.tickets.sla import (
    ACTION_NAMES,
    PRIORITIES,
    TARGETS,
    Action,
    AssignGroup,
    Event,
    SlaPolicy,
    SlaStatus,
    TargetName,
    compute,
)

log = logging.getLogger("aicc.tickets.escalation")

ACTOR = "sla"
LOCK_KEY = 0x54494B01  # "TIK" + 1: one escalating pass per database at a time
EscalationState = Literal["warning", "breached"]
# One step up; urgent stays urgent.
STEP_UP: dict[str, str] = {"low": "normal", "normal": "high", "high": "urgent"}
ACTION_LABELS: tuple[str, ...] = (*ACTION_NAMES, "assign_group")
Key = tuple[str, str, str]  # (target, state, cycle: the clock's start, ISO 8601 in UTC)


@dataclass(frozen=True)
class Decision:
    """One escalation to make: a target of the ticket reached `state` in the clock cycle `cycle`."""

    target: TargetName
    state: EscalationState
    cycle: dt.datetime
    due_at: dt.datetime | None
    actions: tuple[Action, ...]

    @property
    def key(self) -> Key:
        return escalation_key(self.target, self.state, self.cycle)


def _utc(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat()


def escalation_key(target: str, state: str, cycle: dt.datetime) -> Key:
    return (target, state, _utc(cycle))


def escalated(events: Iterable[Event]) -> set[Key]:
    """The transitions the history records as escalated already."""
    return {
        (str(e.data.get("target")), str(e.data.get("state")), str(e.data.get("cycle")))
        for e in events
        if e.kind == "escalated"
    }


def action_label(action: Action) -> str:
    return "assign_group" if isinstance(action, AssignGroup) else action


def actions_for(policy: SlaPolicy, state: EscalationState, target: TargetName) -> tuple[Action, ...]:
    """Every matching rule's actions, in the rules' order, each once."""
    out: list[Action] = []
    for rule in policy.escalations:
        if rule.on == state and rule.target in (target, "any"):
            out += [a for a in rule.actions if a not in out]
    return tuple(out)


def _status(history: Sequence[Event], now: dt.datetime) -> str:
    status = str(history[0].data.get("status", "new"))
    for event in history[1:]:
        if event.at > now:
            break
        if event.kind == "status_changed":
            status = str(event.data["to"])
    return status


def decide(
    policy: SlaPolicy,
    events: Iterable[Event],
    now: dt.datetime,
    done: set[Key] | None = None,
    *,
    sla: SlaStatus | None = None,
) -> list[Decision]:
    """The escalations a ticket with this history is due at `now` and has not had (`done`; by default
    read from the history's `escalated` events). raise_priority happens once per ticket: it is left out
    once an earlier escalation raised the priority (and from all but the first escalation here)."""
    history = sorted(events, key=lambda e: e.at)
    if not history or history[0].kind != "created":
        raise ValueError("a ticket's history starts with its created event")
    if _status(history, now) not in store.RUNNING:
        return []
    sla = sla if sla is not None else compute(policy, history, now)
    done = done if done is not None else escalated(history)
    raised = any(e.kind == "escalated" and e.data.get("priority") for e in history if e.at <= now)
    out: list[Decision] = []
    for target in TARGETS:
        figures = getattr(sla, target)
        if figures is None or figures.met_at is not None or figures.state not in ("warning", "breached"):
            continue
        state: EscalationState = figures.state
        if escalation_key(target, state, figures.started_at) in done:
            continue
        actions = actions_for(policy, state, target)
        if raised:
            actions = tuple(a for a in actions if a != "raise_priority")
        if not actions:
            continue
        raised = raised or "raise_priority" in actions
        out.append(Decision(target, state, figures.started_at, figures.due_at, actions))
    return out


def overdue(sla: SlaStatus) -> bool:
    """A target is breached and still not met."""
    return any(
        t is not None and t.state == "breached" and t.met_at is None
        for t in (sla.first_response, sla.next_response, sla.resolution)
    )


def at_risk(sla: SlaStatus) -> bool:
    return any(
        t is not None and t.state == "warning"
        for t in (sla.first_response, sla.next_response, sla.resolution)
    )


# Notifications: stored as kind + data, worded at reading time in both languages.
_TARGET_WORDS: dict[str, tuple[str, str]] = {
    "first_response": ("首次响应", "first response"),
    "next_response": ("后续响应", "next response"),
    "resolution": ("解决", "resolution"),
}


def notification_text(kind: str, data: dict[str, Any]) -> dict[str, str]:
    """{"zh": ..., "en": ...} of a notification."""
    number, subject = str(data.get("number", "")), str(data.get("subject", ""))
    zh_target, en_target = _TARGET_WORDS.get(str(data.get("target")), (str(data.get("target")),) * 2)
    due = ""
    if data.get("due_at"):
        zone = ZoneInfo(str(data.get("timezone") or "UTC"))
        due = dt.datetime.fromisoformat(str(data["due_at"])).astimezone(zone).strftime("%Y-%m-%d %H:%M")
    if kind == "sla_breached":
        zh = f"工单 {number} {zh_target}已超时" + (f"（截止 {due}）" if due else "")
        en = f"{number}: {en_target} overdue" + (f" since {due}" if due else "")
    else:
        zh = f"工单 {number} {zh_target}即将超时" + (f"（截止 {due}）" if due else "")
        en = f"{number}: {en_target} due soon" + (f", by {due}" if due else "")
    return {"zh": f"{zh}：{subject}", "en": f"{en} - {subject}"}


class TicketMetrics:
    """The tickets' figures on the API's registry, set by each pass (a scrape runs no query)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge(
            "aicc_tickets_open",
            "Tickets neither resolved nor closed, by priority, at the latest escalation pass.",
            ["priority"],
            registry=registry,
        )
        self.breached = Gauge(
            "aicc_tickets_sla_breached",
            "New or open tickets with an SLA target breached and not yet met, at the latest pass.",
            registry=registry,
        )
        self.warning = Gauge(
            "aicc_tickets_sla_warning",
            "New or open tickets with an SLA target at risk (warning) and none breached, at the latest pass.",
            registry=registry,
        )
        self.escalations = Counter(
            "aicc_ticket_escalations",
            "SLA escalation actions applied by this API process, by action.",
            ["action"],
            registry=registry,
        )
        for priority in PRIORITIES:
            self.open.labels(priority)
        for action in ACTION_LABELS:
            self.escalations.labels(action)

    def observe(self, result: PassResult) -> None:
        for priority in PRIORITIES:
            self.open.labels(priority).set(result.open.get(priority, 0))
        self.breached.set(result.breached)
        self.warning.set(result.warning)
        for escalation in result.escalations:
            for action in escalation["actions"]:
                self.escalations.labels(action).inc()


@dataclass
class PassResult:
    skipped: bool = False  # escalations were due, but another pass held the site's lock: none made here
    open: dict[str, int] = field(default_factory=dict)
    breached: int = 0
    warning: int = 0
    escalations: list[dict[str, Any]] = field(default_factory=list)  # {number, target, state, actions}


def assess(
    rows: list[dict[str, Any]],
    events: dict[int, list[dict[str, Any]]],
    policies: dict[str, SlaPolicy],
    now: dt.datetime,
    result: PassResult,
) -> list[str]:
    """Count the running tickets' breaches and warnings into `result`; returns the numbers of the
    tickets with an escalation due."""
    due: list[str] = []
    for row in rows:
        policy, history = policies[row["sla_policy"]], store.sla_events(events[row["id"]])
        sla = compute(policy, history, now)
        if overdue(sla):
            result.breached += 1
        elif at_risk(sla):
            result.warning += 1
        if decide(policy, history, now, sla=sla):
            due.append(str(row["number"]))
    return due


def _view(ticket: dict[str, Any]) -> dict[str, Any]:
    return {k: ticket[k] for k in ("number", "status", "priority", "group", "assignee", "sla_policy")}


async def _recipients(
    conn: AsyncConnection[DictRow], ticket: dict[str, Any], actions: Sequence[Action]
) -> list[int]:
    group = str(ticket["group"])
    out: list[int] = []
    for action in actions:
        if action == "notify_assignee":
            if ticket["assignee"] is not None:
                users = [int(ticket["assignee"])]
            else:
                users = await store.group_members(conn, group) if group else []
        elif action == "notify_group":
            users = await store.group_members(conn, group) if group else []
        elif action == "notify_supervisors":
            users = await store.supervisors(conn, group)
        else:
            continue
        out += [u for u in users if u not in out]
    return out


async def _apply(
    conn: AsyncConnection[DictRow],
    ticket: dict[str, Any],
    policy: SlaPolicy,
    decision: Decision,
    now: dt.datetime,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One escalation; returns the ticket after it and the escalated event's data."""
    before = _view(ticket)
    changes: dict[str, Any] = {}
    for action in decision.actions:
        if isinstance(action, AssignGroup):
            changes["group"] = action.assign_group
    if "raise_priority" in decision.actions and ticket["priority"] in STEP_UP:
        changes["priority"] = STEP_UP[ticket["priority"]]
    after = await store.change(conn, ticket, changes, None, ACTOR, now)
    notified = await _recipients(conn, after, decision.actions)
    due_at = decision.due_at.isoformat() if decision.due_at else None
    data = {
        "target": decision.target,
        "state": decision.state,
        "cycle": _utc(decision.cycle),
        "due_at": due_at,
        "actions": [a.model_dump() if isinstance(a, AssignGroup) else a for a in decision.actions],
        "notified": notified,
        "priority": (
            {"from": ticket["priority"], "to": after["priority"]}
            if after["priority"] != ticket["priority"]
            else None
        ),
        "group": {"from": ticket["group"], "to": after["group"]}
        if after["group"] != ticket["group"]
        else None,
    }
    await store.append_event(conn, ticket["id"], "escalated", data, None, ACTOR, now)
    message = {
        "number": after["number"],
        "subject": after["subject"],
        "target": decision.target,
        "state": decision.state,
        "due_at": due_at,
        "priority": after["priority"],
        "timezone": policy.calendar.timezone,
    }
    await store.notify(conn, notified, f"sla_{decision.state}", after["number"], message, now)
    await audit.record(
        conn,
        ACTOR,
        "ticket.escalate",
        "ticket",
        after["number"],
        before,
        {**_view(after), "escalation": data},
    )
    return after, data


async def _escalate_ticket(
    conn: AsyncConnection[DictRow], number: str, now: dt.datetime
) -> list[dict[str, Any]]:
    """Lock the ticket, decide again on its current history and policy, apply; returns what was applied."""
    ticket = await store.get(conn, number, lock=True)
    if ticket is None or ticket["status"] not in store.RUNNING:
        return []
    policy = await store.get_policy(conn, ticket["sla_policy"])
    assert policy is not None  # a foreign key keeps it
    history = store.sla_events((await store.events(conn, [ticket["id"]]))[ticket["id"]])
    applied = []
    for decision in decide(policy, history, now):
        ticket, data = await _apply(conn, ticket, policy, decision, now)
        labels = [action_label(a) for a in decision.actions]
        applied.append(
            {"number": number, "target": data["target"], "state": data["state"], "actions": labels}
        )
    return applied


async def escalate_once(
    pool: AsyncConnectionPool[AsyncConnection[DictRow]],
    now: dt.datetime | None = None,
    metrics: TicketMetrics | None = None,
) -> PassResult:
    """One pass: the figures of every running ticket, and (holding the site's escalation lock) the
    escalations due at `now` (default: the wall clock). A ticket that fails is logged and skipped."""
    now = now or dt.datetime.now(dt.UTC)
    result = PassResult()
    async with pool.connection() as conn:
        async with conn.transaction():
            result.open = await store.open_counts(conn)
            rows = await store.running_tickets(conn)
            events = await store.events(conn, [r["id"] for r in rows])
            policies = {p.name: p for p in await store.list_policies(conn)}
        # No transaction open while computing, and off the event loop: requests keep being served.
        due = await asyncio.to_thread(assess, rows, events, policies, now, result)
        if due:
            async with conn.transaction():
                cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS locked", (LOCK_KEY,))
                locked = await cur.fetchone()
                result.skipped = not (locked and locked["locked"])
                for number in [] if result.skipped else due:
                    try:
                        async with conn.transaction():  # a savepoint: one ticket's failure keeps the others'
                            result.escalations += await _escalate_ticket(conn, number, now)
                    except psycopg.OperationalError:
                        raise
                    except (psycopg.Error, ValueError, KeyError):
                        log.exception("escalating ticket %s failed; the next pass tries again", number)
    if metrics is not None:
        metrics.observe(result)
    for escalation in result.escalations:
        log.info(
            "ticket %s: %s %s, escalated: %s",
            escalation["number"],
            escalation["target"],
            escalation["state"],
            ", ".join(escalation["actions"]),
        )
    return result


class EscalationWatcher:
    """The API process's escalation task: a pass every `interval_s` seconds, the first one after one
    interval (a restart costs at most one interval of delay; nothing is lost, passes catch up)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[DictRow]],
        interval_s: float,
        metrics: TicketMetrics | None = None,
    ) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ticket-escalations")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await escalate_once(self.pool, metrics=self.metrics)
            except psycopg.OperationalError as exc:  # the pool's timeout too: the database is away
                log.warning("ticket escalation pass skipped, the database is unavailable: %s", exc)
            except Exception:
                log.exception("ticket escalation pass failed; the next one runs in %g s", self.interval_s)
