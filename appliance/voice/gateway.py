"""The voice gateway: a SIP UAS behind Kamailio that answers calls and runs, for each, its RTP, its bot
pipeline and its IVR flow (appliance/voice/flowcall.py); a queue node asks the ACD for an agent, and
the agent the ACD chooses is rung through Kamailio and bridged (a B2BUA leg).

One asyncio loop carries signalling, media, pipelines and flows; engines run their heavy work in
threads. Every per-call failure ends in a BYE and a stored record: a call never stays up without an
owner. The call record is written as the call goes (RecordWriter), and the call's events go to the
contact-center event log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count
from typing import Any, Literal, Protocol

from aicc.appliance.acd import commands as cmds
from aicc.appliance.acd.client import AcdClient, GatewayMessage
from aicc.appliance.calls.record import CallRecord, Outcome
from aicc.appliance.events.kinds import Event
from aicc.appliance.ivr.flow import BotNode
from aicc.appliance.ivr.runner import BotResult, run_flow
from aicc.appliance.ivr.store import FlowCatalog
from aicc.appliance.voice import dialog as dlg
from aicc.appliance.voice import sdp, sip
from aicc.appliance.voice.audio import resample
from aicc.appliance.voice.bot import BotEngines, BotSession, build_bot, build_echo
from aicc.appliance.voice.config import GatewayConfig
from aicc.appliance.voice.dialogue import DialogueParams
from aicc.appliance.voice.flowcall import FlowProcessor, GatewayFlowIO, Waiting, hold_music
from aicc.appliance.voice.frames import (
    DTMFFrame,
    EndFrame,
    Frame,
    HangupFrame,
    InputAudioFrame,
    MarkFrame,
    StartFrame,
    TransferFrame,
)
from aicc.appliance.voice.metrics import VoiceMetrics
from aicc.appliance.voice.rtp import NO_PEER, MediaClock, RtpSession, open_session
from aicc.appliance.voice.sip import SipMessage
from aicc.appliance.voice.transport import Addr, SipTransport
from aicc.appliance.voice.vad import VADParams

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, REFER"
TRANSCRIPT_HEADER = "X-AICC-Transcript"
CALL_RECORD_HEADER = "X-AICC-Call-Record"
SUMMARY_HEADER = "X-AICC-Summary"
QUEUE_HEADER = "X-AICC-Queue"
SERVICE_HEADER = "X-AICC-Service"

OfferOutcome = Literal["answered", "no_answer", "busy", "rejected", "unreachable"]


class RecordSink(Protocol):
    """Where call records go as the call goes (RecordWriter in production)."""

    def changed(self, rec: CallRecord) -> None: ...

    async def save_now(self, rec: CallRecord) -> None: ...


class EventSink(Protocol):
    def append(self, event: Event) -> None: ...


@dataclass
class Referral:
    """An agent's REFER of the bridged caller (a blind transfer), until its final NOTIFY."""

    target: str  # the Refer-To user: a queue name
    cseq: int  # the REFER's CSeq: the id of the implicit subscription (RFC 3515)
    dialog: dlg.Dialog  # the agent's leg it came on


def offer_outcome(status: int) -> OfferOutcome:
    """What a failed INVITE to an agent's phone means for the ACD."""
    if status in (486, 600):
        return "busy"
    if status == 603:
        return "rejected"
    if status in (487, 408):
        return "no_answer"  # our CANCEL at the ring timeout, or the phone never answered
    return "unreachable"  # 404/480 (not registered), 5xx, anything else


