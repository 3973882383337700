"""The caller's notifications: today the SLA escalations of tickets (appliance/tickets/escalation.py)
that reached them as assignee, group member or supervisor. Each is stored as a kind and its data and
worded here in both languages; everyone reads only their own (notifications.own)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from aicc.appliance.api.deps import COMMON_ERRORS, PoolDep, Principal, error_responses, not_found, require
from aicc.appliance.tickets import store
from aicc.appliance.tickets.escalation import notification_text

router = APIRouter(tags=["notifications"], responses=COMMON_ERRORS)


class Texts(BaseModel):
    zh: str
    en: str


class Notification(BaseModel):
    id: int
    kind: Literal["sla_warning", "sla_breached"]
    ticket: str | None = Field(description="the ticket's number")
    data: dict[str, Any] = Field(description="target, state, due_at (UTC), subject, priority, timezone")
    text: Texts
    created_at: dt.datetime
    read_at: dt.datetime | None


def _notification(row: dict[str, Any]) -> Notification:
    return Notification(
        **row, text=Texts(**notification_text(row["kind"], {**row["data"], "number": row["ticket"]}))
    )


@router.get("/api/notifications", response_model=list[Notification])
async def list_notifications(
    principal: Annotated[Principal, Depends(require("notifications.own"))],
    pool: PoolDep,
    unread: Annotated[bool, Query(description="only the unread ones")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[Notification]:
    """The caller's own: unread first, then newest first."""
    async with pool.connection() as conn:
        rows = await store.notifications(conn, principal.user_id, unread=unread, limit=limit)
    return [_notification(r) for r in rows]


@router.post(
    "/api/notifications/{notification_id}/read", response_model=Notification, responses=error_responses(404)
)
async def read_notification(
    notification_id: Annotated[int, Path(ge=1, le=2**62)],
    principal: Annotated[Principal, Depends(require("notifications.own"))],
    pool: PoolDep,
) -> Notification:
    """Mark one read (again: it keeps the first time). Another user's answers 404, like one that is not."""
    async with pool.connection() as conn:
        row = await store.mark_read(conn, principal.user_id, notification_id, dt.datetime.now(dt.UTC))
    if row is None:
        raise not_found("notification", notification_id)
    return _notification(row)
