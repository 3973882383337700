"""The pki role, run for real on this machine (it runs on the installer host in an install): the CA
and host certificates, their permissions and names, idempotence, and renewal of an expiring CA."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Each module runs ansible-playbook (a few seconds to a minute on a loaded 2-core machine).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

INVENTORY = """\
[db]
db1 ansible_host=10.0.0.71
[media]
media1 ansible_host=media1.corp.example
"""


def run_pki(tmp: Path, site: Path, *extra: str) -> dict[str, int]:
    (tmp / "inventory.ini").write_text(INVENTORY)
    playbook = tmp / "pki.yml"
    plays = yaml.safe_load((REPO / "installer" / "playbooks" / "site.yml").read_text())
    playbook.write_text(yaml.safe_dump([p for p in plays if p["hosts"] == "localhost"]))
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(tmp / "inventory.ini"),
            str(playbook),
            "-e",
            f"aicc_site_dir={site}",
            "-e",
            "aicc_site_name=acme",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={
            **os.environ,
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_HOME": str(tmp / ".ansible"),
        },
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    recap = re.search(r"localhost\s+: ok=(\d+)\s+changed=(\d+)", proc.stdout)
    assert recap, proc.stdout[-2000:]
    return {"ok": int(recap.group(1)), "changed": int(recap.group(2))}


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pki")
    site = tmp / "site"
    first = run_pki(tmp, site)
    assert first["changed"] > 0
    return site


def test_ca_and_host_keys_are_private(site: Path) -> None:
    pki = site / "pki"
    for key in (pki / "ca.key", pki / "hosts" / "db1.key", pki / "hosts" / "media1.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(pki.stat().st_mode) == 0o700


def test_host_certificates_name_the_host_and_its_address(site: Path) -> None:
    pki = site / "pki"
    db = openssl(
        "x509", "-in", str(pki / "hosts" / "db1.crt"), "-noout", "-ext", "subjectAltName,extendedKeyUsage"
    )
    assert "DNS:db1, IP Address:10.0.0.71" in db
    assert "TLS Web Server Authentication" in db
    media = openssl("x509", "-in", str(pki / "hosts" / "media1.crt"), "-noout", "-ext", "subjectAltName")
    assert "DNS:media1, DNS:media1.corp.example" in media
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(pki / "ca.crt"),
            str(pki / "hosts" / "db1.crt"),
            str(pki / "hosts" / "media1.crt"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    ca = openssl("x509", "-in", str(pki / "ca.crt"), "-noout", "-subject", "-ext", "basicConstraints")
    assert "CN = aicc acme site CA" in ca and "CA:TRUE" in ca


def test_second_run_changes_nothing_and_keeps_the_ca(site: Path, tmp_path: Path) -> None:
    before = (site / "pki" / "ca.crt").read_bytes(), (site / "pki" / "hosts" / "db1.crt").read_bytes()
    again = run_pki(tmp_path, site)
    assert again["changed"] == 0
    after = (site / "pki" / "ca.crt").read_bytes(), (site / "pki" / "hosts" / "db1.crt").read_bytes()
    assert before == after


def test_an_expiring_ca_is_replaced_with_the_same_key_and_hosts_reissued(tmp_path: Path) -> None:
    site = tmp_path / "site"
    run_pki(tmp_path, site, "-e", "pki_ca_valid_days=10")  # inside the 30-day renewal window
    old_ca = (site / "pki" / "ca.crt").read_bytes()
    old_key = (site / "pki" / "ca.key").read_bytes()
    old_host = (site / "pki" / "hosts" / "db1.crt").read_bytes()
    renewed = run_pki(tmp_path, site)
    assert renewed["changed"] > 0
    assert (site / "pki" / "ca.crt").read_bytes() != old_ca
    assert (site / "pki" / "ca.key").read_bytes() == old_key  # clients trusting the old CA keep working
    assert (site / "pki" / "hosts" / "db1.crt").read_bytes() != old_host
    end = openssl("x509", "-in", str(site / "pki" / "ca.crt"), "-noout", "-enddate")
    assert int(end.strip()[-8:-4]) >= 2030  # about ten years from now, not ten days
    assert run_pki(tmp_path, site)["changed"] == 0
