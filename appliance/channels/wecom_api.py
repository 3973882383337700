"""WeCom's server API as the 微信客服 channel uses it: cgi-bin/gettoken, cgi-bin/kf/sync_msg and
cgi-bin/kf/send_msg (JSON over HTTPS; every answer carries errcode, 0 for success).

The access token comes from gettoken (corpid + the 微信客服 Secret) and is kept until shortly before
its expires_in; an answer of 40014 (invalid) or 42001 (expired) gets a new one and the call once more.
Network errors, HTTP 5xx and errcode -1 (system busy) are WeComUnavailable (worth a retry); any other
errcode is WeComError. Neither the Secret nor an access token is ever logged: both travel in query
strings, so httpx's request log lines are scrubbed of them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("aicc.wecom")
TOKEN_ERRORS = frozenset({40014, 42001})  # invalid / expired access_token: fetch a new one
BUSY = -1  # 系统繁忙
TOKEN_MARGIN_S = 300  # a token is renewed this long before WeCom says it expires
TEXT_MAX_BYTES = 2048  # send_msg's text.content
SYNC_LIMIT = 1000  # sync_msg's most messages per page
_SECRET_PARAMS = re.compile(r"((?:access_token|corpsecret)=)[^&\s\"']*")


def scrub(text: str) -> str:
    """`text` with the values of access_token= and corpsecret= hidden."""
    return _SECRET_PARAMS.sub(r"\1***", text)


class _ScrubSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(scrub(str(a)) if isinstance(a, str | httpx.URL) else a for a in record.args)
        return True


def _protect_http_logs() -> None:
    # httpx logs every request's URL at INFO (and the API logs at INFO): the token is in that URL.
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _ScrubSecrets) for f in logger.filters):
        logger.addFilter(_ScrubSecrets())


class WeComUnavailable(Exception):
    """WeCom could not be reached or was busy: the same request may succeed later."""


class WeComError(Exception):
    """WeCom refused the request (errcode other than 0 and -1)."""

    def __init__(self, api: str, errcode: int, errmsg: str) -> None:
        super().__init__(f"{api}: errcode {errcode}: {errmsg}")
        self.api = api
        self.errcode = errcode
        self.errmsg = errmsg


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    errcode: int = 0
    errmsg: str = ""


class _Token(_Answer):
    access_token: str = ""
    expires_in: int = 7200


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


class SyncPage(_Answer):
    next_cursor: str = ""
    has_more: int = 0
    msg_list: list[KfMessage] = Field(default_factory=list)


class WeComApi:
    """A client of WeCom's API for one corp and its 微信客服 Secret."""

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
        _protect_http_logs()
        self._corp_id = corp_id
        self._secret = secret
        self._clock = clock
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport, trust_env=False
        )
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"WeComApi(corp_id={self._corp_id!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(
        self, api: str, method: str, params: dict[str, str], body: Any = None
    ) -> dict[str, Any]:
        try:
            r = await self._client.request(method, f"/cgi-bin/{api}", params=params, json=body)
        except httpx.HTTPError as exc:
            raise WeComUnavailable(f"{api}: {type(exc).__name__}: {scrub(str(exc))}") from None
        if r.status_code >= 500:
            raise WeComUnavailable(f"{api}: HTTP {r.status_code}")
        if r.status_code != 200:
            raise WeComError(api, -r.status_code, f"HTTP {r.status_code}")
        try:
            answer = r.json()
        except ValueError:
            raise WeComUnavailable(f"{api}: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise WeComUnavailable(f"{api}: the answer is not a JSON object")
        errcode = answer.get("errcode", 0)
        if errcode == BUSY:
            raise WeComUnavailable(f"{api}: errcode -1: {answer.get('errmsg', '')} (system busy)")
        return answer

    async def access_token(self, *, stale: str = "") -> str:
        """The cached token, or a new one when there is none, it is about to expire, or it is `stale`
        (refused by WeCom)."""
        async with self._lock:
            if self._token and self._token != stale and self._clock() < self._expires:
                return self._token
            raw = await self._request(
                "gettoken", "GET", {"corpid": self._corp_id, "corpsecret": self._secret}
            )
            answer = _Token.model_validate(raw)
            if answer.errcode or not answer.access_token:
                log.error("WeCom gettoken failed: errcode %s: %s", answer.errcode, answer.errmsg)
                raise WeComError("gettoken", answer.errcode, answer.errmsg)
            self._token = answer.access_token
            self._expires = self._clock() + max(60, answer.expires_in - TOKEN_MARGIN_S)
            return self._token

    async def call(self, api: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST cgi-bin/`api` with the access token; the answer (errcode 0), else WeComError."""
        token = await self.access_token()
        answer = await self._request(api, "POST", {"access_token": token}, body)
        if answer.get("errcode") in TOKEN_ERRORS:
            log.info("WeCom refused the access token (errcode %s); fetching a new one", answer["errcode"])
            token = await self.access_token(stale=token)
            answer = await self._request(api, "POST", {"access_token": token}, body)
        parsed = _Answer.model_validate(answer)
        if parsed.errcode:
            log.error("WeCom %s failed: errcode %s: %s", api, parsed.errcode, parsed.errmsg)
            raise WeComError(api, parsed.errcode, parsed.errmsg)
        return answer

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


def split_text(text: str, limit: int = TEXT_MAX_BYTES) -> list[str]:
    """`text` in parts of at most `limit` UTF-8 bytes, cut between characters (lines when possible)."""
    parts: list[str] = []
    rest = text
    while len(rest.encode()) > limit:
        cut = len(rest.encode()[:limit].decode(errors="ignore"))
        newline = rest.rfind("\n", 0, cut)
        if newline > cut // 2:
            cut = newline + 1
        parts.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        parts.append(rest)
    return parts
