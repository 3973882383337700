"""Writes a gateway's call records as its calls go, so a killed gateway leaves the transcript and the
tool calls so far, and keeps what the database cannot take right now.

A record marked changed is saved within `delay_s` (a turn's lines go in one transaction). When the
database is away, the record's latest snapshot goes to a spool file (one per call, replaced
atomically); a background task saves spooled records once the database answers again, then removes
their files. A gateway that starts replays the spool left by its previous run, then closes the calls
that run left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from pathlib import Path

import psycopg
from psycopg_pool import PoolTimeout

from aicc.appliance.calls.record import CallRecord
from aicc.appliance.calls.store import CallStore, Saved, record_as_dict, record_from_dict

log = logging.getLogger(__name__)

_DB_ERRORS = (psycopg.Error, PoolTimeout, OSError, TimeoutError)


class RecordWriter:
    def __init__(self, store: CallStore, spool_dir: Path | None, *, delay_s: float = 0.3) -> None:
        self.store = store
        self.spool_dir = spool_dir
        self.delay_s = delay_s
        self._saved: dict[str, Saved] = {}
        self._dirty: dict[str, CallRecord] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0  # saves that went to the spool

    async def start(self, gateway: str) -> None:
        await self.replay_spool()
        with contextlib.suppress(*_DB_ERRORS):
            closed = await self.store.close_open(gateway, "gateway_restart")
            if closed:
                log.warning("closed %d call record(s) a previous run of this gateway left open", closed)
        self._task = asyncio.create_task(self._run(), name="call-records")

    async def close(self) -> None:
        """Save what is pending; what the database cannot take stays in the spool."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for rec in list(self._dirty.values()):
            await self._save(rec)

    def changed(self, rec: CallRecord) -> None:
        self._dirty[rec.call_id] = rec
        self._wake.set()

    async def save_now(self, rec: CallRecord) -> None:
        """At a call's end (or before a transfer): saved before this returns, or spooled."""
        self._dirty.pop(rec.call_id, None)
        await self._save(rec)
        if rec.ended_at is not None:
            self._saved.pop(rec.call_id, None)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.delay_s)
            self._wake.clear()
            for call_id in list(self._dirty):
                rec = self._dirty.pop(call_id, None)
                if rec is not None:
                    await self._save(rec)
            if self.spool_dir is not None and any(self.spool_dir.glob("*.json")):
                await self.replay_spool()

    async def _save(self, rec: CallRecord) -> None:
        spooled = self._spool_path(rec.call_id)
        try:
            if spooled is not None and spooled.exists():
                # The database missed earlier saves: write the whole record once, then deltas again.
                self._saved[rec.call_id] = await self.store.save(rec)
                spooled.unlink(missing_ok=True)
            else:
                self._saved[rec.call_id] = await self.store.save(rec, self._saved.get(rec.call_id))
        except _DB_ERRORS as exc:
            self.failures += 1
            log.warning("call record %s kept in the spool (database unavailable: %s)", rec.call_id, exc)
            self._spool(rec)
            self._wake.set()  # try again later

    def _spool_path(self, call_id: str) -> Path | None:
        if self.spool_dir is None:
            return None
        return self.spool_dir / (hashlib.sha256(call_id.encode()).hexdigest()[:32] + ".json")

    def _spool(self, rec: CallRecord) -> None:
        path = self._spool_path(rec.call_id)
        if path is None:
            log.error("no spool folder: call record %s is lost", rec.call_id)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record_as_dict(rec), ensure_ascii=False, default=str), encoding="utf-8")
        tmp.replace(path)

    async def replay_spool(self) -> int:
        """Save every spooled record the database takes now; returns how many were saved."""
        if self.spool_dir is None or not self.spool_dir.is_dir():
            return 0
        done = 0
        for path in sorted(self.spool_dir.glob("*.json")):
            try:
                rec = record_from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError) as exc:
                log.error("unreadable call record spool file %s left in place: %s", path, exc)
                continue
            if rec.call_id in self._dirty:
                continue  # a newer snapshot is about to be saved anyway
            try:
                self._saved[rec.call_id] = await self.store.save(rec)
            except _DB_ERRORS:
                return done
            path.unlink(missing_ok=True)
            if rec.ended_at is not None:
                self._saved.pop(rec.call_id, None)
            done += 1
        if done:
            log.info("saved %d call record(s) from the spool", done)
        return done
