"""IVR flow documents and business calendars: what an admin writing them sees when something is wrong."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from aicc.appliance.documents import DocumentError, load_text
from aicc.appliance.ivr.calendar import Calendar, CalendarSet, load_calendars
from aicc.appliance.ivr.flow import Flow, MenuNode, load_flow, load_flow_text, parse_flow, shipped_flows
from tests.unit.hostile_files import HOSTILE, Hostile, write

WHERE = "flows/x.yml"

# A small valid flow; each test breaks one thing in a copy of it.
BASE: dict[str, Any] = {
    "name": "test-flow",
    "languages": ["en", "zh"],
    "language": "en",
    "calendar": "always",
    "start": "menu",
    "nodes": {
        "menu": {
            "type": "menu",
            "say": {"en": "Press 1 for the bot, 2 for an agent.", "zh": "机器人请按1，人工请按2。"},
            "options": {
                "1": {"next": "bot", "words": {"en": ["orders"], "zh": ["订单"]}},
                "2": {"next": "queue", "words": {"en": ["agent"], "zh": ["人工"]}},
            },
            "no_input": "bot",
            "no_match": "bot",
        },
        "bot": {"type": "bot", "bot": "retail", "transfer": "queue", "next": "bye"},
        "queue": {"type": "queue", "queue": "support-en", "next": "bye"},
        "bye": {"type": "hangup", "say": "Bye. 再见。"},
    },
}


def flow_with(**changes: Any) -> dict[str, Any]:
    """A deep copy of BASE with changes: "nodes.menu.retries" style keys; None deletes."""
    data: dict[str, Any] = yaml.safe_load(yaml.safe_dump(BASE, allow_unicode=True, sort_keys=False))
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = data
        for part in parents:
            target = target[part]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return data


def problems(data: dict[str, Any], calendars: list[str] | None = None) -> list[str]:
    with pytest.raises(DocumentError) as info:
        parse_flow(data, WHERE, calendars=calendars)
    assert info.value.where == WHERE
    return [f"{field}: {message}" for field, message in info.value.problems]


def test_the_base_flow_is_valid() -> None:
    flow = parse_flow(flow_with(), WHERE, calendars=["always"])
    assert list(flow.nodes) == ["menu", "bot", "queue", "bye"]


def test_an_edge_to_an_unknown_node_names_file_node_field_and_the_nodes() -> None:
    data = flow_with(nodes__menu__options__2__next="queu")
    with pytest.raises(DocumentError) as info:
        parse_flow(data, WHERE)
    assert str(info.value) == (
        "flows/x.yml: nodes.menu.options.2.next: unknown node 'queu' (nodes: menu, bot, queue, bye)"
    )


def test_unknown_start_and_every_kind_of_edge_are_checked() -> None:
    data = flow_with(
        start="hello", nodes__bot__transfer={"default": "queue", "intents": {"create_return": "ret"}}
    )
    data["nodes"]["queue"]["no_agents"] = "sorry"
    found = problems(data)
    assert "start: unknown node 'hello' (nodes: menu, bot, queue, bye)" in found
    assert any(p.startswith("nodes.bot.transfer.intents.create_return: unknown node 'ret'") for p in found)
    assert any(p.startswith("nodes.queue.no_agents: unknown node 'sorry'") for p in found)


def test_unreachable_nodes_are_named() -> None:
    data = flow_with()
    data["nodes"]["orphan"] = {"type": "play", "say": "never heard", "next": "bye"}
    data["nodes"]["orphan2"] = {"type": "play", "say": "never heard", "next": "orphan"}
    found = problems(data)
    assert len(found) == 1
    assert found[0].startswith("nodes: not reachable from start 'menu': orphan, orphan2")


def test_a_flow_must_have_a_node_that_ends_the_call() -> None:
    data = flow_with(nodes__bye={"type": "play", "say": "bye", "next": "menu"})
    assert any("no node ends the call" in p and "type: hangup" in p for p in problems(data))


def test_menu_keys_are_single_dtmf_keys() -> None:
    data = flow_with()
    data["nodes"]["menu"]["options"]["12"] = {"next": "bye"}
    data["nodes"]["menu"]["options"]["*"] = {"next": "bye"}
    found = problems(data)
    assert found == [
        "nodes.menu.options.12: an option key is one DTMF key: 0-9, * or # (quote * and # in YAML)"
    ]


def test_menu_keys_written_as_yaml_numbers_are_keys() -> None:
    text = (
        yaml.safe_dump(BASE, allow_unicode=True, sort_keys=False).replace("'1':", "1:").replace("'2':", "2:")
    )
    assert "  1:" in text
    flow = load_flow_text(text, WHERE)
    menu = flow.nodes["menu"]
    assert isinstance(menu, MenuNode) and list(menu.options) == ["1", "2"]


def test_a_spoken_word_may_choose_only_one_option() -> None:
    data = flow_with(nodes__menu__options__2__words={"en": ["agent", "Orders"], "zh": ["人工"]})
    assert problems(data) == [
        "nodes.menu.options.2.words.en: 'Orders' is also a word of option 1 "
        "(a spoken word must choose one option)"
    ]


def test_collect_min_digits_cannot_exceed_max_digits() -> None:
    data = flow_with(nodes__bot__next="order")
    data["nodes"]["order"] = {
        "type": "collect",
        "say": "Your order number?",
        "var": "order_id",
        "min_digits": 8,
        "max_digits": 6,
        "next": "bye",
    }
    assert problems(data) == ["nodes.order.min_digits: 8 is more than max_digits (6)"]


def test_schema_errors_name_the_node_and_field_without_the_type_tag() -> None:
    data = flow_with(nodes__menu__retries=9, nodes__bot__colour="red")
    data["nodes"]["queue"].pop("next")
    found = problems(data)
    assert "nodes.menu.retries: Input should be less than or equal to 5; found 9" in found
    assert "nodes.bot.colour: not a known field" in found
    assert "nodes.queue.next: required, but missing" in found


def test_an_unknown_or_missing_node_type_is_named() -> None:
    data = flow_with(nodes__bot={"type": "robot", "next": "bye"}, nodes__queue={"queue": "x", "next": "bye"})
    found = problems(data)
    assert any(
        p.startswith("nodes.bot.type: expected a node type: play, menu, collect") and "'robot'" in p
        for p in found
    )
    assert "nodes.queue.type: required, but missing" in found


def test_texts_must_cover_every_language_of_the_flow() -> None:
    data = flow_with(nodes__menu__say={"en": "Press 1."})
    assert problems(data) == ["nodes.menu.say: no zh text (the flow's languages: en, zh)"]


def test_a_text_may_use_only_known_variables() -> None:
    data = flow_with(nodes__bye__say="Goodbye ${name}, caller ${caller}.")
    found = problems(data)
    assert len(found) == 1 and found[0].startswith("nodes.bye.say: unknown variable ${name} (known: caller,")
    data["nodes"]["menu"]["options"]["1"]["set"] = {"name": "friend"}
    assert parse_flow(data, WHERE).nodes["bye"]


def test_language_can_only_be_set_to_a_language_of_the_flow() -> None:
    data = flow_with(nodes__menu__options__1__set={"language": "fr"})
    assert problems(data) == [
        "nodes.menu.options.1.set.language: 'fr' is not one of the flow's languages (en, zh)"
    ]


def test_a_queue_by_language_needs_every_language() -> None:
    data = flow_with(nodes__queue__queue={"en": "support-en"})
    assert problems(data) == ["nodes.queue.queue: no queue for zh (the flow's languages: en, zh)"]


def test_hours_nodes_need_a_known_calendar() -> None:
    data = flow_with(calendar=None, nodes__bot__next="hours")
    data["nodes"]["hours"] = {"type": "hours", "open": "queue", "closed": "bye"}
    assert problems(data) == ["nodes.hours.calendar: no calendar here and no flow-level calendar"]
    data["nodes"]["hours"]["calendar"] = "office"
    assert problems(data, calendars=["always", "cn-office"]) == [
        "nodes.hours.calendar: unknown calendar 'office' (calendars: always, cn-office)"
    ]


def test_every_problem_is_reported_at_once() -> None:
    data = flow_with(language="zh", nodes__menu__options__1__next="bott", nodes__bye__say={"en": "Bye"})
    data["languages"] = ["en"]
    data["nodes"]["menu"]["say"] = {"en": "Press 1."}
    found = problems(data)
    assert "language: 'zh' is not one of languages (en)" in found
    assert any(p.startswith("nodes.menu.options.1.next: unknown node 'bott'") for p in found)


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text("name: x\nnodes:\n  a: {type: play\n")
    with pytest.raises(DocumentError) as info:
        load_flow(path)
    assert str(path) in str(info.value) and "not valid YAML: line" in str(info.value)


@pytest.mark.parametrize("case", HOSTILE, ids=[h.name for h in HOSTILE])
def test_a_flow_or_calendar_file_that_is_not_utf8_text(tmp_path: Path, case: Hostile) -> None:
    path = write(tmp_path, case, "flow.yml")
    for load in (load_flow, load_calendars):
        with pytest.raises(DocumentError) as info:
            load(path)
        assert info.value.where == f"{path}:{case.line}" and case.says in str(info.value)


def test_a_flow_in_utf8_with_chinese_and_a_bom_is_read(tmp_path: Path) -> None:
    source = shipped_flows()["retail-zh"].read_bytes()
    path = tmp_path / "retail-zh.yml"
    path.write_bytes(b"\xef\xbb\xbf" + source)
    assert load_flow(path).name == load_flow(shipped_flows()["retail-zh"]).name


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DocumentError) as info:
        load_flow(tmp_path / "nope.yml")
    assert "nope.yml" in str(info.value) and "cannot read the flow" in str(info.value)


@pytest.mark.parametrize("name", ["retail-en", "retail-zh", "bank-card"])
def test_the_shipped_flows_are_valid(name: str) -> None:
    calendars = load_calendars()
    flow = load_flow(shipped_flows()[name], calendars=calendars)
    assert flow.name == name
    assert flow.calendar in calendars


# Calendars ---------------------------------------------------------------------------------------

OFFICE = """
calendars:
  - name: office
    timezone: Asia/Shanghai
    weekly:
      mon: [["09:00", "12:00"], [13:00, 18:00]]   # unquoted 13:00 is a base-60 number in YAML 1.1
      tue: [["09:00", "18:00"]]
      wed: [["09:00", "18:00"]]
      thu: [["09:00", "18:00"]]
      fri: [["09:00", "18:00"]]
      sat: [["10:00", "14:00"]]
    holidays:
      - {date: 2026-05-01, name: 劳动节}
      - {from: 2026-10-01, to: 2026-10-07, name: 国庆节}
    open_days:
      - {date: 2026-10-10, hours: [["09:00", "17:00"]], name: 国庆节调休}
