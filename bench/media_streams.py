"""How many concurrent G.711 calls one gateway process (one core: asyncio + GIL) carries with < 1% late
packets, with the bot replaced by an echo processor so only the media plane is measured.

The gateway runs in its own process (`python -m aicc.appliance.voice serve`, echo mode); this process
places the calls over real SIP/UDP on loopback, sends 20 ms PCMU packets on every call and time-stamps
what comes back. A packet is late when it arrives more than LATE_MS after its slot (slots anchored on
the stream's earliest arrival, so a constant path delay is not lateness). Steps up the call count until
a step has >= 1% late packets or the time budget ends; prints a ratio table, not a test verdict.

    python bench/media_streams.py [--steps 25,50,100,150,200,300] [--seconds 10] [--budget 240]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from aicc.appliance.voice import dialog as dlg
from aicc.appliance.voice import sdp
from aicc.appliance.voice.codecs import ulaw_encode
from aicc.appliance.voice.rtp import RtpPacket, parse_rtp
from aicc.appliance.voice.transport import SipTransport

LATE_MS = 40.0
HOST = "127.0.0.1"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Stream:
    transport: asyncio.DatagramTransport
    remote: tuple[str, int]
    seq: int = 0
    arrivals: list[tuple[int, float]] = field(default_factory=list)  # (rtp seq, monotonic time)


class Receiver(asyncio.DatagramProtocol):
    def __init__(self, holder: list[Stream]) -> None:
        self.holder = holder  # filled right after the endpoint exists

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        if not self.holder:
            return
        try:
            p = parse_rtp(data)
        except ValueError:
            return
        self.holder[0].arrivals.append((p.sequence, now))


def lateness(stream: Stream, since: float) -> tuple[int, int]:
    """(packets, late) among arrivals after `since` (skips call start-up)."""
    pts = [(s, t) for s, t in stream.arrivals if t >= since]
    if len(pts) < 10:
        return len(pts), 0
    first_seq = pts[0][0]
    offsets = []
    for seq, t in pts:
        n = (seq - first_seq) & 0xFFFF
        offsets.append(t - n * 0.02)
    base = min(offsets)
    late = sum(1 for o in offsets if (o - base) * 1000 > LATE_MS)
    return len(pts), late


async def place(transport: SipTransport, port: int, n: int) -> list[tuple[dlg.Dialog, Stream]]:
    loop = asyncio.get_running_loop()
    calls = []
    for _ in range(n):
        holder: list[Stream] = []
        rtp, _ = await loop.create_datagram_endpoint(lambda h=holder: Receiver(h), local_addr=(HOST, 0))
        stream = Stream(rtp, ("", 0))
        holder.append(stream)
        offer = sdp.offer(HOST, rtp.get_extra_info("sockname")[1], codecs=("PCMU",))
        d, ok = await dlg.invite(
            transport,
            target=f"sip:4000@{HOST}:{port}",
            proxy=(HOST, port),
            from_uri=f"sip:bench@{HOST}",
            sdp=offer,
        )
        neg = sdp.negotiate(sdp.parse(ok.body), preference=("PCMU",))
        stream.remote = neg.remote_addr
        calls.append((d, stream))
    return calls


async def step(transport: SipTransport, port: int, n: int, seconds: float) -> dict[str, float]:
    calls = await place(transport, port, n)
    payload = ulaw_encode(bytes(320))
    ssrc = 0x1234
    loop = asyncio.get_running_loop()
    start = loop.time()
    tick = start
    sender_late = 0
    ticks = 0
    while loop.time() - start < seconds:
        for _, s in calls:
            s.transport.sendto(RtpPacket(0, s.seq, s.seq * 160, ssrc, payload).encode(), s.remote)
            s.seq = (s.seq + 1) & 0xFFFF
        ticks += 1
        tick += 0.02
        delay = tick - loop.time()
        if delay < -0.02:
            sender_late += 1
        await asyncio.sleep(max(0.0, delay))
    since = time.monotonic() - seconds + 2.0  # ignore the first 2 s (jitter buffers filling)
    packets = late = 0
    for _, s in calls:
        p, lt = lateness(s, since)
        packets += p
        late += lt
    for d, s in calls:
        await dlg.bye(transport, d)
        s.transport.close()
    return {
        "calls": n,
        "packets": packets,
        "late_pct": 100.0 * late / max(packets, 1),
        "expected": n * (seconds - 2.0) * 50,
        "sender_late_ticks_pct": 100.0 * sender_late / max(ticks, 1),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="25,50,100,150,200,300,400")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--budget", type=float, default=240.0, help="stop starting new steps after this")
    args = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "echo.yml"
        cfg.write_text(
            f"sip_ip: {HOST}\nsip_port: {port}\nadvertised_ip: {HOST}\nmode: echo\nmax_calls: 1000\n"
            f"rtp_port_min: 46000\nrtp_port_max: 47999\nmetrics_ip: {HOST}\n"
            f"metrics_port: {free_port(socket.SOCK_STREAM)}\nrtp_timeout_s: 60\n"
        )
        gw = subprocess.Popen(
            [sys.executable, "-m", "aicc.appliance.voice", "serve", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await asyncio.sleep(3)
            transport = SipTransport(lambda m, a: None)
            await asyncio.get_running_loop().create_datagram_endpoint(lambda: transport, local_addr=(HOST, 0))
            began = time.monotonic()
            print(
                f"{'calls':>6} {'packets':>9} {'recv %':>7} {'late %':>7} {'gw CPU %':>9} "
                f"{'calls/core':>11} {'sender late %':>14}"
            )
            best = 0
            for n in (int(x) for x in args.steps.split(",")):
                if time.monotonic() - began > args.budget:
                    print(f"time budget of {args.budget:.0f} s used up")
                    break
                cpu0, t0 = cpu_seconds(gw.pid), time.monotonic()
                r = await step(transport, port, n, args.seconds)
                cpu = 100.0 * (cpu_seconds(gw.pid) - cpu0) / (time.monotonic() - t0)
                received = 100.0 * r["packets"] / max(r["expected"], 1)
                per_core = 100.0 * n / max(cpu, 0.1)
                print(
                    f"{n:>6} {int(r['packets']):>9} {received:>7.1f} {r['late_pct']:>7.2f} {cpu:>9.1f} "
                    f"{per_core:>11.0f} {r['sender_late_ticks_pct']:>14.2f}"
                )
                if r["sender_late_ticks_pct"] > 1.0:
                    print("the load generator itself fell behind: results above this line only")
                    break
                if r["late_pct"] >= 1.0 or received < 99.0:
                    break
                best = n
                await asyncio.sleep(1.0)
            print("calls/core: calls divided by the gateway's share of one core (CPU-bound capacity)")
            print(
                f"\ngateway carried {best} concurrent G.711 echo calls with < 1% late packets "
                f"(> {LATE_MS:.0f} ms) in one process (one core); "
                f"host load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
            )
            transport.close()
        finally:
            gw.send_signal(signal.SIGTERM)
            try:
                gw.wait(timeout=20)
            except subprocess.TimeoutExpired:
                gw.kill()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
