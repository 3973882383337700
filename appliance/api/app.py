"""The API application: routers, error bodies, request metrics, and the database pool's lifetime.

Every 4xx/5xx answer has one shape, {"error": {"code", "message", "problems": [{"field", "message"}]}}.
A database that cannot be reached answers 503 with Retry-After, never 500. The OpenAPI document
(/api/openapi.json) names each operation's permission as `x-permission`; the browsable docs pages
are off, because they load their scripts from a CDN and the appliance reaches no internet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aicc.appliance.acd.client import AcdClient
from aicc.appliance.api.auth import LoginThrottle, Passwords
from aicc.appliance.api.chat_routing import GATEWAY, ChatRouting, RoutingMetrics
from aicc.appliance.api.config import AppConfig
from aicc.appliance.api.deps import ApiError, ApiMetrics, ApiState, Pool, route_permission
from aicc.appliance.api.live import LiveHub
from aicc.appliance.api.routes import routers
from aicc.appliance.api.routes.health import aicc_version
from aicc.appliance.channels.email import EmailHub
from aicc.appliance.channels.webchat import WebChatHub, status_frame
from aicc.appliance.channels.wechat_oa import WeChatOaHub
from aicc.appliance.channels.wecom import WeComHub
from aicc.appliance.documents import field_path
from aicc.appliance.retention.purge import RetentionMetrics, RetentionService, RetentionSettings
from aicc.appliance.tickets.escalation import EscalationWatcher, TicketMetrics

log = logging.getLogger("aicc.api")
DB_RETRY_AFTER_S = 5
POOL_TIMEOUT_S = 5.0
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class AiccApi(FastAPI):
    def api_routes(self) -> list[tuple[str, APIRoute]]:
        """(path template as served, route) of every API route, included routers' prefixes applied."""
        out = []
        for ctx in iter_route_contexts(self.routes):
            route = ctx.original_route
            if isinstance(route, APIRoute) and ctx.path_format is not None:
                out.append((ctx.path_format, route))
        return out

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document plus each operation's permission (x-permission), read from its route."""
        if self.openapi_schema is None:
            schema = super().openapi()
            for path, route in self.api_routes():
                permission = route_permission(route)
                operations = schema["paths"].get(path, {})
                for method in route.methods or ():
                    if permission is not None and method.lower() in operations:
                        operations[method.lower()]["x-permission"] = permission
            self.openapi_schema = schema
        return self.openapi_schema


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    err = ApiError(status, code, message, **extra)
    return JSONResponse(err.body(), status_code=status, headers=err.headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:
        # A body that cannot even be decoded: answered like any other body that does not validate.
        return _error(422, "invalid_request", f"the request body cannot be read: {exc.detail}")
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = f"no route {request.method} {request.url.path}" if exc.status_code in codes else str(exc.detail)
    return _error(exc.status_code, codes.get(exc.status_code, "http_error"), message, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        # pydantic marks a bad dict key with a "[key]" step after it: the key names the field already.
        loc = tuple(part for part in err.get("loc", ()) if part != "[key]")
        # "body" is where every body field lives: name the field itself.
        field = field_path(loc[1:] if loc[:1] == ("body",) else loc)
        kind = err.get("type")
        message = {"missing": "required, but missing", "extra_forbidden": "not a known field"}.get(
            str(kind), str(err.get("msg", "invalid"))
        )
        problems.append((field, message))
    fields = ", ".join(f or "(body)" for f, _ in problems)
    return _error(422, "invalid_request", f"the request does not validate: {fields}", problems=problems)


async def _database_unreachable(request: Request, exc: Exception) -> JSONResponse:
    # psycopg_pool.PoolTimeout is an OperationalError too: no free connection in time, or none at all.
    log.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc)
    return _error(
        503,
        "database_unavailable",
        f"the database cannot be reached; try again in {DB_RETRY_AFTER_S} s",
        headers={"Retry-After": str(DB_RETRY_AFTER_S)},
    )


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    # Values pydantic accepts but PostgreSQL cannot store (a NUL character in text, ...).
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _error(422, "invalid_value", f"the database refused a value: {message}")


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    # Routes check uniqueness and references first; this answers the race where two requests pass the
    # check together.
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _error(409, "conflict", f"conflicts with a concurrent change: {message}; try again")


class RequestMetrics:
    """Counts and times every HTTP request by route template (the route that matched) and status class."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, api: AiccApi) -> None:
        self.app = app
        self.metrics = metrics
        self.api = api
        self._templates: dict[int, str] | None = None

    def template(self, route: object) -> str:
        if self._templates is None:  # the routes are complete once requests come
            self._templates = {id(r): path for path, r in self.api.api_routes()}
        return self._templates.get(id(route), "unmatched")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            template = self.template(scope.get("route"))
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.requests.labels(method, template, f"{status // 100}xx").inc()
            self.metrics.seconds.labels(method, template).observe(time.perf_counter() - start)


def open_pool(config: AppConfig) -> Pool:
    """The service's pool (not opened yet). Connections are checked before use, so a database restart
    costs no failed request."""
    return AsyncConnectionPool(
        config.database_dsn(),
        min_size=config.pool_min,
        max_size=config.pool_max,
        connection_class=AsyncConnection[DictRow],
        kwargs={"row_factory": dict_row},
        timeout=POOL_TIMEOUT_S,
        check=AsyncConnectionPool.check_connection,
        name="aicc-api",
        open=False,
    )


def create_app(config: AppConfig, *, pool: Pool | None = None) -> FastAPI:
    """The API. Without `pool` (production), the lifespan opens one from config.database_dsn_file and
    closes it at shutdown; a given pool (tests) is used as it is and left open."""
    state = ApiState(
        config=config,
        secret_key=config.secret_key(),
        passwords=Passwords(),
        throttle=LoginThrottle(config.ip_max_failures, config.ip_window_s),
        metrics=ApiMetrics(),
        pool=pool,
    )
    # Tickets' SLA figures and escalations (appliance/tickets/escalation.py), on the API's registry.
    interval_s = config.ticket_escalation_interval_s
    ticket_metrics = TicketMetrics(state.metrics.registry) if interval_s else None
    # The retention purge (appliance/retention/purge.py): scheduled here, or started by an admin.
    retention = RetentionService(
        lambda: state.pool,
        RetentionSettings(
            transcript_days=config.transcript_retention_days, ticket_days=config.ticket_retention_days
        ),
        config.retention_interval_s,
        RetentionMetrics(state.metrics.registry),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = None
        if state.pool is None:
            own = open_pool(config)
            # Not waiting: the API starts (and /api/health says why it is unhappy) while the database is away.
            await own.open(wait=False)
            state.pool = own
        # Commands to the ACD (agents' status, wrap-up, live figures) and their results.
        state.live = LiveHub(config.acd.timezone)
        state.acd = AcdClient(
            state.pool,
            config.database_dsn(),
            source="api",
            result_timeout_s=config.acd.result_timeout_s,
            on_live=state.live.changed,
            # The API processes are the ACD's gateway for chats: offers for them come here.
            gateway=GATEWAY,
            on_gateway=chat_routing.on_gateway,
        )
        await state.acd.start()
        await chat_routing.start()
        watcher = EscalationWatcher(state.pool, interval_s, ticket_metrics) if interval_s else None
        if watcher is not None:
            await watcher.start()
        await retention.start()
        await app.state.email.start()
        try:
            yield
        finally:
            await chat_routing.close()
            await retention.close()
            if watcher is not None:
                await watcher.close()
            await app.state.wecom.close()
            await app.state.wechat_oa.close()
            await app.state.email.close()
            await app.state.webchat.close()
            await state.acd.close()
            state.acd = None
            if own is not None:
                state.pool = None
                await own.close()

    app = AiccApi(
        title="aicc appliance API",
        version=aicc_version(),
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        separate_input_output_schemas=False,
        # No OpenTelemetry: metrics go to Prometheus (RequestMetrics), nothing is exported.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.aicc = state
    # Web chat's rooms, rate limits and text bot (appliance/channels/webchat.py); its routes read it.
    app.state.webchat = WebChatHub(state)
    # Text conversations routed by the ACD (appliance/api/chat_routing.py); the lifespan runs it.
    webchat: WebChatHub = app.state.webchat
    chat_routing = ChatRouting(
        lambda: state.pool,
        config,
        RoutingMetrics(state.metrics.registry),
        on_change=lambda row: webchat.publish(row["id"], status_frame(row)),
    )
    state.chat_routing = chat_routing
    # WeCom customer service (appliance/channels/wecom.py): the same text bot as web chat.
    app.state.wecom = WeComHub(state, app.state.webchat.runtime)
    # The WeChat official account (appliance/channels/wechat_oa.py): the same again.
    app.state.wechat_oa = WeChatOaHub(state, app.state.webchat.runtime)
    # Email (appliance/channels/email.py): the support mailbox; the text bot only when email.bot is on.
    app.state.email = EmailHub(state, app.state.webchat.runtime)
    app.state.retention = retention
    for router in routers():
        app.include_router(router)
    app.add_middleware(RequestMetrics, metrics=state.metrics, api=app)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(psycopg.OperationalError, _database_unreachable)
    app.add_exception_handler(psycopg.DataError, _data_error)
    app.add_exception_handler(psycopg.IntegrityError, _integrity_error)
    return app
