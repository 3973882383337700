"""The retention purge (appliance/retention/purge.py) on a real PostgreSQL of its own: what a run
deletes, scrubs and keeps (calls, chats, finished tickets with their SLA figures unchanged, idle
customers), bounded batches that skip rows a writer holds, the runs recorded (with the audit log and the
API's metrics), a second host kept out by the lock, a failed or interrupted run recorded with its error,
the scheduled pass, the API routes, and the settings from aicc.yml to app.yml's model."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any, LiteralString

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from aicc.appliance.api.config import AppConfig
from aicc.appliance.calls.record import CallRecord, Line, ToolCallRecord
from aicc.appliance.calls.store import CallStore
from aicc.appliance.conversations import store as conversations
from aicc.appliance.retention import purge
from aicc.appliance.retention.purge import (
    INTERRUPTED,
    KINDS,
    LOCK_KEY,
    RetentionBusy,
    RetentionMetrics,
    RetentionService,
    RetentionSettings,
    purge_once,
    start_run,
)
from aicc.appliance.tickets import store as tickets
from aicc.appliance.tickets.sla import compute
from aicc.installer.settings import SiteSettings, settings_to_ansible_vars
from tests.unit.api_support import (
    Api,
    ApiDatabase,
    ApiUser,
    api_db_fixture,  # noqa: F401
    audit_since,
    fresh_database,
    last_audit_id,
    make_user,
    open_api,
)

OLD = dt.timedelta(days=200)  # past the default 180 days
FRESH = dt.timedelta(days=10)
CALLER = "13800138000"


@pytest.fixture(scope="module")
def db(api_db: ApiDatabase) -> ApiDatabase:
    """A database of its own: a run purges every old row in it, and other tests' data stays out."""
    return fresh_database(api_db, "retention")


@pytest.fixture(scope="module")
def people(db: ApiDatabase) -> dict[str, ApiUser]:
    return {role: make_user(db, role, username=f"ret-{role}") for role in ("agent", "admin", "auditor")}


