"""`python -m aicc.appliance.api serve|admin create|seed`: the API service on an [app] host, and the
installer's two one-off steps.

    serve        --config FILE                 metrics listener, then uvicorn behind nginx
    admin create --config FILE --username NAME [--display-name TEXT] --password-stdin
    seed         --config FILE SEED.yml        create what the seed names and the site lacks

Exit codes: 0 ok, 1 failed (database unreachable, migrations pending), 2 bad input (settings, a weak
password, an existing user, a bad seed document); nothing is changed on 1 or 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from pathlib import Path

import psycopg
import yaml
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row

from aicc.appliance.api import audit
from aicc.appliance.api.auth import Passwords, weak_password_reason
from aicc.appliance.api.config import AppConfig, ConfigError, load_config
from aicc.appliance.api.routes.users import USERNAME_PATTERN, insert_user
from aicc.appliance.api.seed import seed
from aicc.appliance.documents import DocumentError
from aicc.appliance.textfile import TextFileError, read_text_file
from aicc.installer.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE

DEFAULT_CONFIG = Path("/etc/aicc/app.yml")
log = logging.getLogger("aicc.api")


class InputProblem(Exception):
    """Bad input from the command line or stdin: exit 2, nothing changed."""


async def _connect(cfg: AppConfig) -> AsyncConnection[DictRow]:
    return await AsyncConnection.connect(cfg.database_dsn(), row_factory=dict_row)


async def admin_create(cfg: AppConfig, username: str, display_name: str, password: str) -> None:
    if not re.fullmatch(USERNAME_PATTERN, username):
        raise InputProblem(
            f"username {username!r}: use 2-64 lower case letters, digits, '.', '_' or '-', starting with "
            "a letter or digit"
        )
    reason = weak_password_reason(password, username)
    if reason:
        raise InputProblem(f"password {reason}")
    password_hash = await Passwords().hash(password)
    async with await _connect(cfg) as conn, conn.transaction():
        user = await insert_user(
            conn,
            username=username,
            display_name=display_name,
            role="admin",
            language="zh",
            password_hash=password_hash,
        )
        if user is None:
            raise InputProblem(
                f"a user named {username!r} exists already; choose another name, or have an admin set its "
                "password (POST /api/users/{id}/password)"
            )
        await audit.record(
            conn, "installer", "user.create", "user", user.id, None, user.model_dump(mode="json")
        )


async def run_seed(cfg: AppConfig, path: Path) -> list[str]:
    try:
        text = read_text_file(path)
    except TextFileError as exc:
        fix = f"; {exc.fix}" if exc.fix else ""
        raise InputProblem(f"{exc.where}: {exc.reason}{fix}") from None
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InputProblem(f"{path}: not valid YAML: {exc}") from None
    async with await _connect(cfg) as conn:
        return await seed(conn, document, "installer", where=str(path))


def serve(cfg: AppConfig) -> int:
    import uvicorn
    from prometheus_client import start_http_server

    from aicc.appliance.api.app import create_app
    from aicc.appliance.db.migrate import all_migrations, pending

    try:
        missing = pending(cfg.database_dsn(), all_migrations())
    except psycopg.OperationalError as exc:
        # Start anyway: /api/health reports the database, and requests get 503 until it is back.
        log.warning("database unreachable at start (%s); serving anyway", str(exc).strip())
        missing = []
    if missing:
        print(
            f"aicc-api: the database lacks migrations {', '.join(missing)}; run "
            "`python -m aicc.appliance.db migrate --dsn-file FILE` (the installer does) first",
            file=sys.stderr,
        )
        return EXIT_FAILED
    app = create_app(cfg)
    start_http_server(cfg.api_metrics_port, addr=cfg.metrics_host, registry=app.state.aicc.metrics.registry)
    uvicorn.run(
        app,
        host=cfg.listen_host,
        port=cfg.listen_port,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        access_log=False,  # request metrics instead; an access log would keep query strings
        server_header=False,
        # Open live streams (the pages' server-sent events) never end by themselves: a restart cuts
        # them after 5 s and the pages reconnect, instead of holding the restart until systemd kills.
        timeout_graceful_shutdown=5,
    )
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aicc.appliance.api")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="app.yml (default %(default)s)")
        return p

    with_config(sub.add_parser("serve", help="run the API (uvicorn) and its metrics listener"))
    admin = sub.add_parser("admin", help="manage users from the host").add_subparsers(
        dest="action", required=True
    )
    create = with_config(admin.add_parser("create", help="create an admin user (audited as installer)"))
    create.add_argument("--username", required=True)
    create.add_argument("--display-name", default="")
    create.add_argument(
        "--password-stdin", action="store_true", required=True, help="read the password from stdin (one line)"
    )
    seed_p = with_config(sub.add_parser("seed", help="create what a seed document names and the site lacks"))
    seed_p.add_argument("file", type=Path, help="the seed document (YAML)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
        if args.command == "serve":
            return serve(cfg)
        if args.command == "admin":
            password = sys.stdin.readline().rstrip("\r\n")
            if not password:
                raise InputProblem("no password on stdin; pipe it in: ... --password-stdin < FILE")
            asyncio.run(admin_create(cfg, args.username, args.display_name, password))
            print(f"admin {args.username} created")
            return EXIT_OK
        created = asyncio.run(run_seed(cfg, args.file))
        print("seed: " + (f"created {', '.join(created)}" if created else "nothing to do"))
        return EXIT_OK
    except (ConfigError, InputProblem, DocumentError) as exc:
        print(f"aicc-api: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except psycopg.OperationalError as exc:
        print(f"aicc-api: cannot reach the database: {str(exc).strip()}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
