"""The tickets API on a real PostgreSQL: a ticket from a call, the first response met, an SLA breach
from a back-dated history (the figures come from the event log, so back-dating the log is the
simulated clock), the lifecycle to closed with the customer's confirmation, masking per role, 422s
that name the field, the audit trail, and SLA policies."""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.unit.api_support import (
    Api,
    api_db_fixture,  # noqa: F401
    api_fixture,  # noqa: F401
    api_users_fixture,  # noqa: F401
    audit_since,
    last_audit_id,
)

PHONE = "13800138000"


async def _create(api: Api, who: str = "agent", **fields: Any) -> dict[str, Any]:
    body = {"subject": "Card blocked", "source": "call", "call_id": "call-1", "customer": {"phone": PHONE}}
    r = await api.client.post("/api/tickets", json={**body, **fields}, headers=api.auth(who))
    assert r.status_code == 201, r.text
    ticket: dict[str, Any] = r.json()
    return ticket


@pytest.mark.asyncio
async def test_a_ticket_from_a_call_and_its_first_response(api: Api) -> None:
    before = last_audit_id(api.db)
    ticket = await _create(api, priority="urgent", group="cards", language="zh")
    number = ticket["number"]
    assert re.fullmatch(r"T-\d{6}", number)
    assert ticket["status"] == "new" and ticket["source"] == "call" and ticket["call_id"] == "call-1"
    assert ticket["customer"]["phone"] == "138****8000"  # agents do not hold numbers.full
    assert ticket["created_by"] == api.users["agent"].username
    first = ticket["sla"]["first_response"]
    assert first["target_minutes"] == 30 and first["met_at"] is None
    assert first["state"] in ("running", "warning", "breached")
    [entry] = audit_since(api.db, before)
    assert (entry["action"], entry["target_id"], entry["actor"]) == ("ticket.create", number, "std-agent")

    r = await api.client.post(
        f"/api/tickets/{number}/comments",
        json={"body": "looking", "visibility": "internal"},
        headers=api.auth("agent"),
    )
    assert r.status_code == 201 and r.json()["status"] == "new"  # a note answers no one
    assert r.json()["sla"]["first_response"]["met_at"] is None
    r = await api.client.post(
        f"/api/tickets/{number}/comments", json={"body": "unblocked"}, headers=api.auth("agent")
    )
    assert r.status_code == 201, r.text
    answered = r.json()
    assert answered["status"] == "open"  # the first public reply opens a new ticket
    assert answered["sla"]["first_response"]["met_at"] is not None
    assert answered["sla"]["first_response"]["state"] in ("met", "breached")

    r = await api.client.get(f"/api/tickets/{number}/events", headers=api.auth("auditor"))
    assert r.status_code == 200
    kinds = [e["kind"] for e in r.json()]
    assert kinds == ["created", "commented", "commented", "status_changed"]
    assert r.json()[3]["data"] == {"from": "new", "to": "open"}
    actions = [e["action"] for e in audit_since(api.db, before)]
    assert actions == ["ticket.create", "ticket.comment", "ticket.comment"]


@pytest.mark.asyncio
async def test_numbers_are_masked_per_role(api: Api) -> None:
    number = (await _create(api))["number"]
    for role, shown in (("agent", "138****8000"), ("supervisor", "138****8000"), ("auditor", "138****8000")):
        r = await api.client.get(f"/api/tickets/{number}", headers=api.auth(role))
        assert r.status_code == 200 and r.json()["customer"]["phone"] == shown, role
    r = await api.client.get(f"/api/tickets/{number}", headers=api.auth("admin"))
    assert r.json()["customer"]["phone"] == PHONE
    r = await api.client.get("/api/tickets", params={"phone": PHONE}, headers=api.auth("agent"))
    assert number in [t["number"] for t in r.json()]
    assert {t["customer"]["phone"] for t in r.json()} == {"138****8000"}


