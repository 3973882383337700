"""`aicc logs`: every host's journal, as received by systemd-journal-remote on the [monitoring] host,
searched by host, unit, time and text with journalctl on that host (over ssh)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from aicc.installer import remote
from aicc.installer.errors import InputError, RunFailed
from aicc.installer.inventory import Inventory

JOURNAL_DIR = "/var/log/journal/remote"
MAX_LINES = 10000
UNIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@_.:\\-]{0,255}$")
# journalctl's time forms: "2026-12-04 01:02:03", "today", "-1h", "2 hours ago", "@1733270400".
TIME_RE = re.compile(r"^[A-Za-z0-9 :.+@-]{1,64}$")
PRIORITIES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]


@dataclass(frozen=True)
class LogQuery:
    host: str | None = None
    unit: str | None = None
    since: str | None = None
    until: str | None = None
    grep: str | None = None
    lines: int = 100


@dataclass(frozen=True)
class LogEntry:
    time: str  # UTC, ISO 8601 with microseconds
    host: str
    unit: str
    identifier: str
    pid: str
    priority: str
    message: str


def check_query(query: LogQuery, inventory: Inventory) -> None:
    """Refuse what journalctl should never see; every value is also shell-quoted on its way."""
    if query.host is not None and query.host not in inventory.hosts:
        raise InputError(
            f"--host {query.host!r} is not a host of the inventory",
            where=str(inventory.path),
            fix="one of: " + ", ".join(sorted(inventory.hosts)),
        )
    if query.unit is not None and not UNIT_RE.match(query.unit):
        raise InputError(
            f"--unit {query.unit!r} is not a unit name",
            fix="a systemd unit such as kamailio or kamailio.service (letters, digits, @ _ . : -)",
        )
    for option, value in (("--since", query.since), ("--until", query.until)):
        if value is not None and not TIME_RE.match(value):
            raise InputError(
                f"{option} {value!r} is not a time journalctl reads",
                fix='for example "2026-12-04 10:00", "today", "-1h" or "2 hours ago"',
            )
    if query.grep is not None:
        if not query.grep or len(query.grep) > 512:
            raise InputError("--grep needs a regular expression of 1 to 512 characters")
        try:
            re.compile(query.grep)
        except re.error as exc:
            raise InputError(f"--grep {query.grep!r} is not a regular expression: {exc}") from None
    if not 1 <= query.lines <= MAX_LINES:
        raise InputError(f"--lines must be between 1 and {MAX_LINES}")


def journalctl_args(query: LogQuery) -> list[str]:
    """journalctl's arguments after --directory and --output (see probes/journal_query.py)."""
    args = [f"--lines={query.lines}"]
    if query.since:
        args.append(f"--since={query.since}")
    if query.until:
        args.append(f"--until={query.until}")
    if query.grep:
        args.append(f"--grep={query.grep}")
    if query.unit:
        args.append(f"--unit={query.unit}")
    if query.host:
        # Each host reports its own hostname; aicc hosts are named as in the inventory.
        args.append(f"_HOSTNAME={query.host}")
    return args


def collect(inventory: Inventory, query: LogQuery, journal_dir: str = JOURNAL_DIR) -> list[LogEntry]:
    check_query(query, inventory)
    host = inventory.monitoring_host("no host's journal is collected")
    script = Path(str(resources.files("aicc.installer.probes").joinpath("journal_query.py")))
    result = remote.run_python(host, script, [journal_dir, *journalctl_args(query)], timeout=150)
    if not result.ok:
        raise RunFailed(
            f"could not read the journals on {host.name}: {remote.short_error(result)}",
            where=host.name,
            fix="check the host is up (`aicc status`)",
        )
    return parse_reply(result.stdout, host.name)


def parse_reply(stdout: str, where: str) -> list[LogEntry]:
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        raise RunFailed(f"unexpected answer from {where}: {stdout[-300:]!r}", where=where) from None
    if data.get("empty"):
        raise RunFailed(
            f"no host's journal has reached {where} yet ({data['error']})",
            where=where,
            fix="run `aicc install`; then check `systemctl status systemd-journal-upload` on the hosts "
            f"and `systemctl status systemd-journal-remote` on {where}",
        )
    if not data["ok"]:
        raise RunFailed(
            f"journalctl on {where} failed: {data['error']}",
            where=where,
            fix="check the --since/--until/--grep values (journalctl's own forms)",
        )
    return [parse_entry(json.loads(line)) for line in data["lines"] if line.strip()]


def _text(value: Any) -> str:
    # journalctl writes a field that is not valid UTF-8 as an array of bytes, a missing one as null.
    if value is None:
        return ""
    if isinstance(value, list):
        return bytes(int(b) & 0xFF for b in value).decode("utf-8", errors="replace")
    return str(value)


def parse_entry(raw: dict[str, Any]) -> LogEntry:
    micros = int(raw.get("__REALTIME_TIMESTAMP") or 0)
    when = datetime.fromtimestamp(micros / 1_000_000, tz=UTC)
    priority = _text(raw.get("PRIORITY"))
    return LogEntry(
        time=when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        host=_text(raw.get("_HOSTNAME")),
        unit=_text(raw.get("_SYSTEMD_UNIT")),
        identifier=_text(raw.get("SYSLOG_IDENTIFIER")),
        pid=_text(raw.get("_PID")),
        priority=PRIORITIES[int(priority)] if priority.isdigit() and int(priority) < 8 else priority,
        message=_text(raw.get("MESSAGE")),
    )


def as_json(entries: list[LogEntry]) -> list[dict[str, str]]:
    return [asdict(e) for e in entries]
