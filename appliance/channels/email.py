"""Email: the site's support mailbox as conversations (issue 19).

In: one API process at a time reads the mailbox (a lease in aicc.email_mailboxes; the others take
over when it lapses) over IMAP with implicit TLS, waiting with IDLE where the server offers it
(polling every poll_s where not). New mail is read by UID from where the last reader stopped (the
first time, and after the server renumbered the folder, what is unread), one message at a time: its
size first (over max_message_bytes: flagged in the mailbox, refused, counted), then the message
(BODY.PEEK), stored, then marked \\Seen; the position moves on only once the message is stored, so
a crash reads it again and its Message-ID (the ledger, aicc.email_messages) keeps it from being stored
twice. A message joins the conversation of the thread it answers (In-Reply-To, References: a
resolved one opens again and waits for an agent), else it starts a conversation with its sender
(customer identity kind email). Automatic mail (auto-replies, bulk, lists, our own coming back) opens
nothing and is answered by nothing; a bounce of a reply of ours makes that reply a dead letter.

Out: an agent's reply (POST /api/conversations/{id}/messages) goes over SMTP submission (STARTTLS or
implicit TLS, authenticated) in the background, threaded under the conversation's last messages.
Network errors, timeouts and 4xx are retried with backoff (send_attempts, retry_base_s doubling); a
5xx or what still fails is a dead letter (aicc.channel_dead_letters) admins see.

The bot answers email only when email.bot is on (the web chat's text bot); by default every email
waits for an agent, routed by the ACD like any chat (api/chat_routing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

import aiosmtplib
from aioimaplib import aioimaplib
from prometheus_client import CollectorRegistry, Counter, Gauge
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from aicc.appliance.channels import email_store
from aicc.appliance.channels.email_message import InboundEmail, MalformedEmail, bounce_report, compose, parse
from aicc.appliance.channels.email_store import Peer
from aicc.appliance.channels.tencent_api import ApiError, ApiUnavailable
from aicc.appliance.channels.tencent_hub import (
    ChannelMetrics,
    Inbound,
    MessagingHub,
    Outgoing,
    OutStatus,
    Plan,
    ReplyRefused,
)
from aicc.appliance.channels.textbot import BotRuntime
from aicc.appliance.conversations import dead_letters, store

if TYPE_CHECKING:
    from aicc.appliance.api.deps import ApiState

log = logging.getLogger("aicc.email")
RETRY_MAX_S = 300.0
SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")


class MailboxError(Exception):
    """The mail server refused what the channel asked (login, select, fetch); the text says what."""


class EmailMetrics(ChannelMetrics):
    """On the API's registry. No addresses or conversation ids as labels."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry, "email", "Email", "fetched: every message read from the mailbox")
        self.mailbox_errors = Counter(
            "aicc_email_mailbox_errors_total",
            "IMAP sessions that ended on an error (login refused, network, timeout); retried with backoff.",
            registry=registry,
        )
        self.reading = Gauge(
            "aicc_email_mailbox_reading",
            "1 while this API process holds the mailbox's lease and is connected to it.",
            registry=registry,
        )
        self.bounces = Counter(
            "aicc_email_bounces_total",
            "Bounces of replies that had gone out (each made a dead letter).",
            registry=registry,
        )


def ok(response: aioimaplib.Response, what: str) -> aioimaplib.Response:
    if response.result != "OK":
        said = b" ".join(bytes(line) for line in response.lines[-1:]).decode(errors="replace")[:300]
        raise MailboxError(f"the mail server answered {what} with {response.result}: {said}")
    return response


