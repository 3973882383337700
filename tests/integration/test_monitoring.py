"""Monitoring against the live lab: after an install and a real call, every rule and every panel reads
series that exist in the site's Prometheus (no misspelled metric, label or job, no empty panel),
every rule group evaluates without error, and `aicc alerts` reads what fires."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from aicc.installer.site import Site
from aicc.installer.smoke import SmokeParams, run_smoke
from aicc.monitoring import panels, render
from aicc.monitoring.model import Alert
from aicc.monitoring.selectors import Selector, selectors
from tests.integration.site_fixture import AICC, InstalledSite
from tests.integration.test_core_roles import prometheus_query as query
from tests.integration.test_voicebot import proxy_of

# Labels whose values are fixed by the exporters (bucket bounds, scrape jobs, our own pre-created
# label values): the exact value must exist. For other labels (status="5xx", a rare event) the
# label name must exist on the metric.
EXACT = {"le", "job", "stage", "slo", "mode", "mountpoint"}


def missing(url: str, sel: Selector) -> str | None:
    """Why `sel` reads nothing on the live Prometheus, or None when it reads series."""
    if not query(url, f"count({sel.metric})"):
        return f"metric {sel.metric} has no series (misspelled, or not exported)"
    for label, op, value in sel.matchers:
        if label in EXACT and op == "=":
            if not query(url, f'count({sel.metric}{{{label}="{value}"}})'):
                return f'{sel.metric} has no series with {label}="{value}"'
        elif not query(url, f'count({sel.metric}{{{label}=~".+"}})'):
            return f"{sel.metric} has no label {label}"
    return None


@pytest.fixture(scope="module")
def prometheus(installed_site: InstalledSite) -> str:
    """The site's Prometheus after a real call through the SIP proxy, the media relay and the bot
    (so the call metrics exist), scraped at least twice since."""
    settings = Site(installed_site.site).settings()
    params = SmokeParams(proxy=proxy_of(installed_site), target="sip:4000@aicc.local", lang="en")
    asyncio.run(run_smoke(params))  # its own test judges the answer; here only the metrics matter
    time.sleep(2 * settings.monitoring.scrape_interval_s + 2)
    return f"http://{installed_site.address_of('monitoring')}:{settings.monitoring.prometheus_port}"


def test_every_rule_reads_series_that_exist(prometheus: str) -> None:
    problems = []
    for group in render.all_groups():
        for rule in group.rules:
            name = rule.name if isinstance(rule, Alert) else rule.record
            for sel in selectors(rule.expr):
                if sel.metric.count(":") == 2 and not sel.metric.startswith("llamacpp:"):
                    continue  # a recording rule of ours: checked by the unit tests, read through its inputs
                if sel.metric.startswith("vllm:"):
                    continue  # the GPU engine's: the lab runs llama.cpp (its rules share an alert with it)
                if why := missing(prometheus, sel):
                    problems.append(f"{group.name} {name}: {why}")
    assert not problems, "\n".join(sorted(set(problems)))


def test_every_panel_shows_data(prometheus: str) -> None:
    # Recording rules evaluate every 15 s, the 28-day budget every 5 minutes: wait for them once.
    deadline = time.monotonic() + 330
    while True:
        empty = [where for where, expr in panels.all_queries() if not query(prometheus, expr)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(10)
    assert not empty, f"panels without data on the live lab: {empty}"


def test_every_rule_group_is_loaded_and_evaluates_without_error(prometheus: str) -> None:
    with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=20) as r:
        groups = {g["name"]: g for g in json.load(r)["data"]["groups"]}
    assert set(groups) == {g.name for g in render.all_groups()}
    errors = [
        f"{g['name']} {rule.get('name')}: {rule['lastError']}"
        for g in groups.values()
        for rule in g["rules"]
        if rule.get("health") == "err"
    ]
    assert not errors, errors


def test_alerts_verb_lists_what_prometheus_evaluates(installed_site: InstalledSite, prometheus: str) -> None:
    out = subprocess.run(
        [AICC, "alerts", "-i", str(installed_site.inventory), "--json", "--pending"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode in (0, 1), out.stderr
    listed = json.loads(out.stdout)["alerts"]
    with urllib.request.urlopen(f"{prometheus}/api/v1/alerts", timeout=20) as r:
        live = {a["labels"]["alertname"] for a in json.load(r)["data"]["alerts"]}
    assert {a["name"] for a in listed} <= live
    for alert in listed:
        assert alert["runbook_url"].endswith(f"/ops/runbook#alert-name-{alert['name'].lower()}")
        assert alert["severity"] in ("critical", "warning", "info")
