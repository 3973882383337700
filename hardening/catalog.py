"""The controls catalog: one YAML file per control (controls/*.yml) and the MLPS 2.0 level-3 clauses
(clauses.yml) they serve, validated into Pydantic models.

A control names the GB/T 28448-2019 test units it serves and whether it covers each fully or only
partly; a partial control can never on its own make a clause 符合 (report.py). A bad file raises
CatalogError naming the file, the field, what was expected and what was found.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aicc.appliance.textfile import TextFileError, read_text_file

GROUPS = ("sip_proxy", "media", "voicebot", "speech", "llm", "app", "db", "monitoring")
Layer = Literal["CNS", "ABS", "CES", "SMC"]
LAYER_NAMES: dict[str, tuple[str, str]] = {
    "CNS": ("安全通信网络", "Secure communication network"),
    "ABS": ("安全区域边界", "Secure area boundary"),
    "CES": ("安全计算环境", "Secure computing environment"),
    "SMC": ("安全管理中心", "Security management center"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Text(_Strict):
    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)


class Clause(_Strict):
    """One GB/T 28448-2019 level-3 test unit and the GB/T 22239-2019 clause it tests."""

    unit: str = Field(pattern=r"^L3-(CNS|ABS|CES|SMC)1-[0-9]{2}$")
    clause: str = Field(pattern=r"^8\.1\.[0-9]+(\.[0-9]+)*( [a-g])?$")
    requirement: Text
    host_evidenced: bool = Field(
        description="false: network devices, physical or organisational; the customer attests it"
    )

    @property
    def layer(self) -> str:
        return self.unit[3:6]


class ClauseRef(_Strict):
    unit: str = Field(pattern=r"^L3-(CNS|ABS|CES|SMC)1-[0-9]{2}$")
    coverage: Literal["full", "partial"]
    note: str = ""


class Apply(_Strict):
    role: str = Field(pattern=r"^[a-z_]+$")
    tasks: str = Field(min_length=1, description="the role's tasks file")
    tag: str = Field(pattern=r"^hardening_[a-z_]+$")
    toggle: str = Field(pattern=r"^hardening_[a-z_]+$")


class Check(_Strict):
    """A shell command run as root on the host. Its output is the evidence; its exit code the result:
    0 pass, 1 fail, 3 not applicable on this host (say why in the output), anything else an error."""

    command: str = Field(min_length=1)
    timeout_s: int = Field(20, ge=1, le=300)


class Control(_Strict):
    id: str = Field(pattern=r"^AICC-[A-Z]+-[0-9]{2}$")
    title: Text
    rationale: Text
    clauses: list[ClauseRef] = Field(min_length=1)
    cis: list[str] = Field(default_factory=list, description="CIS Debian Linux 12 Benchmark v1.1.0 ids")
    ssg: list[str] = Field(default_factory=list, description="ComplianceAsCode rule ids")
    hosts: list[str] = Field(min_length=1, description="inventory groups, or all")
    high_risk: bool = Field(False, description="a failure is a high-risk finding (2025 judgement guide)")
    apply: Apply | None = Field(None, description="absent: aicc checks but does not change it")
    check: Check
    remediation: Text

    @field_validator("hosts")
    @classmethod
    def _groups(cls, hosts: list[str]) -> list[str]:
        bad = [g for g in hosts if g != "all" and g not in GROUPS]
        if bad:
            raise ValueError(f"unknown group {bad[0]!r}; expected all or one of {', '.join(GROUPS)}")
        return hosts

    def applies_to(self, groups: list[str]) -> bool:
        return "all" in self.hosts or any(g in self.hosts for g in groups)


class Catalog(BaseModel):
    controls: list[Control]
    clauses: list[Clause]
    digest: str = Field(description="sha256 over every catalog file: which catalog a report used")

    def clause(self, unit: str) -> Clause:
        return next(c for c in self.clauses if c.unit == unit)

    def control(self, control_id: str) -> Control:
        return next(c for c in self.controls if c.id == control_id)

    def covering(self, unit: str) -> list[tuple[Control, ClauseRef]]:
        return [(c, ref) for c in self.controls for ref in c.clauses if ref.unit == unit]


class CatalogError(Exception):
    def __init__(self, path: Path, field: str, expected: str, found: object) -> None:
        self.path, self.field, self.expected, self.found = path, field, expected, found
        self.message = f"field {field}: expected {expected}; found {found!r}"
        self.line: int | None = None
        self.fix: str | None = None
        super().__init__(f"{path}: {self.message}")

    @classmethod
    def from_text_file(cls, exc: TextFileError) -> CatalogError:
        """A file that is not UTF-8 text: the line of the first bad byte, and the fix."""
        err = cls(exc.path, f"line {exc.line}" if exc.line else "(file)", "UTF-8 text", exc.reason)
        err.message, err.line, err.fix = exc.reason, exc.line, exc.fix
        err.args = (f"{exc.where}: {exc.reason}",)
        return err


def catalog_dir() -> Path:
    return Path(str(resources.files("aicc.hardening")))


def read_yaml(path: Path) -> object:
    try:
        text = read_text_file(path)
    except TextFileError as exc:
        raise CatalogError.from_text_file(exc) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(document)"
        raise CatalogError(path, where, "valid YAML", getattr(exc, "problem", str(exc))) from None


def first_error(path: Path, exc: ValidationError, prefix: str = "") -> CatalogError:
    err = exc.errors()[0]
    field = prefix + ".".join(str(p) for p in err["loc"]) or "(top level)"
    return CatalogError(path, field, err["msg"].removeprefix("Value error, "), err.get("input"))


def load_clauses(path: Path) -> list[Clause]:
    data = read_yaml(path)
    if not isinstance(data, list):
        raise CatalogError(path, "(top level)", "a list of clauses", type(data).__name__)
    clauses = []
    for i, item in enumerate(data):
        try:
            clauses.append(Clause.model_validate(item))
        except ValidationError as exc:
            raise first_error(path, exc, f"[{i}].") from None
    seen: set[str] = set()
    for i, c in enumerate(clauses):
        if c.unit in seen:
            raise CatalogError(path, f"[{i}].unit", "each test unit once", c.unit)
        seen.add(c.unit)
    return clauses


def load_control(path: Path, units: set[str]) -> Control:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise CatalogError(path, "(top level)", "a mapping (one control)", type(data).__name__)
    try:
        control = Control.model_validate(data)
    except ValidationError as exc:
        raise first_error(path, exc) from None
    if path.stem != control.id:
        raise CatalogError(path, "id", f"the file's name ({path.stem})", control.id)
    for i, ref in enumerate(control.clauses):
        if ref.unit not in units:
            raise CatalogError(path, f"clauses.{i}.unit", "a test unit listed in clauses.yml", ref.unit)
    return control


def load_catalog(root: Path | None = None) -> Catalog:
    root = root or catalog_dir()
    clauses_path = root / "clauses.yml"
    clauses = load_clauses(clauses_path)
    units = {c.unit for c in clauses}
    digest = hashlib.sha256(clauses_path.read_bytes())
    controls = []
    for path in sorted((root / "controls").glob("*.yml")):
        controls.append(load_control(path, units))
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    if not controls:
        raise CatalogError(root / "controls", "(folder)", "at least one control file", "none")
    return Catalog(controls=controls, clauses=clauses, digest=digest.hexdigest())


@cache
def default_catalog() -> Catalog:
    return load_catalog()


def unit_sort_key(unit: str) -> tuple[int, int]:
    order = {"CNS": 0, "ABS": 1, "CES": 2, "SMC": 3}
    m = re.match(r"L3-([A-Z]{3})1-([0-9]{2})", unit)
    return (order.get(m.group(1), 9), int(m.group(2))) if m else (9, 0)


def catalog_markdown(catalog: Catalog) -> str:
    """hardening/CONTROLS.md: the catalog as a document (a unit test keeps the file current)."""
    lines = [
        "# Hardening controls (generated from hardening/controls/*.yml; do not edit)",
        "",
        "Regenerate with `python -m aicc.hardening.catalog > hardening/CONTROLS.md`. Each control serves",
        "GB/T 28448-2019 level-3 test units fully or partly; a partial control never on its own makes a",
        "test unit 符合. `*` marks a control whose failure is a high-risk finding.",
        "",
        "| Control | Title | Test units | Hosts | Applied by (tag) | CIS / SSG |",
        "|---|---|---|---|---|---|",
    ]
    for c in catalog.controls:
        units = ", ".join(r.unit + (" (partial)" if r.coverage == "partial" else "") for r in c.clauses)
        refs = ", ".join([f"CIS {x}" for x in c.cis] + c.ssg) or "-"
        tag = f"`{c.apply.tag}`" if c.apply else "checked only"
        title = f"{c.title.en}<br>{c.title.zh}"
        control = c.id + (" *" if c.high_risk else "")
        lines.append(f"| {control} | {title} | {units} | {', '.join(c.hosts)} | {tag} | {refs} |")
    covered = {r.unit for c in catalog.controls for r in c.clauses}
    lines += ["", "## Test units", "", "| Unit | Clause | Requirement | Covered by |", "|---|---|---|---|"]
    for cl in sorted(catalog.clauses, key=lambda x: unit_sort_key(x.unit)):
        if not cl.host_evidenced:
            by = "manual: not evidenced by a host"
        elif cl.unit not in covered:
            by = "manual: no aicc control"
        else:
            by = ", ".join(f"{c.id} ({r.coverage})" for c, r in catalog.covering(cl.unit))
        lines.append(f"| {cl.unit} | {cl.clause} | {cl.requirement.zh}<br>{cl.requirement.en} | {by} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(catalog_markdown(load_catalog()), end="")
