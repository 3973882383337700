"""llama-server start-up failures become clear errors naming host, model and file (no real server)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from aicc.models.engines.base import EngineError
from aicc.models.engines.llamacpp import LlamaServer, ServerConfig, free_port, port_free


def _cfg(tmp_path: Path, binary: Path | None = None, port: int | None = None) -> ServerConfig:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    return ServerConfig(binary or Path("/bin/false"), model, "tiny-model", port=port or free_port())


def test_argv_binds_the_given_address_with_metrics_and_jinja(tmp_path: Path) -> None:
    argv = _cfg(tmp_path, port=18123).argv()
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == "18123"
    assert {"--jinja", "--metrics", "--no-webui"} <= set(argv)
    assert argv[argv.index("--alias") + 1] == "tiny-model"


def test_missing_files_are_named(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, binary=tmp_path / "nope")
    with pytest.raises(EngineError, match="binary missing") as err:
        LlamaServer(cfg).start()
    assert "model tiny-model" in str(err.value) and "host 127.0.0.1" in str(err.value)
    (tmp_path / "m.gguf").unlink()
    missing_model = ServerConfig(Path("/bin/false"), tmp_path / "m.gguf", "tiny-model", port=free_port())
    with pytest.raises(EngineError, match=r"model file missing.*m\.gguf"):
        LlamaServer(missing_model).start()


def test_port_taken(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_free("127.0.0.1", port)
        with pytest.raises(EngineError, match=f"port {port} on 127.0.0.1 is already in use"):
            LlamaServer(_cfg(tmp_path, port=port)).start()


def test_not_enough_memory(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="not enough memory"):
        LlamaServer(_cfg(tmp_path), ram_gib=1e9).start()


def test_server_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="llama-server exited with 1"):
        LlamaServer(_cfg(tmp_path), log_path=tmp_path / "log").start(timeout_s=10)
