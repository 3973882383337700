"""RTCP (RFC 3550): packets byte for byte, compound packets, the receiver statistics of appendix A.1,
A.3 and A.8 (loss, reordering, duplicates, sequence wrap-around, jitter), round trip from LSR/DLSR, the
report schedule, SDP a=rtcp / a=rtcp-mux, and two sessions reporting to each other over loopback."""

from __future__ import annotations

import asyncio

import pytest

from aicc.appliance.voice import rtcp, sdp
from aicc.appliance.voice.codecs import PCMU
from aicc.appliance.voice.rtcp import (
    Goodbye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    Reporter,
    RtcpError,
    SenderReport,
    SourceDescription,
    encode_compound,
    is_rtcp,
    next_interval,
    ntp_middle,
    ntp_time,
    parse_rtcp,
    round_trip,
)
from aicc.appliance.voice.rtp import NO_PEER, RtpPacket, RtpSession, open_session
from tests.unit.test_voice_fakes import anyio_backend  # noqa: F401

# --- packets, byte for byte -------------------------------------------------------------------------

BLOCK = ReportBlock(
    ssrc=0x0A0B0C0D,
    fraction_lost=64,  # 25 %
    cumulative_lost=3,
    highest_seq=0x0001FFFF,  # one wrap, highest 65535
    jitter=30,
    lsr=0x12345678,
    dlsr=0x00010000,  # 1 s
)
BLOCK_BYTES = bytes.fromhex("0a0b0c0d 40000003 0001ffff 0000001e 12345678 00010000")


def test_receiver_report_with_sdes_cname_is_byte_exact() -> None:
    rr = ReceiverReport(0x01020304, (BLOCK,))
    # V=2 P=0 RC=1 | PT 201 | length 7 (32-bit words minus one) | SSRC | one 24-octet block
    assert rr.encode() == bytes.fromhex("81c90007 01020304") + BLOCK_BYTES
    sdes = SourceDescription.cname(0x01020304, "ab")
    # SC=1 | PT 202 | length 3 | SSRC | CNAME(1) len 2 "ab" | null + padding to the 32-bit boundary
    assert sdes.encode() == bytes.fromhex("81ca0003 01020304 01026162 00000000")
    sdes3 = SourceDescription.cname(0x01020304, "abc")  # 4 + 2 + 3 = 9 octets: 3 nulls
    assert sdes3.encode() == bytes.fromhex("81ca0003 01020304 01036162 63000000")
    assert Goodbye((0x01020304,)).encode() == bytes.fromhex("81cb0001 01020304")
    assert Goodbye((0x01020304,), "bye").encode() == bytes.fromhex("81cb0002 01020304 03627965")


def test_sender_report_is_byte_exact() -> None:
    msw, lsw = ntp_time(0.5)  # 1970-01-01 00:00:00.5 is NTP 2208988800.5
    assert (msw, lsw) == (0x83AA7E80, 0x80000000)
    assert ntp_middle(0.5) == 0x7E808000
    sr = SenderReport(0x11223344, msw, lsw, 1600, 10, 1600)
    assert sr.encode() == bytes.fromhex("80c80006 11223344 83aa7e80 80000000 00000640 0000000a 00000640")
    with_block = SenderReport(0x11223344, msw, lsw, 1600, 10, 1600, (BLOCK,)).encode()
    assert with_block[:4] == bytes.fromhex("81c8000c") and with_block[28:] == BLOCK_BYTES


def test_negative_cumulative_loss_is_24_bit_twos_complement() -> None:
    block = ReportBlock(1, 0, -1, 0, 0)
    assert block.encode()[4:8] == bytes.fromhex("00ffffff")
    assert ReportBlock.decode(block.encode(), 0).cumulative_lost == -1
    huge = ReportBlock(1, 0, 10**9, 0, 0).encode()
    assert ReportBlock.decode(huge, 0).cumulative_lost == 0x7FFFFF  # clamped, not wrapped


