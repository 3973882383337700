"""Users: list, create, change, set a password, unlock, disable. Users are never deleted (the audit
log and the event history name them); DELETE disables the user and revokes every token."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow
from pydantic import BaseModel, Field

from aicc.appliance.api import audit
from aicc.appliance.api.auth import weak_password_reason
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
from aicc.appliance.api.permissions import Role
from aicc.appliance.api.routes import Strict, request_acd_reload

router = APIRouter(tags=["users"], responses=COMMON_ERRORS)

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,63}$"
Username = Annotated[str, Field(pattern=USERNAME_PATTERN, description="lower case letters, digits, . _ -")]
DisplayName = Annotated[str, Field(max_length=200)]
Language = Literal["zh", "en"]
Password = Annotated[str, Field(min_length=1, max_length=1024)]


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    role: Role
    language: Language
    disabled: bool
    locked: bool = Field(description="locked out after too many failed logins (POST .../unlock ends it)")
    locked_until: datetime | None
    failed_logins: int
    has_password: bool = Field(description="false: no password login until an admin sets one")
    last_login_at: datetime | None
    password_changed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class UserCreate(Strict):
    username: Username
    display_name: DisplayName = ""
    role: Role
    language: Language = "zh"
    password: Password | None = Field(None, description="optional; without one the user cannot log in yet")


class UserPatch(Strict):
    display_name: DisplayName | None = None
    role: Role | None = None
    language: Language | None = None
    disabled: bool | None = Field(None, description="false re-enables a disabled user")


class PasswordSet(Strict):
    password: Password


USER_COLUMNS = sql.SQL(
    "id, username, display_name, role, language, disabled, coalesce(locked_until > now(), false) AS locked, "
    "locked_until, failed_logins, password_hash IS NOT NULL AS has_password, last_login_at, "
    "password_changed_at, created_at, updated_at"
)


async def fetch_user(conn: AsyncConnection[DictRow], user_id: int, *, lock: bool = False) -> UserOut | None:
    query = sql.SQL("SELECT {} FROM aicc.users WHERE id = %s {}").format(
        USER_COLUMNS, sql.SQL("FOR UPDATE" if lock else "")
    )
    row = await (await conn.execute(query, (user_id,))).fetchone()
    return UserOut(**row) if row else None


async def _user_or_404(conn: AsyncConnection[DictRow], user_id: int) -> UserOut:
    user = await fetch_user(conn, user_id, lock=True)
    if user is None:
        raise not_found("user", user_id)
    return user


async def insert_user(
    conn: AsyncConnection[DictRow],
    *,
    username: str,
    display_name: str,
    role: str,
    language: str,
    password_hash: str | None,
) -> UserOut | None:
    """Create a user; None when the username exists already."""
    row = await (
        await conn.execute(
            sql.SQL(
                "INSERT INTO aicc.users (username, display_name, role, language, password_hash, "
                "password_changed_at) VALUES (%s, %s, %s, %s, %s, CASE WHEN %s THEN now() END) "
                "ON CONFLICT (username) DO NOTHING RETURNING {}"
            ).format(USER_COLUMNS),
            (username, display_name, role, language, password_hash, password_hash is not None),
        )
    ).fetchone()
    return UserOut(**row) if row else None


async def revoke_tokens(conn: AsyncConnection[DictRow], user_id: int, *, kind: str | None = None) -> int:
    """Revoke a user's live tokens (only those of `kind` when given); returns how many."""
    cur = await conn.execute(
        "UPDATE aicc.api_tokens SET revoked_at = now() WHERE user_id = %s AND revoked_at IS NULL "
        "AND (%s::text IS NULL OR kind = %s)",
        (user_id, kind, kind),
    )
    return cur.rowcount


async def _is_agent(conn: AsyncConnection[DictRow], user_id: int) -> bool:
    row = await (
        await conn.execute("SELECT 1 AS x FROM aicc.agents WHERE user_id = %s", (user_id,))
    ).fetchone()
    return row is not None


def _audit_view(user: UserOut) -> dict[str, Any]:
    return user.model_dump(mode="json", exclude={"locked", "updated_at"})


@router.get("/api/users", response_model=list[UserOut])
async def list_users(
    principal: Annotated[Principal, Depends(require("users.read"))],
    pool: PoolDep,
    role: Role | None = None,
    include_disabled: bool = True,
) -> list[UserOut]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                sql.SQL(
                    "SELECT {} FROM aicc.users WHERE (%s::text IS NULL OR role = %s) "
                    "AND (%s OR NOT disabled) ORDER BY username"
                ).format(USER_COLUMNS),
                (role, role, include_disabled),
            )
        ).fetchall()
    return [UserOut(**r) for r in rows]


@router.post("/api/users", response_model=UserOut, status_code=201, responses=error_responses(409))
async def create_user(
    body: UserCreate,
    request: Request,
    principal: Annotated[Principal, Depends(require("users.write"))],
    pool: PoolDep,
) -> UserOut:
    password_hash = None
    if body.password is not None:
        reason = weak_password_reason(body.password, body.username)
        if reason:
            raise ApiError(422, "weak_password", f"password {reason}", problems=[("password", reason)])
        password_hash = await api_state(request).passwords.hash(body.password)
    async with pool.connection() as conn:
        user = await insert_user(
            conn,
            username=body.username,
            display_name=body.display_name,
            role=body.role,
            language=body.language,
            password_hash=password_hash,
        )
        if user is None:
            raise conflict(f"a user named {body.username!r} exists already")
        await audit.record(
            conn, principal, "user.create", "user", user.id, None, _audit_view(user), client_address(request)
        )
    return user


