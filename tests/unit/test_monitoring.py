"""Alerting rules, SLOs and panels as code: promtool checks and tests every alert both ways, the
runbook has a section for every alert, broken definitions name their file and field."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from aicc.installer.alerts import parse
from aicc.monitoring import panels, render
from aicc.monitoring.model import Alert, AlertCase, Group, Record
from aicc.monitoring.rules import GROUPS, HOSTS
from aicc.monitoring.selectors import selectors
from aicc.monitoring.slo import DefinitionError, load_slo, load_slos, slo_dir

RUNBOOK = Path(render.__file__).with_name("runbook.md")
BASE = "https://10.0.0.5/ops/runbook"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool") or "/usr/bin/promtool"
    assert Path(exe).exists(), "promtool is needed: apt-get install prometheus"
    return subprocess.run([exe, *args], capture_output=True, text=True, check=False, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> render.Written:
    return render.write_rules(tmp_path_factory.mktemp("rules"), BASE)


def test_rule_files_pass_promtool_check(rendered: render.Written) -> None:
    check = promtool("check", "rules", *map(str, rendered.rule_files), cwd=rendered.folder)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("SUCCESS") == len(rendered.rule_files)


def test_every_alert_case_passes_promtool_test(rendered: render.Written) -> None:
    result = promtool("test", "rules", rendered.test_file.name, cwd=rendered.folder)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    tests = yaml.safe_load(rendered.test_file.read_text())["tests"]
    names = {t["alert_rule_test"][0]["alertname"] for t in tests}
    assert names == {a.name for a in render.all_alerts()}


def test_a_wrong_case_fails_promtool(tmp_path: Path) -> None:
    """The harness can fail: a case claiming a normal host is down must not pass."""
    down = next(a for a in HOSTS.alerts if a.name == "AiccHostDown")
    quiet = next(c for c in down.cases if not c.fires)
    wrong = down.model_copy(update={"cases": [quiet.model_copy(update={"fires": True}), quiet]})
    group = Group(name="aicc-wrong", rules=[wrong])
    (tmp_path / render.TEST_RULES).mkdir()
    for name, text in render.rule_files(BASE, [group], annotations=False).items():
        (tmp_path / render.TEST_RULES / name).write_text(text)
    (tmp_path / "t.yml").write_text(render.test_file([group]))
    result = promtool("test", "rules", "t.yml", cwd=tmp_path)
    assert result.returncode != 0 and "AiccHostDown" in result.stdout + result.stderr


def test_alerts_follow_the_mixin_style_guide(rendered: render.Written) -> None:
    seen: set[str] = set()
    for path in rendered.rule_files:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]
                    continue
                name = rule["alert"]
                assert name not in seen, f"alert {name} defined twice"
                seen.add(name)
                assert re.fullmatch(r"Aicc([A-Z][a-z0-9]*)+", name)
                assert rule["labels"]["severity"] in ("critical", "warning", "info")
                notes = rule["annotations"]
                assert notes["summary"].strip() and notes["description"].strip()
                assert notes["runbook_url"] == f"{BASE}#alert-name-{name.lower()}"


def test_runbook_has_a_section_for_every_alert_and_no_orphans() -> None:
    sections = set(re.findall(r"^## (Aicc\w+)\s*$", RUNBOOK.read_text(encoding="utf-8"), re.M))
    alerts = {a.name for a in render.all_alerts()}
    assert alerts - sections == set(), "alerts without a runbook section"
    assert sections - alerts == set(), "runbook sections of alerts that no longer exist"


def test_every_expression_parses_and_panels_use_defined_recording_rules() -> None:
    groups = render.all_groups()
    records = {r.record for g in groups for r in g.rules if isinstance(r, Record)}
    for g in groups:
        for r in g.rules:
            assert selectors(r.expr) or r.expr.startswith("vector("), f"{g.name}: no selector in {r.expr!r}"
    for where, expr in panels.all_queries():
        for sel in selectors(expr):
            if sel.metric.count(":") == 2 and not sel.metric.startswith("llamacpp:"):
                assert sel.metric in records, f"{where}: recording rule {sel.metric} is not defined"


def test_no_rule_or_panel_groups_by_a_per_call_label() -> None:
    """Cardinality stays bounded: no call ids, numbers or URIs of callers in any expression."""
    exprs = [r.expr for g in render.all_groups() for r in g.rules] + [q for _, q in panels.all_queries()]
    for expr in exprs:
        assert not re.search(r"call_id|caller|from_uri|contact_id|number", expr), expr


def test_slo_burn_rates_follow_sloth_tiers() -> None:
    slo = next(s for s in load_slos() if s.name == "call-setup")
    group = next(g for g in render.all_groups() if g.name == "aicc-slo-call-setup")
    fast = next(a for a in group.alerts if a.name.endswith("Fast"))
    slow = next(a for a in group.alerts if a.name.endswith("Slow"))
    budget = round(1 - slo.objective / 100, 10)
    for window, rate in (("1h", 14.4), ("5m", 14.4), ("6h", 6.0), ("30m", 6.0)):
        assert f'ratio_rate{window}{{slo="call-setup"}} > ({rate} * {budget})' in fast.expr
    for window, rate in (("1d", 3.0), ("2h", 3.0), ("3d", 1.0), ("6h", 1.0)):
        assert f'ratio_rate{window}{{slo="call-setup"}} > ({rate} * {budget})' in slow.expr
    assert (fast.severity, slow.severity) == ("critical", "warning")


GOOD_SLO = (slo_dir() / "call-setup.yml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (("objective: 99.5", "objective: 100"), "objective", "less than 100"),
        (("[{window}]))\n", "[5m]))\n"), "sli.errors", "{window}"),
        (("fires: [slow]", "fires: [slowly]"), "cases.1.fires", "slowly"),
        (("name: call-setup", "name: call-set-up"), "name", "file name"),
        (("': '0+6x120'", "': 0x120"), "cases.1.series", "valid string"),
        (("alert_prefix: AiccCallSetup", "alert_prefix: callSetup"), "alert_prefix", "pattern"),
        (("objective: 99.5", "objective: 99.5\ncolour: red"), "colour", "Extra inputs"),
    ],
)
def test_a_broken_slo_names_the_file_and_field(
    tmp_path: Path, change: tuple[str, str], field: str, words: str
) -> None:
    assert change[0] in GOOD_SLO
    path = tmp_path / "call-setup.yml"
    path.write_text(GOOD_SLO.replace(change[0], change[1], 1), encoding="utf-8")
    with pytest.raises(DefinitionError) as err:
        load_slo(path)
    assert err.value.path == path and err.value.field.startswith(field), str(err.value)
    assert words in str(err.value)


def test_an_slo_whose_cases_never_fire_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "call-setup.yml"
    path.write_text(
        GOOD_SLO.replace("fires: [fast, slow]", "fires: []").replace("fires: [slow]", "fires: []")
    )
    with pytest.raises(DefinitionError, match="cases"):
        load_slo(path)


def test_an_alert_without_a_firing_case_is_refused() -> None:
    with pytest.raises(ValueError, match="one case that fires and one that does not"):
        Alert(
            name="AiccSomething",
            expr="up == 0",
            severity="warning",
            summary="s",
            description="d",
            cases=[AlertCase(series={"up": "1x5"}, fires=False)],
        )


def test_stale_rule_files_are_removed_on_render(tmp_path: Path) -> None:
    (tmp_path / "aicc-gone.rules.yml").write_text("groups: []\n")
    written = render.write_rules(tmp_path, BASE)
    assert not (tmp_path / "aicc-gone.rules.yml").exists()
    assert {p.name for p in written.rule_files} == {f"{g.name}.rules.yml" for g in render.all_groups()}
    assert len(GROUPS) + len(load_slos()) + 1 == len(written.rule_files)


def test_alerts_are_listed_firing_first_then_by_severity() -> None:
    raw = [
        {"labels": {"alertname": "AiccB", "severity": "warning", "host": "h"}, "state": "firing"},
        {"labels": {"alertname": "AiccA", "severity": "critical"}, "state": "pending"},
        {
            "labels": {"alertname": "AiccC", "severity": "critical", "host": "h"},
            "annotations": {"summary": "x", "runbook_url": "u"},
            "state": "firing",
            "activeAt": "2026-12-03T10:00:00.123Z",
        },
    ]
    alerts = parse(raw)  # type: ignore[arg-type]
    assert [(a.name, a.state) for a in alerts] == [
        ("AiccC", "firing"),
        ("AiccB", "firing"),
        ("AiccA", "pending"),
    ]
    assert alerts[0].since == "2026-12-03 10:00:00" and alerts[0].runbook_url == "u"
