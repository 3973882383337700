"""The flow runner, driven through the simulator's scripted caller: what the caller hears, where the
call goes, what the bot and the queue are told, and how every call ends."""

from __future__ import annotations

import asyncio
import datetime as dt
import textwrap
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicc.appliance.ivr.calendar import load_calendars
from aicc.appliance.ivr.flow import Flow, load_flow, load_flow_text, shipped_flows
from aicc.appliance.ivr.runner import (
    BotRequest,
    BotResult,
    CallerHungUp,
    FlowResult,
    match_words,
    run_flow,
    spoken_key,
)
from aicc.appliance.ivr.simulate import ScriptedIO, ScriptError, simulate, split_inputs

CALENDARS = load_calendars()
NOON = dt.datetime(2026, 12, 21, 12, 0)  # a Monday, Shanghai time


def flow(body: str, languages: str = "[en]", calendar: str = "cn-office") -> Flow:
    head = f"name: t\nlanguages: {languages}\nlanguage: {languages.strip('[]').split(',')[0]}\n"
    head += f"calendar: {calendar}\n"
    return load_flow_text(head + textwrap.dedent(body), "test.yml", calendars=CALENDARS)


def run(
    the_flow: Flow, inputs: list[str], *, at: dt.datetime = NOON, io: ScriptedIO | None = None, **kw: Any
) -> tuple[FlowResult, ScriptedIO]:
    if io is None:
        return asyncio.run(simulate(the_flow, inputs, at=at, caller="13800138000", calendars=CALENDARS, **kw))
    variables = {"caller": io.caller, "number": "4000"}
    return asyncio.run(run_flow(the_flow, io, variables=variables, calendars=CALENDARS, **kw)), io


def nodes(result: FlowResult) -> list[str]:
    return [step.node for step in result.path]


def texts(io: ScriptedIO) -> list[str]:
    return [text for text, _ in io.said]


MENU = """
start: menu
nodes:
  menu:
    type: menu
    say: "Press 1 for orders, 2 for an agent."
    retry_say: "Sorry."
    retries: 2
    options:
      1: {next: orders, words: {en: [orders, order status]}}
      2: {next: agent, words: {en: [agent]}, set: {picked: agent}}
    no_input: silent
    no_match: confused
  orders: {type: play, say: "Orders.", next: bye}
  agent: {type: play, say: "Agent for ${caller}, picked ${picked}.", next: bye}
  silent: {type: play, say: "No input.", next: bye}
  confused: {type: play, say: "No match.", next: bye}
  bye: {type: hangup, say: "Bye."}
"""


def test_play_then_hangup_ends_the_call_by_the_flow() -> None:
    result, io = run(flow(MENU), ["1"])
    assert result.outcome == "hangup_by_flow"
    assert nodes(result) == ["menu", "orders", "bye"]
    assert texts(io) == ["Press 1 for orders, 2 for an agent.", "Orders.", "Bye."]
    assert io.hung_up
    assert result.path[-1].detail.endswith("-> end of call")


def test_menu_by_key_by_word_and_by_spoken_digit() -> None:
    the_flow = flow(MENU)
    assert nodes(run(the_flow, ["2"])[0])[1] == "agent"
    assert nodes(run(the_flow, ["say:what is my ORDER status please"])[0])[1] == "orders"
    assert nodes(run(the_flow, ["say:press two"])[0])[1] == "agent"
    assert nodes(run(the_flow, ["say:border"] * 3)[0])[1] == "confused"  # a word, not part of one


def test_menu_option_sets_variables_used_in_later_texts() -> None:
    result, io = run(flow(MENU), ["2"])
    assert "Agent for 13800138000, picked agent." in texts(io)
    assert result.variables["picked"] == "agent"


def test_menu_retries_then_the_last_failure_picks_no_match_or_no_input() -> None:
    result, io = run(flow(MENU), ["timeout", "9", "7"])
    assert nodes(result) == ["menu", "confused", "bye"]
    assert texts(io).count("Sorry.") == 2 and texts(io).count("Press 1 for orders, 2 for an agent.") == 3
    assert "no_match (3/3)" in result.path[0].detail
    result, _ = run(flow(MENU), ["9", "timeout", "timeout"])
    assert nodes(result)[1] == "silent"
    result, _ = run(flow(MENU), ["9", "1"])  # a good answer on a retry
    assert nodes(result)[1] == "orders"


