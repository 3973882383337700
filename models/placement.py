"""Which engine each [llm] / [speech] host gets, and why. Pure: facts and settings in, choices out.

`aicc preflight` prints these choices; the playbook passes them to the roles as host variables, so the
table the customer reads is what gets installed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aicc.models.catalog import Catalog, Kind, ModelEntry, load_catalog


class _EngineSettings(Protocol):
    llm: str
    speech: str
    min_gpu_memory_gib: int


class _Settings(Protocol):
    @property
    def engines(self) -> _EngineSettings: ...


@dataclass(frozen=True)
class EngineChoice:
    host: str
    group: Literal["llm", "speech"]
    engine: str  # llm: vllm | llamacpp; speech: paddlespeech | embedded
    models: tuple[str, ...]  # catalog names the host serves
    reason: str
    ok: bool = True  # False: the settings force something this host cannot run
    fix: str | None = None


def _gpu_gib(facts: Mapping[str, Any]) -> tuple[bool, float]:
    gpu = facts.get("gpu") or {}
    devices = gpu.get("devices") or []
    best = max((float(d.get("memory_mib", 0)) for d in devices), default=0.0) / 1024
    return bool(gpu.get("driver")), best


def _mem_gib(facts: Mapping[str, Any]) -> float:
    return float(facts.get("mem_total_kib", 0)) / (1 << 20)


def _in_bundle(entry: ModelEntry, available: Collection[str] | None) -> bool:
    return available is None or entry.name in available


def _llm(
    host: str,
    facts: Mapping[str, Any],
    settings: _Settings,
    catalog: Catalog,
    available: Collection[str] | None,
) -> EngineChoice:
    want = settings.engines.llm
    driver, gib = _gpu_gib(facts)
    need = settings.engines.min_gpu_memory_gib
    embedded = catalog.default("llm")
    bundle_note = "" if available is not None else " (bundle contents not checked)"
    # Largest vLLM model that fits the GPU and that the bundle carries.
    vllm_models = sorted(
        (m for m in catalog.models if m.engine == "vllm"),
        key=lambda m: m.hardware.gpu_memory_gib,
        reverse=True,
    )
    fitting = [m for m in vllm_models if m.hardware.gpu_memory_gib <= gib and _in_bundle(m, available)]
    if want != "llamacpp" and driver and gib >= need and fitting:
        m = fitting[0]
        return EngineChoice(
            host,
            "llm",
            "vllm",
            (m.name,),
            f"GPU with {gib:.0f} GiB >= {max(need, m.hardware.gpu_memory_gib):.0f} GiB "
            f"and {m.name} in the bundle{bundle_note}",
        )
    if not driver:
        why = "no NVIDIA driver (nvidia-smi not found)"
    elif gib < need:
        why = f"GPU has {gib:.0f} GiB, vLLM needs {need} GiB (engines.min_gpu_memory_gib)"
    elif not fitting:
        why = f"no vLLM model that fits {gib:.0f} GiB is in the bundle"
    else:
        why = "engines.llm: llamacpp in aicc.yml"
    if want == "vllm":
        return EngineChoice(
            host,
            "llm",
            "vllm",
            (),
            f"vLLM requested but {why}",
            ok=False,
            fix="install the NVIDIA driver / a larger GPU, add a vLLM model to the bundle, "
            "or set engines.llm: llamacpp",
        )
    mem = _mem_gib(facts)
    if mem and mem < embedded.hardware.ram_gib:
        return EngineChoice(
            host,
            "llm",
            "llamacpp",
            (embedded.name,),
            f"llama.cpp needs {embedded.hardware.ram_gib} GiB RAM, host has {mem:.1f} GiB",
            ok=False,
            fix="give the host more memory or move [llm] to a larger host",
        )
    return EngineChoice(host, "llm", "llamacpp", (embedded.name,), f"llama.cpp on CPU: {why}")


def _speech(
    host: str,
    facts: Mapping[str, Any],
    settings: _Settings,
    catalog: Catalog,
    available: Collection[str] | None,
) -> EngineChoice:
    want = settings.engines.speech
    driver, gib = _gpu_gib(facts)
    paddle = [m for m in catalog.models if m.engine == "paddlespeech"]
    need_gpu = max((m.hardware.gpu_memory_gib for m in paddle), default=0.0)
    missing = [m.name for m in paddle if not _in_bundle(m, available)]
    kinds: tuple[tuple[Kind, str], ...] = (("asr", "zh"), ("tts", "en"), ("tts", "zh"), ("vad", "zh"))
    embedded = tuple(catalog.default(k, lang).name for k, lang in kinds)
    if want != "embedded" and driver and gib >= need_gpu and not missing:
        return EngineChoice(
            host,
            "speech",
            "paddlespeech",
            tuple(m.name for m in paddle),
            f"GPU with {gib:.0f} GiB and the PaddleSpeech models in the bundle",
        )
    if not driver:
        why = "no NVIDIA driver"
    elif gib < need_gpu:
        why = f"GPU has {gib:.0f} GiB, PaddleSpeech needs {need_gpu:.0f} GiB"
    elif missing:
        why = f"bundle lacks {', '.join(missing)}"
    else:
        why = "engines.speech: embedded in aicc.yml"
    if want == "paddlespeech":
        return EngineChoice(
            host,
            "speech",
            "paddlespeech",
            (),
            f"PaddleSpeech requested but {why}",
            ok=False,
            fix="add a GPU and the PaddleSpeech models to the bundle, or set engines.speech: embedded",
        )
    return EngineChoice(host, "speech", "embedded", embedded, f"embedded CPU engines: {why}")


def choose_engines(
    host_facts: Mapping[str, Mapping[str, Any]],
    settings: _Settings,
    *,
    available_models: Collection[str] | None = None,
    catalog: Catalog | None = None,
) -> list[EngineChoice]:
    """One choice per (host, group) for hosts in [llm] or [speech].

    host_facts: host name -> the facts installer/probes/host_facts.py gathers ("gpu", "mem_total_kib",
    ...) plus "groups": the inventory groups of that host. available_models: catalog names the offline
    bundle carries (None: not checked, every model counts as present).
    """
    cat = catalog or load_catalog()
    out: list[EngineChoice] = []
    for host in sorted(host_facts):
        facts = host_facts[host]
        groups = set(facts.get("groups") or ())
        if "llm" in groups:
            out.append(_llm(host, facts, settings, cat, available_models))
        if "speech" in groups:
            out.append(_speech(host, facts, settings, cat, available_models))
    return out
