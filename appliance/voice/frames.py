"""Frames: the units that flow through the bot pipeline, one dataclass per kind.

Audio is s16le mono PCM with its sample rate. Timestamps are `time.monotonic()` seconds.
A `TurnClock` travels with the frames of one caller turn so every stage can stamp it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aicc.models.engines.base import Language, ToolCall

STAGES = ("vad", "asr", "llm_first_token", "tts_first_audio", "turn")


@dataclass
class TurnClock:
    """Timings of one caller turn: end of caller speech -> utterance segmented (VAD hang-over) -> transcript
    -> first LLM token (or plan) -> first TTS audio; `turn` is end of speech -> first answer audio sent,
    `hold` end of speech -> the hold line ("One moment, please.") when one was said before the answer,
    `first_audio` end of speech -> whichever came first: the silence the caller sits through;
    `hold_silence` the longest silence between the hold line and the answer."""

    turn: int
    end_of_speech: float
    segmented: float | None = None
    transcript: float | None = None
    llm_first_token: float | None = None
    tts_first_audio: float | None = None
    first_audio_out: float | None = None
    hold_audio_out: float | None = None
    # The longest silence the caller sat through between the hold line and the answer.
    hold_silence: float | None = None

    def stage_seconds(self) -> dict[str, float]:
        """Seconds per stage, each measured from the previous mark (turn: end of speech -> first audio)."""
        out: dict[str, float] = {}
        if self.segmented is not None:
            out["vad"] = self.segmented - self.end_of_speech
        if self.transcript is not None:
            out["asr"] = self.transcript - (self.segmented or self.end_of_speech)
            if self.llm_first_token is not None:
                out["llm_first_token"] = self.llm_first_token - self.transcript
                if self.tts_first_audio is not None:
                    out["tts_first_audio"] = self.tts_first_audio - self.llm_first_token
        if self.hold_audio_out is not None:
            out["hold"] = self.hold_audio_out - self.end_of_speech
            if self.hold_silence is not None:
                out["hold_silence"] = self.hold_silence
        # Last: whoever records the stages closes the turn's record on "turn".
        first_audio = self.first_audio_out or self.tts_first_audio
        if first_audio is not None:
            heard = min(first_audio, self.hold_audio_out or first_audio)
            out["first_audio"] = heard - self.end_of_speech
            out["turn"] = first_audio - self.end_of_speech
        return out


@dataclass
class Frame:
    created: float = field(default_factory=time.monotonic, kw_only=True)


# --- control --------------------------------------------------------------------------------------


@dataclass
class StartFrame(Frame):
    call_id: str  # the call's SIP Call-ID; "" for a text conversation
    language: Language
    caller: str = ""
    service: str = ""
    conversation_id: str = ""  # a text conversation (web chat): what its tickets link to


@dataclass
class BotStartFrame(Frame):
    """Hand the caller to a bot (by its definition's name): the dialogue manager switches to it, starts
    its dialogue afresh and greets the caller in `language`."""

    bot: str
    language: Language


@dataclass
class EndFrame(Frame):
    """The call is over (hang-up, transfer done, max length); processors release what they hold."""

    reason: str


@dataclass
class HangupFrame(Frame):
    """The bot wants the call ended after what is queued has been played."""

    reason: str
    outcome: Literal["resolved", "transferred", "abandoned", "failed"] = "resolved"


@dataclass
class InterruptionFrame(Frame):
    """The caller barged in: drop queued bot audio and any answer in progress."""


@dataclass
class TransferFrame(Frame):
    """Hand the call to a human: the IVR flow queues it, the ACD picks the agent. intent: the last tool
    the caller wanted (create_return ...), else the reason; summary: one line in the caller's language
    for the agent and for routing."""

    reason: Literal["requested", "misunderstood", "low_confidence", "engine_failure", "dtmf"]
    intent: str = ""
    summary: str = ""


@dataclass
class MarkFrame(Frame):
    """A marker: it reaches the gateway once the audio queued before it has been played (or dropped by
    a barge-in), so an IVR flow knows when its prompt is over."""

    token: int


@dataclass
class TransferFailedFrame(Frame):
    """No agent took the call (not registered, busy, no answer): the bot keeps the caller."""

    status: int


# --- caller side ----------------------------------------------------------------------------------


@dataclass
class InputAudioFrame(Frame):
    pcm: bytes
    sample_rate: int


@dataclass
class DTMFFrame(Frame):
    digit: str


@dataclass
class NoInputFrame(Frame):
    """The caller said nothing for the no-input timeout after the bot finished speaking."""

    count: int


@dataclass
class MaxDurationFrame(Frame):
    """The call reached its maximum length."""


@dataclass
class ErrorFrame(Frame):
    """An engine or connector failed; the dialogue manager answers with a graceful line."""

    source: Literal["asr", "llm", "tts", "connector", "vad"]
    message: str


@dataclass
class UserStartedSpeakingFrame(Frame):
    pass


@dataclass
class UserStoppedSpeakingFrame(Frame):
    duration_s: float
    kept: bool = True  # False: too short to be an utterance (a click, a cough); nothing follows


@dataclass
class SpeechPauseFrame(Frame):
    """The caller paused mid-utterance: the speech so far, so the ASR can start on it before the VAD's
    hang-over has decided the utterance is over."""

    pcm: bytes
    sample_rate: int


@dataclass
class UtteranceFrame(Frame):
    """One caller utterance, segmented by the VAD. same_as_pause: the caller said nothing more after
    the last SpeechPauseFrame, so its transcript is this utterance's too."""

    pcm: bytes
    sample_rate: int
    clock: TurnClock
    same_as_pause: bool = False

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


@dataclass
class TranscriptionFrame(Frame):
    text: str
    language: str
    confidence: float
    duration_s: float
    clock: TurnClock | None = None


# --- bot side -------------------------------------------------------------------------------------


@dataclass
class LLMTextFrame(Frame):
    text: str
    clock: TurnClock | None = None


@dataclass
class ToolCallFrame(Frame):
    call: ToolCall


@dataclass
class ToolResultFrame(Frame):
    call: ToolCall
    ok: bool
    result: dict[str, Any]
    seconds: float
    error: str = ""


@dataclass
class SpeakFrame(Frame):
    """A sentence for TTS. interruptible=False: caller speech does not stop it (legal notices).
    hold=True: a hold line said while the answer is being worked out (timed apart from the answer)."""

    text: str
    language: Language
    interruptible: bool = True
    clock: TurnClock | None = None
    hold: bool = False


@dataclass
class OutputAudioFrame(Frame):
    pcm: bytes
    sample_rate: int
    interruptible: bool = True
    clock: TurnClock | None = None
    text: str = ""
    hold: bool = False


@dataclass
class BotStartedSpeakingFrame(Frame):
    pass


@dataclass
class BotStoppedSpeakingFrame(Frame):
    pass


# Frames every processor sees at once (Pipeline.broadcast), not queued behind slow work.
SYSTEM_FRAMES: tuple[type[Frame], ...] = (
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    EndFrame,
)