def test_a_missing_optional_edge_ends_the_call() -> None:
    body = MENU.replace("    no_match: confused\n", "").replace(
        '  confused: {type: play, say: "No match.", next: bye}\n', ""
    )
    result, io = run(flow(body), ["9", "9", "9"])
    assert result.outcome == "hangup_by_flow" and nodes(result) == ["menu"]
    assert result.path[0].detail.endswith("no_match (3/3); -> end of call") and io.hung_up


COLLECT = """
start: order
nodes:
  order:
    type: collect
    say: "Your 6 digit order number, then hash."
    var: order_id
    min_digits: 6
    max_digits: 6
    retries: 1
    next: read
    fail: failed
  read: {type: play, say: "Order ${order_id}.", next: bye}
  failed: {type: play, say: "No order.", next: bye}
  bye: {type: hangup}
"""


def test_collect_digits_with_terminator_into_a_variable() -> None:
    result, io = run(flow(COLLECT), ["100234#"])
    assert nodes(result) == ["order", "read", "bye"]
    assert "Order 100234." in texts(io)
    assert result.variables["order_id"] == "100234"


def test_collect_spoken_digits_and_retries_then_fail() -> None:
    result, _ = run(flow(COLLECT), ["say:幺零零二三四"])
    assert result.variables["order_id"] == "100234"
    result, _ = run(flow(COLLECT), ["123#", "timeout"])
    assert nodes(result) == ["order", "failed", "bye"]
    assert "not 6 digits (1/2)" in result.path[0].detail


BOT = """
start: bot
nodes:
  bot:
    type: bot
    bot: retail
    transfer: {default: agents, intents: {create_return: returns}}
    next: bye
  agents: {type: queue, queue: support-en, next: bye}
  returns: {type: queue, queue: support-en, skills: {returns: 1}, priority: 3, next: bye}
  bye: {type: hangup}
"""


def test_bot_transfer_by_intent_carries_intent_and_summary_to_the_queue() -> None:
    result, io = run(flow(BOT), ["bot:transfer:create_return", "queue:served"])
    assert nodes(result) == ["bot", "returns", "bye"]
    request = io.queue_requests[0]
    assert (request.queue, request.priority, request.skills) == ("support-en", 3, {"returns": 1})
    assert request.intent == "create_return" and "create_return" in request.summary
    assert io.bot_requests[0].bot == "retail" and io.bot_requests[0].variables["caller"] == "13800138000"


def test_bot_transfer_with_another_intent_takes_the_default() -> None:
    result, io = run(flow(BOT), ["bot:transfer:get_order_status"])
    assert nodes(result) == ["bot", "agents", "bye"]
    assert io.queue_requests[0].intent == "get_order_status"


def test_bot_end_takes_next_and_bot_hangup_is_the_caller_hanging_up() -> None:
    assert nodes(run(flow(BOT), ["bot:end"])[0]) == ["bot", "bye"]
    result, io = run(flow(BOT), ["bot:hangup"])
    assert result.outcome == "caller_hung_up" and nodes(result) == ["bot"]
    assert not io.hung_up  # nobody to hang up on


def test_every_bot_busy_sends_the_call_on_to_the_transfer_at_once_with_why() -> None:
    result, io = run(flow(BOT), ["bot:busy", "queue:served"])
    assert nodes(result) == ["bot", "agents", "bye"]  # the transfer's default: the agents' queue
    assert io.bot_requests[0].overflow  # the node has a transfer: the host may overflow it
    assert io.queue_requests[0].intent == "" and "every bot was busy" in io.queue_requests[0].summary
    # Without a transfer there is nowhere to go: the host lets the bot answer however busy.
    alone = "start: bot\nnodes:\n  bot: {type: bot, bot: retail, next: bye}\n  bye: {type: hangup}\n"
    assert run(flow(alone), ["bot:end"])[1].bot_requests[0].overflow is False


class SwitchingBot(ScriptedIO):
    async def bot(self, request: BotRequest) -> BotResult:
        return BotResult("transfer", intent="requested", summary="要转人工", language="zh")


def test_a_bot_that_switches_language_switches_the_flow() -> None:
    body = BOT.replace("queue: support-en", "queue: {en: support-en, zh: support-zh}")
    the_flow = flow(body, languages="[en, zh]")
    result, io = run(the_flow, [], io=SwitchingBot([], NOON, "13800138000"))
    assert io.queue_requests[0].queue == "support-zh" and io.queue_requests[0].language == "zh"
    assert io.queue_requests[0].summary == "要转人工"
    assert result.variables["language"] == "zh"


QUEUE = """
start: queue
nodes:
  queue:
    type: queue
    queue: support-en
    say: "Please hold."
    next: survey
    callback: cb
    no_agents: busy
    timeout: waited
  cb: {type: play, say: "We will call you.", next: bye}
  busy: {type: play, say: "Busy.", next: bye}
  waited: {type: play, say: "Waited too long.", next: bye}
  survey: {type: survey, say: "Score 1 to 5?", next: bye}
  bye: {type: hangup}
"""


