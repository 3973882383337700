"""The appliance role: its templates rendered by Ansible for a sample site (the site settings mapped as
an install maps them), then read by what reads them on a host: the services' settings model, libpq's
conninfo parser, the ACD's config models, and nginx itself, run for real in a throwaway network
namespace with a TLS client and a stand-in API behind it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from aicc.appliance.acd.policy import AgentProfile, QueueConfig
from aicc.installer.settings import SiteSettings, settings_to_ansible_vars
from tests.unit import tls_support

# Renders with ansible-playbook and runs nginx: several seconds on a loaded 2-core machine.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "appliance"
BIN = Path(sys.executable).parent
CHECK = ROLE / "files" / "aicc-nginx-check"

INVENTORY = """\
[all:vars]
ansible_user=root
[app]
app1 ansible_host=10.0.0.61
app2 ansible_host=fd00::62
[db]
db1 ansible_host=10.0.0.71
[sip_proxy]
sip1 ansible_host=10.0.0.81
sip2 ansible_host=fd00::82
[monitoring]
mon1 ansible_host=fd00::91
mon2 ansible_host=10.0.0.92
"""

# What the services' AppConfig (appliance/api/config.py) accepts: it refuses unknown keys.
APP_KEYS = {
    "email",
    "listen_host",
    "listen_port",
    "metrics_host",
    "api_metrics_port",
    "acd_metrics_port",
    "database_dsn_file",
    "secret_key_file",
    "public_url",
    "session_ttl_s",
    "session_idle_s",
    "login_max_failures",
    "lockout_s",
    "ip_max_failures",
    "ip_window_s",
    "pool_min",
    "pool_max",
    "sip_domain",
    "sip_schema",
    "sip_ws_urls",
    "sip_token_ttl_s",
    "prometheus_url",
    "acd",
    "ticket_escalation_interval_s",
    "transcript_retention_days",
    "ticket_retention_days",
    "retention_interval_s",
    "webchat_keys",
    "webchat_origins",
    "webchat_bot",
    "webchat_rate_messages",
    "webchat_rate_window_s",
    "webchat_session_ttl_s",
    "chat_queue",
    "chat_first_reply_s",
    "llm_urls",
    "llm_model",
    "llm_timeout_s",
    "wecom",
    "wechat_oa",
}
ACD_KEYS = {
    "registrations_table",
    "registrations_poll_s",
    "phone_grace_s",
    "tick_s",
    "gateway_timeout_s",
    "result_timeout_s",
    "timezone",
}

# A password libpq must see unchanged through the conninfo's quoting.
OWNER_PASSWORD = "own'er\\pass word"
SETTINGS = SiteSettings.model_validate(
    {
        "app": {
            "https_port": 8443,
            "api_port": 8011,
            "api_metrics_port": 9172,
            "session_ttl_s": 3600,
            "transcript_retention_days": 90,
        },
        "database": {"port": 5433},
        "monitoring": {"prometheus_port": 9099},
    }
)

TEMPLATES: list[tuple[str, str, dict[str, str]]] = [
    ("app.yml.j2", "app.yml", {}),
    ("app-seed.yml.j2", "seed.yml", {}),
    ("aicc-api.service.j2", "aicc-api.service", {}),
    ("aicc-acd.service.j2", "aicc-acd.service", {}),
    ("nginx-aicc.conf.j2", "aicc.conf", {}),
    (
        "conninfo.j2",
        "owner.conninfo",
        {
            "appliance_conninfo_user": "{{ appliance_db_owner_user }}",
            "appliance_conninfo_password": "{{ postgresql_owner_password }}",
        },
    ),
]


def role_defaults() -> dict[str, Any]:
    data = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("appliance"), INVENTORY, TEMPLATES)


def render(
    tmp: Path,
    inventory: str,
    templates: list[tuple[str, str, dict[str, str]]],
    settings: SiteSettings = SETTINGS,
    more_vars: dict[str, Any] | None = None,
) -> Path:
    """The templates rendered by ansible-playbook for every [app] host of `inventory`, under tmp/out."""
    # A site CA and a certificate for app1's address, like the pki role issues.
    files = ("ca.crt", "host.crt", "host.key")
    ca, cert, key = tls_support.issue(tmp, "app1", ("10.0.0.61",), files=files)
    out = tmp / "out"
    tasks: list[dict[str, Any]] = [
        {
            "name": "Create the output folder",
            "ansible.builtin.file": {"path": f"{out}/{{{{ inventory_hostname }}}}", "state": "directory"},
        }
    ]
    tasks += [
        {
            "name": f"Render {template}",
            "ansible.builtin.template": {
                "src": str(ROLE / "templates" / template),
                "dest": f"{out}/{{{{ inventory_hostname }}}}/{name}",
                "mode": "0644",
            },
            "vars": task_vars,
        }
        for template, name, task_vars in templates
    ]
    play = [
        {
            "name": "Render the appliance role's templates",
            "hosts": "app",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [str(ROLE / "defaults" / "main.yml")],
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": tasks,
        }
    ]
    (tmp / "render.yml").write_text(yaml.safe_dump(play, sort_keys=False), encoding="utf-8")
    (tmp / "inventory.ini").write_text(inventory, encoding="utf-8")
    extra = {
        **settings_to_ansible_vars(settings),
        "postgresql_app_password": "app-secret-2",
        "postgresql_owner_password": OWNER_PASSWORD,
        "api_secret_key": "k" * 32,
        "appliance_tls_ca": str(ca),
        "appliance_tls_cert": str(cert),
        "appliance_tls_key": str(key),
        **(more_vars or {}),
    }
    (tmp / "extra.json").write_text(json.dumps(extra), encoding="utf-8")
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "inventory.ini", "render.yml", "-e", "@extra.json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOME": str(tmp / ".ansible")},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return out


# ---------------------------------------------------------------- app.yml


def test_app_settings_have_exactly_the_services_keys_and_follow_the_site(rendered: Path) -> None:
    doc = yaml.safe_load((rendered / "app1" / "app.yml").read_text())
    assert set(doc) == APP_KEYS and set(doc["acd"]) == ACD_KEYS
    if importlib.util.find_spec("aicc.appliance.api.config") is not None:
        from aicc.appliance.api.config import AppConfig

        assert set(AppConfig.model_fields) == APP_KEYS
        AppConfig.model_validate(doc)  # the service would start with it
    # The API on loopback behind nginx; metrics on the host's address for Prometheus.
    assert (doc["listen_host"], doc["listen_port"]) == ("127.0.0.1", 8011)
    assert (doc["metrics_host"], doc["api_metrics_port"], doc["acd_metrics_port"]) == (
        "10.0.0.61",
        9172,
        9163,
    )
    assert doc["public_url"] == "https://10.0.0.61:8443"
    assert doc["session_ttl_s"] == 3600 and doc["session_idle_s"] == 1800
    assert doc["database_dsn_file"] == "/etc/aicc/app-db.conninfo"
    assert doc["secret_key_file"] == "/etc/aicc/api-secret.key"
    assert doc["acd"]["registrations_table"] == "kamailio.location"
    # Personal data retention: the site's days, purged hourly.
    assert (doc["transcript_retention_days"], doc["retention_interval_s"]) == (90, 3600.0)
    assert doc["ticket_retention_days"] == 1095  # 3 years: tickets are business records
    # The softphones' servers: every SIP proxy's secure WebSocket, IPv6 in brackets.
    assert doc["sip_ws_urls"] == ["wss://10.0.0.81:8443", "wss://[fd00::82]:8443"]
    six = yaml.safe_load((rendered / "app2" / "app.yml").read_text())
    assert (six["metrics_host"], six["public_url"]) == ("fd00::62", "https://[fd00::62]:8443")
    # The operations page's Prometheus: the first [monitoring] host, plain HTTP, on the site's port.
    assert doc["prometheus_url"] == six["prometheus_url"] == "http://[fd00::91]:9099"


def test_prometheus_url_is_null_without_a_monitoring_host(tmp_path: Path) -> None:
    inventory = INVENTORY.split("[monitoring]", maxsplit=1)[0]
    out = render(tmp_path, inventory, [("app.yml.j2", "app.yml", {})])
    doc = yaml.safe_load((out / "app1" / "app.yml").read_text())
    assert doc["prometheus_url"] is None
    if importlib.util.find_spec("aicc.appliance.api.config") is not None:
        from aicc.appliance.api.config import AppConfig

        assert AppConfig.model_validate(doc).prometheus_url is None


def test_conninfo_reaches_libpq_unchanged(rendered: Path) -> None:
    info = conninfo_to_dict((rendered / "app1" / "owner.conninfo").read_text())
    assert info == {
        "host": "10.0.0.71",
        "port": "5433",
        "dbname": "aicc",
        "user": "aicc_owner",
        "password": OWNER_PASSWORD,
        "sslmode": "verify-full",
        "sslrootcert": info["sslrootcert"],
    }
    assert info["sslrootcert"].endswith("ca.crt")


# ---------------------------------------------------------------- messaging channels

# What a site's secrets.yml holds for the channels (copied from the consoles); the Token is digits, as
# a console may give it, quoted as the README says.
CHANNEL_SECRETS = {
    "wecom_secret": "kf-secret-Zx8Qw2Lm5Np7Rt9Vb1Cd3Fg6Hj4Kl0",
    "wecom_token": "0123456789",
    "wecom_encoding_aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
    "wechat_oa_app_secret": "oa-app-secret-Q2w3E4r5T6y7U8i9O0p1",
    "wechat_oa_token": "oaTokenZ8x7C6v5B4n3M2",
    "wechat_oa_encoding_aes_key": "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj",
    "email_imap_password": "imap-pw-Lk3Jh5Gf7Ds9",
    "email_smtp_password": "smtp-pw-Qa1Ws2Ed3Rf4",
}


# A CA certificate, as a site pastes its mail server's CA into aicc.yml.
MAIL_CA = tls_support.issue(Path(tempfile.mkdtemp(prefix="aicc-mail-ca-")), "mail.example.test")[
    0
].read_text()
CHANNELS_ON = SiteSettings.model_validate(
    {
        **SETTINGS.model_dump(mode="json", include={"app", "database", "monitoring"}),
        "channels": {
            "wecom": {"enabled": True, "corp_id": "ww0123456789abcdef"},
            "wechat_oa": {"enabled": True, "app_id": "wx0123456789abcdef"},
            "email": {
                "enabled": True,
                "address": "support@example.test",
                "display_name": "客服中心",
                "imap_host": "10.0.0.25",
                "smtp_host": "10.0.0.25",
                "ca_pem": MAIL_CA,
            },
        },
    }
)


def test_channels_are_off_in_app_yml_unless_the_site_turns_them_on(rendered: Path) -> None:
    doc = yaml.safe_load((rendered / "app1" / "app.yml").read_text())
    assert doc["wecom"] == {"enabled": False} and doc["wechat_oa"] == {"enabled": False}
    assert doc["email"] == {"enabled": False}


def _channel_tasks(names: tuple[str, ...]) -> list[dict[str, Any]]:
    tasks = yaml.safe_load((ROLE / "tasks" / "config.yml").read_text()) + yaml.safe_load(
        (ROLE / "tasks" / "main.yml").read_text()
    )
    by_name = {t["name"]: t for t in tasks}
    return [by_name[name] for name in names]


def _run_channel_tasks(
    tmp: Path, settings: SiteSettings, secrets: dict[str, str], tasks: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    """The role's channel tasks as the install runs them (secrets.yml as extra vars), writing into
    tmp/etc as root:root (the service's group does not exist here)."""
    for task in tasks:
        task.pop("notify", None)  # no handlers in this play
    play = [
        {
            "name": "The appliance role's channel tasks",
            "hosts": "app1",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [str(ROLE / "defaults" / "main.yml")],
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": tasks,
        }
    ]
    (tmp / "etc").mkdir(exist_ok=True)
    (tmp / "channels.yml").write_text(yaml.safe_dump(play, sort_keys=False), encoding="utf-8")
    (tmp / "inventory.ini").write_text(INVENTORY, encoding="utf-8")
    extra = {
        **settings_to_ansible_vars(settings),
        **secrets,
        "appliance_config_dir": str(tmp / "etc"),
        "appliance_user": "root",
    }
    (tmp / "channels.json").write_text(json.dumps(extra), encoding="utf-8")
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "inventory.ini", "channels.yml", "-e", "@channels.json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOME": str(tmp / ".ansible")},
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="the secret files are written root:root, as on a host")
def test_enabled_channels_get_their_settings_and_secret_files_and_lose_them_when_off(tmp_path: Path) -> None:
    names = (
        "Write the enabled messaging channels' secrets (from secrets.yml)",
        "Remove the secrets of the messaging channels that are off",
        "Write the CA of the mail server's certificate",
        "Remove the mail server's CA while email does not need it",
    )
    write, remove, write_ca, remove_ca = _channel_tasks(names)
    assert (
        write["no_log"] is True and write["diff"] is False and write["ansible.builtin.copy"]["mode"] == "0640"
    )
    proc = _run_channel_tasks(tmp_path, CHANNELS_ON, CHANNEL_SECRETS, [write, remove, write_ca, remove_ca])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for value in CHANNEL_SECRETS.values():
        assert value not in proc.stdout + proc.stderr  # no_log
    (tmp_path / "render").mkdir()
    out = render(
        tmp_path / "render",
        INVENTORY,
        [("app.yml.j2", "app.yml", {})],
        CHANNELS_ON,
        {"appliance_config_dir": str(tmp_path / "etc")},
    )
    doc = yaml.safe_load((out / "app1" / "app.yml").read_text())
    assert doc["wecom"] == {
        "enabled": True,
        "corp_id": "ww0123456789abcdef",
        "api_base_url": "https://qyapi.weixin.qq.com",
        "secret_file": f"{tmp_path}/etc/wecom-secret",
        "token_file": f"{tmp_path}/etc/wecom-token",
        "aes_key_file": f"{tmp_path}/etc/wecom-aes.key",
    }
    assert doc["wechat_oa"]["app_id"] == "wx0123456789abcdef"
    assert doc["wechat_oa"]["api_base_url"] == "https://api.weixin.qq.com"
    assert doc["email"] == {
        "enabled": True,
        "address": "support@example.test",
        "display_name": "客服中心",
        "imap_host": "10.0.0.25",
        "imap_port": 993,
        "imap_user": "",
        "imap_password_file": f"{tmp_path}/etc/email-imap-password",
        "smtp_host": "10.0.0.25",
        "smtp_port": 587,
        "smtp_security": "starttls",
        "smtp_user": "",
        "smtp_password_file": f"{tmp_path}/etc/email-smtp-password",
        "ca_file": f"{tmp_path}/etc/email-ca.pem",
        "bot": False,
    }
    assert (tmp_path / "etc" / "email-ca.pem").read_text() == MAIL_CA.strip() + "\n"
    for name in (
        "wecom-secret",
        "wecom-token",
        "wecom-aes.key",
        "wechat-oa-secret",
        "wechat-oa-token",
        "email-imap-password",
        "email-smtp-password",
    ):
        mode = (tmp_path / "etc" / name).stat().st_mode & 0o777
        assert mode == 0o640, (name, oct(mode))
    if importlib.util.find_spec("aicc.appliance.api.config") is not None:
        from aicc.appliance.api.config import AppConfig

        config = AppConfig.model_validate(doc)  # and the API reads the secrets from the files written
        wecom, oa = config.wecom.secrets(), config.wechat_oa.secrets()
        assert (wecom.secret, wecom.token, wecom.encoding_aes_key) == (
            CHANNEL_SECRETS["wecom_secret"],
            CHANNEL_SECRETS["wecom_token"],
            CHANNEL_SECRETS["wecom_encoding_aes_key"],
        )
        assert (oa.secret, oa.token, oa.encoding_aes_key) == (
            CHANNEL_SECRETS["wechat_oa_app_secret"],
            CHANNEL_SECRETS["wechat_oa_token"],
            CHANNEL_SECRETS["wechat_oa_encoding_aes_key"],
        )
        assert config.email.passwords() == (
            CHANNEL_SECRETS["email_imap_password"],
            CHANNEL_SECRETS["email_smtp_password"],
        )

    # WeCom turned off again: its files go, the official account's stay.
    wecom_off = CHANNELS_ON.model_copy(
        update={"channels": CHANNELS_ON.channels.model_copy(update={"wecom": SETTINGS.channels.wecom})}
    )
    proc = _run_channel_tasks(tmp_path, wecom_off, CHANNEL_SECRETS, list(_channel_tasks(names)))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == [
        "email-ca.pem",
        "email-imap-password",
        "email-smtp-password",
        "wechat-oa-aes.key",
        "wechat-oa-secret",
        "wechat-oa-token",
    ]


