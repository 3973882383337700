"""Every role's contract: every default documented and declared in meta/argument_specs.yml (so a
bad variable fails before any change), the site playbook's plays in order, and the playbook valid."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
BIN = Path(sys.executable).parent
ALL_ROLES = sorted(p.name for p in ROLES.iterdir() if (p / "meta" / "argument_specs.yml").is_file())


def specs(role: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    options: dict[str, Any] = doc["argument_specs"]["main"]["options"]
    return options


@pytest.mark.parametrize("role", ALL_ROLES)
def test_every_default_is_documented_and_declared(role: str) -> None:
    text = (ROLES / role / "defaults" / "main.yml").read_text()
    defaults = yaml.safe_load(text) or {}
    options = specs(role)
    undeclared = sorted(set(defaults) - set(options))
    assert not undeclared, f"{role}: defaults missing from meta/argument_specs.yml: {undeclared}"
    # A comment must stand in the block of lines above each variable (a blank line ends a block).
    undocumented = []
    block_has_comment = False
    for line in text.splitlines():
        if not line.strip():
            block_has_comment = False
        elif line.startswith("#"):
            block_has_comment = True
        elif re.match(r"^[a-z_][a-z0-9_]*:", line) and not block_has_comment:
            undocumented.append(line.split(":")[0])
    assert not undocumented, f"{role}: variables without a comment above them: {undocumented}"


@pytest.mark.parametrize("role", ALL_ROLES)
def test_argument_specs_describe_every_option(role: str) -> None:
    missing = [name for name, spec in specs(role).items() if not spec.get("description")]
    assert not missing, f"{role}: options without a description: {missing}"
    meta = yaml.safe_load((ROLES / role / "meta" / "main.yml").read_text())
    assert meta["galaxy_info"]["platforms"] == [{"name": "Debian", "versions": ["bookworm"]}]


def test_secrets_are_required_and_never_defaulted() -> None:
    from aicc.installer.site import SECRET_NAMES

    used = {
        "postgresql_owner_password",
        "postgresql_app_password",
        "postgresql_reporting_password",
        "postgresql_exporter_password",
        "kamailio_db_password",
    }
    assert used <= set(SECRET_NAMES)
    options = specs("postgresql")
    for name in used:
        assert options[name].get("required") is True and options[name].get("no_log") is True, name
    for role in ALL_ROLES:
        defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}
        assert not [k for k in defaults if "password" in k], f"{role} defaults a password"


def test_site_playbook_runs_the_plays_in_dependency_order() -> None:
    plays = yaml.safe_load((REPO / "installer" / "playbooks" / "site.yml").read_text())
    order = [(p["hosts"], [r["role"] for r in p.get("roles", [])]) for p in plays]
    core = [
        (h, r)
        for h, r in order
        if set(r) & {"pki", "common", "postgresql", "kamailio", "rtpengine", "monitoring"}
    ]
    assert core == [
        ("localhost", ["pki"]),
        ("all", ["common"]),
        ("db", ["postgresql"]),
        ("sip_proxy", ["kamailio"]),
        ("media", ["rtpengine"]),
        ("monitoring", ["monitoring"]),
    ]
    names = [p["name"] for p in plays]
    assert len(names) == len(set(names)), "play names must be unique: --resume finds plays by name"
    assert plays[0]["connection"] == "local"


@pytest.mark.parametrize("playbook", ["site.yml", "harden.yml"])
def test_playbooks_pass_syntax_check(tmp_path: Path, playbook: str) -> None:
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        "[sip_proxy]\ns1 ansible_host=10.0.0.1\n[media]\ns1\n[db]\nd1 ansible_host=10.0.0.2\n"
        "[monitoring]\nd1\n"
    )
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "--syntax-check",
            "-i",
            str(inventory),
            str(REPO / "installer" / "playbooks" / playbook),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(ROLES), "ANSIBLE_HOME": str(tmp_path / ".ansible")},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_roles_keep_the_sizing_table_true() -> None:
    """sizing.py is what preflight and `aicc status` believe: the roles must install exactly that."""
    from aicc.installer.settings import SiteSettings
    from aicc.installer.sizing import COMMON_SERVICES, SERVICES, common_listeners, listeners

    s = SiteSettings()
    assert SERVICES["db"][0][0] == "postgresql@15-main"
    assert SERVICES["media"] == [("rtpengine-daemon", "rtpengine-daemon")]
    assert ("prometheus-node-exporter", "prometheus-node-exporter") in COMMON_SERVICES
    assert {(x.proto, x.port) for x in listeners("media", s)} == {
        ("udp", s.media.control_port),
        ("tcp", s.media.metrics_port),
    }
    assert {(x.proto, x.port) for x in listeners("monitoring", s)} == {
        ("tcp", s.monitoring.prometheus_port),
        ("tcp", s.monitoring.alertmanager_port),
        ("tcp", s.monitoring.grafana_port),
        ("tcp", s.monitoring.journal_port),
    }
    assert [(x.proto, x.port) for x in common_listeners(s)] == [("tcp", s.monitoring.node_exporter_port)]
    # The API's own port is on loopback behind nginx: not a host listener.
    assert {(x.proto, x.port, x.process) for x in listeners("app", s)} == {
        ("tcp", s.app.https_port, "nginx"),
        ("tcp", s.app.api_metrics_port, "python"),
        ("tcp", s.app.acd_metrics_port, "python"),
    }
    assert [unit for unit, _pkg in SERVICES["app"]] == ["nginx", "aicc-api", "aicc-acd"]
    # The ports the roles bind come from these settings through settings_to_ansible_vars.
    from aicc.installer.settings import settings_to_ansible_vars

    v = settings_to_ansible_vars(s)
    assert (v["rtpengine_control_port"], v["rtpengine_metrics_port"]) == (
        s.media.control_port,
        s.media.metrics_port,
    )
    assert v["postgresql_exporter_port"] == s.database.exporter_port
    assert v["common_node_exporter_port"] == s.monitoring.node_exporter_port
