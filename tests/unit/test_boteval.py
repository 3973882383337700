"""The conversation test suite (`aicc bot eval`): the YAML models and their error messages, the shipped
suite, the expectation checker on recorded call data, and the aggregation by language and class."""

from __future__ import annotations

from pathlib import Path

import pytest

from aicc.installer import boteval
from aicc.installer.boteval import CallData, Conversation, SuiteError, ToolCallSeen, check, summarize

STATUS = """
name: en-status
lang: en
caller: "+8613800000001"
tags: [status]
turns:
  - say: What is the status of order 1 0 0 2 3 4?
expect:
  tools:
    - {tool: get_order_status, args: {order_id: "100234"}, ok: true}
  transfer: false
  says: [[shipped]]
  forbidden: [delivered]
"""

COMPOUND = """
name: zh-compound
lang: zh
tags: [compound, write]
turns:
  - say: 查询订单一零零二三七的状态，再把收货地址改成上海市南京路八号。
  - say: 可以，就这么改。
expect:
  tools:
    - {tool: get_order_status, args: {order_id: "100237"}, ok: true}
    - {tool: change_address, args: {order_id: "100237", new_address: {match: 南京}}, ok: true}
"""


def conv(text: str) -> Conversation:
    return boteval.load_conversation_text(text, "t.yml")


def problems(text: str) -> list[tuple[str, str, str]]:
    with pytest.raises(SuiteError) as exc:
        conv(text)
    return exc.value.problems


# --- models and errors --------------------------------------------------------------------------


def test_a_valid_conversation_loads() -> None:
    c = conv(STATUS)
    assert c.lang == "en" and c.turns[0].kind == "say"
    assert c.expect.tools[0].args == {"order_id": "100234"}
    assert c.expect.transfer is False


def test_a_turn_with_two_kinds_names_the_field() -> None:
    bad = STATUS.replace("  - say: What", "  - dtmf: '1'\n    say: What")
    [(where, fld, msg)] = problems(bad)
    assert where == "t.yml" and fld == "turns[0]"
    assert "exactly one of say, dtmf, silence" in msg and "say and dtmf" in msg


def test_bad_values_name_file_field_expected_and_found() -> None:
    bad = STATUS.replace("lang: en", "lang: fr").replace("  - say: What", "  - dtmf: 12a\n  - say: What")
    found = {f: m for _, f, m in problems(bad)}
    assert "'fr'" in found["lang"] and "zh" in found["lang"]
    assert "found '12a'" in found["turns[0].dtmf"]


def test_unknown_and_missing_fields() -> None:
    bad = STATUS.replace("tags: [status]", "tag: [status]").replace("name: en-status\n", "")
    found = {f: m for _, f, m in problems(bad)}
    assert found["tag"] == "not a known field"
    assert found["name"] == "required, but missing"


def test_a_bad_regular_expression_and_a_turn_out_of_range() -> None:
    bad = COMPOUND.replace("{match: 南京}", "{match: '南京('}")
    assert any("regular expression" in m for _, _, m in problems(bad))
    bad2 = STATUS.replace("transfer: false", "transfer: {within: 1, from_turn: 3}")
    assert any("from_turn" in m and "found 3" in m for _, _, m in problems(bad2))


def test_barge_in_needs_speech_and_a_turn_before() -> None:
    assert any(
        "first turn cannot barge in" in m
        for _, _, m in problems(STATUS.replace("1 0 0 2 3 4?", "1 0 0 2 3 4?\n    barge_in: true"))
    )
    text = STATUS.replace(
        "  - say: What is", "  - say: Hi.\n  - silence: 2\n    barge_in: true\n  - say: What is"
    )
    assert any("barge_in only goes with say" in m for _, _, m in problems(text))


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    [(_, _, msg)] = problems("name: [unclosed")
    assert "not valid YAML" in msg and "line" in msg
    [(_, _, msg)] = problems("- a list")
    assert "expected a mapping" in msg
    f = tmp_path / "gbk.yml"
    f.write_bytes("name: 订单".encode("gbk"))
    with pytest.raises(SuiteError) as exc:
        boteval.load_conversation(f)
    assert str(f) in exc.value.problems[0][0]


def test_a_suite_reports_every_bad_file_and_duplicate_names(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "a.yml").write_text(STATUS, encoding="utf-8")
    (tmp_path / "en" / "b.yml").write_text(STATUS, encoding="utf-8")
    (tmp_path / "en" / "c.yml").write_text(STATUS.replace("lang: en", "lang: de"), encoding="utf-8")
    with pytest.raises(SuiteError) as exc:
        boteval.load_suite(tmp_path)
    files = {Path(w).name: (f, m) for w, f, m in exc.value.problems}
    assert files["b.yml"][0] == "name" and "a.yml" in files["b.yml"][1]
    assert files["c.yml"][0] == "lang"
    with pytest.raises(SuiteError):
        boteval.load_suite(tmp_path / "missing")


