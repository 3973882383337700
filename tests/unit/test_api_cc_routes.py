"""The contact-center routes of the API against a real PostgreSQL and a real ACD process in this one:
IVR flows with versions and rollback, service numbers, calendars, agents' status through the ACD
(audited when a supervisor sets it), wrap-up, live figures, callbacks, agents' SIP credentials, and
call records with numbers masked by role and agents limited to their own calls."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
import yaml
from psycopg.types.json import Jsonb

from aicc.appliance.acd.client import AcdClient
from aicc.appliance.acd.metrics import AcdMetrics
from aicc.appliance.acd.service import AcdService
from aicc.appliance.api.config import AcdSettings
from aicc.appliance.ivr.flow import shipped_flows
from tests.unit.api_support import (
    Api,
    ApiDatabase,
    ApiUser,
    api_db_fixture,  # noqa: F401
    audit_since,
    fresh_database,
    last_audit_id,
    make_user,
    open_api,
)

YAML = {"Content-Type": "application/yaml"}


@pytest.fixture(scope="module")
def db(api_db: ApiDatabase) -> Iterator[ApiDatabase]:
    """This module's own database: a queue, a disposition, an agent with a phone registered on a
    stand-in of Kamailio's tables."""
    fresh = fresh_database(api_db, "aicc_cc_routes")
    with psycopg.connect(fresh.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO aicc.skills (name) VALUES ('orders')")
        conn.execute(
            "INSERT INTO aicc.queues (name, config) VALUES ('support-en', %s)",
            ('{"name": "support-en", "language": "en", "skills": {"orders": 1}}',),
        )
        conn.execute(
            "INSERT INTO aicc.dispositions (code, label) VALUES ('resolved', '{\"en\": \"Resolved\"}')"
        )
        conn.execute("CREATE SCHEMA kamailio")
        conn.execute("CREATE TABLE kamailio.location (username text, expires timestamp)")
        conn.execute(
            "CREATE TABLE kamailio.subscriber (id serial, username text, domain text, ha1 text, ha1b text, "
            "UNIQUE (username, domain))"
        )
        conn.execute("INSERT INTO kamailio.location VALUES ('1001', localtimestamp + interval '1 day')")
    yield fresh


@pytest.fixture(scope="module")
def users(db: ApiDatabase) -> dict[str, ApiUser]:
    made = {
        role: make_user(db, role, username=f"cc-{role}")
        for role in ("agent", "supervisor", "admin", "auditor")
    }
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO aicc.agents (user_id, extension, profile) VALUES (%s, '1001', %s)",
            (made["agent"].id, '{"skills": {"orders": 3}, "languages": ["en"]}'),
        )
    return made


@pytest_asyncio.fixture
async def api(db: ApiDatabase, users: dict[str, ApiUser]) -> AsyncIterator[Api]:
    """The app, with a real ACD in this process and the API's ACD client on it."""
    async with open_api(db, users) as opened:
        service = AcdService(db.dsn, AcdSettings(registrations_poll_s=0.2, tick_s=0.1), AcdMetrics())
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        client = AcdClient(opened.pool, db.dsn, source="test")  # type: ignore[arg-type]
        await client.start()
        opened.state.acd = client
        try:
            for _ in range(100):
                if service.engine is not None:
                    break
                await asyncio.sleep(0.05)
            yield opened
        finally:
            await client.close()
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def flow_text(name: str) -> str:
    data = yaml.safe_load(Path(shipped_flows()["retail-en"]).read_text())
    data["name"] = name
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@pytest.mark.asyncio
async def test_flows_are_versioned_rolled_back_simulated_and_audited(api: Api, db: ApiDatabase) -> None:
    admin = api.auth("admin")
    before = last_audit_id(db)
    first = await api.client.post(
        "/api/flows?comment=first", content=flow_text("shop"), headers={**admin, **YAML}
    )
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1 and first.json()["active"] is True
    changed = flow_text("shop").replace("Please hold, an agent", "Please stay on the line, an agent")
    second = await api.client.post("/api/flows", content=changed, headers={**admin, **YAML})
    assert second.json()["version"] == 2
    versions = (await api.client.get("/api/flows/shop/versions", headers=admin)).json()
    assert [(v["version"], v["active"]) for v in versions] == [(2, True), (1, False)]
    back = await api.client.post("/api/flows/shop/rollback", json={"version": 1}, headers=admin)
    assert back.status_code == 200
    now = (await api.client.get("/api/flows/shop", headers=api.auth("supervisor"))).json()
    assert now["version"] == 1 and "Please hold" in now["source"]
    walked = await api.client.post(
        "/api/flows/shop/simulate", json={"inputs": ["bot:transfer", "queue:served", "5"]}, headers=admin
    )
    assert walked.json()["outcome"] == "hangup_by_flow"
    assert [s["node"] for s in walked.json()["path"]][-3:] == ["agents", "survey", "bye"]
    actions = [e["action"] for e in audit_since(db, before)]
    assert actions == ["flow.upload", "flow.upload", "flow.activate"]
    # An agent reads flows but cannot change them; nothing changed after a refused upload.
    refused = await api.client.post(
        "/api/flows", content=flow_text("x"), headers={**api.auth("agent"), **YAML}
    )
    assert refused.status_code == 403


