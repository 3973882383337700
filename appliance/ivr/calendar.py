"""Business hours and holidays: is a line open at a given moment, in the calendar's own time zone?

    name: cn-office
    timezone: Asia/Shanghai
    weekly: {mon: [["09:00", "18:00"]], ...}          # a day not listed is closed all day
    holidays: [{date: 2026-05-01, name: 劳动节}, {from: 2026-10-01, to: 2026-10-07, name: 国庆节}]
    open_days: [{date: 2026-09-20, hours: [["09:00", "18:00"]]}]   # 调休: a weekend working day

An open day overrides the week and the holidays; a holiday overrides the week. A span is
start <= time < end ("24:00" ends at midnight); a span across midnight is two spans on two days.
The shipped calendars (appliance/ivr/flows/calendars.yml) are `always` and `cn-office`.
"""

from __future__ import annotations

import datetime as dt
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from aicc.appliance.documents import load_text, read_document
from aicc.appliance.ivr.flow import FLOWS_DIR, CalendarName

CALENDARS_FILE = FLOWS_DIR / "calendars.yml"

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _sexagesimal(value: object) -> object:
    # YAML 1.1 reads an unquoted 18:00 as the base-60 number 1080; 09:00 stays a string.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 24 * 60:
        return f"{value // 60:02d}:{value % 60:02d}"
    return value


Clock = Annotated[
    str, BeforeValidator(_sexagesimal), Field(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")
]
Span = tuple[Clock, Clock]
State = Literal["open", "closed", "holiday"]


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _check_spans(spans: list[Span], where: str) -> None:
    ordered = sorted(spans, key=lambda s: _minutes(s[0]))
    for start, end in ordered:
        if _minutes(start) >= _minutes(end):
            raise ValueError(
                f"{where}: {start}-{end} does not end after it starts "
                "(a span across midnight is two spans: ...-24:00 and 00:00-... the next day)"
            )
    for (_, end), (start, _) in pairwise(ordered):
        if _minutes(start) < _minutes(end):
            raise ValueError(f"{where}: spans overlap at {start} (before {end})")


def _within(spans: list[Span], at: dt.time) -> bool:
    minute = at.hour * 60 + at.minute
    return any(_minutes(start) <= minute < _minutes(end) for start, end in spans)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Holiday(_Doc):
    date: dt.date | None = None
    from_: dt.date | None = Field(None, alias="from")
    to: dt.date | None = None
    name: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> Holiday:
        if self.date is not None and (self.from_ is not None or self.to is not None):
            raise ValueError(f"{self.name}: give date (one day) or from and to (a range), not both")
        if self.date is None and (self.from_ is None or self.to is None):
            raise ValueError(f"{self.name}: give date (one day) or both from and to (a range)")
        if self.from_ is not None and self.to is not None and self.from_ > self.to:
            raise ValueError(f"{self.name}: from {self.from_} is after to {self.to}")
        return self

    def covers(self, day: dt.date) -> bool:
        if self.date is not None:
            return day == self.date
        return self.from_ is not None and self.to is not None and self.from_ <= day <= self.to


class OpenDay(_Doc):
    date: dt.date
    hours: list[Span] = Field(min_length=1)
    name: str = ""

    @field_validator("hours")
    @classmethod
    def _spans(cls, hours: list[Span]) -> list[Span]:
        _check_spans(hours, "hours")
        return hours


class Calendar(_Doc):
    name: CalendarName
    description: str = ""
    timezone: str = Field(description="IANA time zone, e.g. Asia/Shanghai")
    weekly: dict[Weekday, list[Span]] = Field(default_factory=dict)
    holidays: list[Holiday] = Field(default_factory=list)
    open_days: list[OpenDay] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {name!r} (an IANA name such as Asia/Shanghai or UTC)"
            ) from None
        return name

    @field_validator("weekly")
    @classmethod
    def _weekly_spans(cls, weekly: dict[Weekday, list[Span]]) -> dict[Weekday, list[Span]]:
        for day, spans in weekly.items():
            _check_spans(spans, day)
        return weekly

    @model_validator(mode="after")
    def _open_days_are_not_holidays(self) -> Calendar:
        for day in self.open_days:
            clash = next((h for h in self.holidays if h.covers(day.date)), None)
            if clash is not None:
                raise ValueError(f"open day {day.date} is also the holiday {clash.name!r}: keep one of them")
        return self

    def local(self, at: dt.datetime) -> dt.datetime:
        """`at` in the calendar's time zone; a naive `at` is taken as local time there."""
        zone = ZoneInfo(self.timezone)
        return at.astimezone(zone) if at.tzinfo is not None else at.replace(tzinfo=zone)

    def is_open(self, at: dt.datetime) -> State:
        """The state at `at`, read in the calendar's time zone (a naive `at` is local time there)."""
        local = self.local(at)
        day, clock = local.date(), local.time()
        for open_day in self.open_days:
            if open_day.date == day:
                return "open" if _within(open_day.hours, clock) else "closed"
        if any(h.covers(day) for h in self.holidays):
            return "holiday"
        return "open" if _within(self.weekly.get(WEEKDAYS[day.weekday()], []), clock) else "closed"


class CalendarSet(_Doc):
    calendars: list[Calendar] = Field(min_length=1)

    @field_validator("calendars")
    @classmethod
    def _unique(cls, calendars: list[Calendar]) -> list[Calendar]:
        names = [c.name for c in calendars]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"calendar names must be unique; found twice: {', '.join(twice)}")
        return calendars


def load_calendars(extra: Path | None = None) -> dict[str, Calendar]:
    """The shipped calendars, then those of `extra` (a file `calendars: [...]`), which override by name."""
    out: dict[str, Calendar] = {}
    for path in [CALENDARS_FILE] if extra is None else [CALENDARS_FILE, extra]:
        text = read_document(path, "calendars")
        out |= {c.name: c for c in load_text(CalendarSet, text, str(path)).calendars}
    return out