class Call:
    def __init__(
        self,
        gw: Gateway,
        invite: SipMessage,
        addr: Addr,
        neg: sdp.Negotiated,
        offer: sdp.SessionDescription,
        number: str,
        service: str,
    ) -> None:
        self.gw = gw
        self.invite = invite
        self.addr = addr
        self.neg = neg
        self.offer = offer
        self.local_tag = sip.new_tag()
        self.call_id = invite.call_id
        self.received_at = time.monotonic()
        self.dialled = number
        # Who calls: the From user, the number the business knows the customer by.
        self.number = sip.parse_uri(invite.from_.uri).user or ""
        self.flow = gw.flows.flow_for(number) if gw.flows is not None else None
        self.language = self.flow.language if self.flow is not None else "en"
        self.record = CallRecord(
            call_id=self.call_id,
            caller=self.number,
            service=service or number,
            language=self.language,
            gateway=gw.name,
            flow=self.flow.name if self.flow is not None else "",
        )
        self.dialog: dlg.Dialog | None = None
        self.rtp: RtpSession | None = None
        self.rtp_port = 0
        self.bot: BotSession | None = None
        self.flow_proc: FlowProcessor | None = None
        self.flow_task: asyncio.Task[None] | None = None
        self.bot_result: asyncio.Future[BotResult] | None = None
        self.bot_outcome: Outcome = "resolved"
        self.cancelled = False
        self.answered = False
        self.ended = False
        self.sdp_version = 1
        self.session_expires = 0
        self.last_refresh = time.monotonic()
        self.watchdog: asyncio.Task[None] | None = None
        self.setup_task: asyncio.Task[None] | None = None
        self._stage: dict[str, float] = {}
        self._marks: dict[int, asyncio.Future[None]] = {}
        self._mark_ids = count(1)
        # The ACD's view of the caller: the contact waiting (or talking) now, and the last one.
        self.waiting: Waiting | None = None
        self.holding = False  # hold music between announcements while waiting
        self._music: list[bytes] = []
        self._music_at = 0
        # The agent's leg once bridged; hold time the agent put the caller through.
        self.agent_leg: tuple[dlg.Dialog, RtpSession] | None = None
        self._bridge_done: asyncio.Future[Literal["agent", "caller", "refer"]] | None = None
        self._to_agent: deque[bytes] = deque(maxlen=10)
        self._to_caller: deque[bytes] = deque(maxlen=10)
        self._agent_port = 0
        self.hold_s = 0.0
        self._held_since: float | None = None
        self.referral: Referral | None = None

    @property
    def session(self) -> BotSession:
        assert self.bot is not None
        return self.bot

    def transcript_link(self) -> str:
        return f"{self.gw.cfg.public_url.rstrip('/')}/api/calls/{self.call_id}/transcript"

    def records_changed(self) -> None:
        if self.gw.records is not None:
            self.gw.records.changed(self.record)

    # --- setup ----------------------------------------------------------------------------------

    async def setup(self) -> None:
        cfg = self.gw.cfg
        out_rate = self.neg.codec.sample_rate
        if self.gw.engines is None or cfg.mode == "echo":
            self.bot = build_echo(out_rate)
        else:
            params = DialogueParams(llm_timeout_s=cfg.llm_timeout_s, hold_line=cfg.hold_line)
            self.flow_proc = FlowProcessor() if self.flow is not None else None
            self.bot = build_bot(
                self.gw.engines,
                self.record,
                out_rate,
                params,
                before_dialogue=[self.flow_proc] if self.flow_proc is not None else (),
                no_input_s=cfg.no_input_s,
                max_call_s=cfg.max_call_s,
                asr_timeout_s=cfg.asr_timeout_s,
                vad=VADParams(early_s=cfg.early_asr_s),
            )
        self.bot.pipeline.downstream_sink = self._from_bot
        self.bot.pipeline.reporter = self._report
        self._music = hold_music(out_rate)
        self.rtp = RtpSession(
            self.neg.codec,
            self.neg.payload_type,
            self.neg.remote_addr,
            dtmf_pt=self.neg.dtmf_pt,
            on_audio=self._audio_in,
            on_dtmf=self._dtmf_in,
            source=self._to_caller_source,
            jitter_depth=cfg.jitter_depth,
            rtcp_remote=self.neg.rtcp_addr,
        )
        self.rtp.sending = self.neg.direction in ("sendrecv", "sendonly")
        self.rtp_port = await open_session(self.rtp, cfg.sip_ip, cfg.rtp_port_min, cfg.rtp_port_max)
        engines = self.gw.engines
        if self.flow is not None and engines is not None:
            # The flow's bot greets the caller soon after pickup: have its greeting ready before answering.
            first = next((n.bot for n in self.flow.nodes.values() if isinstance(n, BotNode)), None)
            if first in engines.bots:
                self.bot.opening = engines.bots[first][0]
        await self.bot.prepare(self.language, engines)

    def answer_sdp(self) -> bytes:
        return sdp.answer(
            self.offer,
            self.neg,
            self.gw.cfg.advertised_ip,
            self.rtp_port,
            session_id=str(abs(hash(self.call_id)) % 10**10),
            version=self.sdp_version,
        )

    def start(self) -> None:
        assert self.bot is not None and self.rtp is not None
        self.answered = True
        self.record.answered_at = datetime.now(UTC)
        self.record.setup_s = round(time.monotonic() - self.received_at, 4)
        self.bot.pipeline.start()
        self.bot.pipeline.queue(
            StartFrame(
                call_id=self.call_id,
                language=self.language,
                caller=self.number,
                service=self.record.service,
            )
        )
        self.gw.clock.sessions.add(self.rtp)
        loop = asyncio.get_running_loop()
        self.watchdog = loop.create_task(self._watch())
        self.gw.emit(
            Event(
                "call.started",
                call_id=self.call_id,
                data={
                    "service": self.record.service,
                    "flow": self.record.flow,
                    "language": self.language,
                    "gateway": self.gw.name,
                },
            )
        )
        self.records_changed()
        if self.flow_proc is not None:
            self.flow_task = loop.create_task(self._run_flow(), name=f"flow-{self.call_id[:8]}")

    async def _run_flow(self) -> None:
        assert self.flow is not None and self.flow_proc is not None and self.gw.flows is not None
        io = GatewayFlowIO(self, self.flow_proc)
        variables = {"caller": self.number, "number": self.dialled, "language": self.language}
        try:
            result = await run_flow(self.flow, io, variables=variables, calendars=self.gw.flows.calendars)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("the flow %s failed", self.flow.name)
            await self.end("flow_error", "failed", send_bye=True)
            return
        if result.outcome.startswith("error") or result.outcome == "loop_limit":
            log.warning("flow %s ended with %s at %s", self.flow.name, result.outcome, result.path[-1:])
            await self.end("flow_error", "failed", send_bye=True)
        else:
            await self.flow_hangup()

    async def flow_hangup(self) -> None:
        """The flow is done with the call: hang up with the outcome of what happened in it."""
        if self.record.outcome == "callback":
            outcome: Outcome = "callback"
        elif self.record.agent:
            outcome = "transferred"
        else:
            outcome = self.bot_outcome
        await self.end("flow_end", outcome, send_bye=True)

    def mark(self) -> tuple[int, asyncio.Future[None]]:
        """A token to send through the pipeline behind audio, and the future its arrival resolves."""
        token = next(self._mark_ids)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._marks[token] = future
        return token, future

    # --- media and pipeline ---------------------------------------------------------------------

    def _audio_in(self, pcm: bytes) -> None:
        if self.agent_leg is not None:
            self._bridge_to_agent(pcm)
        elif self.bot is not None and not self.ended:
            self.bot.pipeline.queue(InputAudioFrame(pcm=pcm, sample_rate=self.neg.codec.sample_rate))

    def _dtmf_in(self, digit: str) -> None:
        if self.bot is not None and not self.ended and self.agent_leg is None:
            self.bot.pipeline.queue(DTMFFrame(digit=digit))

    def _to_caller_source(self) -> bytes | None:
        """What the caller hears: the agent once bridged (hold music while the agent holds), else the
        bot's audio, else hold music while waiting for an agent."""
        if self.agent_leg is not None and self._held_since is None:
            return self._to_caller.popleft() if self._to_caller else None
        frame = None if self.agent_leg is not None else self.session.playback.read_frame()
        if frame is None and self.holding and self._music:
            frame = self._music[self._music_at % len(self._music)]
            self._music_at += 1
        return frame

    def _report(self, name: str, value: float, labels: dict[str, str]) -> None:
        self.gw.metrics.report(name, value, labels)
        if name == "stage_seconds":
            self._stage[labels["stage"]] = round(value, 4)
            if labels["stage"] == "turn":
                self.record.turns.append(self._stage)
                self._stage = {}
                self.records_changed()
        elif name == "barge_ins":
            self.record.barge_ins += 1
        elif name == "tool_calls":
            self.records_changed()

    async def _from_bot(self, frame: Frame) -> None:
        if isinstance(frame, MarkFrame):
            future = self._marks.pop(frame.token, None)
            if future is not None and not future.done():
                future.set_result(None)
        elif isinstance(frame, TransferFrame):
            dm = self.session.dialogue
            self.record.summary = frame.summary
            self.records_changed()
            result = BotResult(
                "transfer", frame.reason, frame.intent, frame.summary, dm.language if dm is not None else ""
            )
            if not self._resolve_bot(result):
                await self.end("transfer_without_flow", "failed", send_bye=True)
        elif isinstance(frame, HangupFrame):
            self.bot_outcome = frame.outcome
            # The caller said goodbye: the flow goes on (its next node). Silence or the time limit:
            # the bot has said goodbye already, the call ends here.
            outcome: Literal["end", "hangup"] = "end" if frame.reason == "caller_goodbye" else "hangup"
            if not self._resolve_bot(BotResult(outcome, frame.reason)):
                await self.end(frame.reason, frame.outcome, send_bye=True)

    def _resolve_bot(self, result: BotResult) -> bool:
        future = self.bot_result
        if future is None or future.done():
            return False
        future.set_result(result)
        if result.outcome == "hangup":
            self.gw._spawn(self.end(result.reason, self.bot_outcome, send_bye=True))
        return True

    async def _watch(self) -> None:
        """Session timer, RTP inactivity and a hard length cap: a call never outlives its peer."""
        cfg = self.gw.cfg
        while not self.ended:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            # A caller in a queue or with an agent is no longer held to the bot's limit.
            cap = cfg.max_agent_call_s if self.waiting is not None else cfg.max_call_s + 30
            if self.session_expires and now - self.last_refresh > self.session_expires:
                await self.end("session_expired", "abandoned", send_bye=True)
            elif self.rtp is not None and now - self.rtp.stats.last_rx > cfg.rtp_timeout_s:
                await self.end("rtp_timeout", "abandoned", send_bye=True)
            elif now - self.received_at > cap:
                await self.end("max_length", "resolved", send_bye=True)

    # --- in-dialog requests ---------------------------------------------------------------------

    def on_reinvite(self, req: SipMessage, addr: Addr) -> None:
        """A re-INVITE: refresh the session timer and apply a new offer (hold, new address, codec)."""
        t = self.gw.transport
        self.last_refresh = time.monotonic()
        if req.body:
            try:
                offer = sdp.parse(req.body)
                neg = sdp.negotiate(offer)
            except sdp.SdpError as exc:
                t.respond(req, sip.response(req, 400, f"Bad SDP ({exc})", to_tag=self.local_tag), addr)
                return
            except sdp.NoCommonCodec as exc:
                t.respond(
                    req,
                    sip.response(
                        req,
                        488,
                        "Not Acceptable Here",
                        to_tag=self.local_tag,
                        headers=[("Warning", f'304 aicc "{exc}"')],
                    ),
                    addr,
                )
                return
            self.offer, self.neg = offer, neg
            if self.rtp is not None:
                self.rtp.update(neg.codec, neg.payload_type, neg.remote_addr, neg.dtmf_pt, neg.rtcp_addr)
                self.rtp.sending = neg.direction in ("sendrecv", "sendonly")
                self.rtp.stats.last_rx = time.monotonic()  # a held call sends no RTP: restart the clock
            if self.bot is not None and self.bot.playback.sample_rate != neg.codec.sample_rate:
                self.bot.playback.sample_rate = neg.codec.sample_rate
                self.bot.playback.frame_bytes = neg.codec.samples_per_frame * 2
            self.sdp_version += 1
        self._session_timer(req)
        headers = self._dialog_headers(req)
        t.respond(
            req,
            sip.response(req, 200, "OK", to_tag=self.local_tag, headers=headers, body=self.answer_sdp()),
            addr,
            reliable_2xx=True,
        )

    def on_update(self, req: SipMessage, addr: Addr) -> None:
        self.last_refresh = time.monotonic()
        self._session_timer(req)
        self.gw.transport.respond(
            req, sip.response(req, 200, "OK", to_tag=self.local_tag, headers=self._dialog_headers(req)), addr
        )

    def _session_timer(self, req: SipMessage) -> None:
        value = req.get("Session-Expires")
        if value:
            seconds = value.split(";")[0].strip()
            if seconds.isdigit():
                self.session_expires = max(int(seconds), self.gw.cfg.min_se_s)

    def _dialog_headers(self, req: SipMessage) -> list[tuple[str, str]]:
        cfg = self.gw.cfg
        headers = [
            ("Contact", f"<sip:bot@{cfg.advertised_ip}:{cfg.sip_port}>"),
            ("Allow", ALLOW),
            ("Supported", "timer"),
            ("User-Agent", "aicc-voice"),
        ]
        if self.session_expires:
            headers.append(("Session-Expires", f"{self.session_expires};refresher=uac"))
            if "timer" in (req.get("Supported") or "") or "timer" in (req.get("Require") or ""):
                headers.append(("Require", "timer"))
        return headers

    # --- the agent's leg -------------------------------------------------------------------------

    async def ring_agent(self, offer: GatewayMessage) -> OfferOutcome:
        """Ring the agent the ACD chose, through Kamailio, carrying the transcript link and the bot's
        summary; answered: bridge the caller to them. Cancelled (the caller hung up): the INVITE is
        CANCELled and the phone stops ringing."""
        cfg = self.gw.cfg
        agent_rtp = RtpSession(
            self.neg.codec,
            self.neg.payload_type,
            NO_PEER,
            dtmf_pt=101,
            on_audio=self._audio_from_agent,
            on_dtmf=lambda d: None,
            source=self._agent_source,
            jitter_depth=cfg.jitter_depth,
        )
        self._to_agent.clear()
        self._to_caller.clear()
        summary = " ".join(self.record.summary.split())[:300]
        headers = [
            (TRANSCRIPT_HEADER, self.transcript_link()),
            (CALL_RECORD_HEADER, self.call_id),
            (QUEUE_HEADER, self.waiting.queue if self.waiting else ""),
        ]
        if summary:
            headers.append((SUMMARY_HEADER, summary))
        try:
            self._agent_port = await open_session(agent_rtp, cfg.sip_ip, cfg.rtp_port_min, cfg.rtp_port_max)
            offer_sdp = sdp.offer(cfg.advertised_ip, self._agent_port, codecs=(self.neg.codec.name,))
            dialog, ok = await dlg.invite(
                self.gw.transport,
                target=f"sip:{offer.extension}@{cfg.sip_domain}",
                proxy=cfg.proxy_addr,
                from_uri=f"sip:{self.number or 'bot'}@{cfg.sip_domain}",
                sdp=offer_sdp,
                headers=headers,
                ring_timeout=offer.ring_timeout_s,
            )
            answer = sdp.parse(ok.body)
            neg = sdp.negotiate(answer, preference=(self.neg.codec.name, "PCMU", "PCMA", "G722"))
            agent_rtp.update(neg.codec, neg.payload_type, neg.remote_addr, neg.dtmf_pt, neg.rtcp_addr)
        except dlg.CallFailed as exc:
            agent_rtp.close()
            outcome = offer_outcome(exc.status)
            log.info("agent %s did not take the call: %s (%s)", offer.extension, exc, outcome)
            self.gw.metrics.agent_legs.labels(outcome=outcome).inc()
            return outcome
        except (sdp.SdpError, sdp.NoCommonCodec, OSError) as exc:
            agent_rtp.close()
            log.warning("agent leg to %s failed: %s", offer.extension, exc)
            self.gw.metrics.agent_legs.labels(outcome="unreachable").inc()
            return "unreachable"
        except asyncio.CancelledError:
            agent_rtp.close()
            raise
        if self.ended:
            await dlg.bye(self.gw.transport, dialog)
            agent_rtp.close()
            raise asyncio.CancelledError
        self.agent_leg = (dialog, agent_rtp)
        self._bridge_done = asyncio.get_running_loop().create_future()
        self.gw.agent_dialogs[dialog.call_id] = self
        self.gw.clock.sessions.add(agent_rtp)
        self.record.transfer_target = offer.extension
        self.record.agent = offer.extension
        self.record.add_line("bot", f"<bridged to agent {offer.extension}>")
        self.records_changed()
        self.gw.metrics.agent_legs.labels(outcome="answered").inc()
        return "answered"

    async def bridged(self) -> Literal["agent", "caller", "refer"]:
        """Wait until the bridged conversation ends (who hung up) or the agent transfers the caller
        ("refer": `referral` says where). After a transfer that failed, call again to keep waiting."""
        assert self._bridge_done is not None
        if self._bridge_done.done() and self._bridge_done.result() == "refer" and self.referral is None:
            if self.ended:
                return "caller"
            if self.agent_leg is None:
                return "agent"  # hung up while the transfer was tried
            self._bridge_done = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._bridge_done)

    def agent_hung_up(self) -> None:
        """The agent's BYE: the caller goes back to the flow (the survey, a goodbye)."""
        self._close_agent_leg()
        if self._bridge_done is not None and not self._bridge_done.done():
            self._bridge_done.set_result("agent")

    def on_agent_refer(self, req: SipMessage, addr: Addr) -> None:
        """The agent's blind transfer (REFER, RFC 3515) of the bridged caller to a queue: accepted
        (202) here; the flow tries it and reports by NOTIFY (100, then 200 or why not). A target
        with Replaces (attended transfer) is not supported: 501."""
        t = self.gw.transport
        assert self.agent_leg is not None
        dialog = self.agent_leg[0]

        def answer(status: int, reason: str, headers: list[tuple[str, str]] | None = None) -> None:
            res = sip.response(req, status, reason, to_tag=dialog.local_tag, headers=headers)
            t.respond(req, res, addr)

        refer_to = req.get("Refer-To") or ""
        try:
            uri = sip.parse_name_addr(refer_to).uri
            target = sip.parse_uri(uri).user
        except sip.SipParseError:
            answer(400, "Bad Refer-To")
            return
        if "?" in uri:
            answer(501, "Attended Transfer Not Supported")
            return
        if not target:
            answer(400, "Refer-To Names No Queue")
            return
        if self.referral is not None:
            answer(491, "Request Pending")
            return
        if self._bridge_done is None or self._bridge_done.done():
            answer(481, "Call/Transaction Does Not Exist")
            return
        answer(202, "Accepted", [("Contact", f"<{dialog.contact}>")])
        self.referral = Referral(target=target, cseq=req.cseq[0], dialog=dialog)
        self._bridge_done.set_result("refer")

    async def notify_referral(self, status: int, reason: str) -> None:
        """Tell the agent's phone how the transfer goes (a sipfrag NOTIFY); a final status (>= 200)
        ends the referral. A phone that does not answer the NOTIFY changes nothing here."""
        ref = self.referral
        if ref is None:
            return
        t = self.gw.transport
        final = status >= 200
        req = ref.dialog.request(
            "NOTIFY",
            via_host=t.local,
            headers=[
                ("Event", f"refer;id={ref.cseq}"),
                ("Subscription-State", "terminated;reason=noresource" if final else "active;expires=60"),
            ],
            body=f"SIP/2.0 {status} {reason}\r\n".encode(),
            content_type="message/sipfrag;version=2.0",
        )
        if final:
            self.referral = None
        try:
            await t.request(req, ref.dialog.next_hop(), timeout=4)
        except Exception as exc:  # a timeout, or the phone gone
            log.info("NOTIFY of the transfer to %s not answered: %s", ref.target, exc)

    def transferred(self) -> None:
        """The caller is in the new queue: the agent's leg ends (BYE in the background; a browser
        phone hangs up on the NOTIFY's 200 too, and its BYE then finds no dialog)."""
        if self.agent_leg is not None:
            self.gw._spawn(self._bye(self.agent_leg[0]))
            self._close_agent_leg()
        self.hold_s = 0.0  # the next agent's contact counts its own hold time

    def _close_agent_leg(self) -> None:
        if self.agent_leg is None:
            return
        dialog, agent_rtp = self.agent_leg
        self.agent_leg = None
        self._held(False)
        self.gw.clock.sessions.discard(agent_rtp)
        self.gw.agent_dialogs.pop(dialog.call_id, None)
        agent_rtp.close()

    def on_agent_reinvite(self, req: SipMessage, addr: Addr) -> None:
        """The agent's phone holds (sendonly/inactive) or resumes the call; the hold time is recorded."""
        t = self.gw.transport
        assert self.agent_leg is not None
        dialog, agent_rtp = self.agent_leg
        direction = "sendrecv"  # ours, answering the agent's offer: recvonly while they hold
        if req.body:
            try:
                offer = sdp.parse(req.body)
                neg = sdp.negotiate(offer, preference=(agent_rtp.codec.name, "PCMU", "PCMA", "G722"))
            except (sdp.SdpError, sdp.NoCommonCodec) as exc:
                t.respond(req, sip.response(req, 488, "Not Acceptable Here", to_tag=dialog.local_tag), addr)
                log.info("agent re-INVITE refused: %s", exc)
                return
            agent_rtp.update(neg.codec, neg.payload_type, neg.remote_addr, neg.dtmf_pt, neg.rtcp_addr)
            direction = neg.direction
        self._held(direction in ("recvonly", "inactive"))
        body = sdp.offer(self.gw.cfg.advertised_ip, self._agent_port, codecs=(agent_rtp.codec.name,))
        body = body.replace(b"a=sendrecv", f"a={direction}".encode())
        headers = [("Contact", f"<{dialog.contact}>"), ("Allow", ALLOW)]
        t.respond(
            req,
            sip.response(req, 200, "OK", to_tag=dialog.local_tag, headers=headers, body=body),
            addr,
            reliable_2xx=True,
        )

    def _held(self, held: bool) -> None:
        now = time.monotonic()
        waiting = self.waiting
        if held and self._held_since is None:
            self._held_since = now
            self.holding = True  # the caller hears hold music, not silence
            self.gw.emit(
                Event(
                    "contact.held",
                    call_id=self.call_id,
                    contact_id=waiting.contact_id if waiting else None,
                    queue=waiting.queue if waiting else None,
                )
            )
        elif not held and self._held_since is not None:
            held_s = now - self._held_since
            self.hold_s += held_s
            self._held_since = None
            self.holding = False
            self.gw.emit(
                Event(
                    "contact.resumed",
                    call_id=self.call_id,
                    contact_id=waiting.contact_id if waiting else None,
                    queue=waiting.queue if waiting else None,
                    data={"hold_s": round(held_s, 3)},
                )
            )

    def _bridge_to_agent(self, pcm: bytes) -> None:
        assert self.agent_leg is not None
        self._to_agent.append(resample(pcm, self.neg.codec.sample_rate, self.agent_leg[1].codec.sample_rate))

    def _audio_from_agent(self, pcm: bytes) -> None:
        if self.agent_leg is not None:
            self._to_caller.append(
                resample(pcm, self.agent_leg[1].codec.sample_rate, self.neg.codec.sample_rate)
            )

    def _agent_source(self) -> bytes | None:
        if self._held_since is not None:
            return None  # the agent holds the call: nothing from the caller reaches them
        return self._to_agent.popleft() if self._to_agent else None

    # --- teardown -------------------------------------------------------------------------------

    async def end(self, reason: str, outcome: Outcome, *, send_bye: bool) -> None:
        if self.ended:
            return
        self.ended = True
        if self.record.agent and outcome not in ("failed", "callback"):
            outcome = "transferred"
        self.record.outcome = outcome
        self.record.end_reason = reason
        self.record.ended_at = datetime.now(UTC)
        self.gw.calls.pop(self.call_id, None)
        self._leave_queue()
        if self.flow_task is not None and self.flow_task is not asyncio.current_task():
            self.flow_task.cancel()
        for future in self._marks.values():
            future.cancel()
        if self.bot_result is not None and not self.bot_result.done():
            self.bot_result.cancel()
        if self.rtp is not None:
            self.gw.clock.sessions.discard(self.rtp)
        if self.bot is not None:
            with contextlib.suppress(Exception):
                await self.bot.pipeline.broadcast(EndFrame(reason=reason))
            await self.bot.pipeline.stop()
        if send_bye and self.dialog is not None:
            # Retransmitted until answered or 32 s: in the background, so a dead peer does not hold up
            # the record, the metrics or the freed capacity.
            self.gw._spawn(self._bye(self.dialog))
        if self.agent_leg is not None:
            self.gw._spawn(self._bye(self.agent_leg[0]))
            self._close_agent_leg()
        if self._bridge_done is not None and not self._bridge_done.done():
            self._bridge_done.set_result("caller")
        media = ""
        if self.rtp is not None:
            self._media_metrics(self.rtp)
            self.rtp.close()  # sends the RTCP BYE, before our SIP BYE (a task) leaves
            media = self.rtp.quality()
        if self.watchdog is not None and self.watchdog is not asyncio.current_task():
            self.watchdog.cancel()
        if self.answered:
            self.gw.metrics.active.dec()
        self.gw.metrics.finished.labels(outcome=outcome).inc()
        log.info(
            "call ended: %s (%s), %.1f s; %s", outcome, reason, time.monotonic() - self.received_at, media
        )
        self.gw.emit(
            Event(
                "call.ended",
                call_id=self.call_id,
                data={
                    "outcome": outcome,
                    "end_reason": reason,
                    "bot": self.record.bot,
                    "duration_s": round(time.monotonic() - self.received_at, 3),
                    "transferred": bool(self.record.agent or self.waiting),
                },
            )
        )
        if self.gw.records is not None:
            await self.gw.records.save_now(self.record)

    def _leave_queue(self) -> None:
        """The caller hung up: the ACD must learn it, whatever the contact's state (never lost)."""
        waiting, acd = self.waiting, self.gw.acd
        if waiting is None or acd is None or waiting.state == "done":
            return
        if waiting.state == "connected":
            cmd: Any = cmds.ContactEnd(
                contact_id=waiting.contact_id,
                talk_s=round(max(0.0, time.monotonic() - waiting.connected_at - self.hold_s), 3),
                hold_s=round(self.hold_s, 3),
                ended_by="caller",
            )
        else:
            cmd = cmds.Abandon(contact_id=waiting.contact_id, reason="caller_hangup")
        waiting.state = "done"
        self.gw._spawn(self._submit(acd, cmd))

    @staticmethod
    async def _submit(acd: AcdClient, cmd: Any) -> None:
        await acd.submit(cmd, wait=False, durable=True)

    async def _bye(self, dialog: dlg.Dialog) -> None:
        with contextlib.suppress(Exception):
            await dlg.bye(self.gw.transport, dialog)

    def _media_metrics(self, rtp: RtpSession) -> None:
        m = self.gw.metrics
        m.rtp_packets.labels(direction="in").inc(rtp.stats.packets_in)
        m.rtp_packets.labels(direction="out").inc(rtp.stats.packets_out)
        m.rtp_problems.labels(kind="late").inc(rtp.jitter.stats.late)
        m.rtp_problems.labels(kind="lost").inc(rtp.jitter.stats.lost)
        m.rtp_problems.labels(kind="malformed").inc(rtp.stats.bad_packets)


