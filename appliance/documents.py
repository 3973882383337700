"""Data documents (routing policies, IVR flows, bot definitions, seeds) read from YAML or JSON text and
validated by a pydantic model. Every error names where: the file (or upload), the field's path, what
was expected and what was found, so an admin can fix it without reading code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from aicc.appliance.textfile import TextFileError, read_text_file

M = TypeVar("M", bound=BaseModel)


class DocumentError(ValueError):
    """A document that does not validate. `problems` holds one (field, message) pair per error."""

    def __init__(self, where: str, problems: list[tuple[str, str]]) -> None:
        self.where = where
        self.problems = problems
        super().__init__(f"{where}: " + "; ".join(f"{f}: {m}" if f else m for f, m in problems))

    def as_dict(self) -> dict[str, Any]:
        return {"where": self.where, "problems": [{"field": f, "message": m} for f, m in self.problems]}


def field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe(exc: ValidationError) -> list[tuple[str, str]]:
    """pydantic's errors as (field path, 'expected ...; found ...') pairs."""
    problems = []
    for err in exc.errors():
        found = err.get("input")
        shown = repr(found) if not isinstance(found, dict | list) else type(found).__name__
        if len(shown) > 80:
            shown = shown[:77] + "..."
        if err["type"] == "missing":
            msg = "required, but missing"
        elif err["type"] == "extra_forbidden":
            msg = "not a known field"
        else:
            msg = f"{err['msg']}; found {shown}"
        problems.append((field_path(tuple(err["loc"])), msg))
    return problems


def read_document(path: Path, what: str, where: str | None = None) -> str:
    """The text of a document file (UTF-8); a file that is missing, unreadable, a folder, binary or in
    another encoding is a DocumentError naming the file, the line of the first bad byte and the fix."""
    try:
        return read_text_file(path)
    except TextFileError as exc:
        named = where or str(path)
        at = f"{named}:{exc.line}" if exc.line else named
        fix = f" (fix: {exc.fix})" if exc.fix else ""
        raise DocumentError(at, [("", f"cannot read the {what}: {exc.reason}{fix}")]) from None


def parse_text(text: str, where: str) -> Any:
    """YAML (a superset of JSON) text -> plain data; a syntax error names the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise DocumentError(where, [("", f"not valid YAML: {at}{getattr(exc, 'problem', exc)}")]) from None


def load_model(model: type[M], data: Any, where: str) -> M:
    if not isinstance(data, dict):
        found = type(data).__name__
        raise DocumentError(where, [("", f"expected a mapping at the top level; found {found}")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DocumentError(where, describe(exc)) from None


def load_text(model: type[M], text: str, where: str) -> M:
    return load_model(model, parse_text(text, where), where)