def test_an_enabled_channel_without_its_secrets_stops_the_role_naming_the_key(tmp_path: Path) -> None:
    (check,) = _channel_tasks(
        ("Check the enabled messaging channels' secrets from secrets.yml (the customer copies them in)",)
    )
    given = {k: v for k, v in CHANNEL_SECRETS.items() if k != "wechat_oa_token"}
    given["wecom_encoding_aes_key"] = "too-short"
    proc = _run_channel_tasks(tmp_path, CHANNELS_ON, given, [check])
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "wechat_oa_token in the site's secrets.yml is missing" in output
    assert "wecom_encoding_aes_key in the site's secrets.yml is missing or not 43 characters" in output
    assert "wecom_secret in the site's secrets.yml" not in output
    for value in given.values():
        assert value not in output
    proc = _run_channel_tasks(tmp_path, SETTINGS, {}, [check])  # channels off: nothing needed
    assert proc.returncode == 0, proc.stdout[-4000:]


# ---------------------------------------------------------------- seed


def test_seed_document_is_the_default_and_valid_for_the_acd(rendered: Path) -> None:
    seed = yaml.safe_load((rendered / "app1" / "seed.yml").read_text(encoding="utf-8"))
    assert seed == role_defaults()["appliance_seed"]
    queues = {q["name"]: QueueConfig.model_validate(q) for q in seed["queues"]}
    assert sorted(queues) == ["cards-en", "cards-zh", "chat", "support-en", "support-zh"]
    # The text channels' queue (app.yml chat_queue) takes chats; the agents hold up to 3 beside a call.
    chat_queue = role_defaults()["appliance_chat_queue"]
    assert queues[chat_queue].channel == "chat" and queues[chat_queue].wrap_up_s == 0
    skills = {s["name"] for s in seed["skills"]}
    assert skills == {"orders", "returns", "cards", "general"}
    for name in ("support-en", "support-zh"):
        (step,) = queues[name].overflow
        assert (step.after_s, step.skills, step.queue) == (60, {}, None)
    assert {q.language for q in queues.values()} == {"en", "zh"}
    agents = {u["username"]: AgentProfile.model_validate(u["agent"]) for u in seed["users"]}
    assert {a: p.extension for a, p in agents.items()} == {"demo-agent": "1001", "demo-agent2": "1002"}
    for profile in agents.values():
        assert set(profile.skills) <= skills and set(profile.languages) == {"zh", "en"}
        assert profile.capacity == {"voice": 1, "chat": 3}
    assert {u["role"] for u in seed["users"]} == {"agent"}  # no admin: `aicc admin create` makes one
    assert seed["numbers"] == {"4000": "retail-en", "4001": "retail-zh", "4002": "bank-card"}
    assert set(seed["numbers"].values()) <= set(seed["flows"])
    assert {d["code"] for d in seed["dispositions"]} == {"resolved", "follow_up", "escalated", "wrong_number"}


