"""What the Tencent messaging channels share in an API process (WeCom customer service: wecom.py; the
WeChat official account: wechat_oa.py): a customer's message stored once by the platform's id of it
in the customer's open conversation (or a new one), the text bot answering first and handing over to
the agents, and replies within the platform's rules, sent in the background with retries, then dead
letters. Each channel brings its callbacks, its API client and its ledger tables (the hooks below).

Both platforms let a reply go only within 48 hours of the customer's last message and at most 5 after
it (WeCom: kf/send_msg; the official account: 客服消息 message/custom/send): checked before a reply is
stored (ReplyRefused: the agent gets 409 and why). Sends go in order per conversation; network
errors, HTTP 5xx and errcode -1 are retried with backoff (send_attempts, retry_base_s doubling); what
still fails, or the platform refuses, is a dead letter (aicc.channel_dead_letters). A message is marked
delivered once the platform took its last part.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar, cast
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow

from aicc.appliance.channels.tencent_api import ApiError, ApiUnavailable, split_text
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
from aicc.appliance.conversations import dead_letters, store
from aicc.models.engines.base import Language

if TYPE_CHECKING:
    from aicc.appliance.api.deps import ApiState, Pool

REPLY_WINDOW = dt.timedelta(hours=48)
REPLIES_PER_MESSAGE = 5
BOT_IDLE_S = 1800.0
RETRY_MAX_S = 60.0

P = TypeVar("P")  # whom a conversation is with, as the channel addresses them
K = TypeVar("K")
InStatus = Literal["stored", "refused"]
OutStatus = Literal["sent", "failed"]


class HubSettings(Protocol):
    """The settings every such channel has (WeComSettings, WeChatOaSettings)."""

    @property
    def rate_messages(self) -> int: ...
    @property
    def rate_window_s(self) -> float: ...
    @property
    def send_attempts(self) -> int: ...
    @property
    def retry_base_s(self) -> float: ...


class ChannelMetrics:
    """On the API's registry, named aicc_<prefix>_*. No customer, account or conversation ids as labels."""

    def __init__(self, registry: CollectorRegistry, prefix: str, platform: str, callback_kinds: str) -> None:
        self.callbacks = Counter(
            f"aicc_{prefix}_callbacks_total",
            f"{platform} callbacks accepted, by kind ({callback_kinds}).",
            ["kind"],
            registry=registry,
        )
        self.refused = Counter(
            f"aicc_{prefix}_refused_total",
            f"{platform} callbacks and customer messages refused, by reason (signature, malformed, decrypt, "
            "receiveid, too_large, rate_limited).",
            ["reason"],
            registry=registry,
        )
        self.messages = Counter(
            f"aicc_{prefix}_messages_total",
            f"{platform} messages stored, by author (customer; system: a type not supported yet; bot; "
            "agent).",
            ["author"],
            registry=registry,
        )
        self.duplicates = Counter(
            f"aicc_{prefix}_duplicates_total",
            "Customer messages received again (their id was taken before): not stored twice.",
            registry=registry,
        )
        self.sends = Counter(
            f"aicc_{prefix}_sends_total",
            "Send attempts by result (sent, retried, dead: a dead letter).",
            ["result"],
            registry=registry,
        )
        self.replies_refused = Counter(
            f"aicc_{prefix}_replies_refused_total",
            f"Replies not sent because of {platform}'s rules, by reason (no_message, 48h, 5_messages, off).",
            ["reason"],
            registry=registry,
        )
        self.handovers = Counter(
            f"aicc_{prefix}_handovers_total",
            f"{platform} conversations the bot handed to the agents, by reason.",
            ["reason"],
            registry=registry,
        )


