"""Calls per second through Kamailio: the role's Python KEMI routing vs the same routing as native routes.

Each call is INVITE, 100 (from the proxy), 200, ACK, BYE, 200 between two sipp instances (a UAC
and a UAS, Debian's sip-tester) with Kamailio in the middle, dialling a service number so the
call takes the production path: flood checks, max-forwards, sanity, record-route, the DID table,
the dispatcher (the UAS is the one "voicebot" gateway), topology hiding.

Both proxies run the role's own kamailio.cfg template (same modules and parameters); only the
routing block differs: roles/kamailio/files/kamailio_routing.py vs bench/native/routes.cfg.
They take turns under the same load (sipp -m CALLS -r RATE, bounded by -timeout and a wall-clock
limit). Two figures per engine:
- calls/s achieved at the offered rate (all calls must succeed for a round to count);
- capacity: calls per second of Kamailio CPU (1000 / CPU ms per call, summed over all its
  processes), i.e. what one core sustains with that routing. On a shared 2-core machine sipp
  takes a core of its own, so offering more than Kamailio can take measures sipp's collapse
  (retransmissions), not the router; the CPU-based capacity is the fair comparison and the
  KEMI/native ratio below is computed from it.

Runs on loopback on this machine (127.0.0.1 proxy, 127.0.0.2 caller, 127.0.0.3 callee): sipp and
Kamailio share the CPU. No media relay (rtpengine) and no PostgreSQL: the database modules read
Kamailio's db_text files instead (no query is made per call: the DIDs are in a hash table).

    .venv/bin/python bench/sip_cps.py [--calls 10000] [--rate 1000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import jinja2

ROOT = Path(__file__).resolve().parents[1]
ROLE = ROOT / "roles" / "kamailio"
NATIVE = Path(__file__).resolve().parent / "native"
BEGIN = "# --- routing engine: begin"
END = "# --- routing engine: end ---"
DID = "4000"


@dataclass
class Result:
    engine: str
    calls_ok: int
    calls_failed: int
    seconds: float
    cpu_seconds: float

    @property
    def cps(self) -> float:
        return self.calls_ok / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_call(self) -> float:
        return 1000 * self.cpu_seconds / self.calls_ok if self.calls_ok else float("inf")


def role_vars(work: Path, args: argparse.Namespace) -> dict[str, object]:
    return {
        "kamailio_managed_comment": "rendered by bench/sip_cps.py",
        "kamailio_log_level": 1,
        "kamailio_children": args.children,
        "kamailio_domain": "aicc.local",
        "kamailio_listen_address": args.proxy_ip,
        "kamailio_udp_port": 5060,
        "kamailio_tls_port": 5061,
        "kamailio_wss_port": 8443,
        "kamailio_metrics_port": 9151,
        "kamailio_ctl_socket": str(work / "ctl"),
        "kamailio_fr_timer_ms": 3000,
        "kamailio_fr_inv_timer_ms": 30000,
        "kamailio_db_url": f"text://{work / 'db'}",
        # The load comes from one source: the settings' highest limit keeps pike in the path, unbanned.
        "kamailio_flood_limit": 100000,
        "kamailio_flood_ban_s": 60,
        "kamailio_voicebot_set": 1,
        "kamailio_config_dir": str(work),
        "kamailio_dispatcher_ping_interval": 10,
        "kamailio_rtpengine_sockets": [],
        "kamailio_tls_dir": str(work / "tls"),
        "kamailio_topoh_mask_key": "bench-" + os.urandom(8).hex(),
        "kamailio_voicebot_destinations": [f"{args.uas_ip}:5080"],
        "kamailio_max_forwards": 10,
        "kamailio_trusted_sources": [],
    }


DBTEXT = {
    "version": "id(int,auto) table_name(string) table_version(int)\n"
    "1:version:1\n2:subscriber:7\n3:location:9\n4:location_attrs:1\n5:service_number:2\n",
    "subscriber": "id(int,auto) username(string) domain(string) password(string) ha1(string) ha1b(string)\n",
    "service_number": f"id(int,auto) did(string) key_type(int) value_type(int) service(string) expires(int)\n"
    f"1:{DID}:0:0:voicebot:0\n",
}


def prepare(work: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Render the role's files into work/{kemi,native} and return each kamailio.cfg."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    configs: dict[str, Path] = {}
    for engine in ("kemi", "native"):
        d = work / engine
        (d / "tls").mkdir(parents=True)
        (d / "db").mkdir()
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                f"/CN={args.proxy_ip}",
                "-keyout",
                str(d / "tls/host.key"),
                "-out",
                str(d / "tls/host.crt"),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        shutil.copy(d / "tls/host.crt", d / "tls/ca.crt")
        for name, text in DBTEXT.items():
            (d / "db" / name).write_text(text)
        for name in ("location", "location_attrs"):
            shutil.copy(f"/usr/share/kamailio/dbtext/kamailio/{name}", d / "db" / name)
        values = role_vars(d, args)
        for template, out in (
            ("kamailio.cfg.j2", "kamailio.cfg"),
            ("tls.cfg.j2", "tls.cfg"),
            ("dispatcher.list.j2", "dispatcher.list"),
            ("aicc-routing.json.j2", "aicc-routing.json"),
        ):
            (d / out).write_text(env.get_template(template).render(**values))
        shutil.copy(ROLE / "files" / "kamailio_routing.py", d / "kamailio_routing.py")
        cfg = d / "kamailio.cfg"
        if engine == "native":
            text = cfg.read_text()
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            defines = (
                '#!define REALM "aicc.local"\n#!define VOICEBOT_SET 1\n#!define MAX_FWD 10\n'
                "#!define METRICS_PORT 9151\n#!define WSS_PORT 8443\n"
            )
            cfg.write_text(
                head
                + "# --- routing engine: native (bench/native/routes.cfg) ---\n"
                + defines
                + f'include_file "{NATIVE / "routes.cfg"}"\n'
                + tail
            )
        check = subprocess.run(
            ["kamailio", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30, check=False
        )
        if check.returncode != 0:
            sys.exit(f"{engine}: kamailio -c failed:\n{check.stderr[-3000:]}")
        configs[engine] = cfg
    return configs


def kamailio_cpu(pidfile: Path) -> float:
    """User+system CPU seconds of the Kamailio main process and its workers."""
    main = int(pidfile.read_text().strip())
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == main or ppid == main:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def start_kamailio(cfg: Path) -> tuple[subprocess.Popen[bytes], Path]:
    pidfile = cfg.parent / "kamailio.pid"
    env = {**os.environ, "AICC_KAMAILIO_ROUTING_CONFIG": str(cfg.parent / "aicc-routing.json")}
    log = (cfg.parent / "kamailio.log").open("wb")
    proc = subprocess.Popen(
        ["kamailio", "-f", str(cfg), "-m", "512", "-M", "16", "-P", str(pidfile), "-DD", "-E"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"kamailio exited at start; see {cfg.parent / 'kamailio.log'}")
        if pidfile.exists() and pidfile.read_text().strip():
            time.sleep(1.5)  # workers finish child_init (Python load) after the pid file appears
            if proc.poll() is None:
                return proc, pidfile
        time.sleep(0.1)
    stop(proc)
    sys.exit("kamailio did not start within 15 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def run_load(engine: str, cfg: Path, args: argparse.Namespace) -> Result:
    kam, pidfile = start_kamailio(cfg)
    try:
        before = kamailio_cpu(pidfile)
        started = time.monotonic()
        out = subprocess.run(
            [
                "sipp",
                f"{args.proxy_ip}:5060",
                "-sf",
                str(NATIVE / "uac.xml"),
                "-s",
                DID,
                "-i",
                args.uac_ip,
                "-p",
                "5070",
                "-m",
                str(args.calls),
                "-r",
                str(args.rate),
                "-l",
                str(args.limit),
                "-d",
                "0",
                "-timeout",
                f"{args.max_seconds}s",
                "-timeout_error",
                "-nostdin",
                "-nd",
                "-recv_timeout",
                "5000",
            ],
            capture_output=True,
            text=True,
            timeout=args.max_seconds + 30,
            check=False,
        )
        seconds = time.monotonic() - started
        cpu = kamailio_cpu(pidfile) - before
    finally:
        stop(kam)
    ok = _counter(out.stdout, "Successful call")
    failed = _counter(out.stdout, "Failed call")
    if ok == 0:
        sys.exit(
            f"{engine}: no call succeeded (sipp rc {out.returncode}):\n"
            f"{out.stdout[-3000:]}{out.stderr[-2000:]}"
        )
    return Result(engine, ok, failed, seconds, cpu)


def _counter(screen: str, label: str) -> int:
    # sipp's final screen: "  Successful call        |   periodic   |   cumulative"
    matches = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", screen)
    return int(matches[-1]) if matches else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10000, help="calls per round and engine")
    parser.add_argument(
        "--rate", type=int, default=1000, help="offered calls/s (keep it below what both engines carry)"
    )
    parser.add_argument("--limit", type=int, default=2000, help="most calls in progress at once")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; engines alternate in each")
    parser.add_argument("--children", type=int, default=2, help="Kamailio UDP workers")
    parser.add_argument("--max-seconds", type=int, default=60, help="wall-clock limit of one sipp run")
    parser.add_argument("--proxy-ip", default="127.0.0.1")
    parser.add_argument("--uac-ip", default="127.0.0.2")
    parser.add_argument("--uas-ip", default="127.0.0.3")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs)")
    args = parser.parse_args()
    for tool in ("kamailio", "sipp", "openssl"):
        if shutil.which(tool) is None:
            sys.exit(
                f"{tool} not found: apt-get install kamailio kamailio-python3-modules kamailio-tls-modules "
                "kamailio-websocket-modules sip-tester openssl"
            )

    work = Path(tempfile.mkdtemp(prefix="aicc-sip-cps-"))
    print(
        f"sip_cps: loopback on this machine ({os.cpu_count()} CPUs shared by sipp and Kamailio), "
        f"{args.calls} calls per run offered at {args.rate}/s, {args.children} Kamailio workers, "
        f"no rtpengine, db_text instead of PostgreSQL; work folder {work}"
    )
    configs = prepare(work, args)
    uas = subprocess.Popen(
        [
            "sipp",
            "-sf",
            str(NATIVE / "uas.xml"),
            "-i",
            args.uas_ip,
            "-p",
            "5080",
            "-aa",
            "-nostdin",
            "-nd",
            "-bg",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uas.wait(timeout=10)  # -bg: sipp forks into the background and prints its pid
    results: dict[str, list[Result]] = {"kemi": [], "native": []}
    try:
        for rnd in range(1, args.rounds + 1):
            for engine in ("kemi", "native") if rnd % 2 else ("native", "kemi"):
                r = run_load(engine, configs[engine], args)
                results[engine].append(r)
                print(
                    f"  round {rnd} {engine:6}: {r.cps:7.0f} calls/s  "
                    f"({r.calls_ok} ok, {r.calls_failed} failed "
                    f"in {r.seconds:.1f} s; Kamailio CPU {r.cpu_ms_per_call:.3f} ms/call)",
                    flush=True,
                )
    finally:
        for line in subprocess.run(
            ["pgrep", "-f", f"uas.xml -i {args.uas_ip} -p 5080"], capture_output=True, text=True, check=False
        ).stdout.split():
            os.kill(int(line), signal.SIGTERM)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    clean = {e: [r for r in rs if r.calls_failed == 0] for e, rs in results.items()}
    if not all(clean.values()):
        print("no round without failed calls for an engine: lower --rate (the load exceeded the machine)")
        return 1
    best = {e: min(rs, key=lambda r: r.cpu_ms_per_call) for e, rs in clean.items()}
    cps_ratio = best["kemi"].cps / best["native"].cps
    ratio = best["native"].cpu_ms_per_call / best["kemi"].cpu_ms_per_call
    for label, engine in (("native routes", "native"), ("Python KEMI  ", "kemi")):
        r = best[engine]
        print(
            f"{label}: {r.cps:6.0f} calls/s at {args.rate}/s offered; "
            f"capacity {1000 / r.cpu_ms_per_call:6.0f} calls per Kamailio CPU-second "
            f"({r.cpu_ms_per_call:.3f} ms/call)"
        )
    verdict = "met" if ratio >= 0.8 else "NOT met"
    print(
        f"KEMI/native capacity ratio: {ratio:.2f} (target >= 0.80: {verdict}); "
        f"achieved calls/s ratio {cps_ratio:.2f}"
    )
    return 0 if ratio >= 0.8 else 1


if __name__ == "__main__":
    raise SystemExit(main())
