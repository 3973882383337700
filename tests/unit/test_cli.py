"""The CLI as a user meets it: help that teaches, clear errors with exit 2, JSON for scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from aicc.installer.sizing import GROUPS

AICC = str(Path(sys.executable).parent / "aicc")


def aicc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AICC, *args], capture_output=True, text=True, timeout=120, check=False)


def test_help_lists_the_verbs() -> None:
    out = aicc("--help").stdout
    for verb in ("init", "preflight", "install", "status", "lab", "models"):
        assert verb in out
    assert "Exit codes" in out


def test_missing_inventory_is_exit_2_with_the_fix(tmp_path: Path) -> None:
    res = aicc("preflight", "-i", str(tmp_path / "inventory.ini"))
    assert res.returncode == 2
    assert "inventory not found" in res.stderr and "aicc init" in res.stderr
    assert "Traceback" not in res.stderr


def test_json_error_document(tmp_path: Path) -> None:
    res = aicc("status", "-i", str(tmp_path / "nope.ini"), "--json")
    assert res.returncode == 2
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and "inventory not found" in doc["error"]


def test_preflight_lists_every_unreachable_host_in_one_table(tmp_path: Path) -> None:
    site = tmp_path / "site"
    assert aicc("init", "--site", str(site)).returncode == 0
    # Loopback addresses with nothing listening on port 1: refused at once, no traffic leaves the machine.
    hosts = {"h1": "127.0.0.2", "h2": "127.0.0.3", "h3": "127.0.0.4"}
    spread = ["h1", "h1", "h2", "h2", "h2", "h3", "h3", "h3"]
    lines = []
    for group, host in zip(GROUPS, spread, strict=True):
        lines.append(f"[{group}]\n{host} ansible_host={hosts[host]} ansible_port=1\n")
    (site / "inventory.ini").write_text("".join(lines))
    res = aicc("preflight", "-i", str(site / "inventory.ini"))
    assert res.returncode == 1
    for name in hosts:
        assert name in res.stdout
    assert res.stdout.count("fail") >= 3 and "FAILED" in res.stdout
    doc = json.loads(aicc("preflight", "-i", str(site / "inventory.ini"), "--json").stdout)
    assert sorted(
        c["host"] for c in doc["checks"] if c["check"] == "ssh" and c["status"] == "fail"
    ) == sorted(hosts)


def test_install_with_a_broken_setting_changes_nothing(tmp_path: Path) -> None:
    site = tmp_path / "site"
    aicc("init", "--site", str(site))
    (site / "inventory.ini").write_text(
        "".join(f"[{g}]\nh1 ansible_host=127.0.0.2 ansible_port=1\n" for g in GROUPS)
    )
    (site / "aicc.yml").write_text("sip:\n  udp_port: not-a-port\n")
    res = aicc("install", "-i", str(site / "inventory.ini"))
    assert res.returncode == 2
    assert "sip.udp_port" in res.stderr and str(site / "aicc.yml") in res.stderr
    assert not list((site / "logs").glob("install-*.log"))


def test_a_binary_or_non_utf8_input_file_is_exit_2_without_a_traceback(tmp_path: Path) -> None:
    binary = tmp_path / "inventory.ini"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    res = aicc("preflight", "-i", str(binary))
    assert res.returncode == 2
    assert f"{binary}:1: inventory is not a text file" in res.stderr and "fix:" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    doc = json.loads(aicc("preflight", "-i", str(binary), "--json").stdout)
    assert doc["ok"] is False and doc["where"] == f"{binary}:1" and doc["fix"]

    site = tmp_path / "site"
    assert aicc("init", "--site", str(site)).returncode == 0
    (site / "aicc.yml").write_bytes("# site\n# owner\n# caf\u00e9\nsite_name: x\n".encode("latin-1"))
    inventory = site / "inventory.ini"
    inventory.write_text(inventory.read_text().replace("192.0.2.", "127.0.0."))
    res = aicc("preflight", "-i", str(inventory))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"{site / 'aicc.yml'}:3: settings file is not UTF-8 text: byte 0xe9 at line 3" in res.stderr
    assert "iconv" in res.stderr and "Traceback" not in res.stderr + res.stdout


def test_an_impossible_address_is_exit_2_naming_file_and_line(tmp_path: Path) -> None:
    site = tmp_path / "site"
    assert aicc("init", "--site", str(site)).returncode == 0
    inventory = site / "inventory.ini"
    inventory.write_text(inventory.read_text().replace("192.0.2.10", "300.1.1.1"))
    res = aicc("preflight", "-i", str(inventory))
    assert res.returncode == 2
    assert "300.1.1.1 is neither a valid IP address (octet 300 > 255) nor a host name" in res.stderr
    assert f"{inventory}:" in res.stderr and "Traceback" not in res.stderr
