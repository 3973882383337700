"""A SIP caller with real RTP: places a call, plays audio paced at 20 ms, records what it hears,
sends DTMF, hangs up. `aicc smoke`, the integration tests and the benches call the bot with it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from aicc.appliance.voice import dialog as dlg
from aicc.appliance.voice import sdp, sip
from aicc.appliance.voice.audio import resample, rms
from aicc.appliance.voice.codecs import SUPPORTED
from aicc.appliance.voice.rtp import NO_PEER, MediaClock, RtpSession, open_session
from aicc.appliance.voice.sip import SipMessage
from aicc.appliance.voice.transport import Addr, SipTransport


@dataclass
class Heard:
    """Audio received from the far end with the monotonic time of each 20 ms frame."""

    frames: list[tuple[float, bytes]] = field(default_factory=list)

    def pcm(self) -> bytes:
        return b"".join(f for _, f in self.frames)

    def first_voice_after(self, t: float, threshold: float = 300.0) -> float | None:
        for at, frame in self.frames:
            if at >= t and rms(frame) > threshold:
                return at
        return None

    def last_voice(self, threshold: float = 300.0) -> float | None:
        for at, frame in reversed(self.frames):
            if rms(frame) > threshold:
                return at
        return None


class Caller:
    def __init__(
        self,
        *,
        local_ip: str = "127.0.0.1",
        rtp_range: tuple[int, int] = (42000, 42999),
        codecs: tuple[str, ...] = ("PCMU", "PCMA"),
        number: str = "smoke",
    ) -> None:
        self.local_ip = local_ip
        self.number = number  # the From user: who is calling (the bots look customers up by it)
        self.rtp_range = rtp_range
        self.codecs = codecs
        self.transport = SipTransport(self._on_request, on_stray_response=self._stray)
        self.clock = MediaClock()
        self.dialog: dlg.Dialog | None = None
        self.rtp: RtpSession | None = None
        self.heard = Heard()
        self.sample_rate = 8000
        self.setup_s: float | None = None
        self.answer: SipMessage | None = None
        self.remote_bye = asyncio.Event()
        self.received: list[SipMessage] = []
        self._out: list[bytes] = []
        self._record = True
        self._hung_up = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self.transport, local_addr=(self.local_ip, 0))
        self.clock.start()

    async def close(self) -> None:
        if self.rtp is not None:
            self.clock.sessions.discard(self.rtp)
            self.rtp.close()
        await self.clock.stop()
        self.transport.close()

    def _on_request(self, req: SipMessage, addr: Addr) -> None:
        self.received.append(req)
        if req.method == "ACK":
            return
        if req.method == "BYE":
            self.transport.respond(req, sip.response(req, 200, "OK"), addr)
            self.remote_bye.set()
            return
        if req.method in ("INVITE", "UPDATE", "OPTIONS", "INFO"):
            body = b""
            if req.method == "INVITE" and self.rtp is not None:
                body = sdp.offer(self.local_ip, self._port, codecs=(self.rtp.codec.name,))
            self.transport.respond(
                req,
                sip.response(
                    req,
                    200,
                    "OK",
                    body=body,
                    headers=[("Contact", f"<sip:caller@{self.local_ip}:{self.transport.local[1]}>")],
                ),
                addr,
                reliable_2xx=req.method == "INVITE",
            )
            return
        self.transport.respond(req, sip.response(req, 405, "Method Not Allowed"), addr)

    def _stray(self, res: SipMessage, addr: Addr) -> None:
        if self.dialog is not None and res.status == 200 and res.cseq[1] == "INVITE":
            dlg.send_ack(self.transport, self.dialog)

    async def call(
        self,
        target: str,
        proxy: Addr,
        *,
        headers: list[tuple[str, str]] | None = None,
        credentials: dlg.Credentials | None = None,
        ring_timeout: float = 30.0,
    ) -> None:
        """Place the call; raises dlg.CallFailed with the final status when it is not answered."""
        self.rtp = RtpSession(
            SUPPORTED[self.codecs[0]],
            SUPPORTED[self.codecs[0]].payload_type,
            NO_PEER,
            dtmf_pt=101,
            on_audio=self._heard,
            on_dtmf=lambda d: None,
            source=self._next_out,
            jitter_depth=3,
        )
        self._port = await open_session(self.rtp, self.local_ip, *self.rtp_range)
        offer = sdp.offer(self.local_ip, self._port, codecs=self.codecs)
        started = time.monotonic()
        self.dialog, self.answer = await dlg.invite(
            self.transport,
            target=target,
            proxy=proxy,
            from_uri=f"sip:{self.number}@{self.local_ip}",
            sdp=offer,
            headers=headers,
            credentials=credentials,
            ring_timeout=ring_timeout,
        )
        self.setup_s = time.monotonic() - started
        neg = sdp.negotiate(sdp.parse(self.answer.body), preference=self.codecs)
        self.rtp.update(neg.codec, neg.payload_type, neg.remote_addr, neg.dtmf_pt, neg.rtcp_addr)
        self.sample_rate = neg.codec.sample_rate
        self.clock.sessions.add(self.rtp)

    def _heard(self, pcm: bytes) -> None:
        if self._record:
            self.heard.frames.append((time.monotonic(), pcm))

    def _next_out(self) -> bytes | None:
        return self._out.pop(0) if self._out else None

    def play(self, pcm: bytes, sample_rate: int) -> float:
        """Queue audio to send (paced by the media clock); returns its duration in seconds."""
        data = resample(pcm, sample_rate, self.sample_rate)
        step = self.sample_rate // 50 * 2
        frames = [data[i : i + step] for i in range(0, len(data), step)]
        if frames and len(frames[-1]) < step:
            frames[-1] += bytes(step - len(frames[-1]))
        self._out += frames
        return len(frames) * 0.02

    async def played(self) -> float:
        """Wait until everything queued was sent; returns the monotonic time of the last frame."""
        while self._out:
            await asyncio.sleep(0.01)
        return time.monotonic()

    def dtmf(self, digit: str) -> None:
        if self.rtp is None:
            raise RuntimeError("no call")
        self.rtp.send_dtmf(digit)

    async def hangup(self) -> int:
        """Send BYE once (idempotent); 200 when the far end had already hung up."""
        if self.dialog is None or self._hung_up:
            return 0
        self._hung_up = True
        if self.rtp is not None:
            self.clock.sessions.discard(self.rtp)
            self.rtp.send_bye()  # the last RTCP report and BYE, before the SIP BYE ends the session
        if self.remote_bye.is_set():
            return 200
        with contextlib.suppress(Exception):
            return await dlg.bye(self.transport, self.dialog)
        return 0
