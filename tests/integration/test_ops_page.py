"""The operations page (/ops/) in a real Chromium (Debian's, driven by Playwright) against the lab: an
auditor, made through the API by the admin, signs in; every dashboard's tab draws all its panels from
the site's Prometheus without an error (a panel may be empty: whether every query has data is the
monitoring tests' business); the page keeps to its Content-Security-Policy; an agent is told the page
is not for them. A screenshot of each dashboard goes to the artifacts folder (AICC_ARTIFACTS, default
the site's artifacts/ops).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from aicc.monitoring.panels import DASHBOARDS
from tests.integration.appliance_fixture import Appliance
from tests.integration.test_agent_desktop import CHROMIUM, _login, _user

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# A panel's states on the page (data-state): drawn, or drawn with nothing in the range.
DRAWN = {"ok", "empty"}


async def walk_dashboards(url: str, username: str, password: str, artifacts: Path) -> dict[str, Any]:
    """Sign in on url/ops/, open each dashboard's tab and wait until every panel has its answer; the
    panels' states and messages by dashboard, the console's errors and the CSP's refusals."""
    from playwright.async_api import async_playwright

    out: dict[str, Any] = {"panels": {}, "console": []}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            # The lab's certificates are the site CA's; this browser does not know that CA.
            context = await browser.new_context(
                ignore_https_errors=True, viewport={"width": 1366, "height": 768}, locale="en-US"
            )
            page = await context.new_page()
            page.on(
                "console",
                lambda m: out["console"].append(m.text) if m.type in ("error", "warning") else None,
            )
            await _login(page, f"{url}/ops/", username, password)
            await page.wait_for_selector("#ops-tabs .ops-tab", timeout=15_000)
            for number, dashboard in enumerate(DASHBOARDS):
                await page.click(f"#ops-tab-{dashboard.id}")
                await page.wait_for_selector(f"#ops-tab-{dashboard.id}[aria-selected=true]")
                # Each panel leaves "loading" when its query answers (10 s at most in the API).
                await page.wait_for_function(
                    "n => document.querySelectorAll('.ops-panel').length === n && "
                    "!document.querySelector('.ops-panel[data-state=loading]')",
                    arg=len(dashboard.panels),
                    timeout=30_000,
                )
                out["panels"][dashboard.id] = await page.eval_on_selector_all(
                    ".ops-panel",
                    "cards => cards.map(c => [c.dataset.panel, c.dataset.state, "
                    "c.querySelector('.ops-panel-message').textContent, !!c.querySelector('.u-over')])",
                )
                await page.screenshot(path=str(artifacts / f"{number:02d}-{dashboard.id}.png"))
            # The PromQL behind a panel, for SREs.
            await page.click("#ops-tab-hosts")
            await page.click(".ops-panel[data-panel=cpu] .ops-promql summary")
            out["promql"] = await page.text_content(".ops-panel[data-panel=cpu] .ops-promql-code")
            await page.screenshot(path=str(artifacts / "hosts-promql.png"))
        finally:
            await browser.close()
    return out


async def refused_page(url: str, username: str, password: str, artifacts: Path) -> str:
    """What the page says to a role without ops.read."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            context = await browser.new_context(ignore_https_errors=True, locale="en-US")
            page = await context.new_page()
            await _login(page, f"{url}/ops/", username, password)
            await page.wait_for_selector("#ops-forbidden:not([hidden])", timeout=15_000)
            await page.screenshot(path=str(artifacts / "agent-refused.png"))
            return str(await page.text_content("#ops-forbidden"))
        finally:
            await browser.close()


def test_an_auditor_sees_every_dashboard_drawn_from_prometheus(appliance: Appliance) -> None:
    artifacts = Path(os.environ.get("AICC_ARTIFACTS", appliance.site.site / "artifacts")) / "ops"
    artifacts.mkdir(parents=True, exist_ok=True)
    dashboards = appliance.api("GET", "/api/ops/dashboards").json()
    assert dashboards["prometheus_url"], "the lab has a [monitoring] host: app.yml must name its Prometheus"
    _, auditor_password = _user(appliance, "ops-auditor", "auditor")
    _, agent_password = _user(appliance, "ops-agent", "agent")

    out = asyncio.run(walk_dashboards(appliance.url, "ops-auditor", auditor_password, artifacts))
    for dashboard in DASHBOARDS:
        drawn = out["panels"][dashboard.id]
        assert sorted(p[0] for p in drawn) == sorted(p.id for p in dashboard.panels), drawn
        series = {p.id for p in dashboard.panels if p.kind == "timeseries"}
        for panel, state, message, plotted in drawn:
            assert state in DRAWN and "error" not in message.lower(), (dashboard.id, panel, state, message)
            # A time series with data is a real uPlot chart.
            assert plotted or state != "ok" or panel not in series, (dashboard.id, panel)
    # Prometheus scrapes itself and every exporter: the hosts' dashboard always has data.
    assert ("targets_up", "ok") in {(p[0], p[1]) for p in out["panels"]["hosts"]}, out["panels"]["hosts"]
    assert 'rate(node_cpu_seconds_total{mode="idle"}[5m])' in out["promql"], out["promql"]
    refused = [m for m in out["console"] if "Content Security Policy" in m or "Refused" in m]
    assert not refused, refused

    message = asyncio.run(refused_page(appliance.url, "ops-agent", agent_password, artifacts))
    assert "administrators and auditors" in message and "Agent" in message, message
