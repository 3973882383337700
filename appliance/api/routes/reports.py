"""Reports computed from the event log: per queue, per agent, per bot, and one contact's record (CDR).

Ranges are [since, until) in the time zone `tz` (an IANA name; times given without an offset are read
in it), at most 93 days. `format=csv` answers text/csv with the same columns as the JSON rows;
`excel=true` adds a UTF-8 byte order mark and Excel-friendly times. The figures are defined in
appliance/reports/definitions.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel

from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    ApiError,
    Pool,
    Principal,
    error_responses,
    get_pool,
    not_found,
    require,
)
from aicc.appliance.reports import queries
from aicc.appliance.reports.csv import to_csv
from aicc.appliance.reports.queries import (
    MAX_RANGE_DAYS,
    AgentRow,
    BotRow,
    Cdr,
    GroupBy,
    QueueRow,
    ReportRange,
    ReportRangeError,
)

router = APIRouter(prefix="/api/reports", tags=["reports"], responses=COMMON_ERRORS)
READ = require("reports.read")

_CSV: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}

Since = Annotated[datetime, Query(description="start of the range, inclusive (no offset: read in tz)")]
Until = Annotated[
    datetime, Query(description=f"end of the range, exclusive; at most {MAX_RANGE_DAYS} days after since")
]
Tz = Annotated[str, Query(max_length=64, description="IANA time zone of periods and offset-less times")]
Group = Annotated[GroupBy, Query(description="one row per queue (none), or per queue and hour or day")]
Format = Annotated[Literal["json", "csv"], Query(description="json, or csv with the same columns")]
Excel = Annotated[bool, Query(description="csv for Excel: UTF-8 byte order mark, plain local times")]


class QueueReport(BaseModel):
    since: datetime
    until: datetime
    tz: str
    group_by: GroupBy
    rows: list[QueueRow]


class AgentReport(BaseModel):
    since: datetime
    until: datetime
    tz: str
    group_by: GroupBy
    rows: list[AgentRow]


class BotReport(BaseModel):
    since: datetime
    until: datetime
    tz: str
    group_by: GroupBy
    rows: list[BotRow]


def _range(since: datetime, until: datetime, tz: str, group_by: GroupBy) -> ReportRange:
    try:
        return queries.report_range(since, until, tz, group_by)
    except ReportRangeError as exc:
        raise ApiError(422, "invalid_range", str(exc), problems=[(exc.field, exc.message)]) from None


def _csv_response(name: str, rng: ReportRange, row_type: Any, rows: list[Any], excel: bool) -> Response:
    filename = f"aicc-{name}-{rng.since:%Y%m%d%H%M}-{rng.until:%Y%m%d%H%M}.csv"
    return Response(
        to_csv(row_type, rows, excel=excel),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _run(pool: Pool, report: Any, rng: ReportRange) -> list[Any]:
    try:
        async with pool.connection() as conn:
            rows: list[Any] = await report(conn, rng.since, rng.until, tz=rng.tz, group_by=rng.group_by)
            return rows
    except ReportRangeError as exc:  # a time zone Python knows but PostgreSQL does not
        raise ApiError(422, "invalid_range", str(exc), problems=[(exc.field, exc.message)]) from None


@router.get("/queues", response_model=QueueReport, responses=_CSV)
async def queue_report(
    principal: Annotated[Principal, Depends(READ)],
    pool: Annotated[Pool, Depends(get_pool)],
    since: Since,
    until: Until,
    tz: Tz = "UTC",
    group_by: Group = "none",
    format: Format = "json",
    excel: Excel = False,
) -> QueueReport | Response:
    """Per queue where contacts were first queued (and per hour or day): offered, answered, abandoned,
    short abandons, callbacks, overflows, service level, ASA, handle times, CSAT."""
    rng = _range(since, until, tz, group_by)
    rows = await _run(pool, queries.queue_report, rng)
    if format == "csv":
        return _csv_response("queues", rng, QueueRow, rows, excel)
    return QueueReport(since=rng.since, until=rng.until, tz=rng.tz, group_by=rng.group_by, rows=rows)


@router.get("/agents", response_model=AgentReport, responses=_CSV)
async def agent_report(
    principal: Annotated[Principal, Depends(READ)],
    pool: Annotated[Pool, Depends(get_pool)],
    since: Since,
    until: Until,
    tz: Tz = "UTC",
    group_by: Group = "none",
    format: Format = "json",
    excel: Excel = False,
) -> AgentReport | Response:
    """Per agent (and per hour or day): offers, answers, misses, handle times, time staffed, busy, in
    wrap-up and away, occupancy, CSAT."""
    rng = _range(since, until, tz, group_by)
    rows = await _run(pool, queries.agent_report, rng)
    if format == "csv":
        return _csv_response("agents", rng, AgentRow, rows, excel)
    return AgentReport(since=rng.since, until=rng.until, tz=rng.tz, group_by=rng.group_by, rows=rows)


@router.get("/bot", response_model=BotReport, responses=_CSV)
async def bot_report(
    principal: Annotated[Principal, Depends(READ)],
    pool: Annotated[Pool, Depends(get_pool)],
    since: Since,
    until: Until,
    tz: Tz = "UTC",
    group_by: Group = "none",
    format: Format = "json",
    excel: Excel = False,
) -> BotReport | Response:
    """Per bot (and per hour or day): calls, contained (resolved without a transfer), transferred,
    abandoned, failed, containment, mean duration."""
    rng = _range(since, until, tz, group_by)
    rows = await _run(pool, queries.bot_report, rng)
    if format == "csv":
        return _csv_response("bot", rng, BotRow, rows, excel)
    return BotReport(since=rng.since, until=rng.until, tz=rng.tz, group_by=rng.group_by, rows=rows)


@router.get("/cdr/{ref}", response_model=Cdr, responses=error_responses(404))
async def contact_record(
    principal: Annotated[Principal, Depends(READ)],
    pool: Annotated[Pool, Depends(get_pool)],
    ref: Annotated[str, Path(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")],
) -> Cdr:
    """One contact's record by its contact id or a call id: its events in order, wait, talk, hold and
    wrap times, the agent, the disposition, the survey score."""
    async with pool.connection() as conn:
        found = await queries.cdr(conn, ref)
    if found is None:
        raise not_found("contact or call", ref)
    return found
