"""VAD processor: caller audio -> speech start/stop events and whole utterances.

While the bot speaks, input quieter than the bot's own output minus the expected echo return loss
is treated as echo, not speech, so the bot does not interrupt itself.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from aicc.appliance.voice.audio import resample, rms
from aicc.appliance.voice.frames import (
    EndFrame,
    Frame,
    InputAudioFrame,
    SpeechPauseFrame,
    TurnClock,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UtteranceFrame,
)
from aicc.appliance.voice.pipeline import Direction, FrameProcessor
from aicc.models.engines.base import VADEngine


@dataclass
class EchoReference:
    """Level of the bot audio recently sent to the caller, updated by the playback side."""

    level: float = 0.0
    until: float = 0.0  # monotonic time the echo of the last sent audio can still arrive

    def note_output(self, level: float, now: float, tail_s: float = 0.3) -> None:
        # Decay slowly so the echo of a loud syllable still gates the quieter one that follows.
        self.level = max(level, self.level * 0.9)
        self.until = now + tail_s

    def active(self, now: float) -> bool:
        return now < self.until


@dataclass(frozen=True)
class VADParams:
    start_s: float = 0.16  # speech this long starts an utterance (and may pause the bot)
    stop_s: float = 0.5  # silence this long ends it
    # Silence this long sends the speech so far to the ASR early (0: off): when the caller stays
    # silent until stop_s its transcript is ready stop_s - early_s sooner. A caller who goes on costs
    # one transcription thrown away.
    early_s: float = 0.2
    # Audio kept before the start, so the first syllable reaches ASR: start_s of it is the voiced run
    # that started the utterance, the rest covers the VAD's late onset (15-110 ms measured on the
    # Mandarin caller voice over G.711; a soft 我 or 查 was clipped with 0.2 s, the bot then heard
    # "在研工客服" for "我要转人工客服").
    pre_roll_s: float = 0.5
    max_utterance_s: float = 15.0
    min_utterance_s: float = 0.25  # shorter bursts are clicks or noise
    echo_return_loss_db: float = 12.0  # input must be this much below output level to count as echo


class VADProcessor(FrameProcessor):
    name = "vad"

    def __init__(
        self, engine: VADEngine, echo: EchoReference | None = None, params: VADParams | None = None
    ) -> None:
        super().__init__()
        self.engine = engine
        self.echo = echo or EchoReference()
        self.p = params or VADParams()
        self.rate = engine.sample_rate
        self.frame_bytes = engine.frame_samples * 2
        self.frame_s = engine.frame_samples / engine.sample_rate
        self._buf = b""
        self._pre: deque[bytes] = deque(maxlen=max(1, int(self.p.pre_roll_s / self.frame_s)))
        self._speech: list[bytes] = []
        self._in_speech = False
        self._voiced_run = 0.0
        self._silent_run = 0.0
        self._last_voiced_at = 0.0
        self._paused = False  # a SpeechPauseFrame went out and the caller has not spoken since
        self._turn = 0

    def _is_echo(self, frame: bytes, now: float) -> bool:
        if not self.echo.active(now):
            return False
        gate = self.echo.level * 10 ** (-self.p.echo_return_loss_db / 20)
        return rms(frame) < gate

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, InputAudioFrame):
            pcm = resample(frame.pcm, frame.sample_rate, self.rate)
            self._buf += pcm
            while len(self._buf) >= self.frame_bytes:
                chunk, self._buf = self._buf[: self.frame_bytes], self._buf[self.frame_bytes :]
                await self._frame(chunk, frame.created)
            return
        if isinstance(frame, EndFrame):
            self._reset()
        await self.push(frame, direction)

    async def _frame(self, chunk: bytes, at: float) -> None:
        now = time.monotonic()
        try:
            voiced = self.engine.speech_probability(chunk).is_speech and not self._is_echo(chunk, now)
        except Exception:
            # A VAD failure must not end the call: treat the frame as silence and count it.
            self.report("engine_errors", engine="vad")
            voiced = False
        if not self._in_speech:
            self._pre.append(chunk)
            if voiced:
                self._voiced_run += self.frame_s
                if self._voiced_run >= self.p.start_s:
                    self._in_speech = True
                    self._speech = list(self._pre)
                    self._silent_run = 0.0
                    self._last_voiced_at = at
                    await self.pipeline.broadcast(UserStartedSpeakingFrame())
            else:
                self._voiced_run = 0.0
            return
        self._speech.append(chunk)
        if voiced:
            self._silent_run = 0.0
            self._last_voiced_at = at
            self._paused = False
        else:
            self._silent_run += self.frame_s
        duration = len(self._speech) * self.frame_s
        if self._silent_run >= self.p.stop_s or duration >= self.p.max_utterance_s:
            await self._finish(duration)
        elif (
            0 < self.p.early_s <= self._silent_run
            and not self._paused
            and duration - self._silent_run >= self.p.min_utterance_s
        ):
            self._paused = True
            await self.push(SpeechPauseFrame(pcm=b"".join(self._speech), sample_rate=self.rate))

    async def _finish(self, duration: float) -> None:
        pcm = b"".join(self._speech)
        end_of_speech = self._last_voiced_at
        same_as_pause = self._paused
        self._reset()
        kept = duration - self._silent_tail(duration) >= self.p.min_utterance_s
        await self.pipeline.broadcast(UserStoppedSpeakingFrame(duration_s=duration, kept=kept))
        if not kept:
            self.report("short_noise")
            return
        self._turn += 1
        clock = TurnClock(turn=self._turn, end_of_speech=end_of_speech, segmented=time.monotonic())
        await self.push(
            UtteranceFrame(pcm=pcm, sample_rate=self.rate, clock=clock, same_as_pause=same_as_pause)
        )

    def _silent_tail(self, duration: float) -> float:
        return min(self.p.stop_s, duration) if duration < self.p.max_utterance_s else 0.0

    def _reset(self) -> None:
        self._in_speech = False
        self._speech = []
        self._voiced_run = 0.0
        self._silent_run = 0.0
        self._paused = False
        self._pre.clear()
