"""Engine per host: GPU + bundle -> vLLM / PaddleSpeech, else the embedded CPU engines; settings override."""

from __future__ import annotations

from typing import Any

from aicc.installer.settings import SiteSettings
from aicc.models.placement import choose_engines


def host(groups: list[str], gpu_gib: float | None = None, mem_gib: float = 32) -> dict[str, Any]:
    gpu = (
        {"driver": True, "devices": [{"name": "NVIDIA L4", "memory_mib": int(gpu_gib * 1024)}]}
        if gpu_gib is not None
        else {"driver": False, "devices": []}
    )
    return {"groups": groups, "gpu": gpu, "mem_total_kib": int(mem_gib * 1024 * 1024)}


def settings(**engines: Any) -> SiteSettings:
    return SiteSettings.model_validate({"engines": engines})


PADDLE = {
    "paddlespeech-conformer-online-wenetspeech-zh",
    "paddlespeech-fastspeech2-cnndecoder-csmsc-zh",
    "paddlespeech-mb-melgan-csmsc-zh",
    "paddlespeech-fastspeech2-ljspeech-en",
    "paddlespeech-hifigan-ljspeech-en",
}


def test_cpu_host_gets_llamacpp_and_embedded_speech() -> None:
    choices = choose_engines({"a": host(["llm", "speech"])}, settings())
    assert [(c.group, c.engine) for c in choices] == [("llm", "llamacpp"), ("speech", "embedded")]
    assert all(c.ok for c in choices)
    assert "no NVIDIA driver" in choices[0].reason
    assert choices[0].models == ("qwen2.5-coder-1.5b-instruct-q4km",)


def test_gpu_size_picks_the_largest_model_that_fits_and_is_bundled() -> None:
    both = {"qwen2.5-7b-instruct-awq", "qwen2.5-14b-instruct-awq"}
    big = choose_engines({"g": host(["llm"], 40)}, settings(), available_models=both)[0]
    assert (big.engine, big.models) == ("vllm", ("qwen2.5-14b-instruct-awq",))
    only7 = choose_engines(
        {"g": host(["llm"], 40)}, settings(), available_models={"qwen2.5-7b-instruct-awq"}
    )[0]
    assert only7.models == ("qwen2.5-7b-instruct-awq",)
    mid = choose_engines({"g": host(["llm"], 20)}, settings(), available_models=both)[0]
    assert mid.models == ("qwen2.5-7b-instruct-awq",)


def test_small_gpu_or_empty_bundle_falls_back_with_reason() -> None:
    small = choose_engines({"g": host(["llm"], 8)}, settings(), available_models=set())[0]
    assert small.engine == "llamacpp" and "8 GiB" in small.reason
    nobundle = choose_engines({"g": host(["llm"], 40)}, settings(), available_models=set())[0]
    assert nobundle.engine == "llamacpp" and "bundle" in nobundle.reason


def test_settings_override() -> None:
    forced_cpu = choose_engines({"g": host(["llm"], 80)}, settings(llm="llamacpp"))[0]
    assert forced_cpu.engine == "llamacpp" and forced_cpu.ok
    impossible = choose_engines({"c": host(["llm"])}, settings(llm="vllm"))[0]
    assert not impossible.ok and impossible.fix and "engines.llm: llamacpp" in impossible.fix
    sp = choose_engines({"c": host(["speech"])}, settings(speech="paddlespeech"))[0]
    assert not sp.ok and "PaddleSpeech requested" in sp.reason


def test_paddlespeech_needs_gpu_and_all_models() -> None:
    gpu = choose_engines({"s": host(["speech"], 16)}, settings(), available_models=PADDLE)[0]
    assert gpu.engine == "paddlespeech"
    partial = choose_engines(
        {"s": host(["speech"], 16)}, settings(), available_models=PADDLE - {"paddlespeech-mb-melgan-csmsc-zh"}
    )[0]
    assert partial.engine == "embedded" and "paddlespeech-mb-melgan-csmsc-zh" in partial.reason


def test_low_memory_llm_host_is_flagged() -> None:
    c = choose_engines({"tiny": host(["llm"], mem_gib=1.5)}, settings())[0]
    assert not c.ok and "RAM" in c.reason


def test_hosts_outside_llm_and_speech_are_ignored() -> None:
    assert choose_engines({"db": host(["db", "app"])}, settings()) == []