def test_compound_packet_round_trips_through_the_parser() -> None:
    sr = SenderReport(0x11223344, 1, 2, 3, 4, 5, (BLOCK,))
    data = encode_compound([sr, SourceDescription.cname(0x11223344, "gw-1"), Goodbye((0x11223344,))])
    packets = parse_rtcp(data)
    assert packets[0] == sr
    assert isinstance(packets[1], SourceDescription) and packets[1].item(0x11223344) == b"gw-1"
    assert packets[2] == Goodbye((0x11223344,))
    assert is_rtcp(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes.fromhex("81ca0003 01020304 01026162 00000000"), "starts with an SR or RR"),
        (bytes.fromhex("41c90001 01020304"), "version 2"),
        (bytes.fromhex("80c90002 01020304"), "past the datagram"),
        (bytes.fromhex("81c90001 01020304"), "report blocks"),
        (bytes.fromhex("a0c90001 01020304 80c90001 01020304"), "padding before the last"),
        (bytes.fromhex("80c90001 010203"), "32-bit words"),
    ],
)
def test_invalid_compound_packets_are_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(RtcpError, match=reason):
        parse_rtcp(data)


def test_compound_must_start_with_a_report() -> None:
    with pytest.raises(RtcpError):
        encode_compound([SourceDescription.cname(1, "x")])


def test_rtcp_and_rtp_demux_by_payload_type_range() -> None:
    rtp = RtpPacket(0, 1, 160, 5, bytes(160), marker=True).encode()
    assert not is_rtcp(rtp)
    assert not is_rtcp(RtpPacket(101, 1, 160, 5, bytes(4), marker=True).encode())
    for pt in (rtcp.SR, rtcp.RR, rtcp.SDES, rtcp.BYE, rtcp.APP, 205, 206, 207):
        assert is_rtcp(bytes([0x80, pt, 0, 1, 0, 0, 0, 1]))


# --- receiver statistics (A.1, A.3, A.8) ------------------------------------------------------------


def feed(seqs: list[int]) -> ReceptionStats:
    s = ReceptionStats(0xAB, seqs[0])
    for seq in seqs:
        s.update_seq(seq)
    return s


def test_in_order_stream_after_probation() -> None:
    s = feed(list(range(100, 110)))
    # The first packet only starts the probation (MIN_SEQUENTIAL 2): counting begins at the second.
    assert s.valid and s.base_seq == 101 and s.received == 9
    assert (s.expected, s.lost, s.interval()) == (9, 0, 0)


def test_a_lost_packet() -> None:
    s = feed([100, 101, 102, 104, 105])
    assert (s.expected, s.received, s.lost) == (5, 4, 1)
    block = s.report_block()
    assert block.fraction_lost == 256 // 5 == 51  # (lost_interval << 8) / expected_interval
    assert block.highest_seq == 105 and block.cumulative_lost == 1


def test_reordered_packets_are_not_lost() -> None:
    s = feed([100, 101, 103, 102, 104])
    assert s.max_seq == 104 and (s.expected, s.received, s.lost) == (4, 4, 0)


def test_duplicates_make_the_loss_negative() -> None:
    s = feed([100, 101, 102, 102])
    assert (s.expected, s.received, s.lost) == (2, 3, -1)
    assert s.report_block().fraction_lost == 0  # lost_interval <= 0


def test_sequence_wrap_around_counts_a_cycle() -> None:
    s = feed([65533, 65534, 65535, 0, 1])
    assert s.cycles == 65536 and s.max_seq == 1
    assert (s.expected, s.received, s.lost) == (4, 4, 0)
    assert s.report_block().highest_seq == 0x00010001


def test_wrap_during_probation() -> None:
    s = feed([65535, 0, 1])
    assert s.valid and s.base_seq == 0 and s.received == 2 and s.lost == 0


def test_fraction_lost_is_per_interval() -> None:
    s = ReceptionStats(1, 0)
    for seq in range(0, 11):  # valid from 1: 1..10, none lost
        s.update_seq(seq)
    assert s.report_block().fraction_lost == 0
    for seq in (11, 12, 15, 16):  # 11..16 expected (6), 4 received
        s.update_seq(seq)
    block = s.report_block()
    assert block.fraction_lost == (2 << 8) // 6 == 85 and block.cumulative_lost == 2
    for seq in range(17, 21):
        s.update_seq(seq)
    assert s.report_block().fraction_lost == 0  # this interval lost nothing; the total stays
    assert s.lost == 2


