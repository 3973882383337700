"""An IVR flow running on a live call: the flow processor in the bot pipeline, and the gateway's FlowIO.

The flow processor sits just before the dialogue manager. While a bot node runs, the caller's speech
and keys go on to the dialogue manager; otherwise they go to the flow, which asks its own questions
(menus, digits, survey) and says its own lines through the same TTS and playback. A bot node ends
when the dialogue manager hands the call over (TransferFrame) or ends it (HangupFrame): the gateway
catches both at the end of the pipeline and tells the flow.

Waiting in a queue: the ACD is asked for an agent; the caller hears their place and the estimated
wait every `announce_every_s`, soft hold music in between, and may press 1 for a callback when the
wait is long. An offer from the ACD rings the agent's phone through Kamailio; the agent's answer
bridges the call, and the flow goes on (survey) when the agent hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import ValidationError

from aicc.appliance.acd import commands as cmds
from aicc.appliance.acd.client import AcdRejected, AcdUnavailable, GatewayMessage
from aicc.appliance.events.kinds import Event
from aicc.appliance.ivr.runner import BotRequest, BotResult, CallerHungUp, QueueRequest, QueueResult, Reply
from aicc.appliance.voice.frames import (
    BotStartFrame,
    DTMFFrame,
    ErrorFrame,
    Frame,
    MarkFrame,
    MaxDurationFrame,
    NoInputFrame,
    SpeakFrame,
    TranscriptionFrame,
)
from aicc.appliance.voice.pipeline import Direction, FrameProcessor

if TYPE_CHECKING:
    from aicc.appliance.voice.gateway import Call

log = logging.getLogger(__name__)

# What the caller says or keys, and what the timers report: the dialogue manager's while a bot talks.
CALLER_INPUT = (TranscriptionFrame, DTMFFrame, NoInputFrame, MaxDurationFrame, ErrorFrame)
TYPE_AHEAD = 16  # keys kept from before a question
INTER_DIGIT_S = 4.0
LOOKUP_TIMEOUT_S = 4.0
# An agent free now gets the offer in the enqueue's own transaction; its NOTIFY may trail the result
# by a few milliseconds. Wait this long for it before announcing a place in the queue.
OFFER_GRACE_S = 0.3
QUEUE_NAME = r"[a-z0-9][a-z0-9_-]{0,40}"  # the ACD's queue names (appliance/acd/policy.py)
# What the agent's screen pop says of a call that met no free bot (max_bot_calls).
BOTS_BUSY = "机器人全忙，直接转人工 / every bot was busy: straight to an agent"

QUEUE_LINES: dict[str, dict[str, str]] = {
    "position": {"en": "You are number {position} in the queue.", "zh": "您当前排在第{position}位。"},
    "wait_minutes": {
        "en": "The estimated wait is about {minutes} minutes.",
        "zh": "预计等待约{minutes}分钟。",
    },
    "wait_minute": {"en": "The estimated wait is about one minute.", "zh": "预计等待约一分钟。"},
    "wait_short": {
        "en": "An agent should be with you in less than a minute.",
        "zh": "预计不到一分钟即可接通。",
    },
    "callback_offer": {
        "en": "To have us call you back instead, press 1 at any time.",
        "zh": "如果您希望稍后由我们回电，请随时按1。",
    },
}


class FlowProcessor(FrameProcessor):
    name = "flow"

    def __init__(self) -> None:
        super().__init__()
        self.bot_active = False
        self.listening = False
        self.inbox: asyncio.Queue[Frame] = asyncio.Queue()

    async def process(self, frame: Frame, direction: Direction) -> None:
        if direction is Direction.DOWNSTREAM and isinstance(frame, CALLER_INPUT):
            if self.bot_active:
                await self.push(frame, direction)
            elif isinstance(frame, DTMFFrame) or (self.listening and isinstance(frame, TranscriptionFrame)):
                # Keys pressed while a prompt that asks nothing plays (the welcome) are type-ahead for
                # the next menu, as callers who know the menu expect; speech then is not kept.
                self.inbox.put_nowait(frame)
            return
        await self.push(frame, direction)

    def forget_input(self, keep_keys: bool = True) -> None:
        """Before a question: earlier speech is stale; the last TYPE_AHEAD keys pressed ahead stay
        (not for the queue's callback offer: a key pressed before it was offered is no answer)."""
        keys: list[Frame] = []
        while not self.inbox.empty():
            frame = self.inbox.get_nowait()
            if keep_keys and isinstance(frame, DTMFFrame):
                keys.append(frame)
        for frame in keys[-TYPE_AHEAD:]:
            self.inbox.put_nowait(frame)


def hold_music(sample_rate: int, seconds: float = 8.0) -> list[bytes]:
    """A quiet, slow chime loop (no third-party recording: nothing to license), as 20 ms frames."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    notes = (523.25, 659.25, 783.99, 659.25)  # C5 E5 G5 E5, one every 2 s, decaying
    wave = np.zeros_like(t)
    for i, hz in enumerate(notes):
        start = i * seconds / len(notes)
        local = np.clip(t - start, 0, None)
        on = (t >= start).astype(float)
        wave += on * np.sin(2 * np.pi * hz * local) * np.exp(-local * 1.6)
    pcm = (wave * 0.12 * 32767).astype("<i2").tobytes()
    step = sample_rate // 50 * 2
    return [pcm[i : i + step] for i in range(0, len(pcm) - step + 1, step)]


@dataclass
class Waiting:
    """A contact this call has in an ACD queue."""

    contact_id: str
    queue: str
    started: float = field(default_factory=time.monotonic)
    messages: asyncio.Queue[GatewayMessage] = field(default_factory=asyncio.Queue)
    state: Literal["waiting", "ringing", "connected", "done"] = "waiting"
    reservation_id: str = ""
    connected_at: float = 0.0


@dataclass(frozen=True)
class Placed:
    """A contact the ACD took: its waiting state, the request that placed it, the ACD's answer."""

    waiting: Waiting
    request: QueueRequest
    placed: dict[str, Any]


class GatewayFlowIO:
    """FlowIO on a real call (appliance/ivr/runner.py): every await raises CallerHungUp once the
    caller has hung up."""

    def __init__(self, call: Call, proc: FlowProcessor) -> None:
        self.call = call
        self.proc = proc
        self.started_bots: set[str] = set()

    def _check(self) -> None:
        if self.call.ended:
            raise CallerHungUp

    async def _guard(self, awaitable: Awaitable[Any]) -> Any:
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self.call.ended:
                raise CallerHungUp from None
            raise

    # --- talking and listening ---------------------------------------------------------------------

    async def say(self, text: str, language: str) -> None:
        self._check()
        if not text:
            return
        self.call.record.add_line("bot", text, language=language)
        self.call.records_changed()
        token, played = self.call.mark()
        await self.proc.push(SpeakFrame(text=text, language=language))  # type: ignore[arg-type]
        await self.proc.push(MarkFrame(token=token))
        await self._guard(played)

    async def ask(
        self,
        prompt: str | None,
        language: str,
        *,
        max_digits: int,
        terminator: str | None,
        timeout_s: float,
        words: dict[str, list[str]] | None = None,
    ) -> Reply:
        self._check()
        loop = asyncio.get_running_loop()
        self.proc.forget_input()
        self.proc.listening = True
        speaking = asyncio.ensure_future(self.say(prompt, language)) if prompt else None
        if speaking is not None:
            # Its CallerHungUp, when the caller leaves mid-prompt, is this ask's to raise, not the loop's.
            speaking.add_done_callback(lambda f: f.cancelled() or f.exception())
        digits = ""
        deadline = None if speaking is not None else loop.time() + timeout_s
        try:
            while True:
                waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(self.proc.inbox.get())}
                if speaking is not None:
                    waits.add(speaking)
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await self._guard(
                    asyncio.wait(waits, timeout=remaining, return_when="FIRST_COMPLETED")
                )
                getter = next(w for w in waits if w is not speaking)
                if speaking is not None and speaking in done:
                    speaking.result()
                    speaking = None
                    deadline = loop.time() + (INTER_DIGIT_S if digits else timeout_s)
                if getter not in done:
                    getter.cancel()
                    if speaking is None and deadline is not None and loop.time() >= deadline:
                        return Reply("dtmf", digits) if digits else Reply("none")
                    continue
                frame = getter.result()
                if isinstance(frame, DTMFFrame):
                    if speaking is not None:
                        self.call.session.playback.clear()  # a key stops the prompt
                    self.call.record.add_line("caller", f"<DTMF {frame.digit}>")
                    if terminator is not None and frame.digit == terminator:
                        return Reply("dtmf", digits)
                    digits += frame.digit
                    if len(digits) >= max_digits:
                        return Reply("dtmf", digits)
                    if speaking is None:
                        deadline = loop.time() + INTER_DIGIT_S
                elif isinstance(frame, TranscriptionFrame) and not digits and frame.text.strip():
                    self.call.record.add_line("caller", frame.text, language=frame.language)
                    return Reply("speech", frame.text)
        finally:
            self.proc.listening = False
            self.call.records_changed()
            if speaking is not None and not speaking.done():
                speaking.cancel()

    # --- bot ---------------------------------------------------------------------------------------

    async def bot(self, request: BotRequest) -> BotResult:
        self._check()
        call = self.call
        gw = call.gw
        cap = gw.cfg.max_bot_calls
        if request.overflow and cap is not None and gw.bots_talking >= cap:
            # Every bot place is taken: an agent now beats a bot that answers late.
            gw.metrics.transfers.labels(reason="bots_busy").inc()
            log.info(
                "call %s: %d bot conversations (max_bot_calls): on to the agents", call.record.call_id, cap
            )
            call.record.bot = request.bot
            call.record.summary = BOTS_BUSY
            call.records_changed()
            return BotResult("busy", reason="bots_busy", summary=BOTS_BUSY)
        gw.bots_talking += 1
        result: asyncio.Future[BotResult] = asyncio.get_running_loop().create_future()
        call.bot_result = result
        call.record.bot = request.bot
        self.proc.bot_active = True
        self.started_bots.add(request.bot)
        try:
            await self.proc.push(BotStartFrame(bot=request.bot, language=request.language))  # type: ignore[arg-type]
            outcome: BotResult = await self._guard(result)
        finally:
            gw.bots_talking -= 1
            self.proc.bot_active = False
            call.bot_result = None
        # A transfer's summary says why the caller goes to an agent; otherwise what the bot did.
        dm = call.session.dialogue
        call.record.summary = outcome.summary or (dm.summary() if dm is not None else "")
        call.records_changed()
        return outcome

    # --- queue -------------------------------------------------------------------------------------

    async def queue(self, request: QueueRequest) -> QueueResult:
        self._check()
        call = self.call
        if call.gw.acd is None:
            return QueueResult("failed", "this gateway has no ACD")
        placed = await self._place(request)
        if isinstance(placed, QueueResult):
            return placed
        try:
            while True:
                result = await self._wait(placed)
                if isinstance(result, QueueResult):
                    return result
                placed = result  # an agent transferred the caller to another queue: wait there
        finally:
            call.gw.contacts.pop(placed.waiting.contact_id, None)
            call.holding = False

    async def _place(self, request: QueueRequest) -> Placed | QueueResult:
        """A new contact for the caller in `request.queue`; a QueueResult("failed") when the ACD
        refuses it (an unknown queue, no ACD) or the request is bad."""
        call, gw = self.call, self.call.gw
        assert gw.acd is not None
        waiting = Waiting(contact_id=str(uuid.uuid4()), queue=request.queue)
        try:
            enqueue = self._enqueue_command(waiting, request)
        except ValidationError as exc:  # a flow naming a queue (or language) the ACD cannot take
            log.warning("flow %s: bad queue request: %s", call.record.flow, exc)
            return QueueResult("failed", "bad queue request")
        # Listed before the Enqueue: an agent ready now gets the offer in the same transaction as the
        # Enqueue's result, and the gateway may read that NOTIFY first.
        previous, call.waiting = call.waiting, waiting
        gw.contacts[waiting.contact_id] = call
        try:
            placed = await self._guard(gw.acd.submit(enqueue))
        except (AcdRejected, AcdUnavailable) as exc:
            log.warning("no place in queue %s: %s", request.queue, exc)
            waiting.state, call.waiting = "done", previous  # never queued: nothing to abandon
            gw.contacts.pop(waiting.contact_id, None)
            code = f"{exc.code}: " if isinstance(exc, AcdRejected) else ""
            return QueueResult("failed", f"{code}{exc}")
        except BaseException:
            gw.contacts.pop(waiting.contact_id, None)
            raise
        assert placed is not None
        call.record.queue, call.record.contact_id = request.queue, waiting.contact_id
        call.records_changed()
        return Placed(waiting, request, placed)

    def _enqueue_command(self, waiting: Waiting, request: QueueRequest) -> cmds.Enqueue:
        call, gw = self.call, self.call.gw
        return cmds.Enqueue(
            contact_id=waiting.contact_id,
            queue=request.queue,
            language=request.language,
            priority=request.priority,
            tier=request.tier,
            skills=request.skills,
            attributes={
                "service": call.record.service,
                "intent": request.intent,
                "summary": request.summary[:500],
                "transcript": call.transcript_link(),
                "gateway": gw.name,
            },
            gateway=gw.name,
            call_id=call.call_id,
            caller=call.number,
        )

    async def _wait(self, where: Placed) -> QueueResult | Placed:
        """Wait in the queue until served, timed out, a callback is taken or an agent transfers the
        caller elsewhere (the new place)."""
        call, gw = self.call, self.call.gw
        waiting, request, placed = where.waiting, where.request, where.placed
        assert gw.acd is not None
        lang = request.language
        every = float(placed.get("announce_every_s", 30) or 0)
        offer_callback = bool(placed.get("callback_offer"))
        if not placed.get("staffed") and not offer_callback:
            await gw.acd.submit(
                cmds.Abandon(contact_id=waiting.contact_id, reason="no_agents"), wait=False, durable=True
            )
            waiting.state = "done"
            return QueueResult("no_agents", "nobody staffed")
        early: GatewayMessage | None = None
        with contextlib.suppress(TimeoutError):
            early = await asyncio.wait_for(waiting.messages.get(), OFFER_GRACE_S)
        if early is None or early.type != "offer":
            # Nobody free at once: the caller hears their place (an agent free now is rung at once).
            await self._announce(placed, lang)
            if offer_callback:
                await self.say(QUEUE_LINES["callback_offer"][lang], lang)
        call.holding = True
        self.proc.forget_input(keep_keys=False)
        self.proc.listening = offer_callback
        loop = asyncio.get_running_loop()
        next_announce = loop.time() + every if every else None
        try:
            while True:
                if early is not None:
                    msg, early = early, None
                    outcome = await self._on_message(where, msg)
                    if outcome is not None:
                        return outcome
                    continue
                message = asyncio.ensure_future(waiting.messages.get())
                key = asyncio.ensure_future(self.proc.inbox.get())
                timeout = None if next_announce is None else max(0.0, next_announce - loop.time())
                done, _ = await self._guard(
                    asyncio.wait({message, key}, timeout=timeout, return_when="FIRST_COMPLETED")
                )
                for f in (message, key):
                    if f not in done:
                        f.cancel()
                if message in done:
                    outcome = await self._on_message(where, message.result())
                    if outcome is not None:
                        return outcome
                    continue
                if key in done:
                    frame = key.result()
                    if isinstance(frame, DTMFFrame) and frame.digit == "1" and offer_callback:
                        call.record.add_line("caller", "<DTMF 1>")
                        if await self._take_callback(waiting, lang):
                            return QueueResult("callback")
                    continue
                if next_announce is not None and loop.time() >= next_announce:
                    with contextlib.suppress(AcdUnavailable, AcdRejected):
                        status = await gw.acd.submit(cmds.Status(contact_id=waiting.contact_id))
                        if status and status.get("state") == "waiting":
                            call.holding = False
                            await self._announce(status, lang)
                            call.holding = True
                    next_announce = loop.time() + every
        finally:
            self.proc.listening = False

    async def _on_message(self, where: Placed, msg: GatewayMessage) -> QueueResult | Placed | None:
        """The ACD's word on the waiting contact: the end of the wait, or None to keep waiting."""
        if msg.type == "removed":
            where.waiting.state = "done"
            return QueueResult("timeout" if msg.reason == "timeout" else "no_agents", msg.reason)
        if msg.type == "offer":
            return await self._offered(where, msg)
        return None

    async def _announce(self, status: dict[str, Any], lang: str) -> None:
        position = int(status.get("position") or 0)
        if position <= 0:
            return
        parts = [QUEUE_LINES["position"][lang].format(position=position)]
        ewt = status.get("ewt_s")
        if ewt is not None:
            minutes = round(float(ewt) / 60)
            if float(ewt) < 60:
                parts.append(QUEUE_LINES["wait_short"][lang])
            elif minutes <= 1:
                parts.append(QUEUE_LINES["wait_minute"][lang])
            else:
                parts.append(QUEUE_LINES["wait_minutes"][lang].format(minutes=minutes))
        await self.say((" " if lang == "en" else "").join(parts), lang)

    async def _offered(self, where: Placed, msg: GatewayMessage) -> QueueResult | Placed | None:
        """Ring the agent the ACD chose; answered: bridge until one side hangs up or the agent
        transfers the caller to another queue (the new place)."""
        call, gw = self.call, self.call.gw
        waiting = where.waiting
        assert gw.acd is not None
        waiting.state, waiting.reservation_id = "ringing", msg.reservation_id
        outcome = await self._guard(call.ring_agent(msg))
        log.info(
            "call %s: contact %s offered to extension %s: %s",
            call.call_id,
            waiting.contact_id,
            msg.extension,
            outcome,
        )
        await gw.acd.submit(
            cmds.OfferResult(
                reservation_id=msg.reservation_id, contact_id=waiting.contact_id, outcome=outcome
            ),
            wait=False,
            durable=True,
        )
        if outcome != "answered":
            waiting.state = "waiting"
            return None
        waiting.state, waiting.connected_at = "connected", time.monotonic()
        call.holding = False
        ended_by = await self._guard(call.bridged())
        while ended_by == "refer":
            moved = await self._transfer(where, msg)
            if moved is not None:
                return moved
            ended_by = await self._guard(call.bridged())  # not transferred: still with the agent
        waiting.state = "done"
        await gw.acd.submit(self._contact_end(waiting, ended_by), wait=False, durable=True)
        if ended_by == "caller":
            raise CallerHungUp
        return QueueResult("served", f"agent {msg.extension}")

    def _contact_end(self, waiting: Waiting, ended_by: Literal["caller", "agent"]) -> cmds.ContactEnd:
        hold_s = self.call.hold_s
        return cmds.ContactEnd(
            contact_id=waiting.contact_id,
            talk_s=round(max(0.0, time.monotonic() - waiting.connected_at - hold_s), 3),
            hold_s=round(hold_s, 3),
            ended_by=ended_by,
        )

    async def _transfer(self, where: Placed, msg: GatewayMessage) -> Placed | None:
        """The agent's blind transfer: the caller gets a new contact in the target queue (the same
        language, priority and tier; the bot's summary, and who transferred), then the first contact
        ends as the agent's (they wrap it up) and their leg is hung up. None: the ACD refused the
        target (the agent's phone hears why, 404 for no such queue) and the caller stays with them."""
        call, gw = self.call, self.call.gw
        referral = call.referral
        assert gw.acd is not None and referral is not None
        waiting = where.waiting
        await call.notify_referral(100, "Trying")
        summary = f"{where.request.summary} (transferred by {msg.extension})".strip()
        request = replace(where.request, queue=referral.target, skills={}, intent="transfer", summary=summary)
        if not re.fullmatch(QUEUE_NAME, referral.target):
            await call.notify_referral(404, "No Such Queue")
            return None
        try:
            placed = await self._place(request)
        except BaseException:
            # The caller hung up meanwhile: the gateway ends the contact it knows (call.waiting), which
            # may be the new one; the agent's must end too.
            if waiting.state != "done":
                waiting.state = "done"
                gw._spawn(call._submit(gw.acd, self._contact_end(waiting, "caller")))
            raise
        if isinstance(placed, QueueResult):
            log.info("call %s: transfer to %s refused: %s", call.call_id, referral.target, placed.detail)
            unknown = "unknown_queue" in placed.detail
            await call.notify_referral(404 if unknown else 503, "No Such Queue" if unknown else "Not Queued")
            return None
        gw.contacts.pop(waiting.contact_id, None)
        waiting.state = "done"
        # In the background: not lost if the caller hangs up while the agent's phone is told.
        gw._spawn(call._submit(gw.acd, self._contact_end(waiting, "agent")))
        call.record.add_line("bot", f"<transferred by agent {msg.extension} to queue {referral.target}>")
        call.records_changed()
        await call.notify_referral(200, "OK")
        call.transferred()
        log.info("call %s: agent %s transferred it to queue %s", call.call_id, msg.extension, request.queue)
        return placed

    async def _take_callback(self, waiting: Waiting, lang: str) -> bool:
        gw = self.call.gw
        assert gw.acd is not None
        try:
            await gw.acd.submit(
                cmds.TakeCallback(
                    contact_id=waiting.contact_id,
                    queue=waiting.queue,
                    number=self.call.number,
                    language=lang,
                )
            )
        except (AcdRejected, AcdUnavailable, ValueError) as exc:  # ValueError: not a callable number
            log.warning("callback not taken: %s", exc)
            return False
        waiting.state = "done"
        self.call.record.outcome = "callback"
        return True

    async def callback(self, queue: str, language: str, variables: dict[str, str]) -> bool:
        self._check()
        gw = self.call.gw
        if gw.acd is None:
            return False
        try:
            await gw.acd.submit(cmds.TakeCallback(queue=queue, number=self.call.number, language=language))
        except (AcdRejected, AcdUnavailable, ValueError) as exc:
            log.warning("callback not taken: %s", exc)
            return False
        self.call.record.outcome = "callback"
        return True

    # --- connector, survey, hang-up ----------------------------------------------------------------

    async def lookup(self, tool: str, args: dict[str, str]) -> dict[str, Any]:
        self._check()
        engines = self.call.gw.engines
        connectors = [
            c for _, c in (engines.bots.values() if engines else []) if any(t.name == tool for t in c.tools())
        ]
        if not connectors:
            raise LookupError(f"no connector of this gateway has a tool {tool!r}")
        result: dict[str, Any] = await asyncio.wait_for(
            connectors[0].call(tool, dict(args), caller=self.call.number, call_id=self.call.call_id),
            LOOKUP_TIMEOUT_S,
        )
        return result

    async def survey(self, score: int) -> None:
        call = self.call
        waiting = call.waiting  # the contact the survey is about (done by now)
        call.gw.emit(
            Event(
                "contact.survey",
                contact_id=waiting.contact_id if waiting else None,
                call_id=call.call_id,
                queue=waiting.queue if waiting else None,
                data={"score": score},
            )
        )

    async def hangup(self) -> None:
        self._check()
        await self.call.flow_hangup()

    def now(self) -> datetime:
        return datetime.now(UTC)
