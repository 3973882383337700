"""Write a report folder: report.json (the data), evidence/ and inventory/ (one file per check and host),
report.html (A4, table of contents, Chinese fonts named for print), report.pdf (printed by Chromium, fonts
embedded, page numbers), times.json (every time stamp, kept apart so the content hash is stable).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import yaml

from aicc.hardening.catalog import LAYER_NAMES, Catalog
from aicc.hardening.evidence import Collected
from aicc.hardening.report import CLAUSE_STATUSES, CONTROL_STATUSES, Report


def labels() -> dict[str, dict[str, str]]:
    text = (resources.files("aicc.hardening") / "templates" / "labels.yml").read_text(encoding="utf-8")
    data: dict[str, dict[str, str]] = yaml.safe_load(text)
    return data


DATA_FILES = ("report.json",)  # with evidence/ and inventory/: what the content hash covers
DATA_DIRS = ("evidence", "inventory")


def write_data(report: Report, collected: Collected, out: Path) -> None:
    """report.json, evidence/ and inventory/ (the content) and times.json (kept apart)."""
    for folder in DATA_DIRS:
        shutil.rmtree(out / folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(
        json.dumps(report.model_dump(mode="json"), ensure_ascii=False, indent=1, sort_keys=True) + "\n",
        encoding="utf-8",
    )
    for r in report.results:
        path = out / "evidence" / r.host / f"{r.control}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"control: {r.control}\nhost: {r.host}\nresult: {r.status}\n"
            + (f"waiver: {r.waiver}\n" if r.waiver else "")
            + f"\n$ sh -c <<'CHECK'\n{r.command}\nCHECK\n\n{r.output}\n",
            encoding="utf-8",
        )
    inventory = out / "inventory"
    for o in report.observations:
        inventory.mkdir(parents=True, exist_ok=True)
        (inventory / f"{o.host}-packages.txt").write_text("\n".join(o.packages) + "\n", encoding="utf-8")
        (inventory / f"{o.host}-wheels.txt").write_text("\n".join(o.wheels) + "\n", encoding="utf-8")
    times = {
        "started_at": collected.started_at,
        "seconds": round(collected.seconds, 2),
        "checks": {f"{e.control}@{e.host}": [e.collected_at, e.seconds] for e in collected.evidence},
    }
    (out / "times.json").write_text(json.dumps(times, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def content_sha256(out: Path) -> str:
    """sha256 over the data (report.json, evidence/, inventory/) by relative path: the same hosts in the
    same state give the same hash, whenever it is collected."""
    digest = hashlib.sha256()
    files = [out / f for f in DATA_FILES] + sorted(
        p for d in DATA_DIRS for p in (out / d).rglob("*") if p.is_file()
    )
    for path in files:
        digest.update(path.relative_to(out).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def render_html(report: Report, catalog: Catalog, lang: str, collected_at: str) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("aicc.hardening") / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        extensions=[],
    )
    env.filters["regex_replace"] = _regex_replace
    env.tests["comment"] = lambda line: str(line).startswith("#")
    context: dict[str, Any] = {
        "r": report,
        "t": labels()[lang],
        "lang": lang,
        "catalog": catalog,
        "controls": {c.id: c for c in catalog.controls},
        "result_of": {(x.control, x.host): x for x in report.results},
        "clause_statuses": CLAUSE_STATUSES,
        "control_statuses": CONTROL_STATUSES,
        "layer_names": LAYER_NAMES,
        "collected_at": collected_at,
    }
    return env.get_template("report.html.j2").render(**context)


def _regex_replace(value: str, pattern: str, repl: str) -> str:
    return re.sub(pattern, repl, value)


def render_pdf(html_path: Path, pdf_path: Path, footer: str) -> None:
    """Print the HTML with Chromium (the installer host's, through Playwright): A4, fonts embedded,
    'page n / N' in the footer."""
    from playwright.sync_api import Error, sync_playwright

    from aicc.installer.errors import InputError

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise InputError(
            "--format pdf needs Chromium on this machine", fix="apt-get install chromium fonts-wqy-microhei"
        )
    template = (
        '<div style="font-size:7pt;width:100%;padding:0 15mm;color:#555;display:flex;'
        f'justify-content:space-between"><span>{footer}</span>'
        '<span><span class="pageNumber"></span> / <span class="totalPages"></span></span></div>'
    )
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(html_path.resolve().as_uri())
            page.pdf(
                path=str(pdf_path),
                format="A4",
                print_background=True,
                display_header_footer=True,
                header_template="<span></span>",
                footer_template=template,
                margin={"top": "18mm", "bottom": "20mm", "left": "15mm", "right": "15mm"},
            )
            browser.close()
    except Error as exc:
        raise InputError(f"Chromium could not print the report: {exc}", where=str(html_path)) from None
