"""Users: create, read, change, passwords set by an admin, disable (never delete)."""

from __future__ import annotations

import psycopg
import pytest

from tests.unit.api_support import (
    Api,
    api_db_fixture,  # noqa: F401
    api_fixture,  # noqa: F401
    api_users_fixture,  # noqa: F401
    make_user,
)


def reloads(api: Api) -> int:
    with psycopg.connect(api.db.dsn) as conn:
        row = conn.execute("SELECT count(*) FROM aicc.acd_commands WHERE kind = 'reload'").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.asyncio
async def test_create_read_and_list_users(api: Api) -> None:
    admin = api.auth("admin")
    body = {
        "username": "li.na",
        "display_name": "李娜",
        "role": "agent",
        "language": "zh",
        "password": "Li-Na-2026-ok",
    }
    r = await api.client.post("/api/users", json=body, headers=admin)
    assert r.status_code == 201, r.text
    user = r.json()
    assert user["username"] == "li.na" and user["has_password"] and not user["disabled"]
    assert "password" not in user and "password_hash" not in user
    assert (await api.client.post("/api/users", json=body, headers=admin)).status_code == 409
    got = await api.client.get(f"/api/users/{user['id']}", headers=api.auth("supervisor"))
    assert got.status_code == 200 and got.json()["display_name"] == "李娜"
    agents = (await api.client.get("/api/users?role=agent", headers=admin)).json()
    assert "li.na" in {u["username"] for u in agents} and {u["role"] for u in agents} == {"agent"}
    assert (await api.client.get("/api/users/999999", headers=admin)).status_code == 404
    # The new user logs in with the password the admin chose.
    r = await api.client.post("/api/auth/login", json={"username": "li.na", "password": "Li-Na-2026-ok"})
    assert r.status_code == 200


@pytest.mark.asyncio
async def test_bad_user_requests_name_each_field(api: Api) -> None:
    r = await api.client.post(
        "/api/users",
        json={"username": "Bad Name", "role": "boss", "colour": "red"},
        headers=api.auth("admin"),
    )
    assert r.status_code == 422
    problems = {p["field"]: p["message"] for p in r.json()["error"]["problems"]}
    assert set(problems) == {"username", "role", "colour"}
    assert problems["colour"] == "not a known field"
    r = await api.client.post(
        "/api/users",
        json={"username": "weakling", "role": "agent", "password": "password"},
        headers=api.auth("admin"),
    )
    assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "password"


@pytest.mark.asyncio
async def test_a_user_without_a_password_cannot_log_in_until_an_admin_sets_one(api: Api) -> None:
    r = await api.client.post(
        "/api/users", json={"username": "new-agent", "role": "agent"}, headers=api.auth("admin")
    )
    user = r.json()
    assert user["has_password"] is False
    login = {"username": "new-agent", "password": "Fresh-Start-77"}
    assert (await api.client.post("/api/auth/login", json=login)).status_code == 401
    r = await api.client.post(
        f"/api/users/{user['id']}/password", json={"password": "new-agent-Pass1"}, headers=api.auth("admin")
    )
    assert r.status_code == 422  # contains the username
    r = await api.client.post(
        f"/api/users/{user['id']}/password", json={"password": login["password"]}, headers=api.auth("admin")
    )
    assert r.status_code == 200 and r.json()["has_password"]
    session = (await api.client.post("/api/auth/login", json=login)).json()["token"]
    # A reset ends the user's sessions.
    await api.client.post(
        f"/api/users/{user['id']}/password", json={"password": "Another-Start-88"}, headers=api.auth("admin")
    )
    assert (
        await api.client.get("/api/auth/me", headers={"Authorization": f"Bearer {session}"})
    ).status_code == 401


@pytest.mark.asyncio
async def test_patch_changes_only_what_is_given(api: Api) -> None:
    user = make_user(api.db, "agent")
    r = await api.client.patch(
        f"/api/users/{user.id}",
        json={"display_name": "Wang Fang", "role": "supervisor"},
        headers=api.auth("admin"),
    )
    assert r.status_code == 200
    assert r.json()["display_name"] == "Wang Fang" and r.json()["role"] == "supervisor"
    assert r.json()["language"] == "zh"
    # The new role applies to the user's existing token at once.
    assert (await api.client.get("/api/users", headers=user.headers)).status_code == 200


@pytest.mark.asyncio
async def test_an_admin_cannot_demote_or_disable_itself(api: Api) -> None:
    admin = make_user(api.db, "admin")
    for method, body in (("PATCH", {"role": "agent"}), ("PATCH", {"disabled": True}), ("DELETE", None)):
        r = await api.client.request(method, f"/api/users/{admin.id}", json=body, headers=admin.headers)
        assert r.status_code == 409, (method, body)
        assert "another admin" in r.json()["error"]["message"]
    r = await api.client.patch(f"/api/users/{admin.id}", json={"display_name": "Me"}, headers=admin.headers)
    assert r.status_code == 200


@pytest.mark.asyncio
async def test_delete_disables_revokes_and_keeps_the_user(api: Api) -> None:
    user = make_user(api.db, "agent")
    await api.client.put(f"/api/agents/{user.id}", json={"extension": None}, headers=api.auth("admin"))
    before_reloads = reloads(api)
    r = await api.client.delete(f"/api/users/{user.id}", headers=api.auth("admin"))
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert reloads(api) == before_reloads + 1  # it was an agent: the ACD stops routing to it
    assert (await api.client.get("/api/auth/me", headers=user.headers)).status_code == 401
    assert (await api.client.get(f"/api/users/{user.id}", headers=api.auth("admin"))).status_code == 200
    with psycopg.connect(api.db.dsn) as conn:
        live = conn.execute(
            "SELECT count(*) FROM aicc.api_tokens WHERE user_id = %s AND revoked_at IS NULL", (user.id,)
        ).fetchone()
    assert live == (0,)
    listed = (await api.client.get("/api/users?include_disabled=false", headers=api.auth("admin"))).json()
    assert user.id not in {u["id"] for u in listed}
    # Enabled again; old tokens stay revoked.
    r = await api.client.patch(f"/api/users/{user.id}", json={"disabled": False}, headers=api.auth("admin"))
    assert r.status_code == 200 and r.json()["disabled"] is False
    assert (await api.client.get("/api/auth/me", headers=user.headers)).status_code == 401
