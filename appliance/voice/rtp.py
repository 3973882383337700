"""RTP (RFC 3550) for one audio stream: packets, a jitter buffer, RFC 4733 DTMF events, and a session
that a shared 20 ms media clock drives (one timer for all calls, not one per call). The session sends
and reads RTCP (rtcp.py) on the next port up, or on the RTP port itself when rtcp-mux was agreed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aicc.appliance.voice import rtcp
from aicc.appliance.voice.codecs import Codec, Coder

log = logging.getLogger(__name__)

DTMF_EVENTS = "0123456789*#ABCD"
# The remote address of a session before the answer names it.
NO_PEER: tuple[str, int] = ("0.0.0.0", 0)  # noqa: S104


class RtpError(ValueError):
    pass


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def encode(self) -> bytes:
        return (
            struct.pack(
                "!BBHII",
                0x80,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc,
            )
            + self.payload
        )


def parse_rtp(data: bytes) -> RtpPacket:
    if len(data) < 12:
        raise RtpError("shorter than an RTP header")
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    if b0 >> 6 != 2:
        raise RtpError("not RTP version 2")
    offset = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension
        if len(data) < offset + 4:
            raise RtpError("truncated header extension")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if b0 & 0x20:  # padding
        pad = data[-1]
        if pad == 0 or pad > end - offset:
            raise RtpError("bad padding")
        end -= pad
    if offset > end:
        raise RtpError("truncated RTP packet")
    return RtpPacket(b1 & 0x7F, seq, ts, ssrc, data[offset:end], bool(b1 & 0x80))


def seq_newer(a: int, b: int) -> bool:
    """a comes after b in 16-bit sequence space (wraps at 65536)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


@dataclass
class JitterStats:
    received: int = 0
    late: int = 0  # arrived after its slot was played
    lost: int = 0  # slot played with nothing there (concealed)
    duplicate: int = 0
    overflow: int = 0


class JitterBuffer:
    """Reorders packets by sequence number and releases one per 20 ms tick after `depth` packets.

    Fixed depth keeps the delay predictable (barge-in budget); a gap is concealed by repeating the
    previous frame once at lower level, then silence.
    """

    def __init__(self, depth: int = 3, max_packets: int = 50) -> None:
        self.depth = depth
        self.max_packets = max_packets
        self._packets: dict[int, bytes] = {}
        self._next: int | None = None
        self._started = False
        self._ssrc: int | None = None
        self.stats = JitterStats()

    def put(self, packet: RtpPacket) -> None:
        if self._ssrc is not None and packet.ssrc != self._ssrc:
            self.reset()  # a new source (re-INVITE, transfer): start over rather than mix streams
        self._ssrc = packet.ssrc
        self.stats.received += 1
        if self._next is None:
            self._next = packet.sequence
        elif self._started and not seq_newer(packet.sequence, (self._next - 1) & 0xFFFF):
            self.stats.late += 1
            return
        if packet.sequence in self._packets:
            self.stats.duplicate += 1
            return
        if len(self._packets) >= self.max_packets:
            self.stats.overflow += 1
            self._packets.clear()  # far behind (a stall): drop the backlog rather than add delay
            self._next = packet.sequence
            self._started = False
        elif not self._started and seq_newer(self._next, packet.sequence):
            self._next = packet.sequence  # an earlier packet arrived before playout began
        self._packets[packet.sequence] = packet.payload

    def pop(self) -> bytes | None:
        """The payload for this tick, or None (nothing yet, or a gap to conceal)."""
        if self._next is None:
            return None
        if not self._started:
            if len(self._packets) < self.depth:
                return None
            self._started = True
        payload = self._packets.pop(self._next, None)
        if payload is None:
            if not self._packets:
                # Underrun: the stream paused (silence suppression, hold). Wait to refill.
                self._started = False
                return None
            self.stats.lost += 1
        self._next = (self._next + 1) & 0xFFFF
        return payload

    def reset(self) -> None:
        self._packets.clear()
        self._next = None
        self._started = False


