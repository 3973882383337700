"""WeCom's server API as the 微信客服 channel uses it: cgi-bin/gettoken, cgi-bin/kf/sync_msg and
cgi-bin/kf/send_msg (JSON over HTTPS; every answer carries errcode, 0 for success), on the machinery
Tencent's APIs share (tencent_api.py).

The access token comes from gettoken (corpid + the 微信客服 Secret) and is kept until shortly before
its expires_in; an answer of 40014 (invalid) or 42001 (expired) gets a new one and the call once more.
Network errors, HTTP 5xx and errcode -1 (system busy) are WeComUnavailable (worth a retry); any other
errcode is WeComError. Neither the Secret nor an access token is ever logged: both travel in query
strings, so httpx's request log lines are scrubbed of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aicc.appliance.channels.tencent_api import (
    TEXT_MAX_BYTES,
    Answer,
    ApiError,
    ApiUnavailable,
    TencentApi,
    scrub,
    split_text,
)

__all__ = [
    "TEXT_MAX_BYTES",
    "KfMessage",
    "SyncPage",
    "WeComApi",
    "WeComError",
    "WeComUnavailable",
    "scrub",
    "split_text",
]

log = logging.getLogger("aicc.wecom")
SYNC_LIMIT = 1000  # sync_msg's most messages per page
# The names this channel's callers use; the classes are every Tencent client's.
WeComUnavailable = ApiUnavailable
WeComError = ApiError


class KfText(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: str = ""


class KfMessage(BaseModel):
    """One entry of sync_msg's msg_list. origin 3: the customer; 4: a system event; 5: a WeCom
    servicer (接待人员)."""

    model_config = ConfigDict(extra="ignore")
    msgid: str = Field(min_length=1, max_length=128)
    open_kfid: str = Field("", max_length=64)
    external_userid: str = Field("", max_length=128)
    send_time: int = 0
    origin: int = 0
    msgtype: str = Field("", max_length=32)
    text: KfText | None = None


class SyncPage(Answer):
    next_cursor: str = ""
    has_more: int = 0
    msg_list: list[KfMessage] = Field(default_factory=list)


class WeComApi(TencentApi):
    """A client of WeCom's API for one corp and its 微信客服 Secret."""

    platform = "WeCom"
    auth_api = "gettoken"
    token_errors = frozenset({40014, 42001})  # invalid / expired access_token: fetch a new one
    log = log

    def __init__(
        self,
        base_url: str,
        corp_id: str,
        secret: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(base_url, timeout_s=timeout_s, transport=transport, clock=clock)
        self._corp_id = corp_id
        self._secret = secret

    def __repr__(self) -> str:
        return f"WeComApi(corp_id={self._corp_id!r})"

    def token_params(self) -> dict[str, str]:
        return {"corpid": self._corp_id, "corpsecret": self._secret}

    async def sync_msg(self, token: str, open_kfid: str, cursor: str) -> SyncPage:
        body: dict[str, Any] = {"token": token, "open_kfid": open_kfid, "limit": SYNC_LIMIT}
        if cursor:
            body["cursor"] = cursor
        answer = await self.call("kf/sync_msg", body)
        try:
            return SyncPage.model_validate(answer)
        except ValidationError as exc:
            raise WeComUnavailable(
                f"kf/sync_msg: the answer does not validate: {exc.error_count()} errors"
            ) from None

    async def send_text(self, touser: str, open_kfid: str, msgid: str, content: str) -> None:
        """One text message; `msgid` (at most 32 of [0-9a-zA-Z_-]) makes a repeated send one message."""
        await self.call(
            "kf/send_msg",
            {
                "touser": touser,
                "open_kfid": open_kfid,
                "msgid": msgid,
                "msgtype": "text",
                "text": {"content": content},
            },
        )
