"""The web chat widget's public routes (/chat/v1): no login, a widget key and an allowed Origin instead.
The logic is in aicc.appliance.channels.webchat; these routes are not in the OpenAPI document (like
the pages), as they are the widget's, not the API's.

CORS: only the origins in app.yml's webchat_origins get Access-Control-Allow-Origin (no credentials:
the visitor's token travels in the body and the WebSocket URL, never in a cookie). With no
webchat_keys configured, web chat is off and these routes answer 404.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from pydantic import Field, ValidationError

from aicc.appliance.api.deps import ApiError, client_address
from aicc.appliance.api.routes import Strict
from aicc.appliance.channels.webchat import WebChatHub, key_allowed, read_token

router = APIRouter(include_in_schema=False)


class SessionRequest(Strict):
    key: Annotated[str, Field(min_length=1, max_length=200)]
    visitor: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")] | None = Field(
        None, description="the visitor id this browser was given before"
    )
    language: Literal["zh", "en"] | None = None


def hub_of(app: object) -> WebChatHub:
    hub: WebChatHub = app.state.webchat  # type: ignore[attr-defined]
    return hub


def _cors(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
        "Cache-Control": "no-store",
    }


def _answer(status: int, code: str, message: str, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse(ApiError(status, code, message).body(), status_code=status, headers=headers)


@router.options("/chat/v1/sessions")
async def preflight(request: Request) -> Response:
    hub = hub_of(request.app)
    if not hub.enabled:
        return _answer(404, "not_found", "web chat is not enabled on this appliance", {})
    origin = request.headers.get("origin")
    if not hub.origin_allowed(origin):
        hub.metrics.sessions.labels("refused_origin").inc()
        return Response(status_code=403, headers={"Vary": "Origin"})
    assert origin is not None
    return Response(status_code=204, headers=_cors(origin))


@router.post("/chat/v1/sessions")
async def open_session(request: Request) -> JSONResponse:
    """A visitor's chat session: {visitor, token, conversation_id, resumed, expires_in, ws_path}."""
    hub = hub_of(request.app)
    if not hub.enabled:
        hub.metrics.sessions.labels("off").inc()
        return _answer(404, "not_found", "web chat is not enabled on this appliance", {})
    origin = request.headers.get("origin")
    if not hub.origin_allowed(origin):
        hub.metrics.sessions.labels("refused_origin").inc()
        return _answer(
            403,
            "forbidden",
            f"origin {origin!r} may not open chats: add it to webchat_origins",
            {"Vary": "Origin"},
        )
    assert origin is not None
    headers = _cors(origin)
    try:
        body = SessionRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "(body)" for e in exc.errors())
        hub.metrics.refused.labels("bad_session").inc()
        return _answer(422, "invalid_request", f"the request does not validate: {fields}", headers)
    if not key_allowed(hub.state.config.webchat_keys, body.key):
        hub.metrics.sessions.labels("refused_key").inc()
        return _answer(403, "forbidden", "unknown widget key (data-key)", headers)
    address = client_address(request)
    if not hub.session_limiter.allow(address):
        hub.metrics.sessions.labels("rate_limited").inc()
        wait = max(1, round(hub.session_limiter.retry_after(address)))
        return _answer(429, "rate_limited", "too many chat sessions", {**headers, "Retry-After": str(wait)})
    session = await hub.open_session(body.visitor, body.language)
    return JSONResponse(session, headers=headers)


@router.websocket("/chat/v1/ws")
async def visitor_socket(websocket: WebSocket, token: str = "") -> None:
    """The visitor's WebSocket; refused (closed before it opens) without web chat, from an origin not
    allowed, or with a token that is not valid."""
    hub = hub_of(websocket.app)
    if not hub.enabled:
        await websocket.close(1008)
        return
    if not hub.origin_allowed(websocket.headers.get("origin")):
        hub.metrics.refused.labels("origin").inc()
        await websocket.close(1008)
        return
    claims = read_token(hub.state.secret_key, token, time.time())
    if claims is None:
        hub.metrics.refused.labels("token").inc()
        await websocket.close(1008)
        return
    await hub.serve(websocket, claims)
