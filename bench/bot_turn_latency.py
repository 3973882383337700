"""Bot turn latency per stage with the embedded engines, over real SIP/RTP on loopback.

Starts (unless given) llama-server with the catalog's GGUF model and a throwaway PostgreSQL with the
demo backend, runs the gateway in this process with the embedded ASR/TTS/VAD, and calls it with a
caller that speaks synthesised utterances (English via service 4000, Mandarin via 4001, in the
native Mandarin caller voice where installed), one turn
after the other. Stage latencies come from the pipeline's own clock (the call records); the caller
also measures the turn end to end. Prints p50/p95 per stage and language and what dominates.

Each language runs in the same process as the baseline, the bot as it was before ("before": no hold
line, transcription only after the 0.5 s end-of-utterance silence), then as it is now ("now": the
hold line "One moment, please." at once when the caller names an order number, else as soon as the
streamed plan shows a lookup, and the transcription started at the caller's first 0.2 s pause); the
last table compares the first audio the caller hears and the answer's first audio.

    python bench/bot_turn_latency.py [--turns 20] [--variants before,now] [--llm-url URL] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.bots.definition import shipped_definitions
from aicc.appliance.calls.record import CallRecord
from aicc.appliance.connectors.registry import open_bots
from aicc.appliance.db.migrate import all_migrations, apply
from aicc.appliance.db.scratch import scratch_cluster
from aicc.appliance.voice.bot import BotEngines
from aicc.appliance.voice.caller import Caller
from aicc.appliance.voice.config import GatewayConfig
from aicc.appliance.voice.engines import open_engines
from aicc.appliance.voice.gateway import Gateway
from aicc.installer.smoke import wait_quiet
from aicc.models.engines import baker

STORE = Path(os.environ.get("AICC_MODEL_STORE", "/var/cache/aicc/models"))
GGUF = STORE / "qwen2.5-coder-1.5b-instruct-q4km" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
UTTERANCES = {
    "en": [
        "What is the status of order 1 0 0 2 3 4?",
        "Where is the parcel of order 1 0 0 2 3 7?",
        "When will order 1 0 0 2 3 6 arrive?",
        "Can you track order 1 0 0 2 3 5 for me?",
        "What is the status of order 1 0 0 2 3 8?",
    ],
    "zh": [
        "查一下订单一零零二三四的状态。",
        "订单一零零二三七的包裹到哪里了？",
        "订单一零零二三六什么时候能到？",
        "帮我查一下订单一零零二三五的物流。",
        "订单一零零二三八现在是什么状态？",
    ],
}
STAGES = ("vad", "asr", "llm_first_token", "tts_first_audio", "hold", "turn")
# Gateway settings of each variant; "now" is the shipped default.
VARIANTS: dict[str, dict[str, Any]] = {"before": {"hold_line": False, "early_asr_s": 0.0}, "now": {}}


class Ended:
    """The gateway's record sink: the record of each call that ended, by call id."""

    def __init__(self) -> None:
        self.calls: dict[str, CallRecord] = {}

    def changed(self, rec: CallRecord) -> None:
        if rec.ended_at is not None:
            self.calls[rec.call_id] = rec

    async def save_now(self, rec: CallRecord) -> None:
        self.changed(rec)


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def llama_server(url: str | None, threads: int) -> Iterator[str]:
    if url:
        yield url
        return
    binary = next(Path("/var/cache/aicc/llama-server").glob("*/llama-server"), None)
    if binary is None or not GGUF.exists():
        raise SystemExit("llama-server or the GGUF model is missing: aicc models fetch; build llama-server")
    port = free_port(socket.SOCK_STREAM)
    proc = subprocess.Popen(
        [
            str(binary),
            "--model",
            str(GGUF),
            "--alias",
            "bench",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--threads",
            str(threads),
            "--ctx-size",
            "4096",
            "--parallel",
            "1",
            "--jinja",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def wait_healthy(url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"llama-server at {url} not ready after {timeout_s:.0f} s")


@contextmanager
def postgres(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    with scratch_cluster("aicc-bench-pg-") as scratch:
        yield scratch


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def speak_turns(gw: Gateway, lang: str, utterances: list[str], tts: Any) -> list[float]:
    """One call: wait for the greeting, then each utterance and its reply. Returns caller-side turns."""
    caller = Caller()
    await caller.start()
    measured: list[float] = []
    try:
        await caller.call(
            f"sip:{'4000' if lang == 'en' else '4001'}@127.0.0.1:{gw.cfg.sip_port}",
            ("127.0.0.1", gw.cfg.sip_port),
        )
        await wait_quiet(caller, time.monotonic(), timeout=30)
        for text in utterances:
            parts = [c async for c in tts.synthesize(text, language=lang)]
            caller.play(b"".join(p.pcm for p in parts), parts[0].sample_rate)
            end = await caller.played()
            start, _ = await wait_quiet(caller, end, timeout=60)
            if start is not None:
                measured.append(start - end)
        await caller.hangup()
    finally:
        await caller.close()
    return measured


def bench_config(llm_url: str, threads: int, **changes: Any) -> GatewayConfig:
    """The gateway on loopback with the embedded engines and the llama-server at llm_url."""
    settings: dict[str, Any] = {"llm_timeout_s": 120, "no_input_s": 60, **changes}
    cfg = GatewayConfig(
        sip_ip="127.0.0.1",
        sip_port=free_port(),
        advertised_ip="127.0.0.1",
        mode="bot",
        rtp_port_min=48000,
        rtp_port_max=48999,
        **settings,
    )
    cfg.engines.llm_urls = [llm_url]
    cfg.engines.asr_threads = threads
    cfg.engines.llm_model = "bench"
    return cfg


async def bench_engines(cfg: GatewayConfig, dsn: str, pool: AsyncConnectionPool[Any]) -> BotEngines:
    """The engines and the retail bot (services 4000 and 4001 reach it) on the demo backend, warm."""
    apply(dsn, all_migrations())
    llm, asr, tts, vad = await open_engines(cfg)
    retail = open_bots({"retail": shipped_definitions()["retail"]}, pool)
    engines = BotEngines(llm=llm, asr=asr, tts=tts, vad=vad, bots=retail)
    print("warming up: prompts and the LLM prompt cache ...", flush=True)
    await engines.warm_prompts()
    return engines


async def run(args: argparse.Namespace, llm_url: str, dsn: str) -> None:
    cfg = bench_config(llm_url, args.threads)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
    await pool.open(wait=True)
    engines = await bench_engines(cfg, dsn, pool)
    ended = Ended()
    gw = Gateway(cfg, engines, records=ended)
    await gw.start()
    # The caller speaks Mandarin with a native voice where installed, not with the bot's own.
    voices = {"en": engines.tts, "zh": baker.BakerTTS() if baker.available() else engines.tts}
    per_call = len(UTTERANCES["en"])
    runs: dict[tuple[str, str], tuple[list[CallRecord], list[float]]] = {}
    defaults = GatewayConfig().model_dump(include={"hold_line", "early_asr_s"})
    for lang in args.langs.split(","):
        for mode in args.variants.split(","):
            for key, value in {**defaults, **VARIANTS[mode]}.items():
                setattr(gw.cfg, key, value)  # read by each new call
            ended.calls.clear()
            heard: list[float] = []
            done = 0
            while done < args.turns:
                batch = UTTERANCES[lang][: min(per_call, args.turns - done)]
                heard += await speak_turns(gw, lang, batch, voices[lang])
                done += len(batch)
                print(f"{lang} {mode}: {done}/{args.turns} turns", flush=True)
            await asyncio.sleep(1)  # the last call's record
            runs[(lang, mode)] = (list(ended.calls.values()), heard)
    await gw.stop()
    await pool.close()
    for (lang, mode), (recs, heard) in runs.items():
        report(f"{lang} {mode}", recs, heard)
    compare(runs)
    print(f"host load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")


def compare(runs: dict[tuple[str, str], tuple[list[CallRecord], list[float]]]) -> None:
    """First audio the caller hears (hold line or answer) and the answer's own, now vs before."""
    print(f"\n{'':<10}{'first audio p50 s':>18}{'answer p50 s':>14}   (caller-measured / pipeline clock)")
    for lang in dict.fromkeys(lang for lang, _ in runs):
        row: dict[str, tuple[float, float]] = {}
        for mode in VARIANTS:
            if (lang, mode) in runs:
                recs, heard = runs[(lang, mode)]
                answer = pct([t["turn"] for r in recs for t in r.turns if "turn" in t], 50)
                row[mode] = (pct(heard, 50), answer)
                print(f"{lang + ' ' + mode:<10}{row[mode][0]:>18.3f}{answer:>14.3f}")
        if len(row) == 2:
            print(
                f"{lang} now/before: first audio x{row['now'][0] / row['before'][0]:.2f}, "
                f"answer x{row['now'][1] / row['before'][1]:.2f}"
            )


def report(title: str, records: list[CallRecord], heard: list[float]) -> None:
    print(f"\n{title:<14}{'stage':<17}{'n':>4}{'p50 s':>9}{'p95 s':>9}")
    turns = [t for r in records for t in r.turns]
    for stage in STAGES:
        values = [t[stage] for t in turns if stage in t]
        if values:
            print(f"{'':<14}{stage:<17}{len(values):>4}{pct(values, 50):>9.3f}{pct(values, 95):>9.3f}")
    print(f"{'':<14}{'caller-measured':<17}{len(heard):>4}{pct(heard, 50):>9.3f}{pct(heard, 95):>9.3f}")
    medians = {s: pct([t[s] for t in turns if s in t], 50) for s in STAGES if s not in ("turn", "hold")}
    if medians:
        top = max(medians, key=lambda s: medians[s])
        total = pct([t["turn"] for t in turns if "turn" in t], 50)
        print(f"{'':<14}dominated by {top}: p50 {medians[top]:.3f} s of a {total:.3f} s turn")
    tools = [tc for r in records for tc in r.tool_calls]
    print(f"{'':<14}tool calls: {sum(1 for tc in tools if tc.ok)}/{len(tools)} ok")
    for tc in tools:
        if not tc.ok:
            print(f"{'':<16}failed: {tc.tool}({tc.arguments}): {tc.error}")
    said = [ln.text for r in records for ln in r.lines if ln.speaker == "caller"]
    print(f"{'':<14}caller turns as the bot heard them (first 5): {said[:5]}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=20, help="turns per language")
    ap.add_argument("--llm-url", default=None)
    ap.add_argument("--dsn", default=None)
    ap.add_argument("--langs", default="en,zh")
    ap.add_argument("--variants", default="before,now", help="runs per language: before (baseline), now")
    ap.add_argument("--threads", type=int, default=2, help="llama-server and ASR threads (1 on a busy host)")
    args = ap.parse_args()
    with llama_server(args.llm_url, args.threads) as url, postgres(args.dsn) as dsn:
        asyncio.run(run(args, url, dsn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
