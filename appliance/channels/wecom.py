"""WeCom customer service (企业微信 微信客服): a customer-service account's chats as conversations.

In: WeCom calls /wecom/v1/callback (routes/wecom.py) with an encrypted, signed XML event
(wecom_crypto.py). For 微信客服 the event is kf_msg_or_event with a Token and an OpenKfId; the
messages themselves are fetched with kf/sync_msg from the account's saved cursor, page after page
while has_more (wecom_api.py), in the background: the callback is answered at once. A customer's
message (origin 3) is stored once by its msgid (wecom_messages) in the customer's open conversation
on that account (customer identity kind wecom = external_userid), or a new one; text is text, any
other type becomes a system note that the type is not supported yet. More than rate_messages per
rate_window_s from one customer: refused (counted, not stored). Events and servicers' messages are
skipped.

What it shares with the WeChat official account (tencent_hub.py): storing a customer's message once
in their open conversation, the bot, the reply rules, sending with retries and dead letters.

The bot: the web chat's text bot (same runtime, channels/textbot.py), one per conversation while it
is handled by the bot, closed when idle for BOT_IDLE_S and rebuilt without a second greeting. Its
handover puts the conversation in the agents' queue; agents reply through POST
/api/conversations/{id}/messages (routes/conversations.py, which asks this hub first).

Out: kf/send_msg, one text of at most 2,048 bytes per message part, with our msgid (idempotency). WeCom
lets a reply go only within 48 hours of the customer's last message and at most 5 after it: both are
checked before a reply is stored (ReplyRefused: the agent gets 409 and why). Sending is in the
background, in order per conversation; network errors, HTTP 5xx and errcode -1 are retried with
backoff (send_attempts, retry_base_s doubling); what still fails, or WeCom refuses, is a dead letter
(aicc.channel_dead_letters) admins see. The message is marked delivered once WeCom took it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter

from aicc.appliance.channels import wecom_store
from aicc.appliance.channels.tencent_hub import (
    ChannelMetrics,
    Inbound,
    MessagingHub,
    Outgoing,
    Plan,
    ReplyRefused,
    reply_refusal,
    unsupported_note,
)
from aicc.appliance.channels.textbot import BotRuntime
from aicc.appliance.channels.wecom_api import WeComApi, WeComError, WeComUnavailable
from aicc.appliance.channels.wecom_crypto import CallbackRefused, WeComCrypto, parse_xml
from aicc.appliance.channels.wecom_store import Peer

if TYPE_CHECKING:
    from aicc.appliance.api.deps import ApiState
    from aicc.appliance.channels.wecom_api import KfMessage

__all__ = [
    "Outgoing",
    "Plan",
    "ReplyRefused",
    "WeComHub",
    "WeComMetrics",
    "reply_refusal",
    "unsupported_note",
]

log = logging.getLogger("aicc.wecom")
FROM_CUSTOMER = 3  # sync_msg's origin of a customer's message
KF_EVENT = "kf_msg_or_event"
SYNC_PAGES_MAX = 100  # 100,000 messages per callback at most: a cursor that never ends is a bug
OPEN_KFID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class WeComMetrics(ChannelMetrics):
    """On the API's registry. No customer, account or conversation ids as labels."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry, "wecom", "WeCom", "verify_url, kf_msg_or_event, other: ignored")
        self.sync_failures = Counter(
            "aicc_wecom_sync_failures_total",
            "kf/sync_msg runs that stopped on an error (the next callback resumes from the cursor).",
            registry=registry,
        )