def _backdated_ticket(api: Api) -> str:
    """An urgent ticket created Monday 6 January 2020 09:00 China time that nobody answered."""
    with psycopg.connect(api.db.dsn) as conn:
        row = conn.execute(
            "INSERT INTO aicc.tickets (subject, priority, source, sla_policy, created_by, created_at, "
            "customer) VALUES ('old', 'urgent', 'api', 'default', 'test', '2020-01-06 09:00+08', %s) "
            "RETURNING id, number",
            (Jsonb({"phone": PHONE}),),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO aicc.ticket_events (ticket_id, at, kind, actor, data) "
            "VALUES (%s, '2020-01-06 09:00+08', 'created', 'test', %s)",
            (row[0], Jsonb({"status": "new", "priority": "urgent"})),
        )
    return str(row[1])


@pytest.mark.asyncio
async def test_an_sla_breach_from_the_event_log(api: Api) -> None:
    number = _backdated_ticket(api)
    r = await api.client.get(f"/api/tickets/{number}", headers=api.auth("supervisor"))
    sla = r.json()["sla"]
    assert sla["state"] == "breached" and sla["priority"] == "urgent"
    assert sla["first_response"]["state"] == "breached"
    assert sla["first_response"]["due_at"] == "2020-01-06T01:30:00Z"  # 09:30 in Shanghai
    assert sla["resolution"]["due_at"] == "2020-01-06T09:00:00Z"  # 8 business hours: 17:00
    r = await api.client.get(
        "/api/tickets", params={"sla": "breached", "limit": 1000}, headers=api.auth("agent")
    )
    assert r.status_code == 200 and number in [t["number"] for t in r.json()]
    assert {t["sla"]["state"] for t in r.json()} == {"breached"}
    r = await api.client.get(
        "/api/tickets", params={"sla": "warning", "limit": 1000}, headers=api.auth("agent")
    )
    assert number not in [t["number"] for t in r.json()]
    # Pending stops the clock: the ticket stays breached (time used does not shrink) but runs no more.
    r = await api.client.patch(
        f"/api/tickets/{number}", json={"status": "pending"}, headers=api.auth("agent")
    )
    assert r.status_code == 200 and r.json()["sla"]["first_response"]["state"] == "breached"
    used = r.json()["sla"]["resolution"]["used_minutes"]
    r = await api.client.get(f"/api/tickets/{number}", headers=api.auth("agent"))
    assert r.json()["sla"]["resolution"]["used_minutes"] == used


@pytest.mark.asyncio
async def test_pending_pauses_a_running_clock(api: Api) -> None:
    number = (await _create(api, priority="low"))["number"]
    r = await api.client.patch(
        f"/api/tickets/{number}", json={"status": "pending"}, headers=api.auth("agent")
    )
    assert r.status_code == 200
    sla = r.json()["sla"]
    assert sla["state"] == "paused" and sla["first_response"]["due_at"] is None


