"""`python -m aicc.appliance.acd serve --config /etc/aicc/app.yml`: the ACD on an [app] host.

Every [app] host runs one; the one holding the database's leader lock is active, the others stand by
and take over within seconds when it goes away. Metrics on metrics_host:acd_metrics_port.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from prometheus_client import start_http_server

from aicc.appliance.acd.metrics import AcdMetrics
from aicc.appliance.acd.service import AcdService
from aicc.appliance.api.config import AppConfig, ConfigError, load_config

log = logging.getLogger("aicc.acd")


async def serve(config: AppConfig) -> None:
    metrics = AcdMetrics()
    start_http_server(config.acd_metrics_port, addr=config.metrics_host, registry=metrics.registry)
    conninfo = config.database_dsn_file.read_text(encoding="utf-8").strip()
    service = AcdService(conninfo, config.acd, metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("ACD started; waiting to become the active one")
    await service.run(stop)
    log.info("ACD stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aicc.appliance.acd")
    parser.add_argument("command", choices=("serve",))
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"aicc-acd: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
