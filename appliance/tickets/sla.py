"""SLA figures of a ticket, computed from its event history alone (no database, no wall clock: `now` is
an argument), so the same history always gives the same figures and a simulated clock tests them.

Targets are in business minutes of the policy's calendar (aicc.appliance.ivr.calendar.Calendar): time
counts only while the calendar is open (holidays closed, 调休 open days open). Per target:

- first_response: from creation to the first public agent comment;
- next_response: from a customer comment (after the first response) to the next public agent comment;
  one cycle per unanswered customer comment, the latest cycle is reported;
- resolution: from creation to the status resolved; re-opening resumes the clock where it stopped.

Every clock stands still while the ticket is pending (waiting on the customer) or resolved/closed.
A target met late is reported as breached (with its met_at): a late answer is still a breach.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from aicc.appliance.ivr.calendar import WEEKDAYS, Calendar

Priority = Literal["urgent", "high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("urgent", "high", "normal", "low")
Status = Literal["new", "open", "pending", "resolved", "closed"]
TargetName = Literal["first_response", "next_response", "resolution"]
TARGETS: tuple[TargetName, ...] = ("first_response", "next_response", "resolution")
State = Literal["met", "breached", "warning", "running", "paused"]
# Worst first: a ticket's overall SLA state is its worst target's.
_SEVERITY: tuple[State, ...] = ("breached", "warning", "running", "paused", "met")
# Statuses in which no SLA clock runs.
_STOPPED: frozenset[str] = frozenset({"pending", "resolved", "closed"})
# How far ahead a due date is searched: a calendar open a few hours a year still finds one.
_HORIZON_DAYS = 3 * 366

Minutes = Annotated[int, Field(ge=1, le=525_600)]


class Targets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_response: Minutes | None = Field(None, description="business minutes; null: no target")
    next_response: Minutes | None = None
    resolution: Minutes | None = None


ActionName = Literal["notify_assignee", "notify_group", "notify_supervisors", "raise_priority"]
ACTION_NAMES: tuple[ActionName, ...] = get_args(ActionName)


class AssignGroup(BaseModel):
    """Move the ticket to another group (its members then get notify_group)."""

    model_config = ConfigDict(extra="forbid")

    assign_group: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")]


_GROUP = re.compile(r"^[a-z0-9][a-z0-9_-]{0,40}$")


def _action(value: Any) -> Any:
    """One action: a name, or {"assign_group": NAME}; anything else is refused, saying what is allowed
    (checked here whole, so that the error names the action, not a branch of the union)."""
    allowed = f"one of {', '.join(ACTION_NAMES)} or {{assign_group: NAME}}"
    if isinstance(value, AssignGroup) or (isinstance(value, str) and value in ACTION_NAMES):
        return value
    if isinstance(value, str):
        raise ValueError(f"unknown action {value!r}; use {allowed}")
    if isinstance(value, dict) and set(value) == {"assign_group"}:
        name = value["assign_group"]
        if isinstance(name, str) and _GROUP.fullmatch(name):
            return AssignGroup(assign_group=name)
        raise ValueError(f"assign_group: a group name (a-z, 0-9, '_', '-'; up to 41), found {name!r}")
    raise ValueError(f"an action is {allowed}")


Action = Annotated[ActionName | AssignGroup, BeforeValidator(_action)]


class Escalation(BaseModel):
    """What happens when a target of an open ticket reaches `on` (once per target and clock cycle)."""

    model_config = ConfigDict(extra="forbid")

    on: Literal["warning", "breached"]
    target: Literal["first_response", "next_response", "resolution", "any"] = "any"
    actions: list[Action] = Field(min_length=1, max_length=10)


def _default_escalations() -> list[Escalation]:
    return [
        Escalation(on="warning", target="any", actions=["notify_assignee"]),
        Escalation(on="breached", target="any", actions=["notify_supervisors", "raise_priority"]),
    ]


class SlaPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")]
    description: Annotated[str, Field(max_length=500)] = ""
    targets: dict[Priority, Targets] = Field(description="per priority; a priority not listed has no targets")
    warn_at_percent: Annotated[int, Field(ge=1, le=99)] = 80
    calendar: Calendar
    escalations: list[Escalation] = Field(
        default_factory=_default_escalations,
        max_length=20,
        description="what a warning or a breach of an open ticket's target does (appliance/tickets/"
        "escalation.py); the rules matching a transition all apply; [] escalates nothing",
    )


@dataclass(frozen=True)
class Event:
    """One entry of aicc.ticket_events, as far as the SLA cares."""

    at: dt.datetime
    kind: str
    data: dict[str, Any]


class TargetStatus(BaseModel):
    target_minutes: int
    state: State
    started_at: dt.datetime
    due_at: dt.datetime | None = Field(description="null while paused: the due date moves on resume")
    met_at: dt.datetime | None
    used_minutes: float
    remaining_minutes: float = Field(description="negative once breached")


class SlaStatus(BaseModel):
    policy: str
    priority: Priority
    state: State | None = Field(description="the worst target's state; null when no target applies")
    first_response: TargetStatus | None
    next_response: TargetStatus | None
    resolution: TargetStatus | None


def _spans(calendar: Calendar, day: dt.date) -> list[tuple[str, str]]:
    """The open spans of a local day, with the precedence Calendar.is_open uses."""
    for open_day in calendar.open_days:
        if open_day.date == day:
            return list(open_day.hours)
    if any(h.covers(day) for h in calendar.holidays):
        return []
    return list(calendar.weekly.get(WEEKDAYS[day.weekday()], []))


def _at(day: dt.date, clock: str, zone: ZoneInfo) -> dt.datetime:
    hours, minutes = (int(x) for x in clock.split(":"))
    return dt.datetime.combine(day, dt.time(0, 0), tzinfo=zone) + dt.timedelta(hours=hours, minutes=minutes)


def _open_intervals(
    calendar: Calendar, start: dt.datetime, days: int = _HORIZON_DAYS
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """The calendar's open intervals of `days` local days from `start`'s, in order."""
    zone = ZoneInfo(calendar.timezone)
    first = calendar.local(start).date()
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        for begin, end in sorted(_spans(calendar, day)):
            yield _at(day, begin, zone), _at(day, end, zone)


def business_seconds(calendar: Calendar, start: dt.datetime, end: dt.datetime) -> float:
    """Seconds between `start` and `end` during which the calendar is open."""
    total = 0.0
    if end <= start:
        return total
    days = (calendar.local(end).date() - calendar.local(start).date()).days + 1
    for begin, stop in _open_intervals(calendar, start, days):
        if begin >= end:
            break
        lo, hi = max(begin, start), min(stop, end)
        if hi > lo:
            total += (hi - lo).total_seconds()
    return total


def add_business(calendar: Calendar, start: dt.datetime, seconds: float) -> dt.datetime | None:
    """The moment `seconds` of open time after `start`; None when the calendar never has that much."""
    left = seconds
    for begin, stop in _open_intervals(calendar, start):
        if stop <= start:
            continue
        lo = max(begin, start)
        room = (stop - lo).total_seconds()
        if left <= room:
            return lo + dt.timedelta(seconds=left)
        left -= room
    return None


@dataclass
class _Clock:
    """One target's clock: the wall-time intervals it ran, and when it was met."""

    started_at: dt.datetime
    running_since: dt.datetime | None
    intervals: list[tuple[dt.datetime, dt.datetime]]
    met_at: dt.datetime | None = None

    def stop(self, at: dt.datetime) -> None:
        if self.running_since is not None:
            self.intervals.append((self.running_since, at))
            self.running_since = None

    def resume(self, at: dt.datetime) -> None:
        if self.running_since is None and self.met_at is None:
            self.running_since = at


