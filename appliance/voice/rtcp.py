"""RTCP (RFC 3550 section 6) for one audio stream: SR, RR, SDES CNAME and BYE packets, compound
packets, the receiver statistics of appendix A.1, A.3 and A.8, and the report schedule.

rtpengine computes a call's MOS from these reports (fraction lost, interarrival jitter and the round
trip from LSR/DLSR, on both legs), which Kamailio turns into its per-call quality metrics.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

SR = 200
RR = 201
SDES = 202
BYE = 203
APP = 204
SDES_CNAME = 1

RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)
REPORT_INTERVAL_S = 5.0  # RFC 3550 6.2: the minimum interval, which a two-party call always uses


class RtcpError(ValueError):
    pass


def is_rtcp(data: bytes) -> bool:
    """RTCP or RTP on one port (RFC 5761 section 4): RTCP's packet type 192-223 sits where RTP has the
    marker bit and payload type 64-95, which no dynamic audio payload type uses."""
    return len(data) >= 8 and data[0] >> 6 == 2 and 192 <= data[1] <= 223


def ntp_time(unix: float) -> tuple[int, int]:
    """A Unix time as a 64-bit NTP timestamp (seconds, fraction in 1/2^32 s)."""
    whole = int(unix)
    frac = int((unix - whole) * (1 << 32))
    return (whole + NTP_UNIX_OFFSET) & 0xFFFFFFFF, min(frac, 0xFFFFFFFF)


def ntp_middle(unix: float) -> int:
    """The middle 32 bits of the NTP timestamp (seconds and fraction in 1/65536 s): LSR's unit."""
    msw, lsw = ntp_time(unix)
    return ((msw & 0xFFFF) << 16) | (lsw >> 16)


