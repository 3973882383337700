"""A site folder: aicc.yml (settings), secrets.yml (0600), inventory.ini, logs/, pki/, ssh/.

`aicc init` creates one; every other verb finds it from the inventory's folder.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aicc.installer.errors import InputError
from aicc.installer.inputfile import read_input_file
from aicc.installer.inventory import Inventory, load_inventory
from aicc.installer.settings import SiteSettings, load_settings, render_commented_yaml

SETTINGS_FILE = "aicc.yml"
SECRETS_FILE = "secrets.yml"
INVENTORY_FILE = "inventory.ini"

# Every credential the site uses. Generated per site; there are no default passwords (the first
# appliance admin is made with `aicc admin create`, its password typed in, never stored here).
SECRET_NAMES: dict[str, str] = {
    "postgresql_owner_password": "owner of the appliance database (migrations)",
    "postgresql_app_password": "appliance services' database login",
    "postgresql_reporting_password": "read-only reporting login",
    "postgresql_exporter_password": "postgres_exporter's monitoring login",
    "kamailio_db_password": "Kamailio's database login (subscribers, DIDs)",
    "kamailio_demo_agent_password": "SIP password of the demo agent extension 1001",
    "api_secret_key": "signing key of the appliance API's sessions and tokens",
    "monitoring_grafana_password": "password of Grafana's administrator on the monitoring hosts",
}
# Secrets added after sites were first made: a site's secrets.yml without one gets it generated and
# appended when it is next read, rather than every secret being re-created with `aicc init --force`.
ADDED_LATER: frozenset[str] = frozenset({"monitoring_grafana_password"})

# The messaging channels' secrets (aicc.yml `channels:`): never generated, the customer copies them
# from the platform's console into secrets.yml. Needed only while the channel is enabled.
CHANNEL_SECRETS: dict[str, dict[str, str]] = {
    "wecom": {
        "wecom_secret": "the 微信客服 Secret (WeCom console: 微信客服 → API)",
        "wecom_token": "the callback's Token (WeCom console: 微信客服 → API → 回调配置)",
        "wecom_encoding_aes_key": "the callback's EncodingAESKey, 43 characters (same page)",
    },
    "wechat_oa": {
        "wechat_oa_app_secret": "the AppSecret (开发者密码; official account console: 设置与开发 → 基本配置)",
        "wechat_oa_token": "the server configuration's Token (令牌, same page: 服务器配置)",
        "wechat_oa_encoding_aes_key": "the EncodingAESKey (消息加解密密钥, 43 characters, same page)",
    },
    "email": {
        "email_imap_password": "the support mailbox's IMAP password (from the mail server's administrator)",
        "email_smtp_password": "the SMTP submission password (the IMAP one again for a single login)",
    },
}
CHANNEL_SECRET_NAMES: frozenset[str] = frozenset(n for names in CHANNEL_SECRETS.values() for n in names)
_AES_KEY = re.compile(r"^[A-Za-z0-9+/]{43}$")


def generate_secrets() -> dict[str, str]:
    return {name: secrets.token_urlsafe(24) for name in SECRET_NAMES}


@dataclass(frozen=True)
class Site:
    root: Path

    @property
    def settings_path(self) -> Path:
        return self.root / SETTINGS_FILE

    @property
    def secrets_path(self) -> Path:
        return self.root / SECRETS_FILE

    @property
    def inventory_path(self) -> Path:
        return self.root / INVENTORY_FILE

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state(self) -> Path:
        return self.root / ".state"

    @property
    def known_hosts(self) -> Path:
        return self.root / "ssh" / "known_hosts"

    def settings(self) -> SiteSettings:
        return load_settings(self.settings_path)

    def secrets(self) -> dict[str, str]:
        return load_secrets(self.secrets_path)


def site_for_inventory(inventory: Path, site_dir: Path | None = None) -> tuple[Site, Inventory]:
    """The site (settings next to the inventory unless --site says otherwise) and its inventory."""
    inv = load_inventory(inventory)
    site = Site((site_dir or inventory.resolve().parent).resolve())
    return site, inv


def load_secrets(path: Path) -> dict[str, str]:
    text = read_input_file(path, "secrets file", missing_fix="run `aicc init` for this site")
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InputError(f"cannot read secrets file: {exc.strerror}", where=str(path)) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", exc)
        raise InputError(f"secrets file is not valid YAML: {problem}", where=where) from None
    if not isinstance(data, dict):
        raise InputError(
            f"secrets file: expected a mapping of name: value; found {type(data).__name__}",
            where=str(path),
            fix="re-create the site's secrets with `aicc init --force`",
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(
            f"secrets file is readable by others (mode {stat.S_IMODE(mode):04o})",
            where=str(path),
            fix=f"chmod 600 {path}",
        )
    not_text = sorted(n for n in CHANNEL_SECRET_NAMES if n in data and not isinstance(data[n], str))
    if not_text:
        # YAML reads 0123 as a number (83): a Token of digits must be quoted to stay what it is.
        raise InputError(
            f"secrets file: {', '.join(not_text)} must be text; YAML read it as something else",
            where=str(path),
            fix=f'quote the value in {path.name}: {not_text[0]}: "..."',
        )
    missing = [n for n in SECRET_NAMES if not data.get(n)]
    if missing and set(missing) <= ADDED_LATER and not set(missing) & set(data):
        data.update(_append_secrets(path, text, missing))
        missing = []
    if missing:
        raise InputError(
            f"secrets missing: {', '.join(missing)}",
            where=str(path),
            fix="add them, or re-create the site's secrets with `aicc init --force`",
        )
    return {str(k): str(v) for k, v in data.items()}


def channel_secret_problems(settings: SiteSettings, secrets: dict[str, str]) -> list[str]:
    """What is missing or wrong among the enabled channels' secrets, one line each naming the key (the
    values never appear)."""
    problems = []
    for channel, _ in settings.channels.enabled():
        for name, what in CHANNEL_SECRETS[channel].items():
            value = secrets.get(name, "").strip()
            if not value:
                problems.append(f"{name} is missing: channels.{channel} is enabled and needs {what}")
            elif name.endswith("_encoding_aes_key") and not _AES_KEY.match(value):
                problems.append(
                    f"{name} is not an EncodingAESKey: it has {len(value)} characters, an EncodingAESKey "
                    "has 43 of A-Z, a-z, 0-9, + and /"
                )
    return problems


def require_channel_secrets(settings: SiteSettings, secrets: dict[str, str], path: Path) -> None:
    """InputError naming secrets.yml and each missing or wrong key of an enabled channel."""
    problems = channel_secret_problems(settings, secrets)
    if problems:
        raise InputError(
            "; ".join(problems),
            where=str(path),
            fix=f'copy them from the platform\'s console into {path.name} (quoted, e.g. wecom_token: "..."), '
            "or turn the channel off in aicc.yml (channels.<name>.enabled: false)",
        )


def _append_secrets(path: Path, text: str, names: list[str]) -> dict[str, str]:
    """Generate `names` and append them to the (0600, already checked) secrets file, keeping the rest."""
    new = {name: secrets.token_urlsafe(24) for name in names}
    lines = "".join(f"# {SECRET_NAMES[name]}\n{name}: {value}\n" for name, value in new.items())
    with path.open("a", encoding="utf-8") as fh:
        fh.write(("" if not text or text.endswith("\n") else "\n") + lines)
    return new


def write_secret_file(path: Path, content: str) -> None:
    """Create a file readable by its owner only, from the first byte (no window at 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content)
    path.chmod(0o600)


