"""Inventory groups: what each is for, what it needs, and which ports it listens on.

The one source of the README's hardware table, of preflight's minimums and of `aicc status`.
A host holding several groups needs the most CPU cores of any of them and the sum of RAM and disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from aicc.installer.settings import SiteSettings


@dataclass(frozen=True)
class GroupSpec:
    name: str
    purpose: str
    cpus: int
    ram_gib: float
    disk_gib: float
    lab_cpus: int
    lab_ram_gib: float
    lab_disk_gib: float
    required: bool = True


GROUPS: dict[str, GroupSpec] = {
    g.name: g
    for g in (
        GroupSpec("sip_proxy", "Kamailio SIP proxy (KEMI Python routing)", 2, 2, 10, 1, 0.25, 2),
        GroupSpec("media", "rtpengine media relay", 2, 2, 10, 1, 0.25, 1),
        GroupSpec("voicebot", "voice gateway and AI voice bot", 4, 4, 20, 1, 1, 2),
        GroupSpec("speech", "ASR/TTS: PaddleSpeech (GPU) or embedded CPU engines", 4, 8, 30, 1, 1.5, 3),
        GroupSpec("llm", "LLM: vLLM on a GPU, or llama.cpp on CPU", 4, 8, 40, 1, 2.5, 3),
        GroupSpec("app", "API, ACD, channels, workers", 4, 8, 40, 1, 1, 2),
        GroupSpec("db", "PostgreSQL 15", 4, 8, 100, 1, 0.5, 2),
        GroupSpec("monitoring", "Prometheus, Alertmanager, Grafana", 2, 4, 50, 1, 0.5, 2),
    )
}


@dataclass(frozen=True)
class Listener:
    port: int
    proto: str  # tcp or udp
    process: str  # the process that owns it once installed
    what: str
    public: bool = False  # phones, trunks and browsers reach it; otherwise only the site's hosts
    # Its service is installed only where the site provides it (Grafana: a .deb in the bundle): the
    # port is opened and must be free, but nothing need listen on it.
    optional: bool = False


def listeners(group: str, settings: SiteSettings) -> list[Listener]:
    """Ports a host of this group needs free before install (or held by the named process after)."""
    s = settings
    table: dict[str, list[Listener]] = {
        "sip_proxy": [
            Listener(s.sip.udp_port, "udp", "kamailio", "SIP/UDP", public=True),
            Listener(s.sip.udp_port, "tcp", "kamailio", "SIP/TCP", public=True),
            Listener(s.sip.tls_port, "tcp", "kamailio", "SIP/TLS", public=True),
            Listener(s.sip.wss_port, "tcp", "kamailio", "SIP/WSS", public=True),
            Listener(s.sip.metrics_port, "tcp", "kamailio", "metrics"),
        ],
        "media": [
            Listener(s.media.control_port, "udp", "rtpengine", "rtpengine ng control"),
            Listener(s.media.metrics_port, "tcp", "rtpengine", "rtpengine metrics"),
        ],
        "llm": [Listener(s.engines.llm_port, "tcp", "llama-server", "LLM API (llama.cpp; vLLM on a GPU)")],
        "speech": [Listener(s.engines.speech_port, "tcp", "python", "ASR/TTS server")],
        "voicebot": [
            Listener(s.voicebot.sip_port, "udp", "python", "voice gateway SIP/UDP"),
            Listener(s.voicebot.metrics_port, "tcp", "python", "voice gateway metrics"),
        ],
        # The API itself listens on 127.0.0.1 behind nginx: not a host listener.
        "app": [
            Listener(s.app.https_port, "tcp", "nginx", "appliance HTTPS (nginx)", public=True),
            Listener(s.app.api_metrics_port, "tcp", "python", "API metrics"),
            Listener(s.app.acd_metrics_port, "tcp", "python", "ACD metrics"),
        ],
        "db": [
            Listener(s.database.port, "tcp", "postgres", "PostgreSQL"),
            Listener(s.database.exporter_port, "tcp", "prometheus-post", "postgres_exporter"),
        ],
        "monitoring": [
            Listener(s.monitoring.prometheus_port, "tcp", "prometheus", "Prometheus"),
            Listener(s.monitoring.alertmanager_port, "tcp", "prometheus-aler", "Alertmanager"),
            # Only where the site's package source carries a grafana .deb (the monitoring role).
            Listener(s.monitoring.grafana_port, "tcp", "grafana", "Grafana (HTTPS)", optional=True),
            # Socket-activated: systemd holds the socket too; ss names systemd-journal-remote first.
            Listener(s.monitoring.journal_port, "tcp", "systemd-journal", "systemd-journal-remote"),
        ],
    }
    return table.get(group, [])


def common_listeners(settings: SiteSettings) -> list[Listener]:
    return [Listener(settings.monitoring.node_exporter_port, "tcp", "prometheus-node", "node_exporter")]


def firewall_rules(settings: SiteSettings) -> dict[str, object]:
    """The hardening role's inbound table (per group; "all" for every host), its egress by source
    port (replies that leave from a service's own port to phones and trunks anywhere), and the URLs
    per group a host may reach (the enabled messaging channels' APIs, from the [app] hosts).

    Public ports face phones, trunks and browsers; every other port only the site's own hosts and the
    admin sources."""
    s = settings

    def rule(ports: str, proto: str, scope: str, what: str) -> dict[str, str]:
        return {"ports": ports, "proto": proto, "scope": scope, "what": what}

    inbound: dict[str, list[dict[str, str]]] = {
        group: [
            rule(str(x.port), x.proto, "public" if x.public else "site", x.what) for x in listeners(group, s)
        ]
        for group in GROUPS
    }
    inbound["all"] = [rule(str(x.port), x.proto, "site", x.what) for x in common_listeners(s)]
    inbound["media"].append(rule(f"{s.media.port_min}-{s.media.port_max}", "udp", "public", "RTP/RTCP media"))
    inbound["voicebot"].append(
        rule(f"{s.voicebot.rtp_port_min}-{s.voicebot.rtp_port_max}", "udp", "site", "voice gateway RTP")
    )
    egress = {
        "sip_proxy": [{"sports": str(s.sip.udp_port), "proto": "udp", "what": "SIP to phones and trunks"}],
        "media": [
            {"sports": f"{s.media.port_min}-{s.media.port_max}", "proto": "udp", "what": "RTP to callers"}
        ],
    }
    # The messaging channels' servers (APIs, mail servers), from the [app] hosts only (the role allows a
    # URL's host when it is an address, and warns about a name).
    urls = {
        "app": [
            {"url": url, "what": f"channels.{name}"}
            for name, c in s.channels.enabled()
            for url in c.endpoints()
        ]
    }
    return {
        "hardening_inbound": inbound,
        "hardening_egress_by_group": egress,
        "hardening_egress_urls_by_group": urls,
    }


@dataclass(frozen=True)
class Minimum:
    cpus: int
    ram_gib: float
    disk_gib: float


def host_minimum(groups: list[str], lab: bool) -> Minimum:
    specs = [GROUPS[g] for g in groups if g in GROUPS]
    if not specs:
        return Minimum(1, 0.5, 2)
    if lab:
        return Minimum(
            max(s.lab_cpus for s in specs),
            sum(s.lab_ram_gib for s in specs),
            sum(s.lab_disk_gib for s in specs),
        )
    return Minimum(max(s.cpus for s in specs), sum(s.ram_gib for s in specs), sum(s.disk_gib for s in specs))


# Services per group, for `aicc status`: (systemd unit, Debian package giving the version).
SERVICES: dict[str, list[tuple[str, str]]] = {
    "sip_proxy": [("kamailio", "kamailio"), ("pgbouncer", "pgbouncer")],
    "media": [("rtpengine-daemon", "rtpengine-daemon")],
    "voicebot": [("aicc-voicebot", "python3-venv")],
    "app": [("nginx", "nginx-light"), ("aicc-api", "python3-venv"), ("aicc-acd", "python3-venv")],
    "db": [
        ("postgresql@15-main", "postgresql-15"),
        ("prometheus-postgres-exporter", "prometheus-postgres-exporter"),
    ],
    "monitoring": [("prometheus", "prometheus"), ("prometheus-alertmanager", "prometheus-alertmanager")],
}
COMMON_SERVICES: list[tuple[str, str]] = [
    ("prometheus-node-exporter", "prometheus-node-exporter"),
    ("ssh", "openssh-server"),
]