class DtmfReceiver:
    """RFC 4733 events: reports each key once, at the first packet of the event."""

    def __init__(self) -> None:
        self._last_ts: int | None = None

    def feed(self, packet: RtpPacket) -> str | None:
        if len(packet.payload) < 4:
            raise RtpError("telephone-event payload shorter than 4 bytes")
        event = packet.payload[0]
        if event >= len(DTMF_EVENTS):
            return None  # tones and flash events are not keys
        if packet.timestamp == self._last_ts:
            return None  # the same event continued or its end packets repeated
        self._last_ts = packet.timestamp
        return DTMF_EVENTS[event]


def dtmf_packets(
    digit: str, *, pt: int, seq: int, ts: int, ssrc: int, duration_ms: int = 100
) -> list[RtpPacket]:
    """An RFC 4733 event as a sender emits it: updates every 20 ms, then three end packets."""
    event = DTMF_EVENTS.index(digit)
    steps = max(1, duration_ms // 20)
    out = []
    for i in range(steps):
        dur = (i + 1) * 160
        end = i == steps - 1
        payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, dur)
        repeats = 3 if end else 1
        for _ in range(repeats):
            out.append(RtpPacket(pt, seq, ts, ssrc, payload, marker=i == 0))
            seq += 1
    return out


@dataclass
class MediaStats:
    packets_in: int = 0
    packets_out: int = 0
    bad_packets: int = 0
    foreign_packets: int = 0
    rtcp_in: int = 0
    rtcp_out: int = 0
    bad_rtcp: int = 0
    last_rx: float = field(default_factory=time.monotonic)


AudioSink = Callable[[bytes], None]
DtmfSink = Callable[[str], None]
AudioSource = Callable[[], bytes | None]


def rtcp_port_of(remote: tuple[str, int]) -> tuple[str, int]:
    """Where RTCP goes without an a=rtcp attribute: the next port up (RFC 3550 11)."""
    return remote if remote == NO_PEER else (remote[0], remote[1] + 1)


class RtcpProtocol(asyncio.DatagramProtocol):
    """The RTCP socket (RTP port + 1) of a session."""

    def __init__(self, session: RtpSession) -> None:
        self.session = session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.session.rtcp_transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.session.rtcp_received(data, addr, muxed=False)

    def error_received(self, exc: Exception) -> None:
        log.debug("RTCP socket error: %s", exc)


