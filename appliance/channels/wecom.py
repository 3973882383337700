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
import contextlib
import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from aicc.appliance.channels import wecom_store
from aicc.appliance.channels.textbot import (
    LANGUAGES,
    BotEnded,
    BotEvent,
    BotHandover,
    BotReply,
    BotRuntime,
    TextBot,
    message_language,
)
from aicc.appliance.channels.webchat import RateLimiter
from aicc.appliance.channels.wecom_api import WeComApi, WeComError, WeComUnavailable, split_text
from aicc.appliance.channels.wecom_crypto import CallbackRefused, WeComCrypto, parse_xml
from aicc.appliance.channels.wecom_store import Peer, Window
from aicc.appliance.conversations import dead_letters, store
from aicc.models.engines.base import Language

if TYPE_CHECKING:
    from aicc.appliance.api.deps import ApiState, Pool
    from aicc.appliance.channels.wecom_api import KfMessage

log = logging.getLogger("aicc.wecom")
REPLY_WINDOW = dt.timedelta(hours=48)
REPLIES_PER_MESSAGE = 5
FROM_CUSTOMER = 3  # sync_msg's origin of a customer's message
KF_EVENT = "kf_msg_or_event"
SYNC_PAGES_MAX = 100  # 100,000 messages per callback at most: a cursor that never ends is a bug
BOT_IDLE_S = 1800.0
RETRY_MAX_S = 60.0
OPEN_KFID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class WeComMetrics:
    """On the API's registry. No customer, account or conversation ids as labels."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.callbacks = Counter(
            "aicc_wecom_callbacks_total",
            "WeCom callbacks accepted, by kind (verify_url, kf_msg_or_event, other: ignored).",
            ["kind"],
            registry=registry,
        )
        self.refused = Counter(
            "aicc_wecom_refused_total",
            "WeCom callbacks and customer messages refused, by reason (signature, malformed, decrypt, "
            "receiveid, too_large, rate_limited).",
            ["reason"],
            registry=registry,
        )
        self.messages = Counter(
            "aicc_wecom_messages_total",
            "WeCom messages stored, by author (customer; system: a type not supported yet; bot; agent).",
            ["author"],
            registry=registry,
        )
        self.duplicates = Counter(
            "aicc_wecom_duplicates_total",
            "Customer messages synced again (their msgid was taken before): not stored twice.",
            registry=registry,
        )
        self.sync_failures = Counter(
            "aicc_wecom_sync_failures_total",
            "kf/sync_msg runs that stopped on an error (the next callback resumes from the cursor).",
            registry=registry,
        )
        self.sends = Counter(
            "aicc_wecom_sends_total",
            "kf/send_msg attempts by result (sent, retried, dead: a dead letter).",
            ["result"],
            registry=registry,
        )
        self.replies_refused = Counter(
            "aicc_wecom_replies_refused_total",
            "Replies not sent because of WeCom's rules, by reason (no_message, 48h, 5_messages, off).",
            ["reason"],
            registry=registry,
        )
        self.handovers = Counter(
            "aicc_wecom_handovers_total",
            "WeCom conversations the bot handed to the agents, by reason.",
            ["reason"],
            registry=registry,
        )


class ReplyRefused(Exception):
    """A reply WeCom would not take now; `message` tells the agent why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def reply_refusal(window: Window, parts: int, now: dt.datetime) -> ReplyRefused | None:
    """Why WeCom would refuse `parts` more messages to the customer now, or None."""
    if window.last_in is None:
        return ReplyRefused(
            "no_message", "WeCom lets a reply go only after the customer has written; they have not yet"
        )
    if now - window.last_in > REPLY_WINDOW:
        return ReplyRefused(
            "48h",
            "WeCom accepts replies only within 48 hours of the customer's last message "
            f"({window.last_in:%Y-%m-%d %H:%M} UTC); it can be sent once the customer writes again",
        )
    if window.sent_since + parts > REPLIES_PER_MESSAGE:
        need = f"; this one needs {parts}" if parts > 1 else ""
        return ReplyRefused(
            "5_messages",
            f"WeCom accepts at most {REPLIES_PER_MESSAGE} messages after the customer's last one; "
            f"{window.sent_since} went already{need}: wait for the customer to write again",
        )
    return None


