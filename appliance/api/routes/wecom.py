"""WeCom customer service's callback (public: WeCom calls it; the signature is the authentication)
and the channels' dead letters (admins). The logic is in aicc.appliance.channels.wecom.

- GET /wecom/v1/callback?msg_signature&timestamp&nonce&echostr: the console's URL check; answers the
  decrypted echostr as text.
- POST /wecom/v1/callback?msg_signature&timestamp&nonce, XML with <Encrypt>: answered "success" at
  once; a kf_msg_or_event is synced in the background.
- Refused, logged and counted (aicc_wecom_refused_total{reason}), nothing stored: a bad signature
  (403), another corp id (receiveid, 403), XML that is not a callback or a ciphertext that does not
  decrypt (400), a body over 64 KiB (413). With WeCom not enabled: 404.
- GET /api/channels/dead-letters?channel=&limit=&offset= (channels.read: admins, auditors): messages
  a channel could not deliver after its retries, newest first.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from aicc.appliance.api.deps import COMMON_ERRORS, ApiError, PoolDep, Principal, client_address, require
from aicc.appliance.channels.tencent_hub import MessagingHub
from aicc.appliance.channels.wecom import WeComHub
from aicc.appliance.channels.wecom_crypto import XML_MAX_BYTES, CallbackRefused
from aicc.appliance.conversations import dead_letters
from aicc.appliance.conversations.store import Channel

router = APIRouter()
STATUS = {"signature": 403, "receiveid": 403, "malformed": 400, "decrypt": 400, "too_large": 413}
Param = Annotated[str, Query(max_length=512)]


def hub_of(app: object) -> WeComHub:
    hub: WeComHub = app.state.wecom  # type: ignore[attr-defined]
    return hub


def refuse(hub: MessagingHub[Any], request: Request, reason: str, message: str) -> JSONResponse:
    """A refused callback of a Tencent channel (this one's and wechat_oa.py's): logged, counted, answered."""
    hub.refused(reason, message, client_address(request))
    status = STATUS.get(reason, 400)
    return JSONResponse(ApiError(status, "refused", f"{reason}: {message}").body(), status_code=status)


async def read_capped(request: Request) -> bytes | None:
    """A callback's body, read no further than XML_MAX_BYTES; None when it is larger."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > XML_MAX_BYTES:
            return None
    return bytes(body)


def _off() -> JSONResponse:
    return JSONResponse(
        ApiError(404, "not_found", "WeCom is not enabled on this appliance").body(), status_code=404
    )


@router.get("/wecom/v1/callback", include_in_schema=False)
async def verify_url(
    request: Request, msg_signature: Param = "", timestamp: Param = "", nonce: Param = "", echostr: Param = ""
) -> Response:
    hub = hub_of(request.app)
    if not hub.enabled:
        return _off()
    if not (msg_signature and timestamp and nonce and echostr):
        return refuse(hub, request, "malformed", "msg_signature, timestamp, nonce and echostr are needed")
    try:
        plain = hub.verify_url(msg_signature, timestamp, nonce, echostr)
    except CallbackRefused as exc:
        return refuse(hub, request, exc.reason, exc.message)
    return PlainTextResponse(plain)


@router.post("/wecom/v1/callback", include_in_schema=False)
async def callback(
    request: Request, msg_signature: Param = "", timestamp: Param = "", nonce: Param = ""
) -> Response:
    hub = hub_of(request.app)
    if not hub.enabled:
        return _off()
    if not (msg_signature and timestamp and nonce):
        return refuse(hub, request, "malformed", "msg_signature, timestamp and nonce are needed")
    body = await read_capped(request)
    if body is None:
        return refuse(hub, request, "too_large", f"a callback has at most {XML_MAX_BYTES} bytes")
    try:
        hub.accept(msg_signature, timestamp, nonce, body)
    except CallbackRefused as exc:
        return refuse(hub, request, exc.reason, exc.message)
    return PlainTextResponse("success")


class DeadLetter(BaseModel):
    id: int
    channel: Channel
    conversation_id: UUID | None
    message_id: int | None = Field(description="the message not delivered (its text: the conversation's)")
    recipient: str = Field(
        description="the channel's address of the customer (WeCom: open_kfid/external_userid; the WeChat "
        "official account: the OpenID)"
    )
    reference: str = Field(description="the channel's id of the message (WeCom: the msgid sent; ours)")
    attempts: int
    error: str = Field(description="the last error: the platform's errcode and errmsg, or the network's")
    created_at: dt.datetime


@router.get(
    "/api/channels/dead-letters",
    response_model=list[DeadLetter],
    tags=["conversations"],
    responses=COMMON_ERRORS,
)
async def list_dead_letters(
    principal: Annotated[Principal, Depends(require("channels.read"))],
    pool: PoolDep,
    channel: Channel | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[DeadLetter]:
    async with pool.connection() as conn:
        rows = await dead_letters.latest(conn, channel=channel, limit=limit, offset=offset)
    return [DeadLetter(**row) for row in rows]
