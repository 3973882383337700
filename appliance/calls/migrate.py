"""Versioned SQL migrations: NNNN_name.sql files in a component's migrations package, applied once each,
in order, in one transaction per file, under an advisory lock so two services starting together
do not race. A changed file that was already applied is an error, not a silent skip."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x41494343  # "AICC"


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
            for m in migrations:
                row = conn.execute(
                    "SELECT sha256 FROM aicc.schema_migrations WHERE component = %s AND version = %s",
                    (m.component, m.version),
                ).fetchone()
                if row is not None:
                    if row[0] != m.sha256:
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


def all_migrations() -> list[Migration]:
    """The voice bot's tables in the appliance schema `aicc`: call records and the demo backend."""
    return discover("calls", "aicc.appliance.calls.migrations") + discover(
        "demo", "aicc.appliance.connectors.migrations"
    )
