"""Dashboards as data: one panel definition feeds the appliance's operations page (/ops/) and any
other renderer. Queries are PromQL against the site's Prometheus; the lab test runs every one of
them against the live Prometheus after a call, so a misspelled metric or an empty panel fails.

The operations page only ever runs these queries (by dashboard and panel id): the app never proxies
arbitrary PromQL from a browser.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Unit = Literal["short", "percent", "seconds", "ratio", "bytes", "mos", "per_second"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Text(_Strict):
    en: str
    zh: str


class Query(_Strict):
    expr: str
    # Series name shown in the legend: a str.format template over the series' labels ("{host}",
    # "{queue} {state}"; a label the series lacks reads as empty), or a fixed text without braces.
    legend: str = ""


class Panel(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    title: Text
    kind: Literal["timeseries", "stat"] = "timeseries"
    unit: Unit = "short"
    queries: list[Query] = Field(min_length=1)
    # For stat panels: the value turns red beyond this (above, or below when `lower_is_worse`).
    threshold: float | None = None
    lower_is_worse: bool = False


class Dashboard(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    title: Text
    panels: list[Panel] = Field(min_length=1)


def _t(en: str, zh: str) -> Text:
    return Text(en=en, zh=zh)


def _q(expr: str, legend: str = "") -> Query:
    return Query(expr=expr, legend=legend)


_STAGE_P95 = "histogram_quantile(0.95, sum by (le, stage) (rate(aicc_voice_stage_seconds_bucket[5m])))"

DASHBOARDS: tuple[Dashboard, ...] = (
    Dashboard(
        id="overview",
        title=_t("Overview", "总览"),
        panels=[
            Panel(
                id="calls_now",
                title=_t("Calls now", "当前通话"),
                kind="stat",
                queries=[_q("sum(aicc_voice_calls_active)")],
            ),
            Panel(
                id="waiting_now",
                title=_t("Waiting in queues", "排队中"),
                kind="stat",
                queries=[_q("sum(aicc_acd_contacts_waiting)")],
            ),
            Panel(
                id="service_level",
                title=_t("Service level today", "今日服务水平"),
                kind="stat",
                unit="percent",
                threshold=80,
                lower_is_worse=True,
                queries=[_q("100 * min(aicc_acd_service_level_ratio)")],
            ),
            Panel(
                id="slo_budget",
                title=_t("SLO error budget left", "SLO 剩余错误预算"),
                unit="percent",
                queries=[_q("100 * aicc_slo:error_budget_remaining:ratio", "{slo}")],
            ),
            Panel(
                id="calls_rate",
                title=_t("Calls finished per minute by outcome", "每分钟结束通话（按结果）"),
                queries=[
                    _q("sum by (outcome) (rate(aicc_voice_calls_finished_total[5m])) * 60", "{outcome}")
                ],
            ),
            Panel(
                id="containment",
                title=_t("Bot containment (calls not transferred)", "机器人独立解决率"),
                unit="percent",
                queries=[_q("100 * aicc:voice_containment:ratio_rate1h")],
            ),
        ],
    ),
    Dashboard(
        id="sip_media",
        title=_t("SIP and media quality", "SIP 与媒体质量"),
        panels=[
            Panel(
                id="invites",
                title=_t("INVITEs per second", "每秒 INVITE"),
                unit="per_second",
                queries=[_q("sum by (host) (rate(kamailio_core_rcv_requests_invite[5m]))", "{host}")],
            ),
            Panel(
                id="setup_success",
                title=_t("Call setup success", "呼叫建立成功率"),
                unit="percent",
                queries=[_q('100 * (1 - aicc_slo:sli_error:ratio_rate5m{slo="call-setup"})', "calls set up")],
            ),
            Panel(
                id="registrations",
                title=_t("Agent phones registered and browser connections", "已注册坐席话机与浏览器连接"),
                queries=[
                    _q("sum(kamailio_usrloc_registered_users)", "registered"),
                    _q("sum(kamailio_websocket_ws_current_connections)", "WebSocket"),
                ],
            ),
            Panel(
                id="rtp_sessions",
                title=_t("Media sessions", "媒体会话"),
                queries=[_q("sum by (host) (rtpengine_sessions)", "{host}")],
            ),
            Panel(
                id="mos",
                title=_t("Call MOS (p10 of calls ended)", "通话 MOS（第 10 百分位）"),
                unit="mos",
                queries=[_q("histogram_quantile(0.10, sum by (le) (rate(kamailio_call_mos_bucket[30m])))")],
            ),
            Panel(
                id="rtp_problems",
                title=_t("RTP problems at the gateway", "网关 RTP 异常"),
                unit="per_second",
                queries=[_q("sum by (kind) (rate(aicc_voice_rtp_problems_total[5m]))", "{kind}")],
            ),
        ],
    ),
    Dashboard(
        id="ai_latency",
        title=_t("AI latency by stage", "AI 各阶段延迟"),
        panels=[
            Panel(
                id="stage_p95",
                title=_t("Turn latency p95 by stage", "各阶段延迟 p95"),
                unit="seconds",
                queries=[_q(_STAGE_P95, "{stage}")],
            ),
            Panel(
                id="engine_errors",
                title=_t("Engine errors", "引擎错误"),
                unit="per_second",
                queries=[_q("sum by (engine) (rate(aicc_voice_engine_errors_total[5m]))", "{engine}")],
            ),
            Panel(
                id="llm_tokens",
                title=_t("LLM tokens generated per second", "LLM 每秒生成 token"),
                unit="per_second",
                # llama.cpp (embedded) or vLLM (GPU): whichever the site runs answers.
                queries=[
                    _q(
                        "sum by (host) (rate(llamacpp:tokens_predicted_total[5m])) "
                        "or sum by (host) (rate(vllm:generation_tokens_total[5m]))",
                        "{host}",
                    )
                ],
            ),
            Panel(
                id="llm_busy",
                title=_t("LLM requests running and waiting", "LLM 处理中与等待的请求"),
                queries=[
                    _q("sum(llamacpp:requests_processing) or sum(vllm:num_requests_running)", "running"),
                    _q("sum(llamacpp:requests_deferred) or sum(vllm:num_requests_waiting)", "waiting"),
                ],
            ),
        ],
    ),
    Dashboard(
        id="acd",
        title=_t("ACD and queues", "ACD 与队列"),
        panels=[
            Panel(
                id="waiting",
                title=_t("Waiting by queue", "各队列排队数"),
                queries=[_q("sum by (queue) (aicc_acd_contacts_waiting)", "{queue}")],
            ),
            Panel(
                id="longest_wait",
                title=_t("Longest wait by queue", "各队列最长等待"),
                unit="seconds",
                queries=[_q("max by (queue) (aicc_acd_longest_wait_seconds)", "{queue}")],
            ),
            Panel(
                id="agents",
                title=_t("Agents by state", "坐席状态"),
                queries=[_q("sum by (state) (aicc_acd_agents)", "{state}")],
            ),
            Panel(
                id="service_level_by_queue",
                title=_t("Service level today by queue", "各队列今日服务水平"),
                unit="percent",
                queries=[_q("100 * aicc_acd_service_level_ratio", "{queue}")],
            ),
        ],
    ),
    Dashboard(
        id="hosts",
        title=_t("Hosts", "主机"),
        panels=[
            Panel(
                id="cpu",
                title=_t("CPU busy", "CPU 使用率"),
                unit="percent",
                queries=[
                    _q('100 * (1 - avg by (host) (rate(node_cpu_seconds_total{mode="idle"}[5m])))', "{host}")
                ],
            ),
            Panel(
                id="memory",
                title=_t("Memory available", "可用内存"),
                unit="percent",
                queries=[_q("100 * node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", "{host}")],
            ),
            Panel(
                id="disk",
                title=_t("Disk space left (fullest filesystem)", "磁盘剩余（最满的文件系统）"),
                unit="percent",
                queries=[
                    _q(
                        '100 * min by (host) (node_filesystem_avail_bytes{fstype!~"tmpfs|ramfs"}'
                        ' / node_filesystem_size_bytes{fstype!~"tmpfs|ramfs"})',
                        "{host}",
                    )
                ],
            ),
            Panel(
                id="targets_up",
                title=_t("Scrape targets up", "采集目标在线"),
                queries=[_q("sum by (job) (up)", "{job}")],
            ),
        ],
    ),
    Dashboard(
        id="postgres",
        title=_t("PostgreSQL", "PostgreSQL"),
        panels=[
            Panel(
                id="connections",
                title=_t("Connections by database", "各数据库连接数"),
                queries=[_q("sum by (datname) (pg_stat_database_numbackends)", "{datname}")],
            ),
            Panel(
                id="commits",
                title=_t("Transactions per second", "每秒事务"),
                unit="per_second",
                queries=[_q("sum by (datname) (rate(pg_stat_database_xact_commit[5m]))", "{datname}")],
            ),
        ],
    ),
)


@cache
def panel_index() -> dict[tuple[str, str], Panel]:
    return {(d.id, p.id): p for d in DASHBOARDS for p in d.panels}


def all_queries() -> list[tuple[str, str]]:
    """(where, expr) for every query of every panel: what the lab test runs against Prometheus."""
    return [
        (f"dashboard {d.id} panel {p.id}", q.expr) for d in DASHBOARDS for p in d.panels for q in p.queries
    ]
