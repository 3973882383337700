"""The retention of personal data (appliance/retention/purge.py): the periods this API applies and the
purge runs (retention.read: admins and auditors), and a run started now (retention.run: admins; the
request and the run's result are both audited)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    ApiError,
    PoolDep,
    Principal,
    client_address,
    error_responses,
    get_config,
    require,
)
from aicc.appliance.api.routes import Strict
from aicc.appliance.retention.purge import (
    RetentionBusy,
    RetentionService,
    last_success,
    recent_runs,
)

router = APIRouter(tags=["retention"], responses=COMMON_ERRORS)

KINDS: dict[str, str] = {
    "calls": "call records past the retention: the caller's number and the bot's summary blanked "
    "(times, outcome, queue, agent and latencies kept)",
    "call_lines": "transcript lines of those calls, deleted",
    "call_tool_calls": "the bot's tool calls in those calls (arguments and results), deleted",
    "chat_messages": "web-chat messages older than the retention, deleted",
    "chat_summaries": "the bot's handover summary of conversations idle past the retention, blanked",
    "tickets": "tickets closed, or resolved and left so, before the ticket cutoff: the customer's "
    "identities and the description emptied, the subject '(purged)' (number, status, priority, group, "
    "times and the event log kept: SLA figures unchanged)",
    "ticket_texts": "texts of those tickets' comments (replies, customer messages, internal notes) and "
    "of the customer's confirmations, blanked in the event log",
    "customers": "customers with no conversation, call or ticket activity since the cutoff: the name "
    "blanked (the record stays for its conversations)",
    "customer_identities": "those customers' phone numbers, e-mail addresses and channel ids, deleted",
    "channel_records": "the messaging channels' records older than the retention that name a customer "
    "(WeCom, WeChat and email ledgers, dead letters) deleted, and the link of conversations idle since the "
    "cutoff to the customer's platform id or address (replies to them are refused after)",
}


class RetentionRun(BaseModel):
    id: int
    trigger: Literal["schedule", "manual"]
    actor: str = Field(description="'retention' for a scheduled run, else the admin who started it")
    host: str = Field(description="the API host that ran it")
    transcript_days: int
    cutoff: dt.datetime = Field(
        description="what started (calls) or was written (messages) before it; customers idle since"
    )
    ticket_days: int | None = Field(description="null: a run from before tickets were purged")
    ticket_cutoff: dt.datetime | None = Field(description="tickets finished and last changed before it")
    started_at: dt.datetime
    finished_at: dt.datetime | None
    status: Literal["running", "succeeded", "failed"]
    purged: dict[str, int] = Field(description="rows per kind, as committed so far")
    error: str | None


class Retention(BaseModel):
    transcript_retention_days: int = Field(description="this API's setting (app.yml)")
    ticket_retention_days: int = Field(description="this API's setting (app.yml)")
    transcript_cutoff: dt.datetime = Field(
        description="a run started now purges calls, chat messages and idle customers from before it"
    )
    ticket_cutoff: dt.datetime = Field(description="a run started now purges tickets finished before it")
    interval_s: float = Field(description="how often this API process runs the purge; 0: never on its own")
    kinds: dict[str, str] = Field(description="what a run purges, by the kinds its counts use")
    last_success_at: dt.datetime | None = Field(
        description="when the site's last successful run finished (before the first: when retention "
        "was installed)"
    )
    runs: list[RetentionRun] = Field(description="the latest runs, newest first")


class RunRequest(Strict):
    confirm: Literal[True] = Field(description="true: the purge deletes personal data for good")


def _service(request: Request) -> RetentionService:
    service: RetentionService = request.app.state.retention
    return service


@router.get("/api/retention", response_model=Retention)
async def get_retention(
    request: Request,
    principal: Annotated[Principal, Depends(require("retention.read"))],
    pool: PoolDep,
    limit: Annotated[int, Query(ge=1, le=500, description="runs to show")] = 20,
) -> Retention:
    """The retention periods and the cutoffs a run started now would apply, what a purge removes, and
    the latest runs with their counts and errors."""
    config = get_config(request)
    now = dt.datetime.now(dt.UTC)
    async with pool.connection() as conn:
        runs = await recent_runs(conn, limit)
        last = await last_success(conn)
    return Retention(
        transcript_retention_days=config.transcript_retention_days,
        ticket_retention_days=config.ticket_retention_days,
        transcript_cutoff=now - dt.timedelta(days=config.transcript_retention_days),
        ticket_cutoff=now - dt.timedelta(days=config.ticket_retention_days),
        interval_s=config.retention_interval_s,
        kinds=KINDS,
        last_success_at=last,
        runs=[RetentionRun.model_validate(r) for r in runs],
    )


@router.post(
    "/api/retention/run", response_model=RetentionRun, status_code=202, responses=error_responses(409)
)
async def run_retention(
    body: RunRequest,
    request: Request,
    principal: Annotated[Principal, Depends(require("retention.run"))],
    pool: PoolDep,
) -> RetentionRun:
    """Start a purge now with this API's retention; it runs in the background (`GET /api/retention`
    shows its progress and result). 409 while another run, scheduled or not, is in progress."""
    try:
        row = await _service(request).run_now(principal, client_address(request))
    except RetentionBusy as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return RetentionRun.model_validate(row)
