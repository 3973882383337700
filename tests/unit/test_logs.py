"""`aicc logs`: the journalctl query it builds, how every value travels to the monitoring host (one
quoted word each), the probe that runs there, parsing journalctl's JSON, and the errors."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from aicc.installer import logs, remote
from aicc.installer.errors import InputError, RunFailed
from aicc.installer.inventory import Inventory, parse_inventory

PROBE = Path(logs.__file__).parent / "probes" / "journal_query.py"

INVENTORY = """\
[all:vars]
ansible_user=aicc
[sip_proxy]
sip1 ansible_host=10.0.0.11
[media]
sip1
[voicebot]
bot1 ansible_host=10.0.0.31
[speech]
bot1
[llm]
bot1
[app]
app1 ansible_host=10.0.0.61
[db]
app1
[monitoring]
mon1 ansible_host=10.0.0.81
"""


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    return parse_inventory(INVENTORY, tmp_path / "inventory.ini")


def entry(**fields: object) -> str:
    base = {
        "__REALTIME_TIMESTAMP": "1764810000123456",
        "_HOSTNAME": "sip1",
        "_SYSTEMD_UNIT": "kamailio.service",
        "SYSLOG_IDENTIFIER": "kamailio",
        "_PID": "812",
        "PRIORITY": "6",
        "MESSAGE": "started",
    }
    return json.dumps({**base, **fields})


def test_query_becomes_journalctl_arguments() -> None:
    query = logs.LogQuery(
        host="sip1", unit="kamailio", since="-1h", until="2026-12-04 10:00", grep="INVITE|BYE", lines=20
    )
    assert logs.journalctl_args(query) == [
        "--lines=20",
        "--since=-1h",
        "--until=2026-12-04 10:00",
        "--grep=INVITE|BYE",
        "--unit=kamailio",
        "_HOSTNAME=sip1",
    ]
    assert logs.journalctl_args(logs.LogQuery()) == ["--lines=100"]


def test_every_value_reaches_the_monitoring_host_as_one_quoted_word(
    inventory: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: dict[str, object] = {}

    def fake_run(
        host: object, command: str, *, stdin: str | None = None, timeout: float = 60
    ) -> remote.Result:
        sent.update(host=host, command=command, stdin=stdin)
        return remote.Result("mon1", 0, json.dumps({"ok": True, "lines": [entry()]}), "")

    monkeypatch.setattr(remote, "run", fake_run)
    hostile = "x'; touch /tmp/pwned; echo '$(id)`id`"
    found = logs.collect(inventory, logs.LogQuery(host="sip1", grep=hostile, since="2 hours ago"))
    assert [e.message for e in found] == ["started"]
    assert sent["host"] == inventory.hosts["mon1"]
    words = shlex.split(str(sent["command"]))
    # Not root on the host: sudo, then the probe read from stdin with its arguments one word each.
    assert words == [
        "sudo",
        "-n",
        "python3",
        "-",
        "/var/log/journal/remote",
        "--lines=100",
        "--since=2 hours ago",
        f"--grep={hostile}",
        "_HOSTNAME=sip1",
    ]
    assert sent["stdin"] == PROBE.read_text()


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        (logs.LogQuery(host="nohost"), "not a host of the inventory"),
        (logs.LogQuery(unit="kamailio; reboot"), "not a unit name"),
        (logs.LogQuery(unit="-x"), "not a unit name"),
        (logs.LogQuery(since="$(reboot)"), "not a time journalctl reads"),
        (logs.LogQuery(until="yesterday;id"), "not a time journalctl reads"),
        (logs.LogQuery(grep="(unclosed"), "not a regular expression"),
        (logs.LogQuery(grep=""), "1 to 512 characters"),
        (logs.LogQuery(lines=0), "--lines must be between"),
        (logs.LogQuery(lines=10001), "--lines must be between"),
    ],
)
def test_bad_arguments_are_refused_before_any_connection(
    inventory: Inventory, monkeypatch: pytest.MonkeyPatch, query: logs.LogQuery, fragment: str
) -> None:
    monkeypatch.setattr(remote, "run", lambda *a, **k: pytest.fail("no ssh for a bad argument"))
    with pytest.raises(InputError, match=fragment) as caught:
        logs.collect(inventory, query)
    assert caught.value.exit_code == 2


def test_unknown_host_error_lists_the_inventory_hosts(inventory: Inventory) -> None:
    with pytest.raises(InputError) as caught:
        logs.check_query(logs.LogQuery(host="sip2"), inventory)
    assert caught.value.fix == "one of: app1, bot1, mon1, sip1"


def test_a_site_without_a_monitoring_host_is_told_so(inventory: Inventory) -> None:
    # The inventory check requires [monitoring]; an inventory built otherwise may still lack it.
    inventory.hosts["mon1"].groups.remove("monitoring")
    with pytest.raises(RunFailed, match=r"no \[monitoring\] host") as caught:
        logs.collect(inventory, logs.LogQuery())
    assert caught.value.exit_code == 1


def test_nothing_received_yet_names_the_services_to_check() -> None:
    reply = json.dumps({"ok": False, "empty": True, "error": "no journal files in /var/log/journal/remote"})
    with pytest.raises(RunFailed, match="no host's journal has reached mon1 yet") as caught:
        logs.parse_reply(reply, "mon1")
    assert "systemd-journal-upload" in str(caught.value.fix)


def test_journalctl_failure_and_ssh_failure_are_run_failures(
    inventory: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(RunFailed, match="journalctl on mon1 failed: Failed to parse timestamp"):
        logs.parse_reply(json.dumps({"ok": False, "error": "Failed to parse timestamp: x"}), "mon1")
    with pytest.raises(RunFailed, match="unexpected answer"):
        logs.parse_reply("sudo: a password is required", "mon1")
    monkeypatch.setattr(remote, "run", lambda *a, **k: remote.Result("mon1", 255, "", "Connection refused"))
    with pytest.raises(RunFailed, match="could not read the journals on mon1: Connection refused"):
        logs.collect(inventory, logs.LogQuery())


def test_journalctl_json_is_parsed_into_entries() -> None:
    lines = [
        entry(),
        # A message that is not UTF-8 comes as an array of bytes; a kernel line has no unit.
        entry(MESSAGE=[104, 105, 255], _SYSTEMD_UNIT=None, SYSLOG_IDENTIFIER="kernel", PRIORITY="3"),
        "",
    ]
    found = logs.parse_reply(json.dumps({"ok": True, "lines": lines}), "mon1")
    assert logs.as_json(found) == [
        {
            "time": "2025-12-04T01:00:00.123456Z",
            "host": "sip1",
            "unit": "kamailio.service",
            "identifier": "kamailio",
            "pid": "812",
            "priority": "info",
            "message": "started",
        },
        {
            "time": "2025-12-04T01:00:00.123456Z",
            "host": "sip1",
            "unit": "",
            "identifier": "kernel",
            "pid": "812",
            "priority": "err",
            "message": "hi\ufffd",
        },
    ]


def run_probe(tmp_path: Path, folder: Path, journalctl: str, *args: str) -> dict[str, object]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "journalctl"
    fake.write_text("#!/bin/sh\n" + journalctl)
    fake.chmod(0o755)
    proc = subprocess.run(
        [sys.executable, "-", str(folder), *args],
        input=PROBE.read_text(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    reply: dict[str, object] = json.loads(proc.stdout)
    return reply


def test_probe_passes_the_arguments_to_journalctl_and_returns_its_lines(tmp_path: Path) -> None:
    folder = tmp_path / "remote"
    assert run_probe(tmp_path, folder, "exit 0\n") == {
        "ok": False,
        "empty": True,
        "error": f"no journal files in {folder}",
    }
    folder.mkdir()
    (folder / "remote-sip1.journal").write_bytes(b"")
    # The fake journalctl prints its arguments, one JSON line each.
    echo = 'for a in "$@"; do printf \'{"MESSAGE": "%s"}\\n\' "$a"; done\n'
    reply = run_probe(tmp_path, folder, echo, "--grep=a b", "_HOSTNAME=sip1")
    assert reply["ok"] is True
    assert [json.loads(line)["MESSAGE"] for line in reply["lines"]] == [  # type: ignore[attr-defined]
        f"--directory={folder}",
        "--output=json",
        "--no-pager",
        "--quiet",
        "--grep=a b",
        "_HOSTNAME=sip1",
    ]
    # --grep without a match: exit 1 and no output, which is no entries, not an error.
    assert run_probe(tmp_path, folder, "exit 1\n") == {"ok": True, "lines": []}
    failed = run_probe(tmp_path, folder, "echo 'Failed to parse timestamp: x' >&2; exit 1\n")
    assert failed == {"ok": False, "error": "Failed to parse timestamp: x"}