def _header(count: int, packet_type: int, body_len: int, padding: bool = False) -> bytes:
    if body_len % 4:
        raise RtcpError("an RTCP packet is a whole number of 32-bit words")
    return struct.pack("!BBH", 0x80 | (0x20 if padding else 0) | count, packet_type, body_len // 4)


@dataclass(frozen=True)
class ReportBlock:
    """One reception report (RFC 3550 6.4.1) about the source `ssrc`."""

    ssrc: int
    fraction_lost: int  # lost in the last interval, in 1/256
    cumulative_lost: int  # signed 24 bits: duplicates can make it negative
    highest_seq: int  # extended: cycles << 16 | highest sequence number
    jitter: int  # interarrival jitter in timestamp units
    lsr: int = 0  # middle 32 bits of the last SR's NTP time from the source, 0: none yet
    dlsr: int = 0  # delay since that SR in 1/65536 s

    def encode(self) -> bytes:
        lost = max(-0x800000, min(0x7FFFFF, self.cumulative_lost)) & 0xFFFFFF
        return struct.pack(
            "!IIIIII",
            self.ssrc,
            (self.fraction_lost & 0xFF) << 24 | lost,
            self.highest_seq & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF,
            self.dlsr & 0xFFFFFFFF,
        )

    @classmethod
    def decode(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, word, highest, jitter, lsr, dlsr = struct.unpack_from("!IIIIII", data, offset)
        lost = word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, word >> 24, lost, highest, jitter, lsr, dlsr)


@dataclass(frozen=True)
class SenderReport:
    ssrc: int
    ntp_msw: int
    ntp_lsw: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    blocks: tuple[ReportBlock, ...] = ()

    def encode(self) -> bytes:
        body = struct.pack(
            "!IIIIII",
            self.ssrc,
            self.ntp_msw,
            self.ntp_lsw,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        ) + b"".join(b.encode() for b in self.blocks)
        return _header(len(self.blocks), SR, len(body)) + body

    @property
    def ntp_middle(self) -> int:
        return ((self.ntp_msw & 0xFFFF) << 16) | (self.ntp_lsw >> 16)


@dataclass(frozen=True)
class ReceiverReport:
    ssrc: int
    blocks: tuple[ReportBlock, ...] = ()

    def encode(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(b.encode() for b in self.blocks)
        return _header(len(self.blocks), RR, len(body)) + body


@dataclass(frozen=True)
class SourceDescription:
    """SDES with one chunk per source: {ssrc: {item type: value}} (CNAME is type 1)."""

    chunks: tuple[tuple[int, tuple[tuple[int, bytes], ...]], ...]

    @classmethod
    def cname(cls, ssrc: int, cname: str) -> SourceDescription:
        return cls(((ssrc, ((SDES_CNAME, cname.encode()),)),))

    def encode(self) -> bytes:
        body = b""
        for ssrc, items in self.chunks:
            chunk = struct.pack("!I", ssrc)
            for kind, value in items:
                if len(value) > 255:
                    raise RtcpError("an SDES item holds at most 255 octets")
                chunk += struct.pack("!BB", kind, len(value)) + value
            # The item list ends with a null octet, then nulls up to the next 32-bit boundary.
            chunk += bytes(4 - len(chunk) % 4)
            body += chunk
        return _header(len(self.chunks), SDES, len(body)) + body

    def item(self, ssrc: int, kind: int = SDES_CNAME) -> bytes | None:
        for chunk_ssrc, items in self.chunks:
            if chunk_ssrc == ssrc:
                return next((v for k, v in items if k == kind), None)
        return None


@dataclass(frozen=True)
class Goodbye:
    ssrcs: tuple[int, ...]
    reason: str = ""

    def encode(self) -> bytes:
        body = b"".join(struct.pack("!I", s) for s in self.ssrcs)
        if self.reason:
            text = self.reason.encode()[:255]
            body += bytes([len(text)]) + text
            body += bytes(-len(body) % 4)
        return _header(len(self.ssrcs), BYE, len(body)) + body


@dataclass(frozen=True)
class OtherRtcp:
    """APP, RTPFB, PSFB, XR, ...: kept as they came, not interpreted."""

    packet_type: int
    count: int
    body: bytes


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Goodbye | OtherRtcp


def encode_compound(packets: Sequence[RtcpPacket]) -> bytes:
    """A compound packet (RFC 3550 6.1): it must start with an SR or RR and carry an SDES CNAME."""
    if not packets or not isinstance(packets[0], SenderReport | ReceiverReport):
        raise RtcpError("a compound RTCP packet starts with an SR or RR")
    out = b""
    for p in packets:
        if isinstance(p, OtherRtcp):
            out += _header(p.count, p.packet_type, len(p.body)) + p.body
        else:
            out += p.encode()
    return out


def _blocks(data: bytes, offset: int, count: int, end: int) -> tuple[ReportBlock, ...]:
    if offset + 24 * count > end:
        raise RtcpError("report blocks run past the packet")
    return tuple(ReportBlock.decode(data, offset + 24 * i) for i in range(count))


def _sdes(data: bytes, offset: int, count: int, end: int) -> SourceDescription:
    chunks = []
    for _ in range(count):
        if offset + 4 > end:
            raise RtcpError("truncated SDES chunk")
        (ssrc,) = struct.unpack_from("!I", data, offset)
        offset += 4
        items = []
        while True:
            if offset >= end:
                raise RtcpError("SDES chunk without its terminating null")
            kind = data[offset]
            if kind == 0:
                offset += 1
                offset += -offset % 4  # to the next 32-bit boundary (from the packet's start)
                break
            if offset + 2 > end or offset + 2 + data[offset + 1] > end:
                raise RtcpError("truncated SDES item")
            length = data[offset + 1]
            items.append((kind, data[offset + 2 : offset + 2 + length]))
            offset += 2 + length
        chunks.append((ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """A compound RTCP packet, validated as in RFC 3550 appendix A.2: version 2 throughout, an SR or
    RR first, padding only on the last packet, and lengths that add up to the datagram."""
    packets: list[RtcpPacket] = []
    offset = 0
    total = len(data)
    if total < 8 or total % 4:
        raise RtcpError("an RTCP packet is at least 8 octets, in 32-bit words")
    while offset < total:
        if offset + 4 > total:
            raise RtcpError("truncated RTCP header")
        b0, packet_type, words = struct.unpack_from("!BBH", data, offset)
        if b0 >> 6 != 2:
            raise RtcpError("not RTCP version 2")
        count = b0 & 0x1F
        end = offset + 4 + 4 * words
        if end > total:
            raise RtcpError("RTCP length runs past the datagram")
        body_end = end
        if b0 & 0x20:
            if end != total:
                raise RtcpError("padding before the last packet of a compound")
            pad = data[end - 1]
            if pad == 0 or pad > 4 * words:
                raise RtcpError("bad RTCP padding")
            body_end -= pad
        if offset == 0 and packet_type not in (SR, RR):
            raise RtcpError("a compound RTCP packet starts with an SR or RR")
        body = offset + 4
        if packet_type == SR:
            if body + 24 > body_end:
                raise RtcpError("truncated SR")
            ssrc, msw, lsw, ts, pc, oc = struct.unpack_from("!IIIIII", data, body)
            blocks = _blocks(data, body + 24, count, body_end)
            packets.append(SenderReport(ssrc, msw, lsw, ts, pc, oc, blocks))
        elif packet_type == RR:
            if body + 4 > body_end:
                raise RtcpError("truncated RR")
            (ssrc,) = struct.unpack_from("!I", data, body)
            packets.append(ReceiverReport(ssrc, _blocks(data, body + 4, count, body_end)))
        elif packet_type == SDES:
            packets.append(_sdes(data, body, count, body_end))
        elif packet_type == BYE:
            if body + 4 * count > body_end:
                raise RtcpError("truncated BYE")
            ssrcs = struct.unpack_from(f"!{count}I", data, body)
            reason = ""
            at = body + 4 * count
            if at < body_end and at + 1 + data[at] <= body_end:
                reason = data[at + 1 : at + 1 + data[at]].decode("utf-8", "replace")
            packets.append(Goodbye(tuple(ssrcs), reason))
        else:
            packets.append(OtherRtcp(packet_type, count, data[body:body_end]))
        offset = end
    return packets


class ReceptionStats:
    """Statistics of one source we receive, exactly as RFC 3550 appendix A.1 (sequence numbers:
    probation, wrap-around, restarts), A.3 (expected, lost, fraction lost per interval) and A.8
    (interarrival jitter, in timestamp units)."""

    def __init__(self, ssrc: int, seq: int, min_sequential: int = MIN_SEQUENTIAL) -> None:
        self.ssrc = ssrc
        self.min_sequential = min_sequential
        self.base_seq = 0
        self.max_seq = 0
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0
        self.jitter = 0.0
        self._transit: int | None = None
        # A new source: on probation until MIN_SEQUENTIAL packets came in sequence.
        self._init_seq(seq)
        self.max_seq = (seq - 1) & 0xFFFF
        self.probation = min_sequential

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1  # so seq == bad_seq is false
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    @property
    def valid(self) -> bool:
        return self.probation == 0

    def update_seq(self, seq: int) -> bool:
        """A packet's sequence number; False when the packet does not count (probation, a jump)."""
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            # Packets must be in sequence (A.1 compares seq == max_seq + 1 in 16 bits here, so a
            # source may start right before the wrap).
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = self.min_sequential - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            # In order, with a permissible gap.
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD  # sequence number wrapped: count another 64K cycle
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            # A very large jump: two sequential packets mean the other side restarted without
            # telling us, so resync; a single one is discarded.
            if seq == self.bad_seq:
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & (RTP_SEQ_MOD - 1)
                return False
        # else: a duplicate or reordered packet
        self.received += 1
        return True

    def update_jitter(self, arrival: int, rtp_timestamp: int) -> None:
        """A.8: `arrival` is the arrival time in the stream's timestamp units (any origin)."""
        transit = (arrival - rtp_timestamp) & 0xFFFFFFFF
        if self._transit is not None:
            d = ((transit - self._transit + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
            self.jitter += (abs(d) - self.jitter) / 16.0
        self._transit = transit  # the first packet only sets the reference: no difference yet

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost, clamped to the report's signed 24 bits."""
        return max(-0x800000, min(0x7FFFFF, self.expected - self.received))

    def interval(self) -> int:
        """A.3: the fraction lost since the previous call (the previous report), in 1/256."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return (lost_interval << 8) // expected_interval

    def report_block(self, lsr: int = 0, dlsr: int = 0) -> ReportBlock:
        fraction = self.interval()
        return ReportBlock(
            self.ssrc,
            fraction,
            self.lost,
            self.extended_max & 0xFFFFFFFF,
            int(self.jitter),
            lsr,
            dlsr,
        )


@dataclass
class PeerView:
    """What the far end last reported about the stream we send, and the round trip it gave."""

    fraction_lost: float | None = None  # 0..1
    cumulative_lost: int | None = None
    jitter: int | None = None  # timestamp units
    rtt_s: float | None = None
    reports: int = 0


def round_trip(arrival: float, lsr: int, dlsr: int) -> float | None:
    """RFC 3550 6.4.1: RTT = A - LSR - DLSR in 1/65536 s, A the middle NTP bits at arrival."""
    if lsr == 0:
        return None
    rtt = (ntp_middle(arrival) - lsr - dlsr) & 0xFFFFFFFF
    if rtt & 0x80000000:
        return None  # negative: clocks or a stale report
    return rtt / 65536.0


def next_interval(initial: bool, rng: Callable[[], float], interval_s: float = REPORT_INTERVAL_S) -> float:
    """RFC 3550 6.3.5 for two participants, simplified: the 5 s minimum (halved before the first
    report) times a random factor in [0.5, 1.5), so reports of many calls do not synchronise."""
    base = interval_s / 2 if initial else interval_s
    return base * (0.5 + rng())


@dataclass
class Reporter:
    """The RTCP side of one RTP session: counts what we send, keeps the statistics of the source we
    receive and the last SR it sent, builds compound reports, and reads the peer's reports."""

    ssrc: int
    clock_rate: int
    cname: str = field(default_factory=lambda: secrets.token_hex(8))  # RFC 7022: random per session
    rng: Callable[[], float] = field(default_factory=lambda: secrets.SystemRandom().random)
    packets_sent: int = 0
    octets_sent: int = 0
    source: ReceptionStats | None = None
    peer: PeerView = field(default_factory=PeerView)
    next_at: float | None = None  # monotonic time of the next report
    reports_sent: int = 0
    # RTP sent since the last report (then it is an SR); the last packet's (wallclock, timestamp);
    # the peer's last SR as (ssrc, NTP middle bits, wallclock received).
    _sent_since_report: bool = field(default=False, init=False)
    _last_rtp: tuple[float, int] | None = field(default=None, init=False)
    _last_sr: tuple[int, int, float] | None = field(default=None, init=False)
    _bye_sent: bool = field(default=False, init=False)

    def rtp_sent(self, payload_octets: int, rtp_timestamp: int, now: float) -> None:
        self.packets_sent += 1
        self.octets_sent += payload_octets
        self._sent_since_report = True
        self._last_rtp = (now, rtp_timestamp)

    def rtp_received(
        self, ssrc: int, seq: int, rtp_timestamp: int, arrival_s: float, *, audio: bool = True
    ) -> None:
        """A data packet from the peer; `arrival_s` on any steady clock, in seconds."""
        if self.source is None or self.source.ssrc != ssrc:
            self.source = ReceptionStats(ssrc, seq)  # a new source (re-INVITE, transfer): start over
        if self.source.update_seq(seq) and audio:
            # Jitter over the audio packets only: RFC 4733 events repeat one timestamp for 100 ms.
            self.source.update_jitter(round(arrival_s * self.clock_rate), rtp_timestamp)

    def rtcp_received(self, packets: Sequence[RtcpPacket], now: float) -> None:
        for p in packets:
            if isinstance(p, SenderReport):
                self._last_sr = (p.ssrc, p.ntp_middle, now)
            if isinstance(p, SenderReport | ReceiverReport):
                for block in p.blocks:
                    if block.ssrc == self.ssrc:
                        self.peer.fraction_lost = block.fraction_lost / 256
                        self.peer.cumulative_lost = block.cumulative_lost
                        self.peer.jitter = block.jitter
                        self.peer.reports += 1
                        rtt = round_trip(now, block.lsr, block.dlsr)
                        if rtt is not None:
                            self.peer.rtt_s = rtt

    def due(self, mono: float) -> bool:
        if self.next_at is None:
            self.next_at = mono + next_interval(True, self.rng)
            return False
        return mono >= self.next_at

    def report(self, now: float, mono: float | None = None, *, bye: bool = False) -> bytes:
        """The compound packet: SR (we sent RTP since the last report) or RR, SDES CNAME, and BYE when
        leaving. `now` is the wallclock (NTP time in the SR, DLSR); `mono` schedules the next one."""
        blocks: tuple[ReportBlock, ...] = ()
        if self.source is not None and self.source.valid:
            lsr = dlsr = 0
            if self._last_sr is not None and self._last_sr[0] == self.source.ssrc:
                lsr = self._last_sr[1]
                # At least 1: DLSR 0 reads as "no SR received" (rtpengine then drops the report).
                dlsr = max(1, int((now - self._last_sr[2]) * 65536))
            blocks = (self.source.report_block(lsr, dlsr),)
        first: SenderReport | ReceiverReport
        if self._sent_since_report and self._last_rtp is not None:
            msw, lsw = ntp_time(now)
            sent_at, sent_ts = self._last_rtp
            # The RTP timestamp of this very instant, extrapolated from the last packet sent.
            ts = (sent_ts + round((now - sent_at) * self.clock_rate)) & 0xFFFFFFFF
            first = SenderReport(self.ssrc, msw, lsw, ts, self.packets_sent, self.octets_sent, blocks)
        else:
            first = ReceiverReport(self.ssrc, blocks)
        packets: list[RtcpPacket] = [first, SourceDescription.cname(self.ssrc, self.cname)]
        if bye:
            packets.append(Goodbye((self.ssrc,)))
            self._bye_sent = True
        self._sent_since_report = False
        self.reports_sent += 1
        if mono is not None:
            self.next_at = mono + next_interval(False, self.rng)
        return encode_compound(packets)

    @property
    def bye_sent(self) -> bool:
        return self._bye_sent
