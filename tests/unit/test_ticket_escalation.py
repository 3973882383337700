"""SLA escalations (appliance/tickets/escalation.py): the pure decision in a simulated clock (business
hours, pending, met targets, each transition once, next-response cycles, the policy's rules), and the
watcher's pass on a real PostgreSQL of its own (tickets back-dated through their created event):
`escalated` events, the priority raised once, notifications read through the API, a second pass and two
concurrent passes that escalate nothing more, the figures for Prometheus."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg.types.json import Jsonb

from aicc.appliance.api.config import AppConfig
from aicc.appliance.ivr.calendar import Calendar
from aicc.appliance.tickets.escalation import (
    LOCK_KEY,
    EscalationWatcher,
    Key,
    TicketMetrics,
    actions_for,
    decide,
    escalate_once,
    escalation_key,
    notification_text,
)
from aicc.appliance.tickets.sla import Event, SlaPolicy
from tests.unit.api_support import (
    ApiDatabase,
    ApiUser,
    api_db_fixture,  # noqa: F401
    audit_since,
    fresh_database,
    last_audit_id,
    make_user,
    open_api,
)

SH = ZoneInfo("Asia/Shanghai")
HOURS = [["09:00", "18:00"]]


def at(day: int, clock: str) -> dt.datetime:
    """A moment in December 2026, China time (Fri 4th, Sat 5th, Sun 6th, Mon 7th, Tue 8th)."""
    hours, minutes = (int(x) for x in clock.split(":"))
    return dt.datetime(2026, 12, day, hours, minutes, tzinfo=SH)


def policy(**extra: Any) -> SlaPolicy:
    weekly = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), HOURS)
    calendar = Calendar.model_validate({"name": "office", "timezone": "Asia/Shanghai", "weekly": weekly})
    return SlaPolicy.model_validate(
        {
            "name": "default",
            "targets": {
                "urgent": {"first_response": 30, "next_response": 120, "resolution": 480},
                "high": {"first_response": 60, "next_response": 240, "resolution": 1080},
                "normal": {"first_response": 240, "next_response": 480, "resolution": 2700},
            },
            "calendar": calendar.model_dump(by_alias=True),
            **extra,
        }
    )


def created(when: dt.datetime, priority: str = "urgent") -> Event:
    return Event(when, "created", {"status": "new", "priority": priority})


def comment(when: dt.datetime, author: str = "agent") -> Event:
    return Event(when, "commented", {"author": author, "visibility": "public", "body": "..."})


def status(when: dt.datetime, before: str, after: str) -> Event:
    return Event(when, "status_changed", {"from": before, "to": after})


def kinds(decisions: list[Any]) -> list[tuple[str, str]]:
    return [(d.target, d.state) for d in decisions]


# The pure decision -------------------------------------------------------------------------------------


def test_a_friday_evening_ticket_breaches_on_monday_morning_not_friday_night() -> None:
    p = policy()
    history = [created(at(4, "17:50"))]  # urgent: 30 business minutes, 10 of them on Friday
    assert decide(p, history, at(4, "18:20")) == []  # the office is closed: 10 minutes used
    assert decide(p, history, at(6, "23:59")) == []
    assert decide(p, history, at(7, "09:13")) == []  # 23 of 30 minutes: under 80 %
    [warning] = decide(p, history, at(7, "09:15"))
    assert (warning.target, warning.state, warning.actions) == (
        "first_response",
        "warning",
        ("notify_assignee",),
    )
    assert warning.due_at == at(7, "09:20")
    done: set[Key] = {warning.key}
    assert decide(p, history, at(7, "09:19"), done) == []
    [breach] = decide(p, history, at(7, "09:21"), done)
    assert (breach.target, breach.state) == ("first_response", "breached")
    assert breach.actions == ("notify_supervisors", "raise_priority")
    assert breach.due_at == at(7, "09:20")  # Monday 09:20, not Friday 18:20
    assert breach.cycle == at(4, "17:50")


def test_a_pending_ticket_does_not_escalate_and_its_clock_resumes_where_it_stood() -> None:
    p = policy()
    history = [created(at(7, "09:00")), status(at(7, "09:10"), "new", "pending")]
    assert decide(p, history, at(7, "17:00")) == []  # 10 minutes used, then paused all day
    history.append(status(at(8, "09:00"), "pending", "open"))
    assert decide(p, history, at(8, "09:13")) == []  # 23 minutes
    assert kinds(decide(p, history, at(8, "09:15"))) == [("first_response", "warning")]
    [breach] = decide(
        p, history, at(8, "09:25"), {escalation_key("first_response", "warning", at(7, "09:00"))}
    )
    assert breach.state == "breached" and breach.due_at == at(8, "09:20")
    # Breached, then pending: nothing escalates while the customer is awaited.
    history.append(status(at(8, "09:30"), "open", "pending"))
    assert decide(p, history, at(8, "12:00")) == []


def test_a_met_target_never_escalates_even_met_late() -> None:
    p = policy()
    on_time = [created(at(7, "09:00")), comment(at(7, "09:05"))]
    assert decide(p, on_time, at(7, "10:00")) == []
    late = [created(at(7, "09:00")), comment(at(7, "09:45"))]  # breached at 09:30, answered after
    assert decide(p, late, at(7, "10:00")) == []
    resolved = [created(at(7, "09:00")), comment(at(7, "09:05")), status(at(7, "09:06"), "open", "resolved")]
    assert decide(p, resolved, at(8, "18:00")) == []


def test_each_transition_escalates_once_and_the_priority_rises_once() -> None:
    """A watcher every 5 minutes for a week over a normal ticket nobody answers: what it applies is
    appended to the history, as the real one does."""
    p = policy()
    history = [created(at(4, "10:00"), "normal")]
    seen: list[tuple[str, str]] = []
    priority = "normal"
    now = at(4, "10:00")
    while now < at(11, "18:00"):
        for d in decide(p, history, now):
            seen.append((d.target, d.state))
            change = None
            if "raise_priority" in d.actions and priority != "urgent":
                step = {"normal": "high", "high": "urgent"}[priority]
                history.append(Event(now, "priority_changed", {"from": priority, "to": step}))
                change, priority = {"from": priority, "to": step}, step
            data = {"target": d.target, "state": d.state, "cycle": d.key[2], "priority": change}
            history.append(Event(now, "escalated", data))
        now += dt.timedelta(minutes=5)
    assert seen == [
        ("first_response", "warning"),
        ("first_response", "breached"),
        ("resolution", "warning"),
        ("resolution", "breached"),
    ]
    assert priority == "high", "raised once, at the first breach"
    assert [e.kind for e in history].count("priority_changed") == 1


def test_each_next_response_cycle_escalates_on_its_own() -> None:
    p = policy(escalations=[{"on": "breached", "target": "next_response", "actions": ["notify_group"]}])
    history = [created(at(7, "09:00")), comment(at(7, "09:05")), comment(at(7, "10:00"), "customer")]
    [first] = decide(p, history, at(7, "12:05"))  # 120 minutes from 10:00
    assert (first.target, first.state, first.cycle) == ("next_response", "breached", at(7, "10:00"))
    history += [Event(at(7, "12:05"), "escalated", {"target": "next_response", "state": "breached",
                                                     "cycle": first.key[2]})]  # fmt: skip
    assert decide(p, history, at(7, "12:10")) == []
    history += [comment(at(7, "12:30")), comment(at(7, "13:00"), "customer")]
    [second] = decide(p, history, at(7, "15:05"))
    assert second.cycle == at(7, "13:00") and second.key != first.key


def test_the_policys_rules_choose_the_actions() -> None:
    p = policy(
        escalations=[
            {
                "on": "breached",
                "target": "resolution",
                "actions": [{"assign_group": "managers"}, "notify_group"],
            },
            {"on": "breached", "target": "any", "actions": ["notify_group", "notify_supervisors"]},
            {"on": "warning", "target": "first_response", "actions": ["notify_assignee"]},
        ]
    )
    assert [str(a) for a in actions_for(p, "breached", "resolution")] == [
        "assign_group='managers'",
        "notify_group",
        "notify_supervisors",
    ]
    assert actions_for(p, "breached", "first_response") == ("notify_group", "notify_supervisors")
    assert actions_for(p, "warning", "resolution") == ()
    # No rule for a resolution warning: nothing to escalate, nothing recorded.
    history = [created(at(7, "09:00"), "urgent"), comment(at(7, "09:05"))]
    assert decide(p, history, at(7, "16:00")) == []  # resolution at 7 of 8 hours: warning
    assert decide(policy(escalations=[]), [created(at(7, "09:00"))], at(8, "18:00")) == []


def test_bad_rules_are_refused_naming_the_action() -> None:
    from pydantic import ValidationError

    for bad, where in (
        ([{"on": "breached", "actions": ["call_the_boss"]}], ("escalations", 0, "actions", 0)),
        ([{"on": "breached", "actions": [{"assign_group": "Bad Name"}]}], ("escalations", 0, "actions", 0)),
        ([{"on": "late", "actions": ["notify_group"]}], ("escalations", 0, "on")),
        ([{"on": "warning", "actions": []}], ("escalations", 0, "actions")),
    ):
        with pytest.raises(ValidationError) as caught:
            policy(escalations=bad)
        assert where in [e["loc"] for e in caught.value.errors()], caught.value


def test_notifications_are_worded_in_both_languages_in_the_policys_zone() -> None:
    data = {"number": "T-000042", "subject": "卡被冻结", "target": "first_response", "due_at":
            "2026-12-07T01:20:00+00:00", "timezone": "Asia/Shanghai"}  # fmt: skip
    assert notification_text("sla_breached", data) == {
        "zh": "工单 T-000042 首次响应已超时（截止 2026-12-07 09:20）：卡被冻结",
        "en": "T-000042: first response overdue since 2026-12-07 09:20 - 卡被冻结",
    }
    assert notification_text("sla_warning", data)["en"].startswith("T-000042: first response due soon, by")


def test_the_watcher_interval_is_a_setting() -> None:
    config = AppConfig.model_validate(
        {"database_dsn_file": "/x", "secret_key_file": "/y", "public_url": "https://aicc.test"}
    )
    assert config.ticket_escalation_interval_s == 30


# The watcher on PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db(api_db: ApiDatabase) -> ApiDatabase:
    """A database of its own: passes escalate every running ticket, and policies change here."""
    return fresh_database(api_db, "ticket_escalation")


@pytest.fixture(scope="module")
def people(db: ApiDatabase) -> dict[str, ApiUser]:
    people = {
        "agent": make_user(db, "agent", username="esc-agent"),
        "colleague": make_user(db, "agent", username="esc-colleague"),
        "lead": make_user(db, "supervisor", username="esc-lead"),  # the cards group's supervisor
        "other-lead": make_user(db, "supervisor", username="esc-other-lead"),
        "admin": make_user(db, "admin", username="esc-admin"),
        "auditor": make_user(db, "auditor", username="esc-auditor"),
    }
    with psycopg.connect(db.dsn) as conn:
        for who in ("colleague", "lead"):
            conn.execute(
                "INSERT INTO aicc.ticket_group_members (\"group\", user_id) VALUES ('cards', %s)",
                (people[who].id,),
            )
    return people


@pytest.fixture(autouse=True)
def _one_test_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every pass sees every running ticket: close the ones an earlier test left."""
    yield
    if "db" in request.fixturenames:
        db: ApiDatabase = request.getfixturevalue("db")
        with psycopg.connect(db.dsn) as conn:
            conn.execute("UPDATE aicc.tickets SET status = 'closed' WHERE status <> 'closed'")


