"""Login, logout, the caller's own account, and changing one's own password.

Login is the one route besides health that needs no token. It is throttled twice: per user (after
login_max_failures wrong passwords in a row the user is locked for lockout_s; an admin may unlock)
and per client address (too many failures in ip_window_s: 429 with Retry-After). Logins, logouts and
lockouts are audited; a single wrong password is counted (users.failed_logins, aicc_api_logins_total)
rather than audited, so guessing cannot flood the audit log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from aicc.appliance.api import audit
from aicc.appliance.api.auth import issue_token, weak_password_reason
from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    SESSION_COOKIE,
    ApiError,
    Pool,
    PoolDep,
    Principal,
    api_state,
    client_address,
    conflict,
    error_responses,
    get_pool,
    require,
)
from aicc.appliance.api.permissions import ROLE_PERMISSIONS
from aicc.appliance.api.routes import Strict
from aicc.appliance.api.routes.users import UserOut, fetch_user

router = APIRouter(tags=["auth"])
Password = Annotated[str, Field(min_length=1, max_length=1024)]


class LoginRequest(Strict):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Password


class LoginResult(BaseModel):
    token: str = Field(description="the session token; also set as the HttpOnly cookie aicc_session")
    token_type: Literal["bearer"] = "bearer"  # noqa: S105  # the OAuth scheme name
    expires_at: datetime
    user: UserOut


class Me(BaseModel):
    user: UserOut
    permissions: list[str]
    token_id: int
    token_kind: Literal["api", "session"]


class PasswordChange(Strict):
    old_password: Password
    new_password: Password


_WRONG = "wrong username or password"


@router.post(
    "/api/auth/login",
    response_model=LoginResult,
    responses=error_responses(401, 422, 423, 429, 503),
)
async def login(body: LoginRequest, request: Request, response: Response) -> LoginResult:
    """Open a session: returns a session token (expires after session_ttl_s, or session_idle_s unused)."""
    state = api_state(request)
    cfg, metrics, address = state.config, state.metrics, client_address(request)
    wait = state.throttle.retry_after(address)
    if wait is not None:
        metrics.logins.labels("throttled").inc()
        raise ApiError(
            429,
            "too_many_failures",
            f"too many failed logins from {address}; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    pool = await get_pool(request)
    username = body.username.strip().lower()
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT id, password_hash, disabled, locked_until > now() IS TRUE AS locked, "
                "ceil(extract(epoch FROM locked_until - now()))::int AS locked_s "
                "FROM aicc.users WHERE username = %s",
                (username,),
            )
        ).fetchone()
    if row is not None and row["locked"] and not row["disabled"]:
        state.throttle.failed(address)
        metrics.logins.labels("locked").inc()
        raise _locked(row["locked_s"])
    stored = row["password_hash"] if row is not None and not row["disabled"] else None
    # Hashing happens with no database connection held: it takes a while on purpose.
    ok = await state.passwords.verify(stored, body.password)
    if not ok or row is None or stored is None:
        state.throttle.failed(address)
        metrics.logins.labels("wrong_password").inc()
        if row is not None and stored is not None:
            await _count_failure(pool, row["id"], username, cfg.login_max_failures, cfg.lockout_s, address)
        raise ApiError(401, "wrong_credentials", _WRONG)
    new_hash = await state.passwords.hash(body.password) if state.passwords.needs_rehash(stored) else None
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE aicc.users SET failed_logins = 0, locked_until = NULL, last_login_at = now(), "
            "password_hash = coalesce(%s, password_hash) WHERE id = %s",
            (new_hash, row["id"]),
        )
        record, token = await issue_token(
            conn,
            state.secret_key,
            user_id=row["id"],
            kind="session",
            expires_in_s=cfg.session_ttl_s,
            source=address,
        )
        user = await fetch_user(conn, row["id"])
        assert user is not None and record.expires_at is not None
        await audit.record(
            conn,
            username,
            "auth.login",
            "user",
            row["id"],
            None,
            {"session_id": record.id, "prefix": record.prefix, "expires_at": record.expires_at},
            address,
        )
    metrics.logins.labels("ok").inc()
    response.set_cookie(
        SESSION_COOKIE, token, max_age=cfg.session_ttl_s, httponly=True, secure=True, samesite="strict"
    )
    return LoginResult(token=token, expires_at=record.expires_at, user=user)


def _locked(seconds: int) -> ApiError:
    wait = max(1, seconds)
    return ApiError(
        423,
        "locked",
        f"this user is locked after too many failed logins; try again in {wait} s, or ask an admin "
        "to unlock it",
        headers={"Retry-After": str(wait)},
    )


async def _count_failure(
    pool: Pool, user_id: int, username: str, max_failures: int, lockout_s: int, address: str
) -> None:
    """One more wrong password in a row; the last one allowed locks the user (and starts a new count)."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "UPDATE aicc.users SET "
                "locked_until = CASE WHEN failed_logins + 1 >= %(max)s "
                "  THEN now() + make_interval(secs => %(lock)s) ELSE locked_until END, "
                "failed_logins = CASE WHEN failed_logins + 1 >= %(max)s THEN 0 ELSE failed_logins + 1 END "
                "WHERE id = %(id)s RETURNING locked_until > now() IS TRUE AS locked, locked_until",
                {"max": max_failures, "lock": lockout_s, "id": user_id},
            )
        ).fetchone()
        if row is None or not row["locked"]:
            return
        await audit.record(
            conn,
            "system",
            "user.lock",
            "user",
            user_id,
            None,
            {"username": username, "locked_until": row["locked_until"], "failures": max_failures},
            address,
        )
    raise _locked(lockout_s)


