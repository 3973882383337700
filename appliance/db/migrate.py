"""Versioned SQL migrations: NNNN_name.sql files in a component's migrations package, applied once each,
in order, in one transaction per file, under an advisory lock so two installers or services starting
together do not race. Each applied file is recorded with its sha256 in aicc.schema_migrations.

Refused, with nothing changed:
- a file that was already applied and has changed since (add a new migration instead);
- a database that holds a migration this code does not know: it was migrated by a newer aicc, and
  older code must not run against (or "repair") a schema it does not understand.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x41494343  # "AICC"

# Every component's migrations, in the order they apply: later components reference earlier tables
# (agents reference users; call records reference ACD contacts by id only, no foreign keys across).
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("core", "aicc.appliance.api.migrations"),
    ("events", "aicc.appliance.events.migrations"),
    ("acd", "aicc.appliance.acd.migrations"),
    ("ivr", "aicc.appliance.ivr.migrations"),
    ("calls", "aicc.appliance.calls.migrations"),
    ("tickets", "aicc.appliance.tickets.migrations"),
    ("kb", "aicc.appliance.kb.migrations"),
    ("conversations", "aicc.appliance.conversations.migrations"),
    ("demo", "aicc.appliance.connectors.migrations"),
    # Last: it changes tables of calls and conversations (purge marks, indexes).
    ("retention", "aicc.appliance.retention.migrations"),
)


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(Exception):
    pass


def discover(component: str, package: str) -> list[Migration]:
    found = []
    for entry in resources.files(package).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(
                Migration(component, int(match.group(1)), entry.name, entry.read_text(encoding="utf-8"))
            )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{package}: two migrations share a version number")
    return found


def all_migrations() -> list[Migration]:
    """The appliance schema `aicc`: every component's migrations in dependency order."""
    return [m for component, package in COMPONENTS for m in discover(component, package)]


def _applied(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[tuple[str, int], tuple[str, str]]:
    """(component, version) -> (name, sha256) of every migration the database records."""
    rows = conn.execute("SELECT component, version, name, sha256 FROM aicc.schema_migrations").fetchall()
    return {(str(c), int(v)): (str(n), str(h)) for c, v, n, h in rows}


def _check_not_newer(conn: psycopg.Connection[tuple[Any, ...]], migrations: list[Migration]) -> None:
    known = {(m.component, m.version) for m in migrations}
    components = {m.component for m in migrations}
    unknown = sorted(
        f"{c}/{name}"
        for (c, v), (name, _) in _applied(conn).items()
        if c in components and (c, v) not in known
    )
    if unknown:
        raise MigrationError(
            f"the database is newer than this aicc: it holds migration(s) {', '.join(unknown)} that this "
            "code does not know. Install the aicc version that applied them (or a newer one); nothing "
            "was changed"
        )


def apply(conninfo: str, migrations: list[Migration]) -> list[str]:
    """Apply what is missing; returns the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS aicc")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS aicc.schema_migrations (component text NOT NULL, version integer "
                "NOT NULL, name text NOT NULL, sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT "
                "now(), PRIMARY KEY (component, version))"
            )
            _check_not_newer(conn, migrations)
            done = _applied(conn)
            for m in migrations:
                if (m.component, m.version) in done:
                    if done[(m.component, m.version)][1] != m.sha256:
                        raise MigrationError(
                            f"migration {m.component}/{m.name} changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(m.sql.encode())
                    conn.execute(
                        "INSERT INTO aicc.schema_migrations (component, version, name, sha256) "
                        "VALUES (%s, %s, %s, %s)",
                        (m.component, m.version, m.name, m.sha256),
                    )
                applied_now.append(f"{m.component}/{m.name}")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def pending(conninfo: str, migrations: list[Migration]) -> list[str]:
    """Migrations not applied yet (services refuse to start on a schema older than their code)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('aicc.schema_migrations') IS NOT NULL").fetchone()
        done = _applied(conn) if row and row[0] else {}
    return [f"{m.component}/{m.name}" for m in migrations if (m.component, m.version) not in done]