def backdated(
    db: ApiDatabase,
    *,
    priority: str = "high",
    assignee: int | None = None,
    group: str = "cards",
    policy_name: str = "default",
    when: str = "2020-01-06 09:00+08",  # a Monday
) -> str:
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute(
            "INSERT INTO aicc.tickets (subject, priority, source, sla_policy, created_by, created_at, "
            '"group", assignee) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id, number',
            ("Card blocked", priority, "api", policy_name, "test", when, group, assignee),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO aicc.ticket_events (ticket_id, at, kind, actor, data) "
            "VALUES (%s, %s, 'created', 'test', %s)",
            (
                row[0],
                when,
                Jsonb({"status": "new", "priority": priority, "group": group, "assignee": assignee}),
            ),
        )
    return str(row[1])


def china(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=SH)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def mine(result: Any, number: str) -> list[tuple[str, str, list[str]]]:
    return [(e["target"], e["state"], e["actions"]) for e in result.escalations if e["number"] == number]


@pytest.mark.asyncio
async def test_a_pass_escalates_notifies_and_raises_the_priority_once(
    db: ApiDatabase, people: dict[str, ApiUser]
) -> None:
    agent, lead = people["agent"], people["lead"]
    number = backdated(db, assignee=agent.id)  # high: first response 60 min, resolution 18 h
    before = last_audit_id(db)
    async with open_api(db, people) as api:
        registry = CollectorRegistry()
        metrics = TicketMetrics(registry)
        result = await escalate_once(api.pool, now=china("2020-01-06 09:50"), metrics=metrics)
        assert mine(result, number) == [("first_response", "warning", ["notify_assignee"])]
        assert sample(registry, "aicc_tickets_sla_warning") == 1
        assert sample(registry, "aicc_tickets_sla_breached") == 0
        assert sample(registry, "aicc_tickets_open", priority="high") == 1
        assert sample(registry, "aicc_tickets_open", priority="low") == 0
        again = await escalate_once(api.pool, now=china("2020-01-06 09:55"), metrics=metrics)
        assert again.escalations == [] and not again.skipped, "a second pass does nothing"

        result = await escalate_once(api.pool, now=china("2020-01-06 10:05"), metrics=metrics)
        assert mine(result, number) == [
            ("first_response", "breached", ["notify_supervisors", "raise_priority"])
        ]
        assert sample(registry, "aicc_tickets_sla_breached") == 1
        assert sample(registry, "aicc_tickets_sla_warning") == 0
        assert sample(registry, "aicc_ticket_escalations_total", action="raise_priority") == 1
        assert sample(registry, "aicc_ticket_escalations_total", action="notify_assignee") == 1
        assert sample(registry, "aicc_ticket_escalations_total", action="assign_group") == 0

        r = await api.client.get(f"/api/tickets/{number}", headers=agent.headers)
        assert r.json()["priority"] == "urgent"  # high -> urgent
        r = await api.client.get(f"/api/tickets/{number}/events", headers=people["auditor"].headers)
        events = r.json()
        escalations = [e for e in events if e["kind"] == "escalated"]
        assert [(e["data"]["target"], e["data"]["state"], e["actor"]) for e in escalations] == [
            ("first_response", "warning", "sla"),
            ("first_response", "breached", "sla"),
        ]
        assert escalations[0]["data"]["notified"] == [agent.id]
        assert escalations[1]["data"]["notified"] == [lead.id], "the group's supervisor, not every one"
        assert escalations[1]["data"]["priority"] == {"from": "high", "to": "urgent"}
        assert escalations[1]["data"]["due_at"] == "2020-01-06T02:00:00+00:00"  # 10:00 in Shanghai
        [raised] = [e for e in events if e["kind"] == "priority_changed"]
        assert raised["actor"] == "sla" and raised["data"] == {"from": "high", "to": "urgent"}

        # Urgent now: resolution 8 h. It warns, then breaches; the priority rises no more.
        await escalate_once(api.pool, now=china("2020-01-06 16:00"))
        result = await escalate_once(api.pool, now=china("2020-01-06 17:05"))
        assert mine(result, number) == [("resolution", "breached", ["notify_supervisors"])]
        r = await api.client.get(f"/api/tickets/{number}/events", headers=agent.headers)
        assert [e["kind"] for e in r.json()].count("priority_changed") == 1
        assert [e["kind"] for e in r.json()].count("escalated") == 4

        r = await api.client.get("/api/notifications", headers=agent.headers)
        assert r.status_code == 200, r.text
        assert [(n["kind"], n["ticket"], n["data"]["target"]) for n in r.json()] == [
            ("sla_warning", number, "resolution"),
            ("sla_warning", number, "first_response"),
        ]
        assert (
            r.json()[1]["text"]["zh"]
            == f"工单 {number} 首次响应即将超时（截止 2020-01-06 10:00）：Card blocked"
        )
        oldest = r.json()[1]["id"]
        r = await api.client.post(f"/api/notifications/{oldest}/read", headers=agent.headers)
        assert r.status_code == 200 and r.json()["read_at"] is not None
        r = await api.client.get("/api/notifications", headers=agent.headers)
        assert [n["read_at"] is None for n in r.json()] == [True, False], "unread first"
        r = await api.client.get("/api/notifications", params={"unread": "true"}, headers=agent.headers)
        assert len(r.json()) == 1
        # Someone else's notification is not found, and the auditor has none to read.
        r = await api.client.post(f"/api/notifications/{oldest}/read", headers=lead.headers)
        assert r.status_code == 404
        assert (
            await api.client.get("/api/notifications", headers=people["auditor"].headers)
        ).status_code == 403

        r = await api.client.get("/api/notifications", headers=lead.headers)
        assert [(n["kind"], n["data"]["target"]) for n in r.json()] == [
            ("sla_breached", "resolution"),
            ("sla_breached", "first_response"),
        ]
        r = await api.client.get("/api/notifications", headers=people["other-lead"].headers)
        assert r.json() == [], "the cards group has a supervisor of its own"
    actions = [(e["action"], e["actor"]) for e in audit_since(db, before)]
    assert actions == [("ticket.escalate", "sla")] * 4


