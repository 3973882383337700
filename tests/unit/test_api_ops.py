"""The operations page's routes (appliance/api/routes/ops.py) against a stand-in Prometheus, a real HTTP
server on 127.0.0.1 that records every request: who may read the dashboards, that a panel runs exactly
its own queries (range, step, instant queries for stat panels), how series are named from the legends,
the answers when Prometheus is missing, down, slow or refuses, the page's headers, and the runbook with
its alert anchors."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import pytest_asyncio

from aicc.appliance.api import prometheus
from aicc.appliance.api.prometheus import series_name, step_for
from aicc.appliance.api.routes.pages import STATIC
from aicc.appliance.api.runbook import render
from aicc.monitoring.panels import DASHBOARDS, panel_index
from tests.unit.api_support import (
    Api,
    ApiDatabase,
    ApiUser,
    api_db_fixture,  # noqa: F401
    api_users_fixture,  # noqa: F401
    open_api,
)

Answer = tuple[int, dict[str, Any]]


def matrix(*series: tuple[dict[str, str], list[tuple[float, str]]]) -> Answer:
    result = [{"metric": labels, "values": [[t, v] for t, v in values]} for labels, values in series]
    return 200, {"status": "success", "data": {"resultType": "matrix", "result": result}}


def vector(*series: tuple[dict[str, str], str]) -> Answer:
    result = [{"metric": labels, "value": [1700000000.0, v]} for labels, v in series]
    return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


@dataclass
class FakePrometheus:
    """Answers /api/v1/query and /api/v1/query_range from `answers` (by PromQL; empty otherwise) and
    keeps every request it got as (path, parameters)."""

    url: str = ""
    answers: dict[str, Answer] = field(default_factory=dict)
    asked: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    delay_s: float = 0.0

    def reset(self) -> None:
        self.answers.clear()
        self.asked.clear()
        self.delay_s = 0.0

    def answer(self, path: str, params: dict[str, str]) -> Answer:
        self.asked.append((path, params))
        time.sleep(self.delay_s)
        if params.get("query") in self.answers:
            return self.answers[params["query"]]
        return matrix() if path.endswith("query_range") else vector()


@pytest.fixture(scope="module")
def fake_prometheus() -> Iterator[FakePrometheus]:
    fake = FakePrometheus()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            split = urlsplit(self.path)
            status, body = fake.answer(split.path, dict(parse_qsl(split.query)))
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the slow-answer test's client has given up already

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest_asyncio.fixture
async def api(
    api_db: ApiDatabase, api_users: dict[str, ApiUser], fake_prometheus: FakePrometheus
) -> AsyncIterator[Api]:
    fake_prometheus.reset()
    async with open_api(api_db, api_users, prometheus_url=fake_prometheus.url) as opened:
        yield opened


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- who may read


@pytest.mark.asyncio
async def test_admin_and_auditor_read_the_dashboards_and_no_one_else(
    api: Api, fake_prometheus: FakePrometheus
) -> None:
    for role in ("agent", "supervisor"):
        for url in ("/api/ops/dashboards", "/api/ops/query?dashboard=overview&panel=calls_rate"):
            r = await api.client.get(url, headers=api.auth(role))
            assert r.status_code == 403, (role, url, r.text)
            assert "'ops.read'" in r.json()["error"]["message"] and role in r.json()["error"]["message"]
    assert fake_prometheus.asked == []
    for role in ("admin", "auditor"):
        r = await api.client.get("/api/ops/dashboards", headers=api.auth(role))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["prometheus_url"] == fake_prometheus.url
        assert [d["id"] for d in body["dashboards"]] == [d.id for d in DASHBOARDS]
        overview = body["dashboards"][0]
        assert overview["title"] == {"en": "Overview", "zh": "总览"}
        stat = overview["panels"][0]
        assert (stat["kind"], stat["queries"][0]["expr"]) == ("stat", "sum(aicc_voice_calls_active)")
    assert (await api.client.get("/api/ops/dashboards")).status_code == 401


# ---------------------------------------------------------------- what runs


@pytest.mark.asyncio
async def test_a_time_series_panel_runs_exactly_its_query_over_the_range(
    api: Api, fake_prometheus: FakePrometheus
) -> None:
    panel = panel_index()[("sip_media", "invites")]
    (query,) = panel.queries
    fake_prometheus.answers[query.expr] = matrix(
        ({"host": "sip1"}, [(1700000000, "1.5"), (1700000015, "NaN")]),
        ({"host": "sip2"}, [(1700000000, "+Inf"), (1700000015, "2")]),
    )
    before = time.time()
    r = await api.client.get(
        "/api/ops/query?dashboard=sip_media&panel=invites&range=3600", headers=api.auth("auditor")
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "series": [
            {"name": "sip1", "points": [[1700000000.0, 1.5], [1700000015.0, None]]},
            {"name": "sip2", "points": [[1700000000.0, None], [1700000015.0, 2.0]]},
        ]
    }
    ((path, params),) = fake_prometheus.asked
    assert path == "/api/v1/query_range"
    assert params["query"] == query.expr == "sum by (host) (rate(kamailio_core_rcv_requests_invite[5m]))"
    start, end, step = int(params["start"]), int(params["end"]), int(params["step"])
    # About 240 points, the end on the step's grid so that refreshes share timestamps.
    assert (step, end - start, end % step) == (15, 3600, 0)
    assert before - step <= end <= time.time()


@pytest.mark.asyncio
async def test_a_stat_panel_asks_for_the_value_now(api: Api, fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.answers["100 * min(aicc_acd_service_level_ratio)"] = vector(({}, "87.5"))
    r = await api.client.get(
        "/api/ops/query?dashboard=overview&panel=service_level", headers=api.auth("admin")
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"series": [{"name": "", "points": [[1700000000.0, 87.5]]}]}
    ((path, params),) = fake_prometheus.asked
    assert path == "/api/v1/query"
    assert params["query"] == "100 * min(aicc_acd_service_level_ratio)"
    assert abs(float(params["time"]) - time.time()) < 5


@pytest.mark.asyncio
async def test_every_query_of_a_panel_runs_and_names_its_series(
    api: Api, fake_prometheus: FakePrometheus
) -> None:
    running = "sum(llamacpp:requests_processing) or sum(vllm:num_requests_running)"
    waiting = "sum(llamacpp:requests_deferred) or sum(vllm:num_requests_waiting)"
    fake_prometheus.answers[running] = matrix(({}, [(1700000000, "1")]))
    fake_prometheus.answers[waiting] = matrix(({}, [(1700000000, "3")]))
    r = await api.client.get(
        "/api/ops/query?dashboard=ai_latency&panel=llm_busy&range=86400", headers=api.auth("auditor")
    )
    assert r.status_code == 200, r.text
    assert [(s["name"], s["points"]) for s in r.json()["series"]] == [
        ("running", [[1700000000.0, 1.0]]),
        ("waiting", [[1700000000.0, 3.0]]),
    ]
    assert sorted(p["query"] for _, p in fake_prometheus.asked) == [waiting, running]
    assert {p["step"] for _, p in fake_prometheus.asked} == {"360"}


def test_legends_are_templates_over_the_labels() -> None:
    labels = {"__name__": "up", "host": "app1", "queue": "support-en", "state": "idle"}
    assert series_name("{host}", labels) == "app1"
    assert series_name("{queue} {state}", labels) == "support-en idle"
    assert series_name("{queue} {missing}", labels) == "support-en "
    assert series_name("running", labels) == "running"
    assert series_name("", labels) == 'up{host="app1", queue="support-en", state="idle"}'
    assert series_name("", {}) == ""
    # Every shipped legend is a template that formats.
    for dashboard in DASHBOARDS:
        for panel in dashboard.panels:
            for query in panel.queries:
                series_name(query.legend, {"host": "h"})


def test_the_step_gives_about_240_points() -> None:
    assert [step_for(s) for s in (300, 3600, 6 * 3600, 86400, 7 * 86400)] == [2, 15, 90, 360, 2520]


@pytest.mark.asyncio
async def test_the_range_is_bounded(api: Api, fake_prometheus: FakePrometheus) -> None:
    auditor = api.auth("auditor")
    base = "/api/ops/query?dashboard=hosts&panel=cpu&range="
    for bad in ("299", "604801", "1h"):
        r = await api.client.get(base + bad, headers=auditor)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["problems"][0]["field"] == "query.range"
    for good, step in (("300", "2"), ("604800", "2520")):
        r = await api.client.get(base + good, headers=auditor)
        assert r.status_code == 200, r.text
        assert fake_prometheus.asked[-1][1]["step"] == step
    r = await api.client.get("/api/ops/query?dashboard=hosts&panel=cpu", headers=auditor)
    assert r.status_code == 200 and fake_prometheus.asked[-1][1]["step"] == "15"  # an hour by default


# ---------------------------------------------------------------- errors


@pytest.mark.asyncio
async def test_an_unknown_dashboard_or_panel_is_404(api: Api, fake_prometheus: FakePrometheus) -> None:
    for dashboard, panel in (("nope", "cpu"), ("hosts", "nope"), ("hosts", "calls_now")):
        r = await api.client.get(
            f"/api/ops/query?dashboard={dashboard}&panel={panel}", headers=api.auth("admin")
        )
        assert r.status_code == 404, r.text
        message = r.json()["error"]["message"]
        assert f"no panel '{panel}' in dashboard '{dashboard}'" in message and "overview" in message
    assert fake_prometheus.asked == []


@pytest.mark.asyncio
async def test_a_site_without_prometheus_says_so(api_db: ApiDatabase, api_users: dict[str, ApiUser]) -> None:
    async with open_api(api_db, api_users) as opened:
        auditor = opened.auth("auditor")
        assert (await opened.client.get("/api/ops/dashboards", headers=auditor)).json()[
            "prometheus_url"
        ] is None
        r = await opened.client.get("/api/ops/query?dashboard=hosts&panel=cpu", headers=auditor)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "no_prometheus"
    assert r.json()["error"]["message"].startswith("no [monitoring] host in this site")


@pytest.mark.asyncio
async def test_prometheus_down_is_502_naming_the_url_and_what_to_check(
    api_db: ApiDatabase, api_users: dict[str, ApiUser]
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with open_api(api_db, api_users, prometheus_url=url) as opened:
        r = await opened.client.get(
            "/api/ops/query?dashboard=hosts&panel=cpu", headers=opened.auth("auditor")
        )
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert error["code"] == "prometheus_unavailable"
    assert f"Prometheus at {url} cannot be reached" in error["message"]
    assert "systemctl status prometheus" in error["message"]


@pytest.mark.asyncio
async def test_prometheus_refusing_or_slow_is_502(
    api: Api, fake_prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    expr = panel_index()[("hosts", "cpu")].queries[0].expr
    fake_prometheus.answers[expr] = (
        400,
        {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"},
    )
    r = await api.client.get("/api/ops/query?dashboard=hosts&panel=cpu", headers=api.auth("auditor"))
    assert r.status_code == 502, r.text
    message = r.json()["error"]["message"]
    assert fake_prometheus.url in message and "bad_data: parse error at char 3" in message
    monkeypatch.setattr(prometheus, "TIMEOUT_S", 0.2)
    fake_prometheus.delay_s = 1.0
    r = await api.client.get("/api/ops/query?dashboard=hosts&panel=memory", headers=api.auth("auditor"))
    assert r.status_code == 502, r.text
    assert "did not answer within 0.2 s" in r.json()["error"]["message"]


# ---------------------------------------------------------------- the pages


@pytest.mark.asyncio
async def test_the_page_is_served_with_a_strict_policy(api: Api) -> None:
    r = await api.client.get("/ops")
    assert r.status_code == 301 and r.headers["location"].endswith("/ops/")
    r = await api.client.get("/ops/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp and "connect-src 'self';" in csp
    assert r.headers["permissions-policy"].startswith("microphone=()")
    assert 'id="ops"' in r.text


def test_the_page_loads_nothing_inline_or_from_elsewhere() -> None:
    html = (STATIC / "ops.html").read_text(encoding="utf-8")
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline scripts are refused by the CSP"
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith(("/static/", "/ops/", "data:")) for r in refs), refs
    assert "/static/vendor/uPlot.iife.min.js" in refs and "/static/vendor/uPlot.min.css" in refs
    for ref in refs:
        if ref.startswith("/static/") and "/vendor/" not in ref:  # vendor/ is built by scripts/build-web
            assert (STATIC / ref.removeprefix("/static/")).is_file(), ref


@pytest.mark.asyncio
async def test_the_runbook_has_an_anchor_per_alert_and_needs_ops_read(api: Api) -> None:
    r = await api.client.get("/ops/runbook", headers=api.auth("auditor"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert '<h2 id="alert-name-aicchostdown">AiccHostDown</h2>' in r.text
    # The browser's session cookie is enough.
    cookie = {"Cookie": f"aicc_session={api.users['admin'].token}"}
    assert (await api.client.get("/ops/runbook", headers=cookie)).status_code == 200
    r = await api.client.get("/ops/runbook", headers=api.auth("agent"))
    assert r.status_code == 403 and "'ops.read'" in r.text and 'href="/ops/"' in r.text
    r = await api.client.get("/ops/runbook")
    assert r.status_code == 401 and "Sign in on the operations page" in r.text


def test_runbook_markdown_is_text_never_markup() -> None:
    html = render(
        "# Runbook\n\n## AiccQueueStuck\n\nText <script>alert(1)</script> [x](javascript:alert(1))\n\n"
        "## Not an alert name\n"
    )
    assert '<h2 id="alert-name-aiccqueuestuck">AiccQueueStuck</h2>' in html
    assert "<script>" not in html and 'href="javascript:' not in html
    assert "<h2>Not an alert name</h2>" in html
