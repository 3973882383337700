"""What the clients of Tencent's server APIs share (WeCom: wecom_api.py; the WeChat official account:
wechat_oa_api.py): JSON over HTTPS where every answer carries errcode (0 for success), and an access
token kept until shortly before its expires_in and fetched again when an API says it is invalid or
expired (then the call goes once more).

Network errors, HTTP 5xx and errcode -1 (system busy) are ApiUnavailable (worth a retry); any other
errcode is ApiError. Neither a secret nor an access token is ever logged: both travel in query strings,
so httpx's request log lines are scrubbed of them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict

BUSY = -1  # 系统繁忙
TOKEN_MARGIN_S = 300  # a token is renewed this long before Tencent says it expires
TEXT_MAX_BYTES = 2048  # one text message's content
# "secret=" also covers WeCom's "corpsecret=".
_SECRET_PARAMS = re.compile(r"((?:access_token|secret)=)[^&\s\"']*")


def scrub(text: str) -> str:
    """`text` with the values of access_token=, secret= and corpsecret= hidden."""
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


class ApiUnavailable(Exception):
    """Tencent could not be reached or was busy: the same request may succeed later."""


class ApiError(Exception):
    """Tencent refused the request (errcode other than 0 and -1)."""

    def __init__(self, api: str, errcode: int, errmsg: str) -> None:
        super().__init__(f"{api}: errcode {errcode}: {errmsg}")
        self.api = api
        self.errcode = errcode
        self.errmsg = errmsg


class Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    errcode: int = 0
    errmsg: str = ""


class _Token(Answer):
    access_token: str = ""
    expires_in: int = 7200


class TencentApi:
    """A client of one account's API. Subclasses name the platform (logs), the token API and its
    parameters, and the errcodes that mean "this access token is no good"."""

    platform: ClassVar[str]
    auth_api: ClassVar[str]
    token_errors: ClassVar[frozenset[int]]
    log: ClassVar[logging.Logger]

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _protect_http_logs()
        self._clock = clock
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport, trust_env=False
        )
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def token_params(self) -> dict[str, str]:
        """The query of the token API (the account's id and secret)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(
        self, api: str, method: str, params: dict[str, str], body: Any = None
    ) -> dict[str, Any]:
        try:
            r = await self._client.request(method, f"/cgi-bin/{api}", params=params, json=body)
        except httpx.HTTPError as exc:
            raise ApiUnavailable(f"{api}: {type(exc).__name__}: {scrub(str(exc))}") from None
        if r.status_code >= 500:
            raise ApiUnavailable(f"{api}: HTTP {r.status_code}")
        if r.status_code != 200:
            raise ApiError(api, -r.status_code, f"HTTP {r.status_code}")
        try:
            answer = r.json()
        except ValueError:
            raise ApiUnavailable(f"{api}: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise ApiUnavailable(f"{api}: the answer is not a JSON object")
        errcode = answer.get("errcode", 0)
        if errcode == BUSY:
            raise ApiUnavailable(f"{api}: errcode -1: {answer.get('errmsg', '')} (system busy)")
        return answer

    async def access_token(self, *, stale: str = "") -> str:
        """The cached token, or a new one when there is none, it is about to expire, or it is `stale`
        (refused by Tencent)."""
        async with self._lock:
            if self._token and self._token != stale and self._clock() < self._expires:
                return self._token
            raw = await self._request(self.auth_api, "GET", self.token_params())
            answer = _Token.model_validate(raw)
            if answer.errcode or not answer.access_token:
                self.log.error(
                    "%s %s failed: errcode %s: %s",
                    self.platform,
                    self.auth_api,
                    answer.errcode,
                    answer.errmsg,
                )
                raise ApiError(self.auth_api, answer.errcode, answer.errmsg)
            self._token = answer.access_token
            self._expires = self._clock() + max(60, answer.expires_in - TOKEN_MARGIN_S)
            return self._token

    async def call(self, api: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST cgi-bin/`api` with the access token; the answer (errcode 0), else ApiError."""
        token = await self.access_token()
        answer = await self._request(api, "POST", {"access_token": token}, body)
        if answer.get("errcode") in self.token_errors:
            self.log.info(
                "%s refused the access token (errcode %s); fetching a new one",
                self.platform,
                answer["errcode"],
            )
            token = await self.access_token(stale=token)
            answer = await self._request(api, "POST", {"access_token": token}, body)
        parsed = Answer.model_validate(answer)
        if parsed.errcode:
            self.log.error("%s %s failed: errcode %s: %s", self.platform, api, parsed.errcode, parsed.errmsg)
            raise ApiError(api, parsed.errcode, parsed.errmsg)
        return answer


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
