"""The core roles' templates rendered by Ansible itself for sample inventories, then checked by the
services' own checkers (promtool, amtool, nft) and by reading what they say.

Rendering goes through `ansible-playbook` (local connection, the role's defaults as play vars) so the
filters, ansible_managed and variable precedence are exactly what an install uses.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from aicc.monitoring.render import rule_files

# Each module runs ansible-playbook (a few seconds to a minute on a loaded 2-core machine).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
BIN = Path(sys.executable).parent

# Every group on its own host, so each rule and target can be traced to one host.
SPLIT_INVENTORY = """\
[all:vars]
ansible_user=root
[sip_proxy]
sip1 ansible_host=10.0.0.11
[media]
media1 ansible_host=10.0.0.21
[voicebot]
bot1 ansible_host=10.0.0.31
[app]
app1 ansible_host=10.0.0.61
[db]
db1 ansible_host=10.0.0.71
[monitoring]
mon1 ansible_host=10.0.0.81
"""

# One host holding every group (the `single` profile).
SINGLE_INVENTORY = """\
[all:vars]
ansible_user=root
[sip_proxy]
aicc1 ansible_host=192.0.2.10
[media]
aicc1
[voicebot]
aicc1
[app]
aicc1
[db]
aicc1
[monitoring]
aicc1
"""

DEFAULTS = ["common", "postgresql", "rtpengine", "monitoring"]
ROLE_GROUP = {"common": "all", "postgresql": "db", "rtpengine": "media", "monitoring": "monitoring"}
TEMPLATES: list[tuple[str, str, str, dict[str, Any]]] = [
    # (role, template, output name, task vars); rendered on the hosts of the role's group (ROLE_GROUP)
    ("common", "aicc.sources.j2", "sources-proxy", {"common_apt_source": "proxy"}),
    (
        "common",
        "aicc_certificates.prom.j2",
        "certificates-prom",
        {
            "common_cert_info": {
                "results": [
                    {"not_after": "20271203103000Z", "common_cert": {"name": "ca"}},
                    {"not_after": "20270101000000Z", "common_cert": {"name": "host"}},
                ]
            }
        },
    ),
    (
        "common",
        "aicc.sources.j2",
        "sources-mirror",
        {"common_apt_source": "mirror", "common_apt_security_url": "http://mirror.example/debian-security"},
    ),
    (
        "common",
        "aicc.sources.j2",
        "sources-bundle",
        {"common_apt_source": "bundle", "common_apt_trusted": True},
    ),
    ("common", "apt-proxy.conf.j2", "apt-proxy", {}),
    ("common", "apt-timeouts.conf.j2", "apt-timeouts", {}),
    ("common", "journald-aicc.conf.j2", "journald", {}),
    ("common", "chrony-aicc.sources.j2", "chrony", {"common_ntp_servers": ["10.9.9.1", "ntp.corp.example"]}),
    ("common", "prometheus-node-exporter.default.j2", "node-exporter", {}),
    ("common", "journal-upload.conf.j2", "journal-upload", {}),
    ("common", "journal-upload-aicc.conf.j2", "journal-upload-dropin", {}),
    ("postgresql", "aicc.conf.j2", "pg-conf", {}),
    ("postgresql", "aicc.conf.j2", "pg-conf-nowal", {"postgresql_wal_archive": False}),
    ("postgresql", "pg_hba.conf.j2", "pg-hba", {}),
    ("postgresql", "prometheus-postgres-exporter.default.j2", "pg-exporter", {}),
    ("rtpengine", "rtpengine.conf.j2", "rtpengine-conf", {}),
    ("rtpengine", "rtpengine.nft.j2", "rtpengine-nft", {}),
    ("rtpengine", "rtpengine-daemon.default.j2", "rtpengine-default", {}),
    ("rtpengine", "aicc-rtpengine-firewall.service.j2", "rtpengine-unit", {}),
    ("monitoring", "prometheus.yml.j2", "prometheus.yml", {}),
    ("monitoring", "prometheus.default.j2", "prometheus-default", {}),
    ("monitoring", "alertmanager.yml.j2", "alertmanager.yml", {}),
    (
        "monitoring",
        "alertmanager.yml.j2",
        "alertmanager-webhook.yml",
        {
            "monitoring_alertmanager_receivers": [
                {"name": "ops", "webhook_configs": [{"url": "http://10.0.0.99:8080/alerts"}]},
                {"name": "pager", "webhook_configs": [{"url": "http://10.0.0.99:8080/page"}]},
            ],
            "monitoring_alertmanager_default_receiver": "ops",
            "monitoring_alertmanager_critical_receiver": "pager",
        },
    ),
    ("monitoring", "prometheus-alertmanager.default.j2", "alertmanager-default", {}),
    ("monitoring", "journal-remote.conf.j2", "journal-remote", {}),
    ("monitoring", "journal-remote-socket.conf.j2", "journal-remote-socket", {}),
    ("monitoring", "journal-remote-service.conf.j2", "journal-remote-service", {}),
    ("monitoring", "aicc-journal-retention.service.j2", "journal-retention.service", {}),
    ("monitoring", "aicc-journal-retention.timer.j2", "journal-retention.timer", {}),
]

SECRETS = {
    "postgresql_owner_password": "owner-secret-1",
    "postgresql_app_password": "app-secret-2",
    "postgresql_reporting_password": "reporting-secret-3",
    "postgresql_exporter_password": "exp/secret:4@x",
    "kamailio_db_password": "kamailio-secret-5",
}


def render(tmp: Path, inventory_text: str, extra: dict[str, Any]) -> Path:
    """Render every template for every host of the inventory into tmp/out/<host>/<name>."""
    inventory = tmp / "inventory.ini"
    inventory.write_text(inventory_text, encoding="utf-8")
    out = tmp / "out"
    tasks = [
        {
            "name": f"Render {role}/{template} as {name}",
            "ansible.builtin.template": {
                "src": str(ROLES / role / "templates" / template),
                "dest": f"{out}/{{{{ inventory_hostname }}}}/{name}",
                "mode": "0644",
            },
            "vars": task_vars,
            "when": f"inventory_hostname in groups['{ROLE_GROUP[role]}']",
        }
        for role, template, name, task_vars in TEMPLATES
    ]
    play = [
        {
            "name": "Render the role templates",
            "hosts": "all",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [str(ROLES / r / "defaults" / "main.yml") for r in DEFAULTS],
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": [
                {
                    "name": "Create the output folder",
                    "ansible.builtin.file": {
                        "path": f"{out}/{{{{ inventory_hostname }}}}",
                        "state": "directory",
                        "mode": "0755",
                    },
                },
                *tasks,
            ],
        }
    ]
    playbook = tmp / "render.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False), encoding="utf-8")
    extra_file = tmp / "extra.json"
    extra_file.write_text(json.dumps({**SECRETS, **extra}), encoding="utf-8")
    env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORKS": "10",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_HOME": str(tmp / ".ansible"),
    }
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), "-e", f"@{extra_file}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
        cwd=tmp,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return out


SITE_VARS: dict[str, Any] = {
    "aicc_site_dir": "/nonexistent/site",
    "aicc_site_name": "acme",
    "common_apt_url": "http://10.0.0.1:3142",
    "common_node_exporter_port": 9101,
    "postgresql_memory_mb": 8192,
    "postgresql_installer_address": "10.0.0.1",
    "postgresql_exporter_port": 9188,
    "kamailio_metrics_port": 9152,
    "rtpengine_metrics_port": 2226,
    "rtpengine_control_port": 2222,
    "rtpengine_port_min": 40000,
    "rtpengine_port_max": 40999,
    "rtpengine_delete_delay": 7,
    "monitoring_scrape_interval_s": 30,
    "monitoring_retention_days": 20,
    "common_journal_port": 19533,
    "monitoring_journal_retention_days": 200,
    "voicebot_metrics_port": 9171,
    "appliance_api_metrics_port": 9172,
}


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("render-split")
    rules = tmp / "rules"
    rules.mkdir()
    for name, text in rule_files("https://10.0.0.5/ops/runbook").items():
        (rules / name).write_text(text, encoding="utf-8")
    return render(tmp, SPLIT_INVENTORY, {**SITE_VARS, "monitoring_rules_dir": str(rules)})


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("render-single")
    (tmp / "rules").mkdir()
    return render(tmp, SINGLE_INVENTORY, {**SITE_VARS, "monitoring_rules_dir": str(tmp / "rules")})


def tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if Path(p).exists()), None
    )
    assert path, f"{name} is needed for this test: apt-get install the Debian package that ships it"
    return path


# ---------------------------------------------------------------- monitoring


def scrape_targets(config: dict[str, Any]) -> dict[str, dict[str, str]]:
    """job -> {target: host label}"""
    found: dict[str, dict[str, str]] = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                found.setdefault(job["job_name"], {})[target] = static["labels"]["host"]
    return found


def test_prometheus_config_passes_promtool_and_targets_follow_the_inventory(split: Path) -> None:
    path = split / "mon1" / "prometheus.yml"
    check = subprocess.run(
        [tool("promtool"), "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(rule_files('x'))} rule files found" in check.stdout + check.stderr
    config = yaml.safe_load(path.read_text())
    assert config["global"]["scrape_interval"] == "30s"
    assert config["global"]["scrape_timeout"] == "10s"
    assert config["global"]["external_labels"] == {"site": "acme"}
    assert scrape_targets(config) == {
        "prometheus": {"10.0.0.81:9090": "mon1"},
        "alertmanager": {"10.0.0.81:9093": "mon1"},
        "node": {
            "10.0.0.11:9101": "sip1",
            "10.0.0.21:9101": "media1",
            "10.0.0.31:9101": "bot1",
            "10.0.0.61:9101": "app1",
            "10.0.0.71:9101": "db1",
            "10.0.0.81:9101": "mon1",
        },
        "postgres": {"10.0.0.71:9188": "db1"},
        "kamailio": {"10.0.0.11:9152": "sip1"},
        "rtpengine": {"10.0.0.21:2226": "media1"},
        "aicc_voicebot": {"10.0.0.31:9171": "bot1"},
        "aicc_api": {"10.0.0.61:9172": "app1"},
        "aicc_acd": {"10.0.0.61:9163": "app1"},
    }
    assert {j["job_name"]: j["metrics_path"] for j in config["scrape_configs"]}["kamailio"] == "/metrics"
    assert config["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["10.0.0.81:9093"]}]}]


def test_prometheus_config_for_one_host_lists_each_target_once(single: Path) -> None:
    path = single / "aicc1" / "prometheus.yml"
    check = subprocess.run(
        [tool("promtool"), "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    targets = scrape_targets(yaml.safe_load(path.read_text()))
    assert {job: list(t) for job, t in targets.items()} == {
        "prometheus": ["192.0.2.10:9090"],
        "alertmanager": ["192.0.2.10:9093"],
        "node": ["192.0.2.10:9101"],
        "postgres": ["192.0.2.10:9188"],
        "kamailio": ["192.0.2.10:9152"],
        "rtpengine": ["192.0.2.10:2226"],
        "aicc_voicebot": ["192.0.2.10:9171"],
        "aicc_api": ["192.0.2.10:9172"],
        "aicc_acd": ["192.0.2.10:9163"],
    }


def test_certificate_expiry_is_published_in_the_textfile_format(split: Path) -> None:
    text = (split / "sip1" / "certificates-prom").read_text()
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    # 2027-12-03 10:30:00 UTC and 2027-01-01 00:00:00 UTC, whatever the installer host's time zone.
    assert samples == [
        'aicc_certificate_expiry_timestamp_seconds{cert="ca"} 1827829800',
        'aicc_certificate_expiry_timestamp_seconds{cert="host"} 1798761600',
    ]
    check = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_alertmanager_configs_pass_amtool(split: Path) -> None:
    for name in ("alertmanager.yml", "alertmanager-webhook.yml"):
        check = subprocess.run(
            [tool("amtool"), "check-config", str(split / "mon1" / name)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
    webhook = yaml.safe_load((split / "mon1" / "alertmanager-webhook.yml").read_text())
    assert webhook["route"]["receiver"] == "ops"


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=AiccSipProxyDown"], "pager"),
        (["severity=warning", "alertname=AiccHostMemoryLow"], "ops"),
        (["severity=info", "alertname=AiccQueueServiceLevelLow"], "ops"),
    ],
)
def test_alertmanager_routes_by_severity(split: Path, labels: list[str], receiver: str) -> None:
    routed = subprocess.run(
        [
            tool("amtool"),
            "config",
            "routes",
            "test",
            "--config.file",
            str(split / "mon1" / "alertmanager-webhook.yml"),
            *labels,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert routed.stdout.strip() == receiver, routed.stdout + routed.stderr


def test_alertmanager_inhibits_a_down_hosts_other_alerts(split: Path) -> None:
    rules = yaml.safe_load((split / "mon1" / "alertmanager.yml").read_text())["inhibit_rules"]
    host_down = next(r for r in rules if r["source_matchers"] == ['alertname="AiccHostDown"'])
    assert host_down["equal"] == ["host"] and host_down["target_matchers"] == ['alertname!="AiccHostDown"']


def test_prometheus_and_alertmanager_listen_on_the_host_address_only(split: Path) -> None:
    prom = (split / "mon1" / "prometheus-default").read_text()
    assert "--web.listen-address=10.0.0.81:9090" in prom
    assert "--storage.tsdb.retention.time=20d" in prom
    am = (split / "mon1" / "alertmanager-default").read_text()
    assert "--web.listen-address=10.0.0.81:9093" in am
    assert re.search(r'--cluster\.listen-address="?$', am.strip().splitlines()[-1])


def ini(text: str) -> dict[str, list[tuple[str, str]]]:
    """systemd's unit/conf format: section -> [(key, value)], in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        sections[current].append((key, value))
    return sections


