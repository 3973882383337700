"""The site's own metrics behind AiccInstallIncomplete and AiccJournalUploadStale: the install
playbook's start and success files on each host, the journal heartbeat, and the monitoring host's
script that publishes when each host's journal was last received. Rendered and run by Ansible itself
(local connection), the script run as systemd would run it; promtool reads what they write."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_roles_templates import ini, tool

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
BIN = Path(sys.executable).parent
SCRIPT = ROLES / "monitoring" / "files" / "aicc_journal_remote_metrics.py"
METRIC = "aicc_journal_remote_last_write_timestamp_seconds"
INSTALLED_AT = "/usr/local/sbin/aicc-journal-remote-metrics"


def ansible_env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_HOME": str(tmp / ".ansible"),
        "ANSIBLE_ROLES_PATH": str(ROLES),
    }


def playbook(tmp: Path, inventory: str, plays: list[dict[str, Any]], extra: dict[str, Any]) -> str:
    (tmp / "inventory.ini").write_text(inventory, encoding="utf-8")
    (tmp / "play.yml").write_text(yaml.safe_dump(plays, sort_keys=False), encoding="utf-8")
    (tmp / "extra.json").write_text(json.dumps(extra), encoding="utf-8")
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(tmp / "inventory.ini"),
            str(tmp / "play.yml"),
            "-e",
            f"@{tmp / 'extra.json'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=ansible_env(tmp),
        cwd=tmp,
    )
    return proc.stdout + proc.stderr


def samples(text: str) -> dict[str, float]:
    check = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            found[series] = float(value)
    return found


# ---------------------------------------------------------------- the install run on each host


def site_plays(failing: bool) -> list[dict[str, Any]]:
    """The site playbook's first and last plays on the hosts as they are, around a stand-in for the
    roles (which create node_exporter's textfile folder, or fail)."""
    plays = yaml.safe_load((REPO / "installer" / "playbooks" / "site.yml").read_text())
    start, end = (p for p in plays if str(p["name"]).startswith("Install run"))
    assert plays.index(start) == 1 and plays.index(end) == len(plays) - 1
    middle = {
        "name": "The roles",
        "hosts": "all",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Fail like a broken role" if failing else "Install node_exporter",
                **(
                    {"ansible.builtin.fail": {"msg": "broken"}}
                    if failing
                    else {
                        "ansible.builtin.file": {
                            "path": "{{ common_node_exporter_textfile_dir }}",
                            "state": "directory",
                            "mode": "0755",
                        }
                    }
                ),
            }
        ],
    }
    return [start, middle, end]


def install_metrics(folder: Path) -> dict[str, float]:
    return {
        k: v
        for name in ("aicc_install_started.prom", "aicc_install_success.prom")
        if (folder / name).exists()
        for k, v in samples((folder / name).read_text()).items()
    }


def test_install_runs_leave_their_start_and_success_on_the_host(tmp_path: Path) -> None:
    folder = tmp_path / "textfile"
    inventory = f"h1 ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    extra = {"common_node_exporter_textfile_dir": str(folder), "aicc_version": "1.2.3"}
    started, succeeded = "aicc_install_started_timestamp_seconds", "aicc_install_success_timestamp_seconds"

    # The first install: no node_exporter when it starts; at its end both series exist.
    before = time.time()
    out = playbook(tmp_path, inventory, site_plays(failing=False), extra)
    assert re.search(r"h1\s+: ok=\d+\s+changed=1\s+unreachable=0\s+failed=0", out), out[-3000:]
    first = install_metrics(folder)
    assert set(first) == {started, succeeded, 'aicc_install_info{version="1.2.3"}'}
    assert int(before) <= first[started] <= first[succeeded] <= time.time()
    assert oct((folder / "aicc_install_success.prom").stat().st_mode & 0o777) == "0o644"

    # A run that dies on the host: its start is newer than the last success (AiccInstallIncomplete).
    time.sleep(1.1)
    out = playbook(tmp_path, inventory, site_plays(failing=True), extra)
    assert "failed=1" in out, out[-3000:]
    died = install_metrics(folder)
    assert died[started] > died[succeeded] == first[succeeded]

    # The next successful run ends it; a second install changes nothing on the host (changed=0).
    time.sleep(1.1)
    out = playbook(tmp_path, inventory, site_plays(failing=False), extra)
    assert re.search(r"h1\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", out), out[-3000:]
    fixed = install_metrics(folder)
    assert died[started] < fixed[started] <= fixed[succeeded]
    assert not [p.name for p in folder.iterdir() if not p.name.endswith(".prom")]


def test_install_markers_run_first_and_last_under_any_tags() -> None:
    plays = yaml.safe_load((REPO / "installer" / "playbooks" / "site.yml").read_text())
    for play in (plays[1], plays[-1]):
        assert play["hosts"] == "all" and play["gather_facts"] is False
        assert [t["tags"] for t in play["tasks"]] == [["always"]]


# ---------------------------------------------------------------- the journal's freshness


INVENTORY = """\
[all:vars]
ansible_connection=local
[app]
app1 ansible_host=10.0.0.61
app2 ansible_host=fd00:0:0::62
[db]
db1 ansible_host=10.0.0.71
[voicebot]
bot1 ansible_host=localhost
[media]
quiet1 ansible_host=10.0.0.91 common_journal_upload=false
[monitoring]
mon1 ansible_host=10.0.0.81
"""

