"""Waivers: the site's accepted exceptions, one YAML file (site/waivers.yml by default).

Each waiver names a control (or a glob of ids), the hosts it covers (a glob of inventory names), why,
who approved it and when it expires. A valid waiver turns a failure into "waived"; an expired one
leaves the failure standing and is itself reported; one that matches no result is reported too.
"""

from __future__ import annotations

from datetime import date
from fnmatch import fnmatchcase
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aicc.hardening.catalog import first_error, read_yaml


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
        return WaiverFile.model_validate(read_yaml(path) or {}).waivers
    except ValidationError as exc:
        raise first_error(path, exc) from None
