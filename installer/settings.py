"""Site settings: aicc.yml in the site folder, overridable by AICC_* environment variables.

Every field is documented here once; `aicc init` writes these descriptions as comments into
aicc.yml, and `settings_to_ansible_vars` is the one place that maps them onto role variables.
Nested fields are overridden with a double underscore: AICC_SIP__UDP_PORT=5070.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from cryptography.x509 import load_pem_x509_certificates
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from aicc.installer.addresses import HostAddress, HttpUrl
from aicc.installer.errors import InputError
from aicc.installer.inputfile import read_input_file

Port = Annotated[int, Field(ge=1, le=65535)]
# Debian policy 5.6.1: lower case letters, digits, + - . ; two characters at least, alphanumeric first.
DebianPackage = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]+$", max_length=128)]
ENV_PREFIX = "AICC_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PackagesSettings(_Section):
    """Where hosts get Debian packages from. Targets never reach the internet."""

    source: Literal["bundle", "proxy", "mirror"] = Field(
        "bundle",
        description="bundle: the offline bundle's apt repository served from the installer host; "
        "proxy: an apt cache such as apt-cacher-ng; mirror: a local Debian mirror.",
    )
    url: HttpUrl = Field(
        "",
        description="For proxy: the proxy URL (http://10.0.0.5:3142). For mirror or bundle: the "
        "repository URL. Empty for bundle means the installer host serves it.",
    )
    suite: str = Field("bookworm", description="Debian suite of the hosts. Only bookworm (12) is supported.")
    serve_port: Port = Field(
        8790, description="For bundle without url: the HTTPS port the installer host serves the bundle on."
    )
    upgrade: bool = Field(
        True,
        description="Upgrade every host's installed packages to what the source holds at each install: "
        "with a bundle, how Debian's security updates reach an offline site (import a newer bundle, then "
        "`aicc install`).",
    )
    extra: list[DebianPackage] = Field(
        default_factory=list,
        description="Debian packages installed on every host from the package source, for example a "
        "vendor agent added to the offline bundle with `aicc bundle build --with-deb FILE.deb`.",
    )


class SipSettings(_Section):
    """Kamailio SIP proxies."""

    domain: HostAddress = Field("aicc.local", description="SIP domain (digest realm) agents and trunks use.")
    udp_port: Port = Field(5060, description="SIP over UDP and TCP.")
    tls_port: Port = Field(5061, description="SIP over TLS (certificate from the site CA).")
    wss_port: Port = Field(8443, description="SIP over secure WebSocket for agent softphones in the browser.")
    metrics_port: Port = Field(9151, description="HTTP listener for Prometheus metrics (xhttp_prom).")
    shm_mb: int = Field(
        256, ge=64, le=65536, description="Shared memory in MB. About 300 MB carried 2000 calls/s."
    )
    pkg_mb: int = Field(16, ge=8, le=1024, description="Private memory per Kamailio process in MB.")
    children: int = Field(4, ge=1, le=256, description="UDP worker processes per listener.")
    flood_limit: int = Field(
        40, ge=5, le=100000, description="Requests one source may send per 2 s before it is blocked."
    )
    flood_ban_s: int = Field(300, ge=10, le=86400, description="Seconds a flooding source stays blocked.")
    trusted_sources: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Addresses or networks of SIP trunks and carriers: never flood-blocked (a trunk sends "
        "every call from one address). Example: [198.51.100.7/32].",
    )
    service_numbers: dict[str, str] = Field(
        default_factory=lambda: {
            "4000": "voicebot",
            "4001": "voicebot-zh",
            "4002": "voicebot-bank",
            "5000": "agents",
        },
        description="Dialled numbers (DIDs) and the service each reaches, seeded into the database.",
    )

    @field_validator("service_numbers")
    @classmethod
    def _digits(cls, v: dict[str, str]) -> dict[str, str]:
        for number in v:
            if not number.lstrip("+").isdigit():
                raise ValueError(f"service number {number!r} must be digits, optionally with a leading +")
        return v


class MediaSettings(_Section):
    """rtpengine media relays."""

    port_min: Port = Field(30000, description="First UDP port for RTP/RTCP.")
    port_max: Port = Field(
        39999,
        description="Last UDP port. Each call holds 4 ports for delete_delay seconds after it ends: "
        "size the range as 4 x (concurrent calls + calls/s x delete_delay) with headroom.",
    )
    delete_delay: int = Field(5, ge=0, le=300, description="Seconds ports stay held after a call ends.")
    control_port: Port = Field(
        2223, description="ng control protocol (UDP), reachable from SIP proxies only."
    )
    metrics_port: Port = Field(2225, description="HTTP port for Prometheus metrics.")

    @model_validator(mode="after")
    def _range(self) -> MediaSettings:
        if self.port_max - self.port_min < 99:
            raise ValueError(
                f"port_max ({self.port_max}) must be at least 100 above port_min ({self.port_min})"
            )
        return self


class DatabaseSettings(_Section):
    """PostgreSQL 15 for the appliance."""

    name: str = Field("aicc", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="Appliance database name.")
    port: Port = Field(5432, description="PostgreSQL port (TLS required from other hosts).")
    max_connections: int = Field(200, ge=20, le=10000, description="max_connections.")
    wal_archive: bool = Field(True, description="Archive WAL to /var/backups/aicc/wal on the db host.")
    exporter_port: Port = Field(9187, description="postgres_exporter metrics port.")


class MonitoringSettings(_Section):
    """Prometheus, Alertmanager and node_exporter."""

    scrape_interval_s: int = Field(15, ge=1, le=300, description="Seconds between scrapes.")
    retention_days: int = Field(
        30, ge=1, le=3650, description="Days Prometheus keeps samples (the SLOs count their budget over 28)."
    )
    prometheus_port: Port = Field(9090, description="Prometheus HTTP port.")
    alertmanager_port: Port = Field(9093, description="Alertmanager HTTP port.")
    grafana_port: Port = Field(
        3000,
        description="Grafana's HTTPS port on the monitoring host (when the bundle carries a grafana .deb).",
    )
    node_exporter_port: Port = Field(9100, description="node_exporter port on every host.")
    journal_port: Port = Field(
        19532,
        description="systemd-journal-remote's port on the monitoring host (every host's journal, HTTPS).",
    )
    log_retention_days: int = Field(
        180,
        ge=1,
        le=3650,
        description="Days the monitoring host keeps the hosts' journals (Cybersecurity Law: at least 180).",
    )


class EngineSettings(_Section):
    """Local AI engines. auto: vLLM where a GPU with enough memory is present, else llama.cpp on CPU."""

    llm: Literal["auto", "vllm", "llamacpp"] = Field("auto", description="LLM engine on [llm] hosts.")
    speech: Literal["auto", "paddlespeech", "embedded"] = Field(
        "auto", description="ASR/TTS engine on [speech] hosts: PaddleSpeech with a GPU, else embedded CPU."
    )
    min_gpu_memory_gib: int = Field(
        20, ge=4, le=1024, description="GPU memory an [llm] host needs to get vLLM under auto."
    )
    llm_port: Port = Field(8081, description="OpenAI-compatible API port of the LLM server on [llm] hosts.")
    speech_port: Port = Field(8090, description="ASR/TTS server port on [speech] hosts.")


class VoicebotSettings(_Section):
    """Voice gateway and AI voice bot on [voicebot] hosts."""

    sip_port: Port = Field(
        5080, description="SIP/UDP port of the gateway; Kamailio's dispatcher sends calls here."
    )
    rtp_port_min: Port = Field(
        40000,
        description="First RTP port of the gateway (4 per call at most: RTP and RTCP, caller and agent).",
    )
    rtp_port_max: Port = Field(40999, description="Last RTP port of the gateway.")
    max_calls: int = Field(
        20, ge=1, le=5000, description="Concurrent calls per host; beyond it new calls get 503 (next host)."
    )
    max_bot_calls: int | None = Field(
        None,
        ge=1,
        le=5000,
        description="Conversations with the bot at once per host (the engines' capacity: bench/"
        "bot_capacity.py measures it). A call that meets no free bot goes at once to the flow's transfer "
        "(the agents' queue) with 'every bot was busy' on the agent's screen. Empty: max_calls alone, "
        "which counts calls bridged to agents too.",
    )
    metrics_port: Port = Field(9161, description="Prometheus metrics of the gateway.")
    no_input_s: int = Field(
        8, ge=2, le=120, description="Seconds of caller silence before the bot re-prompts."
    )
    max_call_s: int = Field(600, ge=30, le=86400, description="Maximum length of a bot call in seconds.")

    @model_validator(mode="after")
    def _range(self) -> VoicebotSettings:
        if self.max_bot_calls is not None and self.max_bot_calls > self.max_calls:
            raise ValueError(
                f"max_bot_calls ({self.max_bot_calls}) cannot be above max_calls ({self.max_calls}): "
                "lower it, or raise max_calls"
            )
        if self.rtp_port_max - self.rtp_port_min + 1 < 4 * self.max_calls:
            raise ValueError(
                f"rtp_port_min..rtp_port_max ({self.rtp_port_min}-{self.rtp_port_max}) must hold 4 ports "
                f"per call for max_calls={self.max_calls}"
            )
        return self


class AppSettings(_Section):
    """Contact-center services on [app] hosts: the API and the ACD, behind nginx."""

    https_port: Port = Field(443, description="HTTPS port of the appliance (nginx, TLS with the site CA).")
    api_port: Port = Field(8010, description="Port of the API on 127.0.0.1 (loopback), behind nginx.")
    api_metrics_port: Port = Field(9162, description="Prometheus metrics of the API.")
    acd_metrics_port: Port = Field(9163, description="Prometheus metrics of the ACD.")
    session_ttl_s: int = Field(
        43200, ge=300, le=2592000, description="Seconds a login session lasts at most (12 h by default)."
    )
    session_idle_s: int = Field(
        1800, ge=60, le=86400, description="Seconds without a request before a session ends."
    )
    login_max_failures: int = Field(
        5, ge=1, le=100, description="Wrong passwords in a row before a user is locked."
    )
    lockout_s: int = Field(
        900, ge=10, le=86400, description="Seconds a locked user stays locked (an admin may unlock sooner)."
    )
    transcript_retention_days: int = Field(
        180,
        ge=1,
        le=3650,
        description="Days call transcripts, the bot's tool calls, callers' numbers on call records and "
        "web-chat messages are kept (PIPL Art. 19: no longer than needed); customers with no activity "
        "for as long lose their name and identities. An hourly job on the API purges what is older and "
        "records each run (GET /api/retention). There is no 'keep for ever'.",
    )
    chat_queue: str = Field(
        "chat",
        pattern=r"^([a-z0-9][a-z0-9_-]{0,40})?$",
        description="The ACD queue (channel chat) that text conversations (web chat, WeCom, WeChat, "
        "email) join when they go to the agents: the ACD offers each to an agent with chat capacity left. "
        "Empty: not routed, agents take them from the desk's Chats tab. The queue is made in the "
        "appliance (seed document or POST /api/queues); a missing one leaves chats in the list with why.",
    )
    chat_first_reply_s: int = Field(
        120,
        ge=0,
        le=3600,
        description="Seconds an agent who accepted a chat has for a first reply before it goes back to "
        "the queue (its wait counting from when it first joined); 0: no limit.",
    )
    ticket_retention_days: int = Field(
        1095,
        ge=30,
        le=3650,
        description="Days a closed (or resolved) ticket is kept whole after its last change; then the "
        "customer's name, phone and e-mail, the description, the subject and the comments' texts are "
        "purged, its number, status, figures and SLA history kept. 3 years by default: tickets are "
        "business records a customer may dispute. At least 30, and at least transcript_retention_days: "
        "a ticket outlives the transcripts of its case, and a customer with a ticket changed within "
        "transcript_retention_days keeps their identities.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AppSettings:
        ports = {
            "https_port": self.https_port,
            "api_port": self.api_port,
            "api_metrics_port": self.api_metrics_port,
            "acd_metrics_port": self.acd_metrics_port,
        }
        if len(set(ports.values())) < len(ports):
            shown = ", ".join(f"{k}={v}" for k, v in ports.items())
            raise ValueError(f"the app ports must all differ; found {shown}")
        if self.session_idle_s > self.session_ttl_s:
            raise ValueError(
                f"session_idle_s ({self.session_idle_s}) must not exceed session_ttl_s ({self.session_ttl_s})"
            )
        if self.ticket_retention_days < self.transcript_retention_days:
            raise ValueError(
                f"ticket_retention_days ({self.ticket_retention_days}) must not be below "
                f"transcript_retention_days ({self.transcript_retention_days}): a ticket outlives the "
                "transcripts of its case"
            )
        return self


class _TencentChannel(_Section):
    """What the WeChat channels share: an https API (api_base_url, set by each) the [app] hosts reach."""

    api_base_url: str

    @field_validator("api_base_url", check_fields=False)
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("an https:// URL is needed: the access token travels in its query string")
        return value

    def endpoints(self) -> list[str]:
        """The URLs the [app] hosts open connections to (their firewall allows an address's)."""
        return [self.api_base_url]


class WeComChannel(_TencentChannel):
    """WeCom customer service (企业微信 微信客服, appliance/README.md "WeCom customer service")."""

    enabled: bool = Field(
        False,
        description="Turn the channel on. secrets.yml must then hold wecom_secret (the 微信客服 Secret), "
        "wecom_token and wecom_encoding_aes_key (the callback's Token and EncodingAESKey), copied from the "
        "WeCom console: they are never generated.",
    )
    corp_id: str = Field(
        "",
        validate_default=True,
        description="The corp id (企业ID, ww..., under 我的企业 → 企业信息); needed when enabled.",
    )
    api_base_url: HttpUrl = Field(
        "https://qyapi.weixin.qq.com",
        description="WeCom's API (https). The [app] hosts' firewall lets them reach its host and port when "
        "the host is an IP address; for a name, add its addresses to hardening.egress_allow (README).",
    )

    @field_validator("corp_id")
    @classmethod
    def _corp_id(cls, value: str, info: ValidationInfo) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            raise ValueError("a corp id is 1-64 of A-Z, a-z, 0-9, _ and - (ww followed by 16 characters)")
        if not value and info.data.get("enabled"):
            raise ValueError("needed when the channel is enabled: copy it from 我的企业 → 企业信息")
        return value


class WeChatOaChannel(_TencentChannel):
    """The WeChat official account (微信公众号, appliance/README.md "WeChat official account")."""

    enabled: bool = Field(
        False,
        description="Turn the channel on. secrets.yml must then hold wechat_oa_app_secret (the AppSecret), "
        "wechat_oa_token and wechat_oa_encoding_aes_key (the server configuration's Token and "
        "EncodingAESKey), copied from the account's console: they are never generated.",
    )
    app_id: str = Field(
        "",
        validate_default=True,
        description="The account's AppID (开发者ID, wx followed by 16 characters, under 设置与开发 → "
        "基本配置); needed when enabled.",
    )
    api_base_url: HttpUrl = Field(
        "https://api.weixin.qq.com",
        description="The official account's API (https). The [app] hosts' firewall lets them reach its host "
        "and port when the host is an IP address; for a name, add its addresses to hardening.egress_allow.",
    )

    @field_validator("app_id")
    @classmethod
    def _app_id(cls, value: str, info: ValidationInfo) -> str:
        if value and not re.fullmatch(r"wx[0-9A-Za-z]{16}", value):
            raise ValueError("an AppID is wx followed by 16 letters and digits")
        if not value and info.data.get("enabled"):
            raise ValueError("needed when the channel is enabled: copy it from 设置与开发 → 基本配置")
        return value


class EmailChannel(_Section):
    """Email (appliance/README.md "Email"): the site's support mailbox on the customer's own mail server,
    read over IMAP (implicit TLS) and answered over SMTP submission (STARTTLS or implicit TLS)."""

    enabled: bool = Field(
        False,
        description="Turn the channel on. secrets.yml must then hold email_imap_password and "
        "email_smtp_password (the mailbox's passwords; the same one twice when the server has one login).",
    )
    address: str = Field(
        "",
        validate_default=True,
        description="The support address customers write to (support@example.com); needed when enabled.",
    )
    display_name: str = Field("", max_length=100, description="The name replies go out under (客服中心).")
    imap_host: HostAddress | Literal[""] = Field(
        "", description="The mail server's IMAP host (an address lets the hosts' firewall allow it)."
    )
    imap_port: Port = Field(993, description="IMAP over TLS.")
    imap_user: str = Field("", max_length=320, description="The mailbox's login; empty: the address.")
    smtp_host: HostAddress | Literal[""] = Field("", description="The SMTP submission host.")
    smtp_port: Port = Field(587, description="587 with STARTTLS, 465 with smtp_security: tls.")
    smtp_security: Literal["starttls", "tls"] = Field("starttls", description="starttls or tls; never plain.")
    smtp_user: str = Field("", max_length=320, description="The submission login; empty: imap_user.")
    ca_pem: str = Field(
        "",
        description="The PEM certificate(s) of the CA that signed the mail server's certificate, when "
        "it is not one the hosts trust already (a YAML block: ca_pem: |). TLS is always verified.",
    )
    bot: bool = Field(
        False, description="The text bot answers email first; off: every email waits for an agent."
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str, info: ValidationInfo) -> str:
        if value and not re.fullmatch(r"[^@\s<>]{1,64}@[A-Za-z0-9.-]{1,253}", value):
            raise ValueError("an email address such as support@example.com")
        if not value and info.data.get("enabled"):
            raise ValueError("needed when the channel is enabled: the address customers write to")
        return value

    @field_validator("ca_pem")
    @classmethod
    def _pem(cls, value: str) -> str:
        if value.strip():
            try:
                load_pem_x509_certificates(value.strip().encode())
            except ValueError as exc:
                raise ValueError(
                    f"not PEM certificates ({exc}): paste the CA's -----BEGIN CERTIFICATE----- block"
                ) from None
        return value.strip()

    @model_validator(mode="after")
    def _hosts(self) -> EmailChannel:
        missing = [n for n in ("imap_host", "smtp_host") if self.enabled and not getattr(self, n)]
        if missing:
            raise ValueError(f"{' and '.join(missing)} needed when the channel is enabled")
        return self

    def endpoints(self) -> list[str]:
        return [
            f"imaps://{_url_host(self.imap_host)}:{self.imap_port}",
            f"smtp://{_url_host(self.smtp_host)}:{self.smtp_port}",
        ]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


Channel = WeComChannel | WeChatOaChannel | EmailChannel


class ChannelsSettings(_Section):
    """Messaging channels beyond web chat, on the [app] hosts. Off by default and shown commented out: to
    turn one on, remove the first '#' of its lines and of 'channels:', set enabled: true, and put its
    secrets (quoted) in secrets.yml."""

    wecom: WeComChannel = Field(default_factory=WeComChannel)
    wechat_oa: WeChatOaChannel = Field(default_factory=WeChatOaChannel)
    email: EmailChannel = Field(default_factory=EmailChannel)

    def enabled(self) -> list[tuple[str, Channel]]:
        """(name, settings) of each channel turned on."""
        channels: tuple[tuple[str, Channel], ...] = (
            ("wecom", self.wecom),
            ("wechat_oa", self.wechat_oa),
            ("email", self.email),
        )
        return [(name, c) for name, c in channels if c.enabled]


class EgressRule(_Section):
    """One destination hosts may open connections to, beyond the site's own hosts."""

    to: IPvAnyNetwork = Field(description="Address or network (CIDR), for example 10.0.8.53 or 10.0.9.0/24.")
    ports: str = Field(
        pattern=r"^[0-9]{1,5}(-[0-9]{1,5})?$", description="A port or a range, 123 or 30000-40000."
    )
    proto: Literal["tcp", "udp"] = Field(description="tcp or udp.")
    what: str = Field(min_length=1, max_length=80, description="What it is for (shown in the report).")


class HardeningSettings(_Section):
    """`aicc harden apply`: host hardening for MLPS 2.0 level 3 (see `aicc harden controls`)."""

    admin_sources: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Addresses or networks your administrators connect from: SSH and every internal port "
        "(Prometheus, PostgreSQL ...) accept them. The installer host's own address is always added.",
    )
    egress_allow: list[EgressRule] = Field(
        default_factory=list,
        description="Outbound destinations beyond the site's hosts, the admin sources, the NTP servers and "
        "the hosts' DNS servers (all allowed already): SIP trunks, a mail relay. Everything else is dropped "
        "and counted.",
    )
    ssh_permit_root_login: Literal["no", "prohibit-password"] = Field(
        "prohibit-password",
        description="no: root may not log in over SSH at all (connect the installer as a sudo user first); "
        "prohibit-password: root with a key only.",
    )
    password_max_days: int = Field(90, ge=1, le=365, description="Days before a password must change.")
    password_min_length: int = Field(12, ge=8, le=64, description="Shortest password pam_pwquality accepts.")
    faillock_deny: int = Field(5, ge=1, le=20, description="Failed logins before an account is locked.")
    faillock_unlock_s: int = Field(
        1800, ge=60, le=86400, description="Seconds a locked account stays locked."
    )
    session_timeout_s: int = Field(
        900, ge=60, le=86400, description="Idle seconds before a shell ends (TMOUT)."
    )
    waivers: str = Field(
        "waivers.yml",
        description="The site's waiver file, relative to the site folder (control, hosts, reason, approver, "
        "expires): `aicc harden report` marks what a valid waiver covers as waived.",
    )


