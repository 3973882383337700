"""The model catalog: the shipped one is valid and honest; a bad entry names file, entry and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aicc.installer.errors import InputError
from aicc.models.catalog import load_catalog

SHA = "a" * 64


def _entry(**over: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "name": "tiny-llm",
        "kind": "llm",
        "languages": ["en"],
        "engine": "llamacpp",
        "tier": "embedded",
        "description": "test",
        "license": "MIT",
        "group": "llm",
        "hardware": {"ram_gib": 1, "cpu_cores": 1, "gpu_memory_gib": 0, "disk_gib": 1},
        "files": [
            {
                "path": "m.gguf",
                "sha256": SHA,
                "size": 10,
                "parts": [{"package": "p", "version": "1.0", "wheel_sha256": SHA, "member": "p/data/m.bin"}],
            }
        ],
    }
    entry.update(over)
    return entry


def _write(tmp_path: Path, models: list[dict[str, object]]) -> Path:
    path = tmp_path / "catalog.yml"
    path.write_text(yaml.safe_dump({"version": 1, "models": models}))
    return path


def test_shipped_catalog_is_valid_and_complete() -> None:
    cat = load_catalog()
    kinds = {(m.kind, lang) for m in cat.models if m.tier == "embedded" and m.default for lang in m.languages}
    for need in [("llm", "en"), ("llm", "zh"), ("asr", "en"), ("asr", "zh"), ("tts", "en"), ("tts", "zh")]:
        assert need in kinds, f"no embedded default for {need}"
    # every embedded file is pinned by sha256 and size; production files either have a checksum or say why not
    for m in cat.models:
        for f in m.files:
            if m.tier == "embedded":
                assert f.sha256 and f.size, (m.name, f.path)
            else:
                assert f.sha256 or f.checksum_note, (m.name, f.path)
    assert cat.get("qwen2.5-coder-1.5b-instruct-q4km").files[0].sha256 == (
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    )
    paddle = {m.upstream.get("paddlespeech_tag") for m in cat.models if m.engine == "paddlespeech"}
    assert "conformer_online_wenetspeech-zh-16k" in paddle
    vllm = [m for m in cat.models if m.engine == "vllm"]
    assert len(vllm) >= 2 and len({m.hardware.gpu_memory_gib for m in vllm}) == len(vllm)


def test_bad_field_names_file_entry_and_field(tmp_path: Path) -> None:
    bad = _entry(name="broken-model")
    bad["files"][0]["sha256"] = "not-a-checksum"  # type: ignore[index]
    path = _write(tmp_path, [_entry(), bad])
    with pytest.raises(InputError) as err:
        load_catalog(path)
    text = str(err.value)
    assert str(path) in text
    assert "'broken-model'" in text and "models[1]" in text
    assert "files.0.sha256" in text


def test_unknown_kind_and_missing_checksum_reason(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"field kind"):
        load_catalog(_write(tmp_path, [_entry(kind="video")]))
    no_sum = _entry()
    no_sum["files"] = [{"path": "w.bin", "bundle": "models/w.bin"}]
    with pytest.raises(InputError, match="checksum_note"):
        load_catalog(_write(tmp_path, [no_sum]))


def test_wheel_sourced_file_needs_sha_and_size(tmp_path: Path) -> None:
    e = _entry()
    del e["files"][0]["size"]  # type: ignore[index]
    with pytest.raises(InputError, match="sha256 and size"):
        load_catalog(_write(tmp_path, [e]))


def test_duplicate_names_and_path_escape(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="duplicate model names: tiny-llm"):
        load_catalog(_write(tmp_path, [_entry(), _entry()]))
    e = _entry()
    e["files"][0]["path"] = "../../etc/passwd"  # type: ignore[index]
    with pytest.raises(InputError, match=r"files\.0\.path"):
        load_catalog(_write(tmp_path, [e]))


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_catalog(tmp_path / "nope.yml")
    p = tmp_path / "c.yml"
    p.write_text("models: [unclosed")
    with pytest.raises(InputError, match="not valid YAML"):
        load_catalog(p)