UNITS = [
    ("monitoring", "aicc-journal-remote-metrics.service"),
    ("monitoring", "aicc-journal-remote-metrics.timer"),
    ("common", "aicc-journal-heartbeat.service"),
    ("common", "aicc-journal-heartbeat.timer"),
]


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("journal-units")
    out = tmp / "out"
    play = {
        "name": "Render the journal units",
        "hosts": "mon1",
        "gather_facts": False,
        "vars_files": [str(ROLES / r / "defaults" / "main.yml") for r in ("common", "monitoring")],
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [
            {
                "name": f"Render {name}",
                "ansible.builtin.template": {
                    "src": str(ROLES / role / "templates" / f"{name}.j2"),
                    "dest": f"{out}/{name}",
                    "mode": "0644",
                },
            }
            for role, name in UNITS
        ],
    }
    out.mkdir()
    text = playbook(tmp, INVENTORY, [play], {"aicc_site_dir": "/nonexistent"})
    assert "failed=0" in text, text[-3000:]
    return out


def test_the_heartbeat_logs_one_notice_line_every_5_minutes(units: Path) -> None:
    service = ini((units / "aicc-journal-heartbeat.service").read_text())["Service"]
    (start,) = [v for k, v in service if k == "ExecStart"]
    assert shlex.split(start)[1].startswith("<5>")  # notice, passing LogLevelMax
    assert ("LogLevelMax", "notice") in service and ("Type", "oneshot") in service
    timer = ini((units / "aicc-journal-heartbeat.timer").read_text())
    assert ("OnCalendar", "*:0/5") in timer["Timer"]
    assert ("WantedBy", "timers.target") in timer["Install"]


def test_the_units_pass_systemd_analyze(units: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    for _, name in UNITS:
        text = (units / name).read_text()
        # The script is not installed here: verify the unit with the repository's copy.
        (tmp_path / name).write_text(text.replace(INSTALLED_AT, f"{sys.executable} {SCRIPT}"))
    check = subprocess.run(
        [analyze, "verify", "--man=no", *(str(tmp_path / n) for _, n in UNITS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def touch(folder: Path, name: str, mtime: float) -> None:
    (folder / name).write_bytes(b"LPKSHHRH")
    os.utime(folder / name, (mtime, mtime))


def test_the_rendered_timer_publishes_each_inventory_host_once(units: Path, tmp_path: Path) -> None:
    """The service's own command line, run against a journal folder the way journal-remote fills it:
    files named by sender address, archived ones beside them, senders outside the inventory."""
    journals, textfile = tmp_path / "remote", tmp_path / "textfile"
    journals.mkdir()
    textfile.mkdir()
    now = time.time()
    touch(journals, "remote-10.0.0.61.journal", now - 300)
    touch(journals, "remote-10.0.0.61@0123abcd-0000000000000001-0005f0a1b2c3d4e5.journal", now - 60)
    touch(journals, "remote-10.0.0.61@0123abcd-0000000000000002-0005f0a1b2c3d4e6.journal~", now - 3600)
    touch(journals, "remote-fd00::62.journal", now - 120)  # app2's address, spelt out differently
    touch(journals, "remote-127.0.0.1.journal", now - 30)  # bot1's ansible_host is a name
    touch(journals, "remote-10.0.0.91.journal", now - 10)  # quiet1 does not upload: left out
    touch(journals, "remote-192.0.2.99.journal", now)  # not a host of the site: no label value
    touch(journals, "system.journal", now)

    service = ini((units / "aicc-journal-remote-metrics.service").read_text())["Service"]
    (start,) = [v for k, v in service if k == "ExecStart"]
    argv = shlex.split(start.replace("%%", "%"))
    assert argv[:5] == [
        INSTALLED_AT,
        "--journal-dir",
        "/var/log/journal/remote",
        "--out",
        "/var/lib/prometheus/node-exporter/aicc_journal_remote.prom",
    ]
    assert argv[5:] == [
        "app1=10.0.0.61",
        "app2=fd00:0:0::62",
        "bot1=localhost",
        "db1=10.0.0.71",
        "mon1=10.0.0.81",
    ]
    out = textfile / "aicc_journal_remote.prom"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--journal-dir", str(journals), "--out", str(out), *argv[5:]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0 and not run.stdout + run.stderr, run.stderr
    assert samples(out.read_text()) == {
        f'{METRIC}{{uploader="app1"}}': int(now - 60),
        f'{METRIC}{{uploader="app2"}}': int(now - 120),
        f'{METRIC}{{uploader="bot1"}}': int(now - 30),
        f'{METRIC}{{uploader="db1"}}': 0,  # nothing received yet
        f'{METRIC}{{uploader="mon1"}}': 0,
    }
    assert [p.name for p in textfile.iterdir()] == ["aicc_journal_remote.prom"]  # no temporary left
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert ("ReadWritePaths", "/var/lib/prometheus/node-exporter") in service
    assert ("LogLevelMax", "notice") in service and ("SyslogLevel", "warning") in service
    timer = ini((units / "aicc-journal-remote-metrics.timer").read_text())
    assert ("OnCalendar", "minutely") in timer["Timer"]


def test_the_script_without_received_journals_or_a_writable_folder(tmp_path: Path) -> None:
    out = tmp_path / "m.prom"
    ok = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--journal-dir",
            str(tmp_path / "none"),
            "--out",
            str(out),
            "h=10.1.1.1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert samples(out.read_text()) == {f'{METRIC}{{uploader="h"}}': 0}
    bad = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--journal-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "no" / "m.prom"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "cannot write" in bad.stderr
    refused = subprocess.run(
        [sys.executable, str(SCRIPT), "--journal-dir", str(tmp_path), "--out", str(out), "no-address"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2 and "NAME=ADDRESS" in refused.stderr
