"""The README's promises stay true: its hardware table is the one preflight checks."""

from __future__ import annotations

import re
from pathlib import Path

from aicc.installer.sizing import GROUPS

README = Path(__file__).resolve().parents[2] / "README.md"


def render_table() -> str:
    rows = [
        "| group | runs | CPU cores | RAM GiB | disk GiB | lab: cores / RAM / disk |",
        "|---|---|---|---|---|---|",
    ]
    rows += [
        f"| {g.name} | {g.purpose} | {g.cpus:g} | {g.ram_gib:g} | {g.disk_gib:g} | "
        f"{g.lab_cpus:g} / {g.lab_ram_gib:g} / {g.lab_disk_gib:g} |"
        for g in GROUPS.values()
    ]
    return "\n".join(rows)


def test_readme_sizing_table_matches_preflight() -> None:
    text = README.read_text()
    m = re.search(r"<!-- sizing-table:.*?-->\n(.*?)\n<!-- /sizing-table -->", text, re.S)
    assert m, "README lost its sizing table markers"
    assert m.group(1) == render_table(), "README's hardware table differs from installer/sizing.py"


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    first_block = README.read_text().split("```")[1]
    assert "aicc demo" in first_block
    assert ".venv/bin/pytest" in first_block


APPLIANCE_README = README.parent / "appliance" / "README.md"


def test_the_report_definitions_in_the_docs_are_the_codes() -> None:
    from aicc.appliance.reports.definitions import markdown

    text = APPLIANCE_README.read_text(encoding="utf-8")
    m = re.search(r"<!-- report-definitions:.*?-->\n(.*?)<!-- /report-definitions -->", text, re.S)
    assert m, "appliance/README.md lost its report-definitions markers"
    assert m.group(1).strip() == markdown().strip(), (
        "appliance/README.md's report definitions differ from appliance/reports/definitions.py"
    )
