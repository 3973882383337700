"""Live figures for open pages (the supervisor wallboard, the agent desktop), pushed on change.

The ACD sends NOTIFY acd_live in the transaction that persists a change of agents or contacts; the
API's ACD client listens and calls `LiveHub.changed`. The hub builds one shared picture per change
(the ACD's queue figures, today's counts from the event log, agents, contacts), at most every
`MIN_INTERVAL_S`; each subscriber gets it masked for its role, plus its own agent state and contact.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.acd import commands as cmds
from aicc.appliance.acd.client import AcdClient, AcdRejected, AcdUnavailable
from aicc.appliance.acd.policy import AgentProfile, QueueConfig
from aicc.appliance.acd.router import pool_key, qualifies
from aicc.appliance.reports.queries import queue_report

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]

MIN_INTERVAL_S = 0.2  # a burst of changes becomes one picture
TODAY_TTL_S = 5.0  # today's counts come from the event log: read at most this often


@dataclass
class Picture:
    """What every subscriber's snapshot is made from, as of `version`."""

    version: int
    at: float
    queues: dict[str, dict[str, Any]]
    agents: list[dict[str, Any]]
    contacts: list[dict[str, Any]]  # acd_contacts rows: id, queue, state, contact (unmasked)
    queue_configs: dict[str, QueueConfig]
    profiles: dict[int, AgentProfile]
    acd_available: bool = True
    states: dict[int, dict[str, Any]] = field(default_factory=dict)  # agent id -> acd_agent_state


class LiveHub:
    def __init__(self, timezone: str) -> None:
        self.timezone = timezone
        self.version = 0
        self._event = asyncio.Event()
        self._lock = asyncio.Lock()
        self._picture: Picture | None = None
        self._built_at = 0.0
        self._today: tuple[float, dict[str, dict[str, Any]]] = (0.0, {})

    def changed(self) -> None:
        """The ACD changed something (called in the event loop by the ACD client's listener)."""
        self.version += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seen: int, timeout_s: float) -> int:
        """The version after `seen`, or `seen` again when nothing changed within `timeout_s`."""
        if self.version != seen:
            return self.version
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)
        return self.version

    async def picture(self, pool: Pool, acd: AcdClient) -> Picture:
        async with self._lock:
            current = self._picture
            if current is not None and current.version == self.version:
                return current
            # Coalesce: the next picture is built MIN_INTERVAL_S after the last at the earliest.
            await asyncio.sleep(max(0.0, self._built_at + MIN_INTERVAL_S - time.monotonic()))
            self._picture = await self._build(pool, acd, self.version)
            self._built_at = time.monotonic()
            return self._picture

    async def _build(self, pool: Pool, acd: AcdClient, version: int) -> Picture:
        acd_available = True
        try:
            queues: dict[str, dict[str, Any]] = ((await acd.submit(cmds.Live())) or {}).get("queues", {})
        except (AcdUnavailable, AcdRejected):
            queues, acd_available = {}, False
        async with pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT a.user_id, u.username, u.display_name, a.extension, a.profile, s.state "
                    "FROM aicc.agents a JOIN aicc.users u ON u.id = a.user_id "
                    "LEFT JOIN aicc.acd_agent_state s ON s.user_id = a.user_id "
                    "WHERE NOT u.disabled ORDER BY u.username"
                )
            ).fetchall()
            contacts = await (
                await conn.execute(
                    "SELECT id::text, queue, state, contact FROM aicc.acd_contacts ORDER BY seq"
                )
            ).fetchall()
            configs = {
                r["name"]: QueueConfig.model_validate(r["config"])
                for r in await (await conn.execute("SELECT name, config FROM aicc.queues")).fetchall()
            }
            today = await self._today_counts(conn)
        for name in configs:
            queues.setdefault(
                name, {"waiting": 0, "longest_wait_s": 0.0, "agents": {}, "staffed": 0, "available": 0}
            )
        for name, q in queues.items():
            q["today"] = today.get(name, {})
            q["display_name"] = configs[name].display_name if name in configs else {}
        queue_of = {c["id"]: c["queue"] for c in contacts}
        agents, states, profiles = [], {}, {}
        for r in rows:
            state = r["state"] or {}
            states[r["user_id"]] = state
            profiles[r["user_id"]] = AgentProfile.model_validate(
                {**r["profile"], "extension": r["extension"]}
            )
            contact_id = state.get("reserved_for") or next(iter(state.get("connected") or {}), None)
            agents.append(
                {
                    "agent_id": r["user_id"],
                    "username": r["username"],
                    "display_name": r["display_name"],
                    "extension": r["extension"],
                    "status": state.get("status", "logged_out"),
                    "state": state.get("state", "idle"),
                    "reason": state.get("reason", ""),
                    "since": state.get("since") or None,
                    "contact_id": contact_id,
                    "queue": queue_of.get(contact_id) if contact_id else None,
                }
            )
        return Picture(
            version,
            time.time(),
            queues,
            agents,
            [dict(c) for c in contacts],
            configs,
            profiles,
            acd_available,
            states,
        )

    async def _today_counts(self, conn: AsyncConnection[DictRow]) -> dict[str, dict[str, Any]]:
        at, counts = self._today
        if time.monotonic() - at < TODAY_TTL_S:
            return counts
        zone = ZoneInfo(self.timezone)
        midnight = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
        rows = await queue_report(conn, midnight, midnight + timedelta(days=1), tz=self.timezone)
        counts = {
            r.queue: {
                "offered": r.offered,
                "answered": r.answered,
                "abandoned": r.abandoned,
                "service_level": r.service_level,
                "asa_s": r.asa_s,
            }
            for r in rows
        }
        self._today = (time.monotonic(), counts)
        return counts


def queues_served(profile: AgentProfile, configs: dict[str, QueueConfig]) -> list[str]:
    """The queues whose contacts this agent's profile qualifies for."""
    return sorted(
        name for name, q in configs.items() if qualifies(profile, pool_key(q.channel, q.language, q.skills))
    )
