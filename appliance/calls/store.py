"""Stores call records in PostgreSQL. Saving is idempotent (upsert of the call, lines replaced), so the
gateway can store the transcript so far before a transfer and the whole record at the end."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, LiteralString

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.calls.record import CallRecord

_CHILD_TABLES = ("lines", "tool_calls", "turns")
# Fixed statements per child table (no SQL built from strings at run time).
_DELETE: dict[str, LiteralString] = {
    "lines": "DELETE FROM aicc.call_lines WHERE call_id = %s",
    "tool_calls": "DELETE FROM aicc.call_tool_calls WHERE call_id = %s",
    "turns": "DELETE FROM aicc.call_turns WHERE call_id = %s",
}
_SELECT: dict[str, LiteralString] = {
    "lines": "SELECT * FROM aicc.call_lines WHERE call_id = %s ORDER BY seq",
    "tool_calls": "SELECT * FROM aicc.call_tool_calls WHERE call_id = %s ORDER BY seq",
    "turns": "SELECT * FROM aicc.call_turns WHERE call_id = %s ORDER BY turn",
}


class CallStore:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def save(self, rec: CallRecord) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO aicc.calls (call_id, caller, service, language, started_at, answered_at,
                       ended_at,
                       outcome, end_reason, transfer_target, setup_s, barge_ins)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (call_id) DO UPDATE SET language = EXCLUDED.language,
                       answered_at = EXCLUDED.answered_at, ended_at = EXCLUDED.ended_at,
                       outcome = EXCLUDED.outcome, end_reason = EXCLUDED.end_reason,
                       transfer_target = EXCLUDED.transfer_target, setup_s = EXCLUDED.setup_s,
                       barge_ins = EXCLUDED.barge_ins""",
                (
                    rec.call_id,
                    rec.caller,
                    rec.service,
                    rec.language,
                    rec.started_at,
                    rec.answered_at,
                    rec.ended_at,
                    rec.outcome,
                    rec.end_reason,
                    rec.transfer_target,
                    rec.setup_s,
                    rec.barge_ins,
                ),
            )
            for table in _CHILD_TABLES:
                await conn.execute(_DELETE[table], (rec.call_id,))
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO aicc.call_lines (call_id, seq, speaker, text, at_s, duration_s, language, "
                    "confidence) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
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
                    ],
                )
                await cur.executemany(
                    "INSERT INTO aicc.call_tool_calls (call_id, seq, tool, arguments, ok, result, error, "
                    "seconds, at_s, confirmed) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
                    ],
                )
                await cur.executemany(
                    "INSERT INTO aicc.call_turns (call_id, turn, stages) VALUES (%s, %s, %s)",
                    [(rec.call_id, i, json.dumps(stages)) for i, stages in enumerate(rec.turns)],
                )

    async def load(self, call_id: str) -> dict[str, Any] | None:
        """The stored record as plain data (the agent desktop and tests read it)."""
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


def record_as_dict(rec: CallRecord) -> dict[str, Any]:
    data = asdict(rec)
    data.pop("_t0", None)
    return data
