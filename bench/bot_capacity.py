"""How many simultaneous bot conversations one voicebot host holds on the embedded engines before the
answer gets slow: raises the number of concurrent calls until the answer's p95 passes the goal (4 s)
and prints where that happens and which engine saturates first.

Same setup as bench/bot_turn_latency.py (llama-server with the catalog's GGUF, a throwaway PostgreSQL
with the demo backend, the gateway in this process with the embedded ASR/TTS/VAD, callers over real
SIP/RTP on loopback). At each level N, N callers ring at once (starts spread over 2 s), each waits for
the greeting and asks --turns questions one after the other; the answer latency is the pipeline's own
"turn" figure (end of the caller's speech to the answer's first audio). The baseline is level 1 of
the same run: each stage's growth against it names the engine that saturates.

    python bench/bot_capacity.py [--lang zh] [--max-calls 8] [--turns 3] [--goal-s 4] [--llm-url URL]

The voicebot role's default `voicebot_max_calls` comes from this figure (roles/voicebot/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bot_turn_latency import UTTERANCES, Ended, bench_config, bench_engines, llama_server, pct, postgres

from aicc.appliance.voice.caller import Caller
from aicc.appliance.voice.gateway import Gateway
from aicc.installer.smoke import wait_quiet
from aicc.models.engines import baker

STAGES = ("vad", "asr", "llm_first_token", "tts_first_audio")
Audio = tuple[bytes, int]


async def one_call(gw: Gateway, service: str, turns: list[Audio], delay: float) -> int:
    """A caller who rings after `delay`, waits for the greeting, asks each question after the last
    answer. Returns the answers heard (a turn with no answer within 60 s counts as missed)."""
    await asyncio.sleep(delay)
    caller = Caller()
    await caller.start()
    answered = 0
    try:
        await caller.call(f"sip:{service}@127.0.0.1:{gw.cfg.sip_port}", ("127.0.0.1", gw.cfg.sip_port))
        await wait_quiet(caller, time.monotonic(), timeout=60)
        for pcm, rate in turns:
            caller.play(pcm, rate)
            end = await caller.played()
            start, _ = await wait_quiet(caller, end, timeout=60)
            answered += start is not None
        await caller.hangup()
    finally:
        await caller.close()
    return answered


async def level(gw: Gateway, n: int, service: str, audio: list[Audio], turns: int, seed: int) -> int:
    rng = random.Random(seed)
    calls = []
    for i in range(n):
        picked = [audio[(i + k) % len(audio)] for k in range(turns)]
        calls.append(one_call(gw, service, picked, rng.uniform(0, 2.0)))
    return sum(await asyncio.gather(*calls))


async def run(args: argparse.Namespace, llm_url: str, dsn: str) -> None:
    cfg = bench_config(llm_url, args.threads, no_input_s=90, max_calls=args.max_calls)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=8, open=False)
    await pool.open(wait=True)
    engines = await bench_engines(cfg, dsn, pool)
    # The callers' audio is synthesised before any call, so it takes no CPU from the bots measured.
    voice = baker.BakerTTS() if args.lang == "zh" and baker.available() else engines.tts
    audio: list[Audio] = []
    for text in UTTERANCES[args.lang]:
        parts = [c async for c in voice.synthesize(text, language=args.lang)]
        audio.append((b"".join(p.pcm for p in parts), parts[0].sample_rate))
    ended = Ended()
    gw = Gateway(cfg, engines, records=ended)
    await gw.start()
    service = "4000" if args.lang == "en" else "4001"
    rows: list[dict[str, Any]] = []
    try:
        for n in range(1, args.max_calls + 1):
            ended.calls.clear()
            started = time.monotonic()
            answered = await level(gw, n, service, audio, args.turns, seed=n)
            await asyncio.sleep(1)  # the last records
            turns = [t for r in ended.calls.values() for t in r.turns]
            answers = [t["turn"] for t in turns if "turn" in t]
            row = {
                "calls": n,
                "answers": answered,
                "asked": n * args.turns,
                "p50": pct(answers, 50),
                "p95": pct(answers, 95),
                "wall_s": time.monotonic() - started,
                **{s: pct([t[s] for t in turns if s in t], 50) for s in STAGES},
            }
            rows.append(row)
            print(
                f"{n} calls: answer p50 {row['p50']:.2f} s, p95 {row['p95']:.2f} s, "
                f"{answered}/{row['asked']} answered",
                flush=True,
            )
            # Two levels at least, so that the growth names the engine that saturates.
            if n >= 2 and (row["p95"] > args.goal_s or answered < row["asked"]):
                break
    finally:
        await gw.stop()
        await pool.close()
    report(rows, args)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    head = "".join(f"{s + ' p50':>22}" for s in STAGES)
    print(f"\n{'calls':>5}{'answered':>10}{'answer p50':>12}{'answer p95':>12}{head}")
    for r in rows:
        stages = "".join(f"{r[s]:>22.3f}" for s in STAGES)
        print(f"{r['calls']:>5}{r['answers']:>6}/{r['asked']:<3}{r['p50']:>12.3f}{r['p95']:>12.3f}{stages}")
    ok = [r for r in rows if r["p95"] <= args.goal_s and r["answers"] == r["asked"]]
    base, last = rows[0], rows[-1]
    if len(rows) > 1:
        growth = {s: last[s] - base[s] for s in STAGES if last[s] == last[s] and base[s] == base[s]}
        top = max(growth, key=lambda s: growth[s])
        print(
            f"\nsaturates first: {top} (p50 {base[top]:.2f} s at 1 call -> {last[top]:.2f} s at "
            f"{last['calls']}; answer p50 x{last['p50'] / base['p50']:.2f} against 1 call)"
        )
    if ok:
        calls, goal = ok[-1]["calls"], args.goal_s
        print(f"capacity: {calls} simultaneous {args.lang} conversations with answer p95 <= {goal} s")
    else:
        print(f"capacity: below 1 conversation: the answer p95 is over {args.goal_s} s even alone")
    if len(ok) == len(rows) and len(rows) == args.max_calls:
        print(f"(not reached: raise --max-calls above {args.max_calls})")
    print(f"host: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lang", default="zh", choices=sorted(UTTERANCES))
    ap.add_argument("--max-calls", type=int, default=8, help="stop at this many simultaneous calls")
    ap.add_argument("--turns", type=int, default=3, help="questions per call")
    ap.add_argument("--goal-s", type=float, default=4.0, help="answer p95 goal in seconds")
    ap.add_argument("--llm-url", default=None)
    ap.add_argument("--dsn", default=None)
    ap.add_argument("--threads", type=int, default=2, help="llama-server and ASR threads")
    args = ap.parse_args()
    with llama_server(args.llm_url, args.threads) as url, postgres(args.dsn) as dsn:
        asyncio.run(run(args, url, dsn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
