"""`python -m aicc.appliance.db migrate|check --dsn-file FILE`: apply (or list) the appliance's migrations.

The installer runs `migrate` once per site from the first [app] host, as the owner login; `check`
exits 1 when migrations are pending, for services and status checks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg

from aicc.appliance.db.migrate import MigrationError, all_migrations, apply, pending


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aicc.appliance.db")
    parser.add_argument("command", choices=("migrate", "check"))
    parser.add_argument("--dsn-file", type=Path, required=True, help="file holding the PostgreSQL conninfo")
    args = parser.parse_args(argv)
    try:
        dsn = args.dsn_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        print(f"aicc-db: {args.dsn_file}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        if args.command == "migrate":
            applied = apply(dsn, all_migrations())
            print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
            return 0
        missing = pending(dsn, all_migrations())
    except MigrationError as exc:
        print(f"aicc-db: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"aicc-db: cannot reach the database: {str(exc).strip()}", file=sys.stderr)
        return 1
    print("pending: " + (", ".join(missing) if missing else "nothing (up to date)"))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
