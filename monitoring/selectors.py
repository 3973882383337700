"""The vector selectors of a PromQL expression, found with a real PromQL parser (promql-parser, the
Rust parser GreptimeDB uses), never a regex: what the tests check against the live Prometheus.

promql-parser is a test dependency: the installer and the hosts never import this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value), __name__ left out

    def promql(self) -> str:
        inner = ",".join(f'{label}{op}"{value}"' for label, op, value in self.matchers)
        return f"{self.metric}{{{inner}}}" if inner else self.metric


_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}


def selectors(expr: str) -> list[Selector]:
    """Every vector selector in `expr`; raises ValueError when it does not parse."""
    import promql_parser

    try:
        tree = promql_parser.parse(expr)
    except Exception as exc:  # the binding raises its own error types
        raise ValueError(f"not valid PromQL: {exc}") from exc
    found: list[Selector] = []
    _walk(tree, found)
    return found


def _walk(node: Any, found: list[Selector]) -> None:
    kind = type(node).__name__
    if kind == "VectorSelector":
        matchers = tuple(
            (m.name, _OPS[str(m.op).rsplit(".", 1)[-1]], m.value)
            for m in node.matchers.matchers
            if m.name != "__name__"
        )
        found.append(Selector(node.name, matchers))
    elif kind == "MatrixSelector":
        _walk(node.vector_selector, found)
    elif kind == "BinaryExpr":
        _walk(node.lhs, found)
        _walk(node.rhs, found)
    elif kind == "Call":
        for arg in node.args:
            _walk(arg, found)
    elif kind == "AggregateExpr":
        _walk(node.expr, found)
        if node.param is not None:
            _walk(node.param, found)
    elif kind in ("ParenExpr", "UnaryExpr", "SubqueryExpr"):
        _walk(node.expr, found)