def test_the_shipped_suite_validates_and_is_varied() -> None:
    convs = boteval.load_suite(boteval.default_suite())
    for lang in ("zh", "en"):
        mine = [c for c in convs if c.lang == lang]
        assert len(mine) >= 40, lang
        tags = {t for c in mine for t in c.tags}
        assert {
            "compound",
            "transfer",
            "unknown",
            "refusal",
            "silence",
            "dtmf",
            "missing-slot",
            "correction",
            "barge-in",
        } <= tags
        assert all(c.name.startswith(lang + "-") for c in mine)
    assert [c.name for c in boteval.load_suite(boteval.default_suite(), "zh", "zh-status-shipped")] == [
        "zh-status-shipped"
    ]
    assert all(c.lang == "en" for c in boteval.load_suite(boteval.default_suite(), "en"))


def test_the_suite_is_package_data() -> None:
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"aicc.appliance.bots" = ["eval/*/*.yml"]' in text


# --- the checker --------------------------------------------------------------------------------


def good_status() -> CallData:
    return CallData(
        call_id="c1",
        lines=[
            ("bot", "Hello, this is the virtual assistant. How can I help you today?"),
            ("caller", "What is the status of order 100234?"),
            ("bot", "One moment, please."),
            ("bot", "Order 100234 has shipped with SF Express."),
        ],
        tool_calls=[ToolCallSeen("get_order_status", {"order_id": "100234"}, ok=True)],
        first_audio_s=[0.9],
        answer_s=[2.5],
    )


def classes(v: boteval.Verdict) -> set[str]:
    return {f.cls for f in v.failures}


def test_a_right_conversation_passes() -> None:
    v = check(conv(STATUS), good_status())
    assert v.ok, v.failures


def test_a_failed_call_is_class_call() -> None:
    v = check(conv(STATUS), CallData(problem="the call was not answered: SIP 408 Request Timeout"))
    assert not v.ok and classes(v) == {"call"}


def test_wrong_arguments_missing_tools_and_invented_status() -> None:
    data = good_status()
    data.tool_calls = [ToolCallSeen("get_order_status", {"order_id": "100243"}, ok=True)]
    v = check(conv(STATUS), data)
    assert classes(v) == {"tool_args"} and "100243" in v.failures[0].detail
    data.tool_calls = []
    data.lines[-1] = ("bot", "Your order was delivered yesterday.")
    v = check(conv(STATUS), data)
    assert classes(v) == {"tool_missing", "forbidden", "reply"}


def test_forbidden_words_are_whole_words() -> None:
    data = good_status()
    data.lines.append(("bot", "Shall I change the delivery address?"))
    assert check(conv(STATUS), data).ok  # "delivery" is not "delivered"


def test_replies_in_the_other_language() -> None:
    data = good_status()
    data.lines[-1] = ("bot", "订单100234已发货。shipped")
    v = check(conv(STATUS), data)
    assert "language" in classes(v)


def compound_data(confirmed: bool | None = True) -> CallData:
    return CallData(
        call_id="c2",
        lines=[
            ("caller", "查询订单100237的状态，再把收货地址改成上海市南京路8号"),
            ("bot", "订单100237已发货。请确认，对吗？"),
            ("caller", "可以，就这么改。"),
            ("bot", "好的，已修改。"),
        ],
        tool_calls=[
            ToolCallSeen("get_order_status", {"order_id": "100237"}, ok=True),
            ToolCallSeen(
                "change_address",
                {"order_id": "100237", "new_address": "上海市南京路8号"},
                ok=True,
                confirmed=confirmed,
            ),
        ],
    )


def test_compound_with_every_part_and_a_confirmed_write() -> None:
    v = check(conv(COMPOUND), compound_data())
    assert v.ok and v.compound and v.compound_ok and v.bad_writes == 0


def test_a_write_without_a_clear_yes() -> None:
    v = check(conv(COMPOUND), compound_data(confirmed=None))
    assert classes(v) == {"unconfirmed_write"} and v.bad_writes == 1
    assert v.compound_ok  # every part ran; it is the yes that is missing


def test_a_compound_request_missing_a_part() -> None:
    data = compound_data()
    data.tool_calls = data.tool_calls[:1]
    v = check(conv(COMPOUND), data)
    assert classes(v) == {"tool_missing"} and v.compound_ok is False


def test_a_write_with_other_arguments_is_a_bad_write() -> None:
    data = compound_data()
    data.tool_calls[1] = ToolCallSeen(
        "change_address", {"order_id": "100236", "new_address": "上海市南京路8号"}, ok=True, confirmed=True
    )
    v = check(conv(COMPOUND), data)
    assert "tool_args" in classes(v) and v.bad_writes == 1


REFUSAL = """
name: en-refused
lang: en
turns:
  - say: Change the delivery address of order 1 0 0 2 3 6 to 8 Nanjing Road, Shanghai.
  - say: No, don't change it.
expect:
  tools: [{tool: change_address, args: {order_id: "100236"}, declined: true}]
  forbid_tools: [change_address, create_return]
"""


