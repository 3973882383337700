"""Call timers: no-input re-prompts after the bot stops speaking, and the maximum call length."""

from __future__ import annotations

import asyncio
import contextlib

from aicc.appliance.voice.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    MaxDurationFrame,
    NoInputFrame,
    StartFrame,
    UserStartedSpeakingFrame,
)
from aicc.appliance.voice.pipeline import Direction, FrameProcessor


class CallTimersProcessor(FrameProcessor):
    name = "timers"

    def __init__(self, no_input_s: float = 8.0, max_call_s: float = 600.0) -> None:
        super().__init__()
        self.no_input_s = no_input_s
        self.max_call_s = max_call_s
        self._no_input: asyncio.Task[None] | None = None
        self._max: asyncio.Task[None] | None = None
        self._count = 0

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, StartFrame):
            self._max = asyncio.create_task(self._fire_max())
        await self.push(frame, direction)

    async def on_system(self, frame: Frame) -> None:
        if isinstance(frame, BotStoppedSpeakingFrame):
            self._arm()
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._disarm()
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._count = 0  # the caller is there; the next silence starts counting again
            self._disarm()
        elif isinstance(frame, EndFrame):
            self._disarm()
            if self._max is not None:
                self._max.cancel()

    def _arm(self) -> None:
        self._disarm()
        self._no_input = asyncio.create_task(self._fire_no_input())

    def _disarm(self) -> None:
        if self._no_input is not None:
            self._no_input.cancel()
            self._no_input = None

    async def _fire_no_input(self) -> None:
        await asyncio.sleep(self.no_input_s)
        self._count += 1
        self._no_input = None
        await self.push(NoInputFrame(count=self._count))

    async def _fire_max(self) -> None:
        await asyncio.sleep(self.max_call_s)
        await self.push(MaxDurationFrame())

    async def close(self) -> None:
        for t in (self._no_input, self._max):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
