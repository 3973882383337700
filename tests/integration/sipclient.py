"""A small SIP user agent over UDP for tests: builds requests, reads replies, answers digest challenges.

Enough SIP to probe a proxy the way a phone does (OPTIONS, REGISTER with RFC 2617 digest, INVITE
with ACK/CANCEL): one transaction at a time, no retransmission timers beyond a receive timeout.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
import time
from dataclasses import dataclass, field

SIP_VERSION = "SIP/2.0"
DEFAULT_SDP = (
    "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)


@dataclass
class SipResponse:
    status: int
    reason: str
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: str = ""
    raw: str = ""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def to_tag(self) -> str:
        return _tag(self.header("to") or "")


def parse_response(data: bytes) -> SipResponse:
    text = data.decode("utf-8", errors="replace")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    match = re.match(r"SIP/2\.0 (\d{3}) ?(.*)", lines[0])
    if not match:
        raise ValueError(f"not a SIP response: {lines[0]!r}")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(_long_name(name.strip().lower()), []).append(value.strip())
    return SipResponse(int(match.group(1)), match.group(2), headers, body, text)


_COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
}


def _long_name(name: str) -> str:
    return _COMPACT.get(name, name)


def digest_response(
    *,
    username: str,
    password: str,
    realm: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str = "00000001",
    cnonce: str = "",
) -> str:
    """RFC 2617 MD5 digest; with qop=auth when the challenge offers it."""
    ha1 = hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    if qop:
        return hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode()).hexdigest()
    return hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()


def parse_challenge(value: str) -> dict[str, str]:
    """Digest realm="x", nonce="y", qop="auth" -> {'realm': 'x', ...}."""
    if not value.lower().startswith("digest "):
        raise ValueError(f"not a digest challenge: {value!r}")
    return {
        k.lower(): v1 or v2 for k, v1, v2 in re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', value[7:])
    }


class SipClient:
    """One UDP socket; `proxy` is where every request goes (the outbound proxy)."""

    def __init__(self, proxy: tuple[str, int], *, local_ip: str = "", timeout: float = 3.0) -> None:
        self.proxy = proxy
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((local_ip, 0))
        self.sock.settimeout(timeout)
        # The address the proxy sees: the route the kernel picks toward it.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(proxy)
        self.local_ip = local_ip or probe.getsockname()[0]
        probe.close()
        self.local_port = self.sock.getsockname()[1]
        self.timeout = timeout

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- building and sending -------------------------------------------------------------

    def build(
        self,
        method: str,
        uri: str,
        *,
        from_uri: str,
        to_uri: str,
        call_id: str,
        cseq: int,
        branch: str | None = None,
        extra: list[str] | None = None,
        body: str = "",
        from_tag: str = "",
        to_tag: str = "",
        max_forwards: int = 70,
    ) -> tuple[str, str]:
        branch = branch or "z9hG4bK" + secrets.token_hex(8)
        lines = [
            f"{method} {uri} {SIP_VERSION}",
            f"Via: {SIP_VERSION}/UDP {self.local_ip}:{self.local_port};branch={branch};rport",
            f"Max-Forwards: {max_forwards}",
            f"From: <{from_uri}>;tag={from_tag or secrets.token_hex(4)}",
            f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:test@{self.local_ip}:{self.local_port}>",
            "User-Agent: aicc-test",
            *(extra or []),
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body, branch

    def send_raw(self, message: str | bytes) -> None:
        self.sock.sendto(message.encode() if isinstance(message, str) else message, self.proxy)

    def receive(self, call_id: str | None = None, timeout: float | None = None) -> SipResponse | None:
        """Next response (of this call), or None on timeout. Requests sent to us are skipped."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                return None
            if not data.startswith(b"SIP/2.0 "):
                continue
            resp = parse_response(data)
            if call_id is None or resp.header("call-id") == call_id:
                return resp

    def final(self, call_id: str, timeout: float | None = None) -> SipResponse | None:
        """The first final (>= 200) response of a call, skipping provisionals."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while (left := deadline - time.monotonic()) > 0:
            resp = self.receive(call_id, left)
            if resp is None:
                return None
            if resp.status >= 200:
                return resp
        return None

    def receive_request(self, timeout: float | None = None) -> tuple[str, tuple[str, int]] | None:
        """Next request sent to this client (a call the proxy forwards to us), with its sender."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                return None
            if not data.startswith(b"SIP/2.0 "):
                return data.decode("utf-8", errors="replace"), (addr[0], addr[1])
        return None

    def respond(self, request: str, addr: tuple[str, int], status: int, reason: str) -> None:
        """Answer a received request (no body): its Via set, From, To with our tag, Call-ID, CSeq."""
        head = request.partition("\r\n\r\n")[0].split("\r\n")[1:]
        keep = ("via", "v", "from", "f", "call-id", "i", "cseq")
        lines = [f"{SIP_VERSION} {status} {reason}"]
        lines += [h for h in head if h.split(":", 1)[0].strip().lower() in keep]
        to = next(h for h in head if h.split(":", 1)[0].strip().lower() in ("to", "t"))
        lines.append(to if ";tag=" in to else f"{to};tag={secrets.token_hex(4)}")
        lines.append("Content-Length: 0")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)

    # --- transactions ---------------------------------------------------------------------

    def options(self, uri: str, *, domain: str = "aicc.local") -> SipResponse | None:
        call_id = secrets.token_hex(8)
        msg, _ = self.build(
            "OPTIONS",
            uri,
            from_uri=f"sip:probe@{domain}",
            to_uri=uri,
            call_id=call_id,
            cseq=1,
            extra=["Accept: application/sdp"],
        )
        self.send_raw(msg)
        return self.final(call_id)

    def register(
        self,
        user: str,
        password: str | None,
        *,
        domain: str,
        expires: int = 60,
    ) -> tuple[SipResponse | None, SipResponse | None]:
        """REGISTER, then again with credentials if challenged: (first reply, reply to the retry)."""
        uri = f"sip:{domain}"
        aor = f"sip:{user}@{domain}"
        call_id = secrets.token_hex(8)
        from_tag = secrets.token_hex(4)
        extra = [f"Expires: {expires}"]
        msg, _ = self.build(
            "REGISTER", uri, from_uri=aor, to_uri=aor, call_id=call_id, cseq=1, from_tag=from_tag, extra=extra
        )
        self.send_raw(msg)
        first = self.final(call_id)
        if first is None or first.status not in (401, 407) or password is None:
            return first, None
        auth = self.authorization(first, user, password, "REGISTER", uri)
        msg, _ = self.build(
            "REGISTER",
            uri,
            from_uri=aor,
            to_uri=aor,
            call_id=call_id,
            cseq=2,
            from_tag=from_tag,
            extra=[*extra, auth],
        )
        self.send_raw(msg)
        return first, self.final(call_id)

    def invite(
        self,
        uri: str,
        *,
        from_user: str = "caller",
        domain: str = "aicc.local",
        timeout: float = 5.0,
    ) -> SipResponse | None:
        """INVITE with an SDP offer. A negative final reply is ACKed; an answered call is ACKed and hung
        up at once (BYE); with no final reply in time the INVITE is CANCELled."""
        call_id = secrets.token_hex(8)
        from_tag = secrets.token_hex(4)
        from_uri = f"sip:{from_user}@{domain}"
        body = DEFAULT_SDP.format(ip=self.local_ip)
        msg, branch = self.build(
            "INVITE",
            uri,
            from_uri=from_uri,
            to_uri=uri,
            call_id=call_id,
            cseq=1,
            from_tag=from_tag,
            body=body,
        )
        self.send_raw(msg)
        resp = self.final(call_id, timeout)
        if resp is None:
            cancel, _ = self.build(
                "CANCEL",
                uri,
                from_uri=from_uri,
                to_uri=uri,
                call_id=call_id,
                cseq=1,
                from_tag=from_tag,
                branch=branch,
            )
            self.send_raw(cancel)
            return None
        to_tag = _tag(resp.header("to") or "")
        if resp.status >= 300:
            ack, _ = self.build(
                "ACK",
                uri,
                from_uri=from_uri,
                to_uri=uri,
                call_id=call_id,
                cseq=1,
                from_tag=from_tag,
                to_tag=to_tag,
                branch=branch,
            )
            self.send_raw(ack)
        else:
            self._end_answered_call(resp, from_uri=from_uri, to_uri=uri, call_id=call_id, from_tag=from_tag)
        return resp

    def _end_answered_call(
        self, answer: SipResponse, *, from_uri: str, to_uri: str, call_id: str, from_tag: str
    ) -> SipResponse | None:
        """ACK a 2xx and hang up with BYE, along the dialog's route set (RFC 3261 12.1.2)."""
        contact = re.search(r"<([^>]+)>", answer.header("contact") or "")
        target = contact.group(1) if contact else to_uri
        record_route = [
            r.strip() for v in answer.headers.get("record-route", []) for r in v.split(",") if r.strip()
        ]
        routes = [f"Route: {r}" for r in reversed(record_route)]
        for cseq, method in ((1, "ACK"), (2, "BYE")):
            msg, _ = self.build(
                method,
                target,
                from_uri=from_uri,
                to_uri=to_uri,
                call_id=call_id,
                cseq=cseq,
                from_tag=from_tag,
                to_tag=answer.to_tag,
                extra=routes,
            )
            self.send_raw(msg)
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            resp = self.final(call_id, left)  # skips retransmitted 200s of the INVITE
            if resp is None or (resp.header("cseq") or "").endswith("BYE"):
                return resp
        return None

    @staticmethod
    def authorization(challenge: SipResponse, user: str, password: str, method: str, uri: str) -> str:
        proxy = challenge.status == 407
        value = challenge.header("proxy-authenticate" if proxy else "www-authenticate") or ""
        params = parse_challenge(value)
        qop = "auth" if "auth" in params.get("qop", "").split(",") else None
        cnonce = secrets.token_hex(8)
        response = digest_response(
            username=user,
            password=password,
            realm=params["realm"],
            method=method,
            uri=uri,
            nonce=params["nonce"],
            qop=qop,
            cnonce=cnonce,
        )
        fields = [
            f'username="{user}"',
            f'realm="{params["realm"]}"',
            f'nonce="{params["nonce"]}"',
            f'uri="{uri}"',
            f'response="{response}"',
            "algorithm=MD5",
        ]
        if qop:
            fields += [f"qop={qop}", "nc=00000001", f'cnonce="{cnonce}"']
        if "opaque" in params:
            fields.append(f'opaque="{params["opaque"]}"')
        name = "Proxy-Authorization" if proxy else "Authorization"
        return f"{name}: Digest " + ", ".join(fields)


def _tag(header: str) -> str:
    match = re.search(r";\s*tag=([^;>\s]+)", header)
    return match.group(1) if match else ""