def test_a_large_jump_needs_two_packets_to_resync() -> None:
    s = feed([100, 101, 102])
    assert not s.update_seq(5000)  # one packet far away: discarded (bad_seq remembered)
    assert s.max_seq == 102 and s.received == 2
    assert s.update_seq(5001)  # the next one in sequence: the sender restarted, resync
    assert s.base_seq == 5001 and s.received == 1 and s.lost == 0


def test_probation_restarts_on_a_gap() -> None:
    s = ReceptionStats(1, 100)
    assert not s.update_seq(100)
    assert not s.update_seq(200)  # not in sequence: probation starts over from here
    assert s.update_seq(201)
    assert s.base_seq == 201 and s.received == 1


def test_jitter_of_a_steady_stream_is_zero_and_follows_one_late_packet() -> None:
    s = ReceptionStats(1, 0)
    ts = 0xFFFFFF00  # the RTP timestamp wraps during the stream: no effect
    for i in range(20):
        s.update_jitter(1000 + i * 160, (ts + i * 160) & 0xFFFFFFFF)
    assert s.jitter == 0.0
    # One packet 10 ms (80 timestamp units) late, the next on time again: D = 80 twice.
    s.update_jitter(1000 + 20 * 160 + 80, (ts + 20 * 160) & 0xFFFFFFFF)
    assert s.jitter == pytest.approx(80 / 16)
    s.update_jitter(1000 + 21 * 160, (ts + 21 * 160) & 0xFFFFFFFF)
    assert s.jitter == pytest.approx(5 + (80 - 5) / 16)
    assert s.report_block().jitter == 9


def test_reporter_feeds_jitter_from_audio_packets_only() -> None:
    r = Reporter(ssrc=1, clock_rate=8000)
    for i in range(10):
        r.rtp_received(7, i, i * 160, i * 0.02)
    # RFC 4733 events keep one timestamp for the whole event: no jitter from them.
    for i in range(10, 15):
        r.rtp_received(7, i, 9 * 160, 0.2 + i * 0.02, audio=False)
    assert r.source is not None and r.source.jitter == pytest.approx(0.0, abs=0.1)
    assert r.source.received == 14
    r.rtp_received(8, 500, 0, 1.0)  # another SSRC: a new source
    assert r.source.ssrc == 8 and r.source.received == 0


# --- reports, round trip, schedule ------------------------------------------------------------------


def test_reporter_sends_sr_after_rtp_then_rr_with_lsr_and_dlsr() -> None:
    r = Reporter(ssrc=0x11, clock_rate=8000, cname="c")
    for i in range(5):
        r.rtp_received(0x22, i, i * 160, i * 0.02)
    r.rtp_sent(160, 1000, 100.0)
    peer_sr = SenderReport(0x22, *ntp_time(50.0), 0, 5, 800)
    r.rtcp_received([peer_sr], 100.0)
    first = parse_rtcp(r.report(100.5))
    sr = first[0]
    assert isinstance(sr, SenderReport)
    assert (sr.ntp_msw, sr.ntp_lsw) == ntp_time(100.5)
    assert sr.rtp_timestamp == 1000 + 4000  # extrapolated to the report's instant
    assert (sr.packet_count, sr.octet_count) == (1, 160)
    (block,) = sr.blocks
    assert block.ssrc == 0x22 and block.highest_seq == 4 and block.cumulative_lost == 0
    assert block.lsr == ntp_middle(50.0) and block.dlsr == 32768  # 0.5 s in 1/65536 s
    assert isinstance(first[1], SourceDescription) and first[1].item(0x11) == b"c"
    second = parse_rtcp(r.report(101.0, bye=True))  # nothing sent since: an RR, and the BYE
    assert isinstance(second[0], ReceiverReport) and second[0].blocks[0].dlsr == 65536
    assert second[2] == Goodbye((0x11,)) and r.bye_sent


