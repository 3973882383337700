"""The gateway over real UDP on loopback: SIP answers (200/400/422/481/487/488/503), SDP offer/answer
with G.711 and G.722, RTP echo, DTMF, re-INVITE, session timer and RTP timeouts, and a caller's way
through the IVR flow to an agent: queued with the ACD (a fake that offers at once), the agent's phone
rung and bridged with the transcript header, hold, a blind transfer (REFER) to another queue, the
survey after the agent hangs up. Engines and
the ACD are fakes; SIP and RTP are real."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from aicc.appliance.acd import commands as cmds
from aicc.appliance.acd.client import AcdRejected, AcdUnavailable, GatewayMessage
from aicc.appliance.calls.record import CallRecord
from aicc.appliance.events.kinds import Event
from aicc.appliance.voice import sdp, sip
from aicc.appliance.voice.audio import tone
from aicc.appliance.voice.bot import BotEngines
from aicc.appliance.voice.caller import Caller
from aicc.appliance.voice.config import GatewayConfig
from aicc.appliance.voice.dialog import CallFailed
from aicc.appliance.voice.gateway import TRANSCRIPT_HEADER, Gateway
from aicc.appliance.voice.transport import SipTransport
from aicc.models.engines.base import Audio, Language
from tests.integration.agentphone import AgentPhone
from tests.unit.test_voice_fakes import (  # noqa: F401
    FakeASR,
    FakeConnector,
    FakeLLM,
    FakeTTS,
    FakeVAD,
    anyio_backend,
    retail_on,
)

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(**over: object) -> GatewayConfig:
    base: dict[str, object] = {
        "sip_ip": "127.0.0.1",
        "sip_port": free_port(),
        "advertised_ip": "127.0.0.1",
        "mode": "echo",
        "max_calls": 3,
        "rtp_port_min": 43000,
        "rtp_port_max": 43999,
    }
    base.update(over)
    return GatewayConfig(**base)  # type: ignore[arg-type]


def dominant_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.argmax(np.abs(np.fft.rfft(x))) * rate / len(x))


class SlowTTS(FakeTTS):
    async def synthesize(self, text: str, *, language: Language) -> AsyncIterator[Audio]:
        await asyncio.sleep(1.0)
        async for chunk in super().synthesize(text, language=language):
            yield chunk


def engines(tts: FakeTTS | None = None) -> BotEngines:
    return BotEngines(
        llm=FakeLLM({}), asr=FakeASR({}), tts=tts or FakeTTS(), vad=FakeVAD, bots=retail_on(FakeConnector())
    )


class Records:
    """The gateway's record sink: every save, in order."""

    def __init__(self, saved: list[CallRecord]) -> None:
        self.saved = saved

    def changed(self, rec: CallRecord) -> None:
        pass

    async def save_now(self, rec: CallRecord) -> None:
        self.saved.append(rec)


class FakeAcd:
    """Takes every contact and offers it at once (before the Enqueue's result) to `extension` (the
    agent's phone); records commands.
    unavailable: as if no ACD answered."""

    def __init__(
        self, extension: str = "1001", *, unavailable: bool = False, queues: dict[str, str] | None = None
    ) -> None:
        self.extension = extension
        self.unavailable = unavailable
        self.queues = queues  # queue -> the extension its contacts are offered to; None: any queue
        self.commands: list[cmds.Command] = []
        self.on_gateway: Any = None
        self.pool = None

    async def submit(
        self, cmd: cmds.Command, *, wait: bool = True, durable: bool = False
    ) -> dict[str, Any] | None:
        if self.unavailable and not durable:
            raise AcdUnavailable("no active ACD answered")
        if isinstance(cmd, cmds.Enqueue) and self.queues is not None and cmd.queue not in self.queues:
            raise AcdRejected("unknown_queue", f"queue {cmd.queue!r} is not configured")
        self.commands.append(cmd)
        if isinstance(cmd, cmds.Enqueue):
            extension = self.extension if self.queues is None else self.queues[cmd.queue]
            offer = GatewayMessage(
                "offer", cmd.contact_id, "00000000-0000-4000-8000-000000000001", 7, extension, 5
            )
            # The real ACD's offer NOTIFY comes in the Enqueue's own transaction, before its result.
            self.on_gateway(offer)
            return {
                "position": 1,
                "ewt_s": 20.0,
                "staffed": 1,
                "callback_offer": False,
                "announce_every_s": 0,
            }
        return {}

    def kinds(self) -> list[str]:
        return [c.kind for c in self.commands]