@pytest.mark.asyncio
async def test_the_lifecycle_to_closed_needs_the_customers_confirmation(api: Api) -> None:
    agent = api.auth("agent")
    number = (await _create(api))["number"]
    url = f"/api/tickets/{number}"
    r = await api.client.patch(url, json={"status": "closed"}, headers=agent)
    assert r.status_code == 409 and "cannot go from new to closed" in r.json()["error"]["message"]
    r = await api.client.post(f"{url}/confirm", json={}, headers=agent)
    assert r.status_code == 409 and "resolved" in r.json()["error"]["message"]
    r = await api.client.patch(url, json={"status": "resolved"}, headers=agent)
    assert r.status_code == 200 and r.json()["sla"]["resolution"]["state"] in ("met", "breached")
    r = await api.client.patch(url, json={"status": "closed"}, headers=agent)
    assert r.status_code == 409 and "customer confirmed" in r.json()["error"]["message"]
    # The customer writes back instead: the ticket re-opens, and an old confirmation would not count.
    r = await api.client.post(
        f"{url}/comments", json={"body": "still broken", "author": "customer"}, headers=agent
    )
    assert r.status_code == 201 and r.json()["status"] == "open"
    assert r.json()["sla"]["resolution"]["met_at"] is None
    await api.client.patch(url, json={"status": "resolved"}, headers=agent)
    r = await api.client.post(f"{url}/confirm", json={"note": "by phone"}, headers=agent)
    assert r.status_code == 200
    r = await api.client.patch(url, json={"status": "open"}, headers=agent)  # re-opened after confirming
    await api.client.patch(url, json={"status": "resolved"}, headers=agent)
    r = await api.client.patch(url, json={"status": "closed"}, headers=agent)
    assert r.status_code == 409, "a confirmation counts for the resolution it followed only"
    await api.client.post(f"{url}/confirm", json={}, headers=agent)
    before = last_audit_id(api.db)
    r = await api.client.patch(url, json={"status": "closed"}, headers=agent)
    assert r.status_code == 200 and r.json()["status"] == "closed"
    [entry] = audit_since(api.db, before)
    assert entry["action"] == "ticket.update"
    assert (entry["before"]["status"], entry["after"]["status"]) == ("resolved", "closed")
    for method, path, body in (
        ("PATCH", url, {"priority": "high"}),
        ("POST", f"{url}/comments", {"body": "hello"}),
        ("POST", f"{url}/confirm", {}),
    ):
        r = await api.client.request(method, path, json=body, headers=agent)
        assert r.status_code == 409, (method, path)
    assert (await api.client.patch("/api/tickets/T-999999", json={}, headers=agent)).status_code == 404


@pytest.mark.asyncio
async def test_assignment_priority_and_group_changes(api: Api) -> None:
    number = (await _create(api))["number"]
    url = f"/api/tickets/{number}"
    agent_id = api.users["agent"].id
    r = await api.client.patch(
        url, json={"assignee": agent_id, "priority": "high", "group": "cards"}, headers=api.auth("supervisor")
    )
    assert r.status_code == 200, r.text
    assert (r.json()["assignee"], r.json()["priority"], r.json()["group"]) == (agent_id, "high", "cards")
    assert r.json()["sla"]["priority"] == "high"
    r = await api.client.get(
        "/api/tickets", params={"assignee": agent_id, "group": "cards"}, headers=api.auth("agent")
    )
    assert number in [t["number"] for t in r.json()]
    r = await api.client.patch(url, json={"assignee": None}, headers=api.auth("agent"))
    assert r.status_code == 200 and r.json()["assignee"] is None
    r = await api.client.get(f"{url}/events", headers=api.auth("agent"))
    kinds = [e["kind"] for e in r.json()]
    assert kinds.count("assigned") == 2 and "priority_changed" in kinds and "group_changed" in kinds


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"subject": ""}, "subject"),
        ({"priority": "asap"}, "priority"),
        ({"source": "fax"}, "source"),
        ({"customer": {"phone": "call me"}}, "customer.phone"),
        ({"customer": {"twitter": "@x"}}, "customer.twitter"),
        ({"colour": "red"}, "colour"),
        ({"call_id": None}, "call_id"),
        ({"sla_policy": "no-such-policy"}, "sla_policy"),
        ({"assignee": 999999}, "assignee"),
        ({"contact_id": "not-a-uuid"}, "contact_id"),
    ],
)
async def test_bad_tickets_are_refused_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    full = {"subject": "x", "source": "call", "call_id": "c-1", **body}
    r = await api.client.post("/api/tickets", json=full, headers=api.auth("agent"))
    assert r.status_code == 422, r.text
    assert field in [p["field"] for p in r.json()["error"]["problems"]], r.text