@pytest.mark.asyncio
async def test_a_bad_flow_is_refused_naming_node_and_field_and_nothing_is_stored(api: Api) -> None:
    admin = {**api.auth("admin"), **YAML}
    broken = flow_text("broken").replace("queue: support-en", "queue: nowhere", 1)
    r = await api.client.post("/api/flows", content=broken, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_reference"
    assert {p["field"] for p in r.json()["error"]["problems"]} == {"nodes.agents.queue"}
    dangling = flow_text("broken").replace("next: survey", "next: surfey", 1)
    r = await api.client.post("/api/flows/validate", content=dangling, headers=admin)
    assert r.status_code == 422
    assert any("unknown node 'surfey'" in p["message"] for p in r.json()["error"]["problems"])
    r = await api.client.post("/api/flows", content=b"\xff\xfe not text", headers=admin)
    assert r.status_code == 422 and "UTF-8" in r.json()["error"]["message"]
    assert (await api.client.get("/api/flows/broken/versions", headers=admin)).status_code == 404


@pytest.mark.asyncio
async def test_numbers_select_flows_in_force_and_calendars_can_be_set(api: Api) -> None:
    admin = api.auth("admin")
    await api.client.post("/api/flows", content=flow_text("line"), headers={**admin, **YAML})
    assert (
        await api.client.put("/api/numbers/4999", json={"flow": "line"}, headers=admin)
    ).status_code == 200
    missing = await api.client.put("/api/numbers/4998", json={"flow": "no-flow"}, headers=admin)
    assert missing.status_code == 422
    in_use = await api.client.delete("/api/flows/line", headers=admin)
    assert in_use.status_code == 409 and "4999" in in_use.json()["error"]["message"]
    assert {"number": "4999", "flow": "line"}.items() <= next(
        n for n in (await api.client.get("/api/numbers", headers=admin)).json() if n["number"] == "4999"
    ).items()
    calendar = "name: shop-hours\ntimezone: Asia/Shanghai\nweekly: {sat: [['10:00', '19:00']]}\n"
    r = await api.client.put("/api/calendars/shop-hours", content=calendar, headers={**admin, **YAML})
    assert r.status_code == 200, r.text
    wrong = await api.client.put("/api/calendars/other", content=calendar, headers={**admin, **YAML})
    assert wrong.status_code == 422
    names = {c["name"]: c["site"] for c in (await api.client.get("/api/calendars", headers=admin)).json()}
    assert names["shop-hours"] is True and names["always"] is False


@pytest.mark.asyncio
async def test_agent_status_goes_through_the_acd_and_a_supervisors_change_is_audited(
    api: Api, db: ApiDatabase, users: dict[str, ApiUser]
) -> None:
    agent = users["agent"]
    mine = await api.client.post("/api/agents/me/status", json={"status": "ready"}, headers=api.auth("agent"))
    assert mine.status_code == 200, mine.text
    assert mine.json() == {"agent_id": agent.id, "status": "ready", "state": "idle", "reason": ""}
    before = last_audit_id(db)
    set_by = await api.client.post(
        f"/api/agents/{agent.id}/status",
        json={"status": "away", "reason": "training"},
        headers=api.auth("supervisor"),
    )
    assert set_by.json()["status"] == "away" and set_by.json()["reason"] == "training"
    entry = audit_since(db, before)[-1]
    assert entry["action"] == "agent.state" and entry["actor"] == "cc-supervisor"
    assert entry["before"]["status"] == "ready" and entry["after"]["status"] == "away"
    live = (await api.client.get("/api/live/queues", headers=api.auth("agent"))).json()["queues"]
    assert live["support-en"]["staffed"] == 1
    agents = (await api.client.get("/api/live/agents", headers=api.auth("supervisor"))).json()
    assert [(a["username"], a["status"], a["reason"]) for a in agents] == [("cc-agent", "away", "training")]
    # Wrap-up needs a known disposition; the admin (no agent profile) has no status to set.
    bad = await api.client.post(
        "/api/agents/me/wrapup", json={"disposition": "nope"}, headers=api.auth("agent")
    )
    assert bad.status_code == 422
    none = await api.client.post("/api/agents/me/status", json={"status": "ready"}, headers=api.auth("admin"))
    assert none.status_code == 404


@pytest.mark.asyncio
async def test_an_agent_without_a_registered_phone_is_told_why_it_cannot_go_ready(
    api: Api, db: ApiDatabase
) -> None:
    other = make_user(db, "agent", username="cc-phoneless")
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO aicc.agents (user_id, extension, profile) VALUES (%s, '1077', %s)",
            (other.id, '{"skills": {"orders": 1}, "languages": ["en"]}'),
        )
        conn.execute(
            "INSERT INTO aicc.acd_commands (uid, kind, payload) VALUES (gen_random_uuid(), 'reload', '{}')"
        )
        conn.execute("NOTIFY acd_commands")
    await asyncio.sleep(0.5)
    r = await api.client.post("/api/agents/me/status", json={"status": "ready"}, headers=other.headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_registered"


@pytest.mark.asyncio
async def test_sip_credentials_are_shown_once_and_stored_as_digests(
    api: Api, db: ApiDatabase, users: dict[str, ApiUser]
) -> None:
    r = await api.client.post(f"/api/agents/{users['agent'].id}/sip-credentials", headers=api.auth("admin"))
    assert r.status_code == 201, r.text
    creds = r.json()
    assert creds["extension"] == "1001" and creds["domain"] == "aicc.local" and len(creds["password"]) >= 20
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute("SELECT ha1 FROM kamailio.subscriber WHERE username = '1001'").fetchone()
        stored = " ".join(str(v) for v in conn.execute("SELECT * FROM kamailio.subscriber").fetchall())
    assert row == (hashlib.md5(f"1001:aicc.local:{creds['password']}".encode()).hexdigest(),)
    assert creds["password"] not in stored
    denied = await api.client.post(
        f"/api/agents/{users['agent'].id}/sip-credentials", headers=api.auth("supervisor")
    )
    assert denied.status_code == 403


def add_call(db: ApiDatabase, call_id: str, agent: str) -> None:
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO aicc.calls (call_id, caller, service, language, started_at, ended_at, outcome, "
            "agent, queue) VALUES (%s, '13800138000', '4000', 'en', now() - interval '1 minute', now(), "
            "'transferred', %s, 'support-en')",
            (call_id, agent),
        )
        conn.execute(
            "INSERT INTO aicc.call_lines (call_id, seq, speaker, text, at_s) "
            "VALUES (%s, 0, 'caller', 'agent please', 1.5)",
            (call_id,),
        )


@pytest.mark.asyncio
async def test_calls_mask_numbers_by_role_and_agents_see_only_their_own(api: Api, db: ApiDatabase) -> None:
    add_call(db, "call-mine", "1001")
    add_call(db, "call-other", "1002")
    admin = {c["call_id"]: c for c in (await api.client.get("/api/calls", headers=api.auth("admin"))).json()}
    assert admin["call-mine"]["caller"] == "13800138000"
    supervisor = (await api.client.get("/api/calls", headers=api.auth("supervisor"))).json()
    assert {c["caller"] for c in supervisor if c["call_id"].startswith("call-")} == {"138****8000"}
    agent: list[dict[str, Any]] = (await api.client.get("/api/calls", headers=api.auth("agent"))).json()
    assert [c["call_id"] for c in agent] == ["call-mine"]
    assert (await api.client.get("/api/calls/call-other", headers=api.auth("agent"))).status_code == 404
    text = await api.client.get("/api/calls/call-mine/transcript?format=text", headers=api.auth("agent"))
    assert text.text == "[   1.50] caller: agent please\n"
    detail = (await api.client.get("/api/calls/call-mine", headers=api.auth("auditor"))).json()
    assert detail["transcript"] == "/api/calls/call-mine/transcript" and detail["contact"] is None


@pytest.mark.asyncio
async def test_personal_numbers_in_transcripts_are_masked_for_roles_without_numbers_full(
    api: Api, db: ApiDatabase
) -> None:
    add_call(db, "call-said", "1001")
    said = "我的新号码是一三九零零一三九零零零，身份证440300199001011238，订单100234"
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO aicc.call_lines (call_id, seq, speaker, text, at_s) "
            "VALUES ('call-said', 1, 'caller', %s, 3)",
            (said,),
        )
        conn.execute("UPDATE aicc.calls SET summary = '回拨13900139000' WHERE call_id = 'call-said'")
        conn.execute(
            "INSERT INTO aicc.call_tool_calls (call_id, seq, tool, arguments, ok, result, seconds, at_s) "
            "VALUES ('call-said', 0, 'change_address', %s, true, '{}', 0.1, 2)",
            (Jsonb({"order_id": "100234", "new_address": "南京路8号 13900139000"}),),
        )
    agent = await api.client.get("/api/calls/call-said/transcript", headers=api.auth("agent"))
    assert agent.json()[-1]["text"] == "我的新号码是一三九****九零零零，身份证**************1238，订单100234"
    text = await api.client.get("/api/calls/call-said/transcript?format=text", headers=api.auth("agent"))
    assert "13900139000" not in text.text and "一三九零零一三九零零零" not in text.text
    detail = (await api.client.get("/api/calls/call-said", headers=api.auth("supervisor"))).json()
    assert detail["summary"] == "回拨139****9000"
    assert detail["tool_calls"][0]["arguments"] == {
        "order_id": "100234",
        "new_address": "南京路8号 139****9000",
    }
    admin = await api.client.get("/api/calls/call-said/transcript", headers=api.auth("admin"))
    assert admin.json()[-1]["text"] == said