class SiteSettings(BaseSettings):
    """One site: the settings of every host the inventory lists."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    site_name: str = Field(
        "aicc", pattern=r"^[a-z0-9][a-z0-9-]{0,40}$", description="Short name of this site (lowercase)."
    )
    profile: Literal["lab", "single", "ha"] = Field(
        "single",
        description="lab: local test hosts (small sizing); single: one host holds every group; "
        "ha: every group on two or more hosts.",
    )
    timezone: str = Field("Asia/Shanghai", description="IANA time zone of the hosts.")
    locale: str = Field("en_US.UTF-8", description="System locale of the hosts.")
    ntp_servers: list[HostAddress] = Field(
        default_factory=list,
        description="NTP servers inside your network for chrony. Empty keeps Debian's defaults, which point "
        "at the internet pool: set your own for an offline site.",
    )
    packages: PackagesSettings = Field(default_factory=PackagesSettings)
    sip: SipSettings = Field(default_factory=SipSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    engines: EngineSettings = Field(default_factory=EngineSettings)
    voicebot: VoicebotSettings = Field(default_factory=VoicebotSettings)
    app: AppSettings = Field(default_factory=AppSettings)
    channels: ChannelsSettings = Field(default_factory=ChannelsSettings)
    hardening: HardeningSettings = Field(default_factory=HardeningSettings)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import available_timezones

        if v not in available_timezones():
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as Asia/Shanghai or UTC")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)


def load_settings(path: Path) -> SiteSettings:
    """Read and validate aicc.yml; every error names the file, the field, expected and found."""
    text = read_input_file(path, "settings file", missing_fix="run `aicc init --site DIR` to create a site")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InputError(f"not valid YAML: {getattr(exc, 'problem', exc)}", where=where) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping of settings at the top level", where=str(path))
    try:
        return SiteSettings(**data)
    except ValidationError as exc:
        raise InputError(_describe(exc, path), where=str(path), fix=_FIX) from None


_FIX = "correct the field in the file (or the AICC_* variable); `aicc init --help` shows every setting"


def _describe(exc: ValidationError, path: Path) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        source = _env_source([str(p) for p in err["loc"]])
        found = err.get("input")
        if err["type"] == "extra_forbidden":
            msg = f"unknown setting {loc!r}{source}"
            close = _close_field(err["loc"])
            if close:
                msg += f"; did you mean {close!r}?"
        elif err["type"] == "missing":
            msg = f"setting {loc!r} is required"
        else:
            msg = f"setting {loc!r}{source}: {err['msg'].removeprefix('Value error, ')}; found {found!r}"
        lines.append(msg)
    return "; ".join(lines)


def _env_source(loc: list[str]) -> str:
    """ " (from $AICC_...)" when the value came from the environment (a list's item from the list's)."""
    for n in range(len(loc), 0, -1):
        name = ENV_PREFIX + "__".join(loc[:n]).upper()
        if name in os.environ:
            return f" (from ${name})"
    return ""


def _close_field(loc: tuple[int | str, ...]) -> str | None:
    import difflib

    model: Any = SiteSettings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return None
        model = field.annotation
    names = list(model.model_fields)
    match = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return ".".join([*map(str, loc[:-1]), match[0]]) if match else None


def render_commented_yaml(settings: SiteSettings) -> str:
    """aicc.yml with every field's description as a comment above it."""
    out = [
        "# aicc site settings. Every field is optional; shown here with its current value.",
        "# Environment variables override it: AICC_<FIELD>, nested with __ (AICC_SIP__UDP_PORT=5070).",
        "",
    ]
    _render_model(settings, out, indent=0)
    return "\n".join(out) + "\n"


