"""Flows, calendars and service numbers in the database, and the voice gateway's cached view of them.

A flow upload adds a version (the YAML as uploaded and the validated document) and, by default, makes
it the one in force; a rollback points the flow at an older version. The gateway reads the versions in
force every few seconds and whenever NOTIFY ivr_changed says something changed; with the database
away it keeps what it read last, and before it ever read anything it runs the flows shipped with aicc.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from aicc.appliance.ivr.calendar import Calendar, load_calendars
from aicc.appliance.ivr.flow import Flow, load_flow, load_flow_text, shipped_flows

log = logging.getLogger(__name__)

CHANNEL = "ivr_changed"
# The demo's service numbers and the shipped flows they reach (also the installer's seed).
DEFAULT_NUMBERS = {"4000": "retail-en", "4001": "retail-zh", "4002": "bank-card"}
Conn = psycopg.AsyncConnection[Any]


async def _rows(conn: Conn, query: LiteralString, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows as tuples, whatever row factory the caller's connection has (the API's give dicts)."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def calendars(conn: Conn) -> dict[str, Calendar]:
    """The shipped calendars, overridden and extended by the site's (by name)."""
    found = load_calendars()
    for name, document in await _rows(conn, "SELECT name, document FROM aicc.calendars"):
        found[str(name)] = Calendar.model_validate(document)
    return found


async def save_flow(
    conn: Conn, source: str, *, by: str, comment: str = "", activate: bool = True
) -> tuple[Flow, int]:
    """Validate and store a new version (DocumentError names what is wrong); returns it and its number."""
    flow = load_flow_text(source, "upload", calendars=set(await calendars(conn)))
    rows = await _rows(
        conn, "SELECT coalesce(max(version), 0) + 1 FROM aicc.ivr_flows WHERE name = %s", (flow.name,)
    )
    version = int(rows[0][0])
    await conn.execute(
        "INSERT INTO aicc.ivr_flows (name, version, source, document, comment, created_by) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (
            flow.name,
            version,
            source,
            json.dumps(flow.model_dump(mode="json"), ensure_ascii=False),
            comment,
            by,
        ),
    )
    if activate:
        await activate_version(conn, flow.name, version, by=by)
    return flow, version


async def activate_version(conn: Conn, name: str, version: int, *, by: str) -> None:
    await conn.execute(
        "INSERT INTO aicc.ivr_active (name, version, activated_by) VALUES (%s, %s, %s) "
        "ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, activated_by = EXCLUDED.activated_by, "
        "activated_at = now()",
        (name, version, by),
    )
    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, name))


async def active_flows(conn: Conn) -> dict[str, Flow]:
    rows = await _rows(
        conn,
        "SELECT f.name, f.document FROM aicc.ivr_active a JOIN aicc.ivr_flows f "
        "ON f.name = a.name AND f.version = a.version",
    )
    return {str(name): Flow.model_validate(document) for name, document in rows}


async def numbers(conn: Conn) -> dict[str, str]:
    return {str(n): str(f) for n, f in await _rows(conn, "SELECT number, flow FROM aicc.service_numbers")}


async def flow_summaries(conn: Conn, names: Collection[str] | None = None) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT f.name, a.version AS active_version, max(f.version) AS latest_version, "
            "count(*) AS versions, a.activated_at, a.activated_by FROM aicc.ivr_flows f "
            "LEFT JOIN aicc.ivr_active a ON a.name = f.name GROUP BY f.name, a.version, a.activated_at, "
            "a.activated_by ORDER BY f.name"
        )
        rows = [dict(r) for r in await cur.fetchall()]
    return [r for r in rows if names is None or r["name"] in names]


@dataclass
class FlowCatalog:
    """What the gateway runs: flow by dialled number, with the calendars. Refreshed in the background."""

    pool: AsyncConnectionPool[Any] | None
    conninfo: str = ""
    refresh_s: float = 30.0
    flows: dict[str, Flow] = field(default_factory=dict)
    by_number: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_NUMBERS))
    calendars: dict[str, Calendar] = field(default_factory=load_calendars)
    loaded_at: float = 0.0
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        # Until the database answers: the shipped flows, on the demo's numbers.
        known = set(self.calendars)
        self.flows = {name: load_flow(path, calendars=known) for name, path in shipped_flows().items()}

    def flow_for(self, number: str) -> Flow | None:
        """The flow of a dialled number; a number with none gets the first number's flow (Kamailio only
        routes numbers the site configured, so this is a site that mapped some numbers but not all)."""
        name = self.by_number.get(number)
        if name is None and self.by_number:
            log.warning(
                "service number %s has no flow: using %s", number, next(iter(self.by_number.values()))
            )
            name = next(iter(self.by_number.values()))
        return self.flows.get(name or "")

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="flow-catalog")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def refresh(self) -> bool:
        if self.pool is None:
            return False
        try:
            async with self.pool.connection() as conn:
                flows = await active_flows(conn)
                by_number = await numbers(conn)
                cals = await calendars(conn)
        except (psycopg.Error, PoolTimeout, OSError, ValueError) as exc:
            log.warning("flows not refreshed (keeping the %d loaded): %s", len(self.flows), exc)
            return False
        if flows:
            self.flows = flows
        self.by_number, self.calendars, self.loaded_at = by_number, cals, time.time()
        return True

    async def _run(self) -> None:
        listener = asyncio.create_task(self._listen()) if self.conninfo else None
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self.refresh_s)
                self._changed.clear()
                await self.refresh()
        finally:
            if listener is not None:
                listener.cancel()

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    async for _ in conn.notifies():
                        self._changed.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("flow change listener reconnecting: %s", exc)
                await asyncio.sleep(5)
