"""SIP messages (RFC 3261): a strict parser that rejects what it cannot trust, and builders.

The gateway speaks SIP over UDP behind Kamailio, so one datagram is one message. Parsing errors carry
a reason that goes into the 400 response and the log (never the message itself: it holds numbers).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "u": "allow-events",
}
CANONICAL = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "max-forwards": "Max-Forwards",
    "min-se": "Min-SE",
    "rack": "RAck",
    "rseq": "RSeq",
}
METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "UPDATE",
        "INFO",
        "REFER",
        "NOTIFY",
        "SUBSCRIBE",
        "PRACK",
        "MESSAGE",
        "PUBLISH",
    }
)
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
MAX_MESSAGE = 65535


class SipParseError(ValueError):
    """The message is malformed; `reason` is safe to send back in a 400 and to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def canonical(name: str) -> str:
    low = name.lower()
    low = COMPACT.get(low, low)
    return CANONICAL.get(low, "-".join(p.capitalize() for p in low.split("-")))


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and angle brackets (Via, Record-Route, Contact)."""
    parts: list[str] = []
    cur: list[str] = []
    depth, quoted = 0, False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        if ch == "," and not quoted and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


@dataclass(frozen=True)
class NameAddr:
    display: str
    uri: str
    params: dict[str, str]

    @property
    def tag(self) -> str:
        return self.params.get("tag", "")

    def __str__(self) -> str:
        text = f'"{self.display}" <{self.uri}>' if self.display else f"<{self.uri}>"
        return text + "".join(f";{k}={v}" if v else f";{k}" for k, v in self.params.items())


def _params(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(";"):
        item = part.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        out[key.strip().lower()] = value.strip()
    return out


def parse_name_addr(value: str) -> NameAddr:
    value = value.strip()
    if "<" in value:
        display, _, rest = value.partition("<")
        uri, close, params = rest.partition(">")
        if not close:
            raise SipParseError("unbalanced < > in a name-addr")
        return NameAddr(display.strip().strip('"'), uri.strip(), _params(params))
    uri, _, params = value.partition(";")
    return NameAddr("", uri.strip(), _params(params))


@dataclass(frozen=True)
class SipUri:
    scheme: str
    user: str
    host: str
    port: int | None
    params: dict[str, str]

    @property
    def hostport(self) -> tuple[str, int]:
        return self.host, self.port or 5060


def parse_uri(uri: str) -> SipUri:
    match = re.fullmatch(
        r"(sips?):(?:([^@;]*)@)?(\[[0-9a-fA-F:.]+\]|[^:;?]+)(?::(\d{1,5}))?((?:;[^?]*)?)(?:\?.*)?",
        uri.strip(),
    )
    if match is None:
        raise SipParseError("malformed SIP URI")
    port = int(match.group(4)) if match.group(4) else None
    if port is not None and not 0 < port < 65536:
        raise SipParseError("SIP URI port out of range")
    return SipUri(
        match.group(1), match.group(2) or "", match.group(3).strip("[]"), port, _params(match.group(5) or "")
    )


@dataclass
class SipMessage:
    method: str = ""  # requests
    uri: str = ""
    status: int = 0  # responses
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str) -> str | None:
        key = canonical(name)
        for k, v in self.headers:
            if k == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, comma-separated lists split (Via, Record-Route, Route, ...)."""
        key = canonical(name)
        out: list[str] = []
        for k, v in self.headers:
            if k == key:
                out += split_commas(v)
        return out

    def set(self, name: str, value: str) -> None:
        key = canonical(name)
        self.headers = [(k, v) for k, v in self.headers if k != key]
        self.headers.append((key, value))

    def remove(self, name: str) -> None:
        key = canonical(name)
        self.headers = [(k, v) for k, v in self.headers if k != key]

    @property
    def call_id(self) -> str:
        return self.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        num, _, method = (self.get("CSeq") or "").partition(" ")
        return int(num), method.strip()

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self.get("From") or "")

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self.get("To") or "")

    @property
    def branch(self) -> str:
        vias = self.get_all("Via")
        return _params(vias[0].partition(";")[2]).get("branch", "") if vias else ""

    def encode(self) -> bytes:
        start = f"{self.method} {self.uri} SIP/2.0" if self.method else f"SIP/2.0 {self.status} {self.reason}"
        lines = [start]
        lines += [f"{k}: {v}" for k, v in self.headers if k != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def parse(data: bytes) -> SipMessage:
    """Parse one SIP message from a datagram; raise SipParseError on anything malformed."""
    if len(data) > MAX_MESSAGE:
        raise SipParseError("message too large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
        if not sep:
            raise SipParseError("no blank line after the headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)  # RFC 3261 7.5: ignore CRLFs before the start line (keep-alives)
    if not lines:
        raise SipParseError("empty message")
    msg = SipMessage()
    start = lines[0].split(" ", 2)
    if start[0] == "SIP/2.0":
        if len(start) < 2 or not start[1].isdigit() or not 100 <= int(start[1]) <= 699:
            raise SipParseError("bad status line")
        msg.status = int(start[1])
        msg.reason = start[2] if len(start) > 2 else ""
    else:
        if len(start) != 3 or start[2] != "SIP/2.0":
            raise SipParseError("bad request line")
        if not _TOKEN.match(start[0]) or start[0] != start[0].upper():
            raise SipParseError("bad method")
        msg.method, msg.uri = start[0], start[1]
        if not re.match(r"^(sips?|tel):", msg.uri):
            raise SipParseError("unsupported Request-URI scheme")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not headers:
                raise SipParseError("continuation line before any header")
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name.strip()):
            raise SipParseError("malformed header line")
        headers.append((canonical(name.strip()), value.strip()))
    msg.headers = headers
    for required in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not msg.get(required):
            raise SipParseError(f"missing {required} header")
    num, _, method = (msg.get("CSeq") or "").partition(" ")
    if not num.isdigit() or int(num) >= 2**31 or method.strip() not in METHODS:
        raise SipParseError("bad CSeq")
    if msg.is_request and method.strip() != msg.method:
        raise SipParseError("CSeq method does not match the request")
    try:
        msg.from_  # noqa: B018
        msg.to  # noqa: B018
    except SipParseError:
        raise
    length = msg.get("Content-Length")
    if length is not None:
        if not length.isdigit():
            raise SipParseError("bad Content-Length")
        if int(length) > len(body):
            raise SipParseError("body shorter than Content-Length")
        body = body[: int(length)]
    msg.body = body
    return msg


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


def response(
    req: SipMessage,
    status: int,
    reason: str,
    *,
    to_tag: str = "",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str = "",
) -> SipMessage:
    """A response copying Via, From, To (adding our tag), Call-ID and CSeq from the request."""
    res = SipMessage(status=status, reason=reason)
    for name in ("Via",):
        for value in req.get_all(name):
            res.headers.append((name, value))
    res.headers.append(("From", req.get("From") or ""))
    to = req.get("To") or ""
    if to_tag and status != 100 and "tag=" not in to:
        to = f"{to};tag={to_tag}"
    res.headers.append(("To", to))
    res.headers.append(("Call-ID", req.call_id))
    res.headers.append(("CSeq", req.get("CSeq") or ""))
    if status != 100 and 100 < status < 300:
        for rr in req.get_all("Record-Route"):
            res.headers.append(("Record-Route", rr))
    res.headers += headers or []
    if body:
        res.headers.append(("Content-Type", content_type or "application/sdp"))
    res.body = body
    return res


def reject_unparseable(data: bytes, reason: str) -> bytes | None:
    """Best-effort 400 for a request we could not parse: only when the headers a response needs are there."""
    try:
        text = data.partition(b"\r\n\r\n")[0].decode("utf-8", errors="replace")
    except Exception:
        return None
    lines = text.split("\r\n")
    if not lines or lines[0].startswith("SIP/2.0") or lines[0].split(" ")[0] == "ACK":
        return None  # never answer a response or an ACK
    needed: dict[str, list[str]] = {"Via": [], "From": [], "To": [], "Call-ID": [], "CSeq": []}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon and canonical(name.strip()) in needed:
            needed[canonical(name.strip())].append(value.strip())
    if any(not v for v in needed.values()):
        return None
    safe = reason.replace("\r", " ").replace("\n", " ")[:100]
    out = [f"SIP/2.0 400 {safe}"]
    for name, values in needed.items():
        out += [f"{name}: {v}" for v in values]
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode()
