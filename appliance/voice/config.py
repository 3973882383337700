"""Gateway settings: /etc/aicc/voicebot.yml on a [voicebot] host (rendered by roles/voicebot),
overridable by AICC_VOICE_* environment variables. Secrets come from files, never from this file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Port = Annotated[int, Field(ge=1, le=65535)]


class ConfigError(Exception):
    pass


class EngineEndpoints(BaseModel):
    model_config = ConfigDict(extra="forbid")

    llm_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8081"],
        description="OpenAI-compatible LLM servers (llama-server or vLLM).",
    )
    llm_model: str = Field("qwen2.5-1.5b-instruct", description="Model name sent to the LLM server.")
    model_dir: Path = Field(
        Path("/var/cache/aicc/models"), description="The model store (aicc models fetch) holding the weights."
    )
    asr_threads: int = Field(2, ge=1, le=64)
    asr_beam_size: dict[Literal["en", "zh"], Annotated[int, Field(ge=1, le=10)]] = Field(
        default_factory=dict,
        description="Whisper beam width per language, over the engine's defaults (en 1: greedy is "
        "faster and was as right; zh 5: steadier on short Mandarin answers).",
    )


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sip_ip: str = Field("0.0.0.0", description="Address the SIP socket binds.")  # noqa: S104  # host firewall limits it
    sip_port: Port = Field(5080, description="SIP/UDP port Kamailio dispatches calls to.")
    advertised_ip: str = Field("127.0.0.1", description="Address written into Contact and SDP.")
    rtp_port_min: Port = Field(40000)
    rtp_port_max: Port = Field(40999)
    max_calls: int = Field(20, ge=1, le=5000, description="Concurrent calls; beyond it INVITEs get 503.")
    max_bot_calls: int | None = Field(
        None,
        ge=1,
        le=5000,
        description="Conversations with the bot at once; a call whose flow reaches a bot beyond it goes "
        "on at once to the bot node's transfer (the agents' queue), so callers wait for an agent rather "
        "than for a slow bot. None: only max_calls limits (it counts calls bridged to agents too).",
    )
    session_expires_s: int = Field(1800, ge=90, le=86400, description="RFC 4028 session interval.")
    min_se_s: int = Field(90, ge=90, le=86400)
    rtp_timeout_s: float = Field(30.0, ge=5, le=3600, description="No RTP this long ends the call.")
    max_call_s: float = Field(600.0, ge=10, le=86400, description="Maximum call length.")
    no_input_s: float = Field(8.0, ge=1, le=120, description="Silence before the bot re-prompts.")
    asr_timeout_s: float = Field(
        15.0, ge=1, le=120, description="A transcription slower than this: re-prompt."
    )
    llm_timeout_s: float = Field(20.0, ge=1, le=120, description="A plan slower than this: transfer.")
    jitter_depth: int = Field(3, ge=1, le=20, description="Jitter buffer depth in 20 ms packets.")
    max_agent_call_s: float = Field(
        14400.0,
        ge=60,
        le=86400,
        description="Maximum length of a call once it waits for or talks with an agent.",
    )
    early_asr_s: float = Field(
        0.2,
        ge=0,
        le=0.45,
        description="A pause this long in the caller's speech starts the transcription early, before "
        "the 0.5 s end-of-utterance silence; 0 turns it off (saves the CPU of the transcriptions "
        "thrown away when the caller goes on).",
    )
    hold_line: bool = Field(
        True,
        description="Say 'One moment, please.' as soon as a lookup is sure (the caller named an order "
        "number, or the streamed plan shows one), instead of silence until the answer.",
    )
    sip_domain: str = Field("aicc.local")
    proxy: str = Field("127.0.0.1:5060", description="Kamailio address for calls the gateway places.")
    name: str = Field(
        "", max_length=200, description="This gateway's name for the ACD (empty: advertised_ip:sip_port)."
    )
    public_url: str = Field(
        "",
        max_length=300,
        description="The appliance's URL (https://app-host): agents follow transcript links to it.",
    )
    spool_dir: Path | None = Field(
        None, description="Where call records, events and ACD commands wait while the database is away."
    )
    flows_refresh_s: float = Field(30.0, ge=1, le=3600, description="How often flows are re-read.")
    metrics_port: Port = Field(9161)
    metrics_ip: str = Field("0.0.0.0", description="Address of the metrics listener.")  # noqa: S104
    database_dsn_file: Path | None = Field(None, description="File holding the PostgreSQL conninfo (0600).")
    engines: EngineEndpoints = Field(default_factory=EngineEndpoints)
    mode: Literal["bot", "echo"] = Field("bot", description="echo: replace the bot by an echo (media tests).")

    @model_validator(mode="after")
    def _ports(self) -> GatewayConfig:
        if self.rtp_port_max - self.rtp_port_min < 3:
            raise ValueError("rtp_port_max must be at least 4 above rtp_port_min")
        return self

    @property
    def proxy_addr(self) -> tuple[str, int]:
        host, _, port = self.proxy.rpartition(":")
        return host, int(port)


def load_config(path: Path | None) -> GatewayConfig:
    data: dict[str, object] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping")
        data = loaded
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path or 'defaults'}: {errors}") from None
