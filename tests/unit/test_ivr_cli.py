"""`aicc ivr validate` and `aicc ivr simulate` as a user meets them: exit codes, messages, --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aicc.appliance.ivr.flow import shipped_flows
from aicc.installer.ivr import app

RETAIL_EN = str(shipped_flows()["retail-en"])
BANK = str(shipped_flows()["bank-card"])


def ivr(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr


def broken_flow(tmp_path: Path) -> Path:
    data = yaml.safe_load(Path(RETAIL_EN).read_text())
    data["nodes"]["bot"]["next"] = "bott"
    data["nodes"]["bye"]["say"] = {"zh": "再见"}
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


@pytest.mark.parametrize("name", ["retail-en", "retail-zh", "bank-card"])
def test_validate_a_shipped_flow(name: str) -> None:
    code, out, _ = ivr("validate", str(shipped_flows()[name]))
    assert code == 0
    assert out.startswith("ok: ") and " nodes, languages " in out


def test_validate_lists_every_problem_with_file_and_field_and_exits_2(tmp_path: Path) -> None:
    path = broken_flow(tmp_path)
    code, out, err = ivr("validate", str(path))
    assert code == 2 and out == ""
    assert f"{path}: nodes.bot.next: unknown node 'bott' (nodes: customer," in err
    assert f"{path}: nodes.bye.say: no en text (the flow's languages: en)" in err
    assert "2 problem(s)" in err


def test_validate_json(tmp_path: Path) -> None:
    code, out, _ = ivr("validate", BANK, "--json")
    assert code == 0
    assert json.loads(out) == {
        "ok": True,
        "file": BANK,
        "name": "bank-card",
        "nodes": 12,
        "languages": ["zh", "en"],
    }
    code, out, _ = ivr("validate", str(broken_flow(tmp_path)), "--json")
    doc = json.loads(out)
    assert code == 2 and doc["ok"] is False
    assert {p["field"] for p in doc["problems"]} == {"nodes.bot.next", "nodes.bye.say"}


def test_validate_a_missing_file_exits_2(tmp_path: Path) -> None:
    code, _, err = ivr("validate", str(tmp_path / "nope.yml"))
    assert code == 2 and "nope.yml" in err and "cannot read the flow" in err


def test_validate_checks_calendars_against_a_site_file(tmp_path: Path) -> None:
    data = yaml.safe_load(Path(RETAIL_EN).read_text())
    data["nodes"]["hours"]["calendar"] = "shop"
    flow = tmp_path / "flow.yml"
    flow.write_text(yaml.safe_dump(data))
    code, _, err = ivr("validate", str(flow))
    assert code == 2 and "nodes.hours.calendar: unknown calendar 'shop' (calendars: always, cn-office)" in err
    calendars = tmp_path / "cal.yml"
    calendars.write_text(
        "calendars:\n  - {name: shop, timezone: Europe/Paris, weekly: {sat: [['10:00', '19:00']]}}\n"
    )
    assert ivr("validate", str(flow), "--calendars", str(calendars))[0] == 0


def test_simulate_prints_the_path_and_the_outcome() -> None:
    code, out, _ = ivr("simulate", RETAIL_EN, "--input", "bot:transfer:create_return,queue:served,5")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("retail-en at ") and "caller 13800138000" in lines[0]
    walked = [line.split()[1] for line in lines[1:] if line[:3].strip().isdigit()]
    assert walked == ["customer", "hours", "bot", "returns_agents", "survey", "bye"]
    assert "queue support-en" in out and "score 5" in out
    assert "outcome: hangup_by_flow" in out
    assert "intent=create_return" in out
    code, out, _ = ivr("simulate", BANK, "--input", "1,bot:end,5")
    assert code == 0 and "heard keys 1; option 1; -> bot" in out


def test_simulate_at_a_closed_hour_with_a_site_calendar(tmp_path: Path) -> None:
    calendars = tmp_path / "cal.yml"
    # The site redefines the demo's `always` as office hours.
    calendars.write_text(
        "calendars:\n  - {name: always, timezone: Asia/Shanghai, weekly: {thu: [['09:00', '18:00']]}}\n"
    )
    args = ["simulate", RETAIL_EN, "--calendars", str(calendars), "--input", "1", "--json"]
    code, out, _ = ivr(*args, "--at", "2026-12-24 20:00")
    doc = json.loads(out)
    assert code == 0 and doc["outcome"] == "hangup_by_flow"
    assert [s["node"] for s in doc["path"]][1:5] == ["hours", "closed", "offer_callback", "callback_taken"]
    assert "closed" in doc["path"][1]["detail"]
    open_args = ["simulate", RETAIL_EN, "--calendars", str(calendars), "--input", "bot:end,5", "--json"]
    open_doc = json.loads(ivr(*open_args, "--at", "2026-12-24T02:00+00:00")[1])  # 10:00 in Shanghai
    assert open_doc["path"][2]["node"] == "bot"


def test_simulate_json_document() -> None:
    code, out, _ = ivr(
        "simulate", BANK, "--input", "9,2,queue:callback", "--lang", "zh", "--json", "--caller", "100"
    )
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True
    assert doc["flow"] == "bank-card" and doc["caller"] == "100" and doc["outcome"] == "hangup_by_flow"
    assert doc["variables"]["language"] == "en"
    assert [s["node"] for s in doc["path"]][-3:] == ["lost_card", "callback_taken", "bye"]
    assert doc["unused_inputs"] == []


def test_simulate_reports_unused_inputs() -> None:
    code, out, _ = ivr("simulate", RETAIL_EN, "--input", "bot:end,5,3,3")
    assert code == 0 and "unused inputs (the call ended first): 3, 3" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "1,press2"], "--input: input 2: 'press2' is not an input"),
        (["--lang", "fr"], "--lang 'fr' is not one of the flow's languages"),
        (["--at", "24 Dec"], "--at '24 Dec' is not a date and time"),
    ],
)
def test_simulate_input_errors_exit_2(args: list[str], message: str) -> None:
    code, out, err = ivr("simulate", RETAIL_EN, *args)
    assert code == 2 and out == "" and message in err
    code, out, _ = ivr("simulate", RETAIL_EN, *args, "--json")
    assert code == 2 and message in json.loads(out)["error"]


def test_simulate_a_script_that_does_not_fit_the_flow_exits_2() -> None:
    code, out, err = ivr("simulate", RETAIL_EN, "--input", "queue:served")
    assert code == 2
    assert "input 1 'queue:served' is for a queue node" in err and "outcome: error: node bot:" in out
    code, out, _ = ivr("simulate", RETAIL_EN, "--input", "queue:served", "--json")
    assert code == 2 and json.loads(out)["error"].startswith("--input: input 1 'queue:served'")


def test_simulate_a_looping_flow_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "loop.yml"
    path.write_text(
        "name: loop\nlanguages: [en]\nlanguage: en\nstart: a\nnodes:\n"
        "  a: {type: play, say: A, next: b}\n"
        "  b: {type: menu, say: B, retries: 0, options: {'1': {next: bye}}, no_input: a}\n"
        "  bye: {type: hangup}\n"
    )
    code, out, _ = ivr("simulate", str(path))
    assert code == 1 and "outcome: loop_limit" in out and "the flow loops" in out


def test_help_teaches_with_examples() -> None:
    for verb in ("validate", "simulate"):
        code, out, _ = ivr(verb, "--help")
        assert code == 0 and "Example: aicc ivr " + verb in " ".join(out.split())
    assert "Exit codes" in ivr("--help")[1]