# --- the live picture pushed to pages, the softphone's credentials, the pages ----------------------


@pytest.mark.asyncio
async def test_live_pictures_follow_the_acd_and_pop_the_contact_to_its_agent(
    api: Api, db: ApiDatabase, users: dict[str, ApiUser]
) -> None:
    from uuid import uuid4

    from aicc.appliance.acd import commands as cmds
    from aicc.appliance.api.deps import Principal
    from aicc.appliance.api.live import LiveHub
    from aicc.appliance.api.routes.live import snapshot

    add_call(db, "call-live", "1001")
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        # The same caller rang last week (the trunk gave the number in another form) and has a ticket
        # open and one resolved: the pop shows the call and the open ticket.
        conn.execute(
            "INSERT INTO aicc.calls (call_id, caller, service, language, started_at, ended_at, outcome, "
            "summary) VALUES ('call-last-week', '+8613800138000', '4000', 'en', now() - interval '7 days', "
            "now() - interval '7 days', 'resolved', 'refund asked, call back on 13912345678')"
        )
    for subject in ("Refund for order 100234", "Old complaint"):
        body = {"subject": subject, "customer": {"phone": "+8613800138000"}}
        r = await api.client.post("/api/tickets", json=body, headers=api.auth("supervisor"))
        assert r.status_code == 201, r.text
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute("UPDATE aicc.tickets SET status = 'resolved' WHERE subject = 'Old complaint'")
    hub = LiveHub("UTC")
    listener = AcdClient(api.pool, db.dsn, source="test-live", on_live=hub.changed)  # type: ignore[arg-type]
    await listener.start()
    acd = api.state.acd
    assert acd is not None
    agent = Principal(users["agent"].id, users["agent"].username, "agent", 0)
    supervisor = Principal(users["supervisor"].id, users["supervisor"].username, "supervisor", 0)
    try:
        seen = hub.version
        r = await api.client.post(
            "/api/agents/me/status", json={"status": "ready"}, headers=api.auth("agent")
        )
        assert r.status_code == 200, r.text
        changed = await hub.wait(seen, 5.0)
        assert changed != seen, "no push after the agent went ready"
        contact_id = str(uuid4())
        await acd.submit(
            cmds.Enqueue(
                contact_id=contact_id,
                queue="support-en",
                language="en",
                attributes={"summary": "wants to change the address", "intent": "change_address"},
                gateway="gw-test",
                call_id="call-live",
                caller="13800138000",
            )
        )
        for _ in range(50):  # the ACD offers it to the one ready agent within a tick
            picture = await hub.picture(api.pool, acd)
            mine = await snapshot(picture, agent, api.pool)
            if mine["me"]["contact"]:
                break
            await hub.wait(hub.version, 0.2)
        me = mine["me"]
        assert me["state"] == "reserved" and me["queues"] == ["support-en"]
        pop = me["contact"]
        assert pop["contact_id"] == contact_id and pop["summary"] == "wants to change the address"
        assert pop["caller"] == "138****8000" and pop["transcript"][0]["text"] == "agent please"
        assert mine["queues"]["support-en"]["waiting"] == 1
        record = pop["customer"]
        last_week = [c for c in record["previous"] if c["summary"].startswith("refund asked")]
        assert last_week and last_week[0]["summary"] == "refund asked, call back on 139****5678", record
        assert last_week[0]["channel"] == "voice" and last_week[0]["outcome"] == "resolved"
        assert record["contacts"] == len(record["previous"]) or record["contacts"] > 5
        subjects = [t["subject"] for t in record["open_tickets"]]
        assert "Refund for order 100234" in subjects and "Old complaint" not in subjects
        board = await snapshot(picture, supervisor, api.pool)
        assert board["me"] is None
        assert [a["contact_id"] for a in board["agents"] if a["agent_id"] == agent.user_id] == [contact_id]
        assert board["contacts"][0]["caller"] == "138****8000"
    finally:
        with contextlib.suppress(Exception):
            await acd.submit(cmds.Abandon(contact_id=contact_id))
        await api.client.post("/api/agents/me/status", json={"status": "away"}, headers=api.auth("agent"))
        await listener.close()


