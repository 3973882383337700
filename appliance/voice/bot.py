"""Assembles one call's pipeline: VAD -> ASR -> barge-in -> timers -> dialogue -> sentences -> TTS ->
playback, or the echo pipeline that replaces the bot when only the media plane is measured."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aicc.appliance.calls.record import CallRecord
from aicc.appliance.connectors.base import Connector
from aicc.appliance.voice.asr import ASRProcessor
from aicc.appliance.voice.bargein import BargeInProcessor
from aicc.appliance.voice.dialogue import PROMPTS, DialogueManager, DialogueParams
from aicc.appliance.voice.echo import EchoProcessor
from aicc.appliance.voice.pipeline import FrameProcessor, Pipeline
from aicc.appliance.voice.playback import Playback
from aicc.appliance.voice.sentences import SentenceAggregator
from aicc.appliance.voice.timers import CallTimersProcessor
from aicc.appliance.voice.tts import TTSProcessor
from aicc.appliance.voice.vad import EchoReference, VADProcessor
from aicc.models.engines.base import ASREngine, Language, LLMClient, TTSEngine, VADEngine


@dataclass
class BotEngines:
    llm: LLMClient
    asr: ASREngine
    tts: TTSEngine
    vad: Callable[[], VADEngine]  # one per call: a VAD keeps state between frames
    connector: Connector
    # Prompt audio shared by all calls, keyed by (text, language, rate): synthesised once per process.
    prompt_cache: dict[tuple[str, str, int], bytes] = field(default_factory=dict)


@dataclass
class BotSession:
    pipeline: Pipeline
    playback: Playback
    tts: TTSProcessor | None

    async def prepare(self, language: Language, engines: BotEngines | None) -> None:
        """Synthesise the greeting and the graceful lines before the call is answered."""
        if self.tts is None or engines is None:
            return
        rate = self.tts.out_rate
        lines = DialogueManager.prewarm_lines(language)
        missing = [(t, lang) for t, lang in lines if (t, lang, rate) not in engines.prompt_cache]
        await self.tts.prewarm(missing)
        for (text, lang), pcm in self.tts.cache.items():
            engines.prompt_cache[(text, lang, rate)] = pcm
        for text, lang in lines:
            self.tts.cache[(text, lang)] = engines.prompt_cache[(text, lang, rate)]
        self.tts.fallback = {"en": PROMPTS["engine_trouble"]["en"], "zh": PROMPTS["engine_trouble"]["zh"]}


def build_bot(
    engines: BotEngines,
    record: CallRecord,
    out_rate: int,
    params: DialogueParams,
    *,
    no_input_s: float,
    max_call_s: float,
) -> BotSession:
    echo = EchoReference()
    playback = Playback(out_rate, echo)
    tts = TTSProcessor(engines.tts, out_rate)
    procs: list[FrameProcessor] = [
        VADProcessor(engines.vad(), echo),
        ASRProcessor(engines.asr),
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
