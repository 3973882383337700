"""Logging in and out, sessions and API tokens, lockout and throttling, one's own password."""

from __future__ import annotations

import hmac
from hashlib import sha256

import psycopg
import pytest

from aicc.appliance.api.auth import LoginThrottle, Passwords, weak_password_reason
from tests.unit.api_support import (
    Api,
    ApiDatabase,
    ApiUser,
    api_db_fixture,  # noqa: F401
    api_fixture,  # noqa: F401
    api_users_fixture,  # noqa: F401
    audit_since,
    last_audit_id,
    make_user,
    open_api,
)


def sql(db: ApiDatabase, query: str, *params: object) -> None:
    with psycopg.connect(db.dsn) as conn:
        conn.execute(query.encode(), params)


async def login(api: Api, user: ApiUser, password: str | None = None) -> tuple[int, dict[str, object]]:
    r = await api.client.post(
        "/api/auth/login", json={"username": user.username, "password": password or user.password}
    )
    return r.status_code, r.json()


@pytest.mark.asyncio
async def test_passwords_are_argon2id_with_the_rfc_9106_low_memory_profile() -> None:
    passwords = Passwords()
    stored = await passwords.hash("Correct-Horse-9")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert await passwords.verify(stored, "Correct-Horse-9")
    assert not await passwords.verify(stored, "correct-horse-9")
    assert not await passwords.verify(None, "Correct-Horse-9")  # unknown user: a dummy hash, never a match
    assert not await passwords.verify("not a hash", "x")


@pytest.mark.parametrize(
    ("password", "ok"),
    [
        ("Short-1a", False),  # 8 characters
        ("alllowercaseletters", True),  # 16+ of anything
        ("alllowercase", False),  # 12, one class
        ("Lowerandupper", False),  # 13, two classes
        ("Lower-and-upper", True),  # 3 classes
        ("lower1234567", False),  # 2 classes
        ("lower-1234567", True),  # 3 classes
        ("x" * 1025, False),  # absurdly long
    ],
)
def test_password_policy(password: str, ok: bool) -> None:
    assert (weak_password_reason(password, "alice") is None) is ok


def test_a_password_may_not_contain_the_username() -> None:
    reason = weak_password_reason("Alice-Wonderland-2026", "alice")
    assert reason is not None and "username" in reason
    assert weak_password_reason("lilililililililili", "lilililililililili") is not None
    assert weak_password_reason("Reliable-Pass-1", "li") is None  # a 2-letter name inside by chance


def test_throttle_window_slides() -> None:
    now = [1000.0]
    throttle = LoginThrottle(3, 60, clock=lambda: now[0], max_addresses=2)
    for _ in range(3):
        assert throttle.retry_after("a") is None
        throttle.failed("a")
        now[0] += 10
    assert throttle.retry_after("a") == 30  # the first failure (t=1000) leaves the window at t=1060
    now[0] += 31
    assert throttle.retry_after("a") is None
    throttle.failed("b")
    throttle.failed("c")  # a third address: the least recent ("a") is forgotten
    assert throttle.retry_after("a") is None


