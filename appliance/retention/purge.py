"""The retention purge: personal data past its retention leaves the database, in short batches, one
API host at a time, every run recorded.

What a run purges (the cutoffs are the database's now() minus each retention, fixed when the run
starts: `cutoff` for transcript_days, `ticket_cutoff` for ticket_days):

- calls that started before the cutoff: their transcript lines (aicc.call_lines) and the bot's tool
  calls (aicc.call_tool_calls: arguments and results hold order and account numbers, names, phones)
  are deleted; the call row keeps its figures (times, outcome, end reason, flow, bot, queue, agent,
  contact id, barge-ins, setup time) and its per-turn stage latencies (aicc.call_turns: seconds only),
  and loses the caller's number and the bot's summary (`purged_at` says when; triggers of the
  migration keep it so when a gateway replays an old spooled record of the call);
- web-chat messages (aicc.conversation_messages) created before the cutoff are deleted; a
  conversation idle since before the cutoff loses the bot's handover summary;
- tickets finished before the ticket cutoff: closed, or resolved and not changed since (a resolved
  ticket the customer never confirmed would otherwise keep their data for ever; the API refuses to
  re-open a purged one, a customer who writes again gets a new ticket). The customer's identities
  (`customer`: name, phone, email) and the description are emptied, the subject becomes '(purged)'
  (the bot writes the caller's own words there), the texts of the ticket's comments (public replies,
  customer messages, internal notes: `commented` events) and of the customer's confirmations are
  blanked in the event log, and so is the subject its notifications quote. The number, type, status,
  priority, group, assignee, source, links (call, contact, conversation), times and every event with
  its time, kind, author and visibility stay, so the SLA figures (computed from the event log alone,
  appliance/tickets/sla.py) do not change. Tickets are business records a customer may dispute,
  hence their own, longer retention (default 3 years);
- customers (aicc.customers) with no activity since the transcript cutoff: created before it, no
  conversation of theirs created, updated or written in since, no call since from one of their phone
  numbers (in any form a trunk gives it), no ticket of theirs (through a conversation or their phone
  number, as the agent's screen pop finds them) open or changed since. Their identities
  (aicc.customer_identities: phone numbers, e-mail addresses, channel ids) are deleted and their name
  blanked; the row stays with `purged_at` set. Keeping the row is the simplest correct design: every
  conversation references its customer (NOT NULL, and conversations outlive their messages), so a
  delete would need a second path for the rare customer without one, racing with a channel that is
  opening a conversation for them; an empty row with its id identifies no one. Without identities no
  channel finds the customer again: one who comes back is a new customer.

The reports are computed from the event log (aicc.cc_events), which holds no transcript, number or
message text, so no report figure changes. The event log and the audit log have their own lifetimes
and are not touched here.

A run holds the session-level advisory lock LOCK_KEY on its own connection from start to end: a second
host (or a second run on this one) finds it taken and skips, and a run that finds rows still marked
'running' knows their process died and marks them failed. Each batch is one short transaction (at
most `batch_size` calls, messages, conversations, tickets or customers, rows already locked by a
writer skipped, a lock_timeout on anything else) that also adds its counts to the run's row, so the
row always says what was committed. The run ends with its row's status (succeeded, or failed with the
error) and an audit entry (`retention.purge`) in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, LiteralString

import psycopg
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.api import audit
from aicc.appliance.api.deps import Principal

log = logging.getLogger("aicc.retention")

LOCK_KEY = 0x52455401  # "RET" + 1: one purge per database at a time
ACTOR = "retention"
FIRST_PASS_S = 60.0  # after the API starts
# A ticket closed today can still be disputed next month (and at least transcript_days: see
# RetentionSettings); both are also CHECKs on aicc.retention_runs.
TICKET_DAYS_MIN = 30
Trigger = Literal["schedule", "manual"]
# What a run counts, in rows: call records scrubbed, transcript lines and tool calls deleted, chat
# messages deleted, conversations' handover summaries blanked, tickets scrubbed, their comments' and
# confirmations' texts blanked, customers blanked and their identities deleted, the messaging channels'
# records of whom a message was from or to (ledgers, dead letters, conversations' platform ids) deleted.
KINDS: tuple[str, ...] = (
    "calls",
    "call_lines",
    "call_tool_calls",
    "chat_messages",
    "chat_summaries",
    "tickets",
    "ticket_texts",
    "customers",
    "customer_identities",
    "channel_records",
)
INTERRUPTED = "interrupted: the process running it ended before it finished"
RUN_COLUMNS: LiteralString = (
    "id, trigger, actor, host, transcript_days, cutoff, ticket_days, ticket_cutoff, started_at, "
    "finished_at, status, purged, error"
)

# One batch each: the first column, named as the step, counts the rows the batch took (fewer than the
# limit: the step is done). FOR UPDATE SKIP LOCKED leaves rows a writer holds to the next run.
_CALLS: LiteralString = """
WITH batch AS (
    SELECT call_id FROM aicc.calls WHERE purged_at IS NULL AND started_at < %(cutoff)s
    ORDER BY started_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), lines AS (
    DELETE FROM aicc.call_lines l USING batch b WHERE l.call_id = b.call_id RETURNING 1
), tools AS (
    DELETE FROM aicc.call_tool_calls t USING batch b WHERE t.call_id = b.call_id RETURNING 1
), scrubbed AS (
    UPDATE aicc.calls c SET caller = '', summary = '', purged_at = now()
    FROM batch b WHERE c.call_id = b.call_id RETURNING 1
)
SELECT (SELECT count(*) FROM scrubbed) AS calls, (SELECT count(*) FROM lines) AS call_lines,
       (SELECT count(*) FROM tools) AS call_tool_calls
