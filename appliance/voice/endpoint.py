"""End of turn decided by more than silence: a transcript that stops in the middle of a clause waits a
little for the rest.

The VAD ends an utterance after stop_s of silence. A caller who pauses after 顺便 / 另外 / "and also"
or after "改成" / "to" has not finished: the transcript of what they said so far is held for up to
hold_s more, and when they go on, both parts become one turn (one plan for a compound request, not
two halves planned alone). The hold is bounded: at most max_holds per turn, and a held transcript is
released when the caller stays silent or their next sound turns out to be noise, so nobody is left
hanging.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, replace

from aicc.appliance.voice.frames import (
    EndFrame,
    Frame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from aicc.appliance.voice.pipeline import Direction, FrameProcessor

# Words after which a clause or a request goes on: Mandarin ones at the end of the text, English ones
# as the last word ("and then" as the last two). Not words that also end a sentence or answer a
# question (是, 到 in 还没到, "so" in "I think so"): those would delay a plain answer.
CONTINUATION_ZH = (
    "顺便",
    "另外",
    "还有",
    "然后",
    "并且",
    "而且",
    "以及",
    "和",
    "跟",
    "或者",
    "但是",
    "不过",
    "因为",
    "所以",
    "那个",
    "这个",
    "的话",
    "把",
    "帮我",
    "我想",
    "我要",
    "改成",
    "改为",
    "改到",
    "换成",
    "地址是",
    "号码是",
    "订单号是",
    "嗯",
    "呃",
)
CONTINUATION_EN = frozenset(
    {
        "and",
        "also",
        "plus",
        "or",
        "but",
        "because",
        "to",
        "the",
        "a",
        "an",
        "my",
        "its",
        "is",
        "at",
        "of",
        "for",
        "with",
        "from",
        "into",
        "um",
        "uh",
        "er",
        "like",
        "about",
    }
)
_TRAIL = re.compile(r"[\s\.。!！?？]+$")
_OPEN_PUNCT = re.compile(r"[,，、;；:：…\-—]$|\.\.\.$")


def continues(text: str) -> bool:
    """Whether a transcript stops in the middle: after a continuation word, or on a comma or colon
    (the ASR's mark of a pause inside a sentence). A question mark ends it whatever comes before."""
    stripped = text.strip()
    if not stripped or stripped.endswith(("?", "？")):
        return False
    if _OPEN_PUNCT.search(stripped):
        return True
    core = _TRAIL.sub("", stripped)
    core = re.sub(r"[,，、;；:：]+$", "", core)
    if not core:
        return False
    if re.search(r"[\u4e00-\u9fff]$", core):
        return core.endswith(CONTINUATION_ZH)
    words = re.findall(r"[a-z']+", core.lower())
    if words[-2:] == ["and", "then"]:
        return True
    return bool(words) and words[-1] in CONTINUATION_EN


@dataclass(frozen=True)
class EndOfTurnParams:
    hold_s: float = 1.2  # how much longer a transcript that stops mid-clause waits for the rest
    max_holds: int = 2  # per turn: after that the turn ends whatever the words


class TurnJoiner(FrameProcessor):
    """Holds a transcript that stops mid-clause for up to hold_s; joins it with the next one when the
    caller goes on. Place it right after the ASR."""

    name = "end_of_turn"

    def __init__(self, params: EndOfTurnParams | None = None) -> None:
        super().__init__()
        self.p = params or EndOfTurnParams()
        self._held: TranscriptionFrame | None = None
        self._holds = 0
        self._timer: asyncio.Task[None] | None = None

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, TranscriptionFrame) and direction is Direction.DOWNSTREAM:
            await self._transcript(frame)
            return
        if direction is Direction.DOWNSTREAM:
            await self._release()  # DTMF, errors, hang-up: after what the caller said before them
        if isinstance(frame, EndFrame):
            self._cancel_timer()
        await self.push(frame, direction)

    async def _transcript(self, frame: TranscriptionFrame) -> None:
        self._cancel_timer()
        if self._held is not None:
            frame = self._joined(self._held, frame)
            self._held = None
        if frame.text and self._holds < self.p.max_holds and continues(frame.text):
            self._held = frame
            self._holds += 1
            self.report("turn_holds")
            self._timer = asyncio.ensure_future(self._expire())
            return
        self._holds = 0
        await self.push(frame)

    @staticmethod
    def _joined(first: TranscriptionFrame, second: TranscriptionFrame) -> TranscriptionFrame:
        han = re.search(r"[\u4e00-\u9fff]$", first.text.strip()) or re.match(r"[\u4e00-\u9fff]", second.text)
        gap = "" if han else " "
        total = first.duration_s + second.duration_s
        # The weaker part decides how sure the ASR was, weighted by how long each was.
        confidence = (
            min(first.confidence, second.confidence)
            if total <= 0
            else min(
                (first.confidence * first.duration_s + second.confidence * second.duration_s) / total,
                max(first.confidence, second.confidence),
            )
        )
        return replace(
            second,
            text=f"{first.text.strip()}{gap}{second.text.strip()}",
            confidence=confidence,
            duration_s=total,
        )

    async def _expire(self) -> None:
        await asyncio.sleep(self.p.hold_s)
        self._timer = None
        await self._release()

    async def _release(self) -> None:
        self._cancel_timer()
        held, self._held = self._held, None
        self._holds = 0
        if held is not None:
            await self.push(held)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None

    async def on_system(self, frame: Frame) -> None:
        if self._held is None:
            return
        if isinstance(frame, UserStartedSpeakingFrame):
            self._cancel_timer()  # the caller goes on: wait for that transcript
        elif isinstance(frame, UserStoppedSpeakingFrame) and not frame.kept:
            await self._release()  # only a click or a cough: the turn was over
