"""Skills, queues, dispositions, agents' profiles and the routing policy through the API: validation,
references, conflicts, and the ACD's reload command (with its NOTIFY) in the same transaction."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.unit.api_support import (
    Api,
    api_db_fixture,  # noqa: F401
    api_fixture,  # noqa: F401
    api_users_fixture,  # noqa: F401
    make_user,
)


def query(api: Api, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(api.db.dsn) as conn:
        cur = conn.execute(sql.encode(), params)
        return cur.fetchall() if cur.description else []


def reloads(api: Api) -> int:
    return int(query(api, "SELECT count(*) FROM aicc.acd_commands WHERE kind = 'reload'")[0][0])


def queue(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "language": "en", **fields}


async def add_skills(api: Api, *names: str) -> None:
    for name in names:
        r = await api.client.post("/api/skills", json={"name": name}, headers=api.auth("admin"))
        assert r.status_code in (201, 409)


@pytest.mark.asyncio
async def test_skills_crud_and_in_use(api: Api) -> None:
    admin = api.auth("admin")
    r = await api.client.post("/api/skills", json={"name": "billing", "description": "Bills"}, headers=admin)
    assert r.status_code == 201
    assert (await api.client.post("/api/skills", json={"name": "billing"}, headers=admin)).status_code == 409
    r = await api.client.post("/api/skills", json={"name": "Bad-Name"}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "name"
    r = await api.client.put("/api/skills/billing", json={"description": "Invoices"}, headers=admin)
    assert r.json() == {"name": "billing", "description": "Invoices"}
    listed = (await api.client.get("/api/skills", headers=api.auth("agent"))).json()
    assert {"name": "billing", "description": "Invoices"} in listed
    r = await api.client.post("/api/queues", json=queue("billing-en", skills={"billing": 2}), headers=admin)
    assert r.status_code == 201
    r = await api.client.delete("/api/skills/billing", headers=admin)
    assert r.status_code == 409 and "queue billing-en" in r.json()["error"]["message"]
    assert (await api.client.delete("/api/queues/billing-en", headers=admin)).status_code == 204
    assert (await api.client.delete("/api/skills/billing", headers=admin)).status_code == 204
    assert (await api.client.delete("/api/skills/billing", headers=admin)).status_code == 404


@pytest.mark.asyncio
async def test_queue_changes_validate_references_and_tell_the_acd(api: Api) -> None:
    admin = api.auth("admin")
    await add_skills(api, "orders", "returns")
    r = await api.client.post(
        "/api/queues",
        json=queue(
            "orders-en", skills={"orders": 1, "unheard": 2}, overflow=[{"after_s": 60, "queue": "nowhere"}]
        ),
        headers=admin,
    )
    assert r.status_code == 422
    fields = {p["field"] for p in r.json()["error"]["problems"]}
    assert fields == {"skills.unheard", "overflow[0].queue"}
    r = await api.client.post(
        "/api/queues", json=queue("orders-en", overflow=[{"after_s": 5}]), headers=admin
    )
    assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "overflow[0]"

    with psycopg.connect(api.db.dsn, autocommit=True) as listener:
        listener.execute("LISTEN acd_commands")
        before = reloads(api)
        r = await api.client.post("/api/queues", json=queue("orders-en", skills={"orders": 1}), headers=admin)
        assert r.status_code == 201, r.text
        assert r.json()["wrap_up_s"] == 30  # defaults filled in
        assert reloads(api) == before + 1
        assert len(list(listener.notifies(timeout=2, stop_after=1))) == 1
    assert (await api.client.post("/api/queues", json=queue("orders-en"), headers=admin)).status_code == 409

    changed = queue("orders-en", skills={"orders": 2, "returns": 1}, wrap_up_s=10)
    r = await api.client.put("/api/queues/orders-en", json=changed, headers=admin)
    assert r.status_code == 200 and r.json()["wrap_up_s"] == 10
    got = (await api.client.get("/api/queues/orders-en", headers=api.auth("supervisor"))).json()
    assert got["skills"] == {"orders": 2, "returns": 1}
    r = await api.client.put("/api/queues/orders-en", json=queue("renamed"), headers=admin)
    assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "name"
    assert (
        await api.client.put("/api/queues/absent", json=queue("absent"), headers=admin)
    ).status_code == 404
    assert reloads(api) == before + 2
    # A refused change leaves neither a reload nor an audit entry behind.
    assert (await api.client.post("/api/queues", json=queue("orders-en"), headers=admin)).status_code == 409
    assert reloads(api) == before + 2


@pytest.mark.asyncio
async def test_a_queue_in_use_cannot_be_deleted(api: Api) -> None:
    admin = api.auth("admin")
    for name in ("busy-q", "flow-q", "target-q"):
        assert (await api.client.post("/api/queues", json=queue(name), headers=admin)).status_code == 201
    r = await api.client.post(
        "/api/queues", json=queue("source-q", overflow=[{"after_s": 30, "queue": "target-q"}]), headers=admin
    )
    assert r.status_code == 201
    query(
        api,
        "INSERT INTO aicc.acd_contacts (id, seq, queue, state, contact) "
        "VALUES (gen_random_uuid(), 1, 'busy-q', 'waiting', '{}')",
    )
    document = {
        "nodes": {"start": {"type": "menu"}, "q": {"type": "queue", "queue": "flow-q", "next": "bye"}}
    }
    query(
        api,
        "INSERT INTO aicc.ivr_flows (name, version, source, document, created_by) "
        "VALUES ('sales', 1, '', %s, 't')",
        json.dumps(document),
    )
    query(api, "INSERT INTO aicc.ivr_active (name, version, activated_by) VALUES ('sales', 1, 't')")
    expected = {
        "busy-q": "1 contact(s) waiting",
        "flow-q": "flow sales",
        "target-q": "queue source-q (overflow)",
    }
    for name, reason in expected.items():
        r = await api.client.delete(f"/api/queues/{name}", headers=admin)
        assert r.status_code == 409, name
        assert reason in r.json()["error"]["message"]
    assert (await api.client.delete("/api/queues/source-q", headers=admin)).status_code == 204
    assert (await api.client.delete("/api/queues/target-q", headers=admin)).status_code == 204
    assert (await api.client.get("/api/queues/target-q", headers=admin)).status_code == 404


@pytest.mark.asyncio
async def test_dispositions(api: Api) -> None:
    admin = api.auth("admin")
    body = {"code": "resolved", "label": {"en": "Resolved", "zh": "已解决"}}
    r = await api.client.post("/api/dispositions", json=body, headers=admin)
    assert r.status_code == 201 and r.json()["active"] is True
    assert (await api.client.post("/api/dispositions", json=body, headers=admin)).status_code == 409
    r = await api.client.put("/api/dispositions/resolved", json={"active": False}, headers=admin)
    assert r.json() == {**body, "active": False}
    active = (
        await api.client.get("/api/dispositions?include_inactive=false", headers=api.auth("agent"))
    ).json()
    assert "resolved" not in {d["code"] for d in active}
    r = await api.client.post("/api/dispositions", json={"code": "x", "label": {"fr": "X"}}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "label.fr"
    assert (await api.client.delete("/api/dispositions/resolved", headers=admin)).status_code == 204
    assert (await api.client.put("/api/dispositions/resolved", json={}, headers=admin)).status_code == 404


@pytest.mark.asyncio
async def test_agent_profiles(api: Api) -> None:
    admin = api.auth("admin")
    await add_skills(api, "orders")
    first, second = make_user(api.db, "agent"), make_user(api.db, "supervisor")
    profile = {
        "extension": "2001",
        "skills": {"orders": 3},
        "languages": ["zh", "en"],
        "capacity": {"voice": 1},
    }
    before = reloads(api)
    r = await api.client.put(f"/api/agents/{first.id}", json=profile, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["profile"]["extension"] == "2001" and r.json()["username"] == first.username
    assert reloads(api) == before + 1
    r = await api.client.put(f"/api/agents/{second.id}", json=profile, headers=admin)
    assert r.status_code == 409 and first.username in r.json()["error"]["message"]
    r = await api.client.put(f"/api/agents/{second.id}", json={**profile, "extension": "2002"}, headers=admin)
    assert r.status_code == 200
    r = await api.client.put(f"/api/agents/{second.id}", json={"skills": {"flying": 5}}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "skills.flying"
    r = await api.client.put(f"/api/agents/{first.id}", json={"skills": {"orders": 9}}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "skills.orders"
    auditor = make_user(api.db, "auditor")
    assert (await api.client.put(f"/api/agents/{auditor.id}", json={}, headers=admin)).status_code == 409
    assert (await api.client.put("/api/agents/999999", json={}, headers=admin)).status_code == 404
    listed = (await api.client.get("/api/agents", headers=api.auth("agent"))).json()
    assert {first.id, second.id} <= {a["user_id"] for a in listed}
    got = (await api.client.get(f"/api/agents/{second.id}", headers=admin)).json()
    assert got["profile"]["extension"] == "2002"
    assert (await api.client.get(f"/api/agents/{auditor.id}", headers=admin)).status_code == 404
    # An extension freed by one agent can be taken by another.
    await api.client.put(f"/api/agents/{first.id}", json={**profile, "extension": "2003"}, headers=admin)
    r = await api.client.put(f"/api/agents/{second.id}", json={**profile, "extension": "2001"}, headers=admin)
    assert r.status_code == 200


@pytest.mark.asyncio
async def test_routing_policy_versions_yaml_and_rollback(api: Api) -> None:
    admin = api.auth("admin")
    current = (await api.client.get("/api/routing-policy", headers=api.auth("agent"))).json()
    start = current["version"]
    before = reloads(api)
    r = await api.client.put(
        "/api/routing-policy?comment=first",
        json={"priority_weight_s": 30, "agent_selection": "least_occupied"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    v1 = r.json()
    assert v1["version"] == start + 1 and v1["comment"] == "first" and v1["created_by"] == "std-admin"
    yaml_text = "priority_weight_s: 90\ntiers: {standard: 0, platinum: 300}\ndefault_tier: standard\n"
    r = await api.client.put(
        "/api/routing-policy",
        content=yaml_text.encode(),
        headers={**admin, "Content-Type": "application/yaml"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == start + 2 and r.json()["document"]["tiers"]["platinum"] == 300
    r = await api.client.put(
        "/api/routing-policy",
        content=b"tiers: {gold: 10}\ndefault_tier: silver\n",
        headers={**admin, "Content-Type": "application/yaml"},
    )
    assert r.status_code == 422 and "default_tier 'silver'" in r.json()["error"]["message"]
    r = await api.client.put(
        "/api/routing-policy",
        content=b"priority_weight_s: [1\n",
        headers={**admin, "Content-Type": "application/yaml"},
    )
    assert r.status_code == 422 and "line 2" in r.json()["error"]["message"]
    r = await api.client.put("/api/routing-policy", json={"agent_selection": "random"}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "agent_selection"
    r = await api.client.put(
        "/api/routing-policy", content=b"<policy/>", headers={**admin, "Content-Type": "application/xml"}
    )
    assert r.status_code == 415
    versions = (await api.client.get("/api/routing-policy/versions", headers=admin)).json()
    assert [v["version"] for v in versions][:2] == [start + 2, start + 1]
    r = await api.client.post("/api/routing-policy/rollback", json={"version": start + 1}, headers=admin)
    assert r.status_code == 200
    assert r.json()["version"] == start + 3 and r.json()["document"] == v1["document"]
    assert r.json()["comment"] == f"rollback to version {start + 1}"
    assert (await api.client.get("/api/routing-policy", headers=admin)).json()["version"] == start + 3
    r = await api.client.post("/api/routing-policy/rollback", json={"version": 999}, headers=admin)
    assert r.status_code == 404
    assert reloads(api) == before + 3
