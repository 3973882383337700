"""A pipeline: processors assembled as a list, each with its own queue and task.

Data frames flow downstream (caller -> bot) or upstream through the processors' queues, so a slow
stage (ASR, LLM) does not stall the ones before it. System frames (speech start/stop, interruption,
end) are broadcast to every processor at once: barge-in must not wait behind a transcription.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aicc.appliance.voice.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMTextFrame,
    OutputAudioFrame,
    SpeakFrame,
)

log = logging.getLogger(__name__)


class Direction(enum.Enum):
    DOWNSTREAM = "down"
    UPSTREAM = "up"


Sink = Callable[[Frame], Awaitable[None]]
Reporter = Callable[[str, float, dict[str, str]], None]


def _droppable(frame: Frame) -> bool:
    """Bot output that an interruption discards (a non-interruptible prompt survives)."""
    if isinstance(frame, OutputAudioFrame):
        return frame.interruptible
    if isinstance(frame, SpeakFrame):
        return frame.interruptible
    return isinstance(frame, LLMTextFrame)


class FrameProcessor:
    """One job. Override `process` for data frames and `on_system` for broadcast frames."""

    name = "processor"
    # True: an interruption cancels the frame being processed (speech synthesis in progress).
    cancel_on_interruption = False

    def __init__(self) -> None:
        self._down: FrameProcessor | None = None
        self._up: FrameProcessor | None = None
        self._pipeline: Pipeline | None = None
        self._queue: asyncio.Queue[tuple[Frame, Direction]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._current: asyncio.Task[None] | None = None
        self._current_frame: Frame | None = None
        self._busy = False

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise RuntimeError(f"processor {self.name} is not part of a pipeline")
        return self._pipeline

    async def process(self, frame: Frame, direction: Direction) -> None:
        await self.push(frame, direction)

    async def on_system(self, frame: Frame) -> None:
        """Called for every broadcast frame, outside the queue."""

    async def push(self, frame: Frame, direction: Direction = Direction.DOWNSTREAM) -> None:
        target = self._down if direction is Direction.DOWNSTREAM else self._up
        if target is None:
            await self.pipeline.deliver(frame, direction)
        else:
            target.enqueue(frame, direction)

    def enqueue(self, frame: Frame, direction: Direction = Direction.DOWNSTREAM) -> None:
        self._queue.put_nowait((frame, direction))

    def report(self, name: str, value: float = 1.0, **labels: str) -> None:
        self.pipeline.report(name, value, labels)

    def drop_queued_output(self) -> None:
        kept: list[tuple[Frame, Direction]] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not _droppable(item[0]):
                kept.append(item)
        for item in kept:
            self._queue.put_nowait(item)
        if (
            self.cancel_on_interruption
            and self._current is not None
            and self._current_frame is not None
            and _droppable(self._current_frame)
        ):
            self._current.cancel()

    async def _run(self) -> None:
        while True:
            frame, direction = await self._queue.get()
            try:
                self._busy = True
                if self.cancel_on_interruption:
                    self._current_frame = frame
                    work = asyncio.create_task(self.process(frame, direction))
                    self._current = work
                    try:
                        # wait() does not raise when only `work` was cancelled by an interruption.
                        await asyncio.wait({work})
                    except asyncio.CancelledError:
                        work.cancel()
                        raise
                    if not work.cancelled() and work.exception() is not None:
                        raise work.exception()  # type: ignore[misc]
                else:
                    await self.process(frame, direction)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # One bad frame must not take the call down: count it, log it, carry on.
                log.exception("processor %s failed on %s", self.name, type(frame).__name__)
                self.pipeline.report("processor_errors", 1.0, {"processor": self.name})
                await self.pipeline.on_processor_error(self, exc)
            finally:
                self._busy = False
                self._current = None
                self._current_frame = None


@dataclass
class Pipeline:
    processors: Sequence[FrameProcessor]
    downstream_sink: Sink | None = None
    upstream_sink: Sink | None = None
    reporter: Reporter | None = None
    error_handler: Callable[[FrameProcessor, Exception], Awaitable[None]] | None = None
    _started: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        procs = list(self.processors)
        for i, p in enumerate(procs):
            p._pipeline = self
            p._up = procs[i - 1] if i > 0 else None
            p._down = procs[i + 1] if i + 1 < len(procs) else None

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for p in self.processors:
            p._task = asyncio.create_task(p._run(), name=f"proc-{p.name}")

    async def stop(self) -> None:
        for p in self.processors:
            if p._task is not None:
                p._task.cancel()
        for p in self.processors:
            if p._task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await p._task
                p._task = None

    def queue(self, frame: Frame, direction: Direction = Direction.DOWNSTREAM) -> None:
        """Feed a frame in at the start (downstream) or the end (upstream)."""
        procs = list(self.processors)
        target = procs[0] if direction is Direction.DOWNSTREAM else procs[-1]
        target.enqueue(frame, direction)

    async def broadcast(self, frame: Frame) -> None:
        if isinstance(frame, InterruptionFrame):
            for p in self.processors:
                p.drop_queued_output()
        for p in self.processors:
            try:
                await p.on_system(frame)
            except Exception as exc:
                log.exception("processor %s failed on system frame %s", p.name, type(frame).__name__)
                self.report("processor_errors", 1.0, {"processor": p.name})
                await self.on_processor_error(p, exc)
        if isinstance(frame, EndFrame | InterruptionFrame):
            await self.deliver(frame, Direction.UPSTREAM)

    async def deliver(self, frame: Frame, direction: Direction) -> None:
        sink = self.downstream_sink if direction is Direction.DOWNSTREAM else self.upstream_sink
        if sink is not None:
            await sink(frame)

    def report(self, name: str, value: float, labels: dict[str, str]) -> None:
        if self.reporter is not None:
            try:
                self.reporter(name, value, labels)
            except Exception:
                log.exception("metrics reporter failed for %s", name)

    async def on_processor_error(self, proc: FrameProcessor, exc: Exception) -> None:
        if self.error_handler is not None:
            await self.error_handler(proc, exc)

    async def idle(self, timeout: float = 5.0) -> None:
        """Wait until every queue is empty and no processor is busy (tests, orderly shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await asyncio.sleep(0.01)
            busy = any(not p._queue.empty() or p._busy for p in self.processors)
            if not busy:
                return
        raise TimeoutError("pipeline did not go idle")
