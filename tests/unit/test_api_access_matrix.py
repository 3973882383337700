"""Every operation in the app's OpenAPI document (routes added by other components included) against
the role matrix: no token -> 401, a role without the operation's permission -> 403, a role with it ->
neither. Also the app's behaviour around the routes: health, error bodies, the database away, metrics."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.api.app import AiccApi, create_app
from aicc.appliance.api.deps import Principal, mask_number, route_permission
from aicc.appliance.api.permissions import PERMISSIONS, ROLE_PERMISSIONS, ROLES
from tests.unit.api_support import (
    Api,
    ApiDatabase,
    ApiUser,
    api_config,
    api_db_fixture,  # noqa: F401
    api_fixture,  # noqa: F401
    api_users_fixture,  # noqa: F401
)

PUBLIC = {("GET", "/api/health"), ("POST", "/api/auth/login")}


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method in ("get", "put", "post", "patch", "delete")
    ]


def sample_url(path: str, op: dict[str, Any]) -> str:
    """The path with each parameter filled by a value of its type that names nothing existing."""
    for param in op.get("parameters", []):
        if param["in"] == "path":
            kind = param.get("schema", {}).get("type")
            path = path.replace("{" + param["name"] + "}", "999999" if kind == "integer" else "no-such-thing")
    return path


async def call(api: Api, method: str, url: str, op: dict[str, Any], headers: dict[str, str]) -> Any:
    body = {} if "requestBody" in op else None
    return await api.client.request(method, url, json=body, headers=headers)


@pytest.mark.asyncio
async def test_every_operation_enforces_its_permission(api: Api) -> None:
    schema = (await api.client.get("/api/openapi.json")).json()
    ops = operations(schema)
    assert len(ops) >= 30
    public = {(m, p) for m, p, op in ops if "x-permission" not in op}
    assert public == PUBLIC, "every route but health and login must declare a permission"
    for method, path, op in ops:
        url = sample_url(path, op)
        if (method, path) in PUBLIC:
            r = await call(api, method, url, op, {})
            assert r.status_code not in (401, 403), (method, path)
            continue
        permission = op["x-permission"]
        assert permission in PERMISSIONS, (method, path, permission)
        for headers in ({}, {"Authorization": "Bearer aicc_not-a-real-token"}):
            r = await call(api, method, url, op, headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
        for role in ROLES:
            user: ApiUser = api.users[role]
            r = await call(api, method, url, op, user.headers)
            if permission in ROLE_PERMISSIONS[role]:
                assert r.status_code not in (401, 403), (method, path, role, r.text)
            else:
                assert r.status_code == 403, (method, path, role, r.text)
                message = r.json()["error"]["message"]
                assert permission in message and role in message


def test_the_document_matches_the_routes_dependencies(api_db: ApiDatabase) -> None:
    app = create_app(api_config(api_db))
    assert isinstance(app, AiccApi)
    schema = app.openapi()
    for path, route in app.api_routes():
        if not route.include_in_schema:  # the pages (/desk/, /static/...): public files, no API
            continue
        for method in route.methods:
            assert schema["paths"][path][method.lower()].get("x-permission") == route_permission(route)


def test_the_auditor_reads_everything_and_changes_nothing() -> None:
    reads = {p for p in PERMISSIONS if p.endswith(".read")}
    assert ROLE_PERMISSIONS["auditor"] == reads | {"tokens.own"}
    assert ROLE_PERMISSIONS["admin"] == frozenset(PERMISSIONS)
    assert ROLE_PERMISSIONS["agent"] < ROLE_PERMISSIONS["supervisor"] < ROLE_PERMISSIONS["admin"]


@pytest.mark.asyncio
async def test_error_bodies_health_and_docs(api: Api) -> None:
    r = await api.client.get("/api/nothing-here")
    assert r.status_code == 404
    assert r.json() == {
        "error": {"code": "not_found", "message": "no route GET /api/nothing-here", "problems": []}
    }
    r = await api.client.get("/api/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["migrations_pending"] == []
    assert (await api.client.get("/api/docs")).status_code == 404  # no CDN-backed pages
    r = await api.client.get("/api/users/not-a-number", headers=api.auth("admin"))
    assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "path.user_id"
    r = await api.client.post(
        "/api/skills", content=b"{not json", headers={**api.auth("admin"), "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = await api.client.post(
        "/api/skills", json={"name": "nul_char", "description": "a\x00b"}, headers=api.auth("admin")
    )
    assert r.status_code == 422 and "NUL" in r.json()["error"]["message"]


@pytest.mark.asyncio
async def test_request_metrics_are_labelled_by_route_template(api: Api) -> None:
    admin = api.auth("admin")
    await api.client.get(f"/api/users/{api.users['agent'].id}", headers=admin)
    await api.client.get("/api/users/424242", headers=admin)
    await api.client.get("/api/no/such/route/123")
    registry = api.state.metrics.registry
    samples = [s for m in registry.collect() for s in m.samples if s.name == "aicc_api_requests_total"]
    labels = {(s.labels["method"], s.labels["route"], s.labels["status"]) for s in samples}
    assert ("GET", "/api/users/{user_id}", "2xx") in labels
    assert ("GET", "/api/users/{user_id}", "4xx") in labels
    assert ("GET", "unmatched", "4xx") in labels
    assert not [s for s in samples if any(ch.isdigit() for ch in s.labels["route"])]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.asyncio
async def test_an_unreachable_database_answers_503_with_retry_after(
    api_db: ApiDatabase, api_users: dict
) -> None:
    pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
        f"host=127.0.0.1 port={_closed_port()} user=aicc_app dbname=aicc connect_timeout=1",
        min_size=1,
        max_size=1,
        connection_class=AsyncConnection[DictRow],
        kwargs={"row_factory": dict_row},
        timeout=0.5,
        open=False,
    )
    await pool.open(wait=False)
    try:
        app = create_app(api_config(api_db), pool=pool)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for method, url, body in (
                ("GET", "/api/queues", None),
                ("POST", "/api/auth/login", {"username": "x", "password": "y"}),
            ):
                r = await client.request(method, url, json=body, headers=api_users["admin"].headers)
                assert r.status_code == 503, (url, r.text)
                assert r.headers["retry-after"] == "5"
                assert r.json()["error"]["code"] == "database_unavailable"
            r = await client.get("/api/health")
            assert r.status_code == 503 and r.json()["database"] == "unreachable"
            assert "retry-after" in r.headers
    finally:
        await pool.close()


def test_the_lifespan_opens_and_closes_its_own_pool(api_db: ApiDatabase, api_users: dict) -> None:
    app = create_app(api_config(api_db, pool_min=1, pool_max=2))
    with TestClient(app) as client:
        assert client.get("/api/health").json()["status"] == "ok"
        assert client.get("/api/auth/me", headers=api_users["auditor"].headers).status_code == 200
        pool = app.state.aicc.pool
        assert pool is not None and not pool.closed
    assert app.state.aicc.pool is None and pool.closed


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("13800138000", "138****8000"),
        ("+8613800138000", "+861******8000"),
        ("02112345678", "021****5678"),
        ("1001", "**01"),
        ("12", "**"),
        ("", ""),
    ],
)
def test_numbers_are_masked_without_numbers_full(number: str, masked: str) -> None:
    supervisor = Principal(user_id=1, username="s", role="supervisor", token_id=1)
    admin = Principal(user_id=2, username="a", role="admin", token_id=2)
    assert mask_number(number, supervisor) == masked
    assert mask_number(number, admin) == number
