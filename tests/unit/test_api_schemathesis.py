"""Generated requests against every operation of the API's OpenAPI document (schemathesis, in process
over ASGI), with an admin token: no operation answers 5xx, every response matches the document
(status code, content type, headers, body schema), and an operation that declares authentication
refuses the same request without it.

Bounded: a few examples per operation, in their own database (an admin fuzzing disables users and
revokes tokens), with a fresh token per request so a revoked one does not hide the other operations.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.python.asgi import shutdown_lifespans

from aicc.appliance.api.app import create_app
from aicc.appliance.api.auth import Passwords
from aicc.appliance.api.config import AppConfig
from tests.unit.api_support import (
    FAST_HASHER,
    SECRET_KEY,
    ApiDatabase,
    ApiUser,
    api_db_fixture,  # noqa: F401
    fresh_database,
    make_token,
    make_user,
)

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.ignored_auth,
]


# The app exists at collection time (parametrize needs its document) but reaches the database only when
# its lifespan starts, at the first request: by then `fuzz_db` has written the conninfo its config names.
_FOLDER = Path(tempfile.mkdtemp(prefix="aicc-api-fuzz-"))
atexit.register(shutil.rmtree, _FOLDER, ignore_errors=True)
(_FOLDER / "secret.key").write_text(SECRET_KEY, encoding="utf-8")
_APP = create_app(
    AppConfig(
        database_dsn_file=_FOLDER / "dsn",
        secret_key_file=_FOLDER / "secret.key",
        public_url="https://aicc.test",
        sip_ws_urls=["wss://192.0.2.5:8443"],
        pool_min=1,
        pool_max=4,
    )
)
_APP.state.aicc.passwords = Passwords(hasher=FAST_HASHER)
# The live stream never ends: a client that reads whole responses would wait on it forever (its
# events are tested in test_api_live.py).
schema = schemathesis.openapi.from_dict(_APP.openapi()).exclude(path="/api/live/stream")
schema.app = _APP


@pytest.fixture(scope="module")
def fuzz_db(api_db: ApiDatabase) -> Iterator[ApiDatabase]:
    db = fresh_database(api_db, "aicc_fuzz")
    (_FOLDER / "dsn").write_text(db.dsn, encoding="utf-8")
    with psycopg.connect(db.dsn, autocommit=True) as conn:  # the table the ACD follows registrations in
        conn.execute("CREATE SCHEMA IF NOT EXISTS kamailio")
        conn.execute("CREATE TABLE IF NOT EXISTS kamailio.location (username text, expires timestamp)")
    # A real ACD answers the status and live routes (without one they answer 503, as they should).
    config = _FOLDER / "acd.yml"
    config.write_text(
        f"database_dsn_file: {_FOLDER / 'dsn'}\nsecret_key_file: {_FOLDER / 'secret.key'}\n"
        f"public_url: https://aicc.test\nacd_metrics_port: {_free_port()}\n",
        encoding="utf-8",
    )
    acd = subprocess.Popen(
        [sys.executable, "-m", "aicc.appliance.acd", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield db
    finally:
        shutdown_lifespans()  # closes the app's pool before the test cluster goes away
        acd.terminate()
        acd.wait(15)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fuzz_admin(fuzz_db: ApiDatabase) -> ApiUser:
    return make_user(fuzz_db, "admin", username="fuzz-admin", token=False)


@schema.parametrize()
@settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case: Any, fuzz_db: ApiDatabase, fuzz_admin: ApiUser) -> None:
    _, token = make_token(fuzz_db, fuzz_admin.id)
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