async def start_gateway(
    cfg: GatewayConfig,
    eng: BotEngines | None = None,
    records: list[CallRecord] | None = None,
    acd: FakeAcd | None = None,
    events: list[Event] | None = None,
) -> Gateway:
    gw = Gateway(cfg, eng, records=Records(records if records is not None else []), acd=acd, events=events)  # type: ignore[arg-type]
    await gw.start()
    return gw


async def raw_request(
    gw: Gateway,
    method: str,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    ctype: str = "application/sdp",
) -> sip.SipMessage:
    t = SipTransport(lambda m, a: None)
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: t, local_addr=("127.0.0.1", 0))
    msg = sip.SipMessage(method=method, uri=f"sip:4000@127.0.0.1:{gw.cfg.sip_port}")
    msg.headers = [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:{t.local[1]};branch={sip.new_branch()}"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:t@127.0.0.1>;tag={sip.new_tag()}"),
        ("To", "<sip:4000@127.0.0.1>"),
        ("Call-ID", sip.new_call_id("127.0.0.1")),
        ("CSeq", f"1 {method}"),
        ("Contact", f"<sip:t@127.0.0.1:{t.local[1]}>"),
        *(headers or []),
    ]
    if body:
        msg.headers.append(("Content-Type", ctype))
    msg.body = body
    try:
        return await t.request(msg, ("127.0.0.1", gw.cfg.sip_port), timeout=5)
    finally:
        t.close()


OFFER_G729 = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n"
)


async def test_echo_call_carries_audio_both_ways() -> None:
    gw = await start_gateway(config())
    caller = Caller()
    await caller.start()
    try:
        await caller.call(f"sip:4000@127.0.0.1:{gw.cfg.sip_port}", ("127.0.0.1", gw.cfg.sip_port))
        assert caller.setup_s is not None and caller.setup_s < 1.0
        caller.play(tone(400, 1.0, 8000), 8000)
        await caller.played()
        await asyncio.sleep(0.3)
        assert caller.answer is not None and b"PCMU/8000" in caller.answer.body
        assert abs(dominant_hz(caller.heard.pcm(), 8000) - 400) < 10
        assert await caller.hangup() == 200
        await asyncio.sleep(0.1)
        assert not gw.calls
    finally:
        await caller.close()
        await gw.stop()


async def test_g722_is_chosen_when_offered_and_carries_wideband() -> None:
    gw = await start_gateway(config())
    caller = Caller(codecs=("G722", "PCMU"))
    await caller.start()
    try:
        await caller.call(f"sip:4000@127.0.0.1:{gw.cfg.sip_port}", ("127.0.0.1", gw.cfg.sip_port))
        assert caller.answer is not None and b"G722/8000" in caller.answer.body
        assert caller.sample_rate == 16000
        caller.play(tone(5000, 1.0, 16000), 16000)  # above the G.711 band: only wideband carries it
        await caller.played()
        await asyncio.sleep(0.3)
        assert abs(dominant_hz(caller.heard.pcm(), 16000) - 5000) < 30
        await caller.hangup()
    finally:
        await caller.close()
        await gw.stop()


async def test_unsupported_codec_gets_488() -> None:
    gw = await start_gateway(config())
    try:
        res = await raw_request(gw, "INVITE", OFFER_G729)
        assert res.status == 488
        assert "none of the offered codecs" in (res.get("Warning") or "")
        assert not gw.calls
    finally:
        await gw.stop()


@pytest.mark.parametrize(
    "body",
    [
        b"v=0\r\nm=audio\r\n",  # no o= line, bad m= line
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 not-an-ip\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0\r\n",
        b"hello",
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",  # no c=
    ],
)
async def test_malformed_sdp_gets_400(body: bytes) -> None:
    gw = await start_gateway(config())
    try:
        res = await raw_request(gw, "INVITE", body)
        assert res.status == 400
        assert "SDP" in res.reason
    finally:
        await gw.stop()


