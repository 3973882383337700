"""Shared helpers for tests of the appliance API's routes (appliance/api): reuse them for your router.

Fixtures -- import them into your test module (pytest finds fixtures imported there; they are
named *_fixture in Python so that test parameters do not shadow the imports):

    from tests.unit.api_support import Api, api_db_fixture, api_fixture, api_users_fixture  # noqa: F401

- `api_db` (session): a throwaway PostgreSQL 15 cluster with every migration applied, and a secret key
  file -> ApiDatabase (dsn, secret_key, folder). One per test session, shared by every module.
- `api_users` (session): one user per role (agent, supervisor, admin, auditor), each with a password
  and an API token -> dict[role, ApiUser]. Do not disable them or change their roles; make your own
  with `make_user` for that.
- `api` (function, async): Api -- the app (create_app) over a fresh pool, and `api.client`, an
  httpx.AsyncClient over ASGITransport (no server, no lifespan). Use it in `@pytest.mark.asyncio`
  tests:

    @pytest.mark.asyncio
    async def test_queues(api: Api) -> None:
        r = await api.client.get("/api/queues", headers=api.auth("supervisor"))
        assert r.status_code == 200

Helpers: `make_user(db, role, ...)` (a user straight in the database, with a token and/or password),
`open_api(db, users, **settings)` (an Api with other AppConfig settings, e.g. login_max_failures=2),
`api_config(db, **settings)`, `fresh_database(db, name)` (a second migrated database in the same
cluster, for tests that change things others rely on), `audit_since(db, after_id)`, `last_audit_id`.

Passwords are hashed with cheap argon2id parameters here (FAST_HASHER) so logins take milliseconds;
the service itself uses the RFC 9106 profile (test_api_auth checks that).
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from argon2 import PasswordHasher
from fastapi import FastAPI
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.api.app import create_app
from aicc.appliance.api.auth import Passwords, display_prefix, new_token, token_digest
from aicc.appliance.api.config import AppConfig
from aicc.appliance.api.deps import ApiState, Pool
from aicc.appliance.db.migrate import all_migrations, apply
from aicc.appliance.db.scratch import scratch_cluster

ROLES = ("agent", "supervisor", "admin", "auditor")
SECRET_KEY = "test-secret-key-0123456789abcdef-not-for-production"
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
_names = itertools.count(1)


@dataclass(frozen=True)
class ApiDatabase:
    dsn: str
    secret_key: bytes
    folder: Path  # holds the dsn and secret key files the config names


@dataclass(frozen=True)
class ApiUser:
    id: int
    username: str
    role: str
    password: str | None
    token: str | None
    token_id: int | None

    @property
    def headers(self) -> dict[str, str]:
        assert self.token, f"user {self.username} was made without a token"
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    pool: Pool
    config: AppConfig
    users: dict[str, ApiUser]
    db: ApiDatabase

    @property
    def state(self) -> ApiState:
        state: ApiState = self.app.state.aicc
        return state

    def auth(self, who: str | ApiUser) -> dict[str, str]:
        """Authorization headers of a role's standard user, or of a given user."""
        return (self.users[who] if isinstance(who, str) else who).headers

    def client_from(self, address: str) -> httpx.AsyncClient:
        """Another client whose requests come from `address` (the caller must close it)."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def _database(dsn: str) -> ApiDatabase:
    folder = Path(tempfile.mkdtemp(prefix="aicc-api-test-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    (folder / "dsn").write_text(dsn + "\n", encoding="utf-8")
    (folder / "secret.key").write_text(SECRET_KEY + "\n", encoding="utf-8")
    return ApiDatabase(dsn=dsn, secret_key=SECRET_KEY.encode(), folder=folder)


@pytest.fixture(scope="session", name="api_db")
def api_db_fixture() -> Iterator[ApiDatabase]:
    """A migrated throwaway cluster for the whole session."""
    with scratch_cluster("aicc-api-pg-", "-c fsync=off -c full_page_writes=off") as dsn:
        apply(dsn, all_migrations())
        yield _database(dsn)


def fresh_database(db: ApiDatabase, name: str) -> ApiDatabase:
    """Another migrated database in the cluster of `db` (same secret key)."""
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = db.dsn.replace("dbname=aicc", f"dbname={name}")
    apply(dsn, all_migrations())
    return _database(dsn)


def make_token(db: ApiDatabase, user_id: int, *, kind: str = "api", name: str = "test") -> tuple[int, str]:
    """A new token for a user, stored as the service stores it; returns (id, token)."""
    token = new_token()
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute(
            "INSERT INTO aicc.api_tokens (user_id, kind, name, token_hash, prefix) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (user_id, kind, name, token_digest(db.secret_key, token), display_prefix(token)),
        ).fetchone()
    assert row is not None
    return int(row[0]), token


def make_user(
    db: ApiDatabase,
    role: str,
    *,
    username: str | None = None,
    password: str | None = "Correct-Horse-9",
    token: bool = True,
) -> ApiUser:
    """A user straight in the database (no audit entry), with a password and an API token."""
    username = username or f"{role}-{next(_names)}"
    password_hash = FAST_HASHER.hash(password) if password else None
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute(
            "INSERT INTO aicc.users (username, display_name, role, password_hash) VALUES (%s, %s, %s, %s) "
            "RETURNING id",
            (username, username.title(), role, password_hash),
        ).fetchone()
    assert row is not None
    token_id, raw = make_token(db, int(row[0])) if token else (None, None)
    return ApiUser(int(row[0]), username, role, password, raw, token_id)


@pytest.fixture(scope="session", name="api_users")
def api_users_fixture(api_db: ApiDatabase) -> dict[str, ApiUser]:
    return {role: make_user(api_db, role, username=f"std-{role}") for role in ROLES}


def api_config(db: ApiDatabase, **settings: Any) -> AppConfig:
    return AppConfig.model_validate(
        {
            "database_dsn_file": db.folder / "dsn",
            "secret_key_file": db.folder / "secret.key",
            "public_url": "https://aicc.test",
            # No scheduled purge in tests: back-dated rows of other tests must stay (test_retention.py
            # turns it on where it tests it).
            "retention_interval_s": 0,
            **settings,
        }
    )


@asynccontextmanager
async def open_api(db: ApiDatabase, users: dict[str, ApiUser], **settings: Any) -> AsyncIterator[Api]:
    """The app with `settings` over its own pool, and a client; closed afterwards."""
    pool: Pool = AsyncConnectionPool(
        db.dsn,
        min_size=1,
        max_size=4,
        connection_class=AsyncConnection[DictRow],
        kwargs={"row_factory": dict_row},
        open=False,
    )
    await pool.open(wait=True)
    config = api_config(db, **settings)
    app = create_app(config, pool=pool)
    app.state.aicc.passwords = Passwords(hasher=FAST_HASHER)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(app=app, client=client, pool=pool, config=config, users=users, db=db)
    finally:
        await pool.close()


@pytest_asyncio.fixture(name="api")
async def api_fixture(api_db: ApiDatabase, api_users: dict[str, ApiUser]) -> AsyncIterator[Api]:
    async with open_api(api_db, api_users) as opened:
        yield opened


def last_audit_id(db: ApiDatabase) -> int:
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM aicc.audit_log").fetchone()
    return int(row[0]) if row else 0


def audit_since(db: ApiDatabase, after_id: int) -> list[dict[str, Any]]:
    """Audit entries written after entry `after_id`, oldest first."""
    with psycopg.connect(db.dsn, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM aicc.audit_log WHERE id > %s ORDER BY id", (after_id,)).fetchall()
