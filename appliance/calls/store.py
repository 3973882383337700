"""Stores call records in PostgreSQL as the call goes. A record's lines, tool calls and turns only ever
grow, so each save writes the call row and what was added since the last save (rows keyed by their
index: a repeated save writes nothing twice). A full save (after a spool replay) writes everything."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, LiteralString

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.calls.record import CallRecord, Line, ToolCallRecord

_CHILD_TABLES = ("lines", "tool_calls", "turns")
_SELECT: dict[str, LiteralString] = {
    "lines": "SELECT * FROM aicc.call_lines WHERE call_id = %s ORDER BY seq",
    "tool_calls": "SELECT * FROM aicc.call_tool_calls WHERE call_id = %s ORDER BY seq",
    "turns": "SELECT * FROM aicc.call_turns WHERE call_id = %s ORDER BY turn",
}
_COLUMNS = (
    "caller",
    "service",
    "language",
    "started_at",
    "answered_at",
    "ended_at",
    "outcome",
    "end_reason",
    "transfer_target",
    "setup_s",
    "barge_ins",
    "gateway",
    "flow",
    "bot",
    "queue",
    "contact_id",
    "agent",
    "summary",
)


@dataclass
class Saved:
    """How much of a record is in the database."""

    lines: int = 0
    tool_calls: int = 0
    turns: int = 0


class CallStore:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def save(self, rec: CallRecord, since: Saved | None = None) -> Saved:
        """Upsert the call and insert the lines, tool calls and turns added since `since` (all of them
        when None). Returns what is saved now."""
        since = since or Saved()
        async with self.pool.connection() as conn, conn.transaction():
            await _upsert_call(conn, rec)
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO aicc.call_lines (call_id, seq, speaker, text, at_s, duration_s, language, "
                    "confidence) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [
                        (
                            rec.call_id,
                            i,
                            ln.speaker,
                            ln.text,
                            ln.at_s,
                            ln.duration_s,
                            ln.language,
                            ln.confidence,
                        )
                        for i, ln in enumerate(rec.lines)
                        if i >= since.lines
                    ],
                )
                await cur.executemany(
                    "INSERT INTO aicc.call_tool_calls (call_id, seq, tool, arguments, ok, result, error, "
                    "seconds, at_s, confirmed) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    [
                        (
                            rec.call_id,
                            i,
                            t.tool,
                            json.dumps(t.arguments, ensure_ascii=False),
                            t.ok,
                            json.dumps(t.result, ensure_ascii=False, default=str),
                            t.error,
                            t.seconds,
                            t.at_s,
                            t.confirmed,
                        )
                        for i, t in enumerate(rec.tool_calls)
                        if i >= since.tool_calls
                    ],
                )
                await cur.executemany(
                    "INSERT INTO aicc.call_turns (call_id, turn, stages) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    [
                        (rec.call_id, i, json.dumps(stages))
                        for i, stages in enumerate(rec.turns)
                        if i >= since.turns
                    ],
                )
        return Saved(len(rec.lines), len(rec.tool_calls), len(rec.turns))

    async def close_open(self, gateway: str, reason: str) -> int:
        """Calls this gateway left open (it was killed): ended now, outcome failed. Returns how many."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE aicc.calls SET ended_at = now(), outcome = 'failed', end_reason = %s "
                "WHERE gateway = %s AND ended_at IS NULL",
                (reason, gateway),
            )
            return int(cur.rowcount)

    async def load(self, call_id: str) -> dict[str, Any] | None:
        """The stored record as plain data (the API and tests read it)."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM aicc.calls WHERE call_id = %s", (call_id,))
            call = await cur.fetchone()
            if call is None:
                return None
            out: dict[str, Any] = dict(call)
            for table in _CHILD_TABLES:
                await cur.execute(_SELECT[table], (call_id,))
                out[table] = [dict(r) for r in await cur.fetchall()]
            return out


async def _upsert_call(conn: AsyncConnection[Any], rec: CallRecord) -> None:
    values = [getattr(rec, c) for c in _COLUMNS]
    await conn.execute(
        "INSERT INTO aicc.calls (call_id, caller, service, language, started_at, answered_at, ended_at, "
        "outcome, end_reason, transfer_target, setup_s, barge_ins, gateway, flow, bot, queue, contact_id, "
        "agent, summary) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (call_id) DO UPDATE SET language = EXCLUDED.language, "
        "answered_at = EXCLUDED.answered_at, ended_at = EXCLUDED.ended_at, outcome = EXCLUDED.outcome, "
        "end_reason = EXCLUDED.end_reason, transfer_target = EXCLUDED.transfer_target, "
        "setup_s = EXCLUDED.setup_s, barge_ins = EXCLUDED.barge_ins, flow = EXCLUDED.flow, "
        "bot = EXCLUDED.bot, "
        "queue = EXCLUDED.queue, contact_id = EXCLUDED.contact_id, agent = EXCLUDED.agent, "
        "summary = EXCLUDED.summary",
        (rec.call_id, *values),
    )


def record_as_dict(rec: CallRecord) -> dict[str, Any]:
    data = asdict(rec)
    data.pop("_t0", None)
    return data


def record_from_dict(data: dict[str, Any]) -> CallRecord:
    """The inverse of record_as_dict after a JSON round trip (a spooled record)."""
    fields = dict(data)
    for key in ("started_at", "answered_at", "ended_at"):
        if isinstance(fields.get(key), str):
            fields[key] = datetime.fromisoformat(fields[key])
    lines = [Line(**ln) for ln in fields.pop("lines", [])]
    tool_calls = [ToolCallRecord(**t) for t in fields.pop("tool_calls", [])]
    rec = CallRecord(**fields)
    rec.lines, rec.tool_calls = lines, tool_calls
    return rec