async def test_malformed_sip_gets_400_and_the_gateway_keeps_working() -> None:
    gw = await start_gateway(config())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    try:
        bad = (
            b"INVITE sip:4000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:4000@127.0.0.1>\r\nCall-ID: x1\r\nCSeq: abc INVITE\r\n\r\n"
        )
        await asyncio.get_running_loop().run_in_executor(
            None, sock.sendto, bad, ("127.0.0.1", gw.cfg.sip_port)
        )
        data, _ = await asyncio.get_running_loop().run_in_executor(None, sock.recvfrom, 4096)
        assert data.startswith(b"SIP/2.0 400 Bad Request (bad CSeq)")
        for junk in (b"\x00\xff" * 50, b"GARBAGE\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n"):
            sock.sendto(junk, ("127.0.0.1", gw.cfg.sip_port))
        await asyncio.sleep(0.1)
        assert gw.transport.stats.malformed >= 4
        res = await raw_request(gw, "OPTIONS")
        assert res.status == 200
    finally:
        sock.close()
        await gw.stop()


async def test_calls_beyond_the_cap_get_a_clean_503() -> None:
    gw = await start_gateway(config(max_calls=2))
    callers = [Caller() for _ in range(3)]
    try:
        for c in callers:
            await c.start()
        for c in callers[:2]:
            await c.call(f"sip:4000@127.0.0.1:{gw.cfg.sip_port}", ("127.0.0.1", gw.cfg.sip_port))
        with pytest.raises(CallFailed) as err:
            await callers[2].call(f"sip:4000@127.0.0.1:{gw.cfg.sip_port}", ("127.0.0.1", gw.cfg.sip_port))
        assert err.value.status == 503
        assert (await raw_request(gw, "OPTIONS")).status == 503  # the dispatcher probe sees it is full
        await callers[0].hangup()
        await asyncio.sleep(0.1)
        await callers[2].call(f"sip:4000@127.0.0.1:{gw.cfg.sip_port}", ("127.0.0.1", gw.cfg.sip_port))
    finally:
        for c in callers:
            await c.hangup()
            await c.close()
        await gw.stop()


async def test_cancel_before_answer_gets_487() -> None:
    gw = await start_gateway(config(mode="bot"), engines(SlowTTS()))
    t = SipTransport(lambda m, a: None)
    await asyncio.get_running_loop().create_datagram_endpoint(lambda: t, local_addr=("127.0.0.1", 0))
    try:
        offer = sdp.offer("127.0.0.1", 44000)
        msg = sip.SipMessage(method="INVITE", uri=f"sip:4000@127.0.0.1:{gw.cfg.sip_port}")
        msg.headers = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{t.local[1]};branch={sip.new_branch()}"),
            ("From", f"<sip:t@127.0.0.1>;tag={sip.new_tag()}"),
            ("To", "<sip:4000@127.0.0.1>"),
            ("Call-ID", "cancel-test"),
            ("CSeq", "1 INVITE"),
            ("Contact", "<sip:t@127.0.0.1>"),
            ("Content-Type", "application/sdp"),
        ]
        msg.body = offer
        pending = asyncio.ensure_future(t.request(msg, ("127.0.0.1", gw.cfg.sip_port), timeout=5))
        await asyncio.sleep(0.3)
        cancel = sip.SipMessage(method="CANCEL", uri=msg.uri)
        cancel.headers = [
            ("Via", msg.get_all("Via")[0]),
            ("From", msg.get("From") or ""),
            ("To", msg.get("To") or ""),
            ("Call-ID", "cancel-test"),
            ("CSeq", "1 CANCEL"),
        ]
        assert (await t.request(cancel, ("127.0.0.1", gw.cfg.sip_port), timeout=5)).status == 200
        assert (await pending).status == 487
        await asyncio.sleep(1.2)
        assert not gw.calls
    finally:
        t.close()
        await gw.stop()


