"""Run llama.cpp's llama-server (the embedded LLM): one command line for tests, bench and the role.

On hosts the `llm` role runs the same arguments under systemd; here a process is started for tests
and the bench. Start-up failures (port taken, not enough RAM, bad model file) become EngineErrors
that name the host, the model and the file.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from aicc.models.engines.base import EngineError

# Telemetry and hub access off for anything the server or its libraries might do.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "LLAMA_ARG_NO_WEBUI": "1",
}


@dataclass(frozen=True)
class ServerConfig:
    binary: Path
    model_path: Path
    model_name: str
    host: str = "127.0.0.1"
    port: int = 8081
    threads: int = 2
    ctx_size: int = 4096
    parallel: int = 1
    extra: tuple[str, ...] = field(default_factory=tuple)

    def argv(self) -> list[str]:
        """The llama-server command line (the role's systemd unit renders the same flags)."""
        return [
            str(self.binary),
            "--model",
            str(self.model_path),
            "--alias",
            self.model_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--threads",
            str(self.threads),
            "--ctx-size",
            str(self.ctx_size),
            "--parallel",
            str(self.parallel),
            "--jinja",  # the model's own chat template (Qwen's), not a generic one
            "--metrics",  # Prometheus /metrics for the monitoring role
            "--no-webui",
            *self.extra,
        ]


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def mem_available_gib() -> float:
    with contextlib.suppress(OSError), Path("/proc/meminfo").open() as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / (1 << 20)
    return float("inf")


class LlamaServer:
    """A llama-server child process: started, health-checked, stopped."""

    def __init__(self, config: ServerConfig, *, log_path: Path | None = None, ram_gib: float = 0.0) -> None:
        self.config = config
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"aicc-llama-server-{config.port}.log"
        self.ram_gib = ram_gib
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}"

    def _error(self, message: str) -> EngineError:
        return EngineError(
            f"{message} (file {self.config.model_path})",
            engine="llamacpp",
            model=self.config.model_name,
            host=self.config.host,
        )

    def start(self, timeout_s: float = 120.0) -> None:
        c = self.config
        if not c.binary.is_file():
            raise self._error(
                f"llama-server binary missing at {c.binary}: run `aicc models build-llama-server`"
            )
        if not c.model_path.is_file():
            raise self._error("model file missing: run `aicc models fetch`")
        if not port_free(c.host, c.port):
            raise self._error(f"port {c.port} on {c.host} is already in use")
        if self.ram_gib and mem_available_gib() < self.ram_gib:
            raise self._error(
                f"not enough memory: {mem_available_gib():.1f} GiB available, {self.ram_gib} GiB needed"
            )
        env = {**os.environ, **OFFLINE_ENV}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                c.argv(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-800:]
                raise self._error(f"llama-server exited with {self.proc.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/health", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.25)
        self.stop()
        raise self._error(f"llama-server not ready after {timeout_s:.0f}s (log {self.log_path})")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1", candidates: Sequence[int] = range(18080, 18180)) -> int:
    for port in candidates:
        if port_free(host, port):
            return port
    raise EngineError("no free port for a test llama-server", engine="llamacpp", host=host)
