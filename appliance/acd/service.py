"""The ACD process: one active per site (PostgreSQL advisory lock), the others standing by.

The active one loads the configuration and the persisted state, then loops: take commands from the
work queue, apply them to the in-memory engine, route, and persist the changes, the events, the
results and the offers in one transaction; every tick it also expires reservations and wrap-ups,
follows SIP registrations and drops the contacts of gateways gone silent.

Every write transaction first checks that this process still holds the lock (the lock lives on its
own connection): an ACD that lost it, even for a moment, stops writing and stands by again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from pydantic import ValidationError

from aicc.appliance.acd import commands as cmds
from aicc.appliance.acd import store
from aicc.appliance.acd.client import COMMANDS_CHANNEL
from aicc.appliance.acd.engine import Acd, AcdError
from aicc.appliance.acd.metrics import AcdMetrics
from aicc.appliance.api.config import AcdSettings
from aicc.appliance.reports.queries import queue_report

log = logging.getLogger(__name__)

ACD_LOCK_KEY = 0x41434401  # "ACD" + 1: one active ACD per database


class LostLeadership(Exception):
    pass


class AcdService:
    def __init__(self, conninfo: str, settings: AcdSettings, metrics: AcdMetrics) -> None:
        self.conninfo = conninfo
        self.settings = settings
        self.metrics = metrics
        self.engine: Acd | None = None
        self._poison: set[str] = set()  # commands that crashed the engine once: refused, not retried

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with await self._connect() as lock_conn:
                    if not await self._acquire(lock_conn, stop):
                        return
                    log.info("this ACD is now the active one")
                    self.metrics.leader.set(1)
                    try:
                        await self._lead(lock_conn, stop)
                    finally:
                        self.metrics.leader.set(0)
                        self.engine = None
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError, LostLeadership) as exc:
                log.warning("ACD standing by after: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
            except Exception:
                # A bug: this process drops its engine and reloads what was committed. A command that
                # caused it is in _poison and is refused on its replay, so one bad command cannot keep
                # the ACD down.
                log.exception("the ACD failed; reloading its state from the database")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        # Keepalives: a dead peer (host crash) is noticed in seconds, which frees the lock for the others.
        return await psycopg.AsyncConnection.connect(
            self.conninfo,
            autocommit=True,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )

    async def _acquire(self, lock_conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> bool:
        while not stop.is_set():
            cur = await lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (ACD_LOCK_KEY,))
            row = await cur.fetchone()
            if row and row[0]:
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        return False

    # --- leading ---------------------------------------------------------------------------------

    async def _lead(self, lock_conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        lock_pid = lock_conn.info.backend_pid
        async with await self._connect() as work, await self._connect() as listen:
            await listen.execute(f"LISTEN {COMMANDS_CHANNEL}")
            engine = await self._load(work)
            self.engine = engine
            s = self.settings
            next_registrations = next_heartbeats = next_lock_check = next_service_level = 0.0
            while not stop.is_set():
                await self._process_commands(work, engine, lock_pid)
                now = time.time()
                if now >= next_registrations:
                    engine.registrations(await store.registered_extensions(work, s.registrations_table), now)
                    next_registrations = now + s.registrations_poll_s
                if now >= next_heartbeats:
                    lost = await store.silent_gateways(work, engine.gateways(), s.gateway_timeout_s)
                    if lost:
                        log.warning("no heartbeat from gateway(s) %s: their contacts are abandoned", lost)
                        engine.gateways_lost(lost, now)
                    next_heartbeats = now + 5.0
                engine.tick(now)
                engine.route(now)
                await self._commit(work, engine, lock_pid)
                if now >= next_service_level:
                    await self._service_level(work)
                    next_service_level = now + 30.0
                if now >= next_lock_check:
                    await lock_conn.execute("SELECT 1")  # raises when the lock's connection is gone
                    next_lock_check = now + 2.0
                self.metrics.observe_engine(engine, now)
                async for _ in listen.notifies(timeout=s.tick_s, stop_after=1):
                    pass

    async def _load(self, work: psycopg.AsyncConnection[Any]) -> Acd:
        started = time.monotonic()
        config = await store.load_config(work)
        agents, contacts = await store.load_state(work)
        engine = Acd(config.policy, config.queues, config.agents, phone_grace_s=self.settings.phone_grace_s)
        now = time.time()
        engine.restore(agents, contacts, now, handle_times=await store.recent_handle_times(work))
        # Before any command: an agent whose phone left while no ACD ran is not offered a contact.
        engine.registrations(await store.registered_extensions(work, self.settings.registrations_table), now)
        log.info(
            "ACD state loaded in %.2f s: %d queues, %d agents, %d contacts waiting or connected",
            time.monotonic() - started,
            len(config.queues),
            len(config.agents),
            len(contacts),
        )
        return engine

    async def _service_level(self, work: psycopg.AsyncConnection[Any]) -> None:
        """Today's service level per queue, from the event log (never from counters kept here)."""
        zone = ZoneInfo(self.settings.timezone)
        midnight = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
        rows = await queue_report(work, midnight, datetime.now(zone), tz=self.settings.timezone)
        self.metrics.set_service_level(
            {r.queue: None if r.service_level is None else r.service_level / 100 for r in rows}
        )

    async def _fence(self, work: psycopg.AsyncConnection[Any], lock_pid: int) -> None:
        cur = await work.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = %s AND granted "
            "AND ((classid::bigint << 32) | objid::bigint) = %s",
            (lock_pid, ACD_LOCK_KEY),
        )
        if await cur.fetchone() is None:
            raise LostLeadership("this ACD no longer holds the leader lock")

    async def _commit(self, work: psycopg.AsyncConnection[Any], engine: Acd, lock_pid: int) -> None:
        changes = engine.drain()
        if not (changes.agents or changes.contacts or changes.removed or changes.events or changes.callbacks):
            return
        started = time.monotonic()
        async with work.transaction():
            await self._fence(work, lock_pid)
            await store.persist(work, engine, changes)
        self.metrics.persist_seconds.observe(time.monotonic() - started)
        self.metrics.count_changes(changes)

    async def _process_commands(self, work: psycopg.AsyncConnection[Any], engine: Acd, lock_pid: int) -> None:
        while True:
            started = time.monotonic()
            async with work.transaction():
                await self._fence(work, lock_pid)
                batch = await store.take_commands(work)
                if not batch:
                    return
                now = time.time()
                replies: list[tuple[str, dict[str, Any] | None, tuple[str, str] | None]] = []
                for stored in batch:
                    result, error = await self._apply(work, engine, stored, now)
                    replies.append((stored.uid, result, error))
                    self.metrics.commands.labels(
                        kind=stored.kind, result="ok" if error is None else error[0]
                    ).inc()
                engine.route(now)
                changes = engine.drain()
                await store.persist(work, engine, changes)
                for uid, result, error in replies:
                    await store.notify_result(work, uid, result, error)
                await store.delete_commands(work, [c.id for c in batch])
            self.metrics.batch_seconds.observe(time.monotonic() - started)
            self.metrics.count_changes(changes)

    async def _apply(
        self, work: psycopg.AsyncConnection[Any], engine: Acd, stored: store.StoredCommand, now: float
    ) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
        if stored.expired:
            return None, ("expired", f"the {stored.kind} command expired before an ACD took it")
        if stored.uid in self._poison:
            return None, ("internal", "this command made the ACD fail once; it was not applied")
        try:
            cmd = cmds.parse(stored.kind, stored.payload)
        except (ValueError, ValidationError) as exc:
            return None, ("invalid", str(exc)[:500])
        if isinstance(cmd, cmds.Reload):
            config = await store.load_config(work)
            engine.configure(config.policy, config.queues, config.agents, now)
            log.info("configuration reloaded: %d queues, %d agents", len(config.queues), len(config.agents))
            return {}, None
        try:
            return dispatch(engine, cmd, now), None
        except AcdError as exc:
            return None, (exc.code, exc.message)
        except Exception:
            # The engine may be half-changed: remember the command, drop this engine (the caller's
            # transaction rolls back), and reload from what was last committed.
            log.exception("ACD command %s %s failed", stored.kind, stored.uid)
            self._poison.add(stored.uid)
            raise