def _is_agent_reply(event: Event) -> bool:
    return (
        event.kind == "commented"
        and event.data.get("visibility") == "public"
        and event.data.get("author") == "agent"
    )


def _is_customer_message(event: Event) -> bool:
    return event.kind == "commented" and event.data.get("author") == "customer"


def _clocks(events: list[Event], now: dt.datetime) -> tuple[Priority, dict[TargetName, _Clock | None]]:
    """Replay the history into one clock per target (next_response: the latest cycle's)."""
    created = events[0]
    status: str = str(created.data.get("status", "new"))
    priority: Priority = created.data.get("priority", "normal")
    running = None if status in _STOPPED else created.at
    first = _Clock(created.at, running, [])
    resolution = _Clock(created.at, running, [])
    following: _Clock | None = None
    for event in events[1:]:
        if event.at > now:
            break  # a simulated clock before the latest event sees the history up to then
        if event.kind == "priority_changed":
            priority = event.data["to"]
        elif event.kind == "status_changed":
            status = str(event.data["to"])
            clocks = [c for c in (first, following, resolution) if c is not None]
            if status in _STOPPED:
                for clock in clocks:
                    clock.stop(event.at)
                if status == "resolved" and resolution.met_at is None:
                    resolution.met_at = event.at
            else:
                if resolution.met_at is not None:  # re-opened: resolution runs again from where it stood
                    resolution.met_at = None
                for clock in clocks:
                    clock.resume(event.at)
        elif _is_agent_reply(event):
            if first.met_at is None:
                first.stop(event.at)
                first.met_at = event.at
            elif following is not None and following.met_at is None:
                following.stop(event.at)
                following.met_at = event.at
        elif (
            _is_customer_message(event)
            and first.met_at is not None
            # A new cycle starts only when none is waiting: a second message does not restart the clock.
            and (following is None or following.met_at is not None)
        ):
            following = _Clock(event.at, None if status in _STOPPED else event.at, [])
    return priority, {"first_response": first, "next_response": following, "resolution": resolution}