async def test_reinvite_switches_codec_and_session_timer_is_negotiated() -> None:
    gw = await start_gateway(config())
    caller = Caller()
    await caller.start()
    try:
        await caller.call(
            f"sip:4000@127.0.0.1:{gw.cfg.sip_port}",
            ("127.0.0.1", gw.cfg.sip_port),
            headers=[("Session-Expires", "120"), ("Supported", "timer")],
        )
        assert caller.answer is not None
        assert caller.answer.get("Session-Expires") == "120;refresher=uac"
        assert caller.answer.get("Require") == "timer"
        assert caller.dialog is not None and caller.rtp is not None
        req = caller.dialog.request(
            "INVITE",
            via_host=caller.transport.local,
            body=sdp.offer("127.0.0.1", caller._port, codecs=("PCMA",)),
            headers=[("Session-Expires", "120")],
        )
        res = await caller.transport.request(req, caller.dialog.next_hop())
        assert res.status == 200 and b"PCMA/8000" in res.body
        from aicc.appliance.voice.dialog import send_ack

        caller.dialog.invite_cseq = req.cseq[0]
        send_ack(caller.transport, caller.dialog)
        call = next(iter(gw.calls.values()))
        assert call.rtp is not None and call.rtp.codec.name == "PCMA"
    finally:
        await caller.hangup()
        await caller.close()
        await gw.stop()


async def test_too_small_session_interval_gets_422() -> None:
    gw = await start_gateway(config())
    try:
        res = await raw_request(
            gw, "INVITE", sdp.offer("127.0.0.1", 44002), headers=[("Session-Expires", "30")]
        )
        assert res.status == 422 and res.get("Min-SE") == "90"
    finally:
        await gw.stop()


async def test_dead_peer_is_hung_up_by_rtp_timeout() -> None:
    records: list[CallRecord] = []
    gw = await start_gateway(config(), records=records)
    gw.cfg.rtp_timeout_s = 1.5
    caller = Caller()
    await caller.start()
    try:
        await caller.call(f"sip:4000@127.0.0.1:{gw.cfg.sip_port}", ("127.0.0.1", gw.cfg.sip_port))
        assert caller.rtp is not None
        caller.rtp.sending = False  # the caller's phone died
        await asyncio.wait_for(caller.remote_bye.wait(), 5)
        await asyncio.sleep(0.2)
        assert records[-1].end_reason == "rtp_timeout"
        assert not gw.calls
    finally:
        await caller.close()
        await gw.stop()


async def test_in_dialog_requests_for_unknown_calls_get_481_and_unknown_methods_405() -> None:
    gw = await start_gateway(config())
    try:
        assert (await raw_request(gw, "BYE")).status == 481
        assert (await raw_request(gw, "MESSAGE")).status == 405
        assert (
            await raw_request(gw, "INVITE", sdp.offer("127.0.0.1", 44004), ctype="text/plain")
        ).status == 415
        assert (await raw_request(gw, "INVITE")).status == 488  # no offer
        offer = sdp.offer("127.0.0.1", 44006)
        bad_contact = await raw_request(gw, "INVITE", offer, headers=[("Record-Route", "<http://x>")])
        assert bad_contact.status == 400 and "URI" in bad_contact.reason
        assert not gw.calls
    finally:
        await gw.stop()


async def bot_in_front_of(
    agent_cfg: GatewayConfig, acd: FakeAcd, **over: object
) -> tuple[Gateway, list[CallRecord], list[Event]]:
    """A bot gateway whose ACD sends every contact to the agent's phone at agent_cfg (no Kamailio)."""
    records: list[CallRecord] = []
    events = []
    bot_cfg = config(mode="bot", proxy=f"127.0.0.1:{agent_cfg.sip_port}", sip_domain="127.0.0.1", **over)
    return await start_gateway(bot_cfg, engines(), records, acd, events), records, events


