"""The WeChat official account's callback (public: the platform calls it; the signature is the
authentication). The logic is in aicc.appliance.channels.wechat_oa.

- GET /wechat-oa/v1/callback?signature&timestamp&nonce&echostr: the console's URL check; answers
  echostr as text once the signature (the Token's) matches.
- POST /wechat-oa/v1/callback?signature&timestamp&nonce&openid&encrypt_type=aes&msg_signature, XML
  with <Encrypt>: a follower's message is stored, then answered "success" (the bot replies in the
  background through the customer-service API).
- Refused, logged and counted (aicc_wechat_oa_refused_total{reason}), nothing stored: a bad signature
  (403), another AppID (receiveid, 403), a plaintext callback, XML that is not a callback or a
  ciphertext that does not decrypt (400), a body over 64 KiB (413). With the channel not enabled: 404.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from aicc.appliance.api.deps import ApiError
from aicc.appliance.api.routes.wecom import Param, read_capped, refuse
from aicc.appliance.channels.wechat_oa import WeChatOaHub
from aicc.appliance.channels.wecom_crypto import XML_MAX_BYTES, CallbackRefused

router = APIRouter()


def hub_of(app: object) -> WeChatOaHub:
    hub: WeChatOaHub = app.state.wechat_oa  # type: ignore[attr-defined]
    return hub


def _off() -> JSONResponse:
    return JSONResponse(
        ApiError(404, "not_found", "the WeChat official account is not enabled on this appliance").body(),
        status_code=404,
    )


@router.get("/wechat-oa/v1/callback", include_in_schema=False)
async def verify_url(
    request: Request, signature: Param = "", timestamp: Param = "", nonce: Param = "", echostr: Param = ""
) -> Response:
    hub = hub_of(request.app)
    if not hub.enabled:
        return _off()
    if not (signature and timestamp and nonce and echostr):
        return refuse(hub, request, "malformed", "signature, timestamp, nonce and echostr are needed")
    try:
        plain = hub.verify_url(signature, timestamp, nonce, echostr)
    except CallbackRefused as exc:
        return refuse(hub, request, exc.reason, exc.message)
    return PlainTextResponse(plain)


@router.post("/wechat-oa/v1/callback", include_in_schema=False)
async def callback(
    request: Request,
    msg_signature: Param = "",
    timestamp: Param = "",
    nonce: Param = "",
    encrypt_type: Param = "",
) -> Response:
    hub = hub_of(request.app)
    if not hub.enabled:
        return _off()
    if not (timestamp and nonce):
        return refuse(hub, request, "malformed", "timestamp and nonce are needed")
    body = await read_capped(request)
    if body is None:
        return refuse(hub, request, "too_large", f"a callback has at most {XML_MAX_BYTES} bytes")
    try:
        await hub.accept(msg_signature, timestamp, nonce, encrypt_type, body)
    except CallbackRefused as exc:
        return refuse(hub, request, exc.reason, exc.message)
    return PlainTextResponse("success")
