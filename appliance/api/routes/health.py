"""GET /api/health: is the database reachable, is its schema up to date. No token needed (load
balancers and `aicc status` probe it); it reveals nothing but names of pending migrations."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

import psycopg
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from aicc.appliance.api.deps import api_state
from aicc.appliance.db.migrate import all_migrations

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok", "database_unreachable", "migrations_pending"]
    database: Literal["ok", "unreachable"]
    migrations_pending: list[str]
    version: str


@functools.cache
def _known() -> tuple[tuple[str, int, str], ...]:
    return tuple((m.component, m.version, f"{m.component}/{m.name}") for m in all_migrations())


def aicc_version() -> str:
    try:
        return version("aicc")
    except PackageNotFoundError:
        return "unknown"


@router.get(
    "/api/health",
    response_model=Health,
    responses={
        503: {
            "model": Health,
            "description": "The database is unreachable, or migrations are pending",
            "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
        }
    },
)
async def health(request: Request, response: Response) -> Health:
    pool = api_state(request).pool
    try:
        if pool is None:
            raise psycopg.OperationalError("the pool is not open yet")
        async with pool.connection(timeout=3) as conn:
            rows = await (
                await conn.execute("SELECT component, version FROM aicc.schema_migrations")
            ).fetchall()
    except psycopg.errors.UndefinedTable:  # never migrated
        rows = []
    except psycopg.OperationalError:
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return Health(
            status="database_unreachable",
            database="unreachable",
            migrations_pending=[],
            version=aicc_version(),
        )
    applied = {(r["component"], r["version"]) for r in rows}
    pending = [name for component, number, name in _known() if (component, number) not in applied]
    if pending:
        response.status_code = 503
        response.headers["Retry-After"] = "60"
    return Health(
        status="migrations_pending" if pending else "ok",
        database="ok",
        migrations_pending=pending,
        version=aicc_version(),
    )
