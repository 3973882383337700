"""Grafana dashboards from the same panel definitions as the appliance's operations page.

monitoring/panels.py is the one definition: /ops/ draws it with uPlot, and this module turns each
dashboard of it into the JSON model Grafana's file provisioning reads, built with
grafana-foundation-sdk (pinned in pyproject.toml: its schema is Grafana 11.6's, dashboard
schemaVersion 41; newer Grafana migrates it on load). `aicc install` writes the files into the site
(.runner/monitoring-dashboards) and the monitoring role provisions them when the site's package
source carries a grafana .deb.

Everything but write_dashboards is pure and deterministic: the same definitions give the same bytes
(uid, panel ids and layout), so a second install changes nothing on the monitoring host.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from pydantic import ValidationError

from aicc.monitoring import panels as panels_module
from aicc.monitoring.panels import DASHBOARDS, Dashboard, Panel, Query
from aicc.monitoring.slo import DefinitionError

Language = Literal["en", "zh"]

# The provisioned Prometheus datasource (roles/monitoring/templates/grafana-datasources.yaml.j2 gives
# it this uid): every panel and query names it, so no dashboard depends on which datasource is default.
DATASOURCE_UID = "aicc-prometheus"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
# Tag of every aicc dashboard; each dashboard links to the others through it.
TAG = "aicc"
# Grafana's limit on a dashboard uid.
UID_MAX = 40
FILE_GLOB = "aicc-*.json"

# panels.py's units -> Grafana's unit ids (the /ops/ page's formatValue draws the same values).
UNITS: dict[str, str] = {
    "short": "short",
    "percent": "percent",  # 0-100
    "seconds": "s",
    "ratio": "percentunit",  # 0-1, shown as a percentage like /ops/ does
    "bytes": "bytes",  # IEC, like /ops/
    "mos": "none",
    "per_second": "suffix:/s",
}
# Two decimals where /ops/ shows two (MOS is 1-5: 4.31 and 4.3 differ).
DECIMALS: dict[str, int] = {"mos": 2}

# Layout on Grafana's 24-column grid: stat panels three to a row, time series two.
STAT_SIZE = (8, 4)
TIMESERIES_SIZE = (12, 8)

_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PANELS_FILE = Path(panels_module.__file__)

PanelBuilder = timeseries.Panel | stat.Panel


def _broken(where: str, field: str, message: str) -> DefinitionError:
    return DefinitionError(_PANELS_FILE, f"{where} {field}", message)


def dashboard_uid(dashboard: Dashboard) -> str:
    """Stable across installs: Grafana keeps a provisioned dashboard's history and links by it."""
    return f"{TAG}-{dashboard.id}"


def file_name(dashboard: Dashboard) -> str:
    return f"{dashboard_uid(dashboard)}.json"


def legend_format(legend: str) -> str:
    """A panels.py legend (a str.format template over the series' labels, as /ops/ fills it) as
    Grafana's legendFormat: "{queue} {state}" -> "{{queue}} {{state}}"; a fixed text stays as it is.
    ValueError for anything /ops/ would not read as label names."""
    out: list[str] = []
    try:
        parsed = list(string.Formatter().parse(legend))
    except ValueError as exc:
        raise ValueError(f"{legend!r} is not a legend template ({exc}); write {{host}} for a label") from None
    for literal, name, spec, conversion in parsed:
        out.append(literal)
        if name is None:
            continue
        if spec or conversion or not _LABEL.fullmatch(name):
            raise ValueError(
                f"legend fields are plain label names such as {{host}}; found {{{name}"
                f"{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
            )
        out.append("{{" + name + "}}")
    return "".join(out)


def _checked(dashboard: Dashboard) -> Dashboard:
    """The definition validated again (one built with model_construct skips pydantic), plus what
    Grafana needs beyond panels.py's own rules; a broken field is named with its dashboard and panel."""
    where = f"dashboard {getattr(dashboard, 'id', '?')}"
    try:
        checked = Dashboard.model_validate(dashboard.model_dump(warnings=False))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first["loc"]]
        if len(loc) >= 2 and loc[0] == "panels" and loc[1].isdigit():
            index = int(loc[1])
            where, loc = f"{where} panel {getattr(dashboard.panels[index], 'id', index)}", loc[2:]
        raise _broken(where, ".".join(loc) or "(whole)", first["msg"]) from None
    if len(dashboard_uid(checked)) > UID_MAX:
        uid = dashboard_uid(checked)
        raise _broken(where, "id", f"gives the uid {uid!r}, longer than Grafana's {UID_MAX} characters")
    seen: set[str] = set()
    for panel in checked.panels:
        here = f"{where} panel {panel.id}"
        if panel.id in seen:
            raise _broken(here, "id", "used twice in this dashboard (the /ops/ page finds panels by id)")
        seen.add(panel.id)
        if panel.threshold is not None and not math.isfinite(panel.threshold):
            raise _broken(here, "threshold", f"expected a finite number, found {panel.threshold}")
        for n, query in enumerate(panel.queries):
            if not query.expr.strip():
                raise _broken(here, f"queries.{n}.expr", "empty PromQL")
            try:
                legend_format(query.legend)
            except ValueError as exc:
                raise _broken(here, f"queries.{n}.legend", str(exc)) from None
    return checked


