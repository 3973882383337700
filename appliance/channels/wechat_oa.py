"""The WeChat official account (微信公众号): its followers' messages as conversations.

In: the platform calls /wechat-oa/v1/callback (routes/wechat_oa.py). The console's URL check is a GET
signed with the Token alone (SHA-1 of the sorted token, timestamp and nonce) whose echostr goes back
as it came. Messages are POSTs in safe mode (安全模式; 兼容模式 works too, only its ciphertext is read):
the URL carries encrypt_type=aes and msg_signature, the body's <Encrypt> is WXBizMsgCrypt's scheme
(wecom_crypto.py) with the AppID as the receiveid. Plaintext mode is refused: its body is not signed.
A follower's message is stored once by its MsgId (wechat_oa_messages) in the follower's open
conversation or a new one (customer identity kind openid = FromUserName); text is text, any other type
becomes a system note that the type is not supported yet. It is stored before the callback is answered
"success" (the platform repeats a callback it got no answer to), the bot answers in the background.
Events: subscribe and unsubscribe are counted and logged, the others counted; nothing is stored.

The bot, the handover and the agents' replies are the WeCom channel's (tencent_hub.py): replies go
through the customer-service API (客服消息, message/custom/send), which takes them only within 48 hours
of the follower's last message and at most 5 after it (409 for the agent otherwise), in the
background with retries, then dead letters. The access token comes from cgi-bin/token (AppID +
AppSecret), kept until shortly before its expires_in and fetched again on errcode 40001, 40014 and
42001.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import httpx
from prometheus_client import CollectorRegistry, Counter

from aicc.appliance.channels import wechat_oa_store
from aicc.appliance.channels.tencent_api import TencentApi
from aicc.appliance.channels.tencent_hub import (
    ChannelMetrics,
    Inbound,
    MessagingHub,
    Outgoing,
    Turns,
)
from aicc.appliance.channels.textbot import BotRuntime
from aicc.appliance.channels.wecom_crypto import CallbackRefused, WeComCrypto, parse_xml

if TYPE_CHECKING:
    from aicc.appliance.api.deps import ApiState

log = logging.getLogger("aicc.wechat_oa")
OPENID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MSGID = re.compile(r"^[0-9]{1,64}$")
MESSAGE_TYPES = frozenset({"text", "image", "voice", "video", "shortvideo", "location", "link"})
LOGGED_EVENTS = frozenset({"subscribe", "unsubscribe"})


def url_signature(token: str, timestamp: str, nonce: str) -> str:
    """The signature of the URL check and of every callback's query: SHA-1 (hex) of the sorted token,
    timestamp and nonce."""
    return hashlib.sha1("".join(sorted((token, timestamp, nonce))).encode()).hexdigest()  # noqa: S324


class WeChatOaApi(TencentApi):
    """A client of the official account's API (cgi-bin/token, message/custom/send) for one AppID."""

    platform = "WeChat official account"
    auth_api = "token"
    # 40001: "invalid credential, access_token is invalid or not latest" (another process fetched a
    # newer one), 40014: invalid, 42001: expired.
    token_errors = frozenset({40001, 40014, 42001})
    log = log

    def __init__(
        self,
        base_url: str,
        app_id: str,
        secret: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(base_url, timeout_s=timeout_s, transport=transport, clock=clock)
        self._app_id = app_id
        self._secret = secret

    def __repr__(self) -> str:
        return f"WeChatOaApi(app_id={self._app_id!r})"

    def token_params(self) -> dict[str, str]:
        return {"grant_type": "client_credential", "appid": self._app_id, "secret": self._secret}

    async def send_text(self, openid: str, content: str) -> None:
        """One text 客服消息. It has no idempotency key: a send retried after a lost answer may arrive
        twice."""
        await self.call(
            "message/custom/send", {"touser": openid, "msgtype": "text", "text": {"content": content}}
        )


class WeChatOaMetrics(ChannelMetrics):
    """On the API's registry. No follower or conversation ids as labels."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(
            registry, "wechat_oa", "WeChat official account", "verify_url, message, event, other: ignored"
        )
        self.events = Counter(
            "aicc_wechat_oa_events_total",
            "Events of the official account, by event (subscribe, unsubscribe, other): nothing is stored.",
            ["event"],
            registry=registry,
        )


class WeChatOaHub(MessagingHub[str]):
    """The official account's channel in one API process (app.state.wechat_oa); a peer is an OpenID."""

    channel = "wechat_oa"
    identity = "openid"
    platform = "WeChat official account"
    platform_zh = "微信公众号"
    log = log
    ledger = wechat_oa_store
    ledger_table = "wechat_oa_messages"

    def __init__(self, state: ApiState, runtime: Callable[[], Awaitable[BotRuntime | None]]) -> None:
        self.settings = state.config.wechat_oa
        self.metrics: WeChatOaMetrics = WeChatOaMetrics(state.metrics.registry)
        super().__init__(state, runtime, self.settings, self.metrics)
        self.crypto: WeComCrypto | None = None
        self.api: WeChatOaApi | None = None
        self._arrivals: Turns[str] = Turns()
        if self.settings.enabled:
            secrets = self.settings.secrets()  # ConfigError now, not at the first message
            self.crypto = WeComCrypto(secrets.token, secrets.encoding_aes_key, self.settings.app_id)
            self.api = WeChatOaApi(
                self.settings.api_base_url,
                self.settings.app_id,
                secrets.secret,
                timeout_s=self.settings.timeout_s,
            )

    @property
    def enabled(self) -> bool:
        return self.crypto is not None

    async def close_api(self) -> None:
        if self.api is not None:
            await self.api.aclose()

    # --- callbacks ---------------------------------------------------------------------------------

    def verify_url(self, signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """echostr, once the signature shows the request holds the Token."""
        assert self.crypto is not None
        expected = url_signature(self.crypto.token, timestamp, nonce)
        if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
            raise CallbackRefused("signature", "signature does not match the server configuration's Token")
        self.metrics.callbacks.labels("verify_url").inc()
        return echostr

    async def accept(
        self, msg_signature: str, timestamp: str, nonce: str, encrypt_type: str, body: bytes
    ) -> dict[str, str]:
        """The decrypted message of a callback POST, a follower's message stored (the bot answers in the
        background); CallbackRefused when it is not the platform's or not readable."""
        assert self.crypto is not None
        if encrypt_type != "aes" or not msg_signature:
            raise CallbackRefused(
                "malformed",
                "the callback is not encrypted: set the account's 消息加解密方式 to 安全模式 (safe mode)",
            )
        encrypted = parse_xml(body).get("Encrypt", "")
        if not encrypted:
            raise CallbackRefused("malformed", "the callback has no <Encrypt>")
        message = parse_xml(self.crypto.open(msg_signature, timestamp, nonce, encrypted))
        msgtype = message.get("MsgType", "")
        if msgtype == "event":
            event = message.get("Event", "")
            self.metrics.callbacks.labels("event").inc()
            self.metrics.events.labels(event if event in LOGGED_EVENTS else "other").inc()
            if event in LOGGED_EVENTS:  # the follower's OpenID is personal data: not logged
                log.info("WeChat official account: a follower sent the event %s", event)
            return message
        if msgtype not in MESSAGE_TYPES:
            self.metrics.callbacks.labels("other").inc()
            log.info("WeChat official account callback of type %s ignored", msgtype[:32] or "?")
            return message
        openid, msgid = message.get("FromUserName", ""), message.get("MsgId", "")
        if not OPENID.match(openid) or not MSGID.match(msgid):
            raise CallbackRefused("malformed", "a message without a valid FromUserName and MsgId")
        self.metrics.callbacks.labels("message").inc()
        created = message.get("CreateTime", "")
        sent_at = dt.datetime.fromtimestamp(int(created), dt.UTC) if created.isdigit() else None
        text = message.get("Content", "") if msgtype == "text" else ""
        # One follower's callbacks one after the other: two first messages make one conversation.
        async with self._arrivals.of(openid):
            stored = await self.store_inbound(Inbound(msgid, openid, msgtype, text, sent_at))
        if stored is not None:
            self._spawn(self.answer(stored))
        return message

    # --- the ledger (wechat_oa_store.py) and message/custom/send -----------------------------------

    def customer(self, peer: str) -> str:
        return peer

    def recipient(self, peer: str) -> str:
        return peer

    async def transmit(self, item: Outgoing[str]) -> None:
        assert self.api is not None
        await self.api.send_text(item.peer, item.content)