def unsupported_note(msgtype: str) -> str:
    kind = msgtype or "unknown"
    return (
        f"客户发送了一条 {kind} 类型的消息，暂不支持此类消息。"
        f" / The customer sent a WeCom {kind} message; this message type is not supported yet."
    )


@dataclass(frozen=True)
class Outgoing:
    """One send_msg: a part of a stored message (delivered once its last part went)."""

    conversation_id: UUID
    message_id: int
    peer: Peer
    msgid: str
    content: str
    last: bool


@dataclass(frozen=True)
class Plan:
    """A reply WeCom will take: whom to, in which parts."""

    peer: Peer
    parts: list[str]


@dataclass
class _Held:
    bot: TextBot
    used: float


@dataclass
class _Turn:
    """Sends of one conversation wait their turn (asyncio.Lock is first come, first served); the entry
    goes when nobody uses it."""

    lock: asyncio.Lock
    users: int = 0


class WeComHub:
    """The WeCom channel in one API process (app.state.wecom)."""

    def __init__(self, state: ApiState, runtime: Callable[[], Awaitable[BotRuntime | None]]) -> None:
        self.state = state
        self.settings = state.config.wecom
        self.metrics = WeComMetrics(state.metrics.registry)
        self.runtime = runtime
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
        self.limiter = RateLimiter(self.settings.rate_messages, self.settings.rate_window_s)
        self.bots: dict[UUID, _Held] = {}
        self._sync_locks: dict[str, asyncio.Lock] = {}
        self._turns: dict[UUID, _Turn] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.crypto is not None

    def pool(self) -> Pool:
        pool = self.state.pool
        if pool is None:
            raise RuntimeError("the API's database pool is not open")
        return pool

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # A sync stopped here resumes from the saved cursor at the next callback.
            log.error("WeCom background work failed: %s", type(exc).__name__, exc_info=exc)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for the background work (syncs and sends) started so far and what it starts."""
        deadline = time.monotonic() + timeout
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.01, deadline - time.monotonic()))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.drain(5.0)
        for task in list(self._tasks):
            task.cancel()
        for held in list(self.bots.values()):
            await held.bot.close()
        self.bots.clear()
        if self.api is not None:
            await self.api.aclose()

    # --- callbacks ---------------------------------------------------------------------------------

    def refused(self, reason: str, message: str, address: str) -> None:
        self.metrics.refused.labels(reason).inc()
        log.warning("WeCom callback from %s refused (%s): %s", address or "?", reason, message)

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
        peer = Peer(message.open_kfid or open_kfid, message.external_userid)
        text = ""
        if message.msgtype == "text" and message.text is not None:
            text = message.text.content.replace("\x00", "").strip()[: store.BODY_MAX]
        author: store.Author = "customer" if text else "system"
        body = text or unsupported_note(message.msgtype)
        sent_at = dt.datetime.fromtimestamp(message.send_time, dt.UTC) if message.send_time > 0 else None
        runtime = await self.runtime()
        async with self.pool().connection() as conn, conn.transaction():
            if not await wecom_store.claim_inbound(conn, message.msgid, peer, sent_at):
                self.metrics.duplicates.inc()
                return
            if not self.limiter.allow(peer.external_userid):
                await wecom_store.settle_inbound(conn, message.msgid, "refused")
                self.metrics.refused.labels("rate_limited").inc()
                log.warning(
                    "WeCom message refused (rate_limited): over %d in %g s from one customer (account %s)",
                    self.settings.rate_messages,
                    self.settings.rate_window_s,
                    peer.open_kfid,
                )
                return
            conversation, new = await self._conversation(conn, peer, runtime, text)
            cid = conversation["id"]
            current = cast(
                Language, conversation["language"] if conversation["language"] in LANGUAGES else "zh"
            )
            language = message_language(text, current) if text else current
            row, _ = await store.add_message(
                conn, cid, direction="in", author=author, body=body, delivered=True
            )
            await wecom_store.settle_inbound(conn, message.msgid, "stored", cid, row["id"])
            if language != conversation["language"]:
                await store.update_conversation(conn, cid, language=language)
        self.metrics.messages.labels(author).inc()
        if text and conversation["handler"] == "bot" and runtime is not None:
            bot = await self._bot(conversation, runtime, language, greet=new)
            if bot is not None:
                bot.send(text, language)

    async def _conversation(
        self, conn: AsyncConnection[DictRow], peer: Peer, runtime: BotRuntime | None, text: str
    ) -> tuple[dict[str, Any], bool]:
        """The customer's open conversation on the account (locked), or a new one (and customer)."""
        conversation = await wecom_store.open_conversation(conn, peer)
        if conversation is not None:
            locked = await store.get_conversation(conn, conversation["id"], lock=True)
            assert locked is not None
            return locked, False
        customer_id = await store.customer_by_identity(conn, "wecom", peer.external_userid)
        language = message_language(text, "zh") if text else "zh"
        if customer_id is None:
            customer_id = await store.create_customer(conn, language=language)
            await store.add_identity(conn, customer_id, "wecom", peer.external_userid)
        conversation = await store.create_conversation(
            conn,
            customer_id,
            "wecom",
            language=language,
            handler="bot" if runtime is not None else "queue",
            bot=runtime.bot if runtime is not None else "",
        )
        await wecom_store.link(conn, conversation["id"], peer)
        return conversation, True

    # --- the bot -----------------------------------------------------------------------------------

    async def _bot(
        self, conversation: dict[str, Any], runtime: BotRuntime, language: Language, *, greet: bool
    ) -> TextBot | None:
        cid: UUID = conversation["id"]
        held = self.bots.get(cid)
        if held is not None and not held.bot.done:
            held.used = time.monotonic()
            return held.bot
        await self._close_idle_bots()

        async def on_event(event: BotEvent) -> None:
            await self._bot_event(cid, event)

        bot = TextBot(runtime, str(cid), language, on_event)
        self.bots[cid] = _Held(bot, time.monotonic())
        try:
            await bot.start(greet=greet)
        except Exception:  # the customer still reaches the agents
            log.exception("WeCom conversation %s: the bot did not start", cid)
            self.bots.pop(cid, None)
            await bot.close()
            return None
        return bot

    async def _close_idle_bots(self) -> None:
        now = time.monotonic()
        for cid, held in list(self.bots.items()):
            if held.bot.done or now - held.used > BOT_IDLE_S:
                del self.bots[cid]
                await held.bot.close()

    async def stop_bot(self, conversation_id: UUID) -> None:
        """An agent has the conversation (or it is resolved): the bot answers no more."""
        held = self.bots.pop(conversation_id, None)
        if held is not None:
            await held.bot.close()

    async def _bot_event(self, cid: UUID, event: BotEvent) -> None:
        if isinstance(event, BotReply):
            await self._bot_reply(cid, event.text[: store.BODY_MAX])
            return
        if isinstance(event, BotHandover):
            changes: dict[str, Any] = {"handler": "queue", "summary": event.summary[:1000]}
            self.metrics.handovers.labels(event.reason).inc()
        else:
            assert isinstance(event, BotEnded)
            changes = {"status": "resolved"}
        async with self.pool().connection() as conn, conn.transaction():
            current = await store.get_conversation(conn, cid, lock=True)
            if current is None or current["handler"] == "agent":
                return
            await store.update_conversation(conn, cid, **changes)
        held = self.bots.pop(cid, None)
        if held is not None:
            # Not awaited: this runs inside the bot's own pipeline task.
            self._spawn(held.bot.close())

    async def _bot_reply(self, cid: UUID, text: str) -> None:
        async with self.pool().connection() as conn, conn.transaction():
            conversation = await store.get_conversation(conn, cid, lock=True)
            if (
                conversation is None
                or conversation["handler"] == "agent"
                or conversation["status"] == "resolved"
            ):
                return  # an agent took it meanwhile: the bot's late words are not sent
            try:
                plan = await self.plan(conn, conversation, text)
            except ReplyRefused as exc:
                log.warning("WeCom conversation %s: the bot's reply is not sent: %s", cid, exc.message)
                return
            row, _ = await store.add_message(conn, cid, direction="out", author="bot", body=text)
            items = await self.enqueue(conn, plan, cid, row["id"])
        self.metrics.messages.labels("bot").inc()
        self.deliver(items)

    # --- out: send_msg -----------------------------------------------------------------------------

    async def plan(self, conn: AsyncConnection[DictRow], conversation: dict[str, Any], text: str) -> Plan:
        """How `text` goes to the customer of a WeCom conversation (locked by the caller); ReplyRefused
        when WeCom would not take it now."""
        refusal: ReplyRefused | None = None
        peer = await wecom_store.peer_of(conn, conversation["id"])
        parts = split_text(text)
        if not self.enabled:
            refusal = ReplyRefused(
                "off", "WeCom is not enabled on this appliance: the reply cannot reach the customer"
            )
        elif peer is None:
            refusal = ReplyRefused("off", "this conversation has no WeCom customer to reply to")
        else:
            refusal = reply_refusal(await wecom_store.window(conn, peer), len(parts), dt.datetime.now(dt.UTC))
        if refusal is not None:
            self.metrics.replies_refused.labels(refusal.reason).inc()
            raise refusal
        assert peer is not None
        return Plan(peer, parts)

    async def enqueue(
        self, conn: AsyncConnection[DictRow], plan: Plan, conversation_id: UUID, message_id: int
    ) -> list[Outgoing]:
        """The stored message's sends, in the ledger (so they count against the limits at once)."""
        items = []
        for i, part in enumerate(plan.parts):
            msgid = uuid.uuid4().hex  # 32 of [0-9a-f]: what send_msg's msgid allows
            await wecom_store.add_outbound(conn, msgid, plan.peer, conversation_id, message_id)
            items.append(
                Outgoing(conversation_id, message_id, plan.peer, msgid, part, i == len(plan.parts) - 1)
            )
        return items

    def deliver(self, items: list[Outgoing]) -> None:
        """Send in the background (after the caller's transaction committed), in order per conversation."""
        if items:
            self._spawn(self._deliver(items))

    async def _deliver(self, items: list[Outgoing]) -> None:
        cid = items[0].conversation_id
        turn = self._turns.setdefault(cid, _Turn(asyncio.Lock()))
        turn.users += 1
        try:
            async with turn.lock:
                for i, item in enumerate(items):
                    if not await self._send(item):
                        # The rest of a message missing a part would read wrong: dead too, unsent.
                        for rest in items[i + 1 :]:
                            await self._dead(rest, 0, "an earlier part of this message could not be sent")
                        return
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[cid]

    async def _send(self, item: Outgoing) -> bool:
        assert self.api is not None
        delay = self.settings.retry_base_s
        attempts = 0
        while True:
            attempts += 1
            try:
                await self.api.send_text(
                    item.peer.external_userid, item.peer.open_kfid, item.msgid, item.content
                )
            except WeComUnavailable as exc:
                if attempts < self.settings.send_attempts:
                    self.metrics.sends.labels("retried").inc()
                    log.warning(
                        "WeCom send %s failed (%s); retry %d in %g s", item.msgid, exc, attempts, delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                error = str(exc)
            except WeComError as exc:
                error = f"errcode {exc.errcode}: {exc.errmsg}"
            else:
                async with self.pool().connection() as conn, conn.transaction():
                    await wecom_store.settle_outbound(conn, item.msgid, "sent", attempts)
                    if item.last:
                        await store.mark_delivered(conn, [item.message_id])
                self.metrics.sends.labels("sent").inc()
                return True
            await self._dead(item, attempts, error)
            return False

    async def _dead(self, item: Outgoing, attempts: int, error: str) -> None:
        log.error(
            "WeCom message %s of conversation %s is a dead letter after %d attempts: %s",
            item.msgid,
            item.conversation_id,
            attempts,
            error,
        )
        async with self.pool().connection() as conn, conn.transaction():
            await wecom_store.settle_outbound(conn, item.msgid, "failed", attempts)
            await dead_letters.add(
                conn,
                "wecom",
                conversation_id=item.conversation_id,
                message_id=item.message_id,
                recipient=f"{item.peer.open_kfid}/{item.peer.external_userid}",
                reference=item.msgid,
                attempts=attempts,
                error=error,
            )
        self.metrics.sends.labels("dead").inc()
