"""A panel of monitoring/panels.py run against the site's Prometheus, for the operations page.

Only a panel's own queries ever run (the browser names a dashboard and a panel, never PromQL). A
time series panel reads /api/v1/query_range over the chosen range with a step giving about POINTS
points, its end aligned to the step so that refreshes land on the same timestamps; a stat panel reads
/api/v1/query at this instant. Series are named by the query's legend, a str.format template over
the series' labels ("{host}", "{queue} {state}"; a label the series lacks reads as empty, a legend
without braces is a fixed name).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
from pydantic import BaseModel, Field

from aicc.monitoring.panels import Panel, Query

POINTS = 240
TIMEOUT_S = 10.0


class Series(BaseModel):
    name: str
    points: list[tuple[float, float | None]] = Field(
        description="[unix time, value]; null where Prometheus has NaN or an infinity"
    )


class PanelData(BaseModel):
    series: list[Series]


class PrometheusError(Exception):
    """Prometheus could not be asked, or refused; the message names the URL and what to check."""


class _Labels(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def series_name(legend: str, labels: dict[str, str]) -> str:
    """The legend filled from the series' labels; without a legend, the series as PromQL writes it."""
    if legend:
        return legend.format_map(_Labels(labels))
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return labels.get("__name__", "") + (f"{{{inner}}}" if inner else "")


def step_for(range_s: int) -> int:
    return max(1, math.ceil(range_s / POINTS))


def _value(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None  # JSON has no NaN; uPlot draws None as a gap


def _series(query: Query, data: dict[str, Any]) -> list[Series]:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "matrix":
        return [
            Series(
                name=series_name(query.legend, s["metric"]),
                points=[(float(t), _value(v)) for t, v in s["values"]],
            )
            for s in result or []
        ]
    if kind == "vector":
        return [
            Series(
                name=series_name(query.legend, s["metric"]),
                points=[(float(s["value"][0]), _value(s["value"][1]))],
            )
            for s in result or []
        ]
    if kind == "scalar" and result:
        return [Series(name=series_name(query.legend, {}), points=[(float(result[0]), _value(result[1]))])]
    return []


class Prometheus:
    """Runs panels against the Prometheus at `url` (the site's [monitoring] host)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    async def panel(self, panel: Panel, range_s: int, now: float) -> PanelData:
        if panel.kind == "stat":
            requests = [("/api/v1/query", {"query": q.expr, "time": f"{now:.3f}"}) for q in panel.queries]
        else:
            step = step_for(range_s)
            end = math.floor(now / step) * step
            window = {"start": str(end - range_s), "end": str(end), "step": str(step)}
            requests = [("/api/v1/query_range", {"query": q.expr, **window}) for q in panel.queries]
        # trust_env=False: the site's Prometheus is reached directly, never through a proxy in the env.
        try:
            async with (
                httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT_S, trust_env=False) as client,
                asyncio.TaskGroup() as group,
            ):
                tasks = [group.create_task(self._ask(client, path, params)) for path, params in requests]
        except* PrometheusError as failed:  # the first one says it; the panel's other queries are cancelled
            raise failed.exceptions[0] from None
        series = [s for q, task in zip(panel.queries, tasks, strict=True) for s in _series(q, task.result())]
        return PanelData(series=sorted(series, key=lambda s: s.name))

    async def _ask(self, client: httpx.AsyncClient, path: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            r = await client.get(path, params=params)
        except httpx.TimeoutException:
            raise PrometheusError(
                f"Prometheus at {self.url} did not answer within {TIMEOUT_S:g} s; check the load of the "
                "[monitoring] host and that prometheus is not restarting (systemctl status prometheus)"
            ) from None
        except httpx.RequestError as exc:
            raise PrometheusError(
                f"Prometheus at {self.url} cannot be reached ({exc or type(exc).__name__}); check that "
                "prometheus runs on the [monitoring] host (systemctl status prometheus) and that this "
                "[app] host may connect to its port"
            ) from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "status" not in body:
            raise PrometheusError(
                f"{self.url}{path} answered HTTP {r.status_code} without Prometheus' JSON; check that "
                "prometheus_url in /etc/aicc/app.yml names Prometheus"
            )
        if body["status"] != "success":
            raise PrometheusError(
                f"Prometheus at {self.url} refused the query {params['query']!r}: "
                f"{body.get('errorType', 'error')}: {body.get('error', '')}"
            )
        data: dict[str, Any] = body.get("data") or {}
        return data
