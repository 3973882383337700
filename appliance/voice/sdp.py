"""SDP (RFC 4566) offer/answer (RFC 3264) for one audio stream: G.722, PCMU, PCMA and RFC 4733 events."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field

from aicc.appliance.voice.codecs import PREFERENCE, SUPPORTED, Codec

STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000), 3: ("GSM", 8000), 18: ("G729", 8000)}
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class SdpError(ValueError):
    """Malformed SDP (a 400)."""


class NoCommonCodec(ValueError):
    """Well-formed SDP with nothing the gateway can decode (a 488)."""


@dataclass
class Media:
    kind: str
    port: int
    proto: str
    formats: list[str]
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str = "sendrecv"
    connection: str | None = None
    ptime: int | None = None
    rtcp_port: int | None = None  # a=rtcp (RFC 3605): where the peer receives RTCP
    rtcp_address: str | None = None
    rtcp_mux: bool = False  # a=rtcp-mux (RFC 5761): RTCP on the RTP port


@dataclass
class SessionDescription:
    origin_session: str
    origin_version: int
    connection: str | None
    media: list[Media]

    def audio(self) -> Media | None:
        return next((m for m in self.media if m.kind == "audio" and m.port != 0), None)


def _addr(line: str) -> str:
    parts = line.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError("bad c= line")
    try:
        ipaddress.ip_address(parts[2].split("/")[0])
    except ValueError:
        raise SdpError("c= address is not an IP address") from None
    return parts[2].split("/")[0]


def parse(body: bytes) -> SessionDescription:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    lines = [ln.strip() for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP must start with v=0")
    origin: list[str] | None = None
    connection: str | None = None
    media: list[Media] = []
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=":
            raise SdpError("malformed SDP line")
        key, value = line[0], line[2:]
        if key == "o":
            origin = value.split()
            if len(origin) != 6 or not origin[2].isdigit():
                raise SdpError("bad o= line")
        elif key == "c":
            if media:
                media[-1].connection = _addr(value)
            else:
                connection = _addr(value)
        elif key == "m":
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise SdpError("bad m= line")
            port = int(parts[1].split("/")[0])
            if port > 65535:
                raise SdpError("m= port out of range")
            media.append(Media(parts[0], port, parts[2], parts[3:]))
        elif key == "a" and media:
            _attribute(media[-1], value)
    if origin is None:
        raise SdpError("missing o= line")
    if not media:
        raise SdpError("no m= line")
    for m in media:
        if m.kind == "audio" and m.port != 0 and (m.connection or connection) is None:
            raise SdpError("no c= address for the audio stream")
    return SessionDescription(origin[1], int(origin[2]), connection, media)


def _attribute(m: Media, value: str) -> None:
    name, _, arg = value.partition(":")
    if name in DIRECTIONS:
        m.direction = name
    elif name == "rtpmap":
        pt_text, _, enc = arg.partition(" ")
        enc_name, _, rest = enc.partition("/")
        rate = rest.split("/")[0]
        if not pt_text.isdigit() or not rate.isdigit() or not enc_name:
            raise SdpError("bad a=rtpmap")
        m.rtpmap[int(pt_text)] = (enc_name, int(rate))
    elif name == "fmtp":
        pt_text, _, params = arg.partition(" ")
        if pt_text.isdigit():
            m.fmtp[int(pt_text)] = params
    elif name == "ptime" and arg.strip().isdigit():
        m.ptime = int(arg.strip())
    elif name == "rtcp":
        parts = arg.split()
        if not parts or not parts[0].isdigit() or not 0 < int(parts[0]) <= 65535:
            raise SdpError("bad a=rtcp")
        m.rtcp_port = int(parts[0])
        if len(parts) >= 4:
            m.rtcp_address = _addr(" ".join(parts[1:4]))
    elif name == "rtcp-mux":
        m.rtcp_mux = True


@dataclass(frozen=True)
class Negotiated:
    codec: Codec
    payload_type: int
    dtmf_pt: int | None
    remote_addr: tuple[str, int]
    direction: str  # the direction of our side: sendrecv, sendonly, recvonly, inactive
    # Where our RTCP goes: the RTP address with rtcp-mux, else a=rtcp's, else the RTP port + 1.
    rtcp_addr: tuple[str, int] | None = None
    rtcp_mux: bool = False


def _format_name(m: Media, pt: int) -> tuple[str, int] | None:
    if pt in m.rtpmap:
        name, rate = m.rtpmap[pt]
        return name.upper(), rate
    return STATIC.get(pt)


_ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


def negotiate(offer: SessionDescription, preference: tuple[str, ...] = PREFERENCE) -> Negotiated:
    audio = offer.audio()
    if audio is None:
        raise NoCommonCodec("no active audio stream in the offer")
    if audio.proto not in ("RTP/AVP", "RTP/AVPF"):
        raise NoCommonCodec(f"media profile {audio.proto} is not supported (plain RTP/AVP only)")
    offered: dict[str, int] = {}
    dtmf: int | None = None
    for fmt in audio.formats:
        if not fmt.isdigit():
            raise SdpError("non-numeric RTP payload format")
        pt = int(fmt)
        named = _format_name(audio, pt)
        if named is None:
            continue
        name, rate = named
        if name == "TELEPHONE-EVENT" and rate == 8000:
            dtmf = pt if dtmf is None else dtmf
        elif name in SUPPORTED and rate == SUPPORTED[name].clock_rate and name not in offered:
            offered[name] = pt
    # The offerer's order expresses its preference, but wideband wins for ASR if the caller offers it.
    for name in preference:
        if name in offered:
            address = audio.connection or offer.connection or ""
            if audio.rtcp_mux:
                rtcp = (address, audio.port)
            elif audio.rtcp_port is not None:
                rtcp = (audio.rtcp_address or address, audio.rtcp_port)
            else:
                rtcp = (address, audio.port + 1)
            return Negotiated(
                SUPPORTED[name],
                offered[name],
                dtmf,
                (address, audio.port),
                _ANSWER_DIRECTION[audio.direction],
                rtcp,
                audio.rtcp_mux,
            )
    raise NoCommonCodec("none of the offered codecs is supported (G722, PCMU, PCMA)")


def answer(
    offer: SessionDescription, neg: Negotiated, local_ip: str, local_port: int, session_id: str, version: int
) -> bytes:
    """The answer: same m-lines in the same order; the audio one accepted, the others refused (port 0)."""
    lines = [
        "v=0",
        f"o=aicc {session_id} {version} IN IP4 {local_ip}",
        "s=aicc",
        f"c=IN IP4 {local_ip}",
        "t=0 0",
    ]
    done = False
    for m in offer.media:
        if m.kind == "audio" and m.port != 0 and not done:
            done = True
            fmts = [str(neg.payload_type)] + ([str(neg.dtmf_pt)] if neg.dtmf_pt is not None else [])
            lines.append(f"m=audio {local_port} RTP/AVP {' '.join(fmts)}")
            lines.append(f"a=rtpmap:{neg.payload_type} {neg.codec.name}/{neg.codec.clock_rate}")
            if neg.dtmf_pt is not None:
                lines.append(f"a=rtpmap:{neg.dtmf_pt} telephone-event/8000")
                lines.append(f"a=fmtp:{neg.dtmf_pt} 0-16")
            lines.append("a=ptime:20")
            # RTCP: on the RTP port when the offer muxes (RFC 5761), else on the next port up.
            lines.append("a=rtcp-mux" if neg.rtcp_mux else f"a=rtcp:{local_port + 1}")
            lines.append(f"a={neg.direction}")
        else:
            lines.append(f"m={m.kind} 0 {m.proto} {' '.join(m.formats)}")
    return ("\r\n".join(lines) + "\r\n").encode()


def offer(
    local_ip: str,
    local_port: int,
    *,
    codecs: tuple[str, ...] = ("PCMU", "PCMA", "G722"),
    dtmf_pt: int = 101,
    session_id: str | None = None,
) -> bytes:
    """An offer for a call the gateway places (transfer leg) or a test/smoke caller places."""
    sid = session_id or str(int(time.time()))
    pts = [SUPPORTED[c].payload_type for c in codecs]
    lines = [
        "v=0",
        f"o=aicc {sid} 1 IN IP4 {local_ip}",
        "s=aicc",
        f"c=IN IP4 {local_ip}",
        "t=0 0",
        f"m=audio {local_port} RTP/AVP {' '.join(map(str, [*pts, dtmf_pt]))}",
    ]
    lines += [f"a=rtpmap:{SUPPORTED[c].payload_type} {c}/{SUPPORTED[c].clock_rate}" for c in codecs]
    lines += [
        f"a=rtpmap:{dtmf_pt} telephone-event/8000",
        f"a=fmtp:{dtmf_pt} 0-16",
        "a=ptime:20",
        f"a=rtcp:{local_port + 1}",  # RTCP on the next port up (RFC 3605); no rtcp-mux offered
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()