class ReplyRefused(Exception):
    """A reply the platform would not take now; `message` tells the agent why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Window:
    """What the reply limits are measured from: the customer's last message (when they sent it) and
    the replies accepted or on their way since."""

    last_in: dt.datetime | None
    sent_since: int


def reply_refusal(
    window: Window, parts: int, now: dt.datetime, platform: str = "WeCom"
) -> ReplyRefused | None:
    """Why the platform would refuse `parts` more messages to the customer now, or None."""
    if window.last_in is None:
        return ReplyRefused(
            "no_message", f"{platform} lets a reply go only after the customer has written; they have not yet"
        )
    if now - window.last_in > REPLY_WINDOW:
        return ReplyRefused(
            "48h",
            f"{platform} accepts replies only within 48 hours of the customer's last message "
            f"({window.last_in:%Y-%m-%d %H:%M} UTC); it can be sent once the customer writes again",
        )
    if window.sent_since + parts > REPLIES_PER_MESSAGE:
        need = f"; this one needs {parts}" if parts > 1 else ""
        return ReplyRefused(
            "5_messages",
            f"{platform} accepts at most {REPLIES_PER_MESSAGE} messages after the customer's last one; "
            f"{window.sent_since} went already{need}: wait for the customer to write again",
        )
    return None


def unsupported_note(msgtype: str, platform: str = "WeCom", platform_zh: str = "") -> str:
    kind = msgtype or "unknown"
    return (
        f"客户发送了一条{platform_zh} {kind} 类型的消息，暂不支持此类消息。"
        f" / The customer sent a {platform} {kind} message; this message type is not supported yet."
    )


@dataclass(frozen=True)
class Inbound(Generic[P]):
    """A customer's message as the channel received it: `ref` is the platform's id of it."""

    ref: str
    peer: P
    msgtype: str
    text: str  # "" for any type but text
    sent_at: dt.datetime | None


@dataclass(frozen=True)
class Stored:
    """A customer's message stored: what the bot needs to answer it."""

    conversation: dict[str, Any]
    new: bool
    text: str
    language: Language
    runtime: BotRuntime | None


@dataclass(frozen=True)
class Outgoing(Generic[P]):
    """One send: a part of a stored message (delivered once its last part went)."""

    conversation_id: UUID
    message_id: int
    peer: P
    msgid: str
    content: str
    last: bool


@dataclass(frozen=True)
class Plan(Generic[P]):
    """A reply the platform will take: whom to, in which parts."""

    peer: P
    parts: list[str]


@dataclass
class _Held:
    bot: TextBot
    used: float


@dataclass
class _Turn:
    lock: asyncio.Lock
    users: int = 0


class Turns(Generic[K]):
    """One lock per key, taken in turn (asyncio.Lock is first come, first served); a key's entry goes
    when nobody uses it."""

    def __init__(self) -> None:
        self._turns: dict[K, _Turn] = {}

    @contextlib.asynccontextmanager
    async def of(self, key: K) -> AsyncIterator[None]:
        turn = self._turns.setdefault(key, _Turn(asyncio.Lock()))
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[key]


class Ledger(Protocol):
    """A channel's tables (wecom_store, wechat_oa_store, email_store): whom a conversation is with and
    every message in and out by the platform's id of it. Peers are the channel's own type. Settling a
    message's row (same columns in every ledger) is the hub's, by ledger_table."""

    async def claim_inbound(
        self, conn: AsyncConnection[DictRow], msgid: str, peer: Any, sent_at: dt.datetime | None, /
    ) -> bool: ...
    async def open_conversation(
        self, conn: AsyncConnection[DictRow], peer: Any, /
    ) -> dict[str, Any] | None: ...
    async def link(self, conn: AsyncConnection[DictRow], conversation_id: UUID, peer: Any, /) -> None: ...
    async def peer_of(self, conn: AsyncConnection[DictRow], conversation_id: UUID, /) -> Any: ...
    async def window(self, conn: AsyncConnection[DictRow], peer: Any, /) -> Window: ...
    async def add_outbound(
        self, conn: AsyncConnection[DictRow], msgid: str, peer: Any, conversation_id: UUID, message_id: int, /
    ) -> None: ...


