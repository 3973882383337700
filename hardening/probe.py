"""Run compliance checks on this host and print JSON: one row per check with its output, exit code,
time and duration. Runs as root with the host's system python3 (stdlib only); the installer appends
`main(<checks as JSON>)` and feeds the whole script on stdin."""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root"}


def run(check: dict) -> dict:  # type: ignore[type-arg]
    started = time.monotonic()
    at = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        proc = subprocess.run(
            ["/bin/sh", "-c", check["command"]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=check["timeout"],
            env=ENV,
            cwd="/",
            check=False,
        )
        output, code, timed_out = proc.stdout.decode("utf-8", "replace"), proc.returncode, False
    except subprocess.TimeoutExpired:
        output, code, timed_out = "", -1, True
    return {
        "id": check["id"],
        "output": output,
        "exit": code,
        "timed_out": timed_out,
        "timeout": check["timeout"],
        "at": at,
        "seconds": round(time.monotonic() - started, 3),
    }


def main(checks_json: str) -> None:
    checks = json.loads(checks_json)
    if os.geteuid() != 0:
        print(json.dumps({"error": "the checks need root"}))
        sys.exit(2)
    with ThreadPoolExecutor(max_workers=4) as pool:
        rows = list(pool.map(run, checks))
    print(json.dumps(rows))