# Sections `aicc init` writes commented out while they hold their defaults: each is off until the
# customer turns it on, and its lines then show what to fill in.
COMMENTED_OUT = frozenset({"channels"})


def _render_model(model: BaseModel, out: list[str], indent: int) -> None:
    pad = " " * indent
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if field.description:
            out.extend(f"{pad}# {line}" for line in textwrap.wrap(field.description, 100 - indent))
        if isinstance(value, BaseModel):
            doc = " ".join(line.strip() for line in (type(value).__doc__ or "").strip().splitlines())
            if doc and not field.description:
                out.extend(f"{pad}# {line}" for line in textwrap.wrap(doc, 100 - indent))
            body = [f"{pad}{name}:"]
            _render_model(value, body, indent + 2)
            if indent == 0 and name in COMMENTED_OUT and value == type(value)():
                body = ["#" + line if line else line for line in body]
            out.extend(body)
            out.append("")
        else:
            dumped = yaml.safe_dump(
                {name: value}, default_flow_style=False, allow_unicode=True, sort_keys=False
            )
            out.extend(pad + line for line in dumped.rstrip("\n").splitlines())


def settings_to_ansible_vars(settings: SiteSettings) -> dict[str, Any]:
    """The one mapping from site settings onto role variables (passed as extra vars)."""
    s = settings
    return {
        "aicc_site_name": s.site_name,
        "aicc_profile": s.profile,
        "common_timezone": s.timezone,
        "common_locale": s.locale,
        "common_ntp_servers": s.ntp_servers,
        "common_apt_source": s.packages.source,
        "common_apt_url": s.packages.url,
        "common_apt_suite": s.packages.suite,
        "common_apt_upgrade": s.packages.upgrade,
        "common_extra_packages": s.packages.extra,
        "common_node_exporter_port": s.monitoring.node_exporter_port,
        "common_journal_port": s.monitoring.journal_port,
        "kamailio_domain": s.sip.domain,
        "kamailio_udp_port": s.sip.udp_port,
        "kamailio_tls_port": s.sip.tls_port,
        "kamailio_wss_port": s.sip.wss_port,
        "kamailio_metrics_port": s.sip.metrics_port,
        "kamailio_shm_mb": s.sip.shm_mb,
        "kamailio_pkg_mb": s.sip.pkg_mb,
        "kamailio_children": s.sip.children,
        "kamailio_flood_limit": s.sip.flood_limit,
        "kamailio_flood_ban_s": s.sip.flood_ban_s,
        "kamailio_trusted_sources": [str(n) for n in s.sip.trusted_sources],
        "kamailio_service_numbers": s.sip.service_numbers,
        "rtpengine_port_min": s.media.port_min,
        "rtpengine_port_max": s.media.port_max,
        "rtpengine_delete_delay": s.media.delete_delay,
        "rtpengine_control_port": s.media.control_port,
        "rtpengine_metrics_port": s.media.metrics_port,
        "postgresql_db_name": s.database.name,
        "postgresql_port": s.database.port,
        "postgresql_max_connections": s.database.max_connections,
        "postgresql_wal_archive": s.database.wal_archive,
        "postgresql_exporter_port": s.database.exporter_port,
        "monitoring_scrape_interval_s": s.monitoring.scrape_interval_s,
        "monitoring_retention_days": s.monitoring.retention_days,
        "monitoring_prometheus_port": s.monitoring.prometheus_port,
        "monitoring_alertmanager_port": s.monitoring.alertmanager_port,
        "monitoring_grafana_port": s.monitoring.grafana_port,
        "monitoring_journal_port": s.monitoring.journal_port,
        "monitoring_journal_retention_days": s.monitoring.log_retention_days,
        "llm_engine": s.engines.llm,
        "llm_min_gpu_memory_gib": s.engines.min_gpu_memory_gib,
        "speech_engine": s.engines.speech,
        "llm_port": s.engines.llm_port,
        "speech_port": s.engines.speech_port,
        "voicebot_llm_port": s.engines.llm_port,
        "kamailio_voicebot_port": s.voicebot.sip_port,
        "voicebot_sip_port": s.voicebot.sip_port,
        "voicebot_sip_domain": s.sip.domain,
        "voicebot_rtp_port_min": s.voicebot.rtp_port_min,
        "voicebot_rtp_port_max": s.voicebot.rtp_port_max,
        "voicebot_max_calls": s.voicebot.max_calls,
        "voicebot_max_bot_calls": s.voicebot.max_bot_calls,
        "voicebot_metrics_port": s.voicebot.metrics_port,
        "voicebot_no_input_s": s.voicebot.no_input_s,
        "voicebot_max_call_s": s.voicebot.max_call_s,
        "voicebot_appliance_port": s.app.https_port,
        "voicebot_db_port": s.database.port,
        "voicebot_db_name": s.database.name,
        "appliance_https_port": s.app.https_port,
        "appliance_api_port": s.app.api_port,
        "appliance_api_metrics_port": s.app.api_metrics_port,
        "appliance_acd_metrics_port": s.app.acd_metrics_port,
        "appliance_session_ttl_s": s.app.session_ttl_s,
        "appliance_session_idle_s": s.app.session_idle_s,
        "appliance_login_max_failures": s.app.login_max_failures,
        "appliance_lockout_s": s.app.lockout_s,
        "appliance_transcript_retention_days": s.app.transcript_retention_days,
        "appliance_ticket_retention_days": s.app.ticket_retention_days,
        "appliance_chat_queue": s.app.chat_queue,
        "appliance_chat_first_reply_s": s.app.chat_first_reply_s,
        "appliance_db_port": s.database.port,
        "appliance_db_name": s.database.name,
        "appliance_wecom_enabled": s.channels.wecom.enabled,
        "appliance_wecom_corp_id": s.channels.wecom.corp_id,
        "appliance_wecom_api_base_url": s.channels.wecom.api_base_url,
        "appliance_wechat_oa_enabled": s.channels.wechat_oa.enabled,
        "appliance_wechat_oa_app_id": s.channels.wechat_oa.app_id,
        "appliance_wechat_oa_api_base_url": s.channels.wechat_oa.api_base_url,
        "appliance_email_enabled": s.channels.email.enabled,
        "appliance_email": s.channels.email.model_dump(exclude={"enabled"}),
        "hardening_admin_sources": [str(n) for n in s.hardening.admin_sources],
        "hardening_egress_allow": [
            {"to": str(r.to), "ports": r.ports, "proto": r.proto, "what": r.what}
            for r in s.hardening.egress_allow
        ],
        "hardening_ssh_permit_root_login": s.hardening.ssh_permit_root_login,
        "hardening_pass_max_days": s.hardening.password_max_days,
        "hardening_pwquality_minlen": s.hardening.password_min_length,
        "hardening_faillock_deny": s.hardening.faillock_deny,
        "hardening_faillock_unlock_s": s.hardening.faillock_unlock_s,
        "hardening_session_timeout_s": s.hardening.session_timeout_s,
    }
