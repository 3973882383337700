"""`python -m aicc.appliance.voice serve|migrate`: the gateway service on a [voicebot] host.

serve: load /etc/aicc/voicebot.yml, open the engines (embedded: whisper ASR, piper/kokoro TTS, silero
VAD from the model store; LLM over the OpenAI-compatible API), the database pool, the metrics
listener, then the gateway. migrate: apply the call-record and demo-backend migrations.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server

from aicc.appliance.voice.config import ConfigError, GatewayConfig, load_config
from aicc.appliance.voice.gateway import Gateway
from aicc.appliance.voice.metrics import VoiceMetrics

log = logging.getLogger("aicc.voice")


def _dsn(cfg: GatewayConfig) -> str | None:
    if cfg.database_dsn_file is None:
        return None
    return cfg.database_dsn_file.read_text(encoding="utf-8").strip()


async def _engines(cfg: GatewayConfig, pool: Any) -> Any:
    """The production engine set; imported here so echo mode needs no model runtimes."""
    from aicc.appliance.connectors.demo import DemoBackend
    from aicc.appliance.voice.bot import BotEngines
    from aicc.appliance.voice.engines import open_engines

    llm, asr, tts, vad = await open_engines(cfg)
    return BotEngines(llm=llm, asr=asr, tts=tts, vad=vad, connector=DemoBackend(pool))


async def serve(cfg: GatewayConfig) -> None:
    metrics = VoiceMetrics()
    start_http_server(cfg.metrics_port, addr=cfg.metrics_ip, registry=metrics.registry)
    pool = None
    saver = None
    dsn = _dsn(cfg)
    if dsn:
        from psycopg_pool import AsyncConnectionPool

        from aicc.appliance.calls.store import CallStore

        pool = AsyncConnectionPool(dsn, min_size=1, max_size=8, open=False)
        await pool.open(wait=True, timeout=30)
        saver = CallStore(pool).save
    engines = None if cfg.mode == "echo" else await _engines(cfg, pool)
    gw = Gateway(cfg, engines, metrics=metrics, saver=saver)
    await gw.start()
    log.info(
        "voice gateway listening on %s:%d (%s mode, up to %d calls)",
        cfg.sip_ip,
        cfg.sip_port,
        cfg.mode,
        cfg.max_calls,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: hanging up %d calls", len(gw.calls))
    await gw.stop()
    if pool is not None:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aicc-voice")
    parser.add_argument("command", choices=("serve", "migrate"))
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--dsn-file", type=Path, default=None, help="migrate: conninfo of the owner login")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"aicc-voice: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        from aicc.appliance.calls.migrate import all_migrations, apply

        dsn_file = args.dsn_file or cfg.database_dsn_file
        if dsn_file is None:
            print("aicc-voice: migrate needs --dsn-file or database_dsn_file", file=sys.stderr)
            return 2
        applied = apply(dsn_file.read_text(encoding="utf-8").strip(), all_migrations())
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
        return 0
    asyncio.run(serve(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
