"""What every route uses: the caller (Principal) and its permission check, the database pool, the
settings, the client's address, number masking, and the API's error type.

A route declares its one permission with a parameter
    principal: Annotated[Principal, Depends(require("config.read"))]
(Annotated keeps ruff's B008 quiet); the role matrix is in permissions.py, and the pool comes as
`pool: PoolDep`. Routers declare `responses=COMMON_ERRORS` so the OpenAPI document lists the error
answers. Errors are raised as ApiError and answered as
    {"error": {"code": "...", "message": "...", "problems": [{"field": "...", "message": "..."}]}}
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter, Histogram
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from aicc.appliance.acd.client import AcdClient
from aicc.appliance.api.auth import LoginThrottle, Passwords, check_token
from aicc.appliance.api.config import AppConfig
from aicc.appliance.api.live import LiveHub
from aicc.appliance.api.permissions import PERMISSIONS, role_can

if TYPE_CHECKING:
    from aicc.appliance.api.chat_routing import ChatRouting

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]
SESSION_COOKIE = "aicc_session"


class Problem(BaseModel):
    field: str = Field(description="path of the field at fault ('' for the request as a whole)")
    message: str


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. not_found, conflict, forbidden")
    message: str = Field(description="what is wrong and how to fix it")
    problems: list[Problem] = Field(default_factory=list)


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """An error answered with `status` and an ErrorBody."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        problems: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = problems or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        problems = [Problem(field=f, message=m) for f, m in self.problems]
        return ErrorBody(
            error=ErrorDetail(code=self.code, message=self.message, problems=problems)
        ).model_dump()


def not_found(what: str, key: object) -> ApiError:
    return ApiError(404, "not_found", f"no {what} {key!r}")


def conflict(message: str) -> ApiError:
    return ApiError(409, "conflict", message)


def invalid(field: str, message: str) -> ApiError:
    """A 422 naming the field, for checks a request model cannot make (they need the database)."""
    return ApiError(
        422, "invalid_request", f"the request does not validate: {field}", problems=[(field, message)]
    )


_ERROR_DESCRIPTIONS = {
    401: "No valid token (Authorization: Bearer aicc_..., or the session cookie)",
    403: "The caller's role lacks the route's permission",
    404: "No such object",
    409: "Conflicts with the current state (exists already, still in use, ...)",
    413: "The request body is too large",
    415: "The request body's Content-Type is not one the route reads",
    422: "The request does not validate; problems name each field",
    423: "The user is locked out after too many failed logins",
    429: "Too many failed logins from this address; see Retry-After",
    502: "A service the API reads from (Prometheus) cannot be reached or refused the request",
    503: "The database is unreachable; see Retry-After",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for error statuses, all with the ErrorBody schema."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[code]}
        if code in (429, 503):
            out[code]["headers"] = _RETRY_AFTER
    return out


# Every authenticated route can answer these; routers declare them once (APIRouter(responses=...)).
COMMON_ERRORS = error_responses(401, 403, 422, 503)


class ApiMetrics:
    """Request metrics on the app's own registry. Labels are the route template (never an id) and the
    status class."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aicc_api_requests_total",
            "API requests by method, route template and status class.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "aicc_api_request_seconds",
            "API request handling time by method and route template.",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.logins = Counter(
            "aicc_api_logins_total",
            "Login attempts by result (ok, wrong_password, locked, throttled).",
            ["result"],
            registry=self.registry,
        )


@dataclass
class ApiState:
    """What the app holds for its requests (app.state.aicc)."""

    config: AppConfig
    secret_key: bytes
    passwords: Passwords
    throttle: LoginThrottle
    metrics: ApiMetrics
    pool: Pool | None = None
    acd: AcdClient | None = None
    live: LiveHub | None = None
    # Text conversations routed by the ACD (api/chat_routing.py): the channels poke it at a handover.
    chat_routing: ChatRouting | None = None


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.aicc
    return state


async def get_pool(request: Request) -> Pool:
    pool = api_state(request).pool
    if pool is None:
        raise ApiError(503, "starting", "the service is starting; try again", headers={"Retry-After": "2"})
    return pool


PoolDep = Annotated[Pool, Depends(get_pool)]


async def get_acd(request: Request) -> AcdClient:
    acd = api_state(request).acd
    if acd is None:
        raise ApiError(503, "starting", "the service is starting; try again", headers={"Retry-After": "2"})
    return acd


AcdDep = Annotated[AcdClient, Depends(get_acd)]


def get_config(request: Request) -> AppConfig:
    return api_state(request).config


def client_address(request: Request) -> str:
    """The caller's address (uvicorn takes it from nginx's X-Forwarded-For, trusted from loopback)."""
    return request.client.host if request.client else ""


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    user_id: int
    username: str
    role: str
    token_id: int

    def can(self, permission: str) -> bool:
        return role_can(self.role, permission)


def mask_number(number: str, principal: Principal) -> str:
    """A phone number as `principal` may see it: whole with numbers.full, else the first 3 and last 4
    digits (13800138000 -> 138****8000); short numbers keep their last 2 only."""
    if principal.can("numbers.full"):
        return number
    sign, digits = ("+", number[1:]) if number.startswith("+") else ("", number)
    if len(digits) > 7:
        return sign + digits[:3] + "*" * (len(digits) - 7) + digits[-4:]
    keep = min(2, max(0, len(digits) - 2))
    return sign + "*" * (len(digits) - keep) + digits[len(digits) - keep :]


_bearer = HTTPBearer(auto_error=False, description="aicc_... token from login or POST /api/tokens")


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller of this request, from `Authorization: Bearer ...` or the session cookie."""
    token = credentials.credentials if credentials else request.cookies.get(SESSION_COOKIE)
    if not token:
        raise _unauthorized(
            "this route needs a token: send Authorization: Bearer aicc_... (log in: POST /api/auth/login)"
        )
    state = api_state(request)
    pool = await get_pool(request)
    async with pool.connection() as conn:
        check = await check_token(conn, state.secret_key, token, idle_s=state.config.session_idle_s)
    if check is None:
        raise _unauthorized("unknown token; log in again or create a new API token")
    if check.refused:
        raise _unauthorized(check.refused)
    return Principal(user_id=check.user_id, username=check.username, role=check.role, token_id=check.token_id)


class Require:
    """The dependency of a route needing `permission`: returns the Principal, or answers 401/403."""

    def __init__(self, permission: str) -> None:
        if permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {permission!r}; known: {', '.join(sorted(PERMISSIONS))}")
        self.permission = permission

    async def __call__(self, principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.can(self.permission):
            raise ApiError(
                403,
                "forbidden",
                f"this needs the permission {self.permission!r}, which the role {principal.role!r} "
                "does not have",
            )
        return principal


@functools.cache
def require(permission: str) -> Require:
    """`Annotated[Principal, Depends(require("config.write"))]`: the route's one permission."""
    return Require(permission)


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def route_permission(route: APIRoute) -> str | None:
    """The permission a route requires, or None for a public one (health, login)."""
    for dep in _dependants(route.dependant):
        if isinstance(dep.call, Require):
            return dep.call.permission
    return None