@pytest.mark.parametrize(
    ("outcome", "then"),
    [
        ("served", "survey"),
        ("callback", "cb"),
        ("no_agents", "busy"),
        ("timeout", "waited"),
        ("failed", None),
    ],
)
def test_each_queue_outcome_takes_its_edge(outcome: str, then: str | None) -> None:
    result, io = run(flow(QUEUE), [f"queue:{outcome}", "timeout"])
    assert result.outcome == "hangup_by_flow"
    if then is None:  # no failed edge: the flow ends the call
        assert nodes(result) == ["queue"] and io.hung_up
    else:
        assert nodes(result)[1] == then


def test_caller_hanging_up_in_the_queue() -> None:
    result, io = run(flow(QUEUE), ["queue:hangup"])
    assert result.outcome == "caller_hung_up" and not io.hung_up


def test_the_callers_tier_from_a_lookup_reaches_the_queue() -> None:
    body = """
    start: who
    nodes:
      who:
        type: lookup
        tool: lookup_customer
        args: {phone: "${caller}"}
        set: {tier: tier, who: name}
        next: q
      q: {type: queue, queue: support-en, next: bye}
      bye: {type: hangup, say: "Bye ${who}."}
    """
    result, io = run(flow(body), ['lookup:{"tier": "vip", "name": "Ann"}'])
    assert io.queue_requests[0].tier == "vip"
    assert "Bye Ann." in texts(io)
    assert "lookup_customer(phone=13800138000)" in result.path[0].detail
    _, io = run(flow(body), [])
    assert io.queue_requests[0].tier == "standard"  # the simulator's default lookup


def test_a_failed_lookup_takes_fail_or_next_and_is_in_the_path() -> None:
    body = """
    start: who
    nodes:
      who: {type: lookup, tool: lookup_customer, set: {tier: tier}, next: found, fail: unknown}
      found: {type: play, say: "Found.", next: bye}
      unknown: {type: play, say: "Unknown.", next: bye}
      bye: {type: hangup}
    """
    result, _ = run(flow(body), ["lookup:fail"])
    assert nodes(result) == ["who", "unknown", "bye"]
    assert "failed: lookup_customer: simulated failure" in result.path[0].detail
    assert "tier" not in result.variables
    no_fail = body.replace(", fail: unknown", "").replace(
        '      unknown: {type: play, say: "Unknown.", next: bye}\n', ""
    )
    assert nodes(run(flow(no_fail), ["lookup:fail"])[0]) == ["who", "found", "bye"]


HOURS = """
start: hours
nodes:
  hours: {type: hours, open: open, closed: closed, holiday: holiday}
  open: {type: play, say: "Open.", next: bye}
  closed: {type: play, say: "Closed.", next: bye}
  holiday: {type: play, say: "Holiday.", next: bye}
  bye: {type: hangup}
"""


@pytest.mark.parametrize(
    ("moment", "then"),
    [
        (dt.datetime(2026, 12, 24, 10, 0), "open"),
        (dt.datetime(2026, 12, 24, 20, 0), "closed"),
        (dt.datetime(2026, 10, 2, 10, 0), "holiday"),
        (dt.datetime(2026, 12, 24, 2, 0, tzinfo=dt.UTC), "open"),  # 10:00 in Shanghai
    ],
)
def test_hours_by_the_calendar(moment: dt.datetime, then: str) -> None:
    result, _ = run(flow(HOURS), [], at=moment)
    assert nodes(result)[1] == then
    assert "cn-office at" in result.path[0].detail and "Asia/Shanghai" in result.path[0].detail


def test_a_holiday_without_a_holiday_edge_is_closed() -> None:
    body = HOURS.replace(", holiday: holiday}", "}").replace(
        '  holiday: {type: play, say: "Holiday.", next: bye}\n', ""
    )
    assert nodes(run(flow(body), [], at=dt.datetime(2026, 10, 2, 10, 0))[0])[1] == "closed"


def test_an_unknown_calendar_at_run_time_is_an_error_that_ends_the_call() -> None:
    the_flow = flow(HOURS, calendar="always")
    result, io = asyncio.run(simulate(the_flow, [], at=NOON, caller="1", calendars={}))
    assert result.outcome == "error: node hours: unknown calendar 'always' (calendars: none)"
    assert io.hung_up


