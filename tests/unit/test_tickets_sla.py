"""SLA figures from a ticket's history, in a simulated clock (appliance/tickets/sla.py): business hours
of the policy's calendar (weekends, holidays, 调休 open days), pending pauses every clock, warnings at
the policy's percentage, breaches with their due time, next-response cycles, re-opening."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from aicc.appliance.ivr.calendar import Calendar
from aicc.appliance.tickets.sla import Event, SlaPolicy, add_business, business_seconds, compute

SH = ZoneInfo("Asia/Shanghai")
HOURS = [["09:00", "18:00"]]


def at(day: int, clock: str) -> dt.datetime:
    """A moment in December 2026, China time (Fri 4th, Sat 5th, Sun 6th, Mon 7th, Tue 8th)."""
    hours, minutes = (int(x) for x in clock.split(":"))
    return dt.datetime(2026, 12, day, hours, minutes, tzinfo=SH)


def calendar(**extra: Any) -> Calendar:
    weekly = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), HOURS)
    return Calendar.model_validate({"name": "office", "timezone": "Asia/Shanghai", "weekly": weekly, **extra})


def policy(**extra: Any) -> SlaPolicy:
    return SlaPolicy.model_validate(
        {
            "name": "default",
            "targets": {
                "urgent": {"first_response": 30, "next_response": 120, "resolution": 480},
                "normal": {"first_response": 240, "next_response": 480, "resolution": 2700},
                "low": {"resolution": 5400},
            },
            "calendar": calendar(**extra).model_dump(by_alias=True),
        }
    )


def created(when: dt.datetime, priority: str = "urgent") -> Event:
    return Event(when, "created", {"status": "new", "priority": priority})


def comment(when: dt.datetime, author: str = "agent", visibility: str = "public") -> Event:
    return Event(when, "commented", {"author": author, "visibility": visibility, "body": "..."})


def status(when: dt.datetime, before: str, after: str) -> Event:
    return Event(when, "status_changed", {"from": before, "to": after})


def test_business_time_skips_nights_weekends_and_holidays() -> None:
    cal = calendar()
    assert business_seconds(cal, at(4, "17:00"), at(7, "10:00")) == 2 * 3600
    assert business_seconds(cal, at(4, "19:00"), at(7, "08:00")) == 0
    holiday = calendar(holidays=[{"date": "2026-12-07", "name": "bank holiday"}])
    assert business_seconds(holiday, at(4, "17:00"), at(8, "10:00")) == 2 * 3600
    assert add_business(cal, at(4, "17:30"), 3600) == at(7, "09:30")
    assert add_business(holiday, at(4, "17:30"), 3600) == at(8, "09:30")
    # A 调休 Saturday works: its hours count.
    swapped = calendar(open_days=[{"date": "2026-12-05", "hours": [["09:00", "12:00"]]}])
    assert add_business(swapped, at(4, "17:30"), 3600) == at(5, "09:30")
    # Moments in another zone are read in the calendar's zone (01:00 UTC is 09:00 in Shanghai).
    assert business_seconds(cal, dt.datetime(2026, 12, 7, 1, 0, tzinfo=dt.UTC), at(7, "09:30")) == 1800
    closed = Calendar(name="never", timezone="UTC")
    assert add_business(closed, at(4, "10:00"), 60) is None


def test_first_response_runs_warns_and_breaches_over_a_weekend_and_a_holiday() -> None:
    p = policy(holidays=[{"date": "2026-12-07", "name": "bank holiday"}])
    history = [created(at(4, "17:50"))]  # Friday, 10 business minutes before closing
    sla = compute(p, history, at(4, "17:55"))
    first = sla.first_response
    assert first is not None and first.state == "running" and first.used_minutes == 5
    assert first.due_at == at(8, "09:20")  # weekend and Monday's holiday skipped
    sla = compute(p, history, at(8, "09:10"))  # 20 of 30 minutes: 67 %
    assert sla.first_response is not None and sla.first_response.state == "running"
    sla = compute(p, history, at(8, "09:15"))  # 25 of 30: past 80 %
    assert sla.first_response is not None and sla.first_response.state == "warning"
    assert sla.state == "warning"
    sla = compute(p, history, at(8, "09:25"))
    first = sla.first_response
    assert first is not None and first.state == "breached" and sla.state == "breached"
    assert first.due_at == at(8, "09:20") and first.remaining_minutes == -5 and first.met_at is None


def test_only_a_public_agent_comment_is_a_response() -> None:
    history = [
        created(at(7, "09:00")),
        comment(at(7, "09:05"), "agent", "internal"),
        comment(at(7, "09:10"), "customer"),
        comment(at(7, "09:20"), "agent"),
    ]
    first = compute(policy(), history, at(7, "12:00")).first_response
    assert first is not None and first.state == "met" and first.met_at == at(7, "09:20")
    assert first.used_minutes == 20 and first.due_at is None
    late = compute(policy(), [created(at(7, "09:00")), comment(at(7, "09:45"))], at(7, "12:00"))
    assert late.first_response is not None and late.first_response.state == "breached"
    assert late.first_response.met_at == at(7, "09:45") and late.first_response.due_at == at(7, "09:30")


def test_pending_pauses_every_clock() -> None:
    history = [created(at(7, "09:00")), status(at(7, "09:10"), "new", "pending")]
    sla = compute(policy(), history, at(7, "17:00"))
    assert sla.first_response is not None and sla.first_response.state == "paused"
    assert sla.first_response.used_minutes == 10 and sla.first_response.due_at is None
    assert sla.resolution is not None and sla.resolution.state == "paused" and sla.state == "paused"
    history.append(status(at(7, "11:00"), "pending", "open"))
    sla = compute(policy(), history, at(7, "11:10"))
    assert sla.first_response is not None and sla.first_response.used_minutes == 20
    assert sla.first_response.due_at == at(7, "11:20")
    assert sla.resolution is not None and sla.resolution.used_minutes == 20


def test_next_response_cycles() -> None:
    history = [
        created(at(7, "09:00")),
        comment(at(7, "09:05")),
        comment(at(7, "10:00"), "customer"),
        comment(at(7, "10:20"), "customer"),  # still waiting: does not restart the clock
        comment(at(7, "10:40")),
    ]
    sla = compute(policy(), history, at(7, "10:50"))
    nxt = sla.next_response
    assert nxt is not None and nxt.state == "met" and nxt.used_minutes == 40
    assert nxt.started_at == at(7, "10:00")
    history.append(comment(at(7, "11:00"), "customer"))
    nxt = compute(policy(), history, at(7, "12:00")).next_response
    assert nxt is not None and nxt.state == "running" and nxt.due_at == at(7, "13:00")
    nxt = compute(policy(), history, at(7, "14:00")).next_response
    assert nxt is not None and nxt.state == "breached" and nxt.due_at == at(7, "13:00")
    # Before the first response, a customer's message is covered by the first response.
    early = [created(at(7, "09:00")), comment(at(7, "09:01"), "customer")]
    assert compute(policy(), early, at(7, "09:02")).next_response is None


def test_resolution_is_met_on_resolve_and_resumes_on_reopen() -> None:
    history = [created(at(7, "09:00")), comment(at(7, "09:05")), status(at(7, "10:00"), "open", "resolved")]
    res = compute(policy(), history, at(7, "17:00")).resolution
    assert res is not None and res.state == "met" and res.used_minutes == 60
    history.append(status(at(8, "09:00"), "resolved", "open"))
    res = compute(policy(), history, at(8, "10:00")).resolution
    assert res is not None and res.state == "running" and res.met_at is None
    assert res.used_minutes == 120 and res.due_at == at(8, "16:00")  # 480 - 120 = 360 minutes left
    res = compute(policy(), history, at(8, "17:00")).resolution
    assert res is not None and res.state == "breached" and res.due_at == at(8, "16:00")


def test_priority_changes_and_priorities_without_targets() -> None:
    history = [created(at(7, "09:00"), "normal")]
    sla = compute(policy(), history, at(7, "10:00"))
    assert sla.priority == "normal" and sla.state == "running"
    history.append(Event(at(7, "10:00"), "priority_changed", {"from": "normal", "to": "urgent"}))
    sla = compute(policy(), history, at(7, "10:00"))
    assert sla.priority == "urgent" and sla.state == "breached"  # 60 minutes against urgent's 30
    low = compute(policy(), [created(at(7, "09:00"), "low")], at(7, "10:00"))
    assert low.first_response is None and low.resolution is not None and low.state == "running"
    high = compute(policy(), [created(at(7, "09:00"), "high")], at(7, "10:00"))
    assert high.state is None and high.resolution is None


def test_a_clock_set_before_later_events_ignores_them() -> None:
    history = [created(at(7, "09:00")), comment(at(7, "09:40"))]
    first = compute(policy(), history, at(7, "09:35")).first_response
    assert first is not None and first.state == "breached" and first.met_at is None


def test_a_history_starts_with_its_creation() -> None:
    with pytest.raises(ValueError, match="created"):
        compute(policy(), [comment(at(7, "09:00"))], at(7, "10:00"))
