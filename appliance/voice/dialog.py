"""SIP dialogs (RFC 3261 section 12) and the UAC side: placing a call with digest authentication,
requests inside a dialog (ACK, BYE) routed through the record-route set."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from dataclasses import dataclass, field

from aicc.appliance.voice import sip
from aicc.appliance.voice.sip import SipMessage
from aicc.appliance.voice.transport import TX_TIMEOUT, Addr, SipTransport


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: list[str]
    local_cseq: int
    contact: str
    remote_cseq: int = 0
    fallback: Addr | None = None  # where requests go when neither route nor target resolves
    invite_cseq: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def next_hop(self) -> Addr:
        if not self.route_set and self.fallback is not None:
            return self.fallback  # an outbound proxy that did not record-route: keep using it
        if self.route_set:
            uri = sip.parse_uri(sip.parse_name_addr(self.route_set[0]).uri)
        else:
            uri = sip.parse_uri(self.remote_target)
        host, port = uri.hostport
        return (host, port)

    def request(
        self,
        method: str,
        *,
        via_host: Addr,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str = "application/sdp",
        cseq: int | None = None,
    ) -> SipMessage:
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        msg = SipMessage(method=method, uri=self.remote_target)
        msg.headers = [
            ("Via", f"SIP/2.0/UDP {via_host[0]}:{via_host[1]};branch={sip.new_branch()};rport"),
            ("Max-Forwards", "70"),
        ]
        msg.headers += [("Route", r) for r in self.route_set]
        msg.headers += [
            ("From", f"<{self.local_uri}>;tag={self.local_tag}"),
            ("To", f"<{self.remote_uri}>" + (f";tag={self.remote_tag}" if self.remote_tag else "")),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<{self.contact}>"),
            ("User-Agent", "aicc-voice"),
        ]
        msg.headers += headers or []
        if body:
            msg.headers.append(("Content-Type", content_type))
        msg.body = body
        return msg


def uas_dialog(invite: SipMessage, local_tag: str, contact: str) -> Dialog:
    """The dialog a 2xx to this INVITE creates, seen from the answering side."""
    contact_hdr = invite.get("Contact")
    if not contact_hdr:
        raise sip.SipParseError("INVITE without Contact")
    target = sip.parse_name_addr(sip.split_commas(contact_hdr)[0]).uri
    sip.parse_uri(target)
    for rr in invite.get_all("Record-Route"):
        sip.parse_uri(sip.parse_name_addr(rr).uri)  # a bad route would only fail at our BYE: refuse now
    return Dialog(
        call_id=invite.call_id,
        local_tag=local_tag,
        remote_tag=invite.from_.tag,
        local_uri=invite.to.uri,
        remote_uri=invite.from_.uri,
        remote_target=target,
        route_set=invite.get_all("Record-Route"),
        local_cseq=secrets.randbelow(10000) + 1,
        remote_cseq=invite.cseq[0],
        contact=contact,
    )


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def digest_response(challenge: str, creds: Credentials, method: str, uri: str) -> str:
    """An Authorization value for a Digest MD5 challenge (RFC 2617, qop=auth when offered)."""
    params = sip._params(challenge.partition(" ")[2].replace(",", ";"))
    realm = params.get("realm", "").strip('"')
    nonce = params.get("nonce", "").strip('"')
    qop = params.get("qop", "").strip('"')
    ha1 = hashlib.md5(f"{creds.username}:{realm}:{creds.password}".encode()).hexdigest()  # noqa: S324
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()  # noqa: S324
    parts = [
        f'username="{creds.username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        "algorithm=MD5",
    ]
    if "auth" in qop.split(","):
        cnonce, nc = secrets.token_hex(8), "00000001"
        resp = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()  # noqa: S324
        parts += [f'response="{resp}"', "qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        parts.append(f'response="{hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()}"')  # noqa: S324
    if "opaque" in params:
        parts.append(f"opaque={params['opaque']}")
    return "Digest " + ", ".join(parts)


class CallFailed(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


async def invite(
    transport: SipTransport,
    *,
    target: str,
    proxy: Addr,
    from_uri: str,
    sdp: bytes,
    headers: list[tuple[str, str]] | None = None,
    credentials: Credentials | None = None,
    ring_timeout: float = 30.0,
) -> tuple[Dialog, SipMessage]:
    """Place a call; returns the confirmed dialog (ACK sent) and the 200 OK carrying the answer."""
    local = transport.local
    call_id = sip.new_call_id(local[0])
    tag = sip.new_tag()
    contact = f"sip:aicc@{local[0]}:{local[1]}"
    dialog = Dialog(
        call_id=call_id,
        local_tag=tag,
        remote_tag="",
        local_uri=from_uri,
        remote_uri=target,
        remote_target=target,
        route_set=[],
        local_cseq=1,
        contact=contact,
        fallback=proxy,
    )
    auth: list[tuple[str, str]] = []
    for _attempt in range(2):
        req = dialog.request(
            "INVITE", via_host=local, headers=[*(headers or []), *auth], body=sdp, cseq=dialog.local_cseq
        )
        res = await _ring(transport, req, proxy, ring_timeout)
        if res.status in (401, 407) and credentials is not None and not auth:
            # The non-2xx final response is ACKed in the same transaction (17.1.1.3).
            transport.send(_ack_for_failure(req, res).encode(), proxy)
            name = "WWW-Authenticate" if res.status == 401 else "Proxy-Authenticate"
            challenge = res.get(name) or ""
            auth = [
                (
                    "Authorization" if res.status == 401 else "Proxy-Authorization",
                    digest_response(challenge, credentials, "INVITE", target),
                )
            ]
            dialog.local_cseq += 1
            continue
        if res.status >= 300 or res.status < 200:
            if res.status != 408:
                transport.send(_ack_for_failure(req, res).encode(), proxy)
            raise CallFailed(res.status, res.reason)
        dialog.remote_tag = res.to.tag
        contact_hdr = res.get("Contact")
        if contact_hdr:
            dialog.remote_target = sip.parse_name_addr(sip.split_commas(contact_hdr)[0]).uri
        dialog.route_set = list(reversed(res.get_all("Record-Route")))
        dialog.fallback = None
        dialog.invite_cseq = dialog.local_cseq
        send_ack(transport, dialog)
        return dialog, res
    raise CallFailed(403, "authentication failed")


async def _ring(transport: SipTransport, req: SipMessage, proxy: Addr, ring_timeout: float) -> SipMessage:
    """The INVITE's final response. Past ring_timeout, or when the caller of invite() is cancelled (the
    calling party hung up), the INVITE is CANCELled so the callee's phone stops ringing (487)."""
    pending = asyncio.ensure_future(transport.request(req, proxy, timeout=ring_timeout + TX_TIMEOUT))
    try:
        await asyncio.wait({pending}, timeout=ring_timeout)
    except asyncio.CancelledError:
        res = await _cancel(transport, req, proxy, pending)
        if res is not None and 200 <= res.status < 300:
            # Answered just as we gave up: confirm and end that dialog at once.
            with contextlib.suppress(Exception):
                await _ack_and_bye(transport, req, res, proxy)
        raise
    if pending.done():
        return pending.result()
    res = await _cancel(transport, req, proxy, pending)
    return res or sip.response(req, 408, "Request Timeout")