@pytest.mark.asyncio
async def test_bad_changes_comments_and_filters_name_the_field(api: Api) -> None:
    number = (await _create(api))["number"]
    agent = api.auth("agent")
    for method, path, kwargs, field in (
        ("PATCH", f"/api/tickets/{number}", {"json": {"status": None}}, "status"),
        ("PATCH", f"/api/tickets/{number}", {"json": {"status": "done"}}, "status"),
        ("PATCH", f"/api/tickets/{number}", {"json": {"assignee": 999999}}, "assignee"),
        ("POST", f"/api/tickets/{number}/comments", {"json": {"body": ""}}, "body"),
        ("POST", f"/api/tickets/{number}/comments", {"json": {"body": "x", "author": "bot"}}, "author"),
        (
            "POST",
            f"/api/tickets/{number}/comments",
            {"json": {"body": "x", "author": "customer", "visibility": "internal"}},
            "visibility",
        ),
        ("GET", "/api/tickets", {"params": {"sla": "late"}}, "query.sla"),
        ("GET", "/api/tickets", {"params": {"limit": 0}}, "query.limit"),
    ):
        r = await api.client.request(method, path, headers=agent, **kwargs)
        assert r.status_code == 422, (path, kwargs, r.text)
        assert field in [p["field"] for p in r.json()["error"]["problems"]], (path, r.text)


@pytest.mark.asyncio
async def test_who_may_do_what(api: Api) -> None:
    body = {"subject": "x", "source": "agent"}
    r = await api.client.post("/api/tickets", json=body, headers=api.auth("auditor"))
    assert r.status_code == 403 and "tickets.write" in r.json()["error"]["message"]
    assert (await api.client.get("/api/tickets", headers=api.auth("auditor"))).status_code == 200
    assert (
        await api.client.post("/api/tickets", json=body, headers=api.auth("supervisor"))
    ).status_code == 201
    r = await api.client.post(
        "/api/tickets", json={**body, "assignee": api.users["auditor"].id}, headers=api.auth("agent")
    )
    assert r.status_code == 422, "auditors work no tickets"


