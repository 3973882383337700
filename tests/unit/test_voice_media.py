"""Codecs, RTP packets, jitter buffer, RFC 4733 DTMF, SDP offer/answer and SIP parsing."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from aicc.appliance.voice import codecs, sdp, sip
from aicc.appliance.voice.audio import resample, rms, tone
from aicc.appliance.voice.rtp import (
    DtmfReceiver,
    JitterBuffer,
    RtpError,
    RtpPacket,
    dtmf_packets,
    parse_rtp,
    seq_newer,
)
from aicc.appliance.voice.toolargs import validate

# --- codecs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "ulaw", "alaw"),
    [
        (0, 0xFF, 0xD5),
        (-1, 0x7E, 0x55),
        (1000, 0xCE, 0xFA),
        (-1000, 0x4E, 0x7A),
        (32767, 0x80, 0xAA),
        (-32768, 0x00, 0x2A),
        (8159, 0x9F, 0x8A),
    ],
)
def test_g711_matches_the_reference_encoder(sample: int, ulaw: int, alaw: int) -> None:
    pcm = struct.pack("<h", sample)
    assert codecs.ulaw_encode(pcm) == bytes([ulaw])
    assert codecs.alaw_encode(pcm) == bytes([alaw])


@pytest.mark.parametrize("name", ["PCMU", "PCMA", "G722"])
def test_codec_round_trip_keeps_a_tone(name: str) -> None:
    codec = codecs.SUPPORTED[name]
    enc, dec = codec.coder(), codec.coder()
    pcm = tone(440, 0.4, codec.sample_rate, amplitude=0.3)
    step = codec.samples_per_frame * 2
    out = b"".join(dec.decode(enc.encode(pcm[i : i + step])) for i in range(0, len(pcm), step))
    assert len(out) == len(pcm)
    a = np.frombuffer(pcm, dtype="<i2").astype(float)[400:]
    b = np.frombuffer(out, dtype="<i2").astype(float)[400:]
    lag = 0 if name != "G722" else int(np.argmax(np.correlate(b[:800], a[:400], mode="valid")))
    err = a[: len(a) - lag] - b[lag:]
    snr = 10 * np.log10(np.mean(a**2) / max(np.mean(err**2), 1e-9))
    assert snr > 20, f"{name} SNR {snr:.1f} dB"


def test_resample_keeps_frequency_and_length() -> None:
    pcm = tone(300, 1.0, 22050)
    out = resample(pcm, 22050, 8000)
    assert len(out) == 2 * 8000
    x = np.frombuffer(out, dtype="<i2").astype(float)
    assert abs(np.argmax(np.abs(np.fft.rfft(x))) * 8000 / len(x) - 300) < 3
    assert rms(out) > 0.6 * rms(pcm)


# --- RTP, jitter buffer, DTMF --------------------------------------------------------------------


def test_rtp_round_trip_and_rejects_garbage() -> None:
    p = RtpPacket(0, 65535, 4294967295, 1234, b"\x01" * 160, marker=True)
    assert parse_rtp(p.encode()) == p
    for bad in (b"", b"\x80" * 11, b"\x40" + b"\x00" * 20, b"\xa0\x00" + b"\x00" * 10 + b"\x00"):
        with pytest.raises(RtpError):
            parse_rtp(bad)
    assert seq_newer(0, 65535) and not seq_newer(65535, 0)


def _pkt(seq: int, ssrc: int = 1) -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, seq * 160, ssrc, bytes([seq & 0xFF]) * 160)


def test_jitter_buffer_reorders_conceals_and_drops_late() -> None:
    jb = JitterBuffer(depth=3)
    for seq in (65534, 0, 65535, 2):  # out of order across the wrap; 1 is missing
        jb.put(_pkt(seq))
    out = [jb.pop() for _ in range(5)]
    assert out[0] == bytes([65534 & 0xFF]) * 160
    assert out[1] == bytes([255]) * 160
    assert out[2] == bytes([0]) * 160
    assert out[3] is None  # seq 1 lost: concealed
    assert out[4] == bytes([2]) * 160
    assert jb.stats.lost == 1
    jb.put(_pkt(1))  # arrives after its slot
    assert jb.stats.late == 1


def test_jitter_buffer_waits_for_depth_and_resets_on_new_source() -> None:
    jb = JitterBuffer(depth=3)
    jb.put(_pkt(10))
    jb.put(_pkt(11))
    assert jb.pop() is None
    jb.put(_pkt(12))
    assert jb.pop() is not None
    jb.put(_pkt(500, ssrc=2))
    assert jb.pop() is None  # a new SSRC starts over


def test_dtmf_reports_each_key_once() -> None:
    rx = DtmfReceiver()
    keys = [rx.feed(p) for p in dtmf_packets("5", pt=101, seq=1, ts=8000, ssrc=7)]
    keys += [rx.feed(p) for p in dtmf_packets("#", pt=101, seq=20, ts=16000, ssrc=7)]
    assert [k for k in keys if k] == ["5", "#"]
    with pytest.raises(RtpError):
        rx.feed(RtpPacket(101, 1, 1, 1, b"\x01"))


# --- SDP -------------------------------------------------------------------------------------------

OFFER = (
    b"v=0\r\no=- 42 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n"
    b"m=audio 30000 RTP/AVP 18 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    b"m=video 30002 RTP/AVP 96\r\n"
)


def test_sdp_answer_picks_a_supported_codec_and_refuses_video() -> None:
    offer = sdp.parse(OFFER)
    neg = sdp.negotiate(offer)
    assert neg.codec.name == "PCMU" and neg.dtmf_pt == 101 and neg.remote_addr == ("10.0.0.5", 30000)
    answer = sdp.parse(sdp.answer(offer, neg, "10.0.0.9", 40000, "1", 1))
    assert [(m.kind, m.port) for m in answer.media] == [("audio", 40000), ("video", 0)]
    assert answer.media[0].formats == ["0", "101"]


def test_sdp_hold_offer_is_answered_recvonly() -> None:
    neg = sdp.negotiate(sdp.parse(OFFER.replace(b"a=sendrecv", b"a=sendonly")))
    assert neg.direction == "recvonly"


@pytest.mark.parametrize(
    "offer",
    [
        OFFER.replace(b"18 8 0 101", b"18 101"),
        OFFER.replace(b"RTP/AVP 18 8 0 101", b"RTP/SAVP 0"),
    ],
)
def test_sdp_without_a_usable_codec_is_no_common_codec(offer: bytes) -> None:
    with pytest.raises(sdp.NoCommonCodec):
        sdp.negotiate(sdp.parse(offer))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"v=1\r\n",
        b"v=0\r\no=x\r\n",
        OFFER.replace(b"30000", b"99999"),
        OFFER.replace(b"a=rtpmap:101 telephone-event/8000", b"a=rtpmap:x y"),
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n\xff\xfe",
    ],
)
def test_malformed_sdp_raises(body: bytes) -> None:
    with pytest.raises(sdp.SdpError):
        sdp.parse(body)


# --- SIP -------------------------------------------------------------------------------------------

INVITE = (
    b"INVITE sip:4000@10.0.0.9:5080 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb\r\n"
    b'Record-Route: <sip:10.0.0.1;lr>\r\nf: "Bob" <sip:bob@x>;tag=99\r\nt: <sip:4000@x>\r\n'
    b"i: abc@x\r\nCSeq: 7 INVITE\r\nContact: <sip:bob@10.0.0.2:5060>\r\nX-AICC-Service: voicebot-zh\r\n"
    b"Content-Length: 4\r\n\r\nbody-and-more"
)


def test_sip_parse_compact_headers_and_build_response() -> None:
    msg = sip.parse(INVITE)
    assert msg.method == "INVITE" and msg.call_id == "abc@x" and msg.cseq == (7, "INVITE")
    assert msg.from_.tag == "99" and msg.from_.display == "Bob" and msg.body == b"body"
    assert msg.branch == "z9hG4bKa" and len(msg.get_all("Via")) == 2
    res = sip.parse(sip.response(msg, 200, "OK", to_tag="t1").encode())
    assert res.status == 200 and res.to.tag == "t1" and res.get_all("Via") == msg.get_all("Via")
    assert res.get("Record-Route") == "<sip:10.0.0.1;lr>"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (INVITE.replace(b"CSeq: 7 INVITE", b"CSeq: 7 BYE"), "CSeq method does not match the request"),
        (INVITE.replace(b"i: abc@x\r\n", b""), "missing Call-ID header"),
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: 400"), "body shorter than Content-Length"),
        (INVITE.replace(b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia"), "bad request line"),
        (INVITE.replace(b"sip:4000@10.0.0.9:5080", b"http://x"), "unsupported Request-URI scheme"),
        (b"INVITE sip:x SIP/2.0\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"\xff\xfe\r\n\r\n", "headers are not UTF-8"),
        (INVITE.replace(b"t: <sip:4000@x>", b"t: <sip:4000@x"), "unbalanced < > in a name-addr"),
    ],
)
def test_sip_parse_rejects_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(sip.SipParseError) as err:
        sip.parse(data)
    assert err.value.reason == reason


def test_unparseable_request_gets_400_only_when_it_can_be_routed() -> None:
    reply = sip.reject_unparseable(
        INVITE.replace(b"CSeq: 7 INVITE", b"CSeq: x INVITE"), "Bad Request (bad CSeq)"
    )
    assert reply is not None and reply.startswith(b"SIP/2.0 400 Bad Request (bad CSeq)")
    assert sip.reject_unparseable(b"SIP/2.0 200 OK\r\n\r\n", "x") is None
    assert sip.reject_unparseable(b"garbage", "x") is None


def test_tool_argument_validation() -> None:
    schema = {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "pattern": r"^\d{6}$"},
            "n": {"type": "integer", "minimum": 1},
        },
        "required": ["order_id"],
        "additionalProperties": False,
    }
    assert validate(schema, {"order_id": "100234", "n": 2}) == []
    errors = validate(schema, {"order_id": "12", "n": True, "x": 1})
    assert len(errors) == 3
    assert validate(schema, {}) == ["arguments.order_id: missing"]
