"""Settings of the [app] host's services: /etc/aicc/app.yml, read by the API and the ACD.

Secrets are files named here (the database conninfo, the API secret key), never values in the YAML,
so the file can be shown and diffed freely.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aicc.appliance.documents import describe
from aicc.appliance.textfile import TextFileError, read_text_file

Port = Annotated[int, Field(ge=1, le=65535)]
MIN_SECRET_KEY_CHARS = 32


class ConfigError(Exception):
    """A settings or secret file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AcdSettings(_Strict):
    """Settings of the ACD service (appliance/acd); kept here so both services read one file."""

    registrations_table: str = Field(
        "kamailio.location",
        pattern=r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$",
        description="schema.table of Kamailio's registrations (usrloc db_mode); agents whose phone "
        "is not registered there get no offers",
    )
    registrations_poll_s: float = Field(2.0, gt=0, le=60, description="how often registrations are read")
    phone_grace_s: float = Field(
        15.0,
        ge=0,
        le=600,
        description="an agent whose phone stays unregistered this long is logged out (no offers "
        "meanwhile); a proxy restart or a page reload shorter than this leaves the agent's status alone",
    )
    tick_s: float = Field(0.5, gt=0, le=10, description="timer resolution: ring timeouts, overflow steps")
    gateway_timeout_s: float = Field(
        30, ge=5, le=3600, description="contacts of a gateway silent this long are abandoned"
    )
    result_timeout_s: float = Field(
        3.0, gt=0, le=60, description="how long a producer waits for a command's result"
    )
    timezone: str = Field(
        "UTC", description="the site's IANA time zone: 'today' of the live service-level figure"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import available_timezones

        if value not in available_timezones():
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Shanghai or UTC")
        return value


class ChannelSecrets:
    """A Tencent channel's three secrets (WeCom, the WeChat official account), read from their files.
    Never shown: repr hides them."""

    def __init__(self, secret: str, token: str, encoding_aes_key: str) -> None:
        self.secret = secret
        self.token = token
        self.encoding_aes_key = encoding_aes_key

    def __repr__(self) -> str:
        return f"{type(self).__name__}(secret=***, token=***, encoding_aes_key=***)"


WeComSecrets = ChannelSecrets


def _channel_secrets(
    section: str, secret_file: Path, token_file: Path, aes_key_file: Path, console: str
) -> ChannelSecrets:
    """The three secrets of app.yml's `section`; ConfigError naming the file when one is missing or
    empty, or the key is not 43 base64 characters."""
    key = _read_secret(aes_key_file, f"{section}.aes_key_file")
    if not re.fullmatch(r"[A-Za-z0-9+/]{43}", key):
        raise ConfigError(
            f"{aes_key_file} ({section}.aes_key_file): an EncodingAESKey is 43 characters of A-Z, "
            f"a-z, 0-9, + and /; this one has {len(key)}; copy it from the {console}"
        )
    secrets = ChannelSecrets(
        _read_secret(secret_file, f"{section}.secret_file"),
        _read_secret(token_file, f"{section}.token_file"),
        key,
    )
    for path, name, value in (
        (secret_file, "secret_file", secrets.secret),
        (token_file, "token_file", secrets.token),
    ):
        if not value:
            raise ConfigError(f"{path} ({section}.{name}): empty")
    return secrets


class WeComSettings(_Strict):
    """WeCom customer service (企业微信 微信客服, appliance/channels/wecom.py). The Secret, the callback
    Token and the EncodingAESKey are secrets: files named here, like every secret of app.yml."""

    enabled: bool = Field(False, description="off: /wecom/v1/callback answers 404 and nothing is sent")
    corp_id: str = Field(
        "",
        pattern=r"^([A-Za-z0-9_-]{1,64})?$",
        description="the corp id (企业ID, ww...): every callback must carry it as its receiveid",
    )
    secret_file: Path | None = Field(None, description="file holding the 微信客服 Secret (for access tokens)")
    token_file: Path | None = Field(None, description="file holding the callback Token (签名)")
    aes_key_file: Path | None = Field(
        None, description="file holding the callback EncodingAESKey (43 characters)"
    )
    api_base_url: str = Field(
        "https://qyapi.weixin.qq.com",
        pattern=r"^https?://[^\s/]+(:[0-9]+)?(/\S*)?$",
        description="WeCom's API; a site's egress proxy (or a test server) may stand in for it",
    )
    rate_messages: int = Field(
        20, ge=1, le=1000, description="messages a customer may send per rate_window_s"
    )
    rate_window_s: float = Field(60.0, gt=0, le=3600)
    send_attempts: int = Field(
        4, ge=1, le=10, description="tries of a reply on network errors, 5xx and -1 (busy) before it is dead"
    )
    retry_base_s: float = Field(1.0, gt=0, le=60, description="the first retry's wait; doubled each time")
    timeout_s: float = Field(10.0, gt=0, le=60, description="one request to WeCom's API at most")

    @model_validator(mode="after")
    def _complete(self) -> WeComSettings:
        if self.enabled:
            missing = [
                name
                for name in ("corp_id", "secret_file", "token_file", "aes_key_file")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"WeCom is enabled but {', '.join(missing)} not set")
        return self

    def secrets(self) -> ChannelSecrets:
        """The three secrets; ConfigError naming the file when one is missing or the key is not 43
        base64 characters."""
        assert self.secret_file and self.token_file and self.aes_key_file, "only when enabled"
        return _channel_secrets(
            "wecom", self.secret_file, self.token_file, self.aes_key_file, "WeCom console"
        )


class WeChatOaSettings(_Strict):
    """The WeChat official account (微信公众号, appliance/channels/wechat_oa.py): its followers' messages
    in safe mode (安全模式). The AppSecret, the server configuration's Token and its EncodingAESKey are
    secrets: files named here, like every secret of app.yml."""

    enabled: bool = Field(False, description="off: /wechat-oa/v1/callback answers 404 and nothing is sent")
    app_id: str = Field(
        "",
        pattern=r"^(wx[0-9A-Za-z]{16})?$",
        description="the account's AppID (开发者ID, wx + 16 characters): every message must carry it as its "
        "receiveid",
    )
    secret_file: Path | None = Field(
        None, description="file holding the AppSecret (开发者密码, for access tokens)"
    )
    token_file: Path | None = Field(None, description="file holding the server configuration's Token (令牌)")
    aes_key_file: Path | None = Field(
        None, description="file holding the EncodingAESKey (消息加解密密钥, 43 characters)"
    )
    api_base_url: str = Field(
        "https://api.weixin.qq.com",
        pattern=r"^https?://[^\s/]+(:[0-9]+)?(/\S*)?$",
        description="the official account's API; a site's egress proxy (or a test server) may stand in "
        "for it",
    )
    rate_messages: int = Field(
        20, ge=1, le=1000, description="messages a customer may send per rate_window_s"
    )
    rate_window_s: float = Field(60.0, gt=0, le=3600)
    send_attempts: int = Field(
        4, ge=1, le=10, description="tries of a reply on network errors, 5xx and -1 (busy) before it is dead"
    )
    retry_base_s: float = Field(1.0, gt=0, le=60, description="the first retry's wait; doubled each time")
    timeout_s: float = Field(10.0, gt=0, le=60, description="one request to the API at most")

    @model_validator(mode="after")
    def _complete(self) -> WeChatOaSettings:
        if self.enabled:
            missing = [
                name
                for name in ("app_id", "secret_file", "token_file", "aes_key_file")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"the WeChat official account is enabled but {', '.join(missing)} not set")
        return self

    def secrets(self) -> ChannelSecrets:
        """The three secrets; ConfigError naming the file when one is missing or the key is not 43
        base64 characters."""
        assert self.secret_file and self.token_file and self.aes_key_file, "only when enabled"
        return _channel_secrets(
            "wechat_oa",
            self.secret_file,
            self.token_file,
            self.aes_key_file,
            "official account's console (设置与开发 → 基本配置)",
        )


class EmailSettings(_Strict):
    """Email (appliance/channels/email.py): the site's support mailbox, read over IMAP (IDLE where the
    server offers it) and answered over SMTP submission, both with TLS verified against `ca_file` (or
    the system's CAs). The passwords are secrets: files named here, like every secret of app.yml."""

    enabled: bool = Field(False, description="off: the mailbox is not read and replies cannot be sent")
    address: str = Field(
        "",
        pattern=r"^([^@\s<>]{1,64}@[^@\s<>]{1,255})?$",
        description="the support address customers write to (replies go out From it)",
    )
    display_name: str = Field("", max_length=100, description="the name replies go out under")
    imap_host: str = Field("", pattern=r"^[A-Za-z0-9.:-]{0,253}$", description="the mail server's IMAP host")
    imap_port: Port = Field(993, description="IMAP over TLS (implicit TLS, RFC 8314)")
    imap_user: str = Field("", max_length=320, description="the mailbox's login (default: address)")
    imap_password_file: Path | None = Field(None, description="file holding the mailbox's password")
    folder: str = Field("INBOX", pattern=r"^[^\x00-\x1f\"\\]{1,200}$", description="the folder read")
    smtp_host: str = Field("", pattern=r"^[A-Za-z0-9.:-]{0,253}$", description="the SMTP submission host")
    smtp_port: Port = Field(587, description="submission port: 587 with STARTTLS, 465 with tls")
    smtp_security: Literal["starttls", "tls"] = Field(
        "starttls", description="starttls (port 587) or implicit tls (port 465); never plain text"
    )
    smtp_user: str = Field("", max_length=320, description="the submission login (default: imap_user)")
    smtp_password_file: Path | None = Field(
        None, description="file holding the submission password (default: imap_password_file)"
    )
    ca_file: Path | None = Field(
        None,
        description="PEM CA bundle the mail server's certificate is verified against (default: the "
        "system's CAs); verification is never off",
    )
    bot: bool = Field(
        False, description="the text bot answers email first; off: every email goes to the agents' queue"
    )
    max_message_bytes: int = Field(
        10 * 1024 * 1024,
        ge=64 * 1024,
        le=100 * 1024 * 1024,
        description="a larger email is refused (left in the mailbox, flagged, counted)",
    )
    idle_s: float = Field(
        60.0, ge=5, le=1500, description="IDLE is renewed this often (RFC 2177 asks for under 29 min)"
    )
    poll_s: float = Field(30.0, ge=1, le=3600, description="how often a server without IDLE is polled")
    rate_messages: int = Field(30, ge=1, le=10000, description="emails one sender may send per rate_window_s")
    rate_window_s: float = Field(3600.0, gt=0, le=86400)
    send_attempts: int = Field(
        5, ge=1, le=20, description="tries of a reply on network errors and 4xx before it is a dead letter"
    )
    retry_base_s: float = Field(5.0, gt=0, le=600, description="the first retry's wait; doubled each time")
    timeout_s: float = Field(30.0, gt=0, le=300, description="one IMAP command or SMTP exchange at most")

    @model_validator(mode="after")
    def _complete(self) -> EmailSettings:
        if self.enabled:
            missing = [
                name
                for name in ("address", "imap_host", "imap_password_file", "smtp_host")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"email is enabled but {', '.join(missing)} not set")
        return self

    @property
    def login(self) -> str:
        return self.imap_user or self.address

    @property
    def smtp_login(self) -> str:
        return self.smtp_user or self.login

    def passwords(self) -> tuple[str, str]:
        """The IMAP and the SMTP password; ConfigError naming the file when one is missing or empty."""
        assert self.imap_password_file is not None, "only when enabled"
        imap = _read_secret(self.imap_password_file, "email.imap_password_file")
        smtp_file = self.smtp_password_file or self.imap_password_file
        smtp = _read_secret(smtp_file, "email.smtp_password_file") if self.smtp_password_file else imap
        for path, value in ((self.imap_password_file, imap), (smtp_file, smtp)):
            if not value:
                raise ConfigError(f"{path} (email): empty")
        return imap, smtp


class AppConfig(_Strict):
    listen_host: str = Field("127.0.0.1", description="address uvicorn binds (nginx proxies to it)")
    listen_port: Port = 8010
    metrics_host: str = Field("127.0.0.1", description="address of both services' metrics listeners")
    api_metrics_port: Port = 9162
    acd_metrics_port: Port = 9163
    database_dsn_file: Path = Field(description="file holding the PostgreSQL conninfo of the app login")
    secret_key_file: Path = Field(description="file holding the site's api_secret_key (tokens' HMAC key)")
    public_url: str = Field(
        pattern=r"^https?://[^\s/]+(:[0-9]+)?(/\S*)?$",
        description="the appliance's address as users reach it, e.g. https://10.0.0.5 (used in links)",
    )
    session_ttl_s: int = Field(43200, ge=60, le=30 * 86400, description="a login session lasts this long")
    session_idle_s: int = Field(1800, ge=1, le=30 * 86400, description="an unused session ends after this")
    login_max_failures: int = Field(5, ge=1, le=100, description="wrong passwords in a row before lockout")
    lockout_s: int = Field(900, ge=1, le=86400, description="how long a user stays locked out")
    ip_max_failures: int = Field(20, ge=1, le=10000, description="failed logins per client address ...")
    ip_window_s: int = Field(300, ge=1, le=86400, description="... within this window before 429")
    acd: AcdSettings = Field(default_factory=AcdSettings)
    pool_min: int = Field(2, ge=0, le=100, description="database connections kept open")
    pool_max: int = Field(20, ge=1, le=500, description="database connections at most")
    sip_domain: str = Field(
        "aicc.local",
        pattern=r"^[A-Za-z0-9.-]{1,253}$",
        description="the SIP domain (digest realm) agents' phones register in (site setting sip.domain)",
    )
    sip_schema: str = Field(
        "kamailio", pattern=r"^[a-z_][a-z0-9_]*$", description="Kamailio's schema (its subscriber table)"
    )
    sip_ws_urls: list[Annotated[str, Field(pattern=r"^wss://[^\s/]+(:[0-9]+)?(/\S*)?$")]] = Field(
        default_factory=list,
        max_length=16,
        description="Kamailio's secure WebSocket URLs, one per SIP proxy: the browser softphones' servers",
    )
    sip_token_ttl_s: int = Field(
        900, ge=120, le=86400, description="a browser softphone's SIP credentials last this long"
    )
    ticket_escalation_interval_s: float = Field(
        30,
        ge=0,
        le=3600,
        description="how often the API checks open tickets' SLA and escalates warnings and breaches "
        "(one API host at a time); 0: this API process escalates nothing",
    )
    transcript_retention_days: int = Field(
        180,
        ge=1,
        le=3650,
        description="days call transcripts, the bot's tool calls, callers' numbers on call records and "
        "web-chat messages are kept; older ones are purged (PIPL Art. 19), and so are the name and "
        "identities of customers with no activity for as long. There is no 'keep for ever'",
    )
    ticket_retention_days: int = Field(
        1095,
        ge=30,
        le=3650,
        description="days a ticket is kept whole after it was last changed once closed (or resolved); "
        "then the customer's identities, the description, the subject and the comments' texts are "
        "purged, its figures and SLA history kept. 3 years by default: tickets are business records a "
        "customer may dispute; at least 30 days and at least transcript_retention_days",
    )
    retention_interval_s: float = Field(
        3600,
        ge=0,
        le=86400,
        description="how often the API purges what is past transcript_retention_days (one API host at a "
        "time, once per interval for the site); 0: this API process purges nothing on its own",
    )
    prometheus_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(:[0-9]+)?(/\S*)?$",
        description="the site's Prometheus, e.g. http://10.0.0.9:9090, which the operations page (/ops/) "
        "reads; none when the site has no [monitoring] host",
    )
    # Web chat (appliance/channels/webchat.py): the widget on the customer's own site talks to /chat/v1.
    webchat_keys: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{16,128}$")]] = Field(
        default_factory=list,
        max_length=32,
        description="widget keys (the script tag's data-key), one per customer site; none: web chat is "
        "off and /chat/v1 answers 404",
    )
    webchat_origins: list[Annotated[str, Field(pattern=r"^https?://[^\s/]+(:[0-9]+)?$")]] = Field(
        default_factory=list,
        max_length=64,
        description="origins (scheme://host[:port]) of the pages that embed the widget: the only ones "
        "allowed to open a chat session (CORS) and its WebSocket",
    )
    webchat_bot: str = Field(
        "retail", pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$", description="the bot that answers web chats first"
    )
    webchat_rate_messages: int = Field(
        5, ge=1, le=1000, description="messages a visitor may send per webchat_rate_window_s"
    )
    webchat_rate_window_s: float = Field(10.0, gt=0, le=3600)
    webchat_session_ttl_s: int = Field(
        43200, ge=60, le=30 * 86400, description="a visitor's chat token lasts this long"
    )
    # Text conversations routed by the ACD (appliance/api/chat_routing.py).
    chat_queue: str = Field(
        "chat",
        pattern=r"^([a-z0-9][a-z0-9_-]{0,40})?$",
        description="the ACD queue (channel chat) that text conversations handed to the agents join: "
        "the ACD offers each to an agent with chat capacity left; empty: not routed, agents take them "
        "from the desk's Chats tab",
    )
    chat_first_reply_s: int = Field(
        120,
        ge=0,
        le=3600,
        description="an agent who accepted a chat and has not replied within this many seconds loses "
        "it: it goes back to the queue, its wait counting from when it first joined; 0: never",
    )
    llm_urls: list[Annotated[str, Field(pattern=r"^https?://[^\s/]+(:[0-9]+)?(/\S*)?$")]] = Field(
        default_factory=list,
        max_length=16,
        description="OpenAI-compatible LLM servers of the [llm] hosts for the text bot; none: no bot, "
        "chats go straight to the agents' queue",
    )
    llm_model: str = Field("qwen2.5-1.5b-instruct", description="model name sent to the LLM servers")
    llm_timeout_s: float = Field(20.0, ge=1, le=120, description="a bot answer slower than this: handover")
    wecom: WeComSettings = Field(default_factory=WeComSettings)
    wechat_oa: WeChatOaSettings = Field(default_factory=WeChatOaSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)

    @model_validator(mode="after")
    def _consistent(self) -> AppConfig:
        if self.pool_min > self.pool_max:
            raise ValueError(f"pool_min ({self.pool_min}) is above pool_max ({self.pool_max})")
        if self.session_idle_s > self.session_ttl_s:
            raise ValueError(
                f"session_idle_s ({self.session_idle_s}) is above session_ttl_s ({self.session_ttl_s})"
            )
        if self.ticket_retention_days < self.transcript_retention_days:
            raise ValueError(
                f"ticket_retention_days ({self.ticket_retention_days}) is below transcript_retention_days "
                f"({self.transcript_retention_days}): a ticket outlives the transcripts of its case"
            )
        return self

    def database_dsn(self) -> str:
        text = _read_secret(self.database_dsn_file, "database_dsn_file")
        if not text:
            raise ConfigError(
                f"{self.database_dsn_file} (database_dsn_file): empty; write the conninfo there"
            )
        return text

    def secret_key(self) -> bytes:
        text = _read_secret(self.secret_key_file, "secret_key_file")
        if len(text) < MIN_SECRET_KEY_CHARS:
            raise ConfigError(
                f"{self.secret_key_file} (secret_key_file): the key has {len(text)} characters, expected "
                f"at least {MIN_SECRET_KEY_CHARS}; write the site's api_secret_key (secrets.yml) there"
            )
        return text.encode()


def _read_secret(path: Path, field: str) -> str:
    try:
        return read_text_file(path).strip()
    except TextFileError as exc:
        reason = "cannot read: not found" if exc.kind == "missing" else exc.reason
        raise ConfigError(f"{exc.where} ({field}): {reason}") from None


def load_config(path: Path) -> AppConfig:
    """Read and validate app.yml; every problem names the file and the field."""
    try:
        loaded = yaml.safe_load(read_text_file(path))
    except TextFileError as exc:
        raise ConfigError(f"{exc.where}: {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings; found {type(loaded).__name__}")
    try:
        return AppConfig.model_validate(loaded)
    except ValidationError as exc:
        problems = "; ".join(f"{field or '(top level)'}: {msg}" for field, msg in describe(exc))
        raise ConfigError(f"{path}: {problems}") from None