@pytest.mark.asyncio
async def test_an_unassigned_ticket_warns_its_group_and_a_pending_one_nobody(
    db: ApiDatabase, people: dict[str, ApiUser]
) -> None:
    free = backdated(db)
    waiting = backdated(db)
    with psycopg.connect(db.dsn) as conn:
        conn.execute("UPDATE aicc.tickets SET status = 'pending' WHERE number = %s", (waiting,))
        conn.execute(
            "INSERT INTO aicc.ticket_events (ticket_id, at, kind, actor, data) SELECT id, "
            "'2020-01-06 09:10+08', 'status_changed', 'test', '{\"from\": \"new\", \"to\": \"pending\"}' "
            "FROM aicc.tickets WHERE number = %s",
            (waiting,),
        )
    async with open_api(db, people) as api:
        result = await escalate_once(api.pool, now=china("2020-01-06 09:50"))
        assert mine(result, free) == [("first_response", "warning", ["notify_assignee"])]
        assert mine(result, waiting) == []
        r = await api.client.get(f"/api/tickets/{free}/events", headers=people["agent"].headers)
        [escalated] = [e for e in r.json() if e["kind"] == "escalated"]
        assert escalated["data"]["notified"] == [people["colleague"].id, people["lead"].id]
        r = await api.client.get("/api/notifications", headers=people["colleague"].headers)
        assert free in [n["ticket"] for n in r.json()]