class MessagingHub(Generic[P]):
    """One channel in one API process. Subclasses set the class attributes and the hooks."""

    channel: ClassVar[store.Channel]
    identity: ClassVar[store.IdentityKind]
    platform: ClassVar[str]  # in logs and in what agents are told
    platform_zh: ClassVar[str]
    log: ClassVar[logging.Logger]
    ledger: Ledger
    ledger_table: ClassVar[str]  # in schema aicc: (direction, msgid, status, attempts, at, ...)
    # The bot greets a new conversation first (a chat); email answers the mail without a greeting mail.
    greets: ClassVar[bool] = True

    def __init__(
        self,
        state: ApiState,
        runtime: Callable[[], Awaitable[BotRuntime | None]],
        settings: HubSettings,
        metrics: ChannelMetrics,
    ) -> None:
        self.state = state
        self.runtime = runtime
        self.metrics = metrics
        self._hub_settings = settings
        self.limiter = RateLimiter(settings.rate_messages, settings.rate_window_s)
        self.bots: dict[UUID, _Held] = {}
        self._sends: Turns[UUID] = Turns()  # a conversation's sends go in order
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the channel's hooks -----------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        raise NotImplementedError

    def customer(self, peer: P) -> str:
        """The customer's id on the platform: their identity's value and the rate limit's key."""
        raise NotImplementedError

    def recipient(self, peer: P) -> str:
        """The customer's address as a dead letter shows it."""
        raise NotImplementedError

    # The ledger's hooks: the channel's store module by default (ledger), overridden where it differs.

    async def claim_inbound(
        self, conn: AsyncConnection[DictRow], ref: str, peer: P, sent_at: dt.datetime | None
    ) -> bool:
        """Take a customer's message by its id: False when it was taken before (a duplicate)."""
        return await self.ledger.claim_inbound(conn, ref, peer, sent_at)

    async def settle_inbound(
        self,
        conn: AsyncConnection[DictRow],
        ref: str,
        status: InStatus,
        conversation_id: UUID | None = None,
        message_id: int | None = None,
    ) -> None:
        await conn.execute(
            sql.SQL(
                "UPDATE aicc.{} SET status = %s, conversation_id = %s, message_id = %s "
                "WHERE direction = 'in' AND msgid = %s"
            ).format(sql.Identifier(self.ledger_table)),
            (status, conversation_id, message_id, ref),
        )

    async def open_conversation(self, conn: AsyncConnection[DictRow], peer: P) -> dict[str, Any] | None:
        """The customer's latest unresolved conversation on this channel, if any."""
        return await self.ledger.open_conversation(conn, peer)

    async def link(self, conn: AsyncConnection[DictRow], conversation_id: UUID, peer: P) -> None:
        await self.ledger.link(conn, conversation_id, peer)

    async def peer_of(self, conn: AsyncConnection[DictRow], conversation_id: UUID) -> P | None:
        peer: P | None = await self.ledger.peer_of(conn, conversation_id)
        return peer

    async def window(self, conn: AsyncConnection[DictRow], peer: P) -> Window:
        return await self.ledger.window(conn, peer)

    async def add_outbound(
        self, conn: AsyncConnection[DictRow], msgid: str, peer: P, conversation_id: UUID, message_id: int
    ) -> None:
        await self.ledger.add_outbound(conn, msgid, peer, conversation_id, message_id)

    async def settle_outbound(
        self, conn: AsyncConnection[DictRow], msgid: str, status: OutStatus, attempts: int
    ) -> None:
        await self.settle_ref(conn, msgid, status, attempts)

    async def settle_ref(
        self, conn: AsyncConnection[DictRow], ref: str, status: OutStatus, attempts: int
    ) -> None:
        """The ledger's row of a send, by the id it has there: sent (when), or failed."""
        await conn.execute(
            sql.SQL(
                "UPDATE aicc.{} SET status = %s, attempts = %s, "
                "at = CASE WHEN %s = 'sent' THEN now() END WHERE direction = 'out' AND msgid = %s"
            ).format(sql.Identifier(self.ledger_table)),
            (status, attempts, status, ref),
        )

    async def transmit(self, item: Outgoing[P]) -> None:
        """Send one part; ApiUnavailable (retried) or ApiError (dead at once) when it did not go."""
        raise NotImplementedError

    async def close_api(self) -> None:
        raise NotImplementedError

    # --- background work ---------------------------------------------------------------------------

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
            self.log.error("%s background work failed: %s", self.platform, type(exc).__name__, exc_info=exc)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for the background work started so far and what it starts."""
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
        await self.close_api()

    def refused(self, reason: str, message: str, address: str) -> None:
        self.metrics.refused.labels(reason).inc()
        self.log.warning(
            "%s callback from %s refused (%s): %s", self.platform, address or "?", reason, message
        )

    # --- in ----------------------------------------------------------------------------------------

    async def receive(self, message: Inbound[P]) -> None:
        """Store a customer's message, then let the bot answer it."""
        stored = await self.store_inbound(message)
        if stored is not None:
            await self.answer(stored)

    async def store_inbound(self, message: Inbound[P]) -> Stored | None:
        """The message in the customer's open conversation (or a new one); None when it was a duplicate
        or over the customer's rate limit (refused: counted, not stored)."""
        text = message.text.replace("\x00", "").strip()[: store.BODY_MAX]
        author: store.Author = "customer" if text else "system"
        body = text or unsupported_note(message.msgtype, self.platform, self.platform_zh)
        runtime = await self.runtime()
        async with self.pool().connection() as conn, conn.transaction():
            if not await self.claim_inbound(conn, message.ref, message.peer, message.sent_at):
                self.metrics.duplicates.inc()
                return None
            if not self.limiter.allow(self.customer(message.peer)):
                await self.settle_inbound(conn, message.ref, "refused")
                self.metrics.refused.labels("rate_limited").inc()
                self.log.warning(
                    "%s message refused (rate_limited): over %d in %g s from one customer",
                    self.platform,
                    self._hub_settings.rate_messages,
                    self._hub_settings.rate_window_s,
                )
                return None
            conversation, new = await self._conversation(conn, message.peer, runtime, text)
            cid = conversation["id"]
            current = cast(
                Language, conversation["language"] if conversation["language"] in LANGUAGES else "zh"
            )
            language = message_language(text, current) if text else current
            row, _ = await store.add_message(
                conn, cid, direction="in", author=author, body=body, delivered=True
            )
            await self.settle_inbound(conn, message.ref, "stored", cid, row["id"])
            if language != conversation["language"]:
                await store.update_conversation(conn, cid, language=language)
        self.metrics.messages.labels(author).inc()
        return Stored(conversation, new, text, language, runtime)

    async def answer(self, stored: Stored) -> None:
        """The bot answers a stored customer's text while it handles the conversation."""
        if stored.text and stored.conversation["handler"] == "bot" and stored.runtime is not None:
            greet = stored.new and self.greets
            bot = await self._bot(stored.conversation, stored.runtime, stored.language, greet=greet)
            if bot is not None:
                bot.send(stored.text, stored.language)

    async def _conversation(
        self, conn: AsyncConnection[DictRow], peer: P, runtime: BotRuntime | None, text: str
    ) -> tuple[dict[str, Any], bool]:
        """The customer's open conversation (locked), or a new one (and customer)."""
        conversation = await self.open_conversation(conn, peer)
        if conversation is not None:
            locked = await store.get_conversation(conn, conversation["id"], lock=True)
            assert locked is not None
            return locked, False
        customer_id = await store.customer_by_identity(conn, self.identity, self.customer(peer))
        language = message_language(text, "zh") if text else "zh"
        if customer_id is None:
            customer_id = await store.create_customer(conn, language=language)
            await store.add_identity(conn, customer_id, self.identity, self.customer(peer))
        conversation = await store.create_conversation(
            conn,
            customer_id,
            self.channel,
            language=language,
            handler="bot" if runtime is not None else "queue",
            bot=runtime.bot if runtime is not None else "",
        )
        await self.link(conn, conversation["id"], peer)
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
            self.log.exception("%s conversation %s: the bot did not start", self.platform, cid)
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
                self.log.warning(
                    "%s conversation %s: the bot's reply is not sent: %s", self.platform, cid, exc.message
                )
                return
            row, _ = await store.add_message(conn, cid, direction="out", author="bot", body=text)
            items = await self.enqueue(conn, plan, cid, row["id"])
        self.metrics.messages.labels("bot").inc()
        self.deliver(items)

    # --- out ---------------------------------------------------------------------------------------

    async def plan(self, conn: AsyncConnection[DictRow], conversation: dict[str, Any], text: str) -> Plan[P]:
        """How `text` goes to the customer of a conversation of this channel (locked by the caller);
        ReplyRefused when the platform would not take it now."""
        refusal: ReplyRefused | None = None
        peer = await self.peer_of(conn, conversation["id"])
        parts = split_text(text)
        if not self.enabled:
            refusal = ReplyRefused(
                "off",
                f"{self.platform} is not enabled on this appliance: the reply cannot reach the customer",
            )
        elif peer is None:
            refusal = ReplyRefused("off", f"this conversation has no {self.platform} customer to reply to")
        else:
            refusal = reply_refusal(
                await self.window(conn, peer), len(parts), dt.datetime.now(dt.UTC), self.platform
            )
        if refusal is not None:
            self.metrics.replies_refused.labels(refusal.reason).inc()
            raise refusal
        assert peer is not None
        return Plan(peer, parts)

    async def enqueue(
        self, conn: AsyncConnection[DictRow], plan: Plan[P], conversation_id: UUID, message_id: int
    ) -> list[Outgoing[P]]:
        """The stored message's sends, in the ledger (so they count against the limits at once)."""
        items = []
        for i, part in enumerate(plan.parts):
            msgid = uuid.uuid4().hex  # 32 of [0-9a-f]: what WeCom's send_msg msgid allows
            await self.add_outbound(conn, msgid, plan.peer, conversation_id, message_id)
            items.append(
                Outgoing(conversation_id, message_id, plan.peer, msgid, part, i == len(plan.parts) - 1)
            )
        return items

    def deliver(self, items: list[Outgoing[P]]) -> None:
        """Send in the background (after the caller's transaction committed), in order per conversation."""
        if items:
            self._spawn(self._deliver(items))

    async def _deliver(self, items: list[Outgoing[P]]) -> None:
        async with self._sends.of(items[0].conversation_id):
            for i, item in enumerate(items):
                if not await self._send(item):
                    # The rest of a message missing a part would read wrong: dead too, unsent.
                    for rest in items[i + 1 :]:
                        await self._dead(rest, 0, "an earlier part of this message could not be sent")
                    return

    async def _send(self, item: Outgoing[P]) -> bool:
        delay = self._hub_settings.retry_base_s
        attempts = 0
        while True:
            attempts += 1
            try:
                await self.transmit(item)
            except ApiUnavailable as exc:
                if attempts < self._hub_settings.send_attempts:
                    self.metrics.sends.labels("retried").inc()
                    self.log.warning(
                        "%s send %s failed (%s); retry %d in %g s",
                        self.platform,
                        item.msgid,
                        exc,
                        attempts,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                error = str(exc)
            except ApiError as exc:
                error = f"errcode {exc.errcode}: {exc.errmsg}"
            else:
                async with self.pool().connection() as conn, conn.transaction():
                    await self.settle_outbound(conn, item.msgid, "sent", attempts)
                    if item.last:
                        await store.mark_delivered(conn, [item.message_id])
                self.metrics.sends.labels("sent").inc()
                return True
            await self._dead(item, attempts, error)
            return False

    async def _dead(self, item: Outgoing[P], attempts: int, error: str) -> None:
        self.log.error(
            "%s message %s of conversation %s is a dead letter after %d attempts: %s",
            self.platform,
            item.msgid,
            item.conversation_id,
            attempts,
            error,
        )
        async with self.pool().connection() as conn, conn.transaction():
            await self.settle_outbound(conn, item.msgid, "failed", attempts)
            await dead_letters.add(
                conn,
                self.channel,
                conversation_id=item.conversation_id,
                message_id=item.message_id,
                recipient=self.recipient(item.peer),
                reference=item.msgid,
                attempts=attempts,
                error=error,
            )
        self.metrics.sends.labels("dead").inc()
