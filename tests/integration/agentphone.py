"""A test agent's SIP phone: registers an extension on Kamailio (digest auth), rings, answers with real
RTP (plays what it is given, records what it hears), takes hold and resume, transfers (REFER) and
hangs up.

Enough to stand in for the phone on an agent's desk in lab tests of the ACD's call path.
"""

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
from aicc.appliance.voice.transport import Addr, SipTransport


@dataclass
class Ring:
    """One INVITE this phone got."""

    invite: sip.SipMessage
    addr: Addr
    at: float = field(default_factory=time.monotonic)
    answered_at: float | None = None
    ended_at: float | None = None
    dialog: dlg.Dialog | None = None


class AgentPhone:
    def __init__(
        self,
        extension: str,
        password: str,
        proxy: Addr,
        local_ip: str,
        *,
        domain: str = "aicc.local",
        answer_after_s: float | None = 1.0,
        rtp_range: tuple[int, int] = (44000, 44999),
    ) -> None:
        self.extension = extension
        self.password = password
        self.proxy = proxy
        self.local_ip = local_ip
        self.domain = domain
        self.answer_after_s = answer_after_s  # None: let it ring (no answer)
        self.rtp_range = rtp_range
        self.transport = SipTransport(self._on_request)
        self.clock = MediaClock()
        self.rings: list[Ring] = []
        self.heard: list[tuple[float, bytes]] = []
        self._out: list[bytes] = []
        self.rtp: RtpSession | None = None
        self._port = 0
        self.current: Ring | None = None
        self.call_ended = asyncio.Event()
        # The transfer's progress (the sipfrag of each NOTIFY: "SIP/2.0 200 OK"); like a browser
        # phone, this one hangs up when a transfer succeeds.
        self.transfer_reports: list[str] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self.transport, local_addr=(self.local_ip, 0))
        self.clock.start()
        await self.register()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.register(expires=0)
        if self.rtp is not None:
            self.clock.sessions.discard(self.rtp)
            self.rtp.close()
        await self.clock.stop()
        self.transport.close()

    async def register(self, expires: int = 300) -> None:
        local = self.transport.local
        uri = f"sip:{self.domain}"
        call_id, tag = sip.new_call_id(local[0]), sip.new_tag()
        auth: list[tuple[str, str]] = []
        for cseq in (1, 2):
            req = sip.SipMessage(method="REGISTER", uri=uri)
            req.headers = [
                ("Via", f"SIP/2.0/UDP {local[0]}:{local[1]};branch={sip.new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:{self.extension}@{self.domain}>;tag={tag}"),
                ("To", f"<sip:{self.extension}@{self.domain}>"),
                ("Call-ID", call_id),
                ("CSeq", f"{cseq} REGISTER"),
                ("Contact", f"<sip:{self.extension}@{local[0]}:{local[1]}>"),
                ("Expires", str(expires)),
                *auth,
            ]
            res = await self.transport.request(req, self.proxy, timeout=5)
            if res.status == 401 and not auth:
                creds = dlg.Credentials(self.extension, self.password)
                challenge = res.get("WWW-Authenticate") or ""
                auth = [("Authorization", dlg.digest_response(challenge, creds, "REGISTER", uri))]
                continue
            if res.status != 200:
                raise RuntimeError(f"REGISTER {self.extension} got {res.status} {res.reason}")
            return

    # --- audio ------------------------------------------------------------------------------------

    def play(self, pcm: bytes, sample_rate: int) -> None:
        data = resample(pcm, sample_rate, 8000)
        step = 320
        self._out += [data[i : i + step].ljust(step, b"\0") for i in range(0, len(data), step)]

    def heard_voice_s(self, threshold: float = 300.0) -> float:
        """Seconds of audio above the threshold this phone received."""
        return sum(0.02 for _, f in self.heard if rms(f) > threshold)

    def _next_out(self) -> bytes | None:
        return self._out.pop(0) if self._out else None

    def _heard(self, pcm: bytes) -> None:
        self.heard.append((time.monotonic(), pcm))

    # --- calls ------------------------------------------------------------------------------------

    def _on_request(self, req: sip.SipMessage, addr: Addr) -> None:
        t = self.transport
        if req.method == "INVITE" and not req.to.tag:
            ring = Ring(req, addr)
            self.rings.append(ring)
            t.respond(req, sip.response(req, 180, "Ringing", to_tag=sip.new_tag()), addr)
            if self.answer_after_s is not None:
                asyncio.get_running_loop().create_task(self._answer(ring))
        elif req.method == "INVITE":
            t.respond(
                req,
                sip.response(req, 200, "OK", to_tag=req.to.tag, body=self._sdp()),
                addr,
                reliable_2xx=True,
            )
        elif req.method == "CANCEL":
            t.respond(req, sip.response(req, 200, "OK"), addr)
            ring = next((r for r in self.rings if r.invite.call_id == req.call_id), None)
            if ring is not None and ring.answered_at is None:
                ring.ended_at = time.monotonic()
                t.respond(
                    ring.invite,
                    sip.response(ring.invite, 487, "Request Terminated", to_tag=sip.new_tag()),
                    ring.addr,
                )
        elif req.method == "BYE":
            t.respond(req, sip.response(req, 200, "OK"), addr)
            self._ended()
        elif req.method == "NOTIFY":
            t.respond(req, sip.response(req, 200, "OK"), addr)
            report = req.body.decode(errors="replace").strip()
            self.transfer_reports.append(report)
            if report.startswith("SIP/2.0 2") and self.current is not None:
                asyncio.get_running_loop().create_task(self.hangup())
        elif req.method != "ACK":
            t.respond(req, sip.response(req, 200, "OK"), addr)

    def _sdp(self) -> bytes:
        return sdp.offer(self.local_ip, self._port, codecs=("PCMU",))

    async def _answer(self, ring: Ring) -> None:
        await asyncio.sleep(self.answer_after_s or 0)
        if ring.ended_at is not None:
            return
        offer = sdp.negotiate(sdp.parse(ring.invite.body), preference=("PCMU", "PCMA"))
        self.rtp = RtpSession(
            SUPPORTED["PCMU"],
            0,
            NO_PEER,
            dtmf_pt=101,
            on_audio=self._heard,
            on_dtmf=lambda d: None,
            source=self._next_out,
            jitter_depth=3,
        )
        self._port = await open_session(self.rtp, self.local_ip, *self.rtp_range)
        self.rtp.update(offer.codec, offer.payload_type, offer.remote_addr, offer.dtmf_pt)
        self.clock.sessions.add(self.rtp)
        tag = sip.new_tag()
        contact = f"sip:{self.extension}@{self.local_ip}:{self.transport.local[1]}"
        ok = sip.response(
            ring.invite, 200, "OK", to_tag=tag, headers=[("Contact", f"<{contact}>")], body=self._sdp()
        )
        self.transport.respond(ring.invite, ok, ring.addr, reliable_2xx=True)
        ring.answered_at = time.monotonic()
        ring.dialog = dlg.uas_dialog(ring.invite, tag, contact)
        self.current = ring
        self.call_ended.clear()

    def _ended(self) -> None:
        if self.current is not None:
            self.current.ended_at = time.monotonic()
        if self.rtp is not None:
            self.clock.sessions.discard(self.rtp)
            self.rtp.close()
            self.rtp = None
        self.current = None
        self.call_ended.set()

    async def hold(self, held: bool) -> int:
        """Re-INVITE the caller's side: sendonly to hold, sendrecv to resume. Returns the status."""
        assert self.current is not None and self.current.dialog is not None
        body = self._sdp()
        if held:
            body = body.replace(b"a=sendrecv", b"a=sendonly")
        dialog = self.current.dialog
        req = dialog.request("INVITE", via_host=self.transport.local, body=body)
        dialog.invite_cseq = dialog.local_cseq
        res = await self.transport.request(req, self.current.dialog.next_hop(), timeout=5)
        if res.status == 200:
            dlg.send_ack(self.transport, self.current.dialog)
        return res.status

    async def refer(self, target: str) -> int:
        """Blind transfer of the current call to `target` (a SIP URI): the REFER's status; how it
        went arrives in `transfer_reports`."""
        assert self.current is not None and self.current.dialog is not None
        dialog = self.current.dialog
        req = dialog.request(
            "REFER",
            via_host=self.transport.local,
            headers=[("Refer-To", f"<{target}>"), ("Referred-By", f"<sip:{self.extension}@{self.domain}>")],
        )
        res = await self.transport.request(req, dialog.next_hop(), timeout=5)
        return res.status

    async def hangup(self) -> int:
        if self.current is None or self.current.dialog is None:
            return 0
        status = await dlg.bye(self.transport, self.current.dialog)
        self._ended()
        return status