def test_every_host_uploads_its_journal_to_the_monitoring_host_with_its_own_certificate(split: Path) -> None:
    for host in ("sip1", "media1", "bot1", "app1", "db1", "mon1"):
        upload = dict(ini((split / host / "journal-upload").read_text())["Upload"])
        assert upload == {
            "URL": "https://10.0.0.81:19533",
            "ServerKeyFile": "/etc/aicc/tls/host.key",
            "ServerCertificateFile": "/etc/aicc/tls/host.crt",
            "TrustedCertificateFile": "/etc/aicc/tls/ca.crt",
        }
    dropin = ini((split / "sip1" / "journal-upload-dropin").read_text())
    assert ("SupplementaryGroups", "ssl-cert") in dropin["Service"]
    assert ("Restart", "always") in dropin["Service"]
    assert dropin["Unit"] == [("StartLimitIntervalSec", "0")]


def test_single_host_uploads_to_itself(single: Path) -> None:
    upload = dict(ini((single / "aicc1" / "journal-upload").read_text())["Upload"])
    assert upload["URL"] == "https://192.0.2.10:19533"


def test_journal_remote_listens_on_the_host_address_with_the_host_certificate(split: Path) -> None:
    remote = dict(ini((split / "mon1" / "journal-remote").read_text())["Remote"])
    assert remote == {
        "Seal": "false",
        "SplitMode": "host",
        "ServerKeyFile": "/etc/aicc/tls/host.key",
        "ServerCertificateFile": "/etc/aicc/tls/host.crt",
        "TrustedCertificateFile": "/etc/aicc/tls/ca.crt",
    }
    socket = ini((split / "mon1" / "journal-remote-socket").read_text())["Socket"]
    # The empty ListenStream= first clears Debian's wildcard port 19532.
    assert [v for k, v in socket if k == "ListenStream"] == ["", "10.0.0.81:19533"]
    service = ini((split / "mon1" / "journal-remote-service").read_text())["Service"]
    assert service == [("SupplementaryGroups", "ssl-cert")]
    assert not (split / "sip1" / "journal-remote").exists()


