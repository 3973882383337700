"""Assembles one call's pipeline: VAD -> ASR -> end of turn -> numbers -> barge-in -> timers -> (an IVR
flow) -> dialogue -> sentences -> TTS -> playback, or the echo pipeline that replaces the bot when only
the media plane is measured."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING

from aicc.appliance.bots.definition import PROMPTS, BotDefinition, shipped_definitions
from aicc.appliance.calls.record import CallRecord
from aicc.appliance.connectors.base import Connector
from aicc.appliance.voice.asr import ASRProcessor
from aicc.appliance.voice.bargein import BargeInProcessor
from aicc.appliance.voice.dialogue import DialogueManager, DialogueParams, bot_language, setup_bot
from aicc.appliance.voice.echo import EchoProcessor
from aicc.appliance.voice.endpoint import EndOfTurnParams, TurnJoiner
from aicc.appliance.voice.numbers import DigitNormalizer
from aicc.appliance.voice.pipeline import FrameProcessor, Pipeline
from aicc.appliance.voice.playback import Playback
from aicc.appliance.voice.sentences import SentenceAggregator
from aicc.appliance.voice.timers import CallTimersProcessor
from aicc.appliance.voice.tts import TTSProcessor
from aicc.appliance.voice.vad import EchoReference, VADParams, VADProcessor
from aicc.models.engines.base import ASREngine, ChatMessage, Language, LLMClient, TTSEngine, VADEngine

if TYPE_CHECKING:
    from aicc.appliance.voice.knowledge import Knowledge

log = logging.getLogger(__name__)


@dataclass
class BotEngines:
    llm: LLMClient
    asr: ASREngine
    tts: TTSEngine
    vad: Callable[[], VADEngine]  # one per call: a VAD keeps state between frames
    # Every bot of the gateway: name -> (definition, its connector), opened by
    # aicc.appliance.connectors.registry.open_bots.
    bots: dict[str, tuple[BotDefinition, Connector]] = field(default_factory=dict)
    # The bot a call starts with when nothing before the dialogue manager chooses one.
    default_bot: str = "retail"
    # Prompt audio shared by all calls, keyed by (text, language), at the TTS rate: synthesised once
    # per process (warm_prompts at start-up), resampled to each call's codec rate by its playback.
    prompt_cache: dict[tuple[str, str], bytes] = field(default_factory=dict)
    # The public articles the bots answer general questions from (None: no knowledge base).
    knowledge: Knowledge | None = None
    # One connector and no bots: the shipped default bot on it (the gateway tests' engines).
    connector: InitVar[Connector | None] = None

    def __post_init__(self, connector: Connector | None) -> None:
        if connector is not None:
            if self.bots:
                raise ValueError("BotEngines takes bots or one connector, not both")
            self.bots[self.default_bot] = (shipped_definitions()[self.default_bot], connector)

    async def warm_llm(self) -> None:
        """One plan request per bot so the LLM server caches each bot's (fixed) plan prefix: the first
        caller then does not pay for evaluating it."""
        for definition, connector in self.bots.values():
            setup = setup_bot(definition, connector)
            messages = [*setup.prefix, ChatMessage("user", "hello")]
            await self.llm.complete_json(messages, setup.schema, max_tokens=64)

    async def warm_prompts(self) -> None:
        """Synthesise every prompt of every bot in its languages; run in the background when the
        gateway starts. A generous timeout: the first synthesis loads the voice, on a busy host that
        takes a while."""
        try:
            await self.warm_llm()
        except Exception as exc:  # the bot still works, the first plan is just slower
            log.warning("warming the LLM prompt cache failed: %s", exc)
        if self.knowledge is not None:
            await self.knowledge.warm()
        warm = TTSProcessor(self.tts, self.tts.sample_rate, timeout_s=120.0)
        lines = [
            line
            for definition, _ in self.bots.values()
            for language in definition.languages
            for line in DialogueManager.prewarm_lines(definition, language)
        ]
        for text, lang in dict.fromkeys(lines):
            if (text, lang) not in self.prompt_cache:
                self.prompt_cache[(text, lang)] = await warm.synthesize_all(text, lang)


@dataclass
class BotSession:
    pipeline: Pipeline
    playback: Playback
    tts: TTSProcessor | None
    dialogue: DialogueManager | None = None  # its summary() is the call's, at any time
    opening: BotDefinition | None = None  # the bot that greets the caller at once, if one does

    async def prepare(self, language: Language, engines: BotEngines | None) -> None:
        """Have the opening bot's notice and greeting audio ready before the call is answered
        (synthesised now if the start-up warm-up has not made them yet); every other prompt already
        made is shared too."""
        if self.tts is None or engines is None:
            return
        needed: list[tuple[str, Language]] = []
        if self.opening is not None:
            speaks = bot_language(self.opening, language)
            needed = [(self.opening.prompt(k, speaks), speaks) for k in ("notice", "greeting")]
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
    bot: str | None = None,
    before_dialogue: Sequence[FrameProcessor] = (),
    no_input_s: float,
    max_call_s: float,
    asr_timeout_s: float = 15.0,
    vad: VADParams | None = None,
    end_of_turn: EndOfTurnParams | None = None,
) -> BotSession:
    """One call's bot pipeline. bot: the bot that greets the caller when the call starts; None: the
    engines' default bot, unless before_dialogue is given (processors just before the dialogue
    manager, e.g. an IVR flow, which start a bot with BotStartFrame when the flow reaches one)."""
    opening = bot if bot is not None else (None if before_dialogue else engines.default_bot)
    if opening is not None and opening not in engines.bots:
        raise ValueError(f"no bot {opening!r}: this gateway has {', '.join(sorted(engines.bots)) or 'none'}")
    echo = EchoReference()
    playback = Playback(out_rate, echo)
    tts = TTSProcessor(engines.tts, engines.tts.sample_rate)  # playback resamples to the codec rate
    dialogue = DialogueManager(
        engines.llm, engines.bots, record, params, autostart=opening, knowledge=engines.knowledge
    )
    procs: list[FrameProcessor] = [
        VADProcessor(engines.vad(), echo, vad),
        ASRProcessor(engines.asr, timeout_s=asr_timeout_s),
        TurnJoiner(end_of_turn),  # a pause after 顺便 / "and also" does not end the turn
        DigitNormalizer(),
        BargeInProcessor(playback),
        CallTimersProcessor(no_input_s=no_input_s, max_call_s=max_call_s),
        *before_dialogue,
        dialogue,
        SentenceAggregator(),
        tts,
        playback,
    ]
    definition = engines.bots[opening][0] if opening is not None else None
    return BotSession(Pipeline(procs), playback, tts, dialogue, definition)


def build_echo(out_rate: int) -> BotSession:
    playback = Playback(out_rate)
    return BotSession(Pipeline([EchoProcessor(), playback]), playback, None)