async def _cancel(
    transport: SipTransport, req: SipMessage, proxy: Addr, pending: asyncio.Future[SipMessage]
) -> SipMessage | None:
    with contextlib.suppress(Exception):
        await asyncio.shield(cancel(transport, req, proxy))
    with contextlib.suppress(Exception):
        return await asyncio.wait_for(asyncio.shield(pending), 5)
    pending.cancel()
    return None


async def _ack_and_bye(transport: SipTransport, req: SipMessage, res: SipMessage, proxy: Addr) -> None:
    dialog = Dialog(
        call_id=req.call_id,
        local_tag=req.from_.tag,
        remote_tag=res.to.tag,
        local_uri=req.from_.uri,
        remote_uri=req.to.uri,
        remote_target=req.uri,
        route_set=list(reversed(res.get_all("Record-Route"))),
        local_cseq=req.cseq[0],
        contact="",
        fallback=None,
    )
    contact_hdr = res.get("Contact")
    if contact_hdr:
        dialog.remote_target = sip.parse_name_addr(sip.split_commas(contact_hdr)[0]).uri
    dialog.invite_cseq = req.cseq[0]
    send_ack(transport, dialog)
    await bye(transport, dialog)


def send_ack(transport: SipTransport, dialog: Dialog) -> None:
    ack = dialog.request("ACK", via_host=transport.local, cseq=dialog.invite_cseq)
    transport.send(ack.encode(), dialog.next_hop())


def _ack_for_failure(req: SipMessage, res: SipMessage) -> SipMessage:
    ack = SipMessage(method="ACK", uri=req.uri)
    ack.headers = [("Via", req.get_all("Via")[0]), ("Max-Forwards", "70")]
    ack.headers += [("Route", r) for r in req.get_all("Route")]
    ack.headers += [
        ("From", req.get("From") or ""),
        ("To", res.get("To") or ""),
        ("Call-ID", req.call_id),
        ("CSeq", f"{req.cseq[0]} ACK"),
    ]
    return ack


async def bye(
    transport: SipTransport, dialog: Dialog, *, headers: list[tuple[str, str]] | None = None
) -> int:
    req = dialog.request("BYE", via_host=transport.local, headers=headers)
    res = await transport.request(req, dialog.next_hop())
    return res.status


async def cancel(transport: SipTransport, invite_req: SipMessage, proxy: Addr) -> None:
    msg = SipMessage(method="CANCEL", uri=invite_req.uri)
    msg.headers = [("Via", invite_req.get_all("Via")[0]), ("Max-Forwards", "70")]
    msg.headers += [("Route", r) for r in invite_req.get_all("Route")]
    msg.headers += [
        ("From", invite_req.get("From") or ""),
        ("To", invite_req.get("To") or ""),
        ("Call-ID", invite_req.call_id),
        ("CSeq", f"{invite_req.cseq[0]} CANCEL"),
    ]
    await transport.request(msg, proxy, timeout=5)
