"""SIP over UDP with the transaction layer (RFC 3261 section 17) the gateway needs.

Server side: a retransmitted request gets the last response again; the final response of an INVITE
transaction is retransmitted until ACK. Client side: requests are retransmitted (timer A/E) until a
response, and fail with a 408 after 32 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aicc.appliance.voice import sip
from aicc.appliance.voice.sip import SipMessage, SipParseError

log = logging.getLogger(__name__)

T1 = 0.5
T2 = 4.0
TX_TIMEOUT = 64 * T1
Addr = tuple[str, int]


@dataclass
class _ServerTx:
    response: bytes | None
    addr: Addr
    expires: float


@dataclass
class _ClientTx:
    future: asyncio.Future[SipMessage]
    on_provisional: Callable[[SipMessage], None] | None
    retransmit: asyncio.Task[None] | None = None
    got_provisional: bool = False


@dataclass
class TransportStats:
    received: int = 0
    malformed: int = 0
    retransmissions_absorbed: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


RequestHandler = Callable[[SipMessage, Addr], None]
StrayResponseHandler = Callable[[SipMessage, Addr], None]


class SipTransport(asyncio.DatagramProtocol):
    def __init__(
        self,
        on_request: RequestHandler,
        *,
        on_malformed: Callable[[str], None] | None = None,
        on_stray_response: StrayResponseHandler | None = None,
    ) -> None:
        self.on_request = on_request
        self.on_malformed = on_malformed
        self.on_stray_response = on_stray_response
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Addr = ("", 0)
        self.stats = TransportStats()
        self._server: dict[tuple[str, str], _ServerTx] = {}
        self._client: dict[tuple[str, str], _ClientTx] = {}
        self._reliable: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.local = transport.get_extra_info("sockname")[:2]
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in self._reliable.values():
            task.cancel()
        for tx in self._client.values():
            if tx.retransmit is not None:
                tx.retransmit.cancel()
            if not tx.future.done():
                tx.future.cancel()
        if self.transport is not None:
            self.transport.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(5)
            now = time.monotonic()
            for key in [k for k, v in self._server.items() if v.expires < now]:
                del self._server[key]

    # --- receive --------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if not data.strip():
            return  # CRLF keep-alive
        self.stats.received += 1
        try:
            msg = sip.parse(data)
        except SipParseError as exc:
            self._malformed(exc.reason)
            reply = sip.reject_unparseable(data, f"Bad Request ({exc.reason})")
            if reply is not None:
                self.send(reply, addr)
            return
        try:
            if msg.is_request:
                self._request(msg, addr)
            else:
                self._response(msg, addr)
        except SipParseError as exc:
            self._malformed(exc.reason)
            if msg.is_request and msg.method != "ACK":
                self.send(sip.response(msg, 400, f"Bad Request ({exc.reason})").encode(), addr)
        except Exception:
            # A bug handling one message must not take the gateway down.
            log.exception("error handling a SIP %s", msg.method or msg.status)
            if msg.is_request and msg.method != "ACK":
                self.send(sip.response(msg, 500, "Server Internal Error").encode(), addr)

    def _malformed(self, reason: str) -> None:
        self.stats.malformed += 1
        self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + 1
        log.info("malformed SIP message: %s", reason)
        if self.on_malformed is not None:
            self.on_malformed(reason)

    def _request(self, msg: SipMessage, addr: Addr) -> None:
        if msg.method == "ACK":
            self._stop_reliable(msg)
            tx = self._server.get((msg.branch, "INVITE"))
            if tx is not None:
                return  # ACK of a non-2xx final response: absorbed by the transaction
            self.on_request(msg, addr)
            return
        key = (msg.branch, msg.method)
        if not msg.branch.startswith("z9hG4bK"):
            key = (f"{msg.call_id}/{msg.get('CSeq')}/{msg.from_.tag}", msg.method)  # RFC 2543 peers
        tx = self._server.get(key)
        if tx is not None:
            self.stats.retransmissions_absorbed += 1
            if tx.response is not None:
                self.send(tx.response, addr)
            return
        self._server[key] = _ServerTx(None, addr, time.monotonic() + TX_TIMEOUT)
        self.on_request(msg, addr)

    def _response(self, msg: SipMessage, addr: Addr) -> None:
        _, method = msg.cseq
        tx = self._client.get((msg.branch, method))
        if tx is None or tx.future.done():
            if self.on_stray_response is not None:
                self.on_stray_response(msg, addr)  # a retransmitted 200 to an INVITE: re-ACK
            return
        if msg.status < 200:
            tx.got_provisional = True
            if method == "INVITE" and tx.retransmit is not None:
                tx.retransmit.cancel()  # timer A stops at a provisional response
            if tx.on_provisional is not None:
                tx.on_provisional(msg)
            return
        if tx.retransmit is not None:
            tx.retransmit.cancel()
        tx.future.set_result(msg)

    # --- send -----------------------------------------------------------------------------------

    def send(self, data: bytes, addr: Addr) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)

    def respond(self, req: SipMessage, res: SipMessage, addr: Addr, *, reliable_2xx: bool = False) -> None:
        data = res.encode()
        key = (req.branch, req.method)
        if not req.branch.startswith("z9hG4bK"):
            key = (f"{req.call_id}/{req.get('CSeq')}/{req.from_.tag}", req.method)
        tx = self._server.get(key)
        if tx is not None:
            tx.response = data
            tx.expires = time.monotonic() + TX_TIMEOUT
        self.send(data, addr)
        if reliable_2xx:
            # A 2xx to INVITE is retransmitted by the UA core until the ACK (13.3.1.4).
            rkey = (req.call_id, req.cseq[0])
            old = self._reliable.pop(rkey, None)
            if old is not None:
                old.cancel()
            self._reliable[rkey] = asyncio.get_running_loop().create_task(
                self._retransmit_2xx(rkey, data, addr)
            )

    def on_ack_timeout(self, call_id: str) -> None:
        """Overridden by the gateway: no ACK came for a 2xx."""

    async def _retransmit_2xx(self, rkey: tuple[str, int], data: bytes, addr: Addr) -> None:
        interval, waited = T1, 0.0
        try:
            while waited < TX_TIMEOUT:
                await asyncio.sleep(interval)
                waited += interval
                self.send(data, addr)
                interval = min(interval * 2, T2)
            self.on_ack_timeout(rkey[0])
        finally:
            if self._reliable.get(rkey) is asyncio.current_task():
                del self._reliable[rkey]

    def _stop_reliable(self, ack: SipMessage) -> None:
        task = self._reliable.pop((ack.call_id, ack.cseq[0]), None)
        if task is not None:
            task.cancel()

    def awaiting_ack(self, call_id: str) -> bool:
        return any(k[0] == call_id for k in self._reliable)

    async def request(
        self,
        msg: SipMessage,
        addr: Addr,
        *,
        on_provisional: Callable[[SipMessage], None] | None = None,
        timeout: float = TX_TIMEOUT,
    ) -> SipMessage:
        """Send a request and wait for its final response (408 when none comes)."""
        loop = asyncio.get_running_loop()
        key = (msg.branch, msg.method)
        tx = _ClientTx(loop.create_future(), on_provisional)
        self._client[key] = tx
        data = msg.encode()
        self.send(data, addr)
        tx.retransmit = loop.create_task(self._retransmit_request(data, addr, msg.method == "INVITE"))
        try:
            return await asyncio.wait_for(asyncio.shield(tx.future), timeout)
        except TimeoutError:
            return sip.response(msg, 408, "Request Timeout")
        finally:
            if tx.retransmit is not None:
                tx.retransmit.cancel()
            self._client.pop(key, None)

    async def _retransmit_request(self, data: bytes, addr: Addr, invite: bool) -> None:
        interval = T1
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(interval)
                self.send(data, addr)
                interval = interval * 2 if invite else min(interval * 2, T2)