async def wait_for(predicate: Any, seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


async def test_dtmf_zero_queues_the_caller_and_the_acds_agent_is_bridged_with_the_transcript() -> None:
    agent_cfg = config()
    agent = await start_gateway(agent_cfg)  # an echo UA stands in for the agent's phone
    acd = FakeAcd()
    gw, records, events = await bot_in_front_of(agent_cfg, acd)
    bot_cfg = gw.cfg
    caller = Caller(number="13800138000")
    await caller.start()
    try:
        await caller.call(f"sip:4000@127.0.0.1:{bot_cfg.sip_port}", ("127.0.0.1", bot_cfg.sip_port))
        answered = asyncio.get_running_loop().time()
        assert await wait_for(lambda: caller.heard.first_voice_after(0) is not None, 2)
        first = caller.heard.first_voice_after(0)
        assert first is not None and first - answered < 1.0, "greeting too slow"
        caller.dtmf("0")
        assert await wait_for(lambda: bool(agent.calls)), "the agent leg never arrived"
        enqueue = acd.commands[0]
        assert (
            isinstance(enqueue, cmds.Enqueue)
            and enqueue.queue == "support-en"
            and enqueue.caller == "13800138000"
        )
        assert enqueue.language == "en" and enqueue.attributes["intent"] == "dtmf"
        agent_call = next(iter(agent.calls.values()))
        call_id = caller.dialog.call_id if caller.dialog else ""
        assert agent_call.invite.get(TRANSCRIPT_HEADER) == f"/api/calls/{call_id}/transcript"
        assert await wait_for(lambda: "offer_result" in acd.kinds())
        result = acd.commands[acd.kinds().index("offer_result")]
        assert isinstance(result, cmds.OfferResult) and result.outcome == "answered"
        await asyncio.sleep(0.3)
        caller.heard.frames.clear()
        caller.play(tone(600, 1.0, 8000), 8000)  # through the bridge to the agent's echo and back
        await caller.played()
        await asyncio.sleep(0.4)
        assert abs(dominant_hz(caller.heard.pcm(), 8000) - 600) < 10
        await caller.hangup()
        assert await wait_for(lambda: "contact_end" in acd.kinds())
        end = acd.commands[acd.kinds().index("contact_end")]
        assert isinstance(end, cmds.ContactEnd) and end.ended_by == "caller" and end.talk_s > 0.5
        assert await wait_for(lambda: not gw.calls and not agent.calls)
        assert records[-1].outcome == "transferred" and records[-1].agent == "1001"
        assert records[-1].queue == "support-en" and records[-1].contact_id == enqueue.contact_id
        assert any("<DTMF 0>" in ln.text for ln in records[-1].lines)
        # An agent was free at once: rung at once, without telling the caller a place in the queue.
        assert not any("in the queue" in ln.text for ln in records[-1].lines), records[-1].lines
        assert events[0].kind == "call.started" and events[-1].kind == "call.ended"
    finally:
        await caller.close()
        await gw.stop()
        await agent.stop()


async def test_with_every_bot_place_taken_the_next_caller_goes_straight_to_an_agent() -> None:
    agent_cfg = config()
    agent = await start_gateway(agent_cfg)
    acd = FakeAcd()
    gw, records, _ = await bot_in_front_of(agent_cfg, acd, max_bot_calls=1)
    first, second = Caller(number="13800138001"), Caller(number="13800138002")
    await first.start()
    await second.start()
    target = (f"sip:4000@127.0.0.1:{gw.cfg.sip_port}", ("127.0.0.1", gw.cfg.sip_port))
    try:
        await first.call(*target)
        assert await wait_for(lambda: first.heard.first_voice_after(0) is not None, 2)  # the bot greets
        assert gw.bots_talking == 1
        await second.call(*target)
        # No bot place: the flow's transfer at once, the agent rung, the reason on the screen pop.
        assert await wait_for(lambda: bool(agent.calls)), "the agent leg never arrived"
        enqueue = acd.commands[0]
        assert isinstance(enqueue, cmds.Enqueue) and enqueue.caller == "13800138002"
        assert "every bot was busy" in enqueue.attributes["summary"]
        assert gw.bots_talking == 1 and gw.metrics.transfers.labels(reason="bots_busy")._value.get() == 1
        sample = gw.metrics.registry.get_sample_value
        assert sample("aicc_voice_bot_conversations") == 1 and sample("aicc_voice_bot_places") == 1
        assert agent.metrics.registry.get_sample_value("aicc_voice_bot_places") == 3  # no cap: max_calls
        assert await wait_for(lambda: "offer_result" in acd.kinds())  # the agent answered
        await second.hangup()
        await first.hangup()
        assert await wait_for(lambda: not gw.calls)
        assert gw.bots_talking == 0
        by_caller = {r.caller: r for r in records}
        assert by_caller["13800138002"].outcome == "transferred"
        assert "every bot was busy" in by_caller["13800138002"].summary
    finally:
        await first.close()
        await second.close()
        await gw.stop()
        await agent.stop()


async def test_after_the_agent_hangs_up_the_caller_answers_the_survey() -> None:
    agent_cfg = config()
    agent = await start_gateway(agent_cfg)
    acd = FakeAcd()
    gw, records, events = await bot_in_front_of(agent_cfg, acd)
    caller = Caller()
    await caller.start()
    try:
        await caller.call(f"sip:4000@127.0.0.1:{gw.cfg.sip_port}", ("127.0.0.1", gw.cfg.sip_port))
        await asyncio.sleep(0.5)
        caller.dtmf("0")
        assert await wait_for(lambda: bool(agent.calls))
        await asyncio.sleep(0.5)
        await next(iter(agent.calls.values())).end("agent_done", "resolved", send_bye=True)
        assert await wait_for(lambda: "contact_end" in acd.kinds())
        end = acd.commands[acd.kinds().index("contact_end")]
        assert isinstance(end, cmds.ContactEnd) and end.ended_by == "agent"
        call = next(iter(gw.calls.values()))
        assert await wait_for(lambda: any("satisfied" in ln.text for ln in call.record.lines)), (
            call.record.lines
        )
        caller.dtmf("5")
        assert await wait_for(lambda: any(e.kind == "contact.survey" for e in events))
        survey = next(e for e in events if e.kind == "contact.survey")
        assert survey.data == {"score": 5} and survey.contact_id == end.contact_id
        assert await wait_for(caller.remote_bye.is_set), "the flow did not say goodbye and hang up"
        assert records[-1].outcome == "transferred"
    finally:
        await caller.close()
        await gw.stop()
        await agent.stop()


async def test_an_agent_who_does_not_take_it_is_reported_and_the_caller_keeps_waiting() -> None:
    agent_cfg = config(max_calls=1)
    agent = await start_gateway(agent_cfg)  # the agent's phone, already on a call: 503 to the next
    busy = Caller()
    await busy.start()
    acd = FakeAcd()
    gw, records, _ = await bot_in_front_of(agent_cfg, acd)
    caller = Caller()
    await caller.start()
    try:
        await busy.call(f"sip:1001@127.0.0.1:{agent_cfg.sip_port}", ("127.0.0.1", agent_cfg.sip_port))
        await caller.call(f"sip:4000@127.0.0.1:{gw.cfg.sip_port}", ("127.0.0.1", gw.cfg.sip_port))
        await asyncio.sleep(0.5)
        caller.dtmf("0")
        assert await wait_for(lambda: "offer_result" in acd.kinds())
        result = acd.commands[acd.kinds().index("offer_result")]
        assert isinstance(result, cmds.OfferResult) and result.outcome == "unreachable"
        await asyncio.sleep(0.5)
        assert gw.calls, "the caller was hung up instead of waiting for the next agent"
        assert next(iter(gw.calls.values())).holding, "no hold music while waiting"
        await caller.hangup()
        assert await wait_for(lambda: "abandon" in acd.kinds())
        assert await wait_for(lambda: bool(records) and records[-1].ended_at is not None)
        assert records[-1].outcome == "abandoned" and not records[-1].agent
    finally:
        await caller.close()
        await busy.close()
        await gw.stop()
        await agent.stop()


async def test_no_acd_answering_ends_in_the_flows_busy_path_not_a_dead_line() -> None:
    agent_cfg = config()
    acd = FakeAcd(unavailable=True)
    gw, _, _ = await bot_in_front_of(agent_cfg, acd)
    caller = Caller()
    await caller.start()
    try:
        await caller.call(f"sip:4000@127.0.0.1:{gw.cfg.sip_port}", ("127.0.0.1", gw.cfg.sip_port))
        await asyncio.sleep(0.5)
        caller.dtmf("0")
        call = next(iter(gw.calls.values()))
        assert await wait_for(lambda: any("all our agents are busy" in ln.text for ln in call.record.lines))
        assert await wait_for(lambda: any("call you back" in ln.text for ln in call.record.lines))
        await caller.hangup()
    finally:
        await caller.close()
        await gw.stop()


async def test_session_not_refreshed_in_time_is_hung_up() -> None:
    records: list[CallRecord] = []
    gw = await start_gateway(config(), records=records)
    caller = Caller()
    await caller.start()
    try:
        await caller.call(
            f"sip:4000@127.0.0.1:{gw.cfg.sip_port}",
            ("127.0.0.1", gw.cfg.sip_port),
            headers=[("Session-Expires", "90"), ("Supported", "timer")],
        )
        call = next(iter(gw.calls.values()))
        assert call.session_expires == 90
        call.session_expires = 1  # as if 90 s had gone by without a re-INVITE or UPDATE
        await asyncio.wait_for(caller.remote_bye.wait(), 5)
        await asyncio.sleep(0.2)
        assert records[-1].end_reason == "session_expired"
    finally:
        await caller.close()
        await gw.stop()


async def test_update_refreshes_the_session() -> None:
    gw = await start_gateway(config())
    caller = Caller()
    await caller.start()
    try:
        await caller.call(
            f"sip:4000@127.0.0.1:{gw.cfg.sip_port}",
            ("127.0.0.1", gw.cfg.sip_port),
            headers=[("Session-Expires", "90"), ("Supported", "timer")],
        )
        call = next(iter(gw.calls.values()))
        before = call.last_refresh
        assert caller.dialog is not None
        req = caller.dialog.request(
            "UPDATE", via_host=caller.transport.local, headers=[("Session-Expires", "120")]
        )
        res = await caller.transport.request(req, caller.dialog.next_hop())
        assert res.status == 200 and res.get("Session-Expires") == "120;refresher=uac"
        assert call.last_refresh > before and call.session_expires == 120
    finally:
        await caller.hangup()
        await caller.close()
        await gw.stop()


class UnregisteredPhone(AgentPhone):
    """The test agent's phone without a registrar: the bot gateway's proxy setting points at it."""

    async def register(self, expires: int = 300) -> None:
        pass


async def test_the_agents_hold_is_timed_and_the_caller_hears_music_meanwhile() -> None:
    phone = UnregisteredPhone("1001", "x", ("127.0.0.1", 9), "127.0.0.1", answer_after_s=0.2)
    await phone.start()
    acd = FakeAcd()
    records: list[CallRecord] = []
    events: list[Event] = []
    cfg = config(mode="bot", proxy=f"127.0.0.1:{phone.transport.local[1]}", sip_domain="127.0.0.1")
    gw = await start_gateway(cfg, engines(), records, acd, events)
    caller = Caller()
    await caller.start()
    try:
        await caller.call(f"sip:4000@127.0.0.1:{gw.cfg.sip_port}", ("127.0.0.1", gw.cfg.sip_port))
        await asyncio.sleep(0.5)
        caller.dtmf("0")
        assert await wait_for(lambda: phone.current is not None), "the agent's phone never answered"
        await asyncio.sleep(0.5)
        assert await phone.hold(True) == 200
        caller.heard.frames.clear()
        await asyncio.sleep(1.5)
        assert caller.heard.first_voice_after(0) is not None, "silence instead of hold music"
        assert await phone.hold(False) == 200
        await caller.hangup()
        assert await wait_for(lambda: "contact_end" in acd.kinds())
        end = acd.commands[acd.kinds().index("contact_end")]
        assert isinstance(end, cmds.ContactEnd) and 1.2 < end.hold_s < 3.0, end
        kinds = [e.kind for e in events]
        assert "contact.held" in kinds and "contact.resumed" in kinds, kinds
        resumed = next(e for e in events if e.kind == "contact.resumed")
        assert resumed.contact_id == end.contact_id and resumed.data["hold_s"] == pytest.approx(
            end.hold_s, abs=0.1
        )
    finally:
        await caller.close()
        await gw.stop()
        await phone.close()


async def test_the_agent_transfers_the_caller_to_another_queue_whose_agent_takes_over() -> None:
    """REFER from the agent's phone (as JsSIP sends it): a queue that does not exist is refused by
    NOTIFY and the caller stays with the agent; a real one gets the caller a new contact there, the
    first contact ends as the agent's, their leg is hung up and the next agent is rung."""
    phone = UnregisteredPhone("1001", "x", ("127.0.0.1", 9), "127.0.0.1", answer_after_s=0.2)
    await phone.start()
    acd = FakeAcd(queues={"support-en": "1001", "billing-en": "1002"})
    records: list[CallRecord] = []
    cfg = config(mode="bot", proxy=f"127.0.0.1:{phone.transport.local[1]}", sip_domain="127.0.0.1")
    gw = await start_gateway(cfg, engines(), records, acd, [])
    caller = Caller()
    await caller.start()
    try:
        await caller.call(f"sip:4000@127.0.0.1:{gw.cfg.sip_port}", ("127.0.0.1", gw.cfg.sip_port))
        await asyncio.sleep(0.5)
        caller.dtmf("0")
        assert await wait_for(lambda: phone.current is not None), "the agent's phone never answered"
        first = phone.current
        assert first is not None and first.invite.uri.startswith("sip:1001@")
        # Caller-side REFERs are refused: only an agent transfers.
        assert caller.dialog is not None
        req = caller.dialog.request(
            "REFER", via_host=caller.transport.local, headers=[("Refer-To", "<sip:billing-en@127.0.0.1>")]
        )
        assert (await caller.transport.request(req, caller.dialog.next_hop())).status == 403

        assert await phone.refer("sip:nosuch@127.0.0.1") == 202
        assert await wait_for(lambda: len(phone.transfer_reports) >= 2)
        assert phone.transfer_reports == ["SIP/2.0 100 Trying", "SIP/2.0 404 No Such Queue"]
        assert phone.current is first and "contact_end" not in acd.kinds()  # still talking
        assert await phone.refer("sip:billing-en@127.0.0.1?Replaces=abc") == 501  # attended: not yet

        assert await phone.refer("sip:billing-en@127.0.0.1") == 202
        assert await wait_for(lambda: len(phone.rings) == 2 and phone.current is not None), phone.rings
        assert phone.transfer_reports[2:] == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
        assert first.ended_at is not None and phone.rings[1].invite.uri.startswith("sip:1002@")
        enqueues = [c for c in acd.commands if isinstance(c, cmds.Enqueue)]
        assert [e.queue for e in enqueues] == ["support-en", "billing-en"]
        assert enqueues[1].language == "en" and enqueues[1].attributes["intent"] == "transfer"
        assert "transferred by 1001" in enqueues[1].attributes["summary"]
        ends = [c for c in acd.commands if isinstance(c, cmds.ContactEnd)]
        assert [(e.contact_id, e.ended_by) for e in ends] == [(enqueues[0].contact_id, "agent")]
        await asyncio.sleep(0.3)
        await caller.hangup()
        assert await wait_for(lambda: len([c for c in acd.commands if isinstance(c, cmds.ContactEnd)]) == 2)
        last = [c for c in acd.commands if isinstance(c, cmds.ContactEnd)][-1]
        assert last.contact_id == enqueues[1].contact_id and last.ended_by == "caller"
        assert await wait_for(lambda: bool(records))
        rec = records[-1]
        assert rec.queue == "billing-en" and rec.agent == "1002" and rec.outcome == "transferred"
        assert rec.contact_id == enqueues[1].contact_id
        assert any(ln.text == "<transferred by agent 1001 to queue billing-en>" for ln in rec.lines)
    finally:
        await caller.close()
        await gw.stop()
        await phone.close()
