"""The producers' side of the ACD: submit commands and wait for their results; gateways also receive
offers for the contacts they hold.

A command is a row of aicc.acd_commands plus NOTIFY acd_commands, in one transaction; the active ACD
answers on NOTIFY acd_results. Commands that report what already happened (a caller hung up, an agent
answered) must not be lost while the database is away: with `durable=True` they wait in an outbox
(memory and a spool file) and are sent when it returns, in order; their uid makes a resend harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.acd.commands import Command, payload_of

log = logging.getLogger(__name__)

COMMANDS_CHANNEL = "acd_commands"
RESULTS_CHANNEL = "acd_results"
GATEWAY_CHANNEL = "acd_gateway"
# The ACD's state changed (agents, contacts): the API pushes fresh live figures to open pages.
LIVE_CHANNEL = "acd_live"


class AcdUnavailable(Exception):
    """The command could not be stored (database away) or no active ACD answered in time."""


class AcdRejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class GatewayMessage:
    """What the ACD tells the gateway holding a contact: an offer to ring an agent, or that the contact
    left the queue by the ACD's decision (waited too long)."""

    type: str  # offer | removed
    contact_id: str
    reservation_id: str = ""
    agent_id: int = 0
    extension: str = ""
    ring_timeout_s: int = 15
    reason: str = ""


async def insert_command(
    conn: psycopg.AsyncConnection[Any], cmd: Command, *, uid: str, source: str, expires_s: float | None
) -> None:
    await conn.execute(
        "INSERT INTO aicc.acd_commands (uid, kind, payload, source, expires_at) VALUES (%s, %s, %s, %s, "
        "CASE WHEN %s::float8 IS NULL THEN NULL ELSE now() + %s END) ON CONFLICT (uid) DO NOTHING",
        (
            uid,
            cmd.kind,
            json.dumps(payload_of(cmd), ensure_ascii=False),
            source,
            expires_s,
            timedelta(seconds=expires_s or 0),
        ),
    )
    await conn.execute("SELECT pg_notify(%s, '')", (COMMANDS_CHANNEL,))


class AcdClient:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        conninfo: str,
        *,
        source: str,
        result_timeout_s: float = 3.0,
        spool: Path | None = None,
        on_gateway: Callable[[GatewayMessage], None] | None = None,
        gateway: str = "",
        on_live: Callable[[], None] | None = None,
    ) -> None:
        self.on_live = on_live
        self.pool = pool
        self.conninfo = conninfo
        self.source = source
        self.result_timeout_s = result_timeout_s
        self.spool = spool
        self.on_gateway = on_gateway
        self.gateway = gateway
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._outbox: list[tuple[str, Command]] = []
        self._outbox_wake = asyncio.Event()
        self._listening = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._load_spool()
        self._tasks = [
            asyncio.create_task(self._listen(), name="acd-listen"),
            asyncio.create_task(self._drain_outbox(), name="acd-outbox"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 5)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._save_spool()

    @property
    def pending(self) -> int:
        return len(self._outbox)

    async def submit(
        self, cmd: Command, *, wait: bool = True, durable: bool = False, expires_s: float | None = 60.0
    ) -> dict[str, Any] | None:
        """Store the command; with wait, return its result (AcdRejected on an error result,
        AcdUnavailable when nothing answers in time). durable: never lost, sent later if need be."""
        uid = str(uuid.uuid4())
        future: asyncio.Future[dict[str, Any]] | None = None
        if wait:
            future = asyncio.get_running_loop().create_future()
            self._waiting[uid] = future
        try:
            if durable and self._outbox:
                raise AcdUnavailable("earlier commands are still waiting for the database")  # keep order
            async with self.pool.connection() as conn, conn.transaction():
                await insert_command(conn, cmd, uid=uid, source=self.source, expires_s=expires_s)
        except (psycopg.Error, OSError, AcdUnavailable, TimeoutError) as exc:
            self._waiting.pop(uid, None)
            if durable:
                self._outbox.append((uid, cmd))
                self._save_spool()
                self._outbox_wake.set()
                log.warning("ACD command %s kept for later: %s", cmd.kind, exc)
                return None
            raise AcdUnavailable(f"cannot store the {cmd.kind} command: {exc}") from exc
        if future is None:
            return None
        try:
            reply = await asyncio.wait_for(future, self.result_timeout_s)
        except TimeoutError:
            raise AcdUnavailable(
                f"no active ACD answered the {cmd.kind} command within {self.result_timeout_s:.0f} s"
            ) from None
        finally:
            self._waiting.pop(uid, None)
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise AcdRejected(str(err.get("code", "error")), str(err.get("message", "refused")))
        result: dict[str, Any] = reply.get("result") or {}
        return result

    # --- background -------------------------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {RESULTS_CHANNEL}")
                    if self.gateway:  # a gateway's client: offers for its contacts
                        await conn.execute(f"LISTEN {GATEWAY_CHANNEL}")
                    if self.on_live is not None:
                        await conn.execute(f"LISTEN {LIVE_CHANNEL}")
                        self.on_live()  # changes made while it was not listening
                    self._listening.set()
                    backoff = 0.5
                    async for note in conn.notifies():
                        self._dispatch(note.channel, note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: results in flight time out, offers are re-made
                self._listening.clear()
                log.warning("ACD listener lost its connection (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == LIVE_CHANNEL:
            if self.on_live is not None:
                self.on_live()
            return
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if channel == RESULTS_CHANNEL:
            future = self._waiting.get(str(data.get("uid")))
            if future is not None and not future.done():
                future.set_result(data)
        elif (
            channel == GATEWAY_CHANNEL and self.on_gateway is not None and data.get("gateway") == self.gateway
        ):
            fields = {k: data[k] for k in GatewayMessage.__dataclass_fields__ if k in data}
            try:
                self.on_gateway(GatewayMessage(**fields))
            except Exception:
                log.exception("handling an ACD message failed")

    async def _drain_outbox(self) -> None:
        while True:
            await self._outbox_wake.wait()
            while self._outbox:
                uid, cmd = self._outbox[0]
                try:
                    async with self.pool.connection() as conn, conn.transaction():
                        await insert_command(conn, cmd, uid=uid, source=self.source, expires_s=None)
                except (psycopg.Error, OSError, TimeoutError):
                    await asyncio.sleep(1.0)
                    continue
                self._outbox.pop(0)
                self._save_spool()
            self._outbox_wake.clear()

    def _save_spool(self) -> None:
        if self.spool is None:
            return
        if not self._outbox:
            self.spool.unlink(missing_ok=True)
            return
        tmp = self.spool.with_suffix(".tmp")
        lines = [json.dumps({"uid": u, "kind": c.kind, "payload": payload_of(c)}) for u, c in self._outbox]
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(self.spool)

    def _load_spool(self) -> None:
        from aicc.appliance.acd.commands import parse

        if self.spool is None or not self.spool.exists():
            return
        for line in self.spool.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
                self._outbox.append((item["uid"], parse(item["kind"], item["payload"])))
            except (ValueError, KeyError) as exc:
                log.error("skipping a damaged line of the ACD spool %s: %s", self.spool, exc)
        if self._outbox:
            log.info("replaying %d ACD commands kept while the database was away", len(self._outbox))
            self._outbox_wake.set()