@pytest.mark.asyncio
async def test_the_event_log_is_append_only(api: Api) -> None:
    await _create(api)
    with psycopg.connect(api.db.dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE aicc.ticket_events SET at = now() - interval '1 day'")


@pytest.mark.asyncio
async def test_sla_policies(api: Api) -> None:
    r = await api.client.get("/api/sla-policies", headers=api.auth("agent"))
    assert r.status_code == 200
    default = next(p for p in r.json() if p["name"] == "default")
    assert default["targets"]["urgent"] == {"first_response": 30, "next_response": 120, "resolution": 480}
    assert default["calendar"]["timezone"] == "Asia/Shanghai" and default["warn_at_percent"] == 80
    policy = {**default, "name": "vip", "warn_at_percent": 50}
    policy["calendar"] = {**default["calendar"], "holidays": [{"date": "2026-10-01", "name": "国庆节"}]}
    assert (
        await api.client.put("/api/sla-policies/vip", json=policy, headers=api.auth("agent"))
    ).status_code == 403
    before = last_audit_id(api.db)
    r = await api.client.put("/api/sla-policies/vip", json=policy, headers=api.auth("admin"))
    assert r.status_code == 200, r.text
    [entry] = audit_since(api.db, before)
    assert (entry["action"], entry["target_id"], entry["before"]) == ("sla_policy.put", "vip", None)
    r = await api.client.get("/api/sla-policies/vip", headers=api.auth("auditor"))
    assert r.json()["warn_at_percent"] == 50 and r.json()["calendar"]["holidays"][0]["name"] == "国庆节"
    ticket = await _create(api, sla_policy="vip")
    assert ticket["sla"]["policy"] == "vip"
    assert (await api.client.get("/api/sla-policies/none", headers=api.auth("agent"))).status_code == 404
    for bad, field in (
        ({**policy, "name": "other"}, "name"),
        ({**policy, "warn_at_percent": 100}, "warn_at_percent"),
        ({**policy, "targets": {"urgent": {"first_response": 0}}}, "targets.urgent.first_response"),
        ({**policy, "calendar": {**policy["calendar"], "timezone": "Mars/Olympus"}}, "calendar.timezone"),
    ):
        r = await api.client.put("/api/sla-policies/vip", json=bad, headers=api.auth("admin"))
        assert r.status_code == 422, r.text
        assert field in [p["field"] for p in r.json()["error"]["problems"]], r.text


@pytest.mark.asyncio
async def test_a_ticket_from_a_call_keeps_the_callers_real_number_the_agent_sees_masked(api: Api) -> None:
    with psycopg.connect(api.db.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO aicc.calls (call_id, caller, service, started_at, outcome) "
            "VALUES ('call-masked', '13900139000', '4001', now(), 'transferred') ON CONFLICT DO NOTHING"
        )
    ticket = await _create(api, call_id="call-masked", customer={"name": "王芳"})
    assert ticket["customer"] == {"name": "王芳", "phone": "+861******9000"}
    for form in ("+8613900139000", "13900139000"):  # found by the number as the agent types it too
        r = await api.client.get("/api/tickets", params={"phone": form}, headers=api.auth("admin"))
        assert [t["number"] for t in r.json()] == [ticket["number"]], form
    unknown = await _create(api, call_id="no-such-call", customer={})
    assert "phone" not in unknown["customer"]  # no record of the call: nothing made up


@pytest.mark.asyncio
async def test_the_unassigned_filter_lists_only_tickets_nobody_holds(api: Api) -> None:
    free = (await _create(api))["number"]
    taken = (await _create(api, assignee=api.users["agent"].id))["number"]
    r = await api.client.get(
        "/api/tickets", params={"unassigned": "true", "limit": 1000}, headers=api.auth("agent")
    )
    numbers = {t["number"] for t in r.json()}
    assert free in numbers and taken not in numbers
    assert all(t["assignee"] is None for t in r.json())


@pytest.mark.asyncio
async def test_a_ticket_from_a_chat_links_it_and_takes_its_customer(api: Api) -> None:
    from aicc.appliance.conversations import store as conversations

    async with api.pool.connection() as conn:
        customer = await conversations.create_customer(conn, name="李雷", language="zh")
        await conversations.add_identity(conn, customer, "phone", "139 0013 9001")
        await conversations.add_identity(conn, customer, "email", "lilei@example.cn")
        chat = await conversations.create_conversation(
            conn, customer, "webchat", language="zh", handler="agent"
        )
    chat_id = str(chat["id"])
    ticket = await _create(
        api, source="chat", call_id=None, conversation_id=chat_id, customer={}, language=""
    )
    assert ticket["conversation_id"] == str(chat["id"]) and ticket["language"] == "zh"
    assert ticket["customer"]["name"] == "李雷" and ticket["customer"]["email"] == "lilei@example.cn"
    assert ticket["customer"]["phone"] == "+861******9001"  # the agent's view; the ticket keeps it whole
    admin = (await api.client.get(f"/api/tickets/{ticket['number']}", headers=api.auth("admin"))).json()
    assert admin["customer"]["phone"] == "+8613900139001"
    # What the agent typed wins over the conversation's.
    named = await _create(
        api, source="chat", call_id=None, conversation_id=chat_id, customer={"name": "Li Lei"}
    )
    assert named["customer"]["name"] == "Li Lei"
    listed = await api.client.get(
        "/api/tickets", params={"conversation_id": str(chat["id"])}, headers=api.auth("agent")
    )
    assert sorted(t["number"] for t in listed.json()) == sorted([ticket["number"], named["number"]])
    for body, field in (
        ({"subject": "x", "source": "chat"}, "conversation_id"),
        ({"subject": "x", "conversation_id": str(uuid.uuid4())}, "conversation_id"),
    ):
        r = await api.client.post("/api/tickets", json=body, headers=api.auth("agent"))
        assert r.status_code == 422 and field in [p["field"] for p in r.json()["error"]["problems"]], r.text
