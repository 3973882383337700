"""Tool plans: the model proposes, the schema constrains, this module validates, the caller executes.

A compound request ("check order 10042 and change the address") becomes one JSON plan of several tool
calls, decoded under a JSON schema built from the ToolSpecs (both vLLM and llama-server enforce it).
Every call is validated again here: a server may ignore parts of a schema, and a small model may fill
an argument with junk. A write action is never released from a plan that holds a malformed call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from aicc.models.engines.base import ChatMessage, LLMClient, ToolCall, ToolSpec

MAX_CALLS = 4

PLANNER_PROMPT = (
    "You are the planner of a customer-service voice bot. Read the customer's request and output the tool "
    "calls that fulfil it, in the order they should run. A request may ask for several things: plan one "
    "call for each. Copy order numbers, names and addresses exactly as the customer said them, in the "
    "customer's language. If the request asks for nothing the tools can do, output an empty list of calls. "
    "Never invent an order number or an address the customer did not say."
)


def plan_schema(tools: Sequence[ToolSpec], max_calls: int = MAX_CALLS) -> dict[str, Any]:
    """{"calls": [{"name": <tool>, "arguments": {...}}, ...]}, each item bound to one tool's parameters."""
    variants = [
        {
            "type": "object",
            "properties": {"name": {"type": "string", "enum": [t.name]}, "arguments": t.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return {
        "type": "object",
        "properties": {"calls": {"type": "array", "items": {"anyOf": variants}, "maxItems": max_calls}},
        "required": ["calls"],
        "additionalProperties": False,
    }


def tools_prompt(tools: Sequence[ToolSpec]) -> str:
    """The tool list as text for the system prompt. Deterministic, so the server's prefix cache holds it."""
    lines = [PLANNER_PROMPT, "", "Tools:"]
    for t in tools:
        params = ", ".join(
            f"{k} ({v.get('type', 'any')}{': ' + v['description'] if 'description' in v else ''})"
            for k, v in t.parameters.get("properties", {}).items()
        )
        kind = "changes data" if t.write else "read-only"
        lines.append(f"- {t.name} [{kind}]: {t.description} Arguments: {params}.")
    return "\n".join(lines)


@dataclass(frozen=True)
class Rejected:
    raw: Any
    reason: str


@dataclass(frozen=True)
class ToolPlan:
    calls: tuple[ToolCall, ...]
    rejected: tuple[Rejected, ...] = ()
    writes_withheld: tuple[ToolCall, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.rejected


def _ungrounded(args: dict[str, Any], spec: ToolSpec, said: str) -> str | None:
    """An identifier argument (a string with a `pattern`, e.g. an order number) the customer never said.

    Small models fill a required order number with a plausible one ("12345"); acting on it would touch
    someone else's order. Identifiers must appear in what the customer said (spaces ignored).
    """
    heard = re.sub(r"\s+", "", said)
    for key, value in args.items():
        prop = spec.parameters.get("properties", {}).get(key, {})
        if isinstance(value, str) and "pattern" in prop and re.sub(r"\s+", "", value) not in heard:
            return f"{spec.name}: {key}={value!r} was not said by the customer"
    return None


def validate_calls(raw: Any, tools: Sequence[ToolSpec], said: str | None = None) -> ToolPlan:
    """Check a decoded plan against the tools. Invalid calls are rejected; if any is, writes are withheld.

    `said` is what the customer said (request and history): identifier arguments must come from it.
    """
    by_name = {t.name: t for t in tools}
    if not isinstance(raw, dict) or not isinstance(raw.get("calls"), list):
        return ToolPlan((), (Rejected(raw, "the plan is not an object with a list of calls"),))
    accepted: list[tuple[ToolCall, ToolSpec]] = []
    rejected: list[Rejected] = []
    for item in raw["calls"][:MAX_CALLS]:
        if not isinstance(item, dict):
            rejected.append(Rejected(item, "a call is not an object"))
            continue
        name, args = item.get("name"), item.get("arguments")
        spec = by_name.get(name) if isinstance(name, str) else None
        if spec is None or not isinstance(name, str):
            rejected.append(Rejected(item, f"unknown tool {name!r}"))
            continue
        if not isinstance(args, dict):
            rejected.append(Rejected(item, f"{name}: arguments are not an object"))
            continue
        errors = sorted(jsonschema.Draft202012Validator(spec.parameters).iter_errors(args), key=str)
        if errors:
            first = errors[0]
            at = ".".join(str(p) for p in first.absolute_path) or "arguments"
            rejected.append(Rejected(item, f"{name}: {at}: {first.message}"))
            continue
        if said is not None and (why := _ungrounded(args, spec, said)):
            rejected.append(Rejected(item, why))
            continue
        accepted.append((ToolCall(name=name, arguments=args), spec))
    if len(raw["calls"]) > MAX_CALLS:
        rejected.append(Rejected(raw["calls"][MAX_CALLS:], f"more than {MAX_CALLS} calls"))
    if rejected:
        # Part of the plan is junk, so the model misread the request: run reads only, never a write.
        reads = tuple(c for c, s in accepted if not s.write)
        withheld = tuple(c for c, s in accepted if s.write)
        return ToolPlan(reads, tuple(rejected), withheld)
    return ToolPlan(tuple(c for c, _ in accepted))


async def plan_tools(
    client: LLMClient,
    request: str,
    tools: Sequence[ToolSpec],
    *,
    history: Sequence[ChatMessage] = (),
    max_tokens: int = 384,
) -> ToolPlan:
    """Ask the model for a plan under the tool schema; return only validated calls."""
    messages = [ChatMessage("system", tools_prompt(tools)), *history, ChatMessage("user", request)]
    raw = await client.complete_json(messages, plan_schema(tools), max_tokens=max_tokens)
    said = " ".join([*(m.content for m in history if m.role == "user"), request])
    return validate_calls(raw, tools, said)