class WeComHub(MessagingHub[Peer]):
    """The WeCom channel in one API process (app.state.wecom)."""

    channel = "wecom"
    identity = "wecom"
    platform = "WeCom"
    platform_zh = ""
    log = log
    ledger = wecom_store
    ledger_table = "wecom_messages"

    def __init__(self, state: ApiState, runtime: Callable[[], Awaitable[BotRuntime | None]]) -> None:
        self.settings = state.config.wecom
        self.metrics: WeComMetrics = WeComMetrics(state.metrics.registry)
        super().__init__(state, runtime, self.settings, self.metrics)
        self.crypto: WeComCrypto | None = None
        self.api: WeComApi | None = None
        if self.settings.enabled:
            secrets = self.settings.secrets()  # ConfigError now, not at the first message
            self.crypto = WeComCrypto(secrets.token, secrets.encoding_aes_key, self.settings.corp_id)
            self.api = WeComApi(
                self.settings.api_base_url,
                self.settings.corp_id,
                secrets.secret,
                timeout_s=self.settings.timeout_s,
            )
        self._sync_locks: dict[str, asyncio.Lock] = {}

    @property
    def enabled(self) -> bool:
        return self.crypto is not None

    async def close_api(self) -> None:
        if self.api is not None:
            await self.api.aclose()

    # --- callbacks ---------------------------------------------------------------------------------

    def verify_url(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """The plaintext of echostr, which proves to WeCom that this URL holds the Token and key."""
        assert self.crypto is not None
        # Base64 has no spaces: one here is a "+" the query string carried unencoded.
        echostr = echostr.replace(" ", "+")
        plain = self.crypto.open(msg_signature, timestamp, nonce, echostr)
        try:
            text = plain.decode()
        except UnicodeDecodeError:
            raise CallbackRefused("decrypt", "echostr is not text") from None
        self.metrics.callbacks.labels("verify_url").inc()
        return text

    def accept(self, msg_signature: str, timestamp: str, nonce: str, body: bytes) -> dict[str, str]:
        """The decrypted event of a callback POST; CallbackRefused when it is not WeCom's or not
        readable. A kf_msg_or_event starts a sync in the background."""
        assert self.crypto is not None
        envelope = parse_xml(body)
        encrypted = envelope.get("Encrypt", "")
        if not encrypted:
            raise CallbackRefused("malformed", "the callback has no <Encrypt>")
        event = parse_xml(self.crypto.open(msg_signature, timestamp, nonce, encrypted))
        if event.get("MsgType") == "event" and event.get("Event") == KF_EVENT:
            token, open_kfid = event.get("Token", ""), event.get("OpenKfId", "")
            if not token or len(token) > 512 or not OPEN_KFID.match(open_kfid):
                raise CallbackRefused("malformed", "kf_msg_or_event without a valid Token and OpenKfId")
            self.metrics.callbacks.labels(KF_EVENT).inc()
            self._spawn(self.sync(open_kfid, token))
        else:
            self.metrics.callbacks.labels("other").inc()
            log.info(
                "WeCom callback %s/%s ignored: only 微信客服 messages are read",
                event.get("MsgType", "?")[:32],
                event.get("Event", "")[:64],
            )
        return event

    # --- in: sync_msg ------------------------------------------------------------------------------

    async def sync(self, open_kfid: str, token: str) -> None:
        """Fetch and store the account's new messages (one sync per account at a time)."""
        lock = self._sync_locks.setdefault(open_kfid, asyncio.Lock())
        async with lock:
            try:
                await self._sync(open_kfid, token)
            except (WeComUnavailable, WeComError) as exc:
                self.metrics.sync_failures.inc()
                log.error(
                    "WeCom sync of account %s stopped: %s; the next callback resumes from the saved cursor",
                    open_kfid,
                    exc,
                )

    async def _sync(self, open_kfid: str, token: str) -> None:
        assert self.api is not None
        async with self.pool().connection() as conn:
            cursor = await wecom_store.cursor(conn, open_kfid)
        for _ in range(SYNC_PAGES_MAX):
            page = await self.api.sync_msg(token, open_kfid, cursor)
            for message in page.msg_list:
                await self._inbound(open_kfid, message)
            if page.next_cursor and page.next_cursor != cursor:
                cursor = page.next_cursor[:256]
                async with self.pool().connection() as conn:
                    await wecom_store.set_cursor(conn, open_kfid, cursor)
            if not page.has_more:
                return
        log.warning(
            "WeCom sync of account %s: still more after %d pages; the next callback goes on",
            open_kfid,
            SYNC_PAGES_MAX,
        )

    async def _inbound(self, open_kfid: str, message: KfMessage) -> None:
        if message.origin != FROM_CUSTOMER or not message.external_userid:
            return  # events (enter_session ...) and what servicers sent from WeCom itself
        text = message.text.content if message.msgtype == "text" and message.text is not None else ""
        sent_at = dt.datetime.fromtimestamp(message.send_time, dt.UTC) if message.send_time > 0 else None
        peer = Peer(message.open_kfid or open_kfid, message.external_userid)
        await self.receive(Inbound(message.msgid, peer, message.msgtype, text, sent_at))

    # --- the ledger (wecom_store.py) and send_msg --------------------------------------------------

    def customer(self, peer: Peer) -> str:
        return peer.external_userid

    def recipient(self, peer: Peer) -> str:
        return f"{peer.open_kfid}/{peer.external_userid}"

    async def transmit(self, item: Outgoing[Peer]) -> None:
        assert self.api is not None
        await self.api.send_text(item.peer.external_userid, item.peer.open_kfid, item.msgid, item.content)