# ---------------------------------------------------------------- units


@pytest.mark.parametrize("unit", ["aicc-api", "aicc-acd"])
def test_units_run_sandboxed_as_the_service_user(rendered: Path, unit: str) -> None:
    text = (rendered / "app1" / f"{unit}.service").read_text()
    lines = set(text.splitlines())
    component = unit.removeprefix("aicc-")
    assert (
        f"ExecStart=/opt/aicc/app/bin/python -m aicc.appliance.{component} serve --config /etc/aicc/app.yml"
        in lines
    )
    for line in (
        "User=aicc-app",
        "Restart=on-failure",
        "NoNewPrivileges=true",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "ProtectHome=true",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged",
    ):
        assert line in lines, line
    assert [ln for ln in lines if ln.startswith("ReadWritePaths=")] == ["ReadWritePaths=/var/lib/aicc/app"]
    assert any(ln.startswith("TimeoutStopSec=") for ln in lines)
    assert "DO_NOT_TRACK=1" in text and "0.0.0.0" not in text


# ---------------------------------------------------------------- nginx

# Runs inside `unshare --net`: the hosts' addresses on a private loopback, the candidate checks, a
# stand-in API on 127.0.0.1 that answers with the headers it got, nginx with the rendered site, and a
# TLS client that trusts only the site CA.
NGINX_SCENARIO = r"""
import http.client, http.server, json, socket, ssl, subprocess, sys, threading, time
check, site, site6, broken, work, ca = sys.argv[1:7]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "addr", "add", "10.0.0.61/32", "dev", "lo"], check=True)
subprocess.run(["ip", "-6", "addr", "add", "fd00::62/128", "dev", "lo", "nodad"], check=True)
res = {}
for name, path in (("check", site), ("check6", site6), ("check_broken", broken)):
    p = subprocess.run([check, path], capture_output=True, text=True)
    res[name] = [p.returncode, p.stderr[-400:]]

class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())
    do_POST = do_GET
    def log_message(self, *args):
        pass

api = http.server.ThreadingHTTPServer(("127.0.0.1", 8011), Echo)
threading.Thread(target=api.serve_forever, daemon=True).start()
main = f"{work}/nginx.conf"
with open(main, "w") as f:
    f.write(f"pid {work}/nginx.pid;\nerror_log {work}/error.log;\ndaemon off;\nevents {{}}\n"
            f"http {{\naccess_log {work}/access.log;\ninclude /etc/nginx/mime.types;\ninclude {site};\n}}\n")
nginx = subprocess.Popen(["nginx", "-c", main, "-e", f"{work}/error.log"])
try:
    for _ in range(100):
        try:
            socket.create_connection(("10.0.0.61", 8443), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    ctx = ssl.create_default_context(cafile=ca)

    def get(path, headers):
        c = http.client.HTTPSConnection("10.0.0.61", 8443, context=ctx, timeout=5)
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        return {"status": r.status, "headers": {k.lower(): v for k, v in r.getheaders()},
                "body": json.loads(r.read() or b"null")}

    res["plain"] = get("/api/health", {"X-Forwarded-For": "203.0.113.9"})
    res["ws"] = get("/api/ws", {"Upgrade": "websocket", "Connection": "Upgrade"})
    c = http.client.HTTPSConnection("10.0.0.61", 8443, context=ctx, timeout=5)
    c.putrequest("POST", "/api/flows")
    c.putheader("Content-Length", str(11 * 2**20))
    c.endheaders()
    res["big_body"] = c.getresponse().status
    h2 = ssl.create_default_context(cafile=ca)
    h2.set_alpn_protocols(["h2", "http/1.1"])
    with h2.wrap_socket(socket.create_connection(("10.0.0.61", 8443)), server_hostname="10.0.0.61") as s:
        res["alpn"], res["tls"] = s.selected_alpn_protocol(), s.version()
    try:
        socket.create_connection(("10.0.0.61", 80), timeout=1).close()
        res["port80"] = "open"
    except OSError:
        res["port80"] = "closed"
finally:
    nginx.terminate()
    nginx.wait(10)
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def nginx_run(rendered: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    assert Path("/usr/sbin/nginx").exists(), "nginx is needed for this test: apt-get install nginx-light"
    work = tmp_path_factory.mktemp("nginx")
    site = rendered / "app1" / "aicc.conf"
    broken = work / "broken.conf"
    text = site.read_text()
    broken.write_text(text.replace("ssl_certificate_key ", "ssl_certificate_key /nonexistent"))
    ca = next(rendered.parent.glob("ca.crt"))
    proc = subprocess.run(
        [
            "unshare",
            "--net",
            sys.executable,
            "-c",
            NGINX_SCENARIO,
            str(CHECK),
            str(site),
            str(rendered / "app2" / "aicc.conf"),
            str(broken),
            str(work),
            str(ca),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_nginx_check_passes_the_rendered_sites_and_refuses_a_broken_one(nginx_run: dict[str, Any]) -> None:
    assert nginx_run["check"][0] == 0, nginx_run["check"][1]
    assert nginx_run["check6"][0] == 0, nginx_run["check6"][1]
    code, message = nginx_run["check_broken"]
    assert code != 0 and "/nonexistent" in message


def test_nginx_serves_the_api_over_tls_with_the_site_ca(nginx_run: dict[str, Any]) -> None:
    plain = nginx_run["plain"]
    assert plain["status"] == 200 and plain["body"]["path"] == "/api/health"
    seen = plain["body"]["headers"]
    # The client's own X-Forwarded-For is replaced by its real address.
    assert seen["x-forwarded-for"] == "10.0.0.61" and seen["x-forwarded-proto"] == "https"
    assert "upgrade" not in seen
    assert plain["headers"]["strict-transport-security"] == "max-age=31536000"
    assert plain["headers"]["server"] == "nginx"  # no version
    assert nginx_run["alpn"] == "h2" and nginx_run["tls"] in ("TLSv1.2", "TLSv1.3")


def test_nginx_passes_websocket_upgrades_and_limits_bodies(nginx_run: dict[str, Any]) -> None:
    seen = nginx_run["ws"]["body"]["headers"]
    assert (seen["upgrade"], seen["connection"]) == ("websocket", "upgrade")
    assert nginx_run["big_body"] == 413
    assert nginx_run["port80"] == "closed"


def test_nginx_site_offers_only_tls_12_and_13(rendered: Path) -> None:
    text = (rendered / "app1" / "aicc.conf").read_text()
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text
    assert "listen 10.0.0.61:8443 ssl http2 default_server;" in text
    assert "listen [fd00::62]:8443 ssl http2" in (rendered / "app2" / "aicc.conf").read_text()


# ---------------------------------------------------------------- the site playbook


def test_appliance_play_runs_after_the_engines_and_before_the_voicebot() -> None:
    plays = yaml.safe_load((REPO / "installer" / "playbooks" / "site.yml").read_text())
    roles = [r["role"] for p in plays for r in p.get("roles", [])]
    assert roles.index("llm") < roles.index("appliance") < roles.index("voicebot")
    assert roles.index("speech") < roles.index("appliance")
    (play,) = [p for p in plays if [r["role"] for r in p.get("roles", [])] == ["appliance"]]
    assert play["hosts"] == "app"


def test_only_the_appliance_role_migrates_once_per_site() -> None:
    def commands(path: Path) -> list[dict[str, Any]]:
        tasks = yaml.safe_load(path.read_text()) or []
        return [t for t in tasks if "ansible.builtin.command" in t]

    voicebot = commands(REPO / "roles" / "voicebot" / "tasks" / "main.yml")
    assert not [t for t in voicebot if "migrate" in t["ansible.builtin.command"]["argv"]]
    migrate, seed = commands(ROLE / "tasks" / "database.yml")
    assert migrate["ansible.builtin.command"]["argv"][2:4] == ["aicc.appliance.db", "migrate"]
    assert migrate["ansible.builtin.command"]["argv"][-1].endswith("app-owner.conninfo")
    assert seed["ansible.builtin.command"]["argv"][2:4] == ["aicc.appliance.api", "seed"]
    for task, quiet in ((migrate, "applied: nothing"), (seed, "nothing to do")):
        assert task["run_once"] is True and quiet in task["changed_when"]


def test_the_chat_queue_and_first_reply_are_site_settings(tmp_path: Path) -> None:
    site = SiteSettings.model_validate(
        {
            **SETTINGS.model_dump(mode="json", include={"database", "monitoring"}),
            "app": {
                **SETTINGS.app.model_dump(mode="json"),
                "chat_queue": "support-chat",
                "chat_first_reply_s": 0,
            },
        }
    )
    out = render(tmp_path, INVENTORY, [("app.yml.j2", "app.yml", {})], site, {})
    doc = yaml.safe_load((out / "app1" / "app.yml").read_text())
    assert (doc["chat_queue"], doc["chat_first_reply_s"]) == ("support-chat", 0)
    with pytest.raises(ValueError, match="chat_queue"):
        SiteSettings.model_validate({"app": {"chat_queue": "Bad Queue!"}})
