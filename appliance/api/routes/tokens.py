"""API tokens (long-lived, named, shown once at creation) and the caller's login sessions.

Everyone manages their own; with tokens.all (admins) every user's tokens can be listed and revoked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import BaseModel, Field

from aicc.appliance.api import audit
from aicc.appliance.api.auth import issue_token
from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    ApiError,
    PoolDep,
    Principal,
    api_state,
    client_address,
    conflict,
    error_responses,
    not_found,
    require,
)
from aicc.appliance.api.routes import Strict

router = APIRouter(tags=["tokens"], responses=COMMON_ERRORS)


class TokenOut(BaseModel):
    id: int
    user_id: int
    username: str
    kind: Literal["api", "session"]
    name: str
    prefix: str = Field(description="the token's first characters, to recognise it")
    source: str = Field(description="client address it was created from")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    current: bool = Field(description="the token this request was made with")


class TokenCreate(Strict):
    name: Annotated[str, Field(min_length=1, max_length=100, description="what the token is for")]
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="none: until revoked")


class TokenCreated(TokenOut):
    token: str = Field(description="the token itself: shown this once, store it now")


_SELECT = (
    "SELECT t.id, t.user_id, u.username, t.kind, t.name, t.prefix, t.source, t.created_at, t.expires_at, "
    "t.last_used_at, t.revoked_at, t.id = %(current)s AS current "
    "FROM aicc.api_tokens t JOIN aicc.users u ON u.id = t.user_id "
)


async def _token(conn: AsyncConnection[DictRow], token_id: int, principal: Principal) -> TokenOut | None:
    row = await (
        await conn.execute(_SELECT + "WHERE t.id = %(id)s", {"id": token_id, "current": principal.token_id})
    ).fetchone()
    return TokenOut(**row) if row else None


@router.get("/api/tokens", response_model=list[TokenOut])
async def list_tokens(
    principal: Annotated[Principal, Depends(require("tokens.own"))],
    pool: PoolDep,
    all_users: bool = False,
    include_revoked: bool = False,
) -> list[TokenOut]:
    """The caller's tokens and sessions (every user's with all_users=true, which needs tokens.all);
    live ones only unless include_revoked=true."""
    if all_users and not principal.can("tokens.all"):
        raise ApiError(
            403,
            "forbidden",
            f"all_users=true needs the permission 'tokens.all', which the role "
            f"{principal.role!r} does not have",
        )
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                _SELECT + "WHERE (%(all)s OR t.user_id = %(user)s) AND (%(revoked)s OR (t.revoked_at IS NULL "
                "AND (t.expires_at IS NULL OR t.expires_at > now()))) ORDER BY t.id DESC",
                {
                    "all": all_users,
                    "user": principal.user_id,
                    "revoked": include_revoked,
                    "current": principal.token_id,
                },
            )
        ).fetchall()
    return [TokenOut(**r) for r in rows]


@router.post("/api/tokens", response_model=TokenCreated, status_code=201)
async def create_token(
    body: TokenCreate,
    request: Request,
    principal: Annotated[Principal, Depends(require("tokens.own"))],
    pool: PoolDep,
) -> TokenCreated:
    """A new API token for the caller, with the caller's role. The response is the only time the token
    is shown: the database keeps a keyed hash of it."""
    state = api_state(request)
    address = client_address(request)
    expires_in_s = body.expires_in_days * 86400 if body.expires_in_days else None
    async with pool.connection() as conn:
        record, token = await issue_token(
            conn,
            state.secret_key,
            user_id=principal.user_id,
            kind="api",
            name=body.name,
            expires_in_s=expires_in_s,
            source=address,
        )
        created = await _token(conn, record.id, principal)
        assert created is not None
        await audit.record(
            conn, principal, "token.create", "token", record.id, None, _audit_view(created), address
        )
    return TokenCreated(**created.model_dump(), token=token)


def _audit_view(token: TokenOut) -> dict[str, Any]:
    return token.model_dump(mode="json", exclude={"current", "last_used_at"})


@router.delete("/api/tokens/{token_id}", response_model=TokenOut, responses=error_responses(404, 409))
async def revoke_token(
    token_id: int,
    request: Request,
    principal: Annotated[Principal, Depends(require("tokens.own"))],
    pool: PoolDep,
) -> TokenOut:
    """Revoke one of the caller's tokens or sessions (anyone's with tokens.all)."""
    async with pool.connection() as conn:
        before = await _token(conn, token_id, principal)
        if before is None or (before.user_id != principal.user_id and not principal.can("tokens.all")):
            raise not_found("token", token_id)
        if before.revoked_at is not None:
            raise conflict(f"token {token_id} was revoked already, at {before.revoked_at.isoformat()}")
        await conn.execute("UPDATE aicc.api_tokens SET revoked_at = now() WHERE id = %s", (token_id,))
        after = await _token(conn, token_id, principal)
        assert after is not None
        await audit.record(
            conn,
            principal,
            "token.revoke",
            "token",
            token_id,
            _audit_view(before),
            _audit_view(after),
            client_address(request),
        )
    return after