@router.get("/api/users/{user_id}", response_model=UserOut, responses=error_responses(404))
async def get_user(
    user_id: int, principal: Annotated[Principal, Depends(require("users.read"))], pool: PoolDep
) -> UserOut:
    async with pool.connection() as conn:
        user = await fetch_user(conn, user_id)
    if user is None:
        raise not_found("user", user_id)
    return user


@router.patch("/api/users/{user_id}", response_model=UserOut, responses=error_responses(404, 409))
async def update_user(
    user_id: int,
    body: UserPatch,
    request: Request,
    principal: Annotated[Principal, Depends(require("users.write"))],
    pool: PoolDep,
) -> UserOut:
    changes = body.model_dump(exclude_none=True)
    if user_id == principal.user_id and (
        changes.get("role", principal.role) != principal.role or body.disabled
    ):
        raise conflict("you cannot change your own role or disable yourself; another admin can")
    async with pool.connection() as conn:
        before = await _user_or_404(conn, user_id)
        if changes:
            sets = sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in changes
            )
            await conn.execute(
                sql.SQL("UPDATE aicc.users SET {}, updated_at = now() WHERE id = %(id)s").format(sets),
                {**changes, "id": user_id},
            )
        revoked = await revoke_tokens(conn, user_id) if body.disabled and not before.disabled else 0
        after = await _user_or_404(conn, user_id)
        if (before.role, before.disabled) != (after.role, after.disabled) and await _is_agent(conn, user_id):
            await request_acd_reload(conn)
        await audit.record(
            conn,
            principal,
            "user.update",
            "user",
            user_id,
            _audit_view(before),
            {**_audit_view(after), **({"tokens_revoked": revoked} if revoked else {})},
            client_address(request),
        )
    return after


@router.post("/api/users/{user_id}/password", response_model=UserOut, responses=error_responses(404))
async def set_password(
    user_id: int,
    body: PasswordSet,
    request: Request,
    principal: Annotated[Principal, Depends(require("users.write"))],
    pool: PoolDep,
) -> UserOut:
    """Set a user's password (an admin's reset). The user's login sessions end."""
    async with pool.connection() as conn:
        user = await fetch_user(conn, user_id)
    if user is None:
        raise not_found("user", user_id)
    reason = weak_password_reason(body.password, user.username)
    if reason:
        raise ApiError(422, "weak_password", f"password {reason}", problems=[("password", reason)])
    password_hash = await api_state(request).passwords.hash(body.password)
    async with pool.connection() as conn:
        before = await _user_or_404(conn, user_id)
        await conn.execute(
            "UPDATE aicc.users SET password_hash = %s, password_changed_at = now(), updated_at = now() "
            "WHERE id = %s",
            (password_hash, user_id),
        )
        revoked = await revoke_tokens(conn, user_id, kind="session")
        after = await _user_or_404(conn, user_id)
        await audit.record(
            conn,
            principal,
            "user.password",
            "user",
            user_id,
            {"has_password": before.has_password, "password_changed_at": before.password_changed_at},
            {
                "has_password": True,
                "password_changed_at": after.password_changed_at,
                "sessions_ended": revoked,
            },
            client_address(request),
        )
    return after


@router.post("/api/users/{user_id}/unlock", response_model=UserOut, responses=error_responses(404))
async def unlock_user(
    user_id: int,
    request: Request,
    principal: Annotated[Principal, Depends(require("users.write"))],
    pool: PoolDep,
) -> UserOut:
    """End a lockout (and forget the failed logins) before lockout_s has passed."""
    async with pool.connection() as conn:
        before = await _user_or_404(conn, user_id)
        await conn.execute(
            "UPDATE aicc.users SET failed_logins = 0, locked_until = NULL, updated_at = now() WHERE id = %s",
            (user_id,),
        )
        after = await _user_or_404(conn, user_id)
        await audit.record(
            conn,
            principal,
            "user.unlock",
            "user",
            user_id,
            {"failed_logins": before.failed_logins, "locked_until": before.locked_until},
            {"failed_logins": 0, "locked_until": None},
            client_address(request),
        )
    return after


@router.delete("/api/users/{user_id}", response_model=UserOut, responses=error_responses(404, 409))
async def disable_user(
    user_id: int,
    request: Request,
    principal: Annotated[Principal, Depends(require("users.write"))],
    pool: PoolDep,
) -> UserOut:
    """Disable the user and revoke all its tokens; the user stays (history names it). PATCH
    {"disabled": false} enables it again."""
    if user_id == principal.user_id:
        raise conflict("you cannot disable yourself; another admin can")
    async with pool.connection() as conn:
        before = await _user_or_404(conn, user_id)
        await conn.execute(
            "UPDATE aicc.users SET disabled = true, updated_at = now() WHERE id = %s", (user_id,)
        )
        revoked = await revoke_tokens(conn, user_id)
        after = await _user_or_404(conn, user_id)
        if not before.disabled and await _is_agent(conn, user_id):
            await request_acd_reload(conn)
        await audit.record(
            conn,
            principal,
            "user.disable",
            "user",
            user_id,
            _audit_view(before),
            {**_audit_view(after), "tokens_revoked": revoked},
            client_address(request),
        )
    return after
