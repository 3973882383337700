"""The reports router on a tiny FastAPI app (the caller and the pool given by dependency overrides),
against a real PostgreSQL holding a few events: JSON and CSV answers, range checks, the CDR route."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.api.deps import ApiError, Principal, get_pool, route_permission
from aicc.appliance.api.routes import reports
from aicc.appliance.db.migrate import all_migrations, apply
from aicc.appliance.db.scratch import scratch_cluster
from aicc.appliance.events.kinds import Event
from aicc.appliance.events.writer import insert_events
from aicc.appliance.reports.definitions import REPORTS

# 2025-03-10 09:00 in Asia/Shanghai
T0 = datetime(2025, 3, 10, 1, 0, tzinfo=UTC)
CONTACT = str(uuid.uuid4())


def _events(agent_id: int) -> list[Event]:
    def at(s: float) -> datetime:
        return T0 + timedelta(seconds=s)

    ids: dict[str, Any] = {"contact_id": CONTACT, "call_id": "call-1", "queue": "sales"}
    return [
        Event("agent.state", at=at(-600), agent_id=agent_id, data={"status": "ready", "state": "idle"}),
        Event("call.started", at=at(-30), call_id="call-1", data={"service": "shop"}),
        Event("contact.queued", at=at(0), **ids),
        Event("contact.offered", at=at(8), agent_id=agent_id, **ids),
        Event("agent.state", at=at(8), agent_id=agent_id, data={"status": "ready", "state": "reserved"}),
        Event("contact.answered", at=at(12), agent_id=agent_id, **ids, data={"wait_s": 12}),
        Event("agent.state", at=at(12), agent_id=agent_id, data={"status": "ready", "state": "busy"}),
        Event("contact.ended", at=at(112), agent_id=agent_id, **ids, data={"talk_s": 100, "hold_s": 0}),
        Event("agent.state", at=at(112), agent_id=agent_id, data={"status": "ready", "state": "wrap_up"}),
        Event(
            "contact.wrapup_done",
            at=at(142),
            agent_id=agent_id,
            **ids,
            data={"wrap_s": 30, "disposition": "ok"},
        ),
        Event("agent.state", at=at(142), agent_id=agent_id, data={"status": "ready", "state": "idle"}),
        Event("agent.state", at=at(1200), agent_id=agent_id, data={"status": "logged_out", "state": "idle"}),
        Event(
            "call.ended",
            at=at(150),
            call_id="call-1",
            data={"bot": "shop", "outcome": "transferred", "transferred": True, "duration_s": 180},
        ),
        Event(
            "call.ended",
            at=at(300),
            call_id="call-2",
            data={"bot": "shop", "outcome": "resolved", "transferred": False, "duration_s": 60},
        ),
    ]


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with scratch_cluster("aicc-pg-", "-c fsync=off -c full_page_writes=off") as d:
        apply(d, all_migrations())
        with psycopg.connect(d, autocommit=True) as conn:
            # A display name that a spreadsheet would run as a formula.
            row = conn.execute(
                "INSERT INTO aicc.users (username, display_name, role) VALUES (%s, %s, 'agent') RETURNING id",
                ("li.na", '=HYPERLINK("x")'),
            ).fetchone()
            assert row is not None
            agent_id = int(row[0])

        async def load() -> None:
            async with await psycopg.AsyncConnection.connect(d) as aconn, aconn.transaction():
                await insert_events(aconn, _events(agent_id))

        asyncio.run(load())
        yield d


@pytest_asyncio.fixture
async def client(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, min_size=1, max_size=2, open=False, kwargs={"row_factory": dict_row}
    )
    await pool.open(wait=True)
    app = FastAPI()
    app.include_router(reports.router)

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body(), status_code=exc.status)

    app.add_exception_handler(ApiError, api_error)
    app.dependency_overrides[reports.READ] = lambda: Principal(1, "sup", "supervisor", 1)
    app.dependency_overrides[get_pool] = lambda: pool
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c
    await pool.close()


DAY = {"since": "2025-03-10", "until": "2025-03-11", "tz": "Asia/Shanghai"}


def test_every_route_needs_reports_read() -> None:
    routes = [r for r in reports.router.routes if isinstance(r, APIRoute)]
    assert {r.path for r in routes} == {
        "/api/reports/queues",
        "/api/reports/agents",
        "/api/reports/bot",
        "/api/reports/cdr/{ref}",
    }
    assert {route_permission(r) for r in routes} == {"reports.read"}


@pytest.mark.asyncio
async def test_queue_report_as_json_reads_dates_in_the_given_time_zone(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/reports/queues", params={**DAY, "group_by": "hour"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["since"], body["until"]) == ("2025-03-10T00:00:00+08:00", "2025-03-11T00:00:00+08:00")
    [row] = body["rows"]
    assert (
        row["period_start"] == "2025-03-10T09:00:00+08:00"
        and row["period_end"] == "2025-03-10T10:00:00+08:00"
    )
    assert (row["queue"], row["offered"], row["answered"], row["asa_s"], row["aht_s"]) == (
        "sales",
        1,
        1,
        12.0,
        130.0,
    )
    assert row["service_level"] == 100.0


@pytest.mark.asyncio
async def test_agent_and_bot_reports(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/reports/agents", params=DAY)
    assert r.status_code == 200, r.text
    [agent] = r.json()["rows"]
    assert agent["username"] == "li.na" and agent["handled"] == 1
    assert (agent["staffed_s"], agent["busy_s"], agent["wrap_up_s"]) == (1800.0, 100.0, 30.0)
    r = await client.get("/api/reports/bot", params=DAY)
    [bot] = r.json()["rows"]
    assert (bot["bot"], bot["calls"], bot["contained"], bot["containment"]) == ("shop", 2, 1, 50.0)


@pytest.mark.asyncio
async def test_csv_has_the_report_columns_and_excel_gets_a_bom(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/reports/agents", params={**DAY, "format": "csv"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"].startswith('attachment; filename="aicc-agents-')
    assert not r.text.startswith("\ufeff")
    header, row = list(csv.reader(io.StringIO(r.text)))
    assert header == [m.name for m in REPORTS["agents"]]
    cells = dict(zip(header, row, strict=True))
    assert cells["period_start"] == "2025-03-10T00:00:00+08:00"
    assert cells["display_name"] == '\'=HYPERLINK("x")'  # not a formula in a spreadsheet
    assert cells["occupancy"] == "7.22" and cells["csat"] == ""

    r = await client.get("/api/reports/queues", params={**DAY, "format": "csv", "excel": "true"})
    raw = r.content
    assert raw.startswith("\ufeff".encode()) and b"\r\n" in raw
    header, row = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert header == [m.name for m in REPORTS["queues"]]
    assert row[0] == "2025-03-10 00:00:00"  # a time Excel reads as a date

    r = await client.get(
        "/api/reports/bot", params={**DAY, "since": "2025-01-01", "until": "2025-01-02", "format": "csv"}
    )
    assert r.text == ",".join(m.name for m in REPORTS["bot"]) + "\r\n"  # no rows: still the header


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"since": "2025-03-11", "until": "2025-03-10"}, "until", "must be after since"),
        ({"since": "2025-03-10", "until": "2025-03-10"}, "until", "must be after since"),
        ({"since": "2025-01-01", "until": "2025-04-05"}, "until", "at most 93 days"),
        ({"since": "2025-03-10", "until": "2025-03-11", "tz": "Mars/Olympus"}, "tz", "unknown time zone"),
        ({"since": "2025-03-10", "until": "2025-03-11", "tz": "../etc/passwd"}, "tz", "unknown time zone"),
        # a zone Python's tzdata has and PostgreSQL's does not: refused by the database, same answer
        ({"since": "2025-03-10", "until": "2025-03-11", "tz": "right/UTC"}, "tz", "time zone"),
    ],
)
async def test_bad_ranges_are_refused_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, str], field: str, words: str
) -> None:
    for route in ("queues", "agents", "bot"):
        r = await client.get(f"/api/reports/{route}", params=params)
        assert r.status_code == 422, r.text
        [problem] = r.json()["error"]["problems"]
        assert problem["field"] == field and words in problem["message"]


@pytest.mark.asyncio
async def test_unknown_group_by_or_format_is_refused(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/reports/queues", params={**DAY, "group_by": "week"})).status_code == 422
    assert (await client.get("/api/reports/queues", params={**DAY, "format": "xlsx"})).status_code == 422
    assert (await client.get("/api/reports/queues", params={"until": "2025-03-11"})).status_code == 422


@pytest.mark.asyncio
async def test_cdr_by_call_or_contact_id(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/reports/cdr/call-1")
    assert r.status_code == 200, r.text
    record = r.json()
    assert (
        record["contact_id"] == CONTACT and record["outcome"] == "answered" and record["disposition"] == "ok"
    )
    assert (record["wait_s"], record["talk_s"], record["wrap_s"]) == (12.0, 100.0, 30.0)
    assert [leg["kind"] for leg in record["legs"]][:3] == [
        "call.started",
        "contact.queued",
        "contact.offered",
    ]
    assert (await client.get(f"/api/reports/cdr/{CONTACT}")).json() == record
    r = await client.get("/api/reports/cdr/call-404")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
