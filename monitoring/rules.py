"""aicc's alerting and recording rules, one group per component, in the monitoring-mixins style.

Every alert carries its promtool cases (a series that fires it and a normal one that does not);
monitoring/render.py writes the rule files and the promtool test file from these definitions and
from the SLOs in monitoring/slos/. Each alert has a section in monitoring/runbook.md.

Series in the cases use promtool's expanding notation: '0+10x60' is 0, 10, 20, ... for 60 steps of
one minute. Every scrape target carries a `host` label (the inventory name) set by Prometheus.
"""

from __future__ import annotations

from aicc.monitoring.model import Alert, AlertCase, Group, Record, Severity

NODE = 'job="node",host="lab1",instance="10.0.0.1:9100"'
_FS = f'{NODE},mountpoint="/",fstype="ext4",device="/dev/sda1"'


def _up(job: str, port: int, value: str) -> dict[str, str]:
    return {f'up{{job="{job}",host="lab1",instance="10.0.0.1:{port}"}}': value}


def _down_alert(name: str, job: str, port: int, what: str, severity: Severity = "critical") -> Alert:
    labels = {"job": job, "host": "lab1", "instance": f"10.0.0.1:{port}"}
    return Alert(
        name=name,
        expr=f'up{{job="{job}"}} == 0',
        **{"for": "1m"},
        severity=severity,
        summary=f"{what} on {{{{ $labels.host }}}} does not answer.",
        description=(
            f"Prometheus has not scraped {what} ({{{{ $labels.instance }}}}) for a minute: the service "
            "is stopped, crashed or unreachable."
        ),
        cases=[
            AlertCase(series=_up(job, port, "1 1 0x10"), at="8m", fires=True, labels=labels),
            AlertCase(series=_up(job, port, "1x10"), at="8m", fires=False),
        ],
    )


