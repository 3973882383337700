"""The engines a [voicebot] host uses: the embedded CPU set from the model store (faster-whisper,
piper + Kokoro TTS, Silero VAD) and the LLM over the OpenAI-compatible API of the [llm] hosts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aicc.appliance.voice.config import GatewayConfig
from aicc.models.engines.base import ASREngine, LLMClient, TTSEngine, VADEngine

TTS_RATE = 16000  # one rate for all voices; playback resamples to the call's codec


async def open_engines(cfg: GatewayConfig) -> tuple[LLMClient, ASREngine, TTSEngine, Callable[[], VADEngine]]:
    """Load the models (in a thread: loading takes seconds) and return the engines plus a VAD factory."""
    from aicc.models.engines.embedded import KokoroTTS, MultiTTS, PiperTTS, SileroVAD, WhisperASR
    from aicc.models.llm import OpenAICompatClient

    store = cfg.engines.model_dir

    def load() -> tuple[ASREngine, TTSEngine]:
        asr = WhisperASR(
            store / "whisper-base-ct2", threads=cfg.engines.asr_threads, beam_sizes=cfg.engines.asr_beam_size
        )
        tts = MultiTTS(
            {
                "en": PiperTTS(store / "piper-en-us-joe-medium" / "en_US-joe-medium.onnx"),
                "zh": KokoroTTS(store / "kokoro-82m-int8-zh", threads=cfg.engines.asr_threads),
            },
            sample_rate=TTS_RATE,
        )
        return asr, tts

    asr, tts = await asyncio.to_thread(load)
    vad_path = store / "silero-vad-v6" / "silero_vad_v6.onnx"
    SileroVAD(vad_path)  # fail at start-up, not on the first call, when the VAD model is missing

    def vad() -> VADEngine:
        return SileroVAD(vad_path)

    llm = OpenAICompatClient(cfg.engines.llm_urls, cfg.engines.llm_model, timeout_s=cfg.llm_timeout_s)
    return llm, asr, tts, vad
