"""Echo processor: sends the caller's audio straight back. Replaces the bot to measure the media plane."""

from __future__ import annotations

from aicc.appliance.voice.frames import Frame, InputAudioFrame, OutputAudioFrame
from aicc.appliance.voice.pipeline import Direction, FrameProcessor


class EchoProcessor(FrameProcessor):
    name = "echo"

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, InputAudioFrame):
            await self.push(OutputAudioFrame(pcm=frame.pcm, sample_rate=frame.sample_rate))
            return
        await self.push(frame, direction)
