"""The messaging channels' egress: an enabled channel's API URL reaches the hardening role for the [app]
hosts only (aicc.installer.sizing.firewall_rules), and the role's firewall allows its host and port
when the host is an address and warns about a name (the firewall never holds names). The role's own
tasks and template are run by ansible-playbook on this machine, as test_roles_appliance.py does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from aicc.installer.settings import SiteSettings, settings_to_ansible_vars
from aicc.installer.sizing import firewall_rules

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "hardening"
BIN = Path(sys.executable).parent
INVENTORY = """\
[app]
app1 ansible_host=10.0.0.61
[db]
db1 ansible_host=10.0.0.71
"""
SETTINGS = SiteSettings.model_validate(
    {
        "channels": {
            "wecom": {
                "enabled": True,
                "corp_id": "ww0123456789abcdef",
                "api_base_url": "https://10.9.8.7:8443",
            },
            "wechat_oa": {"enabled": True, "app_id": "wx0123456789abcdef"},
            "email": {
                "enabled": True,
                "address": "support@example.test",
                "imap_host": "10.9.8.25",
                "smtp_host": "smtp.example.test",
                "smtp_port": 465,
                "smtp_security": "tls",
            },
        }
    }
)


def test_enabled_channels_apis_are_egress_of_the_app_hosts_only() -> None:
    assert firewall_rules(SiteSettings())["hardening_egress_urls_by_group"] == {"app": []}
    assert firewall_rules(SETTINGS)["hardening_egress_urls_by_group"] == {
        "app": [
            {"url": "https://10.9.8.7:8443", "what": "channels.wecom"},
            {"url": "https://api.weixin.qq.com", "what": "channels.wechat_oa"},
            {"url": "imaps://10.9.8.25:993", "what": "channels.email"},
            {"url": "smtp://smtp.example.test:465", "what": "channels.email"},
        ]
    }


def _task(tasks: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [t for t in tasks if t["name"] == name]
    return found


def test_the_firewall_allows_an_address_and_warns_about_a_name(tmp_path: Path) -> None:
    tasks = yaml.safe_load((ROLE / "tasks" / "firewall.yml").read_text())
    out = tmp_path / "out"
    play = [
        {
            "name": "The hardening role's firewall, rendered",
            "hosts": "all",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [str(ROLE / "defaults" / "main.yml")],
            "vars": {"ansible_python_interpreter": sys.executable, "hardening_connect_from": "10.0.0.1"},
            "tasks": [
                _task(tasks, "Work out the addresses, ports and destinations of this host's firewall"),
                _task(tasks, "Warn about destinations given as names (not allowed by the firewall)"),
                {
                    "name": "Create the output folder",
                    "ansible.builtin.file": {"path": str(out), "state": "directory"},
                },
                {
                    "name": "Render the firewall",
                    "ansible.builtin.template": {
                        "src": str(ROLE / "templates" / "hardening.nft.j2"),
                        "dest": f"{out}/{{{{ inventory_hostname }}}}.nft",
                        "mode": "0644",
                    },
                },
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False), encoding="utf-8")
    (tmp_path / "inventory.ini").write_text(INVENTORY, encoding="utf-8")
    extra = {**settings_to_ansible_vars(SETTINGS), **firewall_rules(SETTINGS)}
    (tmp_path / "extra.json").write_text(json.dumps(extra), encoding="utf-8")
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "inventory.ini", "play.yml", "-e", "@extra.json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOME": str(tmp_path / ".ansible")},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    app, db = (out / "app1.nft").read_text(), (out / "db1.nft").read_text()
    rule = 'ip daddr 10.9.8.7 tcp dport 8443 counter accept comment "channels.wecom: https://10.9.8.7:8443"'
    assert rule in app and "10.9.8.7" not in db
    imap = 'ip daddr 10.9.8.25 tcp dport 993 counter accept comment "channels.email: imaps://10.9.8.25:993"'
    assert imap in app and "10.9.8.25" not in db
    # A name is never written: nft would resolve it at every load.
    assert "api.weixin.qq.com" not in app and "smtp.example.test" not in app
    warnings = [line for line in proc.stdout.splitlines() if "allows addresses only" in line]
    assert len(warnings) == 1 and "app1" in warnings[0]
    assert "api.weixin.qq.com" in warnings[0] and "smtp.example.test" in warnings[0]
    nft = shutil.which("nft")
    if nft is not None and os.geteuid() == 0:
        check = subprocess.run(
            [nft, "-c", "-f", str(out / "app1.nft")], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stderr