CALLBACK = """
start: offer
nodes:
  offer:
    type: callback
    say: "Press 1 for a callback."
    queue: support-en
    next: done
    declined: bye
    fail: sorry
  done: {type: play, say: "Done.", next: bye}
  sorry: {type: play, say: "Could not.", next: bye}
  bye: {type: hangup}
"""


@pytest.mark.parametrize(
    ("answer", "then"),
    [("1", "done"), ("2", "bye"), ("timeout", "bye"), ("say:yes please", "done"), ("say:no thanks", "bye")],
)
def test_callback_offer(answer: str, then: str) -> None:
    result, io = run(flow(CALLBACK), [answer])
    assert nodes(result)[1] == then
    assert io.callbacks == ([("support-en", "13800138000")] if then == "done" else [])


def test_callback_offer_in_chinese_hears_a_refusal() -> None:
    the_flow = flow(CALLBACK.replace("Press 1 for a callback.", "回电请按1"), languages="[zh]")
    assert nodes(run(the_flow, ["say:好的"])[0])[1] == "done"
    assert nodes(run(the_flow, ["say:不需要"])[0])[1] == "bye"


class NoCallbacks(ScriptedIO):
    async def callback(self, queue: str, language: str, variables: dict[str, str]) -> bool:
        return False


def test_a_callback_that_cannot_be_registered_takes_fail() -> None:
    result, _ = run(flow(CALLBACK), [], io=NoCallbacks(["1"], NOON, "13800138000"))
    assert nodes(result) == ["offer", "sorry", "bye"]


def test_set_node_and_language_switch() -> None:
    body = """
    start: set
    nodes:
      set: {type: set, vars: {language: zh, greeting: "hi ${caller}"}, next: hello}
      hello: {type: play, say: {en: "Hello ${greeting}", zh: "你好 ${greeting}"}, next: bye}
      bye: {type: hangup}
    """
    result, io = run(flow(body, languages="[en, zh]"), [])
    assert io.said == [("你好 hi 13800138000", "zh")]
    assert result.variables["language"] == "zh"


def test_survey_stores_a_score_after_a_wrong_key() -> None:
    body = (
        "start: s\nnodes:\n  s: {type: survey, say: 'Score?', retries: 1, next: bye}\n  bye: {type: hangup}\n"
    )
    result, io = run(flow(body), ["7", "4"])
    assert io.scores == [4] and "score 4" in result.path[0].detail
    _, io = run(flow(body), ["say:五"])
    assert io.scores == [5]
    result, io = run(flow(body), ["timeout"])
    assert io.scores == [] and nodes(result) == ["s", "bye"]


def test_the_caller_can_hang_up_anywhere() -> None:
    the_flow = load_flow(shipped_flows()["retail-en"], calendars=CALENDARS)
    script = ["bot:transfer", "queue:served", "5"]
    for cut in range(len(script) + 1):
        result, io = run(the_flow, [*script[:cut], "hangup"])
        expected = "hangup_by_flow" if cut == len(script) else "caller_hung_up"
        assert result.outcome == expected
        if expected == "caller_hung_up":
            assert result.path[-1].detail.endswith("caller hung up") and not io.hung_up


class HangsUpWhileHearing(ScriptedIO):
    async def say(self, text: str, language: str) -> None:
        if text == "Orders.":
            raise CallerHungUp
        await super().say(text, language)


def test_a_hang_up_while_the_flow_speaks() -> None:
    result, _ = run(flow(MENU), [], io=HangsUpWhileHearing(["1"], NOON, "1"))
    assert result.outcome == "caller_hung_up" and nodes(result) == ["menu", "orders"]


def test_a_looping_flow_stops_at_the_step_limit_with_a_clear_path() -> None:
    body = """
    start: a
    nodes:
      a: {type: play, say: A, next: b}
      b: {type: menu, say: B, retries: 0, options: {9: {next: bye}}, no_input: a, no_match: a}
      bye: {type: hangup}
    """
    result, io = run(flow(body), [], max_steps=20)
    assert result.outcome == "loop_limit"
    assert len(result.path) == 21 and nodes(result)[:4] == ["a", "b", "a", "b"]
    assert result.path[-1].type == "limit" and "20 steps" in result.path[-1].detail
    assert "b -> a" in result.path[-1].detail
    assert io.hung_up


class BrokenBot(ScriptedIO):
    async def bot(self, request: BotRequest) -> BotResult:
        raise RuntimeError("LLM server unreachable")


def test_an_io_failure_ends_the_call_with_an_error_outcome() -> None:
    result, io = run(flow(BOT), [], io=BrokenBot([], NOON, "1"))
    assert result.outcome == "error: node bot: LLM server unreachable"
    assert io.hung_up and "error: LLM server unreachable" in result.path[-1].detail


