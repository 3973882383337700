"""Short-lived SIP credentials for the agent desktop's softphone.

The browser registers with Kamailio over secure WebSocket as the agent's extension, with credentials
the API derives from the agent's login and nothing stores: username "<expiry epoch>:<extension>",
password base64(HMAC-SHA1(key, username)), the scheme of Kamailio's auth_ephemeral (and TURN's REST
API). Kamailio's routing (roles/kamailio/files/kamailio_routing.py) checks them with the same key,
derived from the site's api_secret_key by both sides so that Kamailio never holds the API's own key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    ApiError,
    PoolDep,
    Principal,
    api_state,
    error_responses,
    get_config,
    not_found,
    require,
)

router = APIRouter(tags=["agents"], responses=COMMON_ERRORS)

KEY_LABEL = b"aicc-sip-ephemeral:"


def sip_key(api_secret_key: bytes) -> str:
    """The credentials' key: what the kamailio role renders as ephemeral_secret (sha256 hex)."""
    return hashlib.sha256(KEY_LABEL + api_secret_key).hexdigest()


def sip_password(key: str, username: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), username.encode(), hashlib.sha1).digest()).decode()


class SipToken(BaseModel):
    ws_url: str = Field(description="the first SIP proxy's secure WebSocket")
    ws_urls: list[str] = Field(description="every SIP proxy's, for failover")
    sip_uri: str
    authorization_user: str = Field(description="<expiry epoch>:<extension>")
    password: str
    display_name: str
    extension: str
    expires_at: datetime
    refresh_after_s: int = Field(description="fetch new credentials after this many seconds")


@router.post("/api/agents/me/sip-token", response_model=SipToken, responses=error_responses(404, 409, 503))
async def sip_token(
    request: Request,
    principal: Annotated[Principal, Depends(require("agent.self"))],
    pool: PoolDep,
) -> SipToken:
    """SIP credentials for this agent's browser softphone, valid for sip_token_ttl_s (15 min by
    default): the page fetches new ones before they end. No SIP password is stored or typed."""
    config = get_config(request)
    if not config.sip_ws_urls:
        raise ApiError(
            503,
            "sip_unavailable",
            "no SIP proxy WebSocket is configured (sip_ws_urls in app.yml): install the site's "
            "[sip_proxy] hosts and the [app] hosts again",
        )
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT a.extension, u.display_name FROM aicc.agents a JOIN aicc.users u ON u.id = a.user_id "
                "WHERE a.user_id = %s",
                (principal.user_id,),
            )
        ).fetchone()
    if row is None:
        raise not_found("agent profile for user", principal.username)
    if not row["extension"]:
        raise ApiError(
            409, "conflict", f"agent {principal.username!r} has no extension; a supervisor sets one"
        )
    expires = int(time.time()) + config.sip_token_ttl_s
    username = f"{expires}:{row['extension']}"
    return SipToken(
        ws_url=config.sip_ws_urls[0],
        ws_urls=config.sip_ws_urls,
        sip_uri=f"sip:{row['extension']}@{config.sip_domain}",
        authorization_user=username,
        password=sip_password(sip_key(api_state(request).secret_key), username),
        display_name=row["display_name"] or principal.username,
        extension=row["extension"],
        expires_at=datetime.fromtimestamp(expires, UTC),
        refresh_after_s=max(60, config.sip_token_ttl_s * 2 // 3),
    )
