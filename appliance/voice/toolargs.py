"""Checks a tool call's arguments against its JSON-schema subset, and builds the planner's schema.

Only the keywords tool specs use are supported (type, properties, required, additionalProperties,
enum, pattern, minLength, maxLength, minimum, maximum); an unknown keyword is a spec bug.
"""

from __future__ import annotations

import re
from typing import Any

from aicc.models.engines.base import ToolSpec

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
}
_KNOWN = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "description",
}


def validate(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"unsupported schema keywords {sorted(unknown)} at {path or '/'}")
    errors: list[str] = []
    where = path or "arguments"
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, _TYPES[kind]) and not (
            kind in ("integer", "number") and isinstance(value, bool)
        )
        if not ok:
            return [f"{where}: expected {kind}, found {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.fullmatch(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: longer than {schema['maxLength']} characters")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: above {schema['maximum']}")
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties", {})
        errors += [f"{where}.{name}: missing" for name in schema.get("required", []) if name not in value]
        for name, item in value.items():
            if name in props:
                errors += validate(props[name], item, f"{where}.{name}")
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{where}.{name}: unexpected argument")
    return errors


def validate_call(spec: ToolSpec, arguments: dict[str, Any]) -> list[str]:
    return validate(spec.parameters, arguments)


INTENTS = ("tools", "transfer", "chat", "unclear", "goodbye")


def plan_schema(tools: list[ToolSpec]) -> dict[str, Any]:
    """The JSON schema the LLM's plan is constrained to: an intent and a list of tool calls."""
    action_variants = [
        {
            "type": "object",
            "properties": {"tool": {"const": t.name}, "arguments": t.parameters},
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return {
        "type": "object",
        "properties": {
            "intent": {"type": "string", "enum": list(INTENTS)},
            "actions": {"type": "array", "items": {"anyOf": action_variants}, "maxItems": 4},
        },
        "required": ["intent", "actions"],
        "additionalProperties": False,
    }
