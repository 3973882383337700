"""Dispositions: the outcome codes agents pick at wrap-up (resolved, follow_up, ...). Reports group
by code; the event history keeps the code itself, so deleting one loses nothing already recorded.
Setting active=false hides a code from agents without deleting it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

from aicc.appliance.acd.policy import Language
from aicc.appliance.api import audit
from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    PoolDep,
    Principal,
    client_address,
    conflict,
    error_responses,
    not_found,
    require,
)
from aicc.appliance.api.routes import Strict

router = APIRouter(tags=["dispositions"], responses=COMMON_ERRORS)

Code = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")]
Labels = dict[Language, Annotated[str, Field(min_length=1, max_length=200)]]


class Disposition(BaseModel):
    code: Code
    label: Labels = Field(description='what agents see, per language: {"en": "Resolved", "zh": "已解决"}')
    active: bool = True


class DispositionCreate(Strict):
    code: Code
    label: Labels = Field(default_factory=dict)
    active: bool = True


class DispositionUpdate(Strict):
    label: Labels | None = None
    active: bool | None = None


async def _get(conn: AsyncConnection[DictRow], code: str) -> Disposition | None:
    row = await (
        await conn.execute(
            "SELECT code, label, active FROM aicc.dispositions WHERE code = %s FOR UPDATE", (code,)
        )
    ).fetchone()
    return Disposition(**row) if row else None


async def insert_disposition(conn: AsyncConnection[DictRow], d: DispositionCreate) -> bool:
    """Add a disposition; False when the code exists already."""
    cur = await conn.execute(
        "INSERT INTO aicc.dispositions (code, label, active) VALUES (%s, %s, %s) "
        "ON CONFLICT (code) DO NOTHING",
        (d.code, Jsonb(d.label), d.active),
    )
    return cur.rowcount == 1


@router.get("/api/dispositions", response_model=list[Disposition])
async def list_dispositions(
    principal: Annotated[Principal, Depends(require("config.read"))],
    pool: PoolDep,
    include_inactive: bool = True,
) -> list[Disposition]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT code, label, active FROM aicc.dispositions WHERE %s OR active ORDER BY code",
                (include_inactive,),
            )
        ).fetchall()
    return [Disposition(**r) for r in rows]


@router.post("/api/dispositions", response_model=Disposition, status_code=201, responses=error_responses(409))
async def create_disposition(
    body: DispositionCreate,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> Disposition:
    async with pool.connection() as conn:
        if not await insert_disposition(conn, body):
            raise conflict(f"disposition {body.code!r} exists already")
        created = Disposition(**body.model_dump())
        await audit.record(
            conn,
            principal,
            "disposition.create",
            "disposition",
            body.code,
            None,
            created,
            client_address(request),
        )
    return created


@router.put("/api/dispositions/{code}", response_model=Disposition, responses=error_responses(404))
async def update_disposition(
    code: str,
    body: DispositionUpdate,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> Disposition:
    """Change the labels and/or whether agents may pick it."""
    async with pool.connection() as conn:
        before = await _get(conn, code)
        if before is None:
            raise not_found("disposition", code)
        after = before.model_copy(update=body.model_dump(exclude_none=True))
        await conn.execute(
            "UPDATE aicc.dispositions SET label = %s, active = %s WHERE code = %s",
            (Jsonb(after.label), after.active, code),
        )
        await audit.record(
            conn, principal, "disposition.update", "disposition", code, before, after, client_address(request)
        )
    return after


@router.delete("/api/dispositions/{code}", status_code=204, responses=error_responses(404))
async def delete_disposition(
    code: str,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> Response:
    async with pool.connection() as conn:
        before = await _get(conn, code)
        if before is None:
            raise not_found("disposition", code)
        await conn.execute("DELETE FROM aicc.dispositions WHERE code = %s", (code,))
        await audit.record(
            conn, principal, "disposition.delete", "disposition", code, before, None, client_address(request)
        )
    return Response(status_code=204)