class EmailHub(MessagingHub[Peer]):
    """The email channel in one API process (app.state.email)."""

    channel = "email"
    identity = "email"
    platform = "Email"
    platform_zh = "邮件"
    log = log
    ledger = email_store
    ledger_table = "email_messages"
    greets = False

    def __init__(self, state: ApiState, runtime: Callable[[], Awaitable[BotRuntime | None]]) -> None:
        self.settings = state.config.email
        self.metrics: EmailMetrics = EmailMetrics(state.metrics.registry)

        async def no_bot() -> BotRuntime | None:
            return None

        super().__init__(state, runtime if self.settings.bot else no_bot, self.settings, self.metrics)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        where = f"{self.settings.imap_host}:{self.settings.imap_port}/{self.settings.folder}"
        self.mailbox = f"{self.settings.login}@{where}"
        self.domain = self.settings.address.rpartition("@")[2]
        self._passwords: tuple[str, str] | None = None
        self._tls: ssl.SSLContext | None = None
        if self.settings.enabled:
            self._passwords = self.settings.passwords()  # ConfigError now, not at the first email
            ca = self.settings.ca_file
            self._tls = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
        self._watcher: asyncio.Task[None] | None = None
        self.lease_s = self.settings.idle_s * 2 + self.settings.timeout_s

    @property
    def enabled(self) -> bool:
        return self._passwords is not None

    async def start(self) -> None:
        if self.enabled and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
            self._watcher = None
            with contextlib.suppress(Exception):
                async with self.pool().connection() as conn:
                    await email_store.release(conn, self.mailbox, self.owner)
        await super().close()

    async def close_api(self) -> None:
        return None  # SMTP connections are per send; nothing stays open

    # --- in: the mailbox ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        delay = 1.0
        while True:
            try:
                if await self._lease() is None:
                    await asyncio.sleep(self.lease_s / 3)  # another process reads it
                    continue
                await self._session()
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the watcher outlives any one failure
                self.metrics.mailbox_errors.inc()
                log.error(
                    "email: reading %s failed (%s: %s); again in %g s",
                    self.mailbox,
                    type(exc).__name__,
                    str(exc)[:300] or "no detail",
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            finally:
                self.metrics.reading.set(0)

    async def _lease(self) -> email_store.Position | None:
        async with self.pool().connection() as conn:
            return await email_store.lease(conn, self.mailbox, self.owner, self.lease_s)

    async def _session(self) -> None:
        assert self._passwords is not None
        timeout = self.settings.timeout_s
        imap = aioimaplib.IMAP4_SSL(
            self.settings.imap_host, self.settings.imap_port, timeout=timeout, ssl_context=self._tls
        )
        try:
            await imap.wait_hello_from_server()
            ok(
                await imap.login(self.settings.login, self._passwords[0]),
                f"the login of {self.settings.login}",
            )
            if imap.has_capability("ID"):
                # NetEase's mail servers (163, 126, 188 and their enterprise mail) refuse SELECT with
                # "Unsafe Login" from a client that has not said who it is (RFC 2971).
                ok(await imap.id(name="aicc", vendor="aicc"), "ID")
            selected = ok(await imap.select(self.settings.folder), f"SELECT {self.settings.folder}")
            uidvalidity = _number(UIDVALIDITY, selected.lines)
            uidnext = _number(UIDNEXT, selected.lines)
            if uidvalidity is None:
                raise MailboxError(f"SELECT {self.settings.folder} gave no UIDVALIDITY")
            idle = imap.has_capability("IDLE")
            log.info(
                "email: reading %s (%s)",
                self.mailbox,
                "IDLE" if idle else f"every {self.settings.poll_s:g} s",
            )
            self.metrics.reading.set(1)
            while True:
                position = await self._lease()
                if position is None:
                    log.warning("email: another API process took the mailbox %s over", self.mailbox)
                    return
                if not await self._read_new(imap, position, uidvalidity, uidnext):
                    return
                uidnext = None
                if idle:
                    await self._idle(imap)
                else:
                    await asyncio.sleep(self.settings.poll_s)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(imap.logout(), 2.0)

    async def _idle(self, imap: aioimaplib.IMAP4_SSL) -> None:
        waiting = await imap.idle_start(timeout=self.settings.idle_s)
        try:
            await imap.wait_server_push(timeout=self.settings.idle_s + self.settings.timeout_s)
        except TimeoutError:
            pass
        finally:
            imap.idle_done()
            await asyncio.wait_for(waiting, self.settings.timeout_s)

    async def _read_new(
        self,
        imap: aioimaplib.IMAP4_SSL,
        position: email_store.Position,
        uidvalidity: int,
        uidnext: int | None,
    ) -> bool:
        """Store the messages that came since the last read; False when the lease was lost."""
        renumbered = position.uidvalidity != uidvalidity
        last = 0 if renumbered else position.last_uid
        # The first read of a folder (or after UIDVALIDITY changed): what nobody has read yet.
        criteria = ("UNSEEN",) if renumbered else ("UID", f"{last + 1}:*")
        found = ok(await imap.uid_search(*criteria, charset=None), "UID SEARCH")
        uids = sorted({int(n) for line in found.lines[:-1] for n in bytes(line).split() if n.isdigit()})
        for uid in (u for u in uids if u > last):  # "n:*" names the last message even when it is older
            await self._take(imap, uid)
            async with self.pool().connection() as conn:
                if not await email_store.advance(conn, self.mailbox, self.owner, uidvalidity, uid):
                    return False
            last = uid
        if renumbered:
            last = max(last, (uidnext or 1) - 1)
            async with self.pool().connection() as conn:
                return await email_store.advance(conn, self.mailbox, self.owner, uidvalidity, last)
        return True

    async def _take(self, imap: aioimaplib.IMAP4_SSL, uid: int) -> None:
        sized = ok(await imap.uid("fetch", str(uid), "(RFC822.SIZE)"), f"UID FETCH {uid} size")
        size = _number(SIZE, sized.lines) or 0
        if size > self.settings.max_message_bytes:
            self._refuse(
                "too_large",
                f"UID {uid}: {size} bytes, over max_message_bytes "
                f"{self.settings.max_message_bytes}; it stays in the mailbox, flagged",
            )
            await imap.uid("store", str(uid), "+FLAGS.SILENT", r"(\Flagged)")
            return
        fetched = ok(await imap.uid("fetch", str(uid), "BODY.PEEK[]"), f"UID FETCH {uid}")
        raw = next((bytes(line) for line in fetched.lines if isinstance(line, bytearray)), None)
        if raw is None:
            raise MailboxError(f"UID FETCH {uid} gave no message")
        await self.take(raw)
        await imap.uid("store", str(uid), "+FLAGS.SILENT", r"(\Seen)")

    def _refuse(self, reason: str, message: str) -> None:
        self.metrics.refused.labels(reason).inc()
        log.warning("email from the mailbox %s refused (%s): %s", self.mailbox, reason, message)

    async def take(self, raw: bytes) -> InboundEmail | None:
        """Store one message read from the mailbox (or answer nothing to automatic mail); the message
        as read, None when it could not be read."""
        self.metrics.callbacks.labels("fetched").inc()
        try:
            email = parse(raw, self.settings.address)
        except MalformedEmail as exc:
            self._refuse("malformed", str(exc))
            return None
        if email.automatic == "bounce":
            await self._bounced(raw)
        elif email.automatic is not None:
            self.metrics.refused.labels(email.automatic).inc()
            log.info(
                "email %s is automatic (%s): nothing opened, nothing answered",
                email.message_id,
                email.automatic,
            )
        else:
            peer = Peer(email.sender, email.name, email.subject, email.thread)
            await self.receive(Inbound(email.message_id, peer, "text", _text(email), email.sent_at))
        return email

    async def _bounced(self, raw: bytes) -> None:
        report = bounce_report(raw)
        async with self.pool().connection() as conn, conn.transaction():
            reply = await email_store.sent(conn, report.original_ids)
            if reply is None:
                log.info("email: a bounce of nothing this appliance sent (%s)", report.diagnostic[:200])
                return
            await self.settle_ref(conn, reply["msgid"], "failed", int(reply["attempts"]))
            await dead_letters.add(
                conn,
                self.channel,
                conversation_id=reply["conversation_id"],
                message_id=reply["message_id"],
                recipient=str(reply["address"]),
                reference=str(reply["msgid"])[:128],
                attempts=int(reply["attempts"]),
                error=f"bounced: {report.diagnostic}"[:1000],
            )
        self.metrics.bounces.inc()
        log.error(
            "email reply %s to conversation %s bounced: %s",
            reply["msgid"],
            reply["conversation_id"],
            report.diagnostic[:300],
        )

    # --- the ledger (email_store.py) ---------------------------------------------------------------

    def customer(self, peer: Peer) -> str:
        return peer.address

    def recipient(self, peer: Peer) -> str:
        return peer.address

    async def link(self, conn: AsyncConnection[DictRow], conversation_id: UUID, peer: Peer) -> None:
        await email_store.link(conn, conversation_id, peer)
        if peer.subject:  # what agents see of an email conversation before they open it
            await store.update_conversation(conn, conversation_id, summary=peer.subject)

    def message_id(self, msgid: str) -> str:
        return f"<{msgid}@{self.domain}>"

    async def add_outbound(
        self, conn: AsyncConnection[DictRow], msgid: str, peer: Peer, conversation_id: UUID, message_id: int
    ) -> None:
        await email_store.add_outbound(conn, self.message_id(msgid), peer, conversation_id, message_id)

    async def settle_outbound(
        self, conn: AsyncConnection[DictRow], msgid: str, status: OutStatus, attempts: int
    ) -> None:
        await self.settle_ref(conn, self.message_id(msgid), status, attempts)

    # --- out: SMTP ---------------------------------------------------------------------------------

    async def plan(
        self, conn: AsyncConnection[DictRow], conversation: dict[str, Any], text: str
    ) -> Plan[Peer]:
        """Any reply goes (email has no reply window), in one message."""
        peer = await self.peer_of(conn, conversation["id"])
        refusal = None
        if not self.enabled:
            refusal = ReplyRefused("off", "email is not enabled on this appliance: the reply cannot be sent")
        elif peer is None:
            refusal = ReplyRefused("off", "this conversation has no email address to reply to")
        if refusal is not None:
            self.metrics.replies_refused.labels(refusal.reason).inc()
            raise refusal
        assert peer is not None
        return Plan(peer, [text])

    async def transmit(self, item: Outgoing[Peer]) -> None:
        assert self._passwords is not None
        async with self.pool().connection() as conn:
            cur = await conn.execute(
                "SELECT author FROM aicc.conversation_messages WHERE id = %s", (item.message_id,)
            )
            row = await cur.fetchone()
        message = compose(
            sender=self.settings.address,
            sender_name=self.settings.display_name,
            to=item.peer.address,
            subject=item.peer.subject,
            text=item.content,
            message_id=self.message_id(item.msgid),
            thread=item.peer.thread,
            automatic=row is not None and row["author"] == "bot",
        )
        tls = self.settings.smtp_security == "tls"
        try:
            await aiosmtplib.send(
                message,
                hostname=self.settings.smtp_host,
                port=self.settings.smtp_port,
                username=self.settings.smtp_login,
                password=self._passwords[1],
                use_tls=tls,
                start_tls=not tls,
                tls_context=self._tls,
                timeout=self.settings.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)[:500]
            if codes and min(codes) >= 500:
                raise ApiError("smtp", min(codes), detail) from None
            raise ApiUnavailable(f"SMTP: {detail}") from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise ApiError("smtp", exc.code, exc.message[:500]) from None
            raise ApiUnavailable(f"SMTP {exc.code}: {exc.message[:500]}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise ApiUnavailable(
                f"SMTP {self.settings.smtp_host}:{self.settings.smtp_port}: {type(exc).__name__}: {exc}"
            ) from None


def _number(pattern: re.Pattern[bytes], lines: list[Any]) -> int | None:
    for line in lines:
        if isinstance(line, bytes | bytearray) and (match := pattern.search(bytes(line))):
            return int(match.group(1))
    return None


def _text(email: InboundEmail) -> str:
    """What the conversation stores of an email: its new text (else its subject), then the names of
    attachments, which are not kept yet."""
    text = email.text or email.subject or "(empty email / 空邮件)"
    if email.attachments:
        names = ", ".join(f"{a.filename} ({a.content_type}, {a.size} B)" for a in email.attachments[:20])
        text += f"\n\n[附件未保存 / attachments not kept: {names}]"
    return text[: store.BODY_MAX]