def _target(query: Query, ref: str, instant: bool) -> prometheus.Dataquery:
    target = prometheus.Dataquery().ref_id(ref).expr(query.expr).datasource(DATASOURCE)
    if query.legend:
        target = target.legend_format(legend_format(query.legend))
    # Stat panels read one value now, as /ops/ does (/api/v1/query); time series read a range.
    return target.instant() if instant else target.range()


def _ref_id(n: int) -> str:
    """Grafana's query letters: A..Z, then AA, AB..."""
    letters = string.ascii_uppercase
    return letters[n] if n < len(letters) else _ref_id(n // len(letters) - 1) + letters[n % len(letters)]


def _thresholds(panel: Panel) -> dashboard_builder.ThresholdsConfig:
    ok, bad = "green", "red"
    if panel.threshold is None:
        steps = [model.Threshold(value=None, color=ok)]
    elif panel.lower_is_worse:
        steps = [model.Threshold(value=None, color=bad), model.Threshold(value=panel.threshold, color=ok)]
    else:
        steps = [model.Threshold(value=None, color=ok), model.Threshold(value=panel.threshold, color=bad)]
    return dashboard_builder.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps)


def _panel(panel: Panel, number: int, lang: Language) -> PanelBuilder:
    other: Language = "zh" if lang == "en" else "en"
    built: PanelBuilder
    if panel.kind == "stat":
        width, height = STAT_SIZE
        built = (
            stat.Panel()
            .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .graph_mode(common.BigValueGraphMode.NONE)
            .color_mode(common.BigValueColorMode.VALUE)
        )
    else:
        width, height = TIMESERIES_SIZE
        built = (
            timeseries.Panel()
            .legend(
                common_builder.VizLegendOptions()
                .display_mode(common.LegendDisplayMode.LIST)
                .placement(common.LegendPlacement.BOTTOM)
                .show_legend(True)
            )
            .tooltip(
                common_builder.VizTooltipOptions()
                .mode(common.TooltipDisplayMode.MULTI)
                .sort(common.SortOrder.DESCENDING)
            )
        )
        if panel.threshold is not None:
            built = built.thresholds_style(
                common_builder.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
            )
    built = (
        built.id(number)
        .title(getattr(panel.title, lang))
        .description(getattr(panel.title, other))
        .datasource(DATASOURCE)
        .unit(UNITS[panel.unit])
        .thresholds(_thresholds(panel))
        .span(width)
        .height(height)
    )
    if panel.unit in DECIMALS:
        built = built.decimals(DECIMALS[panel.unit])
    for n, query in enumerate(panel.queries):
        built = built.with_target(_target(query, _ref_id(n), panel.kind == "stat"))
    return built


def dashboard_model(dashboard: Dashboard, lang: Language = "en") -> dict[str, object]:
    """One dashboard of panels.py as the JSON object Grafana provisions from a file (no numeric id:
    Grafana assigns it; the uid is what stays)."""
    checked = _checked(dashboard)
    builder = (
        dashboard_builder.Dashboard(getattr(checked.title, lang))
        .uid(dashboard_uid(checked))
        .description(
            "Generated by aicc from monitoring/panels.py, the same panels as the appliance's /ops/ page: "
            "change the definitions there, not this dashboard."
        )
        .tags([TAG])
        .readonly()
        .timezone("browser")
        .time("now-6h", "now")
        .refresh("30s")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(
            dashboard_builder.DashboardLink("aicc dashboards")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .keep_time(True)
        )
    )
    # Panel ids are 1..n in the definitions' order: unique in the dashboard and stable across runs.
    for number, panel in enumerate(checked.panels, 1):
        builder = builder.with_panel(_panel(panel, number, lang))
    data: dict[str, object] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return data


def dashboard_files(dashboards: Sequence[Dashboard] = DASHBOARDS, lang: Language = "en") -> dict[str, str]:
    """File name -> JSON text for every dashboard (sorted keys: the same bytes on every run)."""
    files: dict[str, str] = {}
    for dashboard in dashboards:
        name = file_name(dashboard)
        if name in files:
            raise _broken(f"dashboard {dashboard.id}", "id", "used by two dashboards")
        text = json.dumps(dashboard_model(dashboard, lang), indent=2, sort_keys=True, ensure_ascii=False)
        files[name] = text + "\n"
    return files


def language_of(locale: str) -> Language:
    """Dashboard titles in Chinese for a zh_* site locale, else English (the other one is each
    panel's description)."""
    return "zh" if locale.lower().startswith("zh") else "en"


def write_dashboards(folder: Path, lang: Language = "en") -> list[Path]:
    """Write every dashboard into `folder`, removing aicc dashboards this version no longer makes;
    a file whose text is unchanged is left alone."""
    files = dashboard_files(lang=lang)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(FILE_GLOB):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, text in files.items():
        path = folder / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