@dataclass
class GatewayStats:
    invites: int = 0
    answered: int = 0


class Gateway:
    def __init__(
        self,
        cfg: GatewayConfig,
        engines: BotEngines | None,
        *,
        metrics: VoiceMetrics | None = None,
        records: RecordSink | None = None,
        events: EventSink | None = None,
        acd: AcdClient | None = None,
        flows: FlowCatalog | None = None,
    ) -> None:
        self.cfg = cfg
        self.engines = engines
        self.metrics = metrics or VoiceMetrics()
        # Without max_bot_calls every call may talk with the bot: max_calls is the bound.
        self.metrics.bot_places.set(cfg.max_bot_calls or cfg.max_calls)
        self.records = records
        self.events = events
        self.acd = acd
        if acd is not None:
            acd.on_gateway = self.on_acd_message
        # Bot calls run a flow: the database's (a catalog) or, with none, the flows shipped with aicc.
        self.flows = flows if flows is not None or engines is None else FlowCatalog(None)
        self.name = cfg.name or f"{cfg.advertised_ip}:{cfg.sip_port}"
        self.contacts: dict[str, Call] = {}  # ACD contact id -> the call waiting in the queue
        self.bots_talking = 0  # calls in a flow's bot node now (max_bot_calls)
        self.metrics.bot_conversations.set_function(lambda: self.bots_talking)
        self.calls: dict[str, Call] = {}
        self.agent_dialogs: dict[str, Call] = {}
        self.clock = MediaClock()
        self.stats = GatewayStats()
        self.transport = SipTransport(
            self._on_request,
            on_malformed=lambda r: self.metrics.sip_malformed.inc(),
            on_stray_response=self._on_stray_response,
        )
        self.transport.on_ack_timeout = self._ack_timeout  # type: ignore[method-assign]
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(
            lambda: self.transport, local_addr=(self.cfg.sip_ip, self.cfg.sip_port)
        )
        self.clock.on_tick_error = lambda exc: self.metrics.processor_errors.labels(processor="media").inc()
        self.clock.start()
        self._late = loop.create_task(self._late_ticks())
        self._heartbeat = loop.create_task(self._heartbeats()) if self.acd is not None else None
        if self.engines is not None and self.cfg.mode == "bot":
            self._spawn(self._warm())
        else:
            self.metrics.ready.set(1)

    async def _warm(self) -> None:
        assert self.engines is not None
        started = time.monotonic()
        try:
            await self.engines.warm_prompts()
            log.info("prompts synthesised in %.1f s", time.monotonic() - started)
        except Exception:
            # Calls still work: each one synthesises its greeting; graceful lines may then be missing.
            log.exception("synthesising the prompts at start-up failed")
            self.metrics.engine_errors.labels(engine="tts").inc()
        self.metrics.ready.set(1)  # a failed warm-up still ends it: waiting longer would not help

    async def _late_ticks(self) -> None:
        seen = 0
        while True:
            await asyncio.sleep(5)
            if self.clock.late_ticks > seen:
                self.metrics.late_ticks.inc(self.clock.late_ticks - seen)
                seen = self.clock.late_ticks

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            await call.end("shutdown", "abandoned", send_bye=True)
        await asyncio.sleep(0.1)  # let the BYE tasks put their first transmission on the wire
        self._late.cancel()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        await self.clock.stop()
        self.transport.close()

    def emit(self, event: Event) -> None:
        if self.events is not None:
            self.events.append(event)

    def on_acd_message(self, message: GatewayMessage) -> None:
        """An offer (ring this agent) or a removal (waited too long) for a contact of one of our calls."""
        call = self.contacts.get(message.contact_id)
        # A contact whose caller is gone: its abandon is on the way to the ACD, which frees the agent.
        if call is not None and call.waiting is not None and call.waiting.contact_id == message.contact_id:
            call.waiting.messages.put_nowait(message)

    async def _heartbeats(self) -> None:
        """Tell the ACD this gateway is alive: its contacts are abandoned when it falls silent."""
        assert self.acd is not None
        while True:
            with contextlib.suppress(Exception):
                async with self.acd.pool.connection() as conn:
                    await conn.execute(
                        "INSERT INTO aicc.gateway_heartbeats (gateway, seen_at) VALUES (%s, now()) "
                        "ON CONFLICT (gateway) DO UPDATE SET seen_at = now()",
                        (self.name,),
                    )
            await asyncio.sleep(5)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- requests -------------------------------------------------------------------------------

    def _on_request(self, req: SipMessage, addr: Addr) -> None:
        t = self.transport
        call = self.calls.get(req.call_id)
        agent_call = self.agent_dialogs.get(req.call_id)
        m = req.method
        if m == "INVITE":
            if req.to.tag:
                if call is not None and call.answered and req.to.tag == call.local_tag:
                    call.on_reinvite(req, addr)
                elif agent_call is not None and agent_call.agent_leg is not None:
                    agent_call.on_agent_reinvite(req, addr)
                else:
                    t.respond(req, sip.response(req, 481, "Call/Transaction Does Not Exist"), addr)
            elif call is not None:
                return  # a retransmission the transaction layer missed (new branch): ignore
            else:
                self._spawn(self._guarded_invite(req, addr))
        elif m == "ACK":
            if call is not None and call.dialog is None and call.answered:
                call.dialog = dlg.uas_dialog(
                    call.invite, call.local_tag, f"sip:bot@{self.cfg.advertised_ip}:{self.cfg.sip_port}"
                )
            if req.body and call is not None and call.rtp is not None:
                self._ack_answer(call, req)
        elif m == "BYE":
            if call is not None:
                t.respond(req, sip.response(req, 200, "OK", to_tag=call.local_tag), addr)
                self._spawn(
                    call.end(
                        "caller_hangup",
                        "abandoned"
                        if call.record.outcome == "abandoned" and not call.record.tool_calls
                        else "resolved",
                        send_bye=False,
                    )
                )
            elif agent_call is not None:
                t.respond(req, sip.response(req, 200, "OK"), addr)
                agent_call.agent_hung_up()
            else:
                t.respond(req, sip.response(req, 481, "Call/Transaction Does Not Exist"), addr)
        elif m == "CANCEL":
            if call is not None and not call.answered:
                t.respond(req, sip.response(req, 200, "OK", to_tag=call.local_tag), addr)
                call.cancelled = True
                if call.setup_task is not None:
                    call.setup_task.cancel()  # stop synthesising prompts for a caller who is gone
                t.respond(
                    call.invite,
                    sip.response(call.invite, 487, "Request Terminated", to_tag=call.local_tag),
                    call.addr,
                )
                self.metrics.rejected.labels(reason="cancelled").inc()
            else:
                t.respond(
                    req,
                    sip.response(
                        req,
                        481 if call is None else 200,
                        "Call/Transaction Does Not Exist" if call is None else "OK",
                    ),
                    addr,
                )
        elif m == "OPTIONS":
            # Kamailio's dispatcher probes: 503 while full, so new calls go to another voicebot host.
            if len(self.calls) >= self.cfg.max_calls:
                t.respond(
                    req, sip.response(req, 503, "Service Unavailable", headers=[("Retry-After", "5")]), addr
                )
            else:
                t.respond(
                    req,
                    sip.response(req, 200, "OK", headers=[("Allow", ALLOW), ("Accept", "application/sdp")]),
                    addr,
                )
        elif m == "REFER":
            if agent_call is not None and agent_call.agent_leg is not None:
                agent_call.on_agent_refer(req, addr)
            else:
                # Callers do not transfer themselves; unknown dialogs are unknown.
                refused = (403, "Forbidden") if call is not None else (481, "Call/Transaction Does Not Exist")
                t.respond(req, sip.response(req, *refused), addr)
        elif m == "UPDATE":
            if call is not None and call.answered:
                call.on_update(req, addr)
            else:
                t.respond(req, sip.response(req, 481, "Call/Transaction Does Not Exist"), addr)
        elif m == "INFO":
            t.respond(
                req,
                sip.response(
                    req,
                    200 if call is not None else 481,
                    "OK" if call is not None else "Call/Transaction Does Not Exist",
                ),
                addr,
            )
        else:
            t.respond(req, sip.response(req, 405, "Method Not Allowed", headers=[("Allow", ALLOW)]), addr)

    def _ack_answer(self, call: Call, ack: SipMessage) -> None:
        with contextlib.suppress(sdp.SdpError, sdp.NoCommonCodec):
            neg = sdp.negotiate(sdp.parse(ack.body))
            assert call.rtp is not None
            call.rtp.update(neg.codec, neg.payload_type, neg.remote_addr, neg.dtmf_pt, neg.rtcp_addr)

    async def _guarded_invite(self, req: SipMessage, addr: Addr) -> None:
        """Whatever goes wrong while answering, the caller gets a final response and nothing is left
        behind in the call table."""
        try:
            await self._on_invite(req, addr)
        except Exception:
            log.exception("answering an INVITE failed")
            call = self.calls.pop(req.call_id, None)
            if call is not None and not call.answered:
                if call.rtp is not None:
                    call.rtp.close()
                self.transport.respond(req, sip.response(req, 500, "Server Internal Error"), addr)
            elif call is not None:
                self.calls[req.call_id] = call
                await call.end("internal_error", "failed", send_bye=True)
            else:
                self.transport.respond(req, sip.response(req, 500, "Server Internal Error"), addr)

    async def _on_invite(self, req: SipMessage, addr: Addr) -> None:
        t = self.transport
        self.stats.invites += 1

        def reject(
            status: int, reason: str, label: str, headers: list[tuple[str, str]] | None = None
        ) -> None:
            self.metrics.rejected.labels(reason=label).inc()
            t.respond(req, sip.response(req, status, reason, to_tag=sip.new_tag(), headers=headers), addr)

        if len(self.calls) >= self.cfg.max_calls:
            reject(503, "Service Unavailable", "capacity", [("Retry-After", "5")])
            return
        contact = f"sip:bot@{self.cfg.advertised_ip}:{self.cfg.sip_port}"
        try:
            dialog = dlg.uas_dialog(req, "", contact)  # checks Contact and Record-Route before anything
        except sip.SipParseError as exc:
            self.metrics.sip_malformed.inc()
            reject(400, f"Bad Request ({exc.reason})", "bad_request")
            return
        ctype = (req.get("Content-Type") or "").split(";")[0].strip().lower()
        if not req.body:
            reject(
                488, "Not Acceptable Here", "no_offer", [("Warning", '399 aicc "an SDP offer is required"')]
            )
            return
        if ctype != "application/sdp":
            reject(415, "Unsupported Media Type", "bad_request", [("Accept", "application/sdp")])
            return
        try:
            offer = sdp.parse(req.body)
            neg = sdp.negotiate(offer)
        except sdp.SdpError as exc:
            self.metrics.sip_malformed.inc()
            reject(400, f"Bad Request (SDP: {exc})", "bad_sdp")
            return
        except sdp.NoCommonCodec as exc:
            reject(488, "Not Acceptable Here", "codec", [("Warning", f'304 aicc "{exc}"')])
            return
        se = req.get("Session-Expires")
        if se:
            seconds = se.split(";")[0].strip()
            if not seconds.isdigit():
                reject(400, "Bad Request (Session-Expires)", "bad_request")
                return
            if int(seconds) < self.cfg.min_se_s:
                reject(
                    422, "Session Interval Too Small", "session_timer", [("Min-SE", str(self.cfg.min_se_s))]
                )
                return
        number = sip.parse_uri(req.uri).user or ""
        call = Call(self, req, addr, neg, offer, number, req.get(SERVICE_HEADER) or "")
        self.calls[call.call_id] = call
        t.respond(req, sip.response(req, 100, "Trying"), addr)
        try:
            t.respond(
                req,
                sip.response(
                    req,
                    180,
                    "Ringing",
                    to_tag=call.local_tag,
                    headers=[("Contact", f"<sip:bot@{self.cfg.advertised_ip}:{self.cfg.sip_port}>")],
                ),
                addr,
            )
            call.setup_task = asyncio.get_running_loop().create_task(call.setup())
            done, _ = await asyncio.wait({call.setup_task}, timeout=30)
            if not done:
                call.setup_task.cancel()
                raise TimeoutError("bot setup took longer than 30 s")
            if not call.setup_task.cancelled():
                call.setup_task.result()
        except Exception as exc:
            log.warning("call setup failed: %s", exc)
            self.calls.pop(call.call_id, None)
            if call.rtp is not None:
                call.rtp.close()
            if not call.cancelled:
                reject(503, "Service Unavailable", "bot_unavailable", [("Retry-After", "10")])
            return
        if call.cancelled:
            self.calls.pop(call.call_id, None)
            if call.rtp is not None:
                call.rtp.close()
            return
        call._session_timer(req)
        call.last_refresh = time.monotonic()
        ok = sip.response(
            req, 200, "OK", to_tag=call.local_tag, headers=call._dialog_headers(req), body=call.answer_sdp()
        )
        t.respond(req, ok, addr, reliable_2xx=True)
        dialog.local_tag = call.local_tag
        call.dialog = dialog
        self.stats.answered += 1
        self.metrics.active.inc()
        self.metrics.setup.observe(time.monotonic() - call.received_at)
        call.start()

    def _ack_timeout(self, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            self._spawn(call.end("no_ack", "failed", send_bye=True))

    def _on_stray_response(self, res: SipMessage, addr: Addr) -> None:
        # A retransmitted 2xx to our INVITE (transfer leg): the ACK was lost, send it again.
        call = self.agent_dialogs.get(res.call_id)
        if call is not None and call.agent_leg is not None and res.status == 200 and res.cseq[1] == "INVITE":
            dlg.send_ack(self.transport, call.agent_leg[0])
