"""Barge-in policy: caller speech pauses the bot at once; a backchannel resumes it, anything else
interrupts (queued bot audio and the answer in progress are dropped).

Pausing at speech start keeps the stop within the VAD's start time (about 160 ms); deciding
between "backchannel" and "interruption" waits for the transcript, which takes longer.
"""

from __future__ import annotations

import re

from aicc.appliance.voice.frames import (
    ErrorFrame,
    Frame,
    InterruptionFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from aicc.appliance.voice.pipeline import Direction, FrameProcessor
from aicc.appliance.voice.playback import Playback

BACKCHANNELS = frozenset(
    {
        "嗯",
        "嗯嗯",
        "哦",
        "噢",
        "啊",
        "呃",
        "嗯哼",
        "ok",
        "okay",
        "mhm",
        "mm",
        "hmm",
        "uh huh",
        "uhhuh",
        "yeah",
        "right",
        "um",
        "uh",
        "oh",
        "i see",
    }
)
_PUNCT = re.compile(r"[\s\.,!?;:'\"，。！？、；：…-]+")


def is_backchannel(text: str, duration_s: float, max_s: float = 1.0) -> bool:
    norm = _PUNCT.sub(" ", text.lower()).strip()
    return duration_s <= max_s and (norm == "" or norm in BACKCHANNELS)


class BargeInProcessor(FrameProcessor):
    name = "barge_in"

    def __init__(self, playback: Playback, backchannel_max_s: float = 1.2) -> None:
        super().__init__()
        self.playback = playback
        self.backchannel_max_s = backchannel_max_s
        self._paused_for_user = False
        self._last_duration = 0.0

    async def on_system(self, frame: Frame) -> None:
        if isinstance(frame, UserStartedSpeakingFrame):
            if self.playback.speaking and self.playback.pause():
                self._paused_for_user = True
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._last_duration = frame.duration_s
            if not self._paused_for_user:
                return
            if not frame.kept:
                self._resume()
            elif frame.duration_s > self.backchannel_max_s + 0.5:
                await self._interrupt()

    async def process(self, frame: Frame, direction: Direction) -> None:
        if self._paused_for_user and isinstance(frame, TranscriptionFrame):
            if is_backchannel(frame.text, frame.duration_s, self.backchannel_max_s + 0.5):
                self._resume()
                self.report("backchannels")
                return  # a backchannel is not a turn
            await self._interrupt()
        elif self._paused_for_user and isinstance(frame, ErrorFrame):
            await self._interrupt()
        await self.push(frame, direction)

    def _resume(self) -> None:
        self._paused_for_user = False
        self.playback.resume()

    async def _interrupt(self) -> None:
        self._paused_for_user = False
        self.report("barge_ins")
        await self.pipeline.broadcast(InterruptionFrame())