@pytest.mark.asyncio
async def test_two_passes_at_once_escalate_once(db: ApiDatabase, people: dict[str, ApiUser]) -> None:
    number = backdated(db, assignee=people["agent"].id)
    now = china("2020-01-06 10:05")
    async with open_api(db, people) as api:
        # Another API host's pass holds the lock: this one computes its figures and escalates nothing.
        with psycopg.connect(db.dsn) as other:
            other.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            held = await escalate_once(api.pool, now=now)
            assert held.skipped and held.escalations == [] and held.breached == 1
        first, second = await asyncio.gather(
            escalate_once(api.pool, now=now), escalate_once(api.pool, now=now)
        )
        assert len(mine(first, number) + mine(second, number)) == 1
        r = await api.client.get(f"/api/tickets/{number}/events", headers=people["agent"].headers)
        assert [e["kind"] for e in r.json()].count("escalated") == 1
        assert [e["kind"] for e in r.json()].count("priority_changed") == 1
    # The database itself refuses a second record of the same transition.
    with psycopg.connect(db.dsn) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO aicc.ticket_events (ticket_id, kind, actor, data) "
            "SELECT ticket_id, kind, actor, data FROM aicc.ticket_events WHERE kind = 'escalated' "
            "AND ticket_id = (SELECT id FROM aicc.tickets WHERE number = %s)",
            (number,),
        )


