"""The audit log: one entry per change route call, with before/after and no secret; append-only for
every login; read with filters, as JSON pages or CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.routing import APIRoute

from aicc.appliance.api.audit import is_secret_key, scrub
from aicc.appliance.api.routes import (
    agents,
    auth,
    dispositions,
    queues,
    routing_policy,
    skills,
    tokens,
    users,
)
from tests.unit.api_support import (
    Api,
    ApiDatabase,
    api_db_fixture,  # noqa: F401
    api_fixture,  # noqa: F401
    api_users_fixture,  # noqa: F401
    audit_since,
    last_audit_id,
    make_user,
)

MY_ROUTERS = (auth.router, users.router, tokens.router, skills.router, queues.router, dispositions.router)
MY_ROUTERS += (agents.router, routing_policy.router)


def change_routes() -> set[tuple[str, str]]:
    return {
        (method, route.path)
        for router in MY_ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
        if method != "GET"
    }


@dataclass
class Case:
    method: str
    route: str  # the path template, for the coverage check
    action: str
    call: Callable[[], Awaitable[httpx.Response]]
    has_before: bool
    has_after: bool


def secret_keys(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        found = [f"{path}.{k}" for k in value if is_secret_key(str(k))]
        return found + [f for k, v in value.items() for f in secret_keys(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [f for v in value for f in secret_keys(v, path)]
    return []


@pytest.mark.asyncio
async def test_every_change_route_writes_exactly_one_audit_entry_without_secrets(api: Api) -> None:
    admin = make_user(api.db, "admin")
    h = admin.headers
    target = make_user(api.db, "agent", password="Target-Pass-123")
    c = api.client
    secrets = {
        "Target-Pass-123",
        "Target-Pass-456",
        "Audit-Created-1",
        "Admin-Set-Pass-789",
        target.token or "",
    }
    state: dict[str, Any] = {}

    async def login() -> httpx.Response:
        r = await c.post("/api/auth/login", json={"username": target.username, "password": "Target-Pass-123"})
        state["session"] = {"Authorization": f"Bearer {r.json()['token']}"}
        secrets.add(r.json()["token"])
        return r

    async def new_token() -> httpx.Response:
        r = await c.post("/api/tokens", json={"name": "ci"}, headers=h)
        state["token_id"] = r.json()["id"]
        secrets.add(r.json()["token"])
        return r

    async def new_user() -> httpx.Response:
        r = await c.post(
            "/api/users",
            json={"username": "audited-user", "role": "agent", "password": "Audit-Created-1"},
            headers=h,
        )
        state["user"] = r.json()["id"]
        return r

    async def new_sip_password() -> httpx.Response:
        r = await c.post(f"/api/agents/{state['user']}/sip-credentials", headers=h)
        secrets.add(r.json()["password"])
        return r

    policy_before = (await c.get("/api/routing-policy", headers=h)).json()["version"]
    # Kamailio's subscriber table, which the [sip_proxy] role creates on a site.
    with psycopg.connect(api.db.dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS kamailio")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS kamailio.subscriber (username text, domain text, ha1 text, "
            "ha1b text, UNIQUE (username, domain))"
        )
    cases = [
        Case("POST", "/api/auth/login", "auth.login", login, False, True),
        Case(
            "POST",
            "/api/auth/logout",
            "auth.logout",
            lambda: c.post("/api/auth/logout", headers=state["session"]),
            True,
            True,
        ),
        Case(
            "POST",
            "/api/auth/password",
            "user.password",
            lambda: c.post(
                "/api/auth/password",
                json={"old_password": "Target-Pass-123", "new_password": "Target-Pass-456"},
                headers=target.headers,
            ),
            True,
            True,
        ),
        Case("POST", "/api/users", "user.create", new_user, False, True),
        Case(
            "PATCH",
            "/api/users/{user_id}",
            "user.update",
            lambda: c.patch(f"/api/users/{state['user']}", json={"display_name": "Audited"}, headers=h),
            True,
            True,
        ),
        Case(
            "POST",
            "/api/users/{user_id}/password",
            "user.password",
            lambda: c.post(
                f"/api/users/{state['user']}/password", json={"password": "Admin-Set-Pass-789"}, headers=h
            ),
            True,
            True,
        ),
        Case(
            "POST",
            "/api/users/{user_id}/unlock",
            "user.unlock",
            lambda: c.post(f"/api/users/{state['user']}/unlock", headers=h),
            True,
            True,
        ),
        Case("POST", "/api/tokens", "token.create", new_token, False, True),
        Case(
            "DELETE",
            "/api/tokens/{token_id}",
            "token.revoke",
            lambda: c.delete(f"/api/tokens/{state['token_id']}", headers=h),
            True,
            True,
        ),
        Case(
            "POST",
            "/api/skills",
            "skill.create",
            lambda: c.post("/api/skills", json={"name": "audit_skill"}, headers=h),
            False,
            True,
        ),
        Case(
            "PUT",
            "/api/skills/{name}",
            "skill.update",
            lambda: c.put("/api/skills/audit_skill", json={"description": "d"}, headers=h),
            True,
            True,
        ),
        Case(
            "POST",
            "/api/queues",
            "queue.create",
            lambda: c.post(
                "/api/queues",
                json={"name": "audit-q", "language": "zh", "skills": {"audit_skill": 1}},
                headers=h,
            ),
            False,
            True,
        ),
        Case(
            "PUT",
            "/api/queues/{name}",
            "queue.update",
            lambda: c.put("/api/queues/audit-q", json={"name": "audit-q", "language": "en"}, headers=h),
            True,
            True,
        ),
        Case(
            "DELETE",
            "/api/queues/{name}",
            "queue.delete",
            lambda: c.delete("/api/queues/audit-q", headers=h),
            True,
            False,
        ),
        Case(
            "DELETE",
            "/api/skills/{name}",
            "skill.delete",
            lambda: c.delete("/api/skills/audit_skill", headers=h),
            True,
            False,
        ),
        Case(
            "POST",
            "/api/dispositions",
            "disposition.create",
            lambda: c.post("/api/dispositions", json={"code": "audit_d", "label": {"en": "A"}}, headers=h),
            False,
            True,
        ),
        Case(
            "PUT",
            "/api/dispositions/{code}",
            "disposition.update",
            lambda: c.put("/api/dispositions/audit_d", json={"active": False}, headers=h),
            True,
            True,
        ),
        Case(
            "DELETE",
            "/api/dispositions/{code}",
            "disposition.delete",
            lambda: c.delete("/api/dispositions/audit_d", headers=h),
            True,
            False,
        ),
        Case(
            "PUT",
            "/api/agents/{user_id}",
            "agent.update",
            lambda: c.put(f"/api/agents/{state['user']}", json={"extension": "7001"}, headers=h),
            False,
            True,
        ),
        Case(
            "POST",
            "/api/agents/{user_id}/sip-credentials",
            "agent.sip_credentials",
            new_sip_password,
            False,
            True,
        ),
        Case(
            "PUT",
            "/api/routing-policy",
            "routing_policy.update",
            lambda: c.put("/api/routing-policy", json={"priority_weight_s": 45}, headers=h),
            policy_before > 0,
            True,
        ),
        Case(
            "POST",
            "/api/routing-policy/rollback",
            "routing_policy.rollback",
            lambda: c.post("/api/routing-policy/rollback", json={"version": policy_before + 1}, headers=h),
            True,
            True,
        ),
        Case(
            "DELETE",
            "/api/users/{user_id}",
            "user.disable",
            lambda: c.delete(f"/api/users/{state['user']}", headers=h),
            True,
            True,
        ),
    ]
    assert {(case.method, case.route) for case in cases} == change_routes(), (
        "a change route has no audit case"
    )
    for case in cases:
        before = last_audit_id(api.db)
        r = await case.call()
        assert r.status_code < 300, (case.action, r.text)
        entries = audit_since(api.db, before)
        assert [e["action"] for e in entries] == [case.action], case.action
        entry = entries[0]
        assert (entry["before"] is not None) == case.has_before, case.action
        assert (entry["after"] is not None) == case.has_after, case.action
        assert entry["source"] == "192.0.2.10"
        text = json.dumps([entry["before"], entry["after"]])
        assert "$argon2" not in text
        assert not [s for s in secrets if s and s in text], case.action
        assert secret_keys(entry["before"]) == secret_keys(entry["after"]) == [], case.action
        if case.action != "auth.login":
            assert entry["actor"] in (admin.username, target.username)


def test_scrub_drops_secret_keys_at_any_depth() -> None:
    cleaned = scrub(
        {
            "username": "a",
            "password": "p",
            "password_changed_at": "2026-01-01",
            "nested": [{"token": "t", "token_id": 3, "api_secret_key": "k", "client_secret": "s"}],
            "blob": b"\x00",
        }
    )
    assert cleaned == {
        "username": "a",
        "password_changed_at": "2026-01-01",
        "nested": [{"token_id": 3}],
        "blob": None,
    }


def test_the_audit_log_is_append_only_for_the_owner_and_the_app_login(api_db: ApiDatabase) -> None:
    with psycopg.connect(api_db.dsn, autocommit=True) as owner:
        owner.execute(
            "INSERT INTO aicc.audit_log (actor, action, target_type, target_id) "
            "VALUES ('t', 'test', 't', '1')"
        )
        # The app login as the postgresql role grants it (tables: SELECT, INSERT, UPDATE, DELETE).
        owner.execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'aicc_app') THEN "
            "CREATE ROLE aicc_app LOGIN; END IF; END $$"
        )
        owner.execute("GRANT USAGE ON SCHEMA aicc TO aicc_app")
        owner.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA aicc TO aicc_app")
        owner.execute("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA aicc TO aicc_app")
    app_dsn = api_db.dsn.replace("user=aicc_owner", "user=aicc_app")
    for dsn in (api_db.dsn, app_dsn):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO aicc.audit_log (actor, action, target_type, target_id) "
                "VALUES ('t', 'test', 't', '2')"
            )
            for statement in (
                "UPDATE aicc.audit_log SET actor = 'someone else'",
                "DELETE FROM aicc.audit_log",
                "TRUNCATE aicc.audit_log",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement.encode())
            (count,) = conn.execute(
                "SELECT count(*) FROM aicc.audit_log WHERE action = 'test'"
            ).fetchone() or (0,)
            assert count >= 2


@pytest.mark.asyncio
async def test_reading_the_audit_log_with_filters_and_as_csv(api: Api) -> None:
    admin = api.auth("admin")
    start = last_audit_id(api.db)
    for name in ("csv_a", "csv_b", "csv_c"):
        await api.client.post(
            "/api/skills", json={"name": name, "description": "=cmd|' /C calc'!A0"}, headers=admin
        )
    r = await api.client.get("/api/audit?action=skill.create&limit=2", headers=api.auth("auditor"))
    assert r.status_code == 200
    page = r.json()
    assert page["total"] >= 3 and len(page["items"]) == 2
    assert [i["target_id"] for i in page["items"]] == ["csv_c", "csv_b"]  # newest first
    second = (await api.client.get("/api/audit?action=skill.create&limit=2&offset=2", headers=admin)).json()
    assert second["items"][0]["target_id"] == "csv_a"
    only = (await api.client.get("/api/audit?target_type=skill&target_id=csv_b", headers=admin)).json()
    assert only["total"] == 1 and only["items"][0]["actor"] == "std-admin"
    at = only["items"][0]["at"]
    later = (
        await api.client.get("/api/audit", params={"since": at, "action": "skill.create"}, headers=admin)
    ).json()
    assert {i["target_id"] for i in later["items"]} >= {"csv_b", "csv_c"} and "csv_a" not in {
        i["target_id"] for i in later["items"] if i["id"] > start
    }
    r = await api.client.get("/api/audit", params={"since": at, "until": at}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "until"
    assert (await api.client.get("/api/audit", headers=api.auth("supervisor"))).status_code == 403

    r = await api.client.get("/api/audit?format=csv&target_type=skill&target_id=csv_a", headers=admin)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 1 and rows[0]["action"] == "skill.create" and rows[0]["actor"] == "std-admin"
    after = json.loads(rows[0]["after"])
    assert after["description"] == "=cmd|' /C calc'!A0"  # inside JSON: not a formula
    # Cells a spreadsheet would run as formulas are quoted (other components write entries too).
    with psycopg.connect(api.db.dsn) as conn:
        conn.execute(
            "INSERT INTO aicc.audit_log (actor, action, target_type, target_id) "
            "VALUES ('=2+3', 'x', 't', '@A1')"
        )
    r = await api.client.get("/api/audit", params={"format": "csv", "actor": "=2+3"}, headers=admin)
    row = next(csv.DictReader(io.StringIO(r.text)))
    assert row["actor"] == "'=2+3" and row["target_id"] == "'@A1"
