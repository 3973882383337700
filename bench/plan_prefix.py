"""Plan requests with and without the connector's worked examples, on the embedded LLM.

The baseline is the planner's instructions alone (the model then pretty-prints its JSON); the
candidate adds the demo connector's worked examples as compact one-line JSON, as the dialogue
manager sends them. Both run in this process against the same llama-server, each with its prefix
cached first, over the same caller requests (English and Mandarin, single and compound). Prints
per-request time, completion tokens and whether the plan named the right tools, then p50 and the
candidate/baseline ratios.

    python bench/plan_prefix.py [--llm-url http://127.0.0.1:8081] [--threads 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bot_turn_latency import llama_server, wait_healthy

from aicc.appliance.bots.definition import shipped_definitions
from aicc.appliance.connectors.demo import PLAN_EXAMPLES, TOOLS
from aicc.appliance.voice.dialogue import plan_prefix
from aicc.appliance.voice.toolargs import plan_schema
from aicc.models.engines.base import ChatMessage

# (caller's words, the tools a right plan names, in order)
REQUESTS: list[tuple[str, list[str]]] = [
    ("What is the status of order 100234?", ["get_order_status"]),
    ("Where is my parcel for order 100235?", ["track_shipment"]),
    ("I want to return order 100236, it is too small.", ["create_return"]),
    (
        "What's the status of order 100234, and please change the delivery address to 12 Park Lane, London.",
        ["get_order_status", "change_address"],
    ),
    ("请帮我查一下订单100234的状态。", ["get_order_status"]),
    ("订单100235的快递到哪了？", ["track_shipment"]),
    ("查询订单100234，并把地址改成上海市南京路88号。", ["get_order_status", "change_address"]),
    ("我要转人工。", []),
]


def prefixes() -> dict[str, list[ChatMessage]]:
    return {
        "baseline (instructions only)": plan_prefix(shipped_definitions()["retail"], TOOLS, []),
        "worked examples": plan_prefix(shipped_definitions()["retail"], TOOLS, PLAN_EXAMPLES),
    }


async def plan(url: str, messages: list[ChatMessage], schema: dict[str, Any]) -> tuple[float, int, list[str]]:
    body = {
        "model": "bench",
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "temperature": 0.0,
        "max_tokens": 200,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "plan", "strict": True, "schema": schema},
        },
    }
    async with httpx.AsyncClient(timeout=120) as client:
        started = time.monotonic()
        resp = await client.post(f"{url}/v1/chat/completions", json=body)
        seconds = time.monotonic() - started
    resp.raise_for_status()
    data = resp.json()
    content = json.loads(data["choices"][0]["message"]["content"])
    tools = (
        [a.get("tool", "") for a in content.get("actions", [])] if content.get("intent") == "tools" else []
    )
    return seconds, int(data["usage"]["completion_tokens"]), tools


async def run(url: str, rounds: int) -> None:
    schema = plan_schema(TOOLS)
    results: dict[str, dict[str, list[float]]] = {}
    for name, prefix in prefixes().items():
        await plan(url, [*prefix, ChatMessage("user", "hello")], schema)  # cache this prefix first
        seconds: list[float] = []
        tokens: list[float] = []
        right = 0
        for _ in range(rounds):
            for words, expected in REQUESTS:
                took, n, tools = await plan(url, [*prefix, ChatMessage("user", words)], schema)
                seconds.append(took)
                tokens.append(n)
                right += tools == expected
                print(
                    f"{name:28} {took:5.2f} s {n:4d} tok {'ok ' if tools == expected else 'BAD'} {words[:50]}"
                )
        results[name] = {"seconds": seconds, "tokens": tokens, "right": [right / len(seconds)]}
    print()
    print(f"{'prefix':28} {'p50 s':>7} {'p95 s':>7} {'tokens p50':>11} {'right plans':>12}")
    for name, r in results.items():
        p95 = statistics.quantiles(r["seconds"], n=20, method="inclusive")[18]
        print(
            f"{name:28} {statistics.median(r['seconds']):7.2f} {p95:7.2f} "
            f"{statistics.median(r['tokens']):11.0f} {r['right'][0]:11.0%}"
        )
    base, cand = results.values()
    print(
        f"ratio worked examples / baseline: time p50 "
        f"{statistics.median(cand['seconds']) / statistics.median(base['seconds']):.2f}, tokens p50 "
        f"{statistics.median(cand['tokens']) / statistics.median(base['tokens']):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-url", help="a running llama-server; default: start one on loopback")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the requests per prefix")
    args = parser.parse_args()
    with llama_server(args.llm_url, args.threads) as url:
        wait_healthy(url)  # a given --llm-url too
        asyncio.run(run(url, args.rounds))


if __name__ == "__main__":
    main()