HOSTS = Group(
    name="aicc-hosts",
    rules=[
        Alert(
            name="AiccHostDown",
            expr='up{job="node"} == 0',
            **{"for": "2m"},
            severity="critical",
            summary="Host {{ $labels.host }} is down.",
            description=(
                "node_exporter on {{ $labels.host }} has not answered for 2 minutes: the host is off, "
                "unreachable or its firewall drops the monitoring host. Alerts of the services on this "
                "host are silenced while this fires."
            ),
            cases=[
                AlertCase(
                    series=_up("node", 9100, "1 1 0x10"),
                    at="8m",
                    fires=True,
                    labels={"job": "node", "host": "lab1", "instance": "10.0.0.1:9100"},
                ),
                AlertCase(series=_up("node", 9100, "1x10"), at="8m", fires=False),
            ],
        ),
        Alert(
            name="AiccTargetDown",
            expr='up{job!~"node|kamailio|rtpengine|aicc_voicebot|aicc_acd|postgres"} == 0',
            **{"for": "5m"},
            severity="warning",
            summary="{{ $labels.job }} on {{ $labels.host }} does not answer scrapes.",
            description=(
                "Prometheus has not scraped {{ $labels.job }} at {{ $labels.instance }} for 5 minutes. "
                "Services with their own alert (SIP proxy, media relay, voice gateway, ACD, "
                "PostgreSQL) are left out here."
            ),
            cases=[
                AlertCase(
                    series=_up("aicc_api", 9162, "0x10"),
                    at="8m",
                    fires=True,
                    labels={"job": "aicc_api", "host": "lab1", "instance": "10.0.0.1:9162"},
                ),
                AlertCase(series=_up("kamailio", 9151, "0x10"), at="8m", fires=False),
            ],
        ),
        Alert(
            name="AiccHostFilesystemAlmostFull",
            expr=(
                'node_filesystem_avail_bytes{fstype!~"tmpfs|ramfs"}'
                " / node_filesystem_size_bytes < 0.05 and node_filesystem_readonly == 0"
            ),
            **{"for": "5m"},
            severity="critical",
            summary="{{ $labels.mountpoint }} on {{ $labels.host }} is almost full.",
            description=(
                "Less than 5 % of {{ $labels.mountpoint }} is free ({{ $value | humanizePercentage }}). "
                "PostgreSQL stops writing, call recordings and logs are lost when it fills."
            ),
            cases=[
                AlertCase(
                    series={
                        f"node_filesystem_avail_bytes{{{_FS}}}": "3x20",
                        f"node_filesystem_size_bytes{{{_FS}}}": "100x20",
                        f"node_filesystem_readonly{{{_FS}}}": "0x20",
                    },
                    at="10m",
                    fires=True,
                    labels={
                        "job": "node",
                        "host": "lab1",
                        "instance": "10.0.0.1:9100",
                        "mountpoint": "/",
                        "fstype": "ext4",
                        "device": "/dev/sda1",
                    },
                ),
                AlertCase(
                    series={
                        f"node_filesystem_avail_bytes{{{_FS}}}": "30x20",
                        f"node_filesystem_size_bytes{{{_FS}}}": "100x20",
                        f"node_filesystem_readonly{{{_FS}}}": "0x20",
                    },
                    at="10m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccHostMemoryLow",
            expr="node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes < 0.1",
            **{"for": "15m"},
            severity="warning",
            summary="Host {{ $labels.host }} has less than 10 % memory available.",
            description=(
                "Available memory is {{ $value | humanizePercentage }} of the total. The kernel's OOM "
                "killer may stop the LLM or the speech engines next."
            ),
            cases=[
                AlertCase(
                    series={
                        f"node_memory_MemAvailable_bytes{{{NODE}}}": "5x30",
                        f"node_memory_MemTotal_bytes{{{NODE}}}": "100x30",
                    },
                    at="20m",
                    fires=True,
                    labels={"job": "node", "host": "lab1", "instance": "10.0.0.1:9100"},
                ),
                AlertCase(
                    series={
                        f"node_memory_MemAvailable_bytes{{{NODE}}}": "50x30",
                        f"node_memory_MemTotal_bytes{{{NODE}}}": "100x30",
                    },
                    at="20m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccHostCpuSaturated",
            expr='1 - avg without (cpu, mode) (rate(node_cpu_seconds_total{mode="idle"}[5m])) > 0.9',
            **{"for": "15m"},
            severity="warning",
            summary="Host {{ $labels.host }} has been more than 90 % busy for 15 minutes.",
            description=(
                "CPU use is {{ $value | humanizePercentage }}. On media and voice bot hosts this shows "
                "as late media ticks, choppy audio and slow bot answers before anything fails."
            ),
            cases=[
                AlertCase(
                    series={f'node_cpu_seconds_total{{{NODE},cpu="0",mode="idle"}}': "0+3x40"},
                    at="30m",
                    fires=True,
                    labels={"job": "node", "host": "lab1", "instance": "10.0.0.1:9100"},
                ),
                AlertCase(
                    series={f'node_cpu_seconds_total{{{NODE},cpu="0",mode="idle"}}': "0+50x40"},
                    at="30m",
                    fires=False,
                ),
            ],
        ),
    ],
)

_PG = 'job="postgres",host="lab1",instance="10.0.0.1:9187"'
_PG_LABELS = {"job": "postgres", "host": "lab1", "instance": "10.0.0.1:9187"}

POSTGRES = Group(
    name="aicc-postgres",
    rules=[
        _down_alert("AiccPostgresExporterDown", "postgres", 9187, "postgres_exporter", "warning"),
        Alert(
            name="AiccPostgresDown",
            expr="pg_up == 0",
            **{"for": "1m"},
            severity="critical",
            summary="PostgreSQL on {{ $labels.host }} is down.",
            description=(
                "postgres_exporter cannot connect to PostgreSQL. The API, the ACD and call records "
                "stop; calls already answered by the bot go on."
            ),
            cases=[
                AlertCase(series={f"pg_up{{{_PG}}}": "1 0x10"}, at="5m", fires=True, labels=_PG_LABELS),
                AlertCase(series={f"pg_up{{{_PG}}}": "1x10"}, at="5m", fires=False),
            ],
        ),
        Alert(
            name="AiccPostgresConnectionsHigh",
            expr=(
                "sum by (host) (pg_stat_database_numbackends)"
                " / max by (host) (pg_settings_max_connections) > 0.8"
            ),
            **{"for": "10m"},
            severity="warning",
            summary="PostgreSQL on {{ $labels.host }} uses more than 80 % of its connections.",
            description=(
                "{{ $value | humanizePercentage }} of max_connections are in use. New API requests "
                "fail with 'too many clients' when it reaches 100 %."
            ),
            cases=[
                AlertCase(
                    series={
                        f'pg_stat_database_numbackends{{{_PG},datname="aicc"}}': "90x20",
                        f"pg_settings_max_connections{{{_PG}}}": "100x20",
                    },
                    at="15m",
                    fires=True,
                    labels={"host": "lab1"},
                ),
                AlertCase(
                    series={
                        f'pg_stat_database_numbackends{{{_PG},datname="aicc"}}': "10x20",
                        f"pg_settings_max_connections{{{_PG}}}": "100x20",
                    },
                    at="15m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccPostgresWalArchivingFailing",
            expr="increase(pg_stat_archiver_failed_count[15m]) > 0",
            severity="warning",
            summary="PostgreSQL on {{ $labels.host }} fails to archive WAL.",
            description=(
                "The archive_command failed in the last 15 minutes. Point-in-time recovery has a gap "
                "and pg_wal grows until the disk fills."
            ),
            cases=[
                AlertCase(
                    series={f"pg_stat_archiver_failed_count{{{_PG}}}": "0 0 1 2 3 4 5 6 7 8"},
                    at="8m",
                    fires=True,
                    labels=_PG_LABELS,
                ),
                AlertCase(series={f"pg_stat_archiver_failed_count{{{_PG}}}": "0x20"}, at="8m", fires=False),
            ],
        ),
        Alert(
            name="AiccPostgresDeadlocks",
            expr="increase(pg_stat_database_deadlocks[15m]) > 2",
            severity="warning",
            summary="Deadlocks in database {{ $labels.datname }} on {{ $labels.host }}.",
            description=(
                "{{ $value }} deadlocks in 15 minutes: two writers wait on each other and one of their "
                "transactions is rolled back (an API request or an ACD tick fails and is retried)."
            ),
            cases=[
                AlertCase(
                    series={f'pg_stat_database_deadlocks{{{_PG},datname="aicc"}}': "0+1x20"},
                    at="16m",
                    fires=True,
                    labels={**_PG_LABELS, "datname": "aicc"},
                ),
                AlertCase(
                    series={f'pg_stat_database_deadlocks{{{_PG},datname="aicc"}}': "0x20"},
                    at="16m",
                    fires=False,
                ),
            ],
        ),
    ],
)

_KAM = 'job="kamailio",host="lab1",instance="10.0.0.1:9151"'
_KAM_LABELS = {"job": "kamailio", "host": "lab1", "instance": "10.0.0.1:9151"}
_TARGET = f'kamailio_dispatcher_target_up{{{_KAM},setid="1",target="sip:10.0.0.3:5080"}}'

SIP = Group(
    name="aicc-sip",
    rules=[
        Record(
            record="aicc:sip_invite_5xx:ratio_rate5m",
            expr=(
                "sum by (host) (rate(kamailio_core_rcv_replies_5xx_invite[5m]))"
                " / sum by (host) (rate(kamailio_core_rcv_requests_invite[5m]))"
            ),
        ),
        _down_alert("AiccSipProxyDown", "kamailio", 9151, "The SIP proxy (Kamailio)"),
        Alert(
            name="AiccSipInviteServerErrors",
            expr=(
                "aicc:sip_invite_5xx:ratio_rate5m > 0.05"
                " and sum by (host) (rate(kamailio_core_rcv_requests_invite[5m])) > 0.01"
            ),
            **{"for": "10m"},
            severity="warning",
            summary="More than 5 % of INVITEs through {{ $labels.host }} end in a 5xx.",
            description=(
                "{{ $value | humanizePercentage }} of the calls reaching the SIP proxy got a server "
                "error from the voice gateway or an agent's phone. Callers hear a failure tone."
            ),
            cases=[
                AlertCase(
                    series={
                        f"kamailio_core_rcv_requests_invite{{{_KAM}}}": "0+60x30",
                        f"kamailio_core_rcv_replies_5xx_invite{{{_KAM}}}": "0+12x30",
                    },
                    at="20m",
                    fires=True,
                    labels={"host": "lab1"},
                ),
                AlertCase(
                    series={
                        f"kamailio_core_rcv_requests_invite{{{_KAM}}}": "0+60x30",
                        f"kamailio_core_rcv_replies_5xx_invite{{{_KAM}}}": "0x30",
                    },
                    at="20m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccSipRequestsDropped",
            expr="increase(kamailio_core_drop_requests[10m]) > 20",
            severity="warning",
            summary="The SIP proxy on {{ $labels.host }} dropped {{ $value }} requests in 10 minutes.",
            description=(
                "Requests were dropped by the routing script (malformed, from a blocked source or over "
                "the flood limit). A scan or a misconfigured phone: see the proxy's log."
            ),
            cases=[
                AlertCase(
                    series={f"kamailio_core_drop_requests{{{_KAM}}}": "0+10x20"},
                    at="15m",
                    fires=True,
                    labels=_KAM_LABELS,
                ),
                AlertCase(series={f"kamailio_core_drop_requests{{{_KAM}}}": "0x20"}, at="15m", fires=False),
            ],
        ),
        Alert(
            name="AiccSipSharedMemoryLow",
            expr="kamailio_shmem_free_size / kamailio_shmem_total_size < 0.1",
            **{"for": "5m"},
            severity="warning",
            summary="The SIP proxy on {{ $labels.host }} has less than 10 % shared memory free.",
            description=(
                "Kamailio refuses new transactions and dialogs when its shared memory runs out. Raise "
                "kamailio_shm_mb for the site or find what holds memory (`kamcmd core.shmmem`)."
            ),
            cases=[
                AlertCase(
                    series={
                        f"kamailio_shmem_free_size{{{_KAM}}}": "5x20",
                        f"kamailio_shmem_total_size{{{_KAM}}}": "100x20",
                    },
                    at="10m",
                    fires=True,
                    labels=_KAM_LABELS,
                ),
                AlertCase(
                    series={
                        f"kamailio_shmem_free_size{{{_KAM}}}": "60x20",
                        f"kamailio_shmem_total_size{{{_KAM}}}": "100x20",
                    },
                    at="10m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccSipWebsocketFailures",
            expr=(
                "increase(kamailio_websocket_ws_failed_connections[10m])"
                " + increase(kamailio_websocket_ws_failed_handshakes[10m]) > 10"
            ),
            severity="warning",
            summary="Agents' browsers fail to connect to the SIP proxy on {{ $labels.host }}.",
            description=(
                "{{ $value }} secure WebSocket connections or handshakes failed in 10 minutes. Agent "
                "softphones cannot register: check the proxy's certificate and the nginx/TLS logs."
            ),
            cases=[
                AlertCase(
                    series={
                        f"kamailio_websocket_ws_failed_connections{{{_KAM}}}": "0+2x20",
                        f"kamailio_websocket_ws_failed_handshakes{{{_KAM}}}": "0x20",
                    },
                    at="15m",
                    fires=True,
                    labels=_KAM_LABELS,
                ),
                AlertCase(
                    series={
                        f"kamailio_websocket_ws_failed_connections{{{_KAM}}}": "0x20",
                        f"kamailio_websocket_ws_failed_handshakes{{{_KAM}}}": "0x20",
                    },
                    at="15m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccSipVoicebotTargetDown",
            expr="kamailio_dispatcher_target_up == 0",
            **{"for": "1m"},
            severity="critical",
            summary="The SIP proxy on {{ $labels.host }} sees voice gateway {{ $labels.target }} down.",
            description=(
                "Kamailio's dispatcher marked the voice gateway inactive (it did not answer OPTIONS). "
                "Calls go to the other gateways; with none left, callers get 503."
            ),
            cases=[
                AlertCase(
                    series={_TARGET: "1 0x10"},
                    at="5m",
                    fires=True,
                    labels={**_KAM_LABELS, "setid": "1", "target": "sip:10.0.0.3:5080"},
                ),
                AlertCase(
                    series={_TARGET: "1x10"},
                    at="5m",
                    fires=False,
                ),
            ],
        ),
    ],
)

_RTP = 'job="rtpengine",host="lab1",instance="10.0.0.1:2225"'
_RTP_LABELS = {"job": "rtpengine", "host": "lab1", "instance": "10.0.0.1:2225"}

MEDIA = Group(
    name="aicc-media",
    rules=[
        _down_alert("AiccMediaRelayDown", "rtpengine", 2225, "The media relay (rtpengine)"),
        Alert(
            name="AiccMediaPortsLow",
            expr="sum by (host) (rtpengine_ports_free) / sum by (host) (rtpengine_ports) < 0.1",
            **{"for": "5m"},
            severity="warning",
            summary="The media relay on {{ $labels.host }} has less than 10 % of its RTP ports free.",
            description=(
                "Each call holds ports for its media; when none are left new calls have no audio. "
                "Widen rtpengine's port range or add a media host."
            ),
            cases=[
                AlertCase(
                    series={
                        f"rtpengine_ports_free{{{_RTP}}}": "50x20",
                        f"rtpengine_ports{{{_RTP}}}": "1000x20",
                    },
                    at="10m",
                    fires=True,
                    labels={"host": "lab1"},
                ),
                AlertCase(
                    series={
                        f"rtpengine_ports_free{{{_RTP}}}": "900x20",
                        f"rtpengine_ports{{{_RTP}}}": "1000x20",
                    },
                    at="10m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccMediaOneWayCalls",
            expr=(
                "increase(rtpengine_one_way_sessions_total[30m])"
                " / increase(rtpengine_closed_sessions_total[30m]) > 0.1"
            ),
            **{"for": "10m"},
            severity="warning",
            summary="More than 10 % of calls on {{ $labels.host }} had audio one way only.",
            description=(
                "rtpengine saw media from one side only in {{ $value | humanizePercentage }} of the "
                "calls that ended: a NAT or firewall drops RTP, or a phone sends to the wrong address."
            ),
            cases=[
                AlertCase(
                    series={
                        f"rtpengine_one_way_sessions_total{{{_RTP}}}": "0+1x60",
                        f"rtpengine_closed_sessions_total{{{_RTP}}}": "0+4x60",
                    },
                    at="45m",
                    fires=True,
                    labels=_RTP_LABELS,
                ),
                AlertCase(
                    series={
                        f"rtpengine_one_way_sessions_total{{{_RTP}}}": "0x60",
                        f"rtpengine_closed_sessions_total{{{_RTP}}}": "0+4x60",
                    },
                    at="45m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccMediaQualityLow",
            expr="histogram_quantile(0.1, sum by (le, host) (rate(kamailio_call_mos_bucket[30m]))) < 3.5",
            **{"for": "15m"},
            severity="warning",
            summary="One call in ten through {{ $labels.host }} ends with a MOS under 3.5.",
            description=(
                "The 10th percentile of the calls' mean opinion score over 30 minutes is {{ $value }} "
                "(rtpengine's estimate from RTCP loss, jitter and round trip). Callers hear choppy or "
                "delayed audio: check the network between the phones and the media relay."
            ),
            cases=[
                AlertCase(
                    series={
                        f'kamailio_call_mos_bucket{{{_KAM},le="3.000000"}}': "0+1x60",
                        f'kamailio_call_mos_bucket{{{_KAM},le="4.400000"}}': "0+1x60",
                        f'kamailio_call_mos_bucket{{{_KAM},le="+Inf"}}': "0+1x60",
                    },
                    at="45m",
                    fires=True,
                    labels={"host": "lab1"},
                ),
                AlertCase(
                    series={
                        f'kamailio_call_mos_bucket{{{_KAM},le="4.000000"}}': "0x60",
                        f'kamailio_call_mos_bucket{{{_KAM},le="4.400000"}}': "0+1x60",
                        f'kamailio_call_mos_bucket{{{_KAM},le="+Inf"}}': "0+1x60",
                    },
                    at="45m",
                    fires=False,
                ),
            ],
        ),
    ],
)

_VB = 'job="aicc_voicebot",host="lab1",instance="10.0.0.1:9161"'
_VB_LABELS = {"job": "aicc_voicebot", "host": "lab1", "instance": "10.0.0.1:9161"}

VOICEBOT = Group(
    name="aicc-voicebot",
    rules=[
        Alert(
            name="AiccVoiceBotsFull",
            expr="aicc_voice_bot_conversations >= aicc_voice_bot_places",
            **{"for": "10m"},
            severity="warning",
            summary="Every bot place on {{ $labels.host }} has been taken for 10 minutes.",
            description=(
                "The gateway holds voicebot max_bot_calls conversations with the bot: new callers go "
                "straight to the agents' queue (transfers reason bots_busy). Add a voicebot host or "
                "engines, or raise max_bot_calls if bench/bot_capacity.py says the engines keep up."
            ),
            cases=[
                AlertCase(
                    series={
                        f"aicc_voice_bot_conversations{{{_VB}}}": "4x20",
                        f"aicc_voice_bot_places{{{_VB}}}": "4x20",
                    },
                    at="15m",
                    fires=True,
                    labels={"job": "aicc_voicebot", "host": "lab1", "instance": "10.0.0.1:9161"},
                ),
                AlertCase(
                    series={
                        f"aicc_voice_bot_conversations{{{_VB}}}": "4x8 3 4x11",
                        f"aicc_voice_bot_places{{{_VB}}}": "4x20",
                    },
                    at="15m",
                    fires=False,
                ),
            ],
        ),
        Record(
            record="aicc:voice_stage_seconds:p95_rate5m",
            expr="histogram_quantile(0.95, sum by (le, stage) (rate(aicc_voice_stage_seconds_bucket[5m])))",
        ),
        Record(
            record="aicc:voice_containment:ratio_rate1h",
            expr=(
                "1 - sum(increase(aicc_voice_transfers_total[1h]))"
                " / sum(increase(aicc_voice_calls_finished_total[1h]))"
            ),
        ),
        _down_alert("AiccVoicebotDown", "aicc_voicebot", 9161, "The voice gateway and bot"),
        Alert(
            name="AiccVoicebotNotReady",
            expr="aicc_voice_ready == 0",
            **{"for": "10m"},
            severity="warning",
            summary="The voice bot on {{ $labels.host }} has not finished warming up in 10 minutes.",
            description=(
                "It answers calls, but slowly: the LLM prompt is not cached or prompts are not "
                "synthesised. Check that the LLM and speech engines answer (`aicc status`)."
            ),
            cases=[
                AlertCase(
                    series={f"aicc_voice_ready{{{_VB}}}": "0x20"}, at="15m", fires=True, labels=_VB_LABELS
                ),
                AlertCase(series={f"aicc_voice_ready{{{_VB}}}": "0 0 1x20"}, at="15m", fires=False),
            ],
        ),
        Alert(
            name="AiccVoicebotEngineErrors",
            expr="sum by (host, engine) (increase(aicc_voice_engine_errors_total[10m])) > 3",
            severity="warning",
            summary="The {{ $labels.engine }} engine failed {{ $value }} times in 10 minutes.",
            description=(
                "Calls on {{ $labels.host }} hit engine failures (asr, llm, tts, vad or bot): callers "
                "hear an apology or are transferred. Check the engine's service and log."
            ),
            cases=[
                AlertCase(
                    series={f'aicc_voice_engine_errors_total{{{_VB},engine="llm"}}': "0+1x20"},
                    at="15m",
                    fires=True,
                    labels={"host": "lab1", "engine": "llm"},
                ),
                AlertCase(
                    series={f'aicc_voice_engine_errors_total{{{_VB},engine="llm"}}': "0x20"},
                    at="15m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccVoicebotMediaLate",
            expr="rate(aicc_voice_media_late_ticks_total[5m]) > 0.5",
            **{"for": "5m"},
            severity="warning",
            summary="The voice gateway on {{ $labels.host }} sends audio late.",
            description=(
                "More than one 20 ms media tick in 40 runs late: the host is overloaded and callers "
                "hear gaps. Check CPU use on the host and the number of calls."
            ),
            cases=[
                AlertCase(
                    series={f"aicc_voice_media_late_ticks_total{{{_VB}}}": "0+120x20"},
                    at="15m",
                    fires=True,
                    labels=_VB_LABELS,
                ),
                AlertCase(
                    series={f"aicc_voice_media_late_ticks_total{{{_VB}}}": "0+1x20"}, at="15m", fires=False
                ),
            ],
        ),
        Alert(
            name="AiccVoicebotContainmentLow",
            expr=(
                "aicc:voice_containment:ratio_rate1h < 0.3"
                " and sum(increase(aicc_voice_calls_finished_total[1h])) > 10"
            ),
            **{"for": "30m"},
            severity="info",
            summary="The bot resolved fewer than 3 calls in 10 without a human in the last hour.",
            description=(
                "Containment is {{ $value | humanizePercentage }}. Not an outage: a flow or a bot "
                "prompt that sends callers to agents, or a connector that fails. See the calls' "
                "transfer reasons in the call records."
            ),
            cases=[
                AlertCase(
                    series={
                        f'aicc_voice_calls_finished_total{{{_VB},outcome="completed"}}': "0+1x120",
                        f'aicc_voice_transfers_total{{{_VB},reason="requested"}}': "0+1x120",
                    },
                    at="100m",
                    fires=True,
                ),
                AlertCase(
                    series={
                        f'aicc_voice_calls_finished_total{{{_VB},outcome="completed"}}': "0+1x120",
                        f'aicc_voice_transfers_total{{{_VB},reason="requested"}}': "0+0.1x120",
                    },
                    at="100m",
                    fires=False,
                ),
            ],
        ),
    ],
)

_LLM = 'job="aicc_llm",host="lab1",instance="10.0.0.1:8090"'

LLM = Group(
    name="aicc-llm",
    rules=[
        _down_alert("AiccLlmDown", "aicc_llm", 8090, "The LLM engine"),
        Alert(
            name="AiccLlmRequestsWaiting",
            # llama.cpp (the embedded engine) and vLLM (the GPU engine) name their queue differently.
            expr="min_over_time(llamacpp:requests_deferred[5m]) > 0 "
            "or min_over_time(vllm:num_requests_waiting[5m]) > 0",
            **{"for": "5m"},
            severity="warning",
            summary="LLM requests on {{ $labels.host }} wait for a free slot.",
            description=(
                "Every slot of the LLM server has been busy for 10 minutes and {{ $value }} requests "
                "wait: bot answers are delayed by a whole answer's time. Add slots (memory allows?) "
                "or an LLM host."
            ),
            cases=[
                AlertCase(
                    series={f"llamacpp:requests_deferred{{{_LLM}}}": "2x20"},
                    at="15m",
                    fires=True,
                    labels={"job": "aicc_llm", "host": "lab1", "instance": "10.0.0.1:8090"},
                ),
                AlertCase(
                    series={f'vllm:num_requests_waiting{{{_LLM},model_name="qwen"}}': "3x20"},
                    at="15m",
                    fires=True,
                    labels={
                        "job": "aicc_llm",
                        "host": "lab1",
                        "instance": "10.0.0.1:8090",
                        "model_name": "qwen",
                    },
                ),
                AlertCase(
                    series={
                        f"llamacpp:requests_deferred{{{_LLM}}}": "0 1 0x20",
                        f'vllm:num_requests_waiting{{{_LLM},model_name="qwen"}}': "0x20",
                    },
                    at="15m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccLlmSlowFirstToken",
            expr="histogram_quantile(0.95, sum by (job, host, instance, le) "
            "(rate(vllm:time_to_first_token_seconds_bucket[5m]))) > 1.5",
            **{"for": "10m"},
            severity="warning",
            summary="The GPU LLM on {{ $labels.host }} takes {{ $value | humanizeDuration }} to its first "
            "token (p95).",
            description=(
                "vLLM's time to first token has been above 1.5 s at the 95th percentile for 10 minutes: "
                "callers wait that long in silence before every answer. The prompt cache is cold, "
                "prompts are long, or the GPU is shared: check `AiccLlmRequestsWaiting` and the GPU."
            ),
            cases=[
                AlertCase(
                    series={
                        f'vllm:time_to_first_token_seconds_bucket{{{_LLM},le="0.5"}}': "0+0x30",
                        f'vllm:time_to_first_token_seconds_bucket{{{_LLM},le="2.5"}}': "0+10x30",
                        f'vllm:time_to_first_token_seconds_bucket{{{_LLM},le="+Inf"}}': "0+10x30",
                    },
                    at="25m",
                    fires=True,
                    labels={"job": "aicc_llm", "host": "lab1", "instance": "10.0.0.1:8090"},
                ),
                AlertCase(
                    series={
                        f'vllm:time_to_first_token_seconds_bucket{{{_LLM},le="0.5"}}': "0+10x30",
                        f'vllm:time_to_first_token_seconds_bucket{{{_LLM},le="2.5"}}': "0+10x30",
                        f'vllm:time_to_first_token_seconds_bucket{{{_LLM},le="+Inf"}}': "0+10x30",
                    },
                    at="25m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccLlmPreempting",
            expr="sum by (job, host, instance) (rate(vllm:num_preemptions_total[10m])) > 0",
            **{"for": "10m"},
            severity="warning",
            summary="The GPU LLM on {{ $labels.host }} preempts requests: its KV cache is full.",
            description=(
                "vLLM has been evicting running requests for 10 minutes because the KV cache has no "
                "room: those answers are recomputed and late. Lower max_model_len or the concurrent "
                "calls, raise gpu_memory_utilization, or add a GPU."
            ),
            cases=[
                AlertCase(
                    series={f"vllm:num_preemptions_total{{{_LLM}}}": "0+2x30"},
                    at="25m",
                    fires=True,
                    labels={"job": "aicc_llm", "host": "lab1", "instance": "10.0.0.1:8090"},
                ),
                AlertCase(series={f"vllm:num_preemptions_total{{{_LLM}}}": "5x30"}, at="25m", fires=False),
            ],
        ),
    ],
)

_ACD = 'job="aicc_acd",host="lab1",instance="10.0.0.1:9163"'
_ACD_LABELS = {"job": "aicc_acd", "host": "lab1", "instance": "10.0.0.1:9163"}

ACD = Group(
    name="aicc-acd",
    rules=[
        _down_alert("AiccAcdDown", "aicc_acd", 9163, "The ACD"),
        Alert(
            name="AiccAcdNoLeader",
            expr='max(aicc_acd_leader) == 0 and count(up{job="aicc_acd"} == 1) > 0',
            **{"for": "2m"},
            severity="critical",
            summary="No ACD process is active.",
            description=(
                "ACD processes run but none holds the leader lock: no contact is routed to an agent. "
                "Check the ACD's log and its database connection."
            ),
            cases=[
                AlertCase(
                    series={f"aicc_acd_leader{{{_ACD}}}": "0x10", f"up{{{_ACD}}}": "1x10"},
                    at="5m",
                    fires=True,
                ),
                AlertCase(
                    series={f"aicc_acd_leader{{{_ACD}}}": "1x10", f"up{{{_ACD}}}": "1x10"},
                    at="5m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccQueueLongWait",
            expr="aicc_acd_longest_wait_seconds > 180",
            **{"for": "2m"},
            severity="warning",
            summary="A caller has waited more than 3 minutes in queue {{ $labels.queue }}.",
            description=(
                "The longest wait is {{ $value | humanizeDuration }}. Supervisors: more agents ready, "
                "or overflow to another queue."
            ),
            cases=[
                AlertCase(
                    series={f'aicc_acd_longest_wait_seconds{{{_ACD},queue="sales"}}': "0+30x20"},
                    at="15m",
                    fires=True,
                    labels={**_ACD_LABELS, "queue": "sales"},
                ),
                AlertCase(
                    series={f'aicc_acd_longest_wait_seconds{{{_ACD},queue="sales"}}': "20x20"},
                    at="15m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccQueueServiceLevelLow",
            expr="aicc_acd_service_level_ratio < 0.8",
            **{"for": "30m"},
            severity="info",
            summary="Queue {{ $labels.queue }} answered fewer than 80 % of today's contacts in target.",
            description=(
                "Today's service level is {{ $value | humanizePercentage }}. A staffing matter more "
                "than an outage: see the wallboard and the day's report."
            ),
            cases=[
                AlertCase(
                    series={f'aicc_acd_service_level_ratio{{{_ACD},queue="sales"}}': "0.5x60"},
                    at="45m",
                    fires=True,
                    labels={**_ACD_LABELS, "queue": "sales"},
                ),
                AlertCase(
                    series={f'aicc_acd_service_level_ratio{{{_ACD},queue="sales"}}': "0.9x60"},
                    at="45m",
                    fires=False,
                ),
            ],
        ),
    ],
)

_API = 'job="aicc_api",host="lab1",instance="10.0.0.1:9162",method="GET",route="/api/x"'
_API_5XX = f'aicc_api_requests_total{{{_API},status="5xx"}}'
_API_2XX = f'aicc_api_requests_total{{{_API},status="2xx"}}'
_API_TARGET = 'job="aicc_api",host="lab1",instance="10.0.0.1:9162"'

APP = Group(
    name="aicc-api",
    rules=[
        Alert(
            name="AiccApiServerErrors",
            expr=(
                'sum by (host) (rate(aicc_api_requests_total{status="5xx"}[5m]))'
                " / sum by (host) (rate(aicc_api_requests_total[5m])) > 0.05"
            ),
            **{"for": "10m"},
            severity="warning",
            summary="More than 5 % of API requests on {{ $labels.host }} fail with a server error.",
            description=(
                "{{ $value | humanizePercentage }} of requests end in 5xx: agents' pages and "
                "integrations see errors. The API's log names the route and the cause."
            ),
            cases=[
                AlertCase(
                    series={
                        _API_5XX: "0+30x30",
                        _API_2XX: "0+60x30",
                    },
                    at="20m",
                    fires=True,
                    labels={"host": "lab1"},
                ),
                AlertCase(
                    series={
                        _API_5XX: "0x30",
                        _API_2XX: "0+60x30",
                    },
                    at="20m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccTicketsSlaBreached",
            # max: every API host exposes the figures of its latest pass.
            expr="max(aicc_tickets_sla_breached) > 0",
            **{"for": "15m"},
            severity="warning",
            summary="Open tickets have breached their SLA.",
            description=(
                "{{ $value }} new or open tickets are past an SLA target they have not met, for 15 minutes "
                "now. The escalation watcher has notified their supervisors; the agent desktop's ticket "
                "list shows them in red (GET /api/tickets?sla=breached)."
            ),
            cases=[
                AlertCase(
                    series={f"aicc_tickets_sla_breached{{{_API_TARGET}}}": "0 0 2x30"},
                    at="25m",
                    fires=True,
                ),
                AlertCase(
                    # A breach answered within 15 minutes: no page.
                    series={f"aicc_tickets_sla_breached{{{_API_TARGET}}}": "0 0 1x10 0x20"},
                    at="25m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccRetentionPurgeOverdue",
            # max: every API host with the purge exposes the site's last success, read from the database.
            expr="time() - max(aicc_retention_last_success_timestamp_seconds) > 2 * 86400",
            **{"for": "30m"},
            severity="warning",
            summary="Personal data past its retention has not been purged for more than 2 days.",
            description=(
                "The last successful retention purge finished {{ $value | humanizeDuration }} ago: call "
                "transcripts and chat messages older than app.transcript_retention_days stay in the "
                "database (PIPL Art. 19). GET /api/retention lists the runs and their errors."
            ),
            cases=[
                AlertCase(
                    # the last success 2 days and 1 hour before the test's clock starts
                    series={f"aicc_retention_last_success_timestamp_seconds{{{_API_TARGET}}}": "-176400x60"},
                    at="45m",
                    fires=True,
                ),
                AlertCase(
                    # a day ago: the purge is late but not overdue
                    series={f"aicc_retention_last_success_timestamp_seconds{{{_API_TARGET}}}": "-86400x60"},
                    at="45m",
                    fires=False,
                ),
                AlertCase(
                    # overdue on one API host's stale view, but another host read a recent success
                    series={
                        f"aicc_retention_last_success_timestamp_seconds{{{_API_TARGET}}}": "-176400x60",
                        'aicc_retention_last_success_timestamp_seconds{job="aicc_api",host="lab2",'
                        'instance="10.0.0.2:9162"}': "0x60",
                    },
                    at="45m",
                    fires=False,
                ),
            ],
        ),
    ],
)

_NODE_LABELS = {"job": "node", "host": "lab1", "instance": "10.0.0.1:9100"}
_UP_NODE = f"up{{{NODE}}}"
_STARTED = "aicc_install_started_timestamp_seconds"
_SUCCEEDED = "aicc_install_success_timestamp_seconds"
_STARTED_AT = f"{_STARTED}{{{NODE}}}"
_SUCCEEDED_AT = f"{_SUCCEEDED}{{{NODE}}}"
# Scraped from the monitoring host's node_exporter (host="mon1"), about lab1's journal.
_JOURNAL_OF_LAB1 = (
    'aicc_journal_remote_last_write_timestamp_seconds{job="node",host="mon1",'
    'instance="10.0.0.9:9100",uploader="lab1"}'
)

CERTS = Group(
    name="aicc-site",
    rules=[
        Alert(
            name="AiccCertificateExpiringSoon",
            expr="(aicc_certificate_expiry_timestamp_seconds - time()) / 86400 < 30",
            severity="warning",
            summary="The {{ $labels.cert }} certificate on {{ $labels.host }} expires in less than 30 days.",
            description=(
                "TLS between the appliance's services, agents' browsers and SIP over WebSocket stops "
                "when it expires. Run `aicc install` to renew the site's host certificates."
            ),
            cases=[
                AlertCase(
                    series={f'aicc_certificate_expiry_timestamp_seconds{{{NODE},cert="host"}}': "864000x20"},
                    at="10m",
                    fires=True,
                    labels={"job": "node", "host": "lab1", "instance": "10.0.0.1:9100", "cert": "host"},
                ),
                AlertCase(
                    series={
                        f'aicc_certificate_expiry_timestamp_seconds{{{NODE},cert="host"}}': "31536000x20"
                    },
                    at="10m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccCertificateExpired",
            expr="aicc_certificate_expiry_timestamp_seconds - time() < 0",
            severity="critical",
            summary="The {{ $labels.cert }} certificate on {{ $labels.host }} has expired.",
            description="Peers refuse TLS to this host. Run `aicc install` to renew the site's certificates.",
            cases=[
                AlertCase(
                    series={f'aicc_certificate_expiry_timestamp_seconds{{{NODE},cert="host"}}': "60x20"},
                    at="10m",
                    fires=True,
                    labels={"job": "node", "host": "lab1", "instance": "10.0.0.1:9100", "cert": "host"},
                ),
                AlertCase(
                    series={
                        f'aicc_certificate_expiry_timestamp_seconds{{{NODE},cert="host"}}': "31536000x20"
                    },
                    at="10m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccBundleOld",
            expr="(time() - aicc_bundle_built_timestamp_seconds) / 86400 > 90",
            severity="warning",
            summary="{{ $labels.host }} runs from an offline bundle built more than 90 days ago.",
            description=(
                "Debian's security updates reach the hosts only through a newer bundle. Build one on a "
                "connected machine, verify and import it, and run `aicc install`."
            ),
            cases=[
                AlertCase(
                    # built 100 days before the test's clock starts
                    series={f"aicc_bundle_built_timestamp_seconds{{{NODE}}}": "-8640000x20"},
                    at="10m",
                    fires=True,
                    labels={"job": "node", "host": "lab1", "instance": "10.0.0.1:9100"},
                ),
                AlertCase(
                    series={f"aicc_bundle_built_timestamp_seconds{{{NODE}}}": "0x20"},
                    at="10m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccInstallIncomplete",
            # The site playbook notes its start on each host and, at its end, its success: a start
            # newer than the last success (or no success at all) for 2 hours is a run that died there.
            expr=(
                f"time() - {_STARTED} > 2 * 3600"
                f" and ({_STARTED} > {_SUCCEEDED} or {_STARTED} unless {_SUCCEEDED})"
            ),
            severity="warning",
            summary="The last `aicc install` on {{ $labels.host }} did not finish.",
            description=(
                "An install started on {{ $labels.host }} {{ $value | humanizeDuration }} ago and has "
                "not ended successfully there: the host may be half converged (a new configuration "
                "without its restart, a service stopped for an upgrade). The installer's log names "
                "the failed task; `aicc install --resume` continues from it."
            ),
            cases=[
                AlertCase(
                    # started 3 hours before the test's clock, last success 4 hours before
                    series={_STARTED_AT: "-10800x20", _SUCCEEDED_AT: "-14400x20"},
                    at="10m",
                    fires=True,
                    labels=_NODE_LABELS,
                ),
                AlertCase(
                    # a failed first install tried again and failed again: a start, never a success
                    series={_STARTED_AT: "-10800x20"},
                    at="10m",
                    fires=True,
                    labels=_NODE_LABELS,
                ),
                AlertCase(
                    # started 3 hours ago and finished
                    series={_STARTED_AT: "-10800x20", _SUCCEEDED_AT: "-9000x20"},
                    at="10m",
                    fires=False,
                ),
                AlertCase(
                    # a run in progress for 30 minutes
                    series={_STARTED_AT: "-1800x20", _SUCCEEDED_AT: "-86400x20"},
                    at="10m",
                    fires=False,
                ),
            ],
        ),
        Alert(
            name="AiccJournalUploadStale",
            # The monitoring host publishes, per inventory host, when its journal files under
            # /var/log/journal/remote were last written (label `uploader`: a `host` label written by
            # node_exporter would become exported_host); every host logs a heartbeat every 5
            # minutes, so 10 silent minutes are two heartbeats lost.
            expr=(
                "time() - max by (host) (label_replace("
                'aicc_journal_remote_last_write_timestamp_seconds, "host", "$1", "uploader", "(.+)"))'
                ' > 600 and on (host) up{job="node"} == 1'
            ),
            **{"for": "5m"},
            severity="warning",
            summary="{{ $labels.host }}'s journal has not reached the monitoring host for 15 minutes.",
            description=(
                "The newest entry from {{ $labels.host }} was written {{ $value | humanizeDuration }} "
                "ago (decades: nothing ever arrived) although the host is up: systemd-journal-upload "
                "there is stopped or cannot reach systemd-journal-remote. Its logs pile up locally (kept for "
                "common_journald_max_retention) and `aicc logs` does not show them."
            ),
            cases=[
                AlertCase(
                    series={_JOURNAL_OF_LAB1: "-1800x30", _UP_NODE: "1x30"},
                    at="10m",
                    fires=True,
                    labels={"host": "lab1"},
                ),
                AlertCase(
                    # the file is written every minute
                    series={_JOURNAL_OF_LAB1: "0+60x30", _UP_NODE: "1x30"},
                    at="10m",
                    fires=False,
                ),
                AlertCase(
                    # the host is down: AiccHostDown says so
                    series={_JOURNAL_OF_LAB1: "-1800x30", _UP_NODE: "0x30"},
                    at="10m",
                    fires=False,
                ),
            ],
        ),
    ],
)

GROUPS: tuple[Group, ...] = (HOSTS, POSTGRES, SIP, MEDIA, VOICEBOT, LLM, ACD, APP, CERTS)
