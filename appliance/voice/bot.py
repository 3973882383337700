"""Assembles one call's pipeline: VAD -> ASR -> barge-in -> timers -> dialogue -> sentences -> TTS ->
playback, or the echo pipeline that replaces the bot when only the media plane is measured."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aicc.appliance.calls.record import CallRecord
from aicc.appliance.connectors.base import Connector
from aicc.appliance.voice.asr import ASRProcessor
from aicc.appliance.voice.bargein import BargeInProcessor
from aicc.appliance.voice.dialogue import PROMPTS, DialogueManager, DialogueParams, plan_prefix
from aicc.appliance.voice.echo import EchoProcessor
from aicc.appliance.voice.numbers import DigitNormalizer
from aicc.appliance.voice.pipeline import FrameProcessor, Pipeline
from aicc.appliance.voice.playback import Playback
from aicc.appliance.voice.sentences import SentenceAggregator
from aicc.appliance.voice.timers import CallTimersProcessor
from aicc.appliance.voice.toolargs import plan_schema
from aicc.appliance.voice.tts import TTSProcessor
from aicc.appliance.voice.vad import EchoReference, VADParams, VADProcessor
from aicc.models.engines.base import ASREngine, ChatMessage, Language, LLMClient, TTSEngine, VADEngine

log = logging.getLogger(__name__)


@dataclass
class BotEngines:
    llm: LLMClient
    asr: ASREngine
    tts: TTSEngine
    vad: Callable[[], VADEngine]  # one per call: a VAD keeps state between frames
    connector: Connector
    # Prompt audio shared by all calls, keyed by (text, language), at the TTS rate: synthesised once
    # per process (warm_prompts at start-up), resampled to each call's codec rate by its playback.
    prompt_cache: dict[tuple[str, str], bytes] = field(default_factory=dict)

    async def warm_llm(self) -> None:
        """One plan request so the LLM server caches the (fixed) system prompt and schema prefix:
        the first caller then does not pay for evaluating it."""
        tools = self.connector.tools()
        messages = [*plan_prefix(tools, self.connector.plan_examples()), ChatMessage("user", "hello")]
        await self.llm.complete_json(messages, plan_schema(tools), max_tokens=64)

    async def warm_prompts(self) -> None:
        """Synthesise every prompt of both languages; run in the background when the gateway starts.

        A generous timeout: the first synthesis loads the voice, on a busy host that takes a while."""
        try:
            await self.warm_llm()
        except Exception as exc:  # the bot still works, the first plan is just slower
            log.warning("warming the LLM prompt cache failed: %s", exc)
        warm = TTSProcessor(self.tts, self.tts.sample_rate, timeout_s=120.0)
        lines = DialogueManager.prewarm_lines("en") + DialogueManager.prewarm_lines("zh")
        for text, lang in dict.fromkeys(lines):
            if (text, lang) not in self.prompt_cache:
                self.prompt_cache[(text, lang)] = await warm.synthesize_all(text, lang)


@dataclass
class BotSession:
    pipeline: Pipeline
    playback: Playback
    tts: TTSProcessor | None

    async def prepare(self, language: Language, engines: BotEngines | None) -> None:
        """Have the notice and greeting audio ready before the call is answered (synthesised now if the
        start-up warm-up has not made them yet); every other prompt already made is shared too."""
        if self.tts is None or engines is None:
            return
        needed = [(PROMPTS[k][language], language) for k in ("notice", "greeting")]
        missing = [line for line in needed if line not in engines.prompt_cache]
        await self.tts.prewarm(missing)
        engines.prompt_cache.update(self.tts.cache)
        self.tts.cache.update(engines.prompt_cache)
        self.tts.fallback = {"en": PROMPTS["engine_trouble"]["en"], "zh": PROMPTS["engine_trouble"]["zh"]}


def build_bot(
    engines: BotEngines,
    record: CallRecord,
    out_rate: int,
    params: DialogueParams,
    *,
    no_input_s: float,
    max_call_s: float,
    asr_timeout_s: float = 15.0,
    vad: VADParams | None = None,
) -> BotSession:
    echo = EchoReference()
    playback = Playback(out_rate, echo)
    tts = TTSProcessor(engines.tts, engines.tts.sample_rate)  # playback resamples to the codec rate
    procs: list[FrameProcessor] = [
        VADProcessor(engines.vad(), echo, vad),
        ASRProcessor(engines.asr, timeout_s=asr_timeout_s),
        DigitNormalizer(),
        BargeInProcessor(playback),
        CallTimersProcessor(no_input_s=no_input_s, max_call_s=max_call_s),
        DialogueManager(engines.llm, engines.connector, record, params),
        SentenceAggregator(),
        tts,
        playback,
    ]
    return BotSession(Pipeline(procs), playback, tts)


def build_echo(out_rate: int) -> BotSession:
    playback = Playback(out_rate)
    return BotSession(Pipeline([EchoProcessor(), playback]), playback, None)
