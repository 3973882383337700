"""How many concurrent G.711 calls one gateway process (one core: asyncio + GIL) carries with < 1% late
packets, with the bot replaced by an echo processor so only the media plane is measured.

The gateway runs in its own process (`python -m aicc.appliance.voice serve`, echo mode); this process
places the calls over real SIP/UDP on loopback and then, from one socket in a thread of its own, sends a
20 ms PCMU packet on every call and receives what comes back with the kernel's arrival time stamp
(SO_TIMESTAMPNS), so this process being busy does not count as lateness of the gateway. A packet is
late when it arrives more than LATE_MS after its slot (slots anchored on the stream's earliest
arrival, so a constant path delay is not lateness); "echoed" counts the packets that carry the
caller's audio back rather than silence, so a media plane that drops audio cannot pass.

Baseline in the same run: a bare Python UDP echo (one socket per call, asyncio, every packet sent
straight back: no SIP, no jitter buffer, codec, pipeline or clock) carries the same calls; the ratio
of the gateway's CPU to the bare echo's says how close the media plane is to the cost of Python's
socket I/O alone. Steps up the call count until a step fails (>= 1% late, < 99% received or echoed)
or the time budget ends; prints figures and ratios, not a test verdict.

    python bench/media_streams.py [--steps 50,100,200,300,400] [--seconds 10] [--budget 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aicc.appliance.voice import dialog as dlg
from aicc.appliance.voice import sdp
from aicc.appliance.voice.audio import tone
from aicc.appliance.voice.codecs import ulaw_encode
from aicc.appliance.voice.transport import SipTransport

LATE_MS = 40.0
WARMUP_S = 2.0  # ignored at the start of each step: jitter buffers filling, first echoes
HOST = "127.0.0.1"
# Linux values; Python's socket module does not name them.
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
RTP_HEADER = struct.Struct("!BBHII")
PAYLOAD = ulaw_encode(tone(440.0, 0.02, 8000))  # 160 bytes that are not silence
SILENCE = ulaw_encode(bytes(320))


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class MediaResult:
    packets: int
    expected: int
    late: int
    echoed: int
    sender_late_ticks: int
    ticks: int

    @property
    def received_pct(self) -> float:
        return 100.0 * self.packets / max(self.expected, 1)

    @property
    def late_pct(self) -> float:
        return 100.0 * self.late / max(self.packets, 1)

    @property
    def echoed_pct(self) -> float:
        return 100.0 * self.echoed / max(self.packets, 1)


def lateness(arrivals: list[tuple[int, float]]) -> int:
    """Late packets of one stream: arrival more than LATE_MS after its slot (sequence x 20 ms)."""
    if len(arrivals) < 10:
        return 0
    first_seq = arrivals[0][0]
    offsets = [t - ((seq - first_seq) & 0xFFFF) * 0.02 for seq, t in arrivals]
    base = min(offsets)
    return sum(1 for o in offsets if (o - base) * 1000 > LATE_MS)


def media_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


def run_media(sock: socket.socket, remotes: list[tuple[str, int]], seconds: float) -> MediaResult:
    """Send one PCMU packet per call every 20 ms for `seconds`; collect (seq, kernel time) per call."""
    index = {addr: i for i, addr in enumerate(remotes)}
    arrivals: list[list[tuple[int, float]]] = [[] for _ in remotes]
    echoed = 0
    seq = 0
    start = time.monotonic()
    measure_from = time.time() + WARMUP_S  # kernel stamps are CLOCK_REALTIME
    next_tick = start
    ticks = sender_late = 0
    header = bytearray(RTP_HEADER.size)
    while True:
        now = time.monotonic()
        if now >= next_tick:
            if now - next_tick > 0.02:
                sender_late += 1
            if now - start >= seconds:
                break
            for i, addr in enumerate(remotes):
                RTP_HEADER.pack_into(header, 0, 0x80, 0, seq, seq * 160, 0x10000 + i)
                sock.sendto(header + PAYLOAD, addr)
            seq = (seq + 1) & 0xFFFF
            ticks += 1
            next_tick += 0.02
            continue
        select.select([sock], [], [], next_tick - now)
        while True:
            try:
                data, ancdata, _, addr = sock.recvmsg(512, 64)
            except BlockingIOError:
                break
            i = index.get(addr)
            if i is None or len(data) < 12:
                continue
            stamps = [d for lvl, kind, d in ancdata if (lvl, kind) == (socket.SOL_SOCKET, SCM_TIMESTAMPNS)]
            if not stamps:
                continue
            sec, nsec = struct.unpack("qq", stamps[0][:16])
            t = sec + nsec / 1e9
            if t < measure_from:
                continue
            arrivals[i].append(((data[2] << 8) | data[3], t))
            if data[12:] != SILENCE:
                echoed += 1
    expected = int(len(remotes) * (seconds - WARMUP_S) * 50)
    return MediaResult(
        packets=sum(len(a) for a in arrivals),
        expected=expected,
        late=sum(lateness(a) for a in arrivals),
        echoed=echoed,
        sender_late_ticks=sender_late,
        ticks=ticks,
    )


async def gateway_step(
    transport: SipTransport, port: int, gw_pid: int, n: int, seconds: float
) -> tuple[MediaResult, float]:
    """n calls through the gateway: (result, the gateway's CPU during the media as % of one core)."""
    sock = media_socket()
    local_port = sock.getsockname()[1]
    calls: list[dlg.Dialog] = []
    remotes: list[tuple[str, int]] = []
    try:
        for _ in range(n):
            d, ok = await dlg.invite(
                transport,
                target=f"sip:4000@{HOST}:{port}",
                proxy=(HOST, port),
                from_uri=f"sip:bench@{HOST}",
                sdp=sdp.offer(HOST, local_port, codecs=("PCMU",)),
            )
            calls.append(d)
            remotes.append(sdp.negotiate(sdp.parse(ok.body), preference=("PCMU",)).remote_addr)
        cpu0, t0 = cpu_seconds(gw_pid), time.monotonic()
        result = await asyncio.to_thread(run_media, sock, remotes, seconds)
        return result, 100.0 * (cpu_seconds(gw_pid) - cpu0) / (time.monotonic() - t0)
    finally:
        for d in calls:
            await dlg.bye(transport, d)
        sock.close()


# --- the baseline: a bare Python UDP echo ---------------------------------------------------------


class _Reflect(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


async def reflector(n: int) -> None:
    """`--reflector N`: N sockets that send every packet back; prints their ports, runs until SIGTERM."""
    loop = asyncio.get_running_loop()
    ports = []
    for _ in range(n):
        transport, _ = await loop.create_datagram_endpoint(_Reflect, local_addr=(HOST, 0))
        ports.append(transport.get_extra_info("sockname")[1])
    print(json.dumps(ports), flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


@contextmanager
def process(cmd: list[str], **kw: object) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(cmd, text=True, **kw)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def baseline_step(n: int, seconds: float) -> tuple[MediaResult, float]:
    """The bare echo carrying n calls: (result, its CPU as % of one core)."""
    cmd = [sys.executable, __file__, "--reflector", str(n)]
    with process(cmd, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        ports = json.loads(proc.stdout.readline())
        sock = media_socket()
        try:
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            result = run_media(sock, [(HOST, p) for p in ports], seconds)
            cpu = 100.0 * (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        finally:
            sock.close()
    return result, cpu


async def main(args: argparse.Namespace) -> int:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "echo.yml"
        cfg.write_text(
            f"sip_ip: {HOST}\nsip_port: {port}\nadvertised_ip: {HOST}\nmode: echo\nmax_calls: 2000\n"
            f"rtp_port_min: 46000\nrtp_port_max: 49999\nmetrics_ip: {HOST}\n"
            f"metrics_port: {free_port(socket.SOCK_STREAM)}\nrtp_timeout_s: 60\n"
        )
        cmd = [sys.executable, "-m", "aicc.appliance.voice", "serve", "--config", str(cfg)]
        with process(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as gw:
            await asyncio.sleep(3)
            transport = SipTransport(lambda m, a: None)
            await asyncio.get_running_loop().create_datagram_endpoint(lambda: transport, local_addr=(HOST, 0))
            began = time.monotonic()
            print(
                f"{'calls':>6} {'recv %':>7} {'echoed %':>9} {'late %':>7} {'gw CPU %':>9} "
                f"{'calls/core':>11} {'bare echo CPU %':>16} {'gw/bare':>8} {'bare late %':>12}"
            )
            best = 0
            for n in (int(x) for x in args.steps.split(",")):
                if time.monotonic() - began > args.budget:
                    print(f"time budget of {args.budget:.0f} s used up")
                    break
                r, cpu = await gateway_step(transport, port, gw.pid, n, args.seconds)
                base, base_cpu = baseline_step(n, args.seconds)
                print(
                    f"{n:>6} {r.received_pct:>7.1f} {r.echoed_pct:>9.1f} {r.late_pct:>7.2f} {cpu:>9.1f} "
                    f"{100.0 * n / max(cpu, 0.1):>11.0f} {base_cpu:>16.1f} {cpu / max(base_cpu, 0.1):>8.2f} "
                    f"{base.late_pct:>12.2f}",
                    flush=True,
                )
                if 100.0 * r.sender_late_ticks / max(r.ticks, 1) > 1.0:
                    print("the load generator itself fell behind: results above this line only")
                    break
                if r.late_pct >= 1.0 or r.received_pct < 99.0 or r.echoed_pct < 99.0:
                    break
                best = n
                await asyncio.sleep(1.0)
            transport.close()
    print(
        "calls/core: calls divided by the gateway's share of one core while the media flows (its CPU-bound\n"
        "capacity); gw/bare: the gateway's CPU over the bare Python UDP echo's for the same calls"
    )
    print(
        f"\ngateway carried {best} concurrent G.711 echo calls with < 1% late packets (> {LATE_MS:.0f} ms) "
        f"in one process (one core); host load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="50,100,200,300,400")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--budget", type=float, default=300.0, help="stop starting new steps after this")
    ap.add_argument("--reflector", type=int, default=0, help=argparse.SUPPRESS)
    cli = ap.parse_args()
    if cli.reflector:
        asyncio.run(reflector(cli.reflector))
        sys.exit(0)
    sys.exit(asyncio.run(main(cli)))
