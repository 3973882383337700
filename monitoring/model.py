"""The shapes of aicc's monitoring as code: alerts with their own tests, recording rules, SLOs.

Alerts follow the monitoring-mixins style guide: CamelCase names sharing the `Aicc` prefix, a
`severity` of critical, warning or info, `summary` and `description` annotations and a
`runbook_url` pointing at the alert's section of monitoring/runbook.md.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Severity = Literal["critical", "warning", "info"]
_DURATION = re.compile(r"^(\d+[smhdw])+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: str) -> str:
    if not _DURATION.match(value):
        raise ValueError(f"expected a Prometheus duration such as 5m or 1h30m, found {value!r}")
    return value


class AlertCase(_Strict):
    """One promtool case: input series (promtool's expanding notation), and whether the alert
    is firing at `at` (with these extra labels when it is)."""

    series: dict[str, str]
    at: str = "15m"
    interval: str = "1m"
    fires: bool
    labels: dict[str, str] = Field(default_factory=dict)

    _check_at = field_validator("at", "interval")(_duration)


class Alert(_Strict):
    name: str
    expr: str
    for_: str = Field("0m", alias="for")
    severity: Severity
    summary: str
    description: str
    labels: dict[str, str] = Field(default_factory=dict)
    # At least one case that fires and one that does not: an alert nobody has seen fire is a guess.
    cases: list[AlertCase]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    _check_for = field_validator("for_")(_duration)

    @field_validator("name")
    @classmethod
    def _camel(cls, v: str) -> str:
        if not re.fullmatch(r"Aicc(?:[A-Z][a-z0-9]*)+", v):
            raise ValueError(f"alert names are CamelCase and start with Aicc, found {v!r}")
        return v

    @field_validator("cases")
    @classmethod
    def _both_ways(cls, v: list[AlertCase]) -> list[AlertCase]:
        if not any(c.fires for c in v) or all(c.fires for c in v):
            raise ValueError("an alert needs at least one case that fires and one that does not")
        return v

    def runbook_url(self, base: str) -> str:
        return f"{base}#alert-name-{self.name.lower()}"

    def rule(self, runbook: str) -> dict[str, object]:
        rule: dict[str, object] = {"alert": self.name, "expr": self.expr}
        if self.for_ != "0m":
            rule["for"] = self.for_
        rule["labels"] = {"severity": self.severity, **self.labels}
        rule["annotations"] = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": self.runbook_url(runbook),
        }
        return rule


class Record(_Strict):
    record: str
    expr: str
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("record")
    @classmethod
    def _level_name_ops(cls, v: str) -> str:
        # Recording rule naming convention: level:metric:operations.
        if v.count(":") != 2:
            raise ValueError(f"recording rules are named level:metric:operations, found {v!r}")
        return v

    def rule(self, runbook: str = "") -> dict[str, object]:
        rule: dict[str, object] = {"record": self.record, "expr": self.expr}
        if self.labels:
            rule["labels"] = dict(self.labels)
        return rule


class Group(_Strict):
    name: str
    rules: list[Alert | Record]
    interval: str | None = None

    def as_dict(self, runbook: str) -> dict[str, object]:
        group: dict[str, object] = {"name": self.name}
        if self.interval:
            group["interval"] = self.interval
        group["rules"] = [r.rule(runbook) for r in self.rules]
        return group

    @property
    def alerts(self) -> list[Alert]:
        return [r for r in self.rules if isinstance(r, Alert)]
