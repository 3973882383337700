"""The voice gateway: a SIP UAS behind Kamailio that answers calls, runs each call's RTP and bot
pipeline, and bridges a call to an agent (B2BUA leg through Kamailio) on transfer.

One asyncio loop carries signalling, media and the pipelines; engines run their heavy work in threads.
Every per-call failure ends in a BYE and a stored record: a call never stays up without an owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aicc.appliance.calls.record import CallRecord, Outcome
from aicc.appliance.voice import dialog as dlg
from aicc.appliance.voice import sdp, sip
from aicc.appliance.voice.audio import resample
from aicc.appliance.voice.bot import BotEngines, BotSession, build_bot, build_echo
from aicc.appliance.voice.config import GatewayConfig
from aicc.appliance.voice.dialogue import DialogueParams
from aicc.appliance.voice.frames import (
    DTMFFrame,
    EndFrame,
    Frame,
    HangupFrame,
    InputAudioFrame,
    StartFrame,
    TransferFailedFrame,
    TransferFrame,
)
from aicc.appliance.voice.metrics import VoiceMetrics
from aicc.appliance.voice.rtp import NO_PEER, MediaClock, RtpSession, open_session
from aicc.appliance.voice.sip import SipMessage
from aicc.appliance.voice.transport import Addr, SipTransport
from aicc.appliance.voice.vad import VADParams

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
TRANSCRIPT_HEADER = "X-AICC-Transcript"
CALL_RECORD_HEADER = "X-AICC-Call-Record"
SERVICE_HEADER = "X-AICC-Service"

RecordSaver = Callable[[CallRecord], Awaitable[None]]


class Call:
    def __init__(
        self,
        gw: Gateway,
        invite: SipMessage,
        addr: Addr,
        neg: sdp.Negotiated,
        offer: sdp.SessionDescription,
        language: str,
        service: str,
    ) -> None:
        self.gw = gw
        self.invite = invite
        self.addr = addr
        self.neg = neg
        self.offer = offer
        self.language = language
        self.local_tag = sip.new_tag()
        self.call_id = invite.call_id
        self.received_at = time.monotonic()
        self.record = CallRecord(
            call_id=self.call_id, caller=invite.from_.uri, service=service, language=language
        )
        self.dialog: dlg.Dialog | None = None
        self.rtp: RtpSession | None = None
        self.rtp_port = 0
        self.bot: BotSession | None = None
        self.cancelled = False
        self.answered = False
        self.ended = False
        self.sdp_version = 1
        self.session_expires = 0
        self.last_refresh = time.monotonic()
        self.watchdog: asyncio.Task[None] | None = None
        self.setup_task: asyncio.Task[None] | None = None
        self.agent_leg: tuple[dlg.Dialog, RtpSession] | None = None
        self._stage: dict[str, float] = {}

    # --- setup ----------------------------------------------------------------------------------

    async def setup(self) -> None:
        cfg = self.gw.cfg
        out_rate = self.neg.codec.sample_rate
        if self.gw.engines is None or cfg.mode == "echo":
            self.bot = build_echo(out_rate)
        else:
            params = DialogueParams(
                agent_target=cfg.agent_target, llm_timeout_s=cfg.llm_timeout_s, hold_line=cfg.hold_line
            )
            self.bot = build_bot(
                self.gw.engines,
                self.record,
                out_rate,
                params,
                no_input_s=cfg.no_input_s,
                max_call_s=cfg.max_call_s,
                asr_timeout_s=cfg.asr_timeout_s,
                vad=VADParams(early_s=cfg.early_asr_s),
            )
        self.bot.pipeline.downstream_sink = self._from_bot
        self.bot.pipeline.reporter = self._report
        self.rtp = RtpSession(
            self.neg.codec,
            self.neg.payload_type,
            self.neg.remote_addr,
            dtmf_pt=self.neg.dtmf_pt,
            on_audio=self._audio_in,
            on_dtmf=self._dtmf_in,
            source=self.bot.playback.read_frame,
            jitter_depth=cfg.jitter_depth,
        )
        self.rtp.sending = self.neg.direction in ("sendrecv", "sendonly")
        self.rtp_port = await open_session(self.rtp, cfg.sip_ip, cfg.rtp_port_min, cfg.rtp_port_max)
        await self.bot.prepare(self.language, self.gw.engines)  # type: ignore[arg-type]

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
                language=self.language,  # type: ignore[arg-type]
                caller=self.record.caller,
                service=self.record.service,
            )
        )
        self.gw.clock.sessions.add(self.rtp)
        self.watchdog = asyncio.get_running_loop().create_task(self._watch())

    # --- media and pipeline ---------------------------------------------------------------------

    def _audio_in(self, pcm: bytes) -> None:
        if self.agent_leg is not None:
            self._bridge_to_agent(pcm)
        elif self.bot is not None and not self.ended:
            self.bot.pipeline.queue(InputAudioFrame(pcm=pcm, sample_rate=self.neg.codec.sample_rate))

    def _dtmf_in(self, digit: str) -> None:
        if self.bot is not None and not self.ended and self.agent_leg is None:
            self.bot.pipeline.queue(DTMFFrame(digit=digit))

    def _report(self, name: str, value: float, labels: dict[str, str]) -> None:
        self.gw.metrics.report(name, value, labels)
        if name == "stage_seconds":
            self._stage[labels["stage"]] = round(value, 4)
            if labels["stage"] == "turn":
                self.record.turns.append(self._stage)
                self._stage = {}
        elif name == "barge_ins":
            self.record.barge_ins += 1

    async def _from_bot(self, frame: Frame) -> None:
        if isinstance(frame, HangupFrame):
            await self.end(frame.reason, frame.outcome, send_bye=True)
        elif isinstance(frame, TransferFrame):
            await self.transfer(frame.target)

    async def _watch(self) -> None:
        """Session timer, RTP inactivity and a hard length cap: a call never outlives its peer."""
        cfg = self.gw.cfg
        while not self.ended:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if self.session_expires and now - self.last_refresh > self.session_expires:
                await self.end("session_expired", "abandoned", send_bye=True)
            elif self.rtp is not None and now - self.rtp.stats.last_rx > cfg.rtp_timeout_s:
                await self.end("rtp_timeout", "abandoned", send_bye=True)
            elif now - self.received_at > cfg.max_call_s + 30:
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
                self.rtp.update(neg.codec, neg.payload_type, neg.remote_addr, neg.dtmf_pt)
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

    # --- transfer -------------------------------------------------------------------------------

    async def transfer(self, target: str) -> None:
        """Bridge the caller to an agent: store the transcript so far, then INVITE the agent through
        Kamailio with a header pointing at it; relay audio both ways once the agent answers."""
        cfg = self.gw.cfg
        self.record.transfer_target = target
        self.record.outcome = "transferred"
        await self.gw.save(self.record)
        agent_uri = f"sip:{target}@{cfg.sip_domain}"
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
        self._to_agent: deque[bytes] = deque(maxlen=10)
        self._to_caller: deque[bytes] = deque(maxlen=10)
        try:
            port = await open_session(agent_rtp, cfg.sip_ip, cfg.rtp_port_min, cfg.rtp_port_max)
            offer = sdp.offer(cfg.advertised_ip, port, codecs=(self.neg.codec.name,))
            headers = [
                (TRANSCRIPT_HEADER, f"/api/calls/{self.call_id}/transcript"),
                (CALL_RECORD_HEADER, self.call_id),
            ]
            dialog, ok = await dlg.invite(
                self.gw.transport,
                target=agent_uri,
                proxy=cfg.proxy_addr,
                from_uri=f"sip:bot@{cfg.sip_domain}",
                sdp=offer,
                headers=headers,
                ring_timeout=30,
            )
            answer = sdp.parse(ok.body)
            neg = sdp.negotiate(answer, preference=(self.neg.codec.name, "PCMU", "PCMA", "G722"))
            agent_rtp.update(neg.codec, neg.payload_type, neg.remote_addr, neg.dtmf_pt)
        except (dlg.CallFailed, sdp.SdpError, sdp.NoCommonCodec, OSError) as exc:
            log.warning("transfer to %s failed: %s", target, exc)
            agent_rtp.close()
            self.gw.metrics.transfers.labels(reason="failed").inc()
            if self.ended:
                return
            if self.bot is None:
                await self.end("transfer_failed", "failed", send_bye=True)
                return
            # No agent took it (not registered, busy, no answer): the bot keeps the caller.
            self.record.transfer_target = ""
            self.record.add_line("bot", f"<transfer to {target} failed: {exc}>")
            self.bot.pipeline.queue(TransferFailedFrame(status=getattr(exc, "status", 0)))
            return
        if self.ended:
            await dlg.bye(self.gw.transport, dialog)
            agent_rtp.close()
            return
        self.agent_leg = (dialog, agent_rtp)
        self.gw.agent_dialogs[dialog.call_id] = self
        if self.rtp is not None:
            self.rtp.source = self._caller_source
        if self.bot is not None:
            await self.bot.pipeline.broadcast(EndFrame(reason="transferred"))
            await self.bot.pipeline.stop()
        self.gw.clock.sessions.add(agent_rtp)
        self.record.add_line("bot", f"<bridged to agent {target}>")

    def _bridge_to_agent(self, pcm: bytes) -> None:
        assert self.agent_leg is not None
        self._to_agent.append(resample(pcm, self.neg.codec.sample_rate, self.agent_leg[1].codec.sample_rate))

    def _audio_from_agent(self, pcm: bytes) -> None:
        if self.agent_leg is not None:
            self._to_caller.append(
                resample(pcm, self.agent_leg[1].codec.sample_rate, self.neg.codec.sample_rate)
            )

    def _agent_source(self) -> bytes | None:
        return self._to_agent.popleft() if self._to_agent else None

    def _caller_source(self) -> bytes | None:
        return self._to_caller.popleft() if self._to_caller else None

    # --- teardown -------------------------------------------------------------------------------

    async def end(self, reason: str, outcome: Outcome, *, send_bye: bool) -> None:
        if self.ended:
            return
        self.ended = True
        if self.agent_leg is not None and outcome != "failed":
            outcome = "transferred"
        self.record.outcome = outcome
        self.record.end_reason = reason
        self.record.ended_at = datetime.now(UTC)
        self.gw.calls.pop(self.call_id, None)
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
            agent_dialog, agent_rtp = self.agent_leg
            self.gw.clock.sessions.discard(agent_rtp)
            self.gw.agent_dialogs.pop(agent_dialog.call_id, None)
            if reason != "agent_hangup":
                self.gw._spawn(self._bye(agent_dialog))
            agent_rtp.close()
        if self.rtp is not None:
            self._media_metrics(self.rtp)
            self.rtp.close()
        if self.watchdog is not None and self.watchdog is not asyncio.current_task():
            self.watchdog.cancel()
        if self.answered:
            self.gw.metrics.active.dec()
        self.gw.metrics.finished.labels(outcome=outcome).inc()
        log.info("call ended: %s (%s), %.1f s", outcome, reason, time.monotonic() - self.received_at)
        await self.gw.save(self.record)

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
        saver: RecordSaver | None = None,
    ) -> None:
        self.cfg = cfg
        self.engines = engines
        self.metrics = metrics or VoiceMetrics()
        self.saver = saver
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
        await self.clock.stop()
        self.transport.close()

    async def save(self, record: CallRecord) -> None:
        if self.saver is None:
            return
        try:
            await self.saver(record)
        except Exception:
            log.exception("storing the call record failed")
            self.metrics.engine_errors.labels(engine="call_store").inc()

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
                self._spawn(agent_call.end("agent_hangup", "transferred", send_bye=True))
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
            call.rtp.update(neg.codec, neg.payload_type, neg.remote_addr, neg.dtmf_pt)

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
        service = req.get(SERVICE_HEADER) or sip.parse_uri(req.uri).user
        language = self.cfg.services.get(service, "en")
        call = Call(self, req, addr, neg, offer, language, service)
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