@pytest.mark.asyncio
async def test_the_softphone_gets_short_lived_credentials_kamailio_accepts(
    api: Api, users: dict[str, ApiUser]
) -> None:
    import base64
    import hmac
    import time

    api.state.config.sip_ws_urls.append("wss://192.0.2.5:8443")
    try:
        r = await api.client.post("/api/agents/me/sip-token", headers=api.auth("agent"))
        assert r.status_code == 200, r.text
        token = r.json()
        expiry, extension = token["authorization_user"].split(":")
        assert extension == "1001" and token["sip_uri"] == "sip:1001@aicc.local"
        assert 0 < int(expiry) - time.time() <= api.config.sip_token_ttl_s + 1
        # What the kamailio role renders: sha256 of the label and the site's api_secret_key.
        key = hashlib.sha256(b"aicc-sip-ephemeral:" + api.state.secret_key).hexdigest()
        mac = hmac.new(key.encode(), token["authorization_user"].encode(), hashlib.sha1).digest()
        assert token["password"] == base64.b64encode(mac).decode()
        assert token["ws_urls"] == ["wss://192.0.2.5:8443"]
        # Users without an agent profile have no softphone.
        r = await api.client.post("/api/agents/me/sip-token", headers=api.auth("admin"))
        assert r.status_code == 404
    finally:
        api.state.config.sip_ws_urls.clear()
    r = await api.client.post("/api/agents/me/sip-token", headers=api.auth("agent"))
    assert r.status_code == 503 and "sip_ws_urls" in r.json()["error"]["message"]


@pytest.mark.asyncio
async def test_the_pages_are_served_with_a_strict_policy_and_nothing_outside_static(api: Api) -> None:
    api.state.config.sip_ws_urls.append("wss://192.0.2.5:8443/")
    try:
        r = await api.client.get("/desk/")
    finally:
        api.state.config.sip_ws_urls.clear()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "connect-src 'self' wss://192.0.2.5:8443;" in csp
    assert (await api.client.get("/wall")).headers["location"] == "/wall/"
    js = await api.client.get("/static/vendor/jssip.min.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert b"JsSIP" in js.content[:200]
    for path in (
        "/static/../api/app.py",
        "/static/%2e%2e/api/app.py",
        "/static/desk.html",
        "/static/nothing.js",
    ):
        assert (await api.client.get(path)).status_code == 404, path
