"""The seed (created when missing, never overwritten), the service's command line and its settings."""

from __future__ import annotations

import concurrent.futures
import io
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from aicc.appliance.api.__main__ import main
from aicc.appliance.api.config import ConfigError, load_config
from aicc.appliance.api.seed import seed
from aicc.appliance.documents import DocumentError
from tests.unit.api_support import (
    Api,
    ApiDatabase,
    ApiUser,
    api_db_fixture,  # noqa: F401
    api_fixture,  # noqa: F401
    api_users_fixture,  # noqa: F401
    audit_since,
    fresh_database,
    last_audit_id,
)

SEED = """
skills: [orders, returns, {name: cards, description: Card services}, general]
dispositions:
  resolved: {en: Resolved, zh: 已解决}
  follow_up: Follow-up
  wrong_number: null
routing_policy: {priority_weight_s: 45}
queues:
  - {name: support-en, language: en, skills: {orders: 1},
     overflow: [{after_s: 60, skills: {}}, {after_s: 120, queue: cards-en}]}
  - {name: cards-en, language: en, skills: {cards: 1}}
users:
  demo-agent:
    display_name: Demo Agent
    role: agent
    agent: {extension: "1001", skills: {orders: 3, cards: 2}, languages: [zh, en], capacity: {voice: 1}}
  demo-sup: {role: supervisor}
"""


@pytest.fixture(scope="module")
def seed_db(api_db: ApiDatabase) -> ApiDatabase:
    """The seed tests' own database: they count what exists."""
    return fresh_database(api_db, "aicc_seed")


async def run(db: ApiDatabase, document: Any) -> list[str]:
    async with await AsyncConnection.connect(db.dsn, row_factory=dict_row) as conn:
        return await seed(conn, document, where="seed.yml")


def rows(db: ApiDatabase, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db.dsn) as conn:
        return conn.execute(query.encode()).fetchall()


@pytest.mark.asyncio
async def test_seed_creates_what_is_missing_once(seed_db: ApiDatabase) -> None:
    start = last_audit_id(seed_db)
    created = await run(seed_db, yaml.safe_load(SEED))
    assert created == [
        "skill orders",
        "skill returns",
        "skill cards",
        "skill general",
        "disposition resolved",
        "disposition follow_up",
        "disposition wrong_number",
        "routing_policy version 1",
        "queue support-en",
        "queue cards-en",
        "user demo-agent",
        "agent demo-agent",
        "user demo-sup",
    ]
    entries = audit_since(seed_db, start)
    assert len(entries) == len(created) and {e["actor"] for e in entries} == {"installer"}
    assert rows(seed_db, "SELECT label FROM aicc.dispositions WHERE code = 'follow_up'") == [
        ({"en": "Follow-up", "zh": "Follow-up"},)
    ]
    assert rows(seed_db, "SELECT password_hash, role FROM aicc.users WHERE username = 'demo-agent'") == [
        (None, "agent")
    ]
    assert rows(seed_db, "SELECT extension FROM aicc.agents") == [("1001",)]
    assert rows(seed_db, "SELECT count(*) FROM aicc.acd_commands WHERE kind = 'reload'") == [(1,)]
    assert await run(seed_db, yaml.safe_load(SEED)) == []