def _status(clock: _Clock, calendar: Calendar, target: int, warn_at: int, now: dt.datetime) -> TargetStatus:
    target_s = target * 60.0
    end = clock.met_at or now
    intervals = [*clock.intervals, *([(clock.running_since, now)] if clock.running_since else [])]
    used = 0.0
    crossed: dt.datetime | None = None  # the moment the target's time ran out
    for begin, until in intervals:
        part = business_seconds(calendar, begin, min(until, end))
        if crossed is None and used + part >= target_s and used < target_s:
            crossed = add_business(calendar, begin, target_s - used)
        used += part
    running = clock.running_since is not None and clock.met_at is None
    state: State
    due_at: dt.datetime | None = None
    if clock.met_at is not None:
        state = "breached" if used > target_s else "met"
        due_at = crossed if state == "breached" else None
    elif used >= target_s:
        state, due_at = "breached", crossed
    elif not running:
        state = "paused"
    else:
        state = "warning" if used >= target_s * warn_at / 100 else "running"
        due_at = add_business(calendar, now, target_s - used)
    return TargetStatus(
        target_minutes=target,
        state=state,
        started_at=clock.started_at,
        due_at=due_at.astimezone(dt.UTC) if due_at is not None else None,  # one zone for clients
        met_at=clock.met_at,
        used_minutes=round(used / 60, 2),
        remaining_minutes=round((target_s - used) / 60, 2),
    )


def compute(policy: SlaPolicy, events: Iterable[Event], now: dt.datetime) -> SlaStatus:
    """The ticket's SLA at `now` from its history (ordered by time; the first event is `created`)."""
    history = sorted(events, key=lambda e: e.at)
    if not history or history[0].kind != "created":
        raise ValueError("a ticket's history starts with its created event")
    priority, clocks = _clocks(history, now)
    targets = policy.targets.get(priority, Targets())
    out: dict[TargetName, TargetStatus | None] = {}
    for name in TARGETS:
        minutes, clock = getattr(targets, name), clocks[name]
        out[name] = (
            None
            if minutes is None or clock is None
            else _status(clock, policy.calendar, minutes, policy.warn_at_percent, now)
        )
    states = [s.state for s in out.values() if s is not None]
    worst = min(states, key=_SEVERITY.index) if states else None
    return SlaStatus(policy=policy.name, priority=priority, state=worst, **out)