@pytest.mark.asyncio
async def test_a_policys_own_rules_and_ticket_groups_through_the_api(
    db: ApiDatabase, people: dict[str, ApiUser]
) -> None:
    admin = people["admin"].headers
    async with open_api(db, people) as api:
        r = await api.client.get("/api/sla-policies/default", headers=admin)
        default = r.json()
        assert default["escalations"] == [
            {"on": "warning", "target": "any", "actions": ["notify_assignee"]},
            {"on": "breached", "target": "any", "actions": ["notify_supervisors", "raise_priority"]},
        ]
        rules = [
            {
                "on": "breached",
                "target": "first_response",
                "actions": [{"assign_group": "managers"}, "notify_group"],
            }
        ]
        policy = {**default, "name": "vip", "escalations": rules}
        for bad, field in (
            ([{"on": "breached", "actions": ["call_the_boss"]}], "escalations[0].actions[0]"),
            (
                [{"on": "breached", "actions": ["notify_group", {"assign_group": "no way"}]}],
                "escalations[0].actions[1]",
            ),
            ([{"on": "soon", "actions": ["notify_group"]}], "escalations[0].on"),
        ):
            r = await api.client.put(
                "/api/sla-policies/vip", json={**policy, "escalations": bad}, headers=admin
            )
            assert r.status_code == 422, r.text
            assert field in [p["field"] for p in r.json()["error"]["problems"]], r.text
        r = await api.client.put("/api/sla-policies/vip", json=policy, headers=admin)
        assert r.status_code == 200, r.text
        assert (await api.client.get("/api/sla-policies/vip", headers=admin)).json()["escalations"] == rules

        members = {"members": [people["other-lead"].id, people["agent"].id]}
        r = await api.client.put(
            "/api/ticket-groups/managers/members", json=members, headers=people["agent"].headers
        )
        assert r.status_code == 403
        bad_members = {"members": [people["agent"].id, people["auditor"].id]}
        r = await api.client.put("/api/ticket-groups/managers/members", json=bad_members, headers=admin)
        assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "members[1]"
        before = last_audit_id(db)
        r = await api.client.put("/api/ticket-groups/managers/members", json=members, headers=admin)
        assert r.status_code == 200 and r.json() == {
            "group": "managers",
            "members": sorted([people["other-lead"].id, people["agent"].id]),
        }
        [entry] = audit_since(db, before)
        assert (entry["action"], entry["target_id"], entry["before"]) == (
            "ticket_group.put",
            "managers",
            {"members": []},
        )
        r = await api.client.get("/api/ticket-groups", headers=people["auditor"].headers)
        assert {g["group"] for g in r.json()} == {"cards", "managers"}

        number = backdated(db, policy_name="vip", priority="urgent")
        result = await escalate_once(api.pool, now=china("2020-01-06 09:40"))
        assert mine(result, number) == [("first_response", "breached", ["assign_group", "notify_group"])]
        r = await api.client.get(f"/api/tickets/{number}", headers=admin)
        assert r.json()["group"] == "managers" and r.json()["priority"] == "urgent"
        r = await api.client.get(f"/api/tickets/{number}/events", headers=admin)
        [moved] = [e for e in r.json() if e["kind"] == "group_changed"]
        assert moved["actor"] == "sla" and moved["data"] == {"from": "cards", "to": "managers"}
        [escalated] = [e for e in r.json() if e["kind"] == "escalated"]
        assert sorted(escalated["data"]["notified"]) == sorted(members["members"]), "the new group's members"
        # The warning had no rule here: nothing was recorded for it.
        assert escalated["data"]["state"] == "breached"


@pytest.mark.asyncio
async def test_the_watcher_runs_passes_until_closed(db: ApiDatabase, people: dict[str, ApiUser]) -> None:
    number = backdated(db, assignee=people["agent"].id)
    async with open_api(db, people) as api:
        registry = CollectorRegistry()
        watcher = EscalationWatcher(api.pool, 0.05, TicketMetrics(registry))
        await watcher.start()
        try:
            for _ in range(200):
                if sample(registry, "aicc_ticket_escalations_total", action="raise_priority"):
                    break
                await asyncio.sleep(0.05)
        finally:
            await watcher.close()
        r = await api.client.get(f"/api/tickets/{number}/events", headers=people["agent"].headers)
        assert "escalated" in [e["kind"] for e in r.json()]  # long breached by the wall clock
        assert sample(registry, "aicc_tickets_sla_breached") == 1