@pytest.mark.asyncio
async def test_seed_never_overwrites(seed_db: ApiDatabase) -> None:
    await run(seed_db, yaml.safe_load(SEED))
    with psycopg.connect(seed_db.dsn) as conn:
        conn.execute(
            "UPDATE aicc.queues SET config = jsonb_set(config, '{wrap_up_s}', '99') WHERE name = 'cards-en'"
        )
        conn.execute("UPDATE aicc.users SET display_name = 'Renamed' WHERE username = 'demo-agent'")
        conn.execute("DELETE FROM aicc.agents")
    changed = yaml.safe_load(SEED)
    changed["queues"][1]["wrap_up_s"] = 5
    changed["routing_policy"] = {"priority_weight_s": 1}
    # The deleted profile is missing again, so it comes back; nothing else changes.
    assert await run(seed_db, changed) == ["agent demo-agent"]
    assert rows(seed_db, "SELECT config->>'wrap_up_s' FROM aicc.queues WHERE name = 'cards-en'") == [("99",)]
    assert rows(seed_db, "SELECT display_name FROM aicc.users WHERE username = 'demo-agent'") == [
        ("Renamed",)
    ]
    assert rows(seed_db, "SELECT max(version) FROM aicc.routing_policies") == [(1,)]


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"flavours": []}, "flavours"),
        ({"queues": [{"name": "q-x", "language": "fr"}]}, "queues[0].language"),
        (
            {"queues": [{"name": "q-y", "language": "en", "overflow": [{"after_s": 9, "queue": "nope"}]}]},
            "queues[0].overflow[0].queue",
        ),
        (
            {"users": [{"username": "u1", "agent": {"skills": {"unknown_skill": 1}}}]},
            "users[0].agent.skills.unknown_skill",
        ),
        ({"skills": "orders"}, "skills"),
    ],
)
@pytest.mark.asyncio
async def test_a_bad_seed_names_the_field_and_changes_nothing(
    seed_db: ApiDatabase, document: Any, field: str
) -> None:
    before = rows(seed_db, "SELECT (SELECT count(*) FROM aicc.queues), (SELECT count(*) FROM aicc.users)")
    with pytest.raises(DocumentError) as err:
        await run(seed_db, document)
    assert err.value.where == "seed.yml"
    assert field in [f for f, _ in err.value.problems]
    assert (
        rows(seed_db, "SELECT (SELECT count(*) FROM aicc.queues), (SELECT count(*) FROM aicc.users)")
        == before
    )