def test_a_script_that_does_not_fit_the_flow_says_which_input() -> None:
    result, io = run(flow(MENU), ["bot:end"])
    assert result.outcome.startswith("error: node menu: input 1 'bot:end' is for a bot node")
    assert io.script_error is not None


def test_inputs_of_no_known_form_are_refused_before_the_run() -> None:
    with pytest.raises(ScriptError, match="input 2: 'press1' is not an input"):
        run(flow(MENU), ["1", "press1"])
    with pytest.raises(ScriptError, match="lookup: needs a JSON object"):
        run(flow(MENU), ["lookup:{oops"])


def test_split_inputs_keeps_json_commas() -> None:
    assert split_inputs('1, say:退货,lookup:{"tier": "vip", "name": "A"},,#') == [
        "1",
        "say:退货",
        'lookup:{"tier": "vip", "name": "A"}',
        "#",
    ]


def test_word_matching_rules() -> None:
    words = {"1": ["order", "订单"], "2": ["return", "退货"], "3": ["order status"]}
    assert match_words("I want to return an order", words) == "2"  # the longest word wins
    assert match_words("my order status", words) == "3"
    assert match_words("我要退货", words) == "2"
    assert match_words("Orders", words) is None
    assert spoken_key("二") == "2" and spoken_key("我要一个订单") is None


@pytest.mark.parametrize(
    ("name", "script", "expected"),
    [
        ("retail-en", ["bot:transfer:create_return", "queue:served", "5"], ["returns_agents", "survey"]),
        (
            "retail-en",
            ["bot:transfer", "queue:no_agents", "1"],
            ["agents", "busy", "offer_callback", "callback_taken"],
        ),
        ("retail-zh", ["bot:end", "4"], ["bot", "survey"]),
        ("bank-card", ["9", "say:my card was stolen", "queue:served", "5"], ["menu", "lost_card", "survey"]),
        ("bank-card", ["1", "bot:transfer:report_lost_card", "queue:served"], ["bot", "lost_card"]),
    ],
)
def test_the_shipped_flows_walk_sensible_paths(name: str, script: list[str], expected: list[str]) -> None:
    the_flow = load_flow(shipped_flows()[name], calendars=CALENDARS)
    result, io = run(the_flow, script)
    assert result.outcome == "hangup_by_flow" and io.unused == []
    walked = nodes(result)
    assert walked[0] == ("welcome" if name == "bank-card" else "customer") and walked[-1] == "bye"
    assert all(step in walked for step in expected), walked


def test_the_bank_line_routes_by_the_callers_language() -> None:
    the_flow = load_flow(shipped_flows()["bank-card"], calendars=CALENDARS)
    _, io = run(the_flow, ["2", "queue:served"])
    assert io.queue_requests[0].queue == "cards-zh" and io.queue_requests[0].priority == 5
    _, io = run(the_flow, ["9", "2", "queue:served"])
    assert io.queue_requests[0].queue == "cards-en" and io.queue_requests[0].language == "en"


def test_a_closed_line_offers_a_callback() -> None:
    office = load_flow(shipped_flows()["retail-en"], calendars=CALENDARS).model_copy(
        update={"calendar": "cn-office"}
    )
    result, io = run(office, ["1"], at=dt.datetime(2026, 12, 24, 20, 0))
    assert nodes(result) == [
        "customer",
        "hours",
        "closed",
        "offer_callback",
        "callback_taken",
        "bye",
    ]
    assert io.callbacks == [("support-en", "13800138000")]


INPUT = st.sampled_from(
    [
        "1",
        "2",
        "0",
        "9",
        "5",
        "#",
        "123456#",
        "timeout",
        "say:退货",
        "say:agent",
        "hangup",
        "bot:end",
        "bot:transfer",
        "bot:transfer:create_return",
        "bot:hangup",
        "queue:served",
        "queue:no_agents",
        "queue:callback",
        "queue:hangup",
        "lookup:fail",
    ]
)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(shipped_flows())), script=st.lists(INPUT, max_size=8))
def test_any_script_ends_the_call_cleanly(name: str, script: list[str]) -> None:
    the_flow = load_flow(shipped_flows()[name], calendars=CALENDARS)
    result, io = run(the_flow, script)
    assert result.outcome in ("hangup_by_flow", "caller_hung_up") or (
        result.outcome.startswith("error: ") and io.script_error is not None
    )
    assert io.hung_up == (result.outcome != "caller_hung_up")
    assert 1 <= len(result.path) <= 200
