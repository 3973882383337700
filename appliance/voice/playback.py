"""Playback: the end of the pipeline. Holds bot audio that the media clock pulls every 20 ms.

Pause/resume/clear implement barge-in; hang-up and transfer requests (and flow markers) wait until
the audio queued before them has been played, so "transferring you now" is heard before the transfer.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aicc.appliance.voice.audio import resample, rms
from aicc.appliance.voice.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    HangupFrame,
    InterruptionFrame,
    MarkFrame,
    OutputAudioFrame,
    TransferFrame,
    TurnClock,
)
from aicc.appliance.voice.pipeline import Direction, FrameProcessor
from aicc.appliance.voice.vad import EchoReference


@dataclass
class _Chunk:
    pcm: bytes
    interruptible: bool
    clock: TurnClock | None
    hold: bool = False


class Playback(FrameProcessor):
    name = "playback"

    def __init__(self, sample_rate: int, echo: EchoReference | None = None, frame_ms: int = 20) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.echo = echo  # None: nobody listens for echo (the echo pipeline), skip the level per frame
        self.frame_bytes = sample_rate * frame_ms // 1000 * 2
        self._items: deque[_Chunk | Frame] = deque()
        self._paused = False
        self._speaking = False
        self._current_interruptible = True
        self._reported: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.played_s = 0.0
        self.paused_at: float | None = None
        # Silence after a hold chunk, until audio of the same turn plays again (hold_silence).
        self._hold_clock: TurnClock | None = None
        self._quiet_since: float | None = None

    # --- pipeline side --------------------------------------------------------------------------

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, OutputAudioFrame):
            pcm = resample(frame.pcm, frame.sample_rate, self.sample_rate)
            self._items.append(_Chunk(pcm, frame.interruptible, frame.clock, frame.hold))
            return
        if isinstance(frame, HangupFrame | TransferFrame | MarkFrame):
            if not self._items:
                await self.push(frame, direction)
            else:
                self._items.append(frame)
            return
        await self.push(frame, direction)

    async def on_system(self, frame: Frame) -> None:
        if isinstance(frame, InterruptionFrame):
            self.clear()
            self._paused = False
        elif isinstance(frame, EndFrame):
            self._items.clear()

    # --- barge-in controls ----------------------------------------------------------------------

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def interruptible(self) -> bool:
        return self._current_interruptible

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> bool:
        """Stop sending bot audio now; False when the prompt playing is not interruptible."""
        if not self._current_interruptible:
            return False
        self._paused = True
        self.paused_at = time.monotonic()
        return True

    def resume(self) -> None:
        self._paused = False
        self.paused_at = None

    def clear(self) -> None:
        """Drop queued interruptible audio, keep hang-up/transfer requests and protected prompts."""
        self._items = deque(i for i in self._items if not (isinstance(i, _Chunk) and i.interruptible))

    # --- media side -----------------------------------------------------------------------------

    def read_frame(self) -> bytes | None:
        """Next 20 ms of bot audio, or None for silence. Called by the media clock; never blocks."""
        if self._paused:
            return None
        out = bytearray()
        while len(out) < self.frame_bytes and self._items:
            item = self._items[0]
            if not isinstance(item, _Chunk):
                if out:
                    break
                self._items.popleft()
                self._spawn(self.push(item))
                continue
            need = self.frame_bytes - len(out)
            self._current_interruptible = item.interruptible
            self._note_hold_silence(item)
            if item.hold and item.clock is not None:
                item.clock.hold_audio_out = item.clock.hold_audio_out or time.monotonic()
            elif item.clock is not None and item.clock.turn not in self._reported:
                self._reported.add(item.clock.turn)
                item.clock.first_audio_out = time.monotonic()
                for stage, seconds in item.clock.stage_seconds().items():
                    self.report("stage_seconds", seconds, stage=stage)
            out += item.pcm[:need]
            if len(item.pcm) <= need:
                self._items.popleft()
            else:
                item.pcm = item.pcm[need:]
        if not out:
            if self._hold_clock is not None and self._quiet_since is None:
                self._quiet_since = time.monotonic()
            self._current_interruptible = True
            if self._speaking:
                self._speaking = False
                self._spawn(self.pipeline.broadcast(BotStoppedSpeakingFrame()))
            return None
        if not self._speaking:
            self._speaking = True
            self._spawn(self.pipeline.broadcast(BotStartedSpeakingFrame()))
        if len(out) < self.frame_bytes:
            out += bytes(self.frame_bytes - len(out))
        frame = bytes(out)
        self.played_s += len(frame) / 2 / self.sample_rate
        if self.echo is not None:
            self.echo.note_output(rms(frame), time.monotonic())
        return frame

    def _note_hold_silence(self, item: _Chunk) -> None:
        """Time the gaps between a turn's hold line and its answer (what a caller may talk into)."""
        clock = item.clock
        if clock is None or clock is not self._hold_clock:
            self._hold_clock = clock if item.hold else None
            self._quiet_since = None
            return
        if self._quiet_since is not None:
            gap = time.monotonic() - self._quiet_since
            clock.hold_silence = max(clock.hold_silence or 0.0, gap)
            self._quiet_since = None
        if not item.hold:
            self._hold_clock = None  # the answer: this turn's wait is over

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
