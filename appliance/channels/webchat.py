"""Web chat: the visitor side of the widget (static/widget/aicc-chat.js) on a customer's site.

- POST /chat/v1/sessions (public; a widget key of app.yml's webchat_keys, an Origin of
  webchat_origins): a visitor id (kept by the widget; new when it has none) and a signed token bound
  to the visitor's open web-chat conversation, resumed or new.
- WebSocket /chat/v1/ws?token=...: on each (re)connect the server sends {"type": "history"} with every
  message so far and {"type": "status"}; then the visitor sends
  {"type": "message", "client_id", "body"} (acknowledged with {"type": "ack"}; a client_id sent
  before is acknowledged again, never stored twice) and {"type": "typing"}; the server sends
  {"type": "message"} (the visitor's own, the bot's, an agent's), {"type": "typing", "author": "bot" |
  "agent"}, {"type": "status", "status", "handler"} and {"type": "error", "code", "message"}.
- Refused, counted (aicc_webchat_refused_total{reason}) and answered with an error frame, the
  connection kept: bad JSON, an unknown type, a bad message (client_id, body), a body over 4,000
  characters, more than webchat_rate_messages per webchat_rate_window_s (rate_limited), a message to
  a resolved conversation. Nothing of a refused message is stored.

The bot answers first (channels/textbot.py, one pipeline per conversation with a visitor connected
to this process, rebuilt on reconnect); "转人工" / "agent please" or anything the bot cannot handle
hands the conversation to the agents (handler queue); an agent's reply (routes/conversations.py)
takes it (handler agent) and the bot stops. Everything is pushed to the sockets this process holds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.websockets import WebSocket, WebSocketDisconnect

from aicc.appliance.channels.textbot import (
    LANGUAGES,
    BotEnded,
    BotEvent,
    BotHandover,
    BotReply,
    BotRuntime,
    TextBot,
    message_language,
    open_runtime,
)
from aicc.appliance.conversations import store
from aicc.models.engines.base import Language

if TYPE_CHECKING:
    from aicc.appliance.api.deps import ApiState, Pool

log = logging.getLogger("aicc.webchat")

TOKEN_PREFIX = "wc1"  # noqa: S105
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FRAME_MAX_CHARS = 16_384  # a message of 4,000 characters and its JSON, with room to spare
SESSIONS_PER_ADDRESS = (30, 60.0)  # new sessions per client address per seconds
TYPING_SHOWN_S = 6.0  # a visitor's typing shows to agents this long after the last typing frame
OUT_QUEUE_MAX = 500  # frames waiting for a slow visitor's socket before it is closed


class WebChatMetrics:
    """On the API's registry (served on its metrics port). No visitor or conversation ids as labels."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sessions = Counter(
            "aicc_webchat_sessions_total",
            "Web chat sessions asked for, by result (new, resumed, refused_key, refused_origin, "
            "rate_limited, off).",
            ["result"],
            registry=registry,
        )
        self.messages = Counter(
            "aicc_webchat_messages_total",
            "Web chat messages stored, by author (customer, bot, agent).",
            ["author"],
            registry=registry,
        )
        self.refused = Counter(
            "aicc_webchat_refused_total",
            "Visitor frames refused, by reason (bad_json, unknown_type, bad_message, too_long, "
            "rate_limited, resolved, token, origin).",
            ["reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "aicc_webchat_duplicates_total",
            "Visitor messages sent again with a client_id already stored (acknowledged, not stored).",
            registry=registry,
        )
        self.handovers = Counter(
            "aicc_webchat_handovers_total",
            "Web chats the bot handed to the agents, by reason.",
            ["reason"],
            registry=registry,
        )
        self.connections = Gauge(
            "aicc_webchat_connections", "Visitor WebSockets open on this API process.", registry=registry
        )
        self.bot = Counter(
            "aicc_webchat_bot_events_total",
            "The text bot's dialogue events (tool_calls, transfers, engine_errors ...).",
            ["event"],
            registry=registry,
        )


# --- tokens and visitor ids -----------------------------------------------------------------------


def _mac(secret: bytes, purpose: bytes, data: str) -> bytes:
    return hmac.new(secret, purpose + b":" + data.encode(), hashlib.sha256).digest()


def visitor_digest(secret: bytes, visitor: str) -> str:
    """The stored identity of a visitor id (the id itself is a secret of the visitor's browser)."""
    return _mac(secret, b"aicc-webchat-visitor", visitor).hex()


@dataclass(frozen=True)
class Claims:
    conversation_id: UUID
    customer_id: UUID
    expires: int


def issue_token(secret: bytes, conversation_id: UUID, customer_id: UUID, ttl_s: int, now: float) -> str:
    payload = f"{conversation_id}.{customer_id}.{int(now) + ttl_s}"
    mac = base64.urlsafe_b64encode(_mac(secret, b"aicc-webchat-token", payload)).rstrip(b"=").decode()
    return f"{TOKEN_PREFIX}.{payload}.{mac}"


def read_token(secret: bytes, token: str, now: float) -> Claims | None:
    """The token's claims, or None: malformed, signed with another key, or expired."""
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != TOKEN_PREFIX:
        return None
    payload = ".".join(parts[1:4])
    try:
        given = base64.urlsafe_b64decode(parts[4] + "=" * (-len(parts[4]) % 4))
        claims = Claims(UUID(parts[1]), UUID(parts[2]), int(parts[3]))
    except (ValueError, binascii.Error):
        return None
    if not hmac.compare_digest(given, _mac(secret, b"aicc-webchat-token", payload)):
        return None
    return claims if claims.expires > now else None


def key_allowed(keys: list[str], key: str) -> bool:
    return any(hmac.compare_digest(key.encode(), k.encode()) for k in keys)


class RateLimiter:
    """At most `limit` events per `window_s` per key (a sliding window in memory, per process)."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = self.clock()
        seen = self._seen.setdefault(key, deque())
        while seen and seen[0] <= now - self.window_s:
            seen.popleft()
        if len(seen) >= self.limit:
            return False
        seen.append(now)
        if len(self._seen) > 10_000:  # forget keys that went quiet
            for k in [k for k, v in self._seen.items() if not v or v[-1] <= now - self.window_s]:
                del self._seen[k]
        return True

    def retry_after(self, key: str) -> float:
        seen = self._seen.get(key)
        if not seen:
            return 0.0
        return max(0.0, seen[0] + self.window_s - self.clock())


# --- frames ---------------------------------------------------------------------------------------


def message_frame(row: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the visitor sees it (no user ids)."""
    return {
        "type": "message",
        "id": row["id"],
        "seq": row["seq"],
        "author": row["author"],
        "body": row["body"],
        "client_id": row["client_id"],
        "created_at": row["created_at"].isoformat(),
    }


def status_frame(conversation: dict[str, Any]) -> dict[str, Any]:
    return {"type": "status", "status": conversation["status"], "handler": conversation["handler"]}


def error_frame(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, **extra}


# --- the hub: rooms of this process ---------------------------------------------------------------


class VisitorSocket:
    """One visitor WebSocket: frames go out through a queue and one writer, so the bot's task and the
    agents' requests never write to the socket at the same time."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.writer: asyncio.Task[None] | None = None
        # Frames published while the history is read: sent after it, those it holds already dropped.
        self.held: list[dict[str, Any]] | None = []

    def send(self, frame: dict[str, Any]) -> None:
        if self.held is not None:
            self.held.append(frame)
            return
        if self.out.qsize() >= OUT_QUEUE_MAX:
            log.warning("a visitor's socket is not reading; closing it")
            self.out.put_nowait(None)
            return
        self.out.put_nowait(frame)

    async def write(self) -> None:
        while True:
            frame = await self.out.get()
            if frame is None:
                with contextlib.suppress(Exception):
                    await self.websocket.close(1011)
                return
            try:
                await self.websocket.send_text(json.dumps(frame, ensure_ascii=False))
            except Exception:  # gone: the receive loop notices and cleans up
                return


@dataclass
class Room:
    """A conversation with at least one visitor socket on this process."""

    conversation_id: UUID
    sockets: set[VisitorSocket] = field(default_factory=set)
    bot: TextBot | None = None
    typing_at: float = -1e9
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # the visitor's messages, in order


class WebChatHub:
    """Web chat's state in one API process (app.state.webchat): rooms, rate limits, the bot runtime,
    metrics."""

    def __init__(self, state: ApiState) -> None:
        self.state = state
        config = state.config
        self.metrics = WebChatMetrics(state.metrics.registry)
        self.limiter = RateLimiter(config.webchat_rate_messages, config.webchat_rate_window_s)
        self.session_limiter = RateLimiter(*SESSIONS_PER_ADDRESS)
        self.rooms: dict[UUID, Room] = {}
        self._runtime: BotRuntime | None = None
        self._runtime_opened = False
        self._runtime_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.runtime_factory: Callable[[], Awaitable[BotRuntime | None]] = lambda: open_runtime(config)

    @property
    def enabled(self) -> bool:
        return bool(self.state.config.webchat_keys)

    def origin_allowed(self, origin: str | None) -> bool:
        return origin is not None and origin in self.state.config.webchat_origins

    def use_runtime(self, runtime: BotRuntime | None) -> None:
        """Set the bot runtime (tests: fake engines); None: no bot, chats go to the agents."""
        self._runtime, self._runtime_opened = runtime, True

    async def runtime(self) -> BotRuntime | None:
        async with self._runtime_lock:
            if not self._runtime_opened:
                self._runtime_opened = True
                try:
                    self._runtime = await self.runtime_factory()
                except Exception:
                    log.exception("web chat runs without a bot: its runtime failed to open")
                    self._runtime = None
        return self._runtime

    async def close(self) -> None:
        for room in list(self.rooms.values()):
            if room.bot is not None:
                await room.bot.close()
        self.rooms.clear()
        if self._runtime is not None:
            await self._runtime.close()

    def pool(self) -> Pool:
        pool = self.state.pool
        if pool is None:
            raise RuntimeError("the API's database pool is not open")
        return pool

    # --- pushes (also used by the agents' routes) --------------------------------------------------

    def publish(self, conversation_id: UUID, frame: dict[str, Any]) -> int:
        """Send a frame to every visitor socket of the conversation on this process; how many."""
        room = self.rooms.get(conversation_id)
        if room is None:
            return 0
        for sock in room.sockets:
            sock.send(frame)
        return len(room.sockets)

    def connected(self, conversation_id: UUID) -> bool:
        room = self.rooms.get(conversation_id)
        return room is not None and bool(room.sockets)

    def visitor_typing(self, conversation_id: UUID) -> bool:
        room = self.rooms.get(conversation_id)
        return room is not None and time.monotonic() - room.typing_at < TYPING_SHOWN_S

    async def stop_bot(self, conversation_id: UUID) -> None:
        """An agent has the conversation (or it is resolved): the bot answers no more."""
        room = self.rooms.get(conversation_id)
        if room is not None and room.bot is not None:
            bot, room.bot = room.bot, None
            await bot.close()

    # --- sessions ----------------------------------------------------------------------------------

    async def open_session(self, visitor: str | None, language: Language | None) -> dict[str, Any]:
        """The visitor's open web-chat conversation (resumed) or a new one (and a new visitor when the
        id is unknown): {visitor, token, conversation_id, resumed}."""
        secret = self.state.secret_key
        runtime = await self.runtime()
        async with self.pool().connection() as conn, conn.transaction():
            customer_id = None
            if visitor is not None:
                customer_id = await store.customer_by_identity(
                    conn, "webchat", visitor_digest(secret, visitor)
                )
            if customer_id is None:
                visitor = secrets.token_urlsafe(24)
                customer_id = await store.create_customer(conn, language=language or "")
                await store.add_identity(conn, customer_id, "webchat", visitor_digest(secret, visitor))
            conversation = await store.open_conversation_of(conn, customer_id, "webchat")
            resumed = conversation is not None
            if conversation is None:
                conversation = await store.create_conversation(
                    conn,
                    customer_id,
                    "webchat",
                    language=language or "",
                    handler="bot" if runtime is not None else "queue",
                    bot=runtime.bot if runtime is not None else "",
                )
        assert visitor is not None
        token = issue_token(
            secret, conversation["id"], customer_id, self.state.config.webchat_session_ttl_s, time.time()
        )
        self.metrics.sessions.labels("resumed" if resumed else "new").inc()
        return {
            "visitor": visitor,
            "token": token,
            "conversation_id": str(conversation["id"]),
            "resumed": resumed,
            "expires_in": self.state.config.webchat_session_ttl_s,
            "ws_path": "/chat/v1/ws",
        }

    # --- a visitor's socket ------------------------------------------------------------------------

    async def serve(self, websocket: WebSocket, claims: Claims) -> None:
        """A visitor's WebSocket, accepted: history, then their frames until they go."""
        cid = claims.conversation_id
        sock = VisitorSocket(websocket)
        # In the room before the history is read, so that nothing said meanwhile is missed.
        room = self.rooms.setdefault(cid, Room(cid))
        room.sockets.add(sock)
        self.metrics.connections.inc()
        try:
            async with self.pool().connection() as conn:
                conversation = await store.get_conversation(conn, cid)
                history = await store.messages(conn, cid) if conversation is not None else []
                await store.mark_delivered(
                    conn, [m["id"] for m in history if m["direction"] == "out" and m["delivered_at"] is None]
                )
            if conversation is None:
                await websocket.close(1008)
                await self._leave(room, sock)
                return
            await websocket.accept()
        except BaseException:
            await self._leave(room, sock)
            raise
        held, sock.held = sock.held or [], None
        sock.writer = asyncio.create_task(sock.write())
        sock.send(
            {"type": "history", "conversation_id": str(cid), "messages": [message_frame(m) for m in history]}
        )
        sock.send(status_frame(conversation))
        known = {m["id"] for m in history}
        for frame in held:
            if not (frame["type"] == "message" and frame["id"] in known):
                sock.send(frame)
        try:
            try:
                await self._start_bot(room, conversation, greet=not history)
            except Exception:  # the visitor still reaches the agents
                log.exception("conversation %s: the bot did not start", cid)
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    self._refuse(sock, "bad_json", "binary frames are not read; send JSON text")
                    continue
                await self._on_frame(room, sock, claims, text)
        except (WebSocketDisconnect, RuntimeError):  # RuntimeError: a frame after the close
            pass
        finally:
            await self._leave(room, sock)

    async def _leave(self, room: Room, sock: VisitorSocket) -> None:
        self.metrics.connections.dec()
        room.sockets.discard(sock)
        sock.held = None
        sock.out.put_nowait(None)
        if sock.writer is not None:
            sock.writer.cancel()
        if not room.sockets and self.rooms.get(room.conversation_id) is room:
            del self.rooms[room.conversation_id]
            if room.bot is not None:
                bot, room.bot = room.bot, None
                await bot.close()

    async def _start_bot(self, room: Room, conversation: dict[str, Any], *, greet: bool) -> None:
        if room.bot is not None or conversation["handler"] != "bot" or conversation["status"] == "resolved":
            return
        runtime = await self.runtime()
        if runtime is None:
            return
        language = cast(Language, conversation["language"] if conversation["language"] in LANGUAGES else "zh")
        cid = room.conversation_id

        async def on_event(event: BotEvent) -> None:
            await self._bot_event(cid, event)

        def report(name: str, value: float, labels: dict[str, str]) -> None:
            if name in ("tool_calls", "transfers", "engine_errors", "low_confidence", "plan_completed"):
                self.metrics.bot.labels(name).inc()

        bot = TextBot(runtime, str(cid), language, on_event, reporter=report)
        room.bot = bot
        await bot.start(greet=greet)

    async def _on_frame(self, room: Room, sock: VisitorSocket, claims: Claims, text: str) -> None:
        if len(text) > FRAME_MAX_CHARS:
            self._refuse(sock, "too_long", f"a frame has at most {FRAME_MAX_CHARS} characters")
            return
        try:
            frame = json.loads(text)
        except ValueError:
            self._refuse(sock, "bad_json", "not a JSON object")
            return
        if not isinstance(frame, dict):
            self._refuse(sock, "bad_json", "not a JSON object")
            return
        kind = frame.get("type")
        if kind == "typing":
            room.typing_at = time.monotonic()
        elif kind == "message":
            async with room.lock:
                await self._on_message(room, sock, claims, frame)
        else:
            self._refuse(sock, "unknown_type", "type must be message or typing")

    def _refuse(self, sock: VisitorSocket, reason: str, message: str, **extra: Any) -> None:
        self.metrics.refused.labels(reason).inc()
        log.info("web chat frame refused (%s): %s", reason, message)
        sock.send(error_frame(reason, message, **extra))

    async def _on_message(
        self, room: Room, sock: VisitorSocket, claims: Claims, frame: dict[str, Any]
    ) -> None:
        client_id, body = frame.get("client_id"), frame.get("body")
        if not isinstance(client_id, str) or not CLIENT_ID.match(client_id):
            self._refuse(sock, "bad_message", "client_id: 1 to 64 letters, digits, - or _")
            return
        if not isinstance(body, str) or not body.strip() or "\x00" in body:
            self._refuse(sock, "bad_message", "body: the message's text", client_id=client_id)
            return
        body = body.strip()
        if len(body) > store.BODY_MAX:
            self._refuse(
                sock, "too_long", f"a message has at most {store.BODY_MAX} characters", client_id=client_id
            )
            return
        cid = room.conversation_id
        async with self.pool().connection() as conn:
            earlier = await store.message_by_client_id(conn, cid, client_id)
        if earlier is not None:
            self.metrics.duplicates.inc()
            sock.send(
                {
                    "type": "ack",
                    "client_id": client_id,
                    "id": earlier["id"],
                    "seq": earlier["seq"],
                    "duplicate": True,
                }
            )
            return
        key = str(claims.customer_id)
        if not self.limiter.allow(key):
            wait = round(self.limiter.retry_after(key), 1)
            self._refuse(
                sock,
                "rate_limited",
                f"too many messages; wait {wait:g} s",
                client_id=client_id,
                retry_after=wait,
            )
            return
        async with self.pool().connection() as conn, conn.transaction():
            conversation = await store.get_conversation(conn, cid, lock=True)
            if conversation is None or conversation["status"] == "resolved":
                self._refuse(
                    sock, "resolved", "this conversation has ended; open a new one", client_id=client_id
                )
                return
            language = message_language(
                body,
                cast(Language, conversation["language"] if conversation["language"] in LANGUAGES else "zh"),
            )
            row, created = await store.add_message(
                conn, cid, direction="in", author="customer", body=body, client_id=client_id, delivered=True
            )
            if created and conversation["language"] != language:
                await store.update_conversation(conn, cid, language=language)
        sock.send(
            {
                "type": "ack",
                "client_id": client_id,
                "id": row["id"],
                "seq": row["seq"],
                "duplicate": not created,
            }
        )
        if not created:
            self.metrics.duplicates.inc()
            return
        self.metrics.messages.labels("customer").inc()
        room.typing_at = -1e9
        self.publish(cid, message_frame(row))
        if conversation["handler"] == "bot" and room.bot is not None and not room.bot.done:
            self.publish(cid, {"type": "typing", "author": "bot"})
            room.bot.send(body, language)

    async def _bot_event(self, cid: UUID, event: BotEvent) -> None:
        """What the bot said or did, stored and pushed."""
        if isinstance(event, BotReply):
            async with self.pool().connection() as conn, conn.transaction():
                conversation = await store.get_conversation(conn, cid, lock=True)
                if conversation is None or conversation["handler"] == "agent":
                    return  # an agent took it meanwhile: the bot's late words are not sent
                row, _ = await store.add_message(
                    conn,
                    cid,
                    direction="out",
                    author="bot",
                    body=event.text[: store.BODY_MAX],
                    delivered=self.connected(cid),
                )
            self.metrics.messages.labels("bot").inc()
            self.publish(cid, message_frame(row))
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
            conversation = await store.update_conversation(conn, cid, **changes)
        if conversation is not None:
            self.publish(cid, status_frame(conversation))
            if conversation["handler"] == "queue" and self.state.chat_routing is not None:
                self.state.chat_routing.poke()  # the ACD gets it now, not at the next sweep
        room = self.rooms.get(cid)
        if room is not None and room.bot is not None:
            # Not awaited here: this runs inside the bot's own pipeline task.
            bot, room.bot = room.bot, None
            task = asyncio.get_running_loop().create_task(bot.close())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
