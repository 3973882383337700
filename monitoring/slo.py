"""Voice SLOs as data (monitoring/slos/*.yml) and the multiwindow, multi-burn-rate rules made from
them: Sloth's four tiers over a 28-day budget (Google SRE workbook, chapter "Alerting on SLOs").

  page   1h / 5m  x14.4  and  6h / 30m  x6    -> <Name>ErrorBudgetBurnFast, critical
  ticket 1d / 2h  x3     and  3d / 6h   x1    -> <Name>ErrorBudgetBurnSlow, warning

An SLI is two PromQL expressions, bad events and all events, each with `{window}` where the range
goes. Every SLO file carries its own promtool cases: the rules made from it are tested like the
hand-written alerts.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aicc.monitoring.model import Alert, AlertCase, Group, Record
from aicc.monitoring.panels import Text

WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# (long window, short window, burn rate) per tier; fast tiers page, slow ones open a ticket.
FAST = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
SLOW = (("1d", "2h", 3.0), ("3d", "6h", 1.0))
PERIOD = "28d"


class DefinitionError(ValueError):
    """A monitoring definition file that does not validate: which file, which field, what is wrong."""

    def __init__(self, path: Path, field: str, message: str) -> None:
        super().__init__(f"{path}: {field}: {message}")
        self.path, self.field, self.message = path, field, message


class Sli(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    errors: str
    total: str

    @field_validator("errors", "total")
    @classmethod
    def _has_window(cls, v: str) -> str:
        if "{window}" not in v:
            raise ValueError(
                "expected a PromQL expression with {window} where the range goes, e.g. [{window}]"
            )
        if fixed := re.search(r"\[\s*\d+\w*\s*\]", v):
            raise ValueError(
                f"every range must be [{{window}}] (each window is its own rule), found {fixed[0]}"
            )
        return v

    def ratio(self, window: str) -> str:
        errors, total = (e.replace("{window}", window) for e in (self.errors, self.total))
        return f"({errors})\n/\n({total})"


class SloCase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    series: dict[str, str]
    at: str = "1h"
    fires: list[str] = Field(default_factory=list, description="fast, slow, both or none of them")

    @field_validator("fires")
    @classmethod
    def _tiers(cls, v: list[str]) -> list[str]:
        if bad := set(v) - {"fast", "slow"}:
            raise ValueError(f"fires lists tiers 'fast' and 'slow', found {sorted(bad)}")
        return v


class Slo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z][a-z0-9-]+$")
    alert_prefix: str = Field(pattern=r"^Aicc(?:[A-Z][a-z0-9]*)+$")
    title: Text
    description: str
    objective: float = Field(gt=0, lt=100, description="percent of good events over 28 days")
    sli: Sli
    cases: list[SloCase] = Field(min_length=2)

    @property
    def budget(self) -> float:
        return round(1 - self.objective / 100, 10)


def _record(slo: Slo, window: str) -> str:
    return f"aicc_slo:sli_error:ratio_rate{window}"


def _selector(slo: Slo, window: str) -> str:
    return f'{_record(slo, window)}{{slo="{slo.name}"}}'


def _burn(slo: Slo, tiers: tuple[tuple[str, str, float], ...]) -> str:
    return "\nor\n".join(
        f"({_selector(slo, long)} > {limit}\nand\n{_selector(slo, short)} > {limit})"
        for long, short, rate in tiers
        for limit in [f"({rate} * {slo.budget})"]
    )


def _alert(slo: Slo, tier: str, cases: list[AlertCase]) -> Alert:
    fast = tier == "fast"
    return Alert(
        name=f"{slo.alert_prefix}ErrorBudgetBurn{'Fast' if fast else 'Slow'}",
        expr=_burn(slo, FAST if fast else SLOW),
        severity="critical" if fast else "warning",
        labels={"slo": slo.name},
        summary=f"{slo.title.en}: the error budget is burning {'fast' if fast else 'steadily'}.",
        description=(
            f"{slo.description} Objective {slo.objective} % over {PERIOD}. At the current rate "
            + (
                "2 % of the budget goes in an hour or 5 % in six hours."
                if fast
                else "10 % of the budget goes in a day or three days."
            )
            + " Error ratio over 5 minutes: {{ $value | humanizePercentage }}."
        ),
        cases=cases,
    )


def slo_group(slo: Slo) -> Group:
    records: list[Alert | Record] = [
        Record(record=_record(slo, w), expr=slo.sli.ratio(w), labels={"slo": slo.name}) for w in WINDOWS
    ]
    records.append(
        Record(
            record="aicc_slo:objective:ratio", expr=f"vector({slo.objective / 100})", labels={"slo": slo.name}
        )
    )
    alerts = [
        _alert(
            slo,
            tier,
            [
                AlertCase(series=c.series, at=c.at, fires=tier in c.fires, labels={"slo": slo.name})
                for c in slo.cases
            ],
        )
        for tier in ("fast", "slow")
    ]
    return Group(name=f"aicc-slo-{slo.name}", rules=records + alerts)


def budget_group(slos: list[Slo]) -> Group:
    """Budget left over the period, for dashboards: 28-day ranges are heavy, so every 5 minutes."""
    return Group(
        name="aicc-slo-budget",
        interval="5m",
        rules=[
            Record(
                record="aicc_slo:error_budget_remaining:ratio",
                expr=f"1 - (({slo.sli.ratio(PERIOD)}) / {slo.budget})",
                labels={"slo": slo.name},
            )
            for slo in slos
        ],
    )


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(file)"


def load_slo(path: Path) -> Slo:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DefinitionError(path, "(file)", f"not valid YAML: {exc}") from exc
    try:
        slo = Slo.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise DefinitionError(
            path, _field(first["loc"]), f"{first['msg']} (found {first.get('input')!r:.80})"
        ) from exc
    if path.stem != slo.name:
        raise DefinitionError(path, "name", f"must match the file name {path.stem!r}, found {slo.name!r}")
    if not any(c.fires for c in slo.cases) or not any(not c.fires for c in slo.cases):
        raise DefinitionError(path, "cases", "need one case where an alert fires and one where none does")
    return slo


def slo_dir() -> Path:
    return Path(str(resources.files("aicc.monitoring").joinpath("slos")))


@cache
def load_slos(folder: Path | None = None) -> tuple[Slo, ...]:
    folder = folder or slo_dir()
    return tuple(load_slo(p) for p in sorted(folder.glob("*.yml")))