def write_config(db: ApiDatabase, tmp_path: Path, **extra: Any) -> Path:
    path = tmp_path / "app.yml"
    settings = {
        "database_dsn_file": str(db.folder / "dsn"),
        "secret_key_file": str(db.folder / "secret.key"),
        "public_url": "https://10.0.0.5",
        **extra,
    }
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def test_cli_seed_reports_what_it_did(
    seed_db: ApiDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(seed_db, tmp_path)
    doc = tmp_path / "seed.yml"
    doc.write_text("skills: [cli_skill]\n", encoding="utf-8")
    assert main(["seed", "--config", str(config), str(doc)]) == 0
    assert capsys.readouterr().out == "seed: created skill cli_skill\n"
    assert main(["seed", "--config", str(config), str(doc)]) == 0
    assert capsys.readouterr().out == "seed: nothing to do\n"
    doc.write_text("queues: [{name: cli-q}]\n", encoding="utf-8")
    assert main(["seed", "--config", str(config), str(doc)]) == 2
    assert f"{doc}: queues[0].language: required, but missing" in capsys.readouterr().err


@pytest.mark.asyncio
async def test_cli_admin_create(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(api.db, tmp_path)

    def admin(password: str, username: str = "first-admin") -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        # main() runs its own event loop; a thread keeps it apart from this test's.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            args = ["admin", "create", "--config", str(config), "--username", username, "--password-stdin"]
            return pool.submit(main, args).result()

    assert admin("short") == 2
    assert "too weak" in capsys.readouterr().err
    assert admin("Very-Secret-Admin-1") == 0
    assert capsys.readouterr().out == "admin first-admin created\n"
    assert admin("Very-Secret-Admin-2") == 2
    assert "exists already" in capsys.readouterr().err
    assert admin("Very-Secret-Admin-3", username="Bad Name") == 2
    r = await api.client.post(
        "/api/auth/login", json={"username": "first-admin", "password": "Very-Secret-Admin-1"}
    )
    assert r.status_code == 200 and r.json()["user"]["role"] == "admin"
    entries = [
        e for e in audit_since(api.db, 0) if e["action"] == "user.create" and e["actor"] == "installer"
    ]
    assert any(e["after"]["username"] == "first-admin" for e in entries)


def test_cli_refuses_bad_settings_and_an_unreachable_database(
    api_db: ApiDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(api_db, tmp_path, listen_port=80000, colour="red")
    assert main(["seed", "--config", str(config), str(tmp_path / "seed.yml")]) == 2
    err = capsys.readouterr().err
    assert f"{config}: " in err and "listen_port" in err and "colour: not a known field" in err
    dsn = tmp_path / "dsn"
    dsn.write_text("host=127.0.0.1 port=1 dbname=aicc connect_timeout=1\n", encoding="utf-8")
    config = write_config(api_db, tmp_path, database_dsn_file=str(dsn))
    doc = tmp_path / "seed.yml"
    doc.write_text("skills: [x]\n", encoding="utf-8")
    assert main(["seed", "--config", str(config), str(doc)]) == 1
    assert "cannot reach the database" in capsys.readouterr().err


def test_config_defaults_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "app.yml"
    path.write_text(
        "database_dsn_file: /etc/aicc/dsn\nsecret_key_file: /etc/aicc/key\npublic_url: https://10.0.0.5\n"
    )
    cfg = load_config(path)
    assert (cfg.listen_host, cfg.listen_port, cfg.api_metrics_port, cfg.acd_metrics_port) == (
        "127.0.0.1",
        8010,
        9162,
        9163,
    )
    assert (cfg.session_ttl_s, cfg.session_idle_s, cfg.login_max_failures, cfg.lockout_s) == (
        43200,
        1800,
        5,
        900,
    )
    assert cfg.acd.registrations_table == "kamailio.location" and cfg.acd.tick_s == 0.5
    with pytest.raises(ConfigError, match=r"secret_key_file.*cannot read"):
        cfg.secret_key()
    short = tmp_path / "key"
    short.write_text("too-short\n")
    path.write_text(f"database_dsn_file: /x\nsecret_key_file: {short}\npublic_url: https://a\n")
    with pytest.raises(ConfigError, match=r"has 9 characters, expected at least 32"):
        load_config(path).secret_key()
    path.write_text("public_url: ftp://x\npool_min: 30\npool_max: 10\nacd: {tick_s: 0}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    for field in ("database_dsn_file: required", "secret_key_file: required", "public_url", "acd.tick_s"):
        assert field in message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_runs_behind_the_proxy_and_exports_metrics(
    api_db: ApiDatabase, api_users: dict[str, ApiUser], tmp_path: Path
) -> None:
    port, metrics_port = _free_port(), _free_port()
    config = write_config(api_db, tmp_path, listen_port=port, api_metrics_port=metrics_port, pool_min=1)
    command = [sys.executable, "-m", "aicc.appliance.api", "serve", "--config", str(config)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{base}/api/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "the API did not start within 60 s"
                time.sleep(0.2)
        assert health.status_code == 200 and "server" not in health.headers
        # nginx on the same host forwards the client's address; uvicorn trusts it from loopback only.
        start = last_audit_id(api_db)
        r = httpx.post(
            f"{base}/api/tokens",
            json={"name": "through nginx"},
            headers={**api_users["auditor"].headers, "X-Forwarded-For": "203.0.113.9"},
        )
        assert r.status_code == 201
        assert [e["source"] for e in audit_since(api_db, start)] == ["203.0.113.9"]
        exported = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert 'aicc_api_requests_total{method="GET",route="/api/health",status="2xx"} 1.0' in exported
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    # A graceful stop (uvicorn re-raises SIGTERM after shutting down; systemd counts that as clean).
    assert proc.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output


def test_serve_refuses_a_database_with_pending_migrations(
    api_db: ApiDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(api_db.dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE aicc_unmigrated")
    dsn = tmp_path / "dsn"
    dsn.write_text(api_db.dsn.replace("dbname=aicc", "dbname=aicc_unmigrated"), encoding="utf-8")
    config = write_config(api_db, tmp_path, database_dsn_file=str(dsn))
    assert main(["serve", "--config", str(config)]) == 1
    assert "python -m aicc.appliance.db migrate" in capsys.readouterr().err


@pytest.mark.asyncio
async def test_the_kb_section_publishes_the_shipped_article_sets_once(api_db: ApiDatabase) -> None:
    db = fresh_database(api_db, "aicc_seed_kb")
    created = await run(db, {"kb": ["shop"]})
    assert "kb article shop-invoice/zh" in created and "kb article shop-invoice/en" in created
    assert rows(db, "SELECT count(*) FROM aicc.kb_articles WHERE translation_group = 'shop-invoice'") == [
        (2,)
    ]
    assert await run(db, {"kb": ["shop"]}) == []  # a second install changes nothing
    with pytest.raises(DocumentError) as err:
        await run(db, {"kb": ["shop", "no-such-set"]})
    assert "no-such-set" in str(err.value.problems)
    with pytest.raises(DocumentError):
        await run(db, {"kb": "shop"})