@router.post("/api/auth/logout", status_code=204, responses={**COMMON_ERRORS, **error_responses(409)})
async def logout(
    request: Request,
    response: Response,
    principal: Annotated[Principal, Depends(require("tokens.own"))],
    pool: PoolDep,
) -> None:
    """End the session this request was made with."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE aicc.api_tokens SET revoked_at = now() WHERE id = %s AND kind = 'session' "
            "AND revoked_at IS NULL RETURNING prefix",
            (principal.token_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise conflict(
                "this request was made with an API token, not a login session; revoke API tokens with "
                "DELETE /api/tokens/{id}"
            )
        await audit.record(
            conn,
            principal,
            "auth.logout",
            "user",
            principal.user_id,
            {"session_id": principal.token_id, "prefix": row["prefix"]},
            {"session_id": principal.token_id, "revoked": True},
            client_address(request),
        )
    response.delete_cookie(SESSION_COOKIE, secure=True, httponly=True, samesite="strict")


@router.get("/api/auth/me", response_model=Me, responses=COMMON_ERRORS)
async def me(principal: Annotated[Principal, Depends(require("tokens.own"))], pool: PoolDep) -> Me:
    """The caller: user, permissions and the token in use."""
    async with pool.connection() as conn:
        user = await fetch_user(conn, principal.user_id)
        kind = await (
            await conn.execute("SELECT kind FROM aicc.api_tokens WHERE id = %s", (principal.token_id,))
        ).fetchone()
    assert user is not None and kind is not None
    permissions = sorted(ROLE_PERMISSIONS.get(user.role, frozenset()))
    return Me(user=user, permissions=permissions, token_id=principal.token_id, token_kind=kind["kind"])


@router.post("/api/auth/password", response_model=UserOut, responses=COMMON_ERRORS)
async def change_password(
    body: PasswordChange,
    request: Request,
    principal: Annotated[Principal, Depends(require("tokens.own"))],
    pool: PoolDep,
) -> UserOut:
    """Change one's own password (the old one is needed). One's other login sessions end."""
    state = api_state(request)
    address = client_address(request)
    reason = weak_password_reason(body.new_password, principal.username)
    if reason:
        raise ApiError(422, "weak_password", f"new password {reason}", problems=[("new_password", reason)])
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT password_hash, password_changed_at FROM aicc.users WHERE id = %s",
                (principal.user_id,),
            )
        ).fetchone()
    assert row is not None
    if not await state.passwords.verify(row["password_hash"], body.old_password):
        # Guessing the old password with a stolen session counts against the address like a login.
        state.throttle.failed(address)
        raise ApiError(
            422,
            "wrong_password",
            "the old password is wrong",
            problems=[("old_password", "does not match the current password")],
        )
    new_hash = await state.passwords.hash(body.new_password)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE aicc.users SET password_hash = %s, password_changed_at = now(), updated_at = now() "
            "WHERE id = %s",
            (new_hash, principal.user_id),
        )
        cur = await conn.execute(
            "UPDATE aicc.api_tokens SET revoked_at = now() WHERE user_id = %s AND kind = 'session' "
            "AND revoked_at IS NULL AND id <> %s",
            (principal.user_id, principal.token_id),
        )
        user = await fetch_user(conn, principal.user_id)
        assert user is not None
        await audit.record(
            conn,
            principal,
            "user.password",
            "user",
            principal.user_id,
            {"password_changed_at": row["password_changed_at"]},
            {"password_changed_at": user.password_changed_at, "other_sessions_ended": cur.rowcount},
            address,
        )
    return user
