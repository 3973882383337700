"""The OpenAI-compatible client and tool-plan validation, against a scripted HTTP transport.

The real servers are exercised in tests/integration/test_engines.py; here the transport is mocked to
cover what a real server rarely does on cue: garbage, stalls, refused connections.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from aicc.models.engines.base import ChatMessage, EngineError, ToolSpec
from aicc.models.llm import OpenAICompatClient
from aicc.models.tools import plan_schema, plan_tools, tools_prompt, validate_calls

ORDER = {"type": "string", "pattern": "^[0-9]{5,10}$"}
TOOLS = [
    ToolSpec(
        "get_order_status",
        "Look up an order.",
        {
            "type": "object",
            "properties": {"order_id": ORDER},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        "change_delivery_address",
        "Change the address.",
        {
            "type": "object",
            "properties": {"order_id": ORDER, "new_address": {"type": "string", "minLength": 6}},
            "required": ["order_id", "new_address"],
            "additionalProperties": False,
        },
        write=True,
    ),
]
SAID = "check order 10042 and send it to 1 Main Street, Springfield"


def _chat_answer(content: str) -> dict[str, Any]:
    return {
        "choices": [{"message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 8}},
    }


def test_plan_schema_binds_each_tool_to_its_parameters() -> None:
    schema = plan_schema(TOOLS)
    variants = schema["properties"]["calls"]["items"]["anyOf"]
    assert [v["properties"]["name"]["enum"] for v in variants] == [
        ["get_order_status"],
        ["change_delivery_address"],
    ]
    assert variants[1]["properties"]["arguments"] is TOOLS[1].parameters
    assert tools_prompt(TOOLS) == tools_prompt(TOOLS)  # stable text: the server's prefix cache holds it
    assert "[changes data]" in tools_prompt(TOOLS)


def test_valid_compound_plan_passes() -> None:
    raw = {
        "calls": [
            {"name": "get_order_status", "arguments": {"order_id": "10042"}},
            {
                "name": "change_delivery_address",
                "arguments": {"order_id": "10042", "new_address": "1 Main Street"},
            },
        ]
    }
    plan = validate_calls(raw, TOOLS, SAID)
    assert plan.ok and [c.name for c in plan.calls] == ["get_order_status", "change_delivery_address"]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"name": "delete_everything", "arguments": {}}, "unknown tool"),
        ({"name": "get_order_status", "arguments": {"order_id": "12a"}}, "does not match"),
        ({"name": "get_order_status", "arguments": {"order_id": "10042", "x": 1}}, "Additional properties"),
        ({"name": "get_order_status", "arguments": "10042"}, "not an object"),
        ({"name": "get_order_status", "arguments": {"order_id": "55555"}}, "not said by the customer"),
    ],
)
def test_malformed_call_withholds_every_write(bad: dict[str, Any], reason: str) -> None:
    write = {
        "name": "change_delivery_address",
        "arguments": {"order_id": "10042", "new_address": "1 Main St"},
    }
    plan = validate_calls({"calls": [write, bad]}, TOOLS, SAID)
    assert not plan.ok
    assert reason in plan.rejected[0].reason
    assert all(c.name != "change_delivery_address" for c in plan.calls)
    assert [c.name for c in plan.writes_withheld] == ["change_delivery_address"]


def test_plan_not_an_object() -> None:
    assert not validate_calls(["x"], TOOLS).ok
    assert not validate_calls({"calls": "x"}, TOOLS).ok


def _client(handler: Any, urls: list[str] | None = None, **kw: Any) -> OpenAICompatClient:
    return OpenAICompatClient(
        urls or ["http://llm1:8081"], "m1", transport=httpx.MockTransport(handler), **kw
    )


def test_complete_json_sends_schema_and_parses() -> None:
    seen: dict[str, Any] = {}

    def handler(req: httpx.Request) -> httpx.Response:
        seen.update(json.loads(req.content))
        return httpx.Response(
            200,
            json=_chat_answer(
                json.dumps({"calls": [{"name": "get_order_status", "arguments": {"order_id": "10042"}}]})
            ),
        )

    async def go() -> Any:
        async with _client(handler) as c:
            return await plan_tools(c, "where is order 10042?", TOOLS), c.last

    plan, last = asyncio.run(go())
    assert seen["response_format"]["type"] == "json_schema"
    assert seen["response_format"]["json_schema"]["schema"] == plan_schema(TOOLS)
    assert seen["messages"][0]["role"] == "system" and seen["temperature"] == 0.0
    assert plan.ok and plan.calls[0].arguments == {"order_id": "10042"}
    assert last.cached_tokens == 8


def test_streaming_sse_and_timing() -> None:
    events = [
        {"choices": [{"delta": {"role": "assistant"}}]},
        {"choices": [{"delta": {"content": "Hel"}}]},
        {"choices": [{"delta": {"content": "lo"}, "finish_reason": None}]},
        {"choices": [{"delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + ": keep-alive\n\ndata: [DONE]\n\n"

    def handler(req: httpx.Request) -> httpx.Response:
        assert json.loads(req.content)["stream"] is True
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    async def go() -> tuple[list[str], Any]:
        async with _client(handler) as c:
            parts = [d.text async for d in c.stream_chat([ChatMessage("user", "hi")])]
            return parts, c.last

    parts, last = asyncio.run(go())
    assert "".join(parts) == "Hello"
    assert last.first_token_s is not None and last.completion_tokens == 2


def test_streamed_json_shows_each_prefix_then_parses() -> None:
    pieces = ['{"intent":', '"tools",', '"actions":[]}']
    body = "".join(f"data: {json.dumps({'choices': [{'delta': {'content': p}}]})}\n\n" for p in pieces)

    def handler(req: httpx.Request) -> httpx.Response:
        sent = json.loads(req.content)
        assert sent["stream"] is True and sent["response_format"]["type"] == "json_schema"
        return httpx.Response(
            200, text=body + "data: [DONE]\n\n", headers={"content-type": "text/event-stream"}
        )

    seen: list[str] = []

    async def go() -> dict[str, Any]:
        async with _client(handler) as c:
            return await c.complete_json([ChatMessage("user", "hi")], {"type": "object"}, on_text=seen.append)

    assert asyncio.run(go()) == {"intent": "tools", "actions": []}
    assert seen == ['{"intent":', '{"intent":"tools",', '{"intent":"tools","actions":[]}']


def test_failover_to_the_next_server() -> None:
    hits: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        hits.append(req.url.host)
        if req.url.host == "llm1":
            raise httpx.ConnectError("refused", request=req)
        return httpx.Response(200, json=_chat_answer("fine"))

    async def go() -> str:
        async with _client(handler, ["http://llm1:8081", "http://llm2:8081"]) as c:
            return await c.complete([ChatMessage("user", "hi")])

    assert asyncio.run(go()) == "fine"
    assert hits == ["llm1", "llm2"]


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(500, text="boom"), "HTTP 500"),
        (httpx.Response(200, text="<html>"), "not JSON"),
        (httpx.Response(200, json={"choices": []}), "no message content"),
        (httpx.Response(200, json=_chat_answer("{not json")), "not JSON"),
    ],
)
def test_garbage_is_an_engine_error_naming_host_and_model(response: httpx.Response, message: str) -> None:
    async def go() -> None:
        async with _client(lambda _req: response) as c:
            await c.complete_json([ChatMessage("user", "hi")], {"type": "object"})

    with pytest.raises(EngineError) as err:
        asyncio.run(go())
    assert message in str(err.value)
    assert "model m1" in str(err.value) and "host llm1" in str(err.value)


def test_all_servers_down_and_stalls_raise_not_hang() -> None:
    def refused(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    def stalled(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("stalled", request=req)

    async def go(handler: Any) -> None:
        async with _client(handler, ["http://a:1", "http://b:1"]) as c:
            await c.complete([ChatMessage("user", "hi")])

    with pytest.raises(EngineError, match="cannot connect"):
        asyncio.run(go(refused))
    with pytest.raises(EngineError, match="timed out"):
        asyncio.run(go(stalled))