@pytest.mark.asyncio
async def test_login_opens_a_session_usable_by_bearer_and_cookie(api: Api) -> None:
    user = make_user(api.db, "agent", token=False)
    r = await api.client.post(
        "/api/auth/login", json={"username": user.username.upper(), "password": user.password}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    token = body["token"]
    assert token.startswith("aicc_") and len(token) == 48
    assert body["user"]["username"] == user.username and body["user"]["last_login_at"]
    cookie = r.headers["set-cookie"]
    assert "aicc_session=" in cookie and "HttpOnly" in cookie and "Secure" in cookie
    assert "samesite=strict" in cookie.lower()
    me = await api.client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["token_kind"] == "session" and "agent.self" in me.json()["permissions"]
    api.client.cookies.set("aicc_session", token)
    try:
        assert (await api.client.get("/api/auth/me")).json()["user"]["id"] == user.id
    finally:
        api.client.cookies.clear()


@pytest.mark.asyncio
async def test_wrong_password_and_unknown_user_answer_alike(api: Api) -> None:
    user = make_user(api.db, "agent")
    wrong = await api.client.post(
        "/api/auth/login", json={"username": user.username, "password": "nope-nope-1A"}
    )
    unknown = await api.client.post("/api/auth/login", json={"username": "nobody-here", "password": "x"})
    no_password = make_user(api.db, "agent", password=None)
    unset = await api.client.post("/api/auth/login", json={"username": no_password.username, "password": "x"})
    assert wrong.status_code == unknown.status_code == unset.status_code == 401
    assert wrong.json() == unknown.json() == unset.json()
    assert wrong.json()["error"]["message"] == "wrong username or password"


@pytest.mark.asyncio
async def test_lockout_after_failures_in_a_row_and_unlock_by_admin(
    api_db: ApiDatabase, api_users: dict
) -> None:
    async with open_api(api_db, api_users, login_max_failures=3, lockout_s=600) as api:
        user = make_user(api_db, "agent")
        # A success in between resets the count.
        assert (await login(api, user, "wrong-Password-1"))[0] == 401
        assert (await login(api, user, "wrong-Password-1"))[0] == 401
        assert (await login(api, user))[0] == 200
        before = last_audit_id(api_db)
        for _ in range(2):
            assert (await login(api, user, "wrong-Password-1"))[0] == 401
        r = await api.client.post(
            "/api/auth/login", json={"username": user.username, "password": "wrong-Password-1"}
        )
        assert r.status_code == 423
        assert 590 <= int(r.headers["retry-after"]) <= 600
        # Locked: even the right password is refused, with how long to wait.
        status, body = await login(api, user)
        assert status == 423 and "ask an admin to unlock" in str(body)
        locks = [e for e in audit_since(api_db, before) if e["action"] == "user.lock"]
        assert len(locks) == 1 and locks[0]["target_id"] == str(user.id) and locks[0]["actor"] == "system"
        shown = (await api.client.get(f"/api/users/{user.id}", headers=api.auth("admin"))).json()
        assert shown["locked"] is True
        forbidden = await api.client.post(f"/api/users/{user.id}/unlock", headers=api.auth("supervisor"))
        assert forbidden.status_code == 403
        unlocked = await api.client.post(f"/api/users/{user.id}/unlock", headers=api.auth("admin"))
        assert unlocked.status_code == 200 and unlocked.json()["locked"] is False
        assert (await login(api, user))[0] == 200


@pytest.mark.asyncio
async def test_a_lockout_ends_by_itself(api_db: ApiDatabase, api_users: dict) -> None:
    async with open_api(api_db, api_users, login_max_failures=1, lockout_s=600) as api:
        user = make_user(api_db, "agent")
        assert (await login(api, user, "wrong-Password-1"))[0] == 423
        sql(api_db, "UPDATE aicc.users SET locked_until = now() - interval '1 second' WHERE id = %s", user.id)
        assert (await login(api, user))[0] == 200


@pytest.mark.asyncio
async def test_too_many_failures_from_one_address_get_429(api_db: ApiDatabase, api_users: dict) -> None:
    async with open_api(api_db, api_users, ip_max_failures=3, ip_window_s=300, login_max_failures=50) as api:
        user = make_user(api_db, "agent")
        async with api.client_from("198.51.100.7") as attacker, api.client_from("198.51.100.8") as other:
            for i in range(3):
                r = await attacker.post(
                    "/api/auth/login", json={"username": f"guess-{i}", "password": "Guess-guess-1"}
                )
                assert r.status_code == 401
            r = await attacker.post(
                "/api/auth/login", json={"username": user.username, "password": user.password}
            )
            assert r.status_code == 429
            assert 1 <= int(r.headers["retry-after"]) <= 300
            assert "198.51.100.7" in r.json()["error"]["message"]
            # Another address is not affected.
            r = await other.post(
                "/api/auth/login", json={"username": user.username, "password": user.password}
            )
            assert r.status_code == 200


@pytest.mark.asyncio
async def test_expired_and_idle_sessions_are_refused(api_db: ApiDatabase, api_users: dict) -> None:
    async with open_api(api_db, api_users, session_idle_s=120, session_ttl_s=3600) as api:
        user = make_user(api_db, "supervisor", token=False)
        sessions = []
        for _ in range(3):
            status, body = await login(api, user)
            assert status == 200
            sessions.append({"Authorization": f"Bearer {body['token']}"})
        expired, idle, busy = sessions
        sql(
            api_db,
            "UPDATE aicc.api_tokens SET expires_at = now() - interval '1 second' WHERE user_id = %s",
            user.id,
        )
        r = await api.client.get("/api/auth/me", headers=expired)
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
        assert r.headers["www-authenticate"] == "Bearer"
        # The other two: a fresh expiry, but one unused for longer than session_idle_s.
        sql(
            api_db,
            "UPDATE aicc.api_tokens SET expires_at = now() + interval '1 hour', "
            "created_at = now() - interval '10 minutes', last_used_at = now() - interval '3 minutes' "
            "WHERE user_id = %s",
            user.id,
        )
        sql(
            api_db,
            "UPDATE aicc.api_tokens SET last_used_at = now() - interval '1 minute' WHERE token_hash = %s",
            hmac.new(api_db.secret_key, busy["Authorization"][7:].encode(), sha256).digest(),
        )
        r = await api.client.get("/api/auth/me", headers=idle)
        assert r.status_code == 401 and "idle" in r.json()["error"]["message"]
        assert (await api.client.get("/api/auth/me", headers=busy)).status_code == 200
        assert (await api.client.get("/api/auth/me", headers=expired)).status_code == 401


@pytest.mark.asyncio
async def test_logout_ends_the_session_only(api: Api) -> None:
    user = make_user(api.db, "agent")
    _, body = await login(api, user)
    session = {"Authorization": f"Bearer {body['token']}"}
    r = await api.client.post("/api/auth/logout", headers=session)
    assert r.status_code == 204
    assert "aicc_session=" in r.headers["set-cookie"]  # cleared
    r = await api.client.get("/api/auth/me", headers=session)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    # An API token is not a session: logout refuses rather than silently revoking it.
    r = await api.client.post("/api/auth/logout", headers=user.headers)
    assert r.status_code == 409 and "DELETE /api/tokens" in r.json()["error"]["message"]
    assert (await api.client.get("/api/auth/me", headers=user.headers)).status_code == 200


@pytest.mark.asyncio
async def test_api_token_is_shown_once_and_stored_only_as_a_keyed_hash(api: Api) -> None:
    user = make_user(api.db, "auditor")
    r = await api.client.post(
        "/api/tokens", json={"name": "reporting script", "expires_in_days": 30}, headers=user.headers
    )
    assert r.status_code == 201, r.text
    created = r.json()
    token = created["token"]
    assert token.startswith(created["prefix"]) and created["expires_at"]
    listed = (await api.client.get("/api/tokens", headers=user.headers)).json()
    assert {t["name"] for t in listed} == {"test", "reporting script"}
    assert all("token" not in t for t in listed)
    assert (
        await api.client.get("/api/audit", headers={"Authorization": f"Bearer {token}"})
    ).status_code == 200
    with psycopg.connect(api.db.dsn) as conn:
        (stored,) = conn.execute(
            "SELECT token_hash FROM aicc.api_tokens WHERE id = %s", (created["id"],)
        ).fetchone() or (None,)
        assert bytes(stored) == hmac.new(api.db.secret_key, token.encode(), sha256).digest()
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'aicc'")]
        secret_part = token[len(created["prefix"]) :]
        for table in tables:
            rows = conn.execute(f'SELECT t::text FROM aicc."{table}" t'.encode()).fetchall()
            assert not any(secret_part in row[0] for row in rows), (
                f"the token's secret part is in aicc.{table}"
            )


@pytest.mark.asyncio
async def test_revoked_tokens_and_disabled_users_are_refused(api: Api) -> None:
    user = make_user(api.db, "agent")
    r = await api.client.post("/api/tokens", json={"name": "second"}, headers=user.headers)
    second = r.json()
    second_headers = {"Authorization": f"Bearer {second['token']}"}
    r = await api.client.delete(f"/api/tokens/{second['id']}", headers=user.headers)
    assert r.status_code == 200 and r.json()["revoked_at"]
    assert (await api.client.get("/api/auth/me", headers=second_headers)).status_code == 401
    assert (await api.client.delete(f"/api/tokens/{second['id']}", headers=user.headers)).status_code == 409
    # Another user's token: invisible to an agent, revocable by an admin.
    other = make_user(api.db, "agent")
    assert (await api.client.delete(f"/api/tokens/{other.token_id}", headers=user.headers)).status_code == 404
    assert (await api.client.get("/api/tokens?all_users=true", headers=user.headers)).status_code == 403
    everyone = (await api.client.get("/api/tokens?all_users=true", headers=api.auth("admin"))).json()
    assert other.token_id in {t["id"] for t in everyone}
    r = await api.client.delete(f"/api/tokens/{other.token_id}", headers=api.auth("admin"))
    assert r.status_code == 200
    assert (await api.client.get("/api/auth/me", headers=other.headers)).status_code == 401
    # Disabling a user ends all its access.
    assert (await api.client.delete(f"/api/users/{user.id}", headers=api.auth("admin"))).status_code == 200
    r = await api.client.get("/api/auth/me", headers=user.headers)
    assert r.status_code == 401


@pytest.mark.asyncio
async def test_unknown_and_malformed_tokens_are_refused(api: Api) -> None:
    for headers in ({"Authorization": "Bearer aicc_nonsense"}, {"Authorization": "Basic eDp5"}, {}):
        r = await api.client.get("/api/auth/me", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "unauthorized"


@pytest.mark.asyncio
async def test_changing_ones_own_password(api: Api) -> None:
    user = make_user(api.db, "agent", token=False)
    _, first = await login(api, user)
    _, second = await login(api, user)
    current = {"Authorization": f"Bearer {first['token']}"}
    other = {"Authorization": f"Bearer {second['token']}"}
    r = await api.client.post(
        "/api/auth/password",
        json={"old_password": "Wrong-Horse-9", "new_password": "New-Horse-1234"},
        headers=current,
    )
    assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "old_password"
    r = await api.client.post(
        "/api/auth/password", json={"old_password": user.password, "new_password": "weak"}, headers=current
    )
    assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "new_password"
    r = await api.client.post(
        "/api/auth/password",
        json={"old_password": user.password, "new_password": "New-Horse-1234"},
        headers=current,
    )
    assert r.status_code == 200 and r.json()["password_changed_at"]
    assert (await api.client.get("/api/auth/me", headers=current)).status_code == 200
    assert (await api.client.get("/api/auth/me", headers=other)).status_code == 401  # other sessions end
    assert (await login(api, user))[0] == 401
    assert (await login(api, user, "New-Horse-1234"))[0] == 200