class RtpSession(asyncio.DatagramProtocol):
    """One call's RTP socket. The media clock calls `tick()` every 20 ms: one frame in, one frame out."""

    def __init__(
        self,
        codec: Codec,
        payload_type: int,
        remote: tuple[str, int],
        *,
        dtmf_pt: int | None,
        on_audio: AudioSink,
        on_dtmf: DtmfSink,
        source: AudioSource,
        jitter_depth: int = 3,
        rtcp_remote: tuple[str, int] | None = None,
    ) -> None:
        self.codec = codec
        self.payload_type = payload_type
        self.remote = remote
        self.dtmf_pt = dtmf_pt
        self.on_audio = on_audio
        self.on_dtmf = on_dtmf
        self.source = source
        self.coder: Coder = codec.coder()
        self.jitter = JitterBuffer(jitter_depth)
        self.dtmf = DtmfReceiver()
        self.stats = MediaStats()
        self.transport: asyncio.DatagramTransport | None = None
        self.rtcp_transport: asyncio.DatagramTransport | None = None
        self.rtcp_remote = rtcp_remote or rtcp_port_of(remote)
        self.sending = True
        self.receiving = True
        self._ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self._silence = self.coder.encode(bytes(codec.samples_per_frame * 2))
        self._was_silent = True
        self._latched = False
        self._rtcp_latched = False
        self.reporter = rtcp.Reporter(self._ssrc, codec.clock_rate)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if rtcp.is_rtcp(data) and data[1] & 0x7F not in (self.payload_type, self.dtmf_pt):
            # RFC 5761: RTCP on the RTP port (rtcp-mux, or a peer that sends it there anyway); a
            # negotiated payload type 64-95 with the marker bit set is still RTP.
            self.rtcp_received(data, addr, muxed=True)
            return
        if addr != self.remote:
            # Symmetric RTP: follow the first source that sends to us from the signalled host (a NAT or
            # rtpengine may use another port); ignore other hosts.
            if not self._latched and addr[0] == self.remote[0]:
                if self.rtcp_mux:
                    self.rtcp_remote = addr  # rtcp-mux: RTCP follows RTP
                self.remote = addr
            else:
                self.stats.foreign_packets += 1
                return
        self._latched = True
        try:
            packet = parse_rtp(data)
        except RtpError:
            self.stats.bad_packets += 1
            return
        self.stats.packets_in += 1
        self.stats.last_rx = now = time.monotonic()
        audio = packet.payload_type == self.payload_type
        self.reporter.rtp_received(packet.ssrc, packet.sequence, packet.timestamp, now, audio=audio)
        if not self.receiving:
            return
        if self.dtmf_pt is not None and packet.payload_type == self.dtmf_pt:
            try:
                digit = self.dtmf.feed(packet)
            except RtpError:
                self.stats.bad_packets += 1
                return
            if digit is not None:
                self.on_dtmf(digit)
        elif packet.payload_type == self.payload_type:
            self.jitter.put(packet)
        else:
            self.stats.bad_packets += 1  # comfort noise or a codec that was not negotiated

    def error_received(self, exc: Exception) -> None:
        log.debug("RTP socket error: %s", exc)

    @property
    def rtcp_mux(self) -> bool:
        return self.rtcp_remote == self.remote and self.remote != NO_PEER

    def rtcp_received(self, data: bytes, addr: tuple[str, int], *, muxed: bool) -> None:
        """A compound RTCP packet from the peer: its SR (for our LSR/DLSR) and its reports about us."""
        if addr not in (self.rtcp_remote, self.remote):
            if not muxed and not self._rtcp_latched and addr[0] == self.rtcp_remote[0]:
                self.rtcp_remote = addr  # symmetric RTCP, like RTP: follow the signalled host's port
            else:
                self.stats.foreign_packets += 1
                return
        if not muxed:
            self._rtcp_latched = True
        try:
            packets = rtcp.parse_rtcp(data)
        except rtcp.RtcpError as exc:
            log.debug("bad RTCP from %s: %s", addr, exc)
            self.stats.bad_rtcp += 1
            return
        self.stats.rtcp_in += 1
        self.reporter.rtcp_received(packets, time.time())

    def _send_rtcp(self, data: bytes) -> None:
        transport = self.transport if self.rtcp_mux else self.rtcp_transport
        if transport is None or self.rtcp_remote == NO_PEER:
            return
        transport.sendto(data, self.rtcp_remote)
        self.stats.rtcp_out += 1

    def send_bye(self) -> None:
        """The RTCP BYE (in a last compound report) when leaving the call; once."""
        r = self.reporter
        if r.bye_sent or not (r.packets_sent or r.reports_sent) or self.rtcp_remote == NO_PEER:
            return
        self._send_rtcp(r.report(time.time(), bye=True))

    def tick(self) -> None:
        payload = self.jitter.pop()
        if payload is not None:
            try:
                pcm = self.coder.decode(payload)
            except Exception:
                self.stats.bad_packets += 1
                pcm = b""
            if pcm:
                self.on_audio(pcm)
        pcm_out = self.source()
        mono = time.monotonic()
        if self.transport is not None and self.rtcp_remote != NO_PEER and self.reporter.due(mono):
            self._send_rtcp(self.reporter.report(time.time(), mono))
        if not self.sending or self.transport is None:
            self._ts += self.codec.timestamp_step
            return
        payload_out = self._silence if pcm_out is None else self.coder.encode(pcm_out)
        marker = pcm_out is not None and self._was_silent
        self._was_silent = pcm_out is None
        self.transport.sendto(
            RtpPacket(self.payload_type, self._seq, self._ts, self._ssrc, payload_out, marker).encode(),
            self.remote,
        )
        self.stats.packets_out += 1
        self.reporter.rtp_sent(len(payload_out), self._ts, time.time())
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + self.codec.timestamp_step) & 0xFFFFFFFF

    def send_dtmf(self, digit: str) -> None:
        if self.dtmf_pt is None or self.transport is None:
            raise RtpError("the peer did not offer telephone-event")
        for p in dtmf_packets(digit, pt=self.dtmf_pt, seq=self._seq, ts=self._ts, ssrc=self._ssrc):
            self.transport.sendto(p.encode(), self.remote)
            self.reporter.rtp_sent(len(p.payload), p.timestamp, time.time())
            self._seq = (p.sequence + 1) & 0xFFFF

    def update(
        self,
        codec: Codec,
        payload_type: int,
        remote: tuple[str, int],
        dtmf_pt: int | None,
        rtcp_remote: tuple[str, int] | None = None,
    ) -> None:
        """Apply an answer or re-INVITE: new address and, where it changed, a new codec. RTCP goes to
        `rtcp_remote` (the SDP's a=rtcp, or the RTP address itself with rtcp-mux), else RTP port + 1."""
        if codec != self.codec:
            self.codec = codec
            self.coder = codec.coder()
            self._silence = self.coder.encode(bytes(codec.samples_per_frame * 2))
            self.jitter.reset()
            self.reporter.clock_rate = codec.clock_rate
        self.payload_type = payload_type
        self.dtmf_pt = dtmf_pt
        rtcp_remote = rtcp_remote or rtcp_port_of(remote)
        if remote != self.remote:
            self.remote = remote
            self._latched = False
        if rtcp_remote != self.rtcp_remote:
            self.rtcp_remote = rtcp_remote
            self._rtcp_latched = False

    def quality(self) -> str:
        """One line for the log: what we received, and what the peer's reports said about our stream."""
        r = self.reporter
        parts = [f"rtcp sent {self.stats.rtcp_out}, received {self.stats.rtcp_in}"]
        if r.source is not None and r.source.valid:
            ms = 1000 / max(1, r.clock_rate)
            parts.append(
                f"in: lost {r.source.lost}/{r.source.expected}, jitter {r.source.jitter * ms:.1f} ms"
            )
        p = r.peer
        if p.reports:
            ms = 1000 / max(1, r.clock_rate)
            rtt = f", rtt {p.rtt_s * 1000:.1f} ms" if p.rtt_s is not None else ""
            parts.append(
                f"peer saw: lost {p.cumulative_lost} ({(p.fraction_lost or 0) * 100:.1f} %), "
                f"jitter {(p.jitter or 0) * ms:.1f} ms{rtt}"
            )
        return "; ".join(parts)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send_bye()
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self.rtcp_transport is not None:
            self.rtcp_transport.close()
            self.rtcp_transport = None


