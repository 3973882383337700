"""A throwaway PostgreSQL 15 cluster on loopback, for unit tests and benches (not used in production).

Lives outside pytest's 0700 temp dirs because, as root, the cluster runs as the postgres user
(initdb refuses root), which must reach its data directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def scratch_cluster(prefix: str = "aicc-pg-", server_options: str = "") -> Iterator[str]:
    """Start a cluster with an empty `aicc` database; yield its DSN (login aicc_owner); remove it after."""
    if not (PG_BIN / "initdb").exists():
        raise FileNotFoundError("PostgreSQL 15 server binaries missing: apt-get install postgresql-15")
    root = Path(tempfile.mkdtemp(prefix=prefix))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        root.chmod(0o755)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_tcp_port()
    initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "aicc_owner", "-A", "trust", "-E", "UTF8"]
    subprocess.run([*run_as, *initdb, "--locale=C.UTF-8"], check=True, capture_output=True)
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 {server_options}".strip()
    start = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o", options, "start"]
    subprocess.run([*run_as, *start], check=True, capture_output=True)
    try:
        with psycopg.connect(
            f"host=127.0.0.1 port={port} user=aicc_owner dbname=postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE aicc")
        yield f"host=127.0.0.1 port={port} user=aicc_owner dbname=aicc"
    finally:
        stop = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
        subprocess.run([*run_as, *stop], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