def test_no_report_block_before_the_source_is_valid() -> None:
    r = Reporter(ssrc=1, clock_rate=8000)
    r.rtp_received(2, 10, 0, 0.0)  # on probation
    rr = parse_rtcp(r.report(1.0))[0]
    assert isinstance(rr, ReceiverReport) and rr.blocks == ()


def test_round_trip_from_lsr_and_dlsr() -> None:
    lsr = ntp_middle(1000.0)  # our SR left at 1000.0
    rtt = round_trip(1000.7, lsr, int(0.5 * 65536))  # back at 1000.7 after 0.5 s at the peer
    assert rtt == pytest.approx(0.2, abs=1 / 65536 * 2)
    assert round_trip(1000.7, 0, 0) is None  # no SR received by the peer yet
    assert round_trip(1000.1, lsr, int(0.5 * 65536)) is None  # negative: discarded
    # The peer's report about our stream sets what it saw and the round trip.
    r = Reporter(ssrc=5, clock_rate=8000)
    block = ReportBlock(5, 128, 7, 100, 40, lsr, int(0.5 * 65536))
    r.rtcp_received([ReceiverReport(9, (block,))], 1000.7)
    assert r.peer.fraction_lost == 0.5 and r.peer.cumulative_lost == 7 and r.peer.jitter == 40
    assert r.peer.rtt_s == pytest.approx(0.2, abs=1e-4)


def test_report_schedule_is_randomised_around_five_seconds() -> None:
    assert next_interval(True, lambda: 0.0) == 1.25  # the first report: half the minimum
    assert next_interval(True, lambda: 0.999) == pytest.approx(3.75, abs=0.01)
    assert next_interval(False, lambda: 0.0) == 2.5
    assert next_interval(False, lambda: 0.5) == 5.0
    assert next_interval(False, lambda: 0.999) == pytest.approx(7.5, abs=0.01)
    values = [next_interval(False, Reporter(1, 8000).rng) for _ in range(200)]
    assert all(2.5 <= v < 7.5 for v in values) and max(values) - min(values) > 1
    r = Reporter(ssrc=1, clock_rate=8000, rng=lambda: 0.5)
    assert not r.due(10.0)  # the first call schedules the first report
    assert r.next_at == 12.5 and not r.due(12.4) and r.due(12.5)
    r.report(0.0, 12.5)
    assert r.next_at == 17.5


# --- SDP --------------------------------------------------------------------------------------------

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    "m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n{extra}a=sendrecv\r\n"
)


@pytest.mark.parametrize(
    ("extra", "rtcp_addr", "mux"),
    [
        ("", ("10.0.0.1", 30001), False),
        ("a=rtcp:30011\r\n", ("10.0.0.1", 30011), False),
        ("a=rtcp:40001 IN IP4 10.0.0.9\r\n", ("10.0.0.9", 40001), False),
        ("a=rtcp:30001\r\na=rtcp-mux\r\n", ("10.0.0.1", 30000), True),
    ],
)
def test_sdp_rtcp_address(extra: str, rtcp_addr: tuple[str, int], mux: bool) -> None:
    offer = sdp.parse(OFFER.format(extra=extra).encode())
    neg = sdp.negotiate(offer)
    assert neg.rtcp_addr == rtcp_addr and neg.rtcp_mux is mux
    answer = sdp.answer(offer, neg, "10.0.0.2", 40000, "1", 1).decode()
    assert ("a=rtcp-mux\r\n" in answer) is mux
    assert ("a=rtcp:40001\r\n" in answer) is not mux
    assert "a=rtcp:42001\r\n" in sdp.offer("10.0.0.2", 42000).decode()


def test_sdp_bad_rtcp_attribute() -> None:
    with pytest.raises(sdp.SdpError):
        sdp.parse(OFFER.format(extra="a=rtcp:x\r\n").encode())


# --- two sessions over loopback ---------------------------------------------------------------------