@pytest.fixture(autouse=True)
def _empty(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts without calls, chats or runs."""
    if "db" in request.fixturenames:
        db: ApiDatabase = request.getfixturevalue("db")
        with psycopg.connect(db.dsn) as conn:
            conn.execute("DELETE FROM aicc.calls")  # their lines, tool calls and turns cascade
            conn.execute("DELETE FROM aicc.conversation_messages")
            conn.execute("DELETE FROM aicc.conversations")
            conn.execute("DELETE FROM aicc.customers")
            conn.execute("DELETE FROM aicc.retention_runs")
    yield


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def add_call(db: ApiDatabase, call_id: str, age: dt.timedelta, *, lines: int = 3, tools: int = 1) -> None:
    started = now() - age
    with psycopg.connect(db.dsn) as conn:
        conn.execute(
            "INSERT INTO aicc.calls (call_id, caller, service, language, started_at, answered_at, ended_at, "
            "outcome, end_reason, queue, agent, summary, bot) VALUES (%s, %s, 'voicebot', 'zh', %s, %s, %s, "
            "'transferred', 'caller_hangup', 'sales', '1001', %s, 'retail')",
            (
                call_id,
                CALLER,
                started,
                started + dt.timedelta(seconds=1),
                started + dt.timedelta(seconds=95),
                "caller wants a refund of order 100234",
            ),
        )
        for seq in range(lines):
            conn.execute(
                "INSERT INTO aicc.call_lines (call_id, seq, speaker, text, at_s) VALUES (%s, %s, %s, %s, %s)",
                (call_id, seq, "caller" if seq % 2 else "bot", f"my card 6222 0000 {seq}", seq * 2.0),
            )
        for seq in range(tools):
            conn.execute(
                "INSERT INTO aicc.call_tool_calls (call_id, seq, tool, arguments, ok, result, seconds, at_s) "
                "VALUES (%s, %s, 'order_status', %s, true, %s, 0.2, 3.0)",
                (call_id, seq, Jsonb({"order": "100234"}), Jsonb({"name": "张三"})),
            )
        for turn in range(2):
            conn.execute(
                "INSERT INTO aicc.call_turns (call_id, turn, stages) VALUES (%s, %s, %s)",
                (call_id, turn, Jsonb({"asr_s": 0.3, "llm_s": 0.8})),
            )


def add_chat(db: ApiDatabase, ages: list[dt.timedelta], summary: str = "wants to change the address") -> str:
    """A web-chat conversation with one message per age (oldest first); returns its id."""
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute("INSERT INTO aicc.customers (name) VALUES ('Visitor') RETURNING id").fetchone()
        assert row is not None
        created = now() - max(ages)
        conv = conn.execute(
            "INSERT INTO aicc.conversations (customer_id, channel, summary, created_at, last_message_at) "
            "VALUES (%s, 'webchat', %s, %s, %s) RETURNING id",
            (row[0], summary, created, now() - min(ages)),
        ).fetchone()
        assert conv is not None
        for seq, age in enumerate(sorted(ages, reverse=True), 1):
            conn.execute(
                "INSERT INTO aicc.conversation_messages (conversation_id, seq, direction, author, body, "
                "created_at) VALUES (%s, %s, 'in', 'customer', %s, %s)",
                (conv[0], seq, f"my phone is {CALLER}, message {seq}", now() - age),
            )
    return str(conv[0])


def one(db: ApiDatabase, query: LiteralString, *params: Any) -> Any:
    with psycopg.connect(db.dsn, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchone()


def count(db: ApiDatabase, query: LiteralString, *params: Any) -> int:
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def runs(db: ApiDatabase) -> list[dict[str, Any]]:
    with psycopg.connect(db.dsn, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM aicc.retention_runs ORDER BY id").fetchall()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# --- what a run purges and keeps ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_run_purges_what_is_past_the_retention_and_keeps_the_rest(
    db: ApiDatabase, people: dict[str, ApiUser]
) -> None:
    add_call(db, "old-call", OLD, lines=4, tools=2)
    add_call(db, "fresh-call", FRESH)
    mixed = add_chat(db, [OLD, OLD + dt.timedelta(hours=1), dt.timedelta(days=1)])
    idle = add_chat(db, [OLD], summary="asked for a human about a lost card")
    recent = add_chat(db, [FRESH], summary="asked about opening hours")
    before_audit = last_audit_id(db)
    registry = CollectorRegistry()
    metrics = RetentionMetrics(registry)
    assert sample(registry, "aicc_retention_last_success_timestamp_seconds") is None  # not read yet

    result = await purge_once(db.dsn, RetentionSettings(), metrics=metrics, host="app1")

    # The old call keeps its figures and loses the transcript, the tool calls, the number and summary.
    old = one(db, "SELECT * FROM aicc.calls WHERE call_id = 'old-call'")
    assert (old["caller"], old["summary"]) == ("", "")
    assert old["purged_at"] is not None
    kept = ("transferred", "sales", "1001", "retail")
    assert (old["outcome"], old["queue"], old["agent"], old["bot"]) == kept
    assert old["ended_at"] - old["started_at"] == dt.timedelta(seconds=95)
    assert count(db, "SELECT count(*) FROM aicc.call_lines WHERE call_id = 'old-call'") == 0
    assert count(db, "SELECT count(*) FROM aicc.call_tool_calls WHERE call_id = 'old-call'") == 0
    assert count(db, "SELECT count(*) FROM aicc.call_turns WHERE call_id = 'old-call'") == 2  # latencies
    # The fresh call is untouched.
    fresh = one(db, "SELECT * FROM aicc.calls WHERE call_id = 'fresh-call'")
    assert (fresh["caller"], fresh["purged_at"]) == (CALLER, None)
    assert fresh["summary"].startswith("caller wants")
    assert count(db, "SELECT count(*) FROM aicc.call_lines WHERE call_id = 'fresh-call'") == 3
    assert count(db, "SELECT count(*) FROM aicc.call_tool_calls WHERE call_id = 'fresh-call'") == 1
    # Chats: old messages go, the day-old one stays (with its number); an idle conversation loses the
    # bot's summary, a recent one keeps it.
    messages = "SELECT count(*) FROM aicc.conversation_messages WHERE conversation_id = %s"
    assert count(db, messages, mixed) == 1
    assert one(db, "SELECT seq FROM aicc.conversation_messages WHERE conversation_id = %s", mixed)["seq"] == 3
    assert count(db, messages, idle) == 0
    assert one(db, "SELECT summary FROM aicc.conversations WHERE id = %s", idle)["summary"] == ""
    assert one(db, "SELECT summary FROM aicc.conversations WHERE id = %s", recent)["summary"] != ""
    assert count(db, messages, recent) == 1

    # The run as recorded: exact counts, the period and cutoff, the host, success.
    [run] = runs(db)
    assert result.run is not None and result.run["id"] == run["id"] and result.skipped == ""
    assert run["status"] == "succeeded" and run["error"] is None
    assert (run["trigger"], run["actor"], run["host"], run["transcript_days"], run["ticket_days"]) == (
        "schedule",
        "retention",
        "app1",
        180,
        1095,
    )
    expected = {
        **dict.fromkeys(KINDS, 0),
        "calls": 1,
        "call_lines": 4,
        "call_tool_calls": 2,
        "chat_messages": 3,
        "chat_summaries": 1,
    }
    assert run["purged"] == expected
    assert abs(run["cutoff"] - (run["started_at"] - dt.timedelta(days=180))) < dt.timedelta(seconds=1)
    assert abs(run["ticket_cutoff"] - (run["started_at"] - dt.timedelta(days=1095))) < dt.timedelta(seconds=1)
    assert run["started_at"] <= run["finished_at"]
    # One audit entry for the run, with what it purged.
    [entry] = audit_since(db, before_audit)
    assert (entry["actor"], entry["action"], entry["target_type"], entry["target_id"]) == (
        "retention",
        "retention.purge",
        "retention_run",
        str(run["id"]),
    )
    assert entry["after"]["purged"] == expected and entry["after"]["status"] == "succeeded"
    # Metrics on the registry.
    for kind, n in expected.items():
        assert sample(registry, "aicc_retention_purged_total", kind=kind) == n
    assert sample(registry, "aicc_retention_runs_total", status="succeeded") == 1
    assert sample(registry, "aicc_retention_last_success_timestamp_seconds") == pytest.approx(
        run["finished_at"].timestamp()
    )

    # The API still serves the purged call: its figures, an empty transcript, no tool calls.
    async with open_api(db, people) as api:
        r = await api.client.get("/api/calls/old-call", headers=api.auth("admin"))
        assert r.status_code == 200, r.text
        assert r.json()["duration_s"] == 95 and r.json()["caller"] == "" and r.json()["tool_calls"] == []
        assert len(r.json()["turns"]) == 2
        r = await api.client.get("/api/calls/old-call/transcript", headers=api.auth("admin"))
        assert r.json() == []

    # A second run finds nothing more to purge.
    again = await purge_once(db.dsn, RetentionSettings(), metrics=metrics)
    assert again.run is not None and again.run["purged"] == dict.fromkeys(KINDS, 0)
    assert sample(registry, "aicc_retention_purged_total", kind="call_lines") == 4


@pytest.mark.asyncio
async def test_the_period_is_the_settings(db: ApiDatabase) -> None:
    add_call(db, "40-days", dt.timedelta(days=40))
    add_call(db, "20-days", dt.timedelta(days=20))
    add_chat(db, [dt.timedelta(days=40), dt.timedelta(days=20)])
    await purge_once(db.dsn, RetentionSettings(transcript_days=30))
    purged = {r["call_id"] for r in _rows(db, "SELECT call_id FROM aicc.calls WHERE purged_at IS NOT NULL")}
    assert purged == {"40-days"}
    assert count(db, "SELECT count(*) FROM aicc.conversation_messages") == 1
    assert runs(db)[0]["transcript_days"] == 30
    with pytest.raises(ValueError, match="at least 1"):
        RetentionSettings(transcript_days=0)


def _rows(db: ApiDatabase, query: LiteralString) -> list[dict[str, Any]]:
    with psycopg.connect(db.dsn, row_factory=dict_row) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.asyncio
async def test_a_purged_call_stays_purged_when_a_gateway_replays_its_old_record(db: ApiDatabase) -> None:
    add_call(db, "old", OLD)
    await purge_once(db.dsn, RetentionSettings())
    # The gateway's spool still held the call (the database was away): a full save writes it again.
    rec = CallRecord(
        call_id="old", caller=CALLER, service="voicebot", started_at=now() - OLD, summary="refund 100234"
    )
    rec.outcome = "resolved"
    rec.lines = [Line("caller", "my card is 6222 0000", 1.0)]
    rec.tool_calls = [ToolCallRecord("order_status", {"order": "100234"}, True, {}, "", 0.1, 2.0)]
    rec.turns = [{"asr_s": 0.2}]
    async with AsyncConnectionPool(db.dsn, min_size=1, max_size=1, open=False) as pool:
        await CallStore(pool).save(rec)
    row = one(db, "SELECT caller, summary, outcome, purged_at FROM aicc.calls WHERE call_id = 'old'")
    assert (row["caller"], row["summary"], row["outcome"]) == ("", "", "resolved")
    assert row["purged_at"] is not None
    assert count(db, "SELECT count(*) FROM aicc.call_lines WHERE call_id = 'old'") == 0
    assert count(db, "SELECT count(*) FROM aicc.call_tool_calls WHERE call_id = 'old'") == 0
    # A call that is not purged is written as always.
    add_call(db, "fresh", FRESH, lines=1)
    rec.call_id = "fresh"
    async with AsyncConnectionPool(db.dsn, min_size=1, max_size=1, open=False) as pool:
        await CallStore(pool).save(rec)
    assert count(db, "SELECT count(*) FROM aicc.call_tool_calls WHERE call_id = 'fresh'") == 1
    assert one(db, "SELECT summary FROM aicc.calls WHERE call_id = 'fresh'")["summary"] == "refund 100234"


# --- tickets and customers ----------------------------------------------------------------------------

LONG_AGO = dt.timedelta(days=4 * 365)  # past the default 3 years of tickets


async def _ticket(api: Api, subject: str, phone: str, *steps: tuple[str, str, dict[str, Any]]) -> str:
    """A ticket created through the API with the customer's data everywhere, then worked by `steps`
    (method, path under the ticket, body); returns its number."""
    agent = api.auth("agent")
    r = await api.client.post(
        "/api/tickets",
        json={
            "subject": subject,
            "description": f"张三 ({phone}) asks for a refund to card 6222 0000 1234 5678",
            "priority": "high",
            "group": "billing",
            "source": "call",
            "call_id": f"call-{subject}",
            "customer": {"name": "张三", "phone": phone, "email": "zhang.san@example.com"},
        },
        headers=agent,
    )
    assert r.status_code == 201, r.text
    number: str = r.json()["number"]
    for method, path, body in steps:
        r = await api.client.request(method, f"/api/tickets/{number}{path}", json=body, headers=agent)
        assert r.status_code in (200, 201), (path, r.text)
    return number


WORKED_TO_CLOSED: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("POST", "/comments", {"body": "张三, we are looking at the refund"}),  # first response
    ("POST", "/comments", {"body": "card 6222 0000 1234 5678 verified", "visibility": "internal"}),
    ("POST", "/comments", {"body": "my new number is 13900000000", "author": "customer"}),
    ("POST", "/comments", {"body": "refund sent to 6222 0000 1234 5678"}),  # next response
    ("PATCH", "", {"status": "resolved"}),
    ("POST", "/confirm", {"note": "张三 confirmed on 13900000000"}),
    ("PATCH", "", {"status": "closed"}),
)


def _backdate(db: ApiDatabase, number: str, age: dt.timedelta) -> None:
    """The ticket's last change `age` ago (its events keep their times: the log is append-only)."""
    with psycopg.connect(db.dsn) as conn:
        conn.execute("UPDATE aicc.tickets SET updated_at = now() - %s WHERE number = %s", (age, number))


def _history(db: ApiDatabase, number: str) -> list[dict[str, Any]]:
    with psycopg.connect(db.dsn, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT e.id, e.at, e.kind, e.actor_id, e.actor, e.data FROM aicc.ticket_events e "
            "JOIN aicc.tickets t ON t.id = e.ticket_id WHERE t.number = %s ORDER BY e.at, e.id",
            (number,),
        ).fetchall()


def _without_texts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "data": {k: v for k, v in e["data"].items() if k not in ("body", "note")}} for e in events]


