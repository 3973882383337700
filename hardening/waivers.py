"""Waivers: the site's accepted exceptions, one YAML file (site/waivers.yml by default).

Each waiver names a control (or a glob of ids), the hosts it covers (a glob of inventory names), why,
who approved it and when it expires. A valid waiver turns a failure into "waived"; an expired one
leaves the failure standing and is itself reported; one that matches no result is reported too.
"""

from __future__ import annotations

from datetime import date
from fnmatch import fnmatchcase
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aicc.hardening.catalog import CatalogError


class Waiver(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    control: str = Field(pattern=r"^AICC-[A-Z*?]+(-[0-9*?]+)?$|^AICC-\*$", description="control id or glob")
    hosts: str = Field("*", min_length=1, description="inventory host names, glob")
    reason: str = Field(min_length=10, description="why the risk is accepted, and what compensates it")
    approver: str = Field(min_length=2, description="who signed it off (name and role)")
    expires: date

    def covers(self, control: str, host: str) -> bool:
        return fnmatchcase(control, self.control) and fnmatchcase(host, self.hosts)

    def expired(self, today: date) -> bool:
        return today >= self.expires


class WaiverFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    waivers: list[Waiver] = Field(default_factory=list)


def load_waivers(path: Path) -> list[Waiver]:
    """The site's waivers; a missing file means none. Errors name the file, waiver and field."""
    if not path.exists():
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise CatalogError(
            path, f"line {mark.line + 1}" if mark else "(document)", "valid YAML", str(exc)
        ) from None
    try:
        return WaiverFile.model_validate(data).waivers
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise CatalogError(path, field, err["msg"], err.get("input")) from None