def session() -> RtpSession:
    return RtpSession(
        PCMU, 0, NO_PEER, dtmf_pt=101, on_audio=lambda pcm: None, on_dtmf=lambda d: None, source=lambda: None
    )


async def exchange(a: RtpSession, b: RtpSession, ticks: int, *, report: bool = False) -> None:
    if report:
        a.reporter.next_at = b.reporter.next_at = 0.0  # due now
    for _ in range(ticks):
        a.tick()
        b.tick()
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.05)


@pytest.mark.anyio
async def test_sessions_report_to_each_other_on_the_next_port_up() -> None:
    a, b = session(), session()
    pa = await open_session(a, "127.0.0.1", 44000, 44199)
    pb = await open_session(b, "127.0.0.1", 44200, 44399)
    assert a.rtcp_transport is not None
    assert a.rtcp_transport.get_extra_info("sockname")[1] == pa + 1
    a.update(PCMU, 0, ("127.0.0.1", pb), 101)  # no a=rtcp: RTP port + 1
    b.update(PCMU, 0, ("127.0.0.1", pa), 101, ("127.0.0.1", pa + 1))
    try:
        await exchange(a, b, 10)
        await exchange(a, b, 1, report=True)  # each sends an SR; neither has the other's SR yet
        assert (a.stats.rtcp_in, b.stats.rtcp_in) == (1, 1)
        assert a.reporter.peer.rtt_s is None and a.reporter.peer.cumulative_lost == 0
        await exchange(a, b, 5, report=True)  # now the reports carry LSR/DLSR: round trips
        for s in (a, b):
            assert s.reporter.peer.rtt_s is not None and 0 <= s.reporter.peer.rtt_s < 0.5
            assert s.stats.bad_packets == s.stats.bad_rtcp == s.stats.foreign_packets == 0
            assert s.reporter.source is not None and s.reporter.source.lost == 0
        assert "rtt" in a.quality()
    finally:
        b.close()  # the BYE goes out with a last report
        await asyncio.sleep(0.05)
        assert a.stats.rtcp_in == 3 and b.reporter.bye_sent
        a.close()
        assert a.reporter.bye_sent


@pytest.mark.anyio
async def test_rtcp_mux_reports_on_the_rtp_port_are_not_bad_rtp() -> None:
    a, b = session(), session()
    pa = await open_session(a, "127.0.0.1", 44400, 44599)
    pb = await open_session(b, "127.0.0.1", 44600, 44799)
    a.update(PCMU, 0, ("127.0.0.1", pb), 101, ("127.0.0.1", pb))  # a=rtcp-mux
    b.update(PCMU, 0, ("127.0.0.1", pa), 101, ("127.0.0.1", pa))
    try:
        assert a.rtcp_mux and b.rtcp_mux
        await exchange(a, b, 5)
        await exchange(a, b, 1, report=True)
        for s in (a, b):
            assert s.stats.rtcp_in == 1 and s.stats.bad_packets == 0
            assert s.stats.packets_in == 6  # RTP only
    finally:
        a.close()
        b.close()


@pytest.mark.anyio
async def test_no_rtcp_before_the_peer_is_known_and_garbage_is_counted() -> None:
    a = session()
    pa = await open_session(a, "127.0.0.1", 44800, 44999)
    try:
        a.reporter.next_at = 0.0
        a.tick()
        assert a.stats.rtcp_out == 0  # NO_PEER: nowhere to send
        a.close()
        assert not a.reporter.bye_sent  # never sent anything: no BYE
        b = session()
        await open_session(b, "127.0.0.1", 44800, 44999)
        b.update(PCMU, 0, ("127.0.0.1", pa), 101)
        sdes_first = bytes.fromhex("81ca0003 01020304 01026162 00000000")
        b.rtcp_received(sdes_first, ("127.0.0.1", pa + 1), muxed=False)
        b.rtcp_received(bytes.fromhex("80c90001 01020304"), ("127.0.0.9", pa + 1), muxed=False)
        assert b.stats.bad_rtcp == 1 and b.stats.foreign_packets == 1 and b.stats.rtcp_in == 0
        b.close()
    finally:
        a.close()