async def _sla_report(db: ApiDatabase, number: str, at: dt.datetime) -> dict[str, Any]:
    """The ticket's SLA figures as the tickets API computes them (store + sla.compute), at `at`."""
    async with await psycopg.AsyncConnection.connect(db.dsn, row_factory=dict_row) as conn:
        row = await tickets.get(conn, number)
        assert row is not None
        policy = await tickets.get_policy(conn, row["sla_policy"])
        assert policy is not None
        events = (await tickets.events(conn, [row["id"]]))[row["id"]]
    return compute(policy, tickets.sla_events(events), at).model_dump(mode="json")


@pytest.mark.asyncio
async def test_finished_tickets_past_their_retention_lose_the_customers_data_and_keep_their_figures(
    db: ApiDatabase, people: dict[str, ApiUser]
) -> None:
    async with open_api(db, people) as api:
        closed = await _ticket(api, "张三 wants a refund", "13900139001", *WORKED_TO_CLOSED)
        resolved = await _ticket(
            api, "refund for 13900139001", "13900139001", ("PATCH", "", {"status": "resolved"})
        )
        still_open = await _ticket(
            api, "张三 asks again", "13900139001", ("POST", "/comments", {"body": "on it"})
        )
        recent = await _ticket(api, "张三 recent", "13900139001", *WORKED_TO_CLOSED)
        for number in (closed, resolved, still_open):
            _backdate(db, number, LONG_AGO)
        _backdate(db, recent, dt.timedelta(days=1000))  # closed, but within the 3 years
        with psycopg.connect(db.dsn) as conn:  # an SLA notification quoting the subject
            conn.execute(
                "INSERT INTO aicc.notifications (user_id, kind, ticket, data) "
                "VALUES (%s, 'sla_warning', %s, %s)",
                (people["agent"].id, closed, Jsonb({"number": closed, "subject": "张三 wants a refund"})),
            )
        before = {n: _history(db, n) for n in (closed, resolved, still_open, recent)}
        rows_before = {n: one(db, "SELECT * FROM aicc.tickets WHERE number = %s", n) for n in before}
        at = now()
        report_before = {n: await _sla_report(db, n, at) for n in before}
        r = await api.client.get(f"/api/tickets/{closed}", headers=api.auth("admin"))
        api_sla_before = r.json()["sla"]

        result = await purge_once(db.dsn, RetentionSettings())

        assert result.run is not None and result.run["status"] == "succeeded"
        # The closed ticket and the resolved one left so: scrubbed. Texts: 4 comments + 1 confirmation.
        assert (result.run["purged"]["tickets"], result.run["purged"]["ticket_texts"]) == (2, 5)
        for number in (closed, resolved):
            row = one(db, "SELECT * FROM aicc.tickets WHERE number = %s", number)
            assert (row["subject"], row["description"], row["customer"]) == ("(purged)", "", {})
            assert row["purged_at"] is not None
            kept = ("number", "status", "priority", "group", "type", "source", "call_id", "created_at")
            assert {k: row[k] for k in kept} == {k: rows_before[number][k] for k in kept}
            after = _history(db, number)
            # Every event is still there with its time, kind, author and visibility; only texts went.
            assert _without_texts(after) == _without_texts(before[number])
            for event in after:
                assert event["data"].get("body", "") == "" and event["data"].get("note", "") == ""
            # The SLA figures are those from before, to the minute.
            assert await _sla_report(db, number, at) == report_before[number]
        assert [e["kind"] for e in before[closed]].count("commented") == 4
        r = await api.client.get(f"/api/tickets/{closed}", headers=api.auth("admin"))
        assert r.status_code == 200 and r.json()["sla"] == api_sla_before
        assert r.json()["purged_at"] is not None and r.json()["customer"] == {}
        notice = one(db, "SELECT data FROM aicc.notifications WHERE ticket = %s", closed)["data"]
        assert notice == {"number": closed, "subject": "(purged)"}
        # An open ticket, however old, and a recently closed one are untouched.
        for number in (still_open, recent):
            row = one(db, "SELECT * FROM aicc.tickets WHERE number = %s", number)
            assert row == rows_before[number] and row["purged_at"] is None
            assert _history(db, number) == before[number]
            assert await _sla_report(db, number, at) == report_before[number]

        # A purged ticket is final through the API ...
        for method, path, body in (
            ("PATCH", "", {"status": "open"}),
            ("POST", "/comments", {"body": "张三 calls again", "author": "customer"}),
            ("POST", "/confirm", {"note": "again"}),
        ):
            r = await api.client.request(
                method, f"/api/tickets/{resolved}{path}", json=body, headers=api.auth("agent")
            )
            assert r.status_code == 409 and "purged" in r.json()["error"]["message"], (method, path)
    # ... and stays purged whatever writes it again.
    with psycopg.connect(db.dsn) as conn:
        conn.execute(
            "UPDATE aicc.tickets SET subject = 'back', description = 'again', purged_at = NULL, "
            "customer = %s WHERE number = %s",
            (Jsonb({"phone": "+8613900139001"}), closed),
        )
        conn.execute(
            "INSERT INTO aicc.ticket_events (ticket_id, kind, actor, data) SELECT id, 'commented', 'x', %s "
            "FROM aicc.tickets WHERE number = %s",
            (Jsonb({"body": "张三 13900139001", "visibility": "public", "author": "agent"}), closed),
        )
    row = one(db, "SELECT * FROM aicc.tickets WHERE number = %s", closed)
    assert (row["subject"], row["description"], row["customer"]) == ("(purged)", "", {})
    assert row["purged_at"] is not None
    assert _history(db, closed)[-1]["data"] == {"body": "", "visibility": "public", "author": "agent"}
    # The event log is still append-only for everything but blanking a finished ticket's texts.
    events: LiteralString = "FROM aicc.tickets t WHERE t.id = e.ticket_id AND t.number = %s"
    blank: LiteralString = 'UPDATE aicc.ticket_events e SET data = e.data || \'{"body": ""}\' '
    with psycopg.connect(db.dsn) as conn:
        for number, statement in (
            (closed, "UPDATE aicc.ticket_events e SET at = e.at - interval '1 day' " + events),
            (still_open, blank + events),  # texts of a ticket not finished
            (closed, 'UPDATE aicc.ticket_events e SET data = e.data || \'{"author": "bot"}\' ' + events),
            (
                closed,
                "DELETE FROM aicc.ticket_events e USING aicc.tickets t WHERE t.id = e.ticket_id AND "
                "t.number = %s",
            ),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(statement, (number,))
    # The next run finds nothing more.
    again = await purge_once(db.dsn, RetentionSettings())
    assert again.run is not None
    assert (again.run["purged"]["tickets"], again.run["purged"]["ticket_texts"]) == (0, 0)
    # The open one goes too once it is closed and as old (here: a shorter retention).
    with psycopg.connect(db.dsn) as conn:
        conn.execute("UPDATE aicc.tickets SET status = 'closed' WHERE number = %s", (still_open,))
    _backdate(db, still_open, dt.timedelta(days=40))
    _backdate(db, recent, dt.timedelta(days=1))
    last = await purge_once(db.dsn, RetentionSettings(transcript_days=30, ticket_days=30))
    assert last.run is not None and last.run["ticket_days"] == 30
    assert (last.run["purged"]["tickets"], last.run["purged"]["ticket_texts"]) == (1, 1)
    assert one(db, "SELECT purged_at FROM aicc.tickets WHERE number = %s", recent)["purged_at"] is None


def _customer(
    db: ApiDatabase, name: str, age: dt.timedelta, identities: list[tuple[str, str]], *, talked: dt.timedelta
) -> str:
    """A customer created `age` ago with these identities and one web chat last written in `talked`
    ago; returns its id."""
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute(
            "INSERT INTO aicc.customers (name, created_at) VALUES (%s, now() - %s) RETURNING id", (name, age)
        ).fetchone()
        assert row is not None
        for kind, value in identities:
            conn.execute(
                "INSERT INTO aicc.customer_identities (customer_id, kind, value) VALUES (%s, %s, %s)",
                (row[0], kind, value),
            )
        conn.execute(
            "INSERT INTO aicc.conversations (customer_id, channel, created_at, updated_at, last_message_at) "
            "VALUES (%s, 'webchat', now() - %s, now() - %s, now() - %s)",
            (row[0], age, talked, talked),
        )
    return str(row[0])


def _identities(db: ApiDatabase, customer: str) -> list[str]:
    rows = _rows_with(
        db, "SELECT value FROM aicc.customer_identities WHERE customer_id = %s ORDER BY value", customer
    )
    return [r["value"] for r in rows]


def _rows_with(db: ApiDatabase, query: LiteralString, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(db.dsn, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


@pytest.mark.asyncio
async def test_customers_idle_past_the_retention_lose_name_and_identities(db: ApiDatabase) -> None:
    idle = _customer(db, "王五", OLD, [("phone", "+8613900139010"), ("webchat", "digest-1")], talked=OLD)
    called = _customer(db, "赵六", OLD, [("phone", "+8613900139011")], talked=OLD)
    with psycopg.connect(db.dsn) as conn:  # a call from 赵六's number, as the trunk gives it
        conn.execute(
            "INSERT INTO aicc.calls (call_id, caller, service, started_at, outcome) VALUES "
            "('zhao-recent', '13900139011', 'voicebot', now() - interval '3 days', 'resolved')"
        )
    ticketed = _customer(db, "钱七", OLD, [("phone", "+8613900139012")], talked=OLD)
    with psycopg.connect(db.dsn) as conn:  # an open ticket with their number (typed as the agent did)
        conn.execute(
            "INSERT INTO aicc.tickets (subject, source, sla_policy, created_by, customer, updated_at) "
            "VALUES ('钱七', 'agent', 'default', 'test', %s, now() - interval '300 days')",
            (Jsonb({"phone": "13900139012"}),),
        )
    linked = _customer(db, "吴十", OLD, [("webchat", "digest-4")], talked=OLD)
    with psycopg.connect(db.dsn) as conn:  # a ticket from their chat, resolved last week
        conn.execute(
            "INSERT INTO aicc.tickets (subject, source, sla_policy, created_by, status, conversation_id, "
            "updated_at) SELECT '吴十', 'chat', 'default', 'test', 'resolved', id, now() - interval '7 days' "
            "FROM aicc.conversations WHERE customer_id = %s",
            (linked,),
        )
    chatting = _customer(db, "孙八", OLD, [("webchat", "digest-2")], talked=dt.timedelta(days=2))
    new = _customer(db, "周九", dt.timedelta(days=5), [("webchat", "digest-3")], talked=dt.timedelta(days=5))

    result = await purge_once(db.dsn, RetentionSettings())

    assert result.run is not None
    assert (result.run["purged"]["customers"], result.run["purged"]["customer_identities"]) == (1, 2)
    row = one(db, "SELECT name, purged_at FROM aicc.customers WHERE id = %s", idle)
    assert row["name"] == "" and row["purged_at"] is not None and _identities(db, idle) == []
    # The row stays for its conversation, which no channel finds any more.
    assert count(db, "SELECT count(*) FROM aicc.conversations WHERE customer_id = %s", idle) == 1
    async with await psycopg.AsyncConnection.connect(db.dsn, row_factory=dict_row) as conn:
        assert await conversations.customer_by_identity(conn, "webchat", "digest-1") is None
    # A recent call from their number, an open ticket of theirs, a recent chat, a new customer: kept.
    for customer, name, values in (
        (called, "赵六", ["+8613900139011"]),
        (ticketed, "钱七", ["+8613900139012"]),
        (linked, "吴十", ["digest-4"]),
        (chatting, "孙八", ["digest-2"]),
        (new, "周九", ["digest-3"]),
    ):
        row = one(db, "SELECT name, purged_at FROM aicc.customers WHERE id = %s", customer)
        assert (row["name"], row["purged_at"], _identities(db, customer)) == (name, None, values)

    # Personal data written to a purged customer again has its own lifetime: the next run that finds
    # the customer idle purges it again.
    with psycopg.connect(db.dsn) as conn:
        conn.execute(
            "INSERT INTO aicc.customer_identities (customer_id, kind, value) VALUES (%s, 'email', 'w@x.cn')",
            (idle,),
        )
    assert one(db, "SELECT purged_at FROM aicc.customers WHERE id = %s", idle)["purged_at"] is None
    again = await purge_once(db.dsn, RetentionSettings())
    assert again.run is not None
    assert (again.run["purged"]["customers"], again.run["purged"]["customer_identities"]) == (1, 1)
    assert _identities(db, idle) == []


@pytest.mark.parametrize("phone", ["+8613800138000", "+862161234567", "+14155550123", "+8675512345678"])
def test_the_databases_number_forms_are_the_histories(db: ApiDatabase, phone: str) -> None:
    """The purge finds a customer's calls by the forms the customer's history joins them by."""
    forms = one(db, "SELECT aicc.number_forms(%s) AS forms", phone)["forms"]
    assert sorted(forms) == conversations.number_forms(phone)


# --- batches ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_channel_records_naming_customers_go_with_the_retention(db: ApiDatabase) -> None:
    """The ledgers (who wrote, by platform id or address), dead letters and conversations' links to a
    platform id: old ones go, recent ones stay."""
    old_chat, new_chat = add_chat(db, [OLD]), add_chat(db, [dt.timedelta(days=1)])
    with psycopg.connect(db.dsn) as conn:
        conn.execute("UPDATE aicc.conversations SET updated_at = created_at WHERE id = %s", (old_chat,))
        for cid, age in ((old_chat, OLD), (new_chat, dt.timedelta(days=1))):
            at = now() - age
            conn.execute(
                "INSERT INTO aicc.email_conversations (conversation_id, address, subject) "
                "VALUES (%s, 'li.lei@example.test', '订单 100234')",
                (cid,),
            )
            conn.execute(
                "INSERT INTO aicc.wecom_conversations (conversation_id, open_kfid, external_userid) "
                "VALUES (%s, 'wk1', 'wm-customer')",
                (cid,),
            )
            conn.execute(
                "INSERT INTO aicc.email_messages (direction, msgid, address, conversation_id, status, "
                "created_at) VALUES ('in', %s, 'li.lei@example.test', %s, 'stored', %s)",
                (f"<{cid}@example.test>", cid, at),
            )
            conn.execute(
                "INSERT INTO aicc.wechat_oa_messages (direction, msgid, openid, status, created_at) "
                "VALUES ('in', %s, 'o-customer', 'stored', %s)",
                (cid[:30], at),
            )
            conn.execute(
                "INSERT INTO aicc.channel_dead_letters (channel, conversation_id, recipient, reference, "
                "attempts, error, created_at) VALUES ('email', %s, 'li.lei@example.test', 'x', 1, '550', %s)",
                (cid, at),
            )
    result = await purge_once(db.dsn, RetentionSettings())
    assert result.purged["channel_records"] == 5
    for table in ("email_conversations", "wecom_conversations", "channel_dead_letters"):
        assert count(db, f"SELECT count(*) FROM aicc.{table} WHERE conversation_id = %s", old_chat) == 0  # type: ignore[arg-type]
        assert count(db, f"SELECT count(*) FROM aicc.{table} WHERE conversation_id = %s", new_chat) == 1  # type: ignore[arg-type]
    assert count(db, "SELECT count(*) FROM aicc.email_messages") == 1
    assert count(db, "SELECT count(*) FROM aicc.wechat_oa_messages") == 1


@pytest.mark.asyncio
async def test_runs_in_bounded_batches_and_skips_rows_a_writer_holds(
    db: ApiDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(5):
        add_call(db, f"old-{n}", OLD + dt.timedelta(minutes=n), lines=2, tools=0)
    add_chat(db, [OLD + dt.timedelta(minutes=n) for n in range(5)])
    batches: list[dict[str, int]] = []
    real = purge.Run._batch

    async def spy(self: purge.Run, query: LiteralString) -> dict[str, int]:
        counts = await real(self, query)
        batches.append(counts)
        return counts

    monkeypatch.setattr(purge.Run, "_batch", spy)
    # A gateway holds one old call's row (a save in progress): the run does not wait for it.
    with psycopg.connect(db.dsn) as writer:
        writer.execute("SELECT 1 FROM aicc.calls WHERE call_id = 'old-2' FOR UPDATE")
        result = await asyncio.wait_for(purge_once(db.dsn, RetentionSettings(batch_size=2)), 30)
    assert result.run is not None and result.run["status"] == "succeeded"
    # At most 2 calls or messages per batch, until a short batch ends each step.
    assert [b.get("calls") for b in batches if "calls" in b] == [2, 2, 0]
    assert [b["chat_messages"] for b in batches if "chat_messages" in b] == [2, 2, 1]
    assert [b["chat_summaries"] for b in batches if "chat_summaries" in b] == [1]
    assert all(b.get("call_lines", 0) <= 4 for b in batches)
    assert result.run["purged"]["calls"] == 4 and result.run["purged"]["call_lines"] == 8
    # The held call is left for the next run, which purges it.
    assert one(db, "SELECT purged_at FROM aicc.calls WHERE call_id = 'old-2'")["purged_at"] is None
    assert count(db, "SELECT count(*) FROM aicc.call_lines WHERE call_id = 'old-2'") == 2
    later = await purge_once(db.dsn, RetentionSettings(batch_size=2))
    assert later.run is not None and later.run["purged"]["calls"] == 1
    assert count(db, "SELECT count(*) FROM aicc.call_lines") == 0


# --- one host at a time ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_second_host_is_kept_out_by_the_lock(db: ApiDatabase) -> None:
    add_call(db, "old", OLD)
    with psycopg.connect(db.dsn, autocommit=True) as other:  # another API host's run
        other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        result = await purge_once(db.dsn, RetentionSettings())
        assert result.skipped == "busy" and result.run is None
        with pytest.raises(RetentionBusy):
            await start_run(db.dsn, RetentionSettings(), trigger="manual")
        assert runs(db) == []
        assert count(db, "SELECT count(*) FROM aicc.call_lines WHERE call_id = 'old'") == 3
    # Two passes at once, as two hosts' timers may fire: one purges, the other skips.
    results = await asyncio.gather(
        *(purge_once(db.dsn, RetentionSettings(), due_after_s=3600) for _ in range(2))
    )
    assert sorted(r.skipped for r in results) in (["", "busy"], ["", "not_due"])
    assert len(runs(db)) == 1 and runs(db)[0]["purged"]["calls"] == 1


@pytest.mark.asyncio
async def test_a_scheduled_pass_runs_once_per_interval_for_the_site(db: ApiDatabase) -> None:
    first = await purge_once(db.dsn, RetentionSettings(), due_after_s=3600)
    assert first.run is not None
    second = await purge_once(db.dsn, RetentionSettings(), due_after_s=3600)
    assert second.skipped == "not_due" and second.last_success == first.run["finished_at"]
    with psycopg.connect(db.dsn) as conn:  # an hour later
        conn.execute("UPDATE aicc.retention_runs SET started_at = started_at - interval '61 minutes'")
    third = await purge_once(db.dsn, RetentionSettings(), due_after_s=3600)
    assert third.run is not None and len(runs(db)) == 2


# --- failures -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_failing_run_is_recorded_with_its_error(db: ApiDatabase) -> None:
    add_call(db, "old", OLD)
    add_chat(db, [OLD])
    registry = CollectorRegistry()
    metrics = RetentionMetrics(registry)
    before_audit = last_audit_id(db)
    with psycopg.connect(db.dsn) as blocker:  # a long transaction holding the transcripts' table
        blocker.execute("LOCK TABLE aicc.call_lines IN ACCESS EXCLUSIVE MODE")
        result = await purge_once(db.dsn, RetentionSettings(lock_timeout_s=0.2), metrics=metrics)
        blocker.rollback()
    assert result.run is not None
    [run] = runs(db)
    assert run["status"] == "failed" and "lock timeout" in run["error"]
    assert run["finished_at"] is not None and run["purged"] == dict.fromkeys(KINDS, 0)
    # Nothing of the failed batch was committed, and the run stopped there.
    assert one(db, "SELECT caller FROM aicc.calls WHERE call_id = 'old'")["caller"] == CALLER
    assert count(db, "SELECT count(*) FROM aicc.call_lines WHERE call_id = 'old'") == 3
    assert count(db, "SELECT count(*) FROM aicc.conversation_messages") == 1
    [entry] = audit_since(db, before_audit)
    assert entry["action"] == "retention.purge" and "lock timeout" in entry["after"]["error"]
    assert sample(registry, "aicc_retention_runs_total", status="failed") == 1
    assert sample(registry, "aicc_retention_runs_total", status="succeeded") == 0
    # No success yet: the gauge says when retention was installed, so the alert counts from there.
    installed = one(
        db, "SELECT applied_at FROM aicc.schema_migrations WHERE component = 'retention' AND version = 1"
    )["applied_at"]
    assert sample(registry, "aicc_retention_last_success_timestamp_seconds") == installed.timestamp()
    # The next run, with the table free again, purges.
    after = await purge_once(db.dsn, RetentionSettings(), metrics=metrics)
    assert after.run is not None and after.run["status"] == "succeeded"
    assert after.run["purged"]["calls"] == 1 and after.run["purged"]["chat_messages"] == 1


@pytest.mark.asyncio
async def test_a_run_left_running_by_a_dead_process_is_marked_failed_by_the_next(db: ApiDatabase) -> None:
    with psycopg.connect(db.dsn) as conn:
        conn.execute(
            "INSERT INTO aicc.retention_runs (trigger, actor, transcript_days, cutoff, started_at) "
            "VALUES ('schedule', 'retention', 180, now() - interval '181 days', now() - interval '2 hours')"
        )
    result = await purge_once(db.dsn, RetentionSettings())
    dead, new = runs(db)
    assert (dead["status"], dead["error"]) == ("failed", INTERRUPTED) and dead["finished_at"] is not None
    assert result.run is not None and new["id"] == result.run["id"] and new["status"] == "succeeded"


# --- the API process -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_scheduled_watcher_purges_and_keeps_the_gauge(db: ApiDatabase) -> None:
    add_call(db, "old", OLD)
    async with open_api(db, {}) as api:
        registry = CollectorRegistry()
        service = RetentionService(lambda: api.pool, RetentionSettings(), 0.05, RetentionMetrics(registry))
        await service.start()
        try:
            for _ in range(200):
                if sample(registry, "aicc_retention_runs_total", status="succeeded"):
                    break
                await asyncio.sleep(0.05)
        finally:
            await service.close()
    done = [r for r in runs(db) if r["status"] == "succeeded"]
    assert done and done[0]["trigger"] == "schedule" and done[0]["purged"]["calls"] == 1
    assert sample(registry, "aicc_retention_purged_total", kind="call_lines") == 3
    latest = max(r["finished_at"] for r in done)
    assert sample(registry, "aicc_retention_last_success_timestamp_seconds") == latest.timestamp()


@pytest.mark.asyncio
async def test_admins_run_it_and_auditors_read_it_through_the_api(
    db: ApiDatabase, people: dict[str, ApiUser]
) -> None:
    add_call(db, "old", OLD)
    async with open_api(
        db, people, transcript_retention_days=90, ticket_retention_days=400, retention_interval_s=0
    ) as api:
        r = await api.client.get("/api/retention", headers=api.auth(people["auditor"]))
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["transcript_retention_days"], body["interval_s"], body["runs"]) == (90, 0, [])
        assert body["ticket_retention_days"] == 400
        for key, days in (("transcript_cutoff", 90), ("ticket_cutoff", 400)):
            ago = now() - dt.datetime.fromisoformat(body[key])
            assert abs(ago - dt.timedelta(days=days)) < dt.timedelta(minutes=1), key
        assert set(body["kinds"]) == set(KINDS) and body["last_success_at"] is not None  # installed
        assert (await api.client.get("/api/retention", headers=api.auth(people["agent"]))).status_code == 403

        before_audit = last_audit_id(db)
        admin = api.auth(people["admin"])
        r = await api.client.post("/api/retention/run", json={}, headers=admin)
        assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "confirm"
        r = await api.client.post(
            "/api/retention/run", json={"confirm": True}, headers=api.auth(people["auditor"])
        )
        assert r.status_code == 403
        r = await api.client.post("/api/retention/run", json={"confirm": True}, headers=admin)
        assert r.status_code == 202, r.text
        started = r.json()
        assert (started["status"], started["trigger"], started["actor"]) == ("running", "manual", "ret-admin")
        assert (started["transcript_days"], started["ticket_days"]) == (90, 400)
        await api.app.state.retention.wait()

        r = await api.client.get("/api/retention", headers=api.auth(people["auditor"]))
        [run] = r.json()["runs"]
        assert run["id"] == started["id"] and run["status"] == "succeeded"
        assert run["purged"]["calls"] == 1 and run["purged"]["call_lines"] == 3
        assert r.json()["last_success_at"] == run["finished_at"]
        # Who asked (with their address) and what the run did.
        entries = audit_since(db, before_audit)
        assert [(e["action"], e["actor"], e["source"]) for e in entries] == [
            ("retention.run", "ret-admin", "192.0.2.10"),
            ("retention.purge", "ret-admin", "192.0.2.10"),
        ]
        assert entries[1]["after"]["purged"]["call_lines"] == 3

        # While another host purges, a request to run is refused.
        with psycopg.connect(db.dsn, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            r = await api.client.post("/api/retention/run", json={"confirm": True}, headers=admin)
            assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        assert len(runs(db)) == 1


# --- the setting ---------------------------------------------------------------------------------------


def test_the_retention_is_a_site_setting_that_reaches_app_yml() -> None:
    site = {"app": {"transcript_retention_days": 30, "ticket_retention_days": 730}}
    v = settings_to_ansible_vars(SiteSettings.model_validate(site))
    assert (v["appliance_transcript_retention_days"], v["appliance_ticket_retention_days"]) == (30, 730)
    defaults = settings_to_ansible_vars(SiteSettings())
    assert (defaults["appliance_transcript_retention_days"], defaults["appliance_ticket_retention_days"]) == (
        180,
        1095,
    )
    with pytest.raises(ValidationError, match="transcript_retention_days"):
        SiteSettings.model_validate({"app": {"transcript_retention_days": 0}})
    # Tickets: at least 30 days and no shorter than the transcripts, the errors naming the fields.
    with pytest.raises(ValidationError, match=r"app\.ticket_retention_days\n.*greater than or equal to 30"):
        SiteSettings.model_validate({"app": {"ticket_retention_days": 29}})
    shorter = {"app": {"transcript_retention_days": 365, "ticket_retention_days": 300}}
    with pytest.raises(ValidationError, match=r"ticket_retention_days \(300\) must not be below transcript"):
        SiteSettings.model_validate(shorter)
    assert SiteSettings.model_validate(
        {"app": {"transcript_retention_days": 30, "ticket_retention_days": 30}}
    )
    base = {"database_dsn_file": "/x", "secret_key_file": "/y", "public_url": "https://aicc.test"}
    config = AppConfig.model_validate(base)
    assert (config.transcript_retention_days, config.retention_interval_s) == (180, 3600)
    assert config.ticket_retention_days == 1095
    for days in (0, -1):  # no "keep for ever"
        with pytest.raises(ValidationError):
            AppConfig.model_validate({**base, "transcript_retention_days": days})
    for days in (29, 3651):
        with pytest.raises(ValidationError, match="ticket_retention_days"):
            AppConfig.model_validate({**base, "ticket_retention_days": days})
    with pytest.raises(ValidationError, match=r"ticket_retention_days \(100\) is below transcript"):
        AppConfig.model_validate({**base, "ticket_retention_days": 100})  # transcripts: 180
    with pytest.raises(ValueError, match="ticket_days is at least 30"):
        RetentionSettings(transcript_days=10, ticket_days=29)
    with pytest.raises(ValueError, match=r"ticket_days \(100\) is below transcript_days \(180\)"):
        RetentionSettings(ticket_days=100)
