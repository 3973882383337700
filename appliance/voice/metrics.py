"""Prometheus metrics of the voice gateway and bot. Labels are bounded sets (stage, outcome, tool,
engine, reason): never call ids or phone numbers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Label values known in advance get a series at start-up (0), so alerts and dashboards see the metric
# before the first event instead of "no data" (Prometheus' instrumentation guidance).
STAGES = ("vad", "asr", "llm_first_token", "tts_first_audio", "turn", "hold", "first_audio", "hold_silence")
ENGINES = ("asr", "llm", "tts", "vad", "bot")
TRANSFER_REASONS = ("requested", "misunderstood", "low_confidence", "engine_failure", "dtmf", "bots_busy")
OUTCOMES = ("resolved", "transferred", "abandoned", "failed")

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0)


class VoiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.active = Gauge("aicc_voice_calls_active", "Calls in progress on this gateway.", registry=r)
        self.bot_conversations = Gauge(
            "aicc_voice_bot_conversations",
            "Calls talking with the bot now (in a flow's bot node).",
            registry=r,
        )
        self.bot_places = Gauge(
            "aicc_voice_bot_places",
            "Bot conversations this gateway holds at once (voicebot max_bot_calls, else max_calls).",
            registry=r,
        )
        self.ready = Gauge(
            "aicc_voice_ready",
            "1 once the start-up warm-up is done (LLM prompt cached, prompts synthesised); calls are "
            "answered before that, only slower.",
            registry=r,
        )
        self.finished = Counter(
            "aicc_voice_calls_finished_total", "Finished calls by outcome.", ["outcome"], registry=r
        )
        self.rejected = Counter(
            "aicc_voice_calls_rejected_total",
            "Calls refused before answer, by reason.",
            ["reason"],
            registry=r,
        )
        self.setup = Histogram(
            "aicc_voice_call_setup_seconds",
            "INVITE received to 200 OK sent.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "aicc_voice_stage_seconds",
            "Bot turn latency by stage: vad (hang-over), asr "
            "(to final transcript), llm_first_token, tts_first_audio, turn (end of speech "
            "to the answer's first audio), hold (end of speech to the hold line, when one was said), "
            "first_audio (end of speech to the first audio the caller hears, hold line or answer), "
            "hold_silence (the longest silence between the hold line and the answer).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.barge_ins = Counter(
            "aicc_voice_barge_ins_total", "Caller speech that interrupted the bot.", registry=r
        )
        self.backchannels = Counter(
            "aicc_voice_backchannels_total",
            "Short caller sounds that paused the bot without interrupting it.",
            registry=r,
        )
        self.agent_legs = Counter(
            "aicc_voice_agent_legs_total",
            "Agents' phones rung for a caller waiting in a queue, by outcome (answered, no_answer, busy, "
            "rejected, unreachable).",
            ["outcome"],
            registry=r,
        )
        self.transfers = Counter(
            "aicc_voice_transfers_total", "Transfers to a human by reason.", ["reason"], registry=r
        )
        self.tool_calls = Counter(
            "aicc_voice_tool_calls_total", "Tool calls by tool and result.", ["tool", "result"], registry=r
        )
        self.tool_seconds = Histogram(
            "aicc_voice_tool_seconds", "Tool call duration.", ["tool"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.engine_errors = Counter(
            "aicc_voice_engine_errors_total", "Engine failures by engine.", ["engine"], registry=r
        )
        self.processor_errors = Counter(
            "aicc_voice_processor_errors_total", "Pipeline processor failures.", ["processor"], registry=r
        )
        self.sip_malformed = Counter(
            "aicc_voice_sip_malformed_total", "SIP messages rejected as malformed.", registry=r
        )
        self.rtp_packets = Counter(
            "aicc_voice_rtp_packets_total", "RTP packets by direction.", ["direction"], registry=r
        )
        self.rtp_problems = Counter(
            "aicc_voice_rtp_problems_total", "RTP packets late, lost or malformed.", ["kind"], registry=r
        )
        self.late_ticks = Counter(
            "aicc_voice_media_late_ticks_total",
            "Media clock ticks more than 20 ms late (an overloaded host).",
            registry=r,
        )
        self.low_confidence = Counter(
            "aicc_voice_low_confidence_total", "Caller turns below the ASR confidence threshold.", registry=r
        )
        self.early_transcripts = Counter(
            "aicc_voice_early_transcripts_total",
            "Transcriptions started at a pause in the caller's speech: used (the caller had finished) "
            "or not (the caller went on; the work was thrown away).",
            ["used"],
            registry=r,
        )

        for values, metric, label in (
            (STAGES, self.stage, "stage"),
            (ENGINES, self.engine_errors, "engine"),
            (TRANSFER_REASONS, self.transfers, "reason"),
            (OUTCOMES, self.finished, "outcome"),
        ):
            for value in values:
                metric.labels(**{label: value})

    def report(self, name: str, value: float, labels: dict[str, str]) -> None:
        """The pipeline's reporter: maps its events onto the metrics above."""
        if name == "stage_seconds":
            self.stage.labels(stage=labels["stage"]).observe(value)
        elif name == "barge_ins":
            self.barge_ins.inc()
        elif name == "backchannels":
            self.backchannels.inc()
        elif name == "transfers":
            self.transfers.labels(reason=labels.get("reason", "requested")).inc()
        elif name == "tool_calls":
            self.tool_calls.labels(tool=labels["tool"], result=labels["result"]).inc()
        elif name == "tool_seconds":
            self.tool_seconds.labels(tool=labels["tool"]).observe(value)
        elif name == "engine_errors":
            self.engine_errors.labels(engine=labels["engine"]).inc()
        elif name == "processor_errors":
            self.processor_errors.labels(processor=labels["processor"]).inc()
        elif name == "low_confidence":
            self.low_confidence.inc()
        elif name == "early_transcripts":
            self.early_transcripts.labels(used=labels["used"]).inc()