def test_received_journals_are_kept_for_the_retention_days_then_deleted(split: Path) -> None:
    service = ini((split / "mon1" / "journal-retention.service").read_text())["Service"]
    starts = [v for k, v in service if k == "ExecStart"]
    assert starts == [
        "/usr/bin/find /var/log/journal/remote -xdev -type f ( -name *@*.journal -o -name *.journal~ )"
        " -mtime +199 -delete -print",
        "/usr/bin/journalctl --directory=/var/log/journal/remote --vacuum-size=20G",
    ]
    timer = ini((split / "mon1" / "journal-retention.timer").read_text())
    assert ("OnCalendar", "daily") in timer["Timer"] and ("Persistent", "true") in timer["Timer"]
    analyze = shutil.which("systemd-analyze")
    if analyze:
        units = split / "mon1" / "units"
        units.mkdir(exist_ok=True)
        for name in ("aicc-journal-retention.service", "aicc-journal-retention.timer"):
            shutil.copy(split / "mon1" / name.removeprefix("aicc-"), units / name)
        check = subprocess.run(
            [analyze, "verify", "--man=no", *(str(p) for p in sorted(units.iterdir()))],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr


# ---------------------------------------------------------------- postgresql


def hba_rules(text: str) -> list[list[str]]:
    return [
        line.split("#")[0].split() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]


def test_pg_hba_allows_each_login_only_from_its_hosts_over_tls(split: Path) -> None:
    rules = hba_rules((split / "db1" / "pg-hba").read_text())
    remote = [r for r in rules if r[0] != "local" and not r[3].startswith(("127.0.0.1/", "::1/"))]
    assert {(r[0], r[1], r[2], r[3], r[4]) for r in remote} == {
        # only app hosts run the appliance's schema migrations as the owner
        ("hostssl", "aicc", "aicc_owner", "10.0.0.61/32", "scram-sha-256"),
        ("hostssl", "aicc", "aicc_app", "10.0.0.61/32", "scram-sha-256"),
        ("hostssl", "aicc", "aicc_app", "10.0.0.31/32", "scram-sha-256"),
        ("hostssl", "aicc", "aicc_reporting", "10.0.0.61/32", "scram-sha-256"),
        ("hostssl", "aicc", "aicc_reporting", "10.0.0.81/32", "scram-sha-256"),
        ("hostssl", "aicc", "kamailio", "10.0.0.11/32", "scram-sha-256"),
        ("hostssl", "aicc", "aicc_reporting", "10.0.0.1/32", "scram-sha-256"),
    }
    assert len(remote) == 7, "duplicate rules"
    methods = {r[-1] for r in rules}
    assert methods <= {"peer", "scram-sha-256"}, methods  # never trust, password or md5
    local_tcp = [r for r in rules if r[0] == "host"]
    assert {r[3] for r in local_tcp} == {"127.0.0.1/32", "::1/128"}


def test_pg_hba_on_one_host_has_no_duplicate_rules(single: Path) -> None:
    rules = [r for r in hba_rules((single / "aicc1" / "pg-hba").read_text()) if r[0] == "hostssl"]
    assert len(rules) == len({tuple(r) for r in rules})
    assert {r[2] for r in rules} == {"aicc_owner", "aicc_app", "aicc_reporting", "kamailio"}


def pg_settings(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)\s*=\s*(.+?)\s*$", line)
        if m:
            found[m.group(1)] = m.group(2).strip("'")
    return found


def test_pg_settings_derive_memory_from_ram_and_bind_the_host_address(split: Path) -> None:
    conf = pg_settings((split / "db1" / "pg-conf").read_text())
    # 8192 MB: 25% / 75%; work_mem (8192-2048) / (200 x 3) = 10 MB; maintenance 8192/16.
    assert conf["shared_buffers"] == "2048MB"
    assert conf["effective_cache_size"] == "6144MB"
    assert conf["work_mem"] == "10MB"
    assert conf["maintenance_work_mem"] == "512MB"
    assert conf["listen_addresses"] == "localhost,10.0.0.71"
    assert conf["password_encryption"] == "scram-sha-256"
    assert conf["ssl"] == "on" and conf["ssl_key_file"] == "/etc/aicc/tls/host.key"
    assert conf["archive_mode"] == "on"
    assert conf["archive_command"].startswith("test ! -f /var/backups/aicc/wal/%f && cp %p ")
    assert pg_settings((split / "db1" / "pg-conf-nowal").read_text())["archive_mode"] == "off"


def test_pg_settings_parse_in_a_real_postgres(split: Path) -> None:
    """postgres -C reads the whole configuration (with our drop-in) and fails on any bad line."""
    bindir = Path("/usr/lib/postgresql/15/bin")
    assert (bindir / "postgres").exists(), "PostgreSQL 15 is needed: apt-get install postgresql-15"
    uid = 65534  # nobody: postgres refuses to run as root
    # pytest's own tmp folders are root-only; postgres runs as nobody and must read these files.
    work = Path(tempfile.mkdtemp(prefix="aicc-pgconf-"))
    try:
        work.chmod(0o755)
        data = work / "data"
        data.mkdir(mode=0o700)
        os.chown(data, uid, uid)
        shutil.copy(split / "db1" / "pg-conf", work / "aicc.conf")
        shutil.copy(split / "db1" / "pg-hba", work / "pg_hba.conf")
        conf = work / "postgresql.conf"
        (work / "pg_ident.conf").write_text("")
        conf.write_text(
            f"data_directory = '{data}'\nhba_file = '{work}/pg_hba.conf'\n"
            f"ident_file = '{work}/pg_ident.conf'\ninclude 'aicc.conf'\n"
        )
        for f in ("aicc.conf", "pg_hba.conf", "pg_ident.conf", "postgresql.conf"):
            (work / f).chmod(0o644)
        proc = subprocess.run(
            [
                "setpriv",
                f"--reuid={uid}",
                f"--regid={uid}",
                "--clear-groups",
                str(bindir / "postgres"),
                f"--config-file={conf}",
                "-C",
                "shared_buffers",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "262144"  # 8 kB pages: 2048 MB


def test_exporter_login_is_url_encoded_and_local(split: Path) -> None:
    text = (split / "db1" / "pg-exporter").read_text()
    assert "postgres_exporter:exp%2Fsecret%3A4%40x@127.0.0.1:5432/postgres?sslmode=disable" in text
    assert '--web.listen-address=10.0.0.71:9188"' in text


# ---------------------------------------------------------------- rtpengine


def test_rtpengine_conf_binds_the_host_address_with_userspace_forwarding(split: Path) -> None:
    text = (split / "media1" / "rtpengine-conf").read_text()
    conf = dict(re.findall(r"^([\w-]+) = (.+)$", text, flags=re.M))
    assert conf["table"] == "-1"
    assert conf["interface"] == "10.0.0.21"
    assert conf["listen-ng"] == "10.0.0.21:2222"
    assert conf["listen-http"] == "10.0.0.21:2226"
    assert conf["listen-cli"].startswith("127.0.0.1:")
    assert (conf["port-min"], conf["port-max"], conf["delete-delay"]) == ("40000", "40999", "7")
    assert "MANAGE_IPTABLES=no" in (split / "media1" / "rtpengine-default").read_text()


def test_rtpengine_filter_admits_only_sip_proxies_to_ng(split: Path) -> None:
    text = (split / "media1" / "rtpengine-nft").read_text()
    assert "udp dport 2222 ip saddr { 10.0.0.11 } accept" in text
    assert "tcp dport 2226 ip saddr { 10.0.0.11, 10.0.0.81 } accept" in text
    lines = [line.strip() for line in text.splitlines()]
    # The drop comes after the accept for the same port.
    assert lines.index("udp dport 2222 counter drop") > lines.index(
        "udp dport 2222 ip saddr { 10.0.0.11 } accept"
    )


def test_rtpengine_filter_is_valid_nftables(split: Path) -> None:
    """nft -c in a fresh, empty network namespace: a syntax check that touches no real firewall."""
    nft = tool("nft")
    proc = subprocess.run(
        ["unshare", "--net", nft, "-c", "-f", str(split / "media1" / "rtpengine-nft")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_rtpengine_filter_drops_ng_from_other_hosts_for_real(split: Path) -> None:
    """Two throwaway network namespaces joined by a veth pair: the media host with the rendered rules,
    and a peer holding the SIP proxy's address and another one. Only the SIP proxy's datagram arrives."""
    nft = tool("nft")
    tag = f"aicct{os.getpid() % 100000}"
    media, peer = f"{tag}m", f"{tag}p"
    listener = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('10.0.0.21', 2222)); s.settimeout(3)\n"
        "got = []\n"
        "try:\n"
        "    while True: got.append(s.recvfrom(100)[0].decode())\n"
        "except TimeoutError: pass\n"
        "print(sorted(got))\n"
    )
    sender = (
        "import socket, time\n"
        "time.sleep(0.5)\n"
        "for src in ('10.0.0.11', '10.0.0.99'):\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((src, 0))\n"
        "    s.sendto(('from ' + src).encode(), ('10.0.0.21', 2222))\n"
    )

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    try:
        sh("ip", "netns", "add", media)
        sh("ip", "netns", "add", peer)
        sh(
            "ip",
            "link",
            "add",
            f"{tag}a",
            "netns",
            media,
            "type",
            "veth",
            "peer",
            "name",
            f"{tag}b",
            "netns",
            peer,
        )
        sh("ip", "-n", media, "addr", "add", "10.0.0.21/24", "dev", f"{tag}a")
        sh("ip", "-n", peer, "addr", "add", "10.0.0.11/24", "dev", f"{tag}b")
        sh("ip", "-n", peer, "addr", "add", "10.0.0.99/24", "dev", f"{tag}b")
        for ns, dev in ((media, f"{tag}a"), (peer, f"{tag}b")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", media, nft, "-f", str(split / "media1" / "rtpengine-nft"))
        receiving = subprocess.Popen(
            ["ip", "netns", "exec", media, sys.executable, "-c", listener], stdout=subprocess.PIPE, text=True
        )
        sh("ip", "netns", "exec", peer, sys.executable, "-c", sender)
        out, _ = receiving.communicate(timeout=10)
        counters = subprocess.run(
            ["ip", "netns", "exec", media, nft, "list", "table", "inet", "aicc_rtpengine"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        for ns in (media, peer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    assert out.strip() == "['from 10.0.0.11']"
    assert re.search(r"udp dport 2222 counter packets 1 ", counters), counters


# ---------------------------------------------------------------- common


def deb822(text: str) -> list[dict[str, str]]:
    stanzas = []
    for block in re.split(r"\n\s*\n", "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))):
        fields = dict(re.findall(r"^([\w-]+):\s*(.+)$", block, flags=re.M))
        if fields:
            stanzas.append(fields)
    return stanzas


def test_apt_sources_per_package_source(split: Path) -> None:
    proxy = deb822((split / "db1" / "sources-proxy").read_text())
    assert [(s["URIs"], s["Suites"]) for s in proxy] == [
        ("http://deb.debian.org/debian", "bookworm bookworm-updates"),
        ("http://deb.debian.org/debian-security", "bookworm-security"),
    ]
    assert 'Acquire::http::Proxy "http://10.0.0.1:3142";' in (split / "db1" / "apt-proxy").read_text()
    mirror = deb822((split / "db1" / "sources-mirror").read_text())
    assert [(s["URIs"], s["Suites"]) for s in mirror] == [
        ("http://10.0.0.1:3142", "bookworm bookworm-updates"),
        ("http://mirror.example/debian-security", "bookworm-security"),
    ]
    assert all("Signed-By" in s and "Trusted" not in s for s in mirror)
    bundle = deb822((split / "db1" / "sources-bundle").read_text())
    assert bundle == [
        {
            "Types": "deb",
            "URIs": "http://10.0.0.1:3142",
            "Suites": "bookworm",
            "Components": "main",
            "Trusted": "yes",
        }
    ]
    assert 'Acquire::http::Timeout "30";' in (split / "db1" / "apt-timeouts").read_text()


def test_node_exporter_listens_on_each_host_address(split: Path) -> None:
    for host, address in {"sip1": "10.0.0.11", "db1": "10.0.0.71", "mon1": "10.0.0.81"}.items():
        args = (split / host / "node-exporter").read_text()
        listen = re.search(r"--web\.listen-address=(\S+?):(\d+)", args)
        assert listen and listen.groups() == (address, "9101"), args
        ipaddress.ip_address(listen.group(1))


def test_journald_and_chrony_dropins(split: Path) -> None:
    journald = (split / "db1" / "journald").read_text()
    assert "[Journal]" in journald and "SystemMaxUse=1G" in journald
    assert (split / "db1" / "chrony").read_text().splitlines()[1:] == [
        "server 10.9.9.1 iburst",
        "server ntp.corp.example iburst",
    ]
