"""API under load: agents changing their status (a command through the active ACD and back) and queue and
agent figures read, by N concurrent clients against the real service (uvicorn + the ACD process + a
scratch PostgreSQL), for a fixed time. Prints requests/s and p50/p99 per kind of request, against
GET /api/health (no token, no database work) measured the same way in the same run.

    python bench/api_load.py [--clients 200] [--seconds 20] [--agents 200]

Loopback only; every process it starts stops at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from aicc.appliance.acd.policy import AgentProfile, QueueConfig
from aicc.appliance.api.auth import display_prefix, new_token, token_digest
from aicc.appliance.db.migrate import all_migrations, apply
from aicc.appliance.db.scratch import scratch_cluster

KEY = "b" * 48


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(dsn: str, agents: int) -> list[tuple[int, str]]:
    """Skills, two queues, `agents` agents (registered phones) each with a token, and a supervisor."""
    key = KEY.encode()
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO aicc.skills (name) VALUES ('orders')")
        for lang in ("en", "zh"):
            q = QueueConfig(name=f"support-{lang}", language=lang, skills={"orders": 1})
            conn.execute(
                "INSERT INTO aicc.queues (name, config) VALUES (%s, %s)", (q.name, q.model_dump_json())
            )
        conn.execute("CREATE SCHEMA kamailio")
        conn.execute("CREATE TABLE kamailio.location (username text, expires timestamp without time zone)")
        for i in range(agents + 1):
            role = "agent" if i < agents else "supervisor"
            row = conn.execute(
                "INSERT INTO aicc.users (username, role) VALUES (%s, %s) RETURNING id", (f"u{i}", role)
            ).fetchone()
            assert row is not None
            uid = int(row[0])
            token = new_token()
            conn.execute(
                "INSERT INTO aicc.api_tokens (user_id, kind, name, token_hash, prefix) "
                "VALUES (%s, 'api', 'b', %s, %s)",
                (uid, token_digest(key, token), display_prefix(token)),
            )
            if role == "agent":
                ext = str(2000 + i)
                profile = AgentProfile(skills={"orders": 3}, languages=["en", "zh"])
                conn.execute(
                    "INSERT INTO aicc.agents (user_id, extension, profile) VALUES (%s, %s, %s)",
                    (uid, ext, profile.model_dump_json(exclude={"extension"})),
                )
                conn.execute(
                    "INSERT INTO kamailio.location VALUES (%s, localtimestamp + interval '1 day')", (ext,)
                )
            out.append((uid, token))
    return out


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def wait_up(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url + "/api/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise SystemExit("the API did not come up")


async def load(
    url: str, clients: int, seconds: float, users: list[tuple[int, str]]
) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {
        "health": [],
        "status change": [],
        "live queues": [],
        "live agents": [],
    }
    errors: dict[str, int] = {}
    agents, (_, supervisor) = users[:-1], users[-1]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    deadline = time.monotonic() + seconds

    async def client_loop(n: int, client: httpx.AsyncClient) -> None:
        _, token = agents[n % len(agents)]
        status = "ready"
        rng = random.Random(n)
        while time.monotonic() < deadline:
            pick = rng.random()
            started = time.perf_counter()
            if pick < 0.4:
                kind = "status change"
                status = "away" if status == "ready" else "ready"
                r = await client.post(
                    "/api/agents/me/status",
                    json={"status": status, "reason": "break" if status == "away" else ""},
                    headers={"Authorization": f"Bearer {token}"},
                )
            elif pick < 0.7:
                kind = "live queues"
                r = await client.get("/api/live/queues", headers={"Authorization": f"Bearer {supervisor}"})
            elif pick < 0.9:
                kind = "live agents"
                r = await client.get("/api/live/agents", headers={"Authorization": f"Bearer {supervisor}"})
            else:
                kind = "health"
                r = await client.get("/api/health")
            took = time.perf_counter() - started
            if r.status_code == 200:
                timings[kind].append(took)
            else:
                errors[f"{kind} {r.status_code}"] = errors.get(f"{kind} {r.status_code}", 0) + 1

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        await asyncio.gather(*(client_loop(n, client) for n in range(clients)))
    if errors:
        print("errors:", errors)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--agents", type=int, default=200)
    args = parser.parse_args()
    with (
        scratch_cluster("aicc-bench-api-", "-c max_connections=200") as dsn,
        tempfile.TemporaryDirectory() as tmp,
    ):
        apply(dsn, all_migrations())
        users = seed(dsn, args.agents)
        folder = Path(tmp)
        (folder / "dsn").write_text(dsn)
        (folder / "key").write_text(KEY)
        port = free_port()
        (folder / "app.yml").write_text(
            f"database_dsn_file: {folder / 'dsn'}\nsecret_key_file: {folder / 'key'}\nlisten_port: {port}\n"
            "public_url: https://aicc.bench\n"
            f"api_metrics_port: {free_port()}\nacd_metrics_port: {free_port()}\npool_max: 40\n"
        )
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", f"aicc.appliance.{svc}", "serve", "--config", str(folder / "app.yml")],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for svc in ("acd", "api")
        ]
        try:
            url = f"http://127.0.0.1:{port}"
            asyncio.run(wait_up(url))
            time.sleep(3)  # the ACD's first registration poll
            print(f"{args.clients} clients for {args.seconds:.0f} s, {args.agents} agents, one API, one ACD")
            timings = asyncio.run(load(url, args.clients, args.seconds, users))
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
    total = sum(len(v) for v in timings.values())
    print(f"{'request':<14} {'count':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for kind, values in timings.items():
        ms = [v * 1000 for v in values]
        rate = len(values) / args.seconds
        print(f"{kind:<14} {len(values):>7} {rate:>8.0f} {pct(ms, 50):>8.1f} {pct(ms, 99):>8.1f}")
    print(f"all            {total:>7} {total / args.seconds:>8.0f}")
    base = pct([v * 1000 for v in timings["health"]], 99)
    for kind in ("status change", "live queues", "live agents"):
        p99 = pct([v * 1000 for v in timings[kind]], 99)
        print(f"p99 {kind} / p99 health: {p99 / base:.1f}x")
    load_avg = os.getloadavg()[0]
    print(f"host load average {load_avg:.1f} on {os.cpu_count()} cores (client and services share them)")


if __name__ == "__main__":
    main()
