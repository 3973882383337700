"""The operations page for SREs (/ops/): the dashboards of monitoring/panels.py drawn in the browser
from the site's Prometheus, and the runbook (/ops/runbook). Read-only, for the roles holding ops.read
(admin and auditor); nothing here is audited, since nothing changes.

The browser names a dashboard and a panel; the API runs that panel's own queries against the
Prometheus of app.yml's prometheus_url (the first [monitoring] host) and never passes PromQL from a
request on: the page cannot be used to run arbitrary queries.
"""

from __future__ import annotations

import time
from html import escape
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    ApiError,
    ErrorBody,
    Principal,
    authenticate,
    error_responses,
    get_config,
    require,
)
from aicc.appliance.api.prometheus import PanelData, Prometheus, PrometheusError
from aicc.appliance.api.routes.pages import HTML, STATIC, add_slash, page_headers
from aicc.appliance.api.runbook import runbook_html
from aicc.monitoring.panels import DASHBOARDS, Dashboard, panel_index

router = APIRouter(tags=["ops"], responses=COMMON_ERRORS)

PERMISSION = "ops.read"
MIN_RANGE_S = 300
MAX_RANGE_S = 7 * 86400

router.get("/ops", include_in_schema=False)(add_slash)


@router.get("/ops/", include_in_schema=False)
async def ops_page() -> FileResponse:
    """The page itself is public like /desk/: it signs in and asks the API, which checks the role."""
    return FileResponse(STATIC / "ops.html", media_type=HTML, headers=page_headers())


class Dashboards(BaseModel):
    prometheus_url: str | None = Field(description="the Prometheus the panels read; null: none in this site")
    dashboards: list[Dashboard]


@router.get("/api/ops/dashboards", response_model=Dashboards)
async def dashboards(
    request: Request, principal: Annotated[Principal, Depends(require(PERMISSION))]
) -> Dashboards:
    """The operations page's dashboards and panels (titles in English and Chinese, queries, units)."""
    return Dashboards(prometheus_url=get_config(request).prometheus_url, dashboards=list(DASHBOARDS))


@router.get(
    "/api/ops/query",
    response_model=PanelData,
    responses={
        **error_responses(404, 502),
        503: {
            "model": ErrorBody,
            "description": "The database is unreachable, or the site has no [monitoring] host (Prometheus)",
        },
    },
)
async def query(
    request: Request,
    principal: Annotated[Principal, Depends(require(PERMISSION))],
    dashboard: Annotated[str, Query(max_length=64, description="a dashboard's id")],
    panel: Annotated[str, Query(max_length=64, description="a panel's id in that dashboard")],
    range_s: Annotated[
        int,
        Query(alias="range", ge=MIN_RANGE_S, le=MAX_RANGE_S, description="seconds back from now"),
    ] = 3600,
) -> PanelData:
    """One panel's series from Prometheus: over the range for a time series (about 240 points), the
    value now for a stat panel."""
    found = panel_index().get((dashboard, panel))
    if found is None:
        known = ", ".join(d.id for d in DASHBOARDS)
        raise ApiError(
            404, "not_found", f"no panel {panel!r} in dashboard {dashboard!r} (dashboards: {known})"
        )
    url = get_config(request).prometheus_url
    if url is None:
        raise ApiError(
            503,
            "no_prometheus",
            "no [monitoring] host in this site: the operations page reads its Prometheus; add one to the "
            "inventory and run aicc install",
        )
    try:
        return await Prometheus(url).panel(found, range_s, time.time())
    except PrometheusError as exc:
        raise ApiError(502, "prometheus_unavailable", str(exc)) from None


_bearer = HTTPBearer(auto_error=False)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>aicc · Runbook</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/css/app.css">
<link rel="stylesheet" href="/static/css/ops.css">
</head>
<body class="page-runbook">
<header class="topbar">
  <div class="brand"><span class="brand-mark" aria-hidden="true">◆</span><span>aicc</span>
    <span class="brand-page">Runbook</span></div>
  <div class="topbar-user"><a class="btn small" href="/ops/">Operations</a></div>
</header>
<main class="runbook">
{body}
</main>
</body>
</html>
"""


@router.get("/ops/runbook", include_in_schema=False)
async def runbook(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> HTMLResponse:
    """The runbook, for ops.read. A page a person opens from a link: refusals come as a page too
    (with the way to sign in), not as the API's JSON, so the permission is checked here, not as a
    route dependency."""
    try:
        await require(PERMISSION)(await authenticate(request, credentials))
    except ApiError as exc:
        refused = (
            f'<p class="runbook-refused" role="alert">{escape(exc.message, quote=False)}</p>\n'
            '<p><a href="/ops/">Sign in on the operations page</a>, then open the runbook again.</p>'
        )
        return HTMLResponse(_PAGE.format(body=refused), status_code=exc.status, headers=page_headers())
    return HTMLResponse(_PAGE.format(body=runbook_html()), headers=page_headers())