class MediaClock:
    """Ticks every registered session every 20 ms from one task; counts ticks that ran late."""

    def __init__(self, period_s: float = 0.02) -> None:
        self.period_s = period_s
        self.sessions: set[RtpSession] = set()
        self.late_ticks = 0
        self.ticks = 0
        self.max_catch_up = 5  # ticks (100 ms): more than a jitter buffer can absorb is dropped
        self.on_tick_error: Callable[[Exception], None] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="media-clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.period_s
            for session in list(self.sessions):
                try:
                    session.tick()
                except Exception as exc:  # one broken call must not stall everybody's audio
                    log.exception("media tick failed")
                    if self.on_tick_error is not None:
                        self.on_tick_error(exc)
            self.ticks += 1
            delay = next_at - loop.time()
            if delay < -self.period_s:
                # Behind (the host was busy): catch up tick by tick, so no frame is dropped and the
                # far end's jitter buffer absorbs the burst; beyond MAX_CATCH_UP re-anchor instead.
                self.late_ticks += 1
                if -delay > self.max_catch_up * self.period_s:
                    next_at = loop.time()
                delay = 0.0
            await asyncio.sleep(max(0.0, delay))


async def open_session(session: RtpSession, bind_ip: str, port_min: int, port_max: int) -> int:
    """Bind the session to a free even port in the range and its RTCP socket to the next one up (both
    in the range); returns the RTP port."""
    loop = asyncio.get_running_loop()
    start = port_min + 2 * secrets.randbelow(max(1, (port_max - port_min) // 2))
    span = port_max - port_min + 1
    for i in range(0, span, 2):
        port = port_min + ((start - port_min + i) % span)
        port -= port % 2
        if port < port_min or port + 1 > port_max:
            continue
        socks: list[socket.socket] = []
        try:
            for p in (port, port + 1):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((bind_ip, p))
        except OSError:
            for sock in socks:
                sock.close()
            continue
        await loop.create_datagram_endpoint(lambda: session, sock=socks[0])
        await loop.create_datagram_endpoint(lambda: RtcpProtocol(session), sock=socks[1])
        return port
    raise OSError(f"no free RTP/RTCP port pair in {port_min}-{port_max}")