def dispatch(engine: Acd, cmd: cmds.Command, now: float) -> dict[str, Any]:
    """Apply one command (Reload excepted: the service reloads the configuration itself)."""
    match cmd:
        case cmds.Enqueue():
            return engine.enqueue(
                contact_id=cmd.contact_id,
                queue=cmd.queue,
                channel=cmd.channel,
                language=cmd.language,
                priority=cmd.priority,
                tier=cmd.tier,
                skills=dict(cmd.skills),
                attributes=dict(cmd.attributes),
                gateway=cmd.gateway,
                call_id=cmd.call_id,
                caller=cmd.caller,
                now=now,
                waited_s=cmd.waited_s,
            )
        case cmds.Abandon():
            return engine.abandon(contact_id=cmd.contact_id, reason=cmd.reason, now=now)
        case cmds.Assign():
            return engine.assign(contact_id=cmd.contact_id, agent_id=cmd.agent_id, now=now)
        case cmds.TakeCallback():
            return engine.take_callback(
                contact_id=cmd.contact_id, queue=cmd.queue, number=cmd.number, language=cmd.language, now=now
            )
        case cmds.OfferResult():
            return engine.offer_result(
                reservation_id=cmd.reservation_id, contact_id=cmd.contact_id, outcome=cmd.outcome, now=now
            )
        case cmds.ContactEnd():
            return engine.contact_end(
                contact_id=cmd.contact_id,
                talk_s=cmd.talk_s,
                hold_s=cmd.hold_s,
                ended_by=cmd.ended_by,
                now=now,
            )
        case cmds.AgentStatus():
            return engine.set_status(
                agent_id=cmd.agent_id, status=cmd.status, reason=cmd.reason, by=cmd.by, now=now
            )
        case cmds.WrapupDone():
            return engine.wrapup_done(
                agent_id=cmd.agent_id,
                contact_id=cmd.contact_id,
                disposition=cmd.disposition,
                note=cmd.note,
                now=now,
            )
        case cmds.Live():
            return {"queues": {q: s.to_json() for q, s in engine.queue_stats(now).items()}}
        case cmds.Status():
            contact = engine.contact(cmd.contact_id)
            return {
                "state": contact.state,
                "queue": contact.queue,
                "position": engine.position(cmd.contact_id) if contact.state == "waiting" else 0,
                "ewt_s": engine.ewt(cmd.contact_id, now) if contact.state == "waiting" else None,
            }
    raise AssertionError(f"unhandled command {cmd!r}")