def test_a_refusal_at_confirmation() -> None:
    declined = ToolCallSeen(
        "change_address",
        {"order_id": "100236", "new_address": "x"},
        ok=False,
        confirmed=False,
        error="declined",
    )
    assert check(conv(REFUSAL), CallData(call_id="c", tool_calls=[declined])).ok
    ran = ToolCallSeen("change_address", {"order_id": "100236", "new_address": "x"}, ok=True, confirmed=True)
    v = check(conv(REFUSAL), CallData(call_id="c", tool_calls=[ran]))
    assert {"tool_missing", "tool_unexpected"} <= classes(v) and v.bad_writes == 1


TRANSFER = """
name: en-transfer
lang: en
tags: [transfer]
turns:
  - say: What is the status of order 1 0 0 2 3 4?
  - say: Now put me through to an agent.
expect:
  transfer: {within: 1, from_turn: 2}
"""


def test_transfer_within_n_turns_counts_caller_turns_and_dtmf_runs() -> None:
    lines = [
        ("bot", "Hello"),
        ("caller", "status of 100234"),
        ("bot", "It has shipped."),
        ("caller", "agent please"),
        ("bot", "Let me transfer you to a colleague. Please hold."),
    ]
    v = check(conv(TRANSFER), CallData(call_id="c", lines=lines))
    assert v.ok and v.transfer_turns == 1
    late = [*lines[:4], ("bot", "Could you repeat?"), ("caller", "an agent!"), lines[4]]
    v = check(conv(TRANSFER), CallData(call_id="c", lines=late))
    assert classes(v) == {"transfer"} and v.transfer_turns == 2
    v = check(conv(TRANSFER), CallData(call_id="c", lines=lines[:4]))
    assert classes(v) == {"transfer"} and v.transfer_turns is None
    keys = [
        ("caller", "<DTMF 1>"),
        ("caller", "<DTMF 0>"),
        ("caller", "<DTMF #>"),
        ("bot", "x"),
        ("caller", "<DTMF 0>"),
    ]
    assert boteval.caller_turns_before(keys, 5) == 2


def test_an_unwanted_transfer() -> None:
    data = good_status()
    data.lines.append(("bot", "好的，正在为您转接人工客服，请稍候。"))
    assert "transfer" in classes(check(conv(STATUS), data))


def test_argument_matching_is_lenient_on_spacing_and_case() -> None:
    assert boteval.arg_matches("8 Nanjing Road, Shanghai", "8 nanjing road shanghai")
    assert boteval.arg_matches(boteval.ArgMatch(match="(?i)nanjing"), "8 NANJING Rd")
    assert not boteval.arg_matches("100234", "100243")


# --- aggregation --------------------------------------------------------------------------------


def test_summary_by_language_and_failure_class() -> None:
    verdicts = [
        check(conv(STATUS), good_status()),
        check(conv(STATUS), CallData(problem="no greeting")),
        check(conv(COMPOUND), compound_data()),
        check(conv(COMPOUND), compound_data(confirmed=None)),
    ]
    s = summarize(verdicts)
    assert s["en"]["conversations"] == 2 and s["en"]["right"] == 1 and s["en"]["pass_rate"] == 0.5
    assert s["en"]["failures_by_class"] == {"call": 1}
    assert s["zh"]["compound"] == 2 and s["zh"]["compound_all_parts"] == 2
    assert s["zh"]["bad_writes"] == 1 and s["zh"]["failures_by_class"] == {"unconfirmed_write": 1}
    assert s["en"]["first_audio_s"] == {"p50": 0.9, "p95": 0.9, "n": 1}
    doc = boteval.report_json(verdicts)
    assert doc["ok"] is False and doc["conversations"] == 4 and len(doc["results"]) == 4
    assert doc["results"][1]["failures"][0]["cls"] == "call"


def test_transfers_within_one_turn_in_the_summary() -> None:
    lines = [
        ("caller", "status"),
        ("bot", "shipped"),
        ("caller", "agent"),
        ("bot", "Let me transfer you to a colleague. Please hold."),
    ]
    s = summarize([check(conv(TRANSFER), CallData(call_id="c", lines=lines))])
    assert s["en"]["transfers_wanted"] == 1 and s["en"]["transfers_within_one_turn"] == 1


def test_percentiles() -> None:
    assert boteval.percentile([], 0.5) is None
    assert boteval.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert boteval.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.95) == 4.8


def test_the_report_prints_failures_with_transcripts(capsys: pytest.CaptureFixture[str]) -> None:
    data = good_status()
    data.tool_calls = []
    boteval.print_report([check(conv(STATUS), data), check(conv(COMPOUND), compound_data())])
    out = capsys.readouterr().out
    assert "en-status" in out and "tool_missing" in out and "has shipped with SF Express" in out


def test_cli_names_a_bad_suite_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aicc.installer.cli import app

    (tmp_path / "x.yml").write_text(STATUS.replace("lang: en", "lang: fr"), encoding="utf-8")
    res = CliRunner().invoke(app, ["bot", "eval", "-i", str(tmp_path / "inv.ini"), "--suite", str(tmp_path)])
    from aicc.installer.errors import EXIT_USAGE, InputError

    assert isinstance(res.exception, InputError) and res.exception.exit_code == EXIT_USAGE
    assert "x.yml: lang:" in str(res.exception) and "found 'fr'" in str(res.exception)