"""
_MESSAGES: LiteralString = """
WITH batch AS (
    SELECT id FROM aicc.conversation_messages WHERE created_at < %(cutoff)s
    ORDER BY created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM aicc.conversation_messages m USING batch b WHERE m.id = b.id RETURNING 1
)
SELECT (SELECT count(*) FROM deleted) AS chat_messages
"""
_SUMMARIES: LiteralString = """
WITH batch AS (
    SELECT id FROM aicc.conversations
    WHERE summary <> '' AND coalesce(last_message_at, created_at) < %(cutoff)s
    LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), blanked AS (
    UPDATE aicc.conversations c SET summary = '' FROM batch b WHERE c.id = b.id RETURNING 1
)
SELECT (SELECT count(*) FROM blanked) AS chat_summaries
"""
# The event log's guard (retention migration 0002) lets exactly this change through: a comment's body
# or a confirmation's note blanked, the rest of the row as it was.
_TICKETS: LiteralString = """
WITH batch AS (
    SELECT id, number FROM aicc.tickets
    WHERE purged_at IS NULL AND status IN ('resolved', 'closed') AND updated_at < %(ticket_cutoff)s
    ORDER BY updated_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), texts AS (
    UPDATE aicc.ticket_events e
    SET data = e.data
        || CASE e.kind WHEN 'commented' THEN '{"body": ""}'::jsonb ELSE '{"note": ""}'::jsonb END
    FROM batch b
    WHERE e.ticket_id = b.id AND e.kind IN ('commented', 'customer_confirmed')
      AND coalesce(e.data ->> CASE e.kind WHEN 'commented' THEN 'body' ELSE 'note' END, '') <> ''
    RETURNING 1
), notices AS (  -- runs though nothing reads it, as every data-modifying WITH does
    UPDATE aicc.notifications n SET data = n.data || '{"subject": "(purged)"}'::jsonb
    FROM batch b WHERE n.ticket = b.number AND n.data ->> 'subject' <> '(purged)'
    RETURNING 1
), scrubbed AS (
    UPDATE aicc.tickets t SET subject = '(purged)', description = '', customer = '{}', purged_at = now()
    FROM batch b WHERE t.id = b.id RETURNING 1
)
SELECT (SELECT count(*) FROM scrubbed) AS tickets, (SELECT count(*) FROM texts) AS ticket_texts
"""
# Activity since the cutoff keeps a customer's data: a conversation (created, changed or written in), a
# call from one of their numbers, a ticket of theirs open or changed. Tickets are theirs through one of
# their conversations or by phone number, as the agent's screen pop (conversations/record.py) finds them.
_CUSTOMERS: LiteralString = """
WITH batch AS (
    SELECT c.id FROM aicc.customers c
    WHERE c.purged_at IS NULL AND c.created_at < %(cutoff)s
      AND NOT EXISTS (
          SELECT 1 FROM aicc.conversations v WHERE v.customer_id = c.id
          AND greatest(v.created_at, v.updated_at, v.last_message_at) >= %(cutoff)s)
      AND NOT EXISTS (
          SELECT 1 FROM aicc.customer_identities i
          CROSS JOIN LATERAL unnest(aicc.number_forms(i.value)) AS f(number)
          JOIN aicc.calls k ON k.caller = f.number
          WHERE i.customer_id = c.id AND i.kind = 'phone' AND k.started_at >= %(cutoff)s)
      AND NOT EXISTS (
          SELECT 1 FROM aicc.conversations v JOIN aicc.tickets t ON t.conversation_id = v.id
          WHERE v.customer_id = c.id
            AND (t.status NOT IN ('resolved', 'closed') OR t.updated_at >= %(cutoff)s))
      AND NOT EXISTS (
          SELECT 1 FROM aicc.customer_identities i
          CROSS JOIN LATERAL unnest(aicc.number_forms(i.value)) AS f(number)
          JOIN aicc.tickets t ON t.customer ->> 'phone' = f.number
          WHERE i.customer_id = c.id AND i.kind = 'phone'
            AND (t.status NOT IN ('resolved', 'closed') OR t.updated_at >= %(cutoff)s))
    ORDER BY c.created_at LIMIT %(limit)s FOR UPDATE OF c SKIP LOCKED
), identities AS (
    DELETE FROM aicc.customer_identities i USING batch b WHERE i.customer_id = b.id RETURNING 1
), blanked AS (
    UPDATE aicc.customers c SET name = '', purged_at = now() FROM batch b WHERE c.id = b.id RETURNING 1
)
SELECT (SELECT count(*) FROM blanked) AS customers, (SELECT count(*) FROM identities) AS customer_identities
"""
# The channels' records name the customer (a WeCom external_userid, an OpenID, an email address and
# subject): the ledgers' and dead letters' rows older than the cutoff go, and so does the link of a
# conversation idle since the cutoff to the customer's platform id (a reply to it is refused after).
_CHANNELS: LiteralString = """
WITH wecom AS (
    DELETE FROM aicc.wecom_messages WHERE (direction, msgid) IN (
        SELECT direction, msgid FROM aicc.wecom_messages WHERE created_at < %(cutoff)s
        LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING 1
), oa AS (
    DELETE FROM aicc.wechat_oa_messages WHERE (direction, msgid) IN (
        SELECT direction, msgid FROM aicc.wechat_oa_messages WHERE created_at < %(cutoff)s
        LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING 1
), mail AS (
    DELETE FROM aicc.email_messages WHERE (direction, msgid) IN (
        SELECT direction, msgid FROM aicc.email_messages WHERE created_at < %(cutoff)s
        LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING 1
), wecom_links AS (
    DELETE FROM aicc.wecom_conversations WHERE conversation_id IN (
        SELECT l.conversation_id FROM aicc.wecom_conversations l
        JOIN aicc.conversations c ON c.id = l.conversation_id
        WHERE greatest(c.created_at, c.updated_at, c.last_message_at) < %(cutoff)s
        LIMIT %(limit)s FOR UPDATE OF l SKIP LOCKED) RETURNING 1
), oa_links AS (
    DELETE FROM aicc.wechat_oa_conversations WHERE conversation_id IN (
        SELECT l.conversation_id FROM aicc.wechat_oa_conversations l
        JOIN aicc.conversations c ON c.id = l.conversation_id
        WHERE greatest(c.created_at, c.updated_at, c.last_message_at) < %(cutoff)s
        LIMIT %(limit)s FOR UPDATE OF l SKIP LOCKED) RETURNING 1
), mail_links AS (
    DELETE FROM aicc.email_conversations WHERE conversation_id IN (
        SELECT l.conversation_id FROM aicc.email_conversations l
        JOIN aicc.conversations c ON c.id = l.conversation_id
        WHERE greatest(c.created_at, c.updated_at, c.last_message_at) < %(cutoff)s
        LIMIT %(limit)s FOR UPDATE OF l SKIP LOCKED) RETURNING 1
), dead AS (
    DELETE FROM aicc.channel_dead_letters WHERE id IN (
        SELECT id FROM aicc.channel_dead_letters WHERE created_at < %(cutoff)s
        LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING 1
)
SELECT (SELECT count(*) FROM wecom) + (SELECT count(*) FROM oa) + (SELECT count(*) FROM mail)
     + (SELECT count(*) FROM wecom_links) + (SELECT count(*) FROM oa_links)
     + (SELECT count(*) FROM mail_links) + (SELECT count(*) FROM dead) AS channel_records
"""
# A run takes them in this order. The customers step reads tickets changed since the transcript cutoff,
# which the tickets step never touches (ticket_days >= transcript_days), so the order changes nothing.
STEPS: tuple[tuple[str, LiteralString], ...] = (
    ("calls", _CALLS),
    ("chat_messages", _MESSAGES),
    ("chat_summaries", _SUMMARIES),
    ("tickets", _TICKETS),
    ("customers", _CUSTOMERS),
    ("channel_records", _CHANNELS),
)


@dataclass(frozen=True)
class RetentionSettings:
    transcript_days: int = 180
    # Tickets are business records a customer may dispute (a refund, a complaint): 3 years by default.
    ticket_days: int = 1095
    batch_size: int = 500  # calls (with lines and tool calls), messages, conversations, tickets, customers
    lock_timeout_s: float = 5.0  # a batch waits no longer for a lock (the run fails; the next retries)
    statement_timeout_s: float = 120.0
    pause_s: float = 0.0  # between batches

    def __post_init__(self) -> None:
        if self.transcript_days < 1:
            raise ValueError("transcript_days is at least 1: a retention of 0 days would keep nothing")
        if self.ticket_days < TICKET_DAYS_MIN:
            raise ValueError(
                f"ticket_days is at least {TICKET_DAYS_MIN}: a closed ticket stays for the customer to "
                f"dispute it; found {self.ticket_days}"
            )
        if self.ticket_days < self.transcript_days:
            # The customers step counts a ticket changed since the transcript cutoff as activity, by
            # the phone number in it: such a ticket must not be purged yet.
            raise ValueError(
                f"ticket_days ({self.ticket_days}) is below transcript_days ({self.transcript_days}): a "
                "ticket outlives the transcripts of its case"
            )
        if self.batch_size < 1:
            raise ValueError("batch_size is at least 1")


class RetentionBusy(Exception):
    """Another run holds the purge lock (on this host or another)."""


class _LastSuccess(Collector):
    """The site's last successful purge as read from the database: no sample until it has been read,
    so a process that has not read it yet never shows a stale 0 that would page someone."""

    NAME = "aicc_retention_last_success_timestamp_seconds"
    HELP = (
        "Unix time the site's last successful retention purge finished (before the first one: when "
        "the retention table was created), as the latest pass of this API process read it."
    )

    def __init__(self) -> None:
        self.value: float | None = None

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.NAME, self.HELP)]

    def collect(self) -> Iterable[Metric]:
        if self.value is None:
            return []
        family = GaugeMetricFamily(self.NAME, self.HELP)
        family.add_metric([], self.value)
        return [family]


class RetentionMetrics:
    """The purge's figures on the API's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.purged = Counter(
            "aicc_retention_purged",
            "Rows purged by this API process's retention runs, by kind (calls, tickets: records "
            "scrubbed; call_lines, call_tool_calls, chat_messages, customer_identities: deleted; "
            "chat_summaries, ticket_texts, customers: blanked).",
            ["kind"],
            registry=registry,
        )
        self.runs = Counter(
            "aicc_retention_runs",
            "Retention runs this API process made, by how they ended.",
            ["status"],
            registry=registry,
        )
        self.last_success = _LastSuccess()
        registry.register(self.last_success)
        for kind in KINDS:
            self.purged.labels(kind)
        for status in ("succeeded", "failed"):
            self.runs.labels(status)

    def set_last_success(self, at: dt.datetime | None) -> None:
        if at is not None:
            self.last_success.value = at.timestamp()


def _view(row: dict[str, Any]) -> dict[str, Any]:
    """A run as the audit log and the API show it."""
    keys = ("trigger", "host", "transcript_days", "cutoff", "ticket_days", "ticket_cutoff", "status")
    return {k: row[k] for k in (*keys, "purged", "error")}


async def _connect(conninfo: str) -> AsyncConnection[DictRow]:
    return await AsyncConnection.connect(conninfo, autocommit=True, row_factory=dict_row)


class Run:
    """A started run: it holds the lock on `conn` (its own connection) until `execute` ends."""

    def __init__(
        self,
        conn: AsyncConnection[DictRow],
        conninfo: str,
        row: dict[str, Any],
        settings: RetentionSettings,
        metrics: RetentionMetrics | None,
        actor: Principal | str,
        source: str,
    ) -> None:
        self.conn = conn
        self.conninfo = conninfo
        self.row = row
        self.settings = settings
        self.metrics = metrics
        self.actor = actor
        self.source = source
        self.purged: dict[str, int] = dict.fromkeys(KINDS, 0)

    @property
    def id(self) -> int:
        return int(self.row["id"])

    async def _batch(self, query: LiteralString) -> dict[str, int]:
        s = self.settings
        async with self.conn.transaction():
            await self.conn.execute(
                "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
                (f"{int(s.lock_timeout_s * 1000)}ms", f"{int(s.statement_timeout_s * 1000)}ms"),
            )
            cur = await self.conn.execute(
                query,
                {
                    "cutoff": self.row["cutoff"],
                    "ticket_cutoff": self.row["ticket_cutoff"],
                    "limit": s.batch_size,
                },
            )
            row = await cur.fetchone()
            assert row is not None
            counts = {k: int(v) for k, v in row.items()}
            total = {k: self.purged[k] + counts.get(k, 0) for k in KINDS}
            await self.conn.execute(
                "UPDATE aicc.retention_runs SET purged = %s WHERE id = %s", (Jsonb(total), self.id)
            )
        self.purged = total  # committed
        if self.metrics is not None:
            for kind, n in counts.items():
                self.metrics.purged.labels(kind).inc(n)
        return counts

    async def _finish(self, conn: AsyncConnection[DictRow], error: str | None) -> dict[str, Any]:
        async with conn.transaction():
            cur = await conn.execute(
                "UPDATE aicc.retention_runs SET status = %s, finished_at = now(), error = %s, "  # noqa: S608
                f"purged = %s WHERE id = %s RETURNING {RUN_COLUMNS}",  # a constant column list
                ("failed" if error else "succeeded", error, Jsonb(self.purged), self.id),
            )
            row = await cur.fetchone()
            assert row is not None
            await audit.record(
                conn, self.actor, "retention.purge", "retention_run", self.id, None, _view(row), self.source
            )
        return dict(row)

    async def _finish_failed(self, error: str) -> dict[str, Any]:
        """Record the failure on the run's connection, else on a new one (the run's may be broken)."""
        try:
            return await self._finish(self.conn, error)
        except (psycopg.Error, OSError):
            log.warning("recording retention run %d's failure on its connection failed; retrying", self.id)
        try:
            async with await _connect(self.conninfo) as conn:
                return await self._finish(conn, error)
        except (psycopg.Error, OSError):
            log.exception("retention run %d failed and its failure cannot be recorded now", self.id)
            return {**self.row, "status": "failed", "error": error, "purged": self.purged}

    async def execute(self) -> dict[str, Any]:
        """Purge batch by batch, then record how the run ended; returns the run's row. Releases the
        lock (closes the connection) in every case."""
        try:
            for step, query in STEPS:
                while True:
                    counts = await self._batch(query)
                    if counts[step] < self.settings.batch_size:
                        break
                    if self.settings.pause_s:
                        await asyncio.sleep(self.settings.pause_s)
            self.row = await self._finish(self.conn, None)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._finish_failed(INTERRUPTED))
            raise
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if isinstance(exc, psycopg.Error | OSError):  # the database refused or went away
                log.warning("retention run %d failed: %s; the next run tries again", self.id, message)
            else:
                log.exception("retention run %d failed; the next run tries again", self.id)
            self.row = await self._finish_failed(f"{type(exc).__name__}: {message}")
        finally:
            await self.conn.close()
        if self.metrics is not None:
            self.metrics.runs.labels(self.row["status"]).inc()
            if self.row["status"] == "succeeded":
                self.metrics.set_last_success(self.row["finished_at"])
        level = logging.INFO if self.row["status"] == "succeeded" else logging.WARNING
        log.log(
            level,
            "retention run %d %s: cutoff %s, ticket cutoff %s, purged %s",
            self.id,
            self.row["status"],
            self.row["cutoff"].isoformat(),
            self.row["ticket_cutoff"].isoformat(),
            ", ".join(f"{k} {v}" for k, v in self.purged.items()),
        )
        return self.row


async def start_run(
    conninfo: str,
    settings: RetentionSettings,
    *,
    trigger: Trigger = "schedule",
    actor: Principal | str = ACTOR,
    source: str = "",
    due_after_s: float | None = None,
    metrics: RetentionMetrics | None = None,
    host: str | None = None,
) -> Run | None:
    """Take the purge lock on a connection of the run's own and record the run as started (for a
    manual run, with an audit entry of who asked). Raises RetentionBusy while another run holds the
    lock. With `due_after_s`, returns None when a run started less than that many seconds ago."""
    conn = await _connect(conninfo)
    try:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", (LOCK_KEY,))
        locked = await cur.fetchone()
        if not (locked and locked["locked"]):
            raise RetentionBusy("a retention run is in progress; try again when it has finished")
        row = None
        async with conn.transaction():
            # Holding the lock, no run is alive: one still 'running' was left by a process that died.
            await conn.execute(
                "UPDATE aicc.retention_runs SET status = 'failed', finished_at = now(), error = %s "
                "WHERE status = 'running'",
                (INTERRUPTED,),
            )
            recent = None
            if due_after_s is not None:
                cur = await conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM aicc.retention_runs WHERE started_at > now() - "
                    "make_interval(secs => %s)) AS recent",
                    (due_after_s,),
                )
                recent = await cur.fetchone()
            if not (recent and recent["recent"]):
                cur = await conn.execute(
                    "INSERT INTO aicc.retention_runs (trigger, actor, host, transcript_days, cutoff, "  # noqa: S608
                    "ticket_days, ticket_cutoff) VALUES (%s, %s, %s, %s, now() - make_interval(days => %s), "
                    f"%s, now() - make_interval(days => %s)) RETURNING {RUN_COLUMNS}",  # constant columns
                    (
                        trigger,
                        actor.username if isinstance(actor, Principal) else actor,
                        host if host is not None else socket.gethostname(),
                        settings.transcript_days,
                        settings.transcript_days,
                        settings.ticket_days,
                        settings.ticket_days,
                    ),
                )
                row = await cur.fetchone()
                assert row is not None
                if trigger == "manual":
                    await audit.record(
                        conn, actor, "retention.run", "retention_run", row["id"], None, _view(row), source
                    )
    except BaseException:
        await conn.close()
        raise
    if row is None:  # not due: the lock goes with the connection
        await conn.close()
        return None
    return Run(conn, conninfo, dict(row), settings, metrics, actor, source)


@dataclass
class PassResult:
    skipped: Literal["", "busy", "not_due"] = ""
    run: dict[str, Any] | None = None  # the run's row as it ended
    last_success: dt.datetime | None = None
    purged: dict[str, int] = field(default_factory=dict)


async def purge_once(
    conninfo: str,
    settings: RetentionSettings,
    *,
    metrics: RetentionMetrics | None = None,
    due_after_s: float | None = None,
    host: str | None = None,
) -> PassResult:
    """One scheduled pass: a run unless another holds the lock (or, with `due_after_s`, one started
    recently), then the site's last success read back for the gauge."""
    result = PassResult()
    try:
        run = await start_run(
            conninfo, settings, due_after_s=due_after_s, metrics=metrics, host=host, trigger="schedule"
        )
    except RetentionBusy:
        result.skipped = "busy"
    else:
        if run is None:
            result.skipped = "not_due"
        else:
            result.run = await run.execute()
            result.purged = dict(run.purged)
    async with await _connect(conninfo) as conn:
        result.last_success = await last_success(conn)
    if metrics is not None:
        metrics.set_last_success(result.last_success)
    return result


async def last_success(conn: AsyncConnection[DictRow]) -> dt.datetime | None:
    """When the site's last successful run finished; before the first, when retention was installed
    (the migration creating aicc.retention_runs), so a new site is not overdue at once."""
    cur = await conn.execute(
        "SELECT coalesce((SELECT max(finished_at) FROM aicc.retention_runs WHERE status = 'succeeded'), "
        "(SELECT applied_at FROM aicc.schema_migrations WHERE component = 'retention' AND version = 1)) "
        "AS at"
    )
    row = await cur.fetchone()
    return row["at"] if row else None


async def recent_runs(conn: AsyncConnection[DictRow], limit: int = 20) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {RUN_COLUMNS} FROM aicc.retention_runs ORDER BY id DESC LIMIT %s",  # noqa: S608
        (limit,),
    )
    return [dict(r) for r in await cur.fetchall()]


class RetentionService:
    """The API process's purge: the scheduled pass every `interval_s` (0: none in this process) and
    runs an admin starts through the API, in the background of this process.

    A scheduled pass runs only when no run of the site started within the last 95 % of an interval,
    so several API hosts on the same interval purge about once per interval in all. The first pass
    comes FIRST_PASS_S after the start (then due only if no host purged lately); the gauge of the
    last success is read at the start already."""

    def __init__(
        self,
        pool_of: Callable[[], AsyncConnectionPool[Any] | None],
        settings: RetentionSettings,
        interval_s: float,
        metrics: RetentionMetrics | None = None,
    ) -> None:
        self._pool_of = pool_of  # () -> the API's pool or None (it opens in the lifespan)
        self.settings = settings
        self.interval_s = interval_s
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[dict[str, Any]]] = set()

    def _conninfo(self) -> str:
        pool = self._pool_of()
        if pool is None:
            raise psycopg.OperationalError("the API's database pool is not open yet")
        return str(pool.conninfo)

    async def start(self) -> None:
        if self.interval_s:
            self._task = asyncio.create_task(self._watch(), name="retention")

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._runs) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        self._runs.clear()

    async def wait(self) -> None:
        """Until the runs started through the API have ended (tests, shutdown)."""
        while self._runs:
            await asyncio.gather(*self._runs, return_exceptions=True)

    async def run_now(self, principal: Principal, source: str) -> dict[str, Any]:
        """Start a run now, in the background; returns its row as started. RetentionBusy while another
        run holds the lock."""
        run = await start_run(
            self._conninfo(),
            self.settings,
            trigger="manual",
            actor=principal,
            source=source,
            metrics=self.metrics,
        )
        assert run is not None  # no due check for a manual run
        task = asyncio.create_task(run.execute(), name=f"retention-run-{run.id}")
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)
        return dict(run.row)

    async def refresh(self) -> None:
        async with await _connect(self._conninfo()) as conn:
            at = await last_success(conn)
        if self.metrics is not None:
            self.metrics.set_last_success(at)

    async def _watch(self) -> None:
        with contextlib.suppress(psycopg.Error, OSError):
            await self.refresh()
        # The first pass soon after the start: a new site has evidence of a purge (AICC-DATA-02)
        # within minutes; the due check keeps restarts from purging more often than every interval.
        delay = min(self.interval_s, FIRST_PASS_S)
        while True:
            await asyncio.sleep(delay)
            delay = self.interval_s
            try:
                await purge_once(
                    self._conninfo(),
                    self.settings,
                    metrics=self.metrics,
                    due_after_s=self.interval_s * 0.95,
                )
            except psycopg.OperationalError as exc:
                log.warning("retention pass skipped, the database is unavailable: %s", exc)
            except Exception:
                log.exception("retention pass failed; the next one runs in %g s", self.interval_s)
