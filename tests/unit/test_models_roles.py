"""The llm/speech roles agree with the catalog and the build recipe (one source of truth, no drift)."""

from __future__ import annotations

from pathlib import Path

import yaml

from aicc.installer.settings import SiteSettings, settings_to_ansible_vars
from aicc.models.catalog import load_catalog
from aicc.models.llama_build import DEFAULT_CACHE, build_key

ROLES = Path(__file__).resolve().parents[2] / "roles"


def _defaults(role: str) -> dict[str, object]:
    data = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_llm_role_serves_the_catalog_default_with_its_checksum() -> None:
    d = _defaults("llm")
    entry = load_catalog().default("llm")
    assert d["llm_llamacpp_model"] == entry.name
    assert d["llm_llamacpp_model_file"] == entry.files[0].path
    assert d["llm_llamacpp_model_sha256"] == entry.files[0].sha256
    assert d["llm_llamacpp_binary_src"] == str(DEFAULT_CACHE / build_key() / "llama-server")
    vllm = {m.name: m.hardware.gpu_memory_gib for m in load_catalog().models if m.engine == "vllm"}
    assert {m["name"]: m["gpu_memory_gib"] for m in d["llm_vllm_models"]} == vllm  # type: ignore[index,union-attr]


def test_speech_role_models_match_the_catalog() -> None:
    d = _defaults("speech")
    cat = load_catalog()
    defaults = {
        cat.default(k, lang).name for k, lang in (("asr", "zh"), ("tts", "en"), ("tts", "zh"), ("vad", "zh"))
    }
    assert set(d["speech_embedded_models"]) == defaults  # type: ignore[arg-type]
    paddle = {m.files[0].path: m.files[0].md5 for m in cat.models if m.engine == "paddlespeech"}
    for p in d["speech_paddle_models"]:  # type: ignore[union-attr]
        assert paddle[p["archive"]] == p["md5"], p


def test_units_bind_to_the_host_address_with_telemetry_off() -> None:
    llm_unit = (ROLES / "llm" / "templates" / "aicc-llm.service.j2").read_text()
    speech_unit = (ROLES / "speech" / "templates" / "aicc-speech.service.j2").read_text()
    for unit in (llm_unit, speech_unit):
        assert "0.0.0.0" not in unit
        assert "HF_HUB_OFFLINE=1" in unit and "DO_NOT_TRACK=1" in unit
        assert "NoNewPrivileges=true" in unit and "ProtectSystem=strict" in unit
    assert "VLLM_NO_USAGE_STATS=1" in llm_unit
    assert "--host {{ llm_listen_address }}" in llm_unit
    assert "--host {{ speech_listen_address }}" in speech_unit


def test_settings_choose_the_engines() -> None:
    v = settings_to_ansible_vars(
        SiteSettings.model_validate({"engines": {"llm": "llamacpp", "speech": "embedded"}})
    )
    assert (v["llm_engine"], v["speech_engine"]) == ("llamacpp", "embedded")
    specs = yaml.safe_load((ROLES / "llm" / "meta" / "argument_specs.yml").read_text())
    assert set(specs["argument_specs"]["main"]["options"]["llm_engine"]["choices"]) == {
        "auto",
        "llamacpp",
        "vllm",
    }