PROFILE_INVENTORIES: dict[str, str] = {
    "single": """\
# aicc inventory: one host holds every group (a small site or a proof of concept).
# Replace the address with your host's; see inventory.example.ini in the aicc docs for sizing.
[all:vars]
ansible_user=root
ansible_python_interpreter=/usr/bin/python3

[sip_proxy]
aicc1 ansible_host=192.0.2.10

[media]
aicc1

[voicebot]
aicc1

[speech]
aicc1

[llm]
aicc1

[app]
aicc1

[db]
aicc1

[monitoring]
aicc1
""",
    "ha": """\
# aicc inventory: every service on two or more hosts. Replace the addresses with your hosts'.
[all:vars]
ansible_user=root
ansible_python_interpreter=/usr/bin/python3

[sip_proxy]
sip1 ansible_host=192.0.2.11
sip2 ansible_host=192.0.2.12

[media]
media1 ansible_host=192.0.2.21
media2 ansible_host=192.0.2.22

[voicebot]
bot1 ansible_host=192.0.2.31
bot2 ansible_host=192.0.2.32

[speech]
speech1 ansible_host=192.0.2.41

[llm]
gpu1 ansible_host=192.0.2.51
gpu2 ansible_host=192.0.2.52

[app]
app1 ansible_host=192.0.2.61
app2 ansible_host=192.0.2.62

[db]
db1 ansible_host=192.0.2.71
db2 ansible_host=192.0.2.72

[monitoring]
mon1 ansible_host=192.0.2.81
""",
}


def init_site(
    root: Path,
    *,
    profile: str,
    force: bool = False,
    inventory_text: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Site:
    """Write aicc.yml, inventory.ini and secrets.yml; refuse to overwrite any without force."""
    site = Site(root.resolve())
    targets = [site.settings_path, site.inventory_path, site.secrets_path]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise InputError(
            f"site already exists: {', '.join(p.name for p in existing)}",
            where=str(site.root),
            fix="use --force to overwrite (this also generates new secrets), or pick another --site",
        )
    if inventory_text is None:
        if profile not in PROFILE_INVENTORIES:
            raise InputError(f"profile {profile!r} needs hosts; the lab profile is made by `aicc lab up`")
        inventory_text = PROFILE_INVENTORIES[profile]
    settings = SiteSettings(profile=profile, **(overrides or {}))
    site.root.mkdir(parents=True, exist_ok=True)
    site.logs.mkdir(exist_ok=True)
    site.settings_path.write_text(render_commented_yaml(settings), encoding="utf-8")
    site.inventory_path.write_text(inventory_text, encoding="utf-8")
    header = "# Generated by `aicc init`. Keep this file secret: mode 0600, never in version control.\n"
    body = "".join(
        f"# {desc}\n{name}: {value}\n"
        for (name, desc), value in zip(SECRET_NAMES.items(), generate_secrets().values(), strict=True)
    )
    write_secret_file(site.secrets_path, header + body)
    return site
