"""The AI bot on text channels: the voice bot's DialogueManager (the same bot definitions, connectors,
planner, confirmations before writes, knowledge base) in a Pipeline without audio.

Each customer message goes in as a TranscriptionFrame (confidence 1.0, the language it is written
in); what the dialogue manager says comes out as text: a SpeakFrame is one bot message, LLMTextFrame
deltas are joined into one message up to the empty frame that ends an answer. A TransferFrame hands
the conversation to the agents' queue (the transcript is the conversation itself, the summary goes
with it); a HangupFrame ends it (the customer said goodbye).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aicc.appliance.bots.definition import BotDefinition
from aicc.appliance.calls.record import CallRecord
from aicc.appliance.connectors.base import Connector
from aicc.appliance.voice.dialogue import DialogueManager, DialogueParams
from aicc.appliance.voice.frames import (
    Frame,
    HangupFrame,
    LLMTextFrame,
    SpeakFrame,
    StartFrame,
    TranscriptionFrame,
    TransferFrame,
)
from aicc.appliance.voice.numbers import script_language
from aicc.appliance.voice.pipeline import Pipeline
from aicc.models.engines.base import Language, LLMClient

if TYPE_CHECKING:
    from aicc.appliance.api.config import AppConfig
    from aicc.appliance.voice.knowledge import Knowledge

log = logging.getLogger(__name__)
SITE_BOTS = Path("/etc/aicc/bots")
LANGUAGES: tuple[Language, ...] = ("zh", "en")


def message_language(text: str, default: Language) -> Language:
    """The language a message is written in (Han characters: zh, Latin letters: en), else `default`
    (digits only, emoji ...)."""
    return script_language(text) or default


@dataclass(frozen=True)
class BotReply:
    text: str


@dataclass(frozen=True)
class BotHandover:
    reason: str
    intent: str
    summary: str


@dataclass(frozen=True)
class BotEnded:
    reason: str
    outcome: str


BotEvent = BotReply | BotHandover | BotEnded


@dataclass
class BotRuntime:
    """What every text conversation's bot shares: the LLM, the bots on their connectors, the knowledge
    base, and which bot answers."""

    llm: LLMClient
    bots: Mapping[str, tuple[BotDefinition, Connector]]
    bot: str
    knowledge: Knowledge | None = None
    params: DialogueParams = field(default_factory=lambda: DialogueParams(notice=False, hold_line=False))
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    async def close(self) -> None:
        for close in self.closers:
            try:
                await close()
            except Exception as exc:  # shutting down: say it, carry on
                log.warning("closing the text bot's resources failed: %s", exc)


async def open_runtime(config: AppConfig) -> BotRuntime | None:
    """The production runtime from app.yml: the LLM servers (llm_urls), the bots (shipped, and the
    site's in /etc/aicc/bots) on their connectors over a pool of their own (connectors switch its
    connections' row factory; the API's pool keeps dict rows), the public knowledge base. None when no
    LLM is configured or the bot is unknown: chats then go straight to the agents."""
    if not config.llm_urls:
        return None
    from psycopg_pool import AsyncConnectionPool

    from aicc.appliance.bots.definition import load_definitions
    from aicc.appliance.connectors.registry import open_bots
    from aicc.models.llm import OpenAICompatClient

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        config.database_dsn(), min_size=0, max_size=4, open=False, timeout=5, name="aicc-textbot"
    )
    await pool.open(wait=False)
    try:
        bots = open_bots(load_definitions(SITE_BOTS if SITE_BOTS.is_dir() else None), pool)
    except Exception as exc:
        log.error("web chat runs without a bot: the bot definitions cannot be loaded: %s", exc)
        await pool.close()
        return None
    if config.webchat_bot not in bots:
        log.error(
            "web chat runs without a bot: webchat_bot %r is not one of %s",
            config.webchat_bot,
            ", ".join(sorted(bots)),
        )
        await pool.close()
        return None
    knowledge = None
    try:
        from aicc.appliance.voice.knowledge import Knowledge

        knowledge = Knowledge(pool)
    except ImportError as exc:  # the knowledge base's search libraries are not installed here
        log.warning("web chat bot without the knowledge base: %s", exc)
    llm = OpenAICompatClient(config.llm_urls, config.llm_model, timeout_s=config.llm_timeout_s)
    params = DialogueParams(notice=False, hold_line=False, llm_timeout_s=config.llm_timeout_s)
    return BotRuntime(llm, bots, config.webchat_bot, knowledge, params, [llm.aclose, pool.close])


class TextDialogue(DialogueManager):
    """The dialogue manager on a text channel: it answers each message in the language the message is
    written in (a chat has no recognition errors, so one message is enough to switch), among the bot's
    languages."""

    async def on_transcript(self, frame: TranscriptionFrame) -> None:
        if self._bot is not None and frame.language in self._bot.definition.languages:
            self.language = frame.language
        await super().on_transcript(frame)


class TextBot:
    """One conversation's bot: a pipeline with the dialogue manager alone. `on_event` gets its replies,
    a handover and the end, in order."""

    def __init__(
        self,
        runtime: BotRuntime,
        conversation_id: str,
        language: Language,
        on_event: Callable[[BotEvent], Awaitable[None]],
        *,
        caller: str = "",
        reporter: Callable[[str, float, dict[str, str]], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.conversation_id = conversation_id
        self.language = language
        self.caller = caller
        self.on_event = on_event
        self.record = CallRecord(call_id=conversation_id, caller=caller, bot=runtime.bot)
        self.dialogue = TextDialogue(
            runtime.llm,
            runtime.bots,
            self.record,
            runtime.params,
            autostart=runtime.bot,
            knowledge=runtime.knowledge,
        )
        self.pipeline = Pipeline([self.dialogue], downstream_sink=self._sink, reporter=reporter)
        self._parts: list[str] = []
        self._muted = False
        self.done = False  # handed over or ended: no more messages go in

    async def start(self, *, greet: bool) -> None:
        """Start the dialogue; greet=False (a conversation that has messages already, rebuilt after a
        reconnect) drops the greeting: the customer has it in the history."""
        self._muted = not greet
        self.pipeline.start()
        self.pipeline.queue(
            StartFrame(
                call_id="", language=self.language, caller=self.caller, conversation_id=self.conversation_id
            )
        )
        try:
            await self.pipeline.idle(timeout=10.0)
        finally:
            self._muted = False

    def send(self, text: str, language: Language) -> None:
        """A customer message, for the bot to answer (asynchronously, through on_event)."""
        if self.done:
            return
        self.pipeline.queue(TranscriptionFrame(text=text, language=language, confidence=1.0, duration_s=0.0))

    async def idle(self, timeout: float = 10.0) -> None:
        await self.pipeline.idle(timeout)

    async def close(self) -> None:
        self.done = True
        await self.pipeline.stop()

    async def _emit(self, event: BotEvent) -> None:
        if self._muted and isinstance(event, BotReply):
            return
        try:
            await self.on_event(event)
        except Exception:  # a reply that cannot be stored must not stop the dialogue
            log.exception(
                "conversation %s: the bot's %s was lost", self.conversation_id, type(event).__name__
            )

    async def _sink(self, frame: Frame) -> None:
        if isinstance(frame, SpeakFrame):
            if frame.text.strip():
                await self._emit(BotReply(frame.text.strip()))
        elif isinstance(frame, LLMTextFrame):
            if frame.text:
                self._parts.append(frame.text)
                return
            text, self._parts = "".join(self._parts).strip(), []
            if text:
                await self._emit(BotReply(text))
        elif isinstance(frame, TransferFrame):
            self.done = True
            await self._emit(BotHandover(frame.reason, frame.intent, frame.summary))
        elif isinstance(frame, HangupFrame):
            self.done = True
            await self._emit(BotEnded(frame.reason, frame.outcome))
