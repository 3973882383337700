"""`python -m aicc.appliance.voice serve --config FILE`: the gateway service on a [voicebot] host.

Loads /etc/aicc/voicebot.yml, opens the engines (embedded: whisper ASR, piper/kokoro TTS, silero VAD
from the model store; LLM over the OpenAI-compatible API), every bot on its connector, the database
pool, the call-record and event writers, the ACD client and the flows, then the gateway. The
database's migrations are the appliance role's (`python -m aicc.appliance.db migrate`).
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
    """The production engine set and every bot (the shipped definitions and the site's own in
    /etc/aicc/bots, each on its connector); imported here so echo mode needs no model runtimes."""
    from aicc.appliance.bots.definition import load_definitions
    from aicc.appliance.connectors.registry import open_bots
    from aicc.appliance.documents import DocumentError
    from aicc.appliance.voice.bot import BotEngines
    from aicc.appliance.voice.engines import open_engines
    from aicc.appliance.voice.knowledge import Knowledge

    site_bots = Path("/etc/aicc/bots")
    try:
        bots = open_bots(load_definitions(site_bots if site_bots.is_dir() else None), pool)
    except DocumentError as exc:  # a bad definition: say which file and field, without a traceback
        raise SystemExit(f"aicc-voice: {exc}") from None
    llm, asr, tts, vad = await open_engines(cfg)
    return BotEngines(llm=llm, asr=asr, tts=tts, vad=vad, bots=bots, knowledge=Knowledge(pool))


async def serve(cfg: GatewayConfig) -> None:
    metrics = VoiceMetrics()
    start_http_server(cfg.metrics_port, addr=cfg.metrics_ip, registry=metrics.registry)
    dsn = _dsn(cfg)
    if not dsn:
        # Echo mode (media benches) needs no database; a bot gateway cannot work without one.
        if cfg.mode == "bot":
            raise SystemExit("aicc-voice: database_dsn_file is required in bot mode")
        gw = Gateway(cfg, None, metrics=metrics)
        await _run(gw)
        return
    from psycopg_pool import AsyncConnectionPool

    from aicc.appliance.acd.client import AcdClient
    from aicc.appliance.calls.store import CallStore
    from aicc.appliance.calls.writer import RecordWriter
    from aicc.appliance.events.writer import EventWriter
    from aicc.appliance.ivr.store import FlowCatalog

    # Not waiting for the database: calls are answered while it is away (records and events are
    # spooled, flows are the last read or the shipped ones, a queue step fails cleanly).
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=8, open=False, timeout=5)
    await pool.open(wait=False)
    spool = cfg.spool_dir
    if spool is not None:
        spool.mkdir(parents=True, exist_ok=True)
    engines = None if cfg.mode == "echo" else await _engines(cfg, pool)
    name = cfg.name or f"{cfg.advertised_ip}:{cfg.sip_port}"
    records = RecordWriter(CallStore(pool), spool / "records" if spool else None)
    events = EventWriter(pool, spool_dir=spool / "events" if spool else None)
    acd = AcdClient(
        pool, dsn, source=f"gateway:{name}", spool=spool / "acd-outbox.jsonl" if spool else None, gateway=name
    )
    flows = FlowCatalog(pool, dsn, refresh_s=cfg.flows_refresh_s)
    await records.start(name)
    await events.start()
    await acd.start()
    await flows.start()
    gw = Gateway(cfg, engines, metrics=metrics, records=records, events=events, acd=acd, flows=flows)
    try:
        await _run(gw)
    finally:
        await flows.close()
        await acd.close()
        await events.close()
        await records.close()
        await pool.close()


async def _run(gw: Gateway) -> None:
    cfg = gw.cfg
    await gw.start()
    log.info(
        "voice gateway %s listening on %s:%d (%s mode, up to %d calls)",
        gw.name,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aicc-voice")
    parser.add_argument("command", choices=("serve",))
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"aicc-voice: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