"""


def calendar(text: str = OFFICE) -> Calendar:
    return load_text(CalendarSet, text, "calendars.yml").calendars[0]


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def test_weekly_hours_are_start_inclusive_end_exclusive() -> None:
    office = calendar()
    assert office.is_open(at("2026-12-21 08:59")) == "closed"  # a Monday
    assert office.is_open(at("2026-12-21 09:00")) == "open"
    assert office.is_open(at("2026-12-21 12:30")) == "closed"  # lunch
    assert office.is_open(at("2026-12-21 17:59:59")) == "open"
    assert office.is_open(at("2026-12-21 18:00")) == "closed"
    assert office.is_open(at("2026-12-26 11:00")) == "open"  # Saturday morning
    assert office.is_open(at("2026-12-27 11:00")) == "closed"  # Sunday: not listed


def test_holidays_by_date_and_by_range() -> None:
    office = calendar()
    assert office.is_open(at("2026-05-01 10:00")) == "holiday"
    assert office.is_open(at("2026-10-01 00:00")) == "holiday"
    assert office.is_open(at("2026-10-07 23:59")) == "holiday"
    assert office.is_open(at("2026-10-08 10:00")) == "open"


def test_an_open_day_makes_a_weekend_day_a_working_day() -> None:
    office = calendar()
    assert office.is_open(at("2026-10-10 09:30")) == "open"  # a Saturday, 调休 hours 09:00-17:00
    assert office.is_open(at("2026-10-10 17:30")) == "closed"
    assert office.is_open(at("2026-10-17 15:00")) == "closed"  # the next Saturday: its own hours


def test_the_time_is_read_in_the_calendars_zone() -> None:
    office = calendar()
    assert office.is_open(dt.datetime(2026, 12, 21, 1, 30, tzinfo=dt.UTC)) == "open"  # 09:30 in Shanghai
    assert office.is_open(dt.datetime(2026, 12, 21, 10, 30, tzinfo=dt.UTC)) == "closed"  # 18:30 there
    assert office.is_open(at("2026-12-21 10:30")) == "open"  # naive: already Shanghai time
    berlin = calendar(OFFICE.replace("Asia/Shanghai", "Europe/Berlin"))
    # 07:30 UTC is 08:30 in Berlin before summer time (Friday 27 March) and 09:30 after (Monday 30 March).
    assert berlin.is_open(dt.datetime(2026, 3, 27, 7, 30, tzinfo=dt.UTC)) == "closed"
    assert berlin.is_open(dt.datetime(2026, 3, 30, 7, 30, tzinfo=dt.UTC)) == "open"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("Asia/Shanghai", "Asia/Shanghia"), "unknown time zone 'Asia/Shanghia'"),
        (
            ('tue: [["09:00", "18:00"]]', 'tue: [["18:00", "09:00"]]'),
            "tue: 18:00-09:00 does not end after it starts",
        ),
        (
            ('tue: [["09:00", "18:00"]]', 'tue: [["09:00", "18:00"], ["17:00", "19:00"]]'),
            "tue: spans overlap at 17:00",
        ),
        (
            ("{date: 2026-05-01, name: 劳动节}", "{date: 2026-10-10, name: x}"),
            "open day 2026-10-10 is also the holiday 'x'",
        ),
        (
            ("{date: 2026-05-01, name: 劳动节}", "{date: 2026-05-01, to: 2026-05-02, name: 劳动节}"),
            "not both",
        ),
        (('tue: [["09:00", "18:00"]]', 'tue: [["9:00", "18:00"]]'), "weekly.tue"),
    ],
)
def test_a_bad_calendar_names_what_is_wrong(change: tuple[str, str], message: str) -> None:
    text = OFFICE.replace(*change)
    assert text != OFFICE
    with pytest.raises(DocumentError) as info:
        calendar(text)
    assert "calendars.yml" in str(info.value) and message in str(info.value)


def test_shipped_calendars() -> None:
    calendars = load_calendars()
    cn = calendars["cn-office"]
    assert cn.is_open(at("2026-12-24 20:00")) == "closed"
    assert cn.is_open(at("2026-12-24 10:00")) == "open"
    assert cn.is_open(at("2026-10-02 10:00")) == "holiday"  # 国庆节
    assert cn.is_open(at("2026-02-14 10:00")) == "open"  # Saturday worked before 春节
    assert cn.is_open(at("2027-02-08 10:00")) == "holiday"  # 春节, statutory
    assert calendars["always"].is_open(at("2026-10-02 03:00")) == "open"


def test_a_site_calendar_file_adds_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "cal.yml"
    site = '  - {name: always, timezone: UTC, weekly: {mon: [["00:00", "01:00"]]}}\n'
    path.write_text(OFFICE + site)
    calendars = load_calendars(path)
    assert {"always", "cn-office", "office"} <= set(calendars)
    assert calendars["always"].is_open(at("2026-12-22 12:00")) == "closed"


@given(
    st.datetimes(
        min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 1, 1), timezones=st.just(dt.UTC)
    )
)
def test_always_is_open_and_zone_conversion_agrees(moment: dt.datetime) -> None:
    calendars = load_calendars()
    assert calendars["always"].is_open(moment) == "open"
    cn = calendars["cn-office"]
    local_naive = moment.astimezone(ZoneInfo("Asia/Shanghai")).replace(tzinfo=None)
    assert cn.is_open(moment) == cn.is_open(local_naive)


def test_the_flow_model_is_the_document() -> None:
    # What the API stores (document jsonb) reads back as the same flow.
    flow = load_flow(shipped_flows()["bank-card"])
    assert Flow.model_validate(flow.model_dump(mode="json")) == flow
