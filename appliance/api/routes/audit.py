"""Reading the audit log, newest first, as JSON pages or a CSV export."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from psycopg import sql
from pydantic import BaseModel

from aicc.appliance.api.deps import COMMON_ERRORS, ApiError, PoolDep, Principal, require

router = APIRouter(tags=["audit"], responses=COMMON_ERRORS)


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor_id: int | None
    actor: str
    source: str
    action: str
    target_type: str
    target_id: str
    before: Any
    after: Any
    request_id: str


class AuditPage(BaseModel):
    items: list[AuditEntry]
    total: int
    limit: int
    offset: int


_COLUMNS = list(AuditEntry.model_fields)
# A spreadsheet runs cells starting with these as formulas; the audit log holds text users typed.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = (
        value.isoformat()
        if isinstance(value, datetime)
        else (json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value))
    )
    return "'" + text if text.startswith(_FORMULA_START) else text


@router.get(
    "/api/audit",
    response_model=AuditPage,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def read_audit(
    principal: Annotated[Principal, Depends(require("audit.read"))],
    pool: PoolDep,
    since: datetime | None = None,
    until: datetime | None = None,
    actor: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    target_type: Annotated[str | None, Query(max_length=100)] = None,
    target_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    format: Literal["json", "csv"] = "json",
) -> AuditPage | Response:
    """Entries matching every filter given (since inclusive, until exclusive)."""
    if since is not None and until is not None and since >= until:
        raise ApiError(
            422, "invalid_range", "since must be before until", problems=[("until", "must be after since")]
        )
    where = sql.SQL(
        "(%(since)s::timestamptz IS NULL OR at >= %(since)s) "
        "AND (%(until)s::timestamptz IS NULL OR at < %(until)s) "
        "AND (%(actor)s::text IS NULL OR actor = %(actor)s) "
        "AND (%(action)s::text IS NULL OR action = %(action)s) "
        "AND (%(tt)s::text IS NULL OR target_type = %(tt)s) "
        "AND (%(tid)s::text IS NULL OR target_id = %(tid)s)"
    )
    params = {
        "since": since,
        "until": until,
        "actor": actor,
        "action": action,
        "tt": target_type,
        "tid": target_id,
        "limit": limit,
        "offset": offset,
    }
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                sql.SQL(
                    "SELECT {} FROM aicc.audit_log WHERE {} "
                    "ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s"
                ).format(sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), where),
                params,
            )
        ).fetchall()
        total_row = await (
            await conn.execute(
                sql.SQL("SELECT count(*) AS n FROM aicc.audit_log WHERE {}").format(where), params
            )
        ).fetchone()
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(_COLUMNS)
        for r in rows:
            writer.writerow([_cell(r[c]) for c in _COLUMNS])
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="aicc-audit.csv"'},
        )
    return AuditPage(
        items=[AuditEntry(**r) for r in rows],
        total=total_row["n"] if total_row else 0,
        limit=limit,
        offset=offset,
    )
