"""Embedded CPU engines: faster-whisper (ASR), piper (TTS en), Kokoro (TTS zh), Silero (VAD).

All load from the model store only (paths given, never a hub name), with hub access switched off, and
run their blocking inference in a worker thread so the event loop keeps serving calls.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aicc.models.engines.audio import Float32, float_at, from_float
from aicc.models.engines.base import (
    Audio,
    EngineError,
    Language,
    Segment,
    SpeechProbability,
    Transcript,
)

# Nothing may phone home: set before any engine library is imported.
for _var, _val in (("HF_HUB_OFFLINE", "1"), ("DO_NOT_TRACK", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1")):
    os.environ.setdefault(_var, _val)

ASR_RATE = 16000

# Mandarin prompts. Longer utterances carry order numbers read digit by digit: Whisper base, left
# alone, writes them as Arabic numerals and loses or adds zeros ("一零零二三七" -> "1020237"); an
# example number written in Chinese digits makes it write one character per spoken digit. Short
# utterances ("是的", "不用了，谢谢") get no prompt: Whisper copies a prompt's words into them ("是的"
# came back as "使用简体中文", "对，确认" as "这一零零零二三四"), and a made-up order number is worse
# than a missed word. Measured with bench/zh_phone_asr.py (native Mandarin voice over G.711).
# The example is a sentence no caller says, so a transcript made only of it is surely an echo.
ZH_DIGITS_PROMPT = "客服中心来电记录，工单编号五三一七零八。"
ZH_DIGITS_MIN_S = 2.0
# Beam width per language. Greedy English decoding was as right as beam 5 over G.711 (7 of 7 test
# requests, order numbers included) and 0.2 s faster per turn on 2 cores; in Mandarin greedy lost a
# short confirmation ("对，确认" came back as "去"), so Mandarin keeps the beam. Other languages: 5.
DEFAULT_BEAM_SIZES: dict[str, int] = {"en": 1, "zh": 5}


def without_prompt_echo(text: str, prompt: str) -> str:
    """The transcript without what Whisper copied from its prompt (a known failure on near-silence:
    "是的" came back as "使用简体中文"; a pause after "没问题" as "没问题，工单编号五三一"). Copies are
    the prompt's clauses or their first six or more characters; a caller's own words stay."""
    rest = text
    for part in (p for p in re.split(r"[，。,.]", prompt) if p):
        for n in range(len(part), min(6, len(part)) - 1, -1):
            rest = rest.replace(part[:n], "")
    if rest == text:
        return text
    return rest.strip(" ，。,.") if re.search(r"\w", rest) else ""


def _need(path: Path, engine: str, model: str) -> None:
    if not path.exists():
        raise EngineError(
            f"model file missing: {path}; run `aicc models fetch {model}`", engine=engine, model=model
        )


async def _stream_thread(gen: Callable[[], Iterator[Audio]]) -> AsyncIterator[Audio]:
    """Run a blocking generator in a thread and hand each item over as soon as it exists."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Audio | BaseException | None] = asyncio.Queue()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in gen():
                if stop.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except BaseException as exc:  # handed to the consumer, raised there
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    thread = threading.Thread(target=work, daemon=True, name="tts")
    thread.start()
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # barge-in: the consumer stopped listening, stop synthesising


# --- ASR -------------------------------------------------------------------------------------------


class WhisperASR:
    """faster-whisper on CPU. Not streaming: give it one VAD-segmented utterance at a time."""

    def __init__(
        self,
        model_dir: Path,
        *,
        model: str = "whisper-base-ct2",
        threads: int = 2,
        compute_type: str = "int8",
        beam_sizes: Mapping[Language, int] | None = None,
    ) -> None:
        _need(model_dir / "model.bin", "faster-whisper", model)
        from faster_whisper import WhisperModel

        self.name = f"faster-whisper:{model}"
        self.model_name = model
        self.beam_sizes = DEFAULT_BEAM_SIZES | dict(beam_sizes or {})
        self._lock = threading.Lock()  # one CTranslate2 model instance is not re-entrant across threads
        self._model = WhisperModel(
            str(model_dir),
            device="cpu",
            compute_type=compute_type,
            cpu_threads=threads,
            num_workers=1,
            local_files_only=True,
        )

    def transcribe_sync(self, audio: Audio, language: Language | None = None) -> Transcript:
        samples = float_at(audio, ASR_RATE)
        if samples.size == 0:
            return Transcript("", language or "", 0.0)
        with self._lock:
            lang: str = language or ""
            if not lang:
                # Detect first (one encoder pass) so Mandarin is decoded once, with its prompt.
                lang = self._model.detect_language(samples)[0]
            prompt = ZH_DIGITS_PROMPT if lang == "zh" and samples.size >= ZH_DIGITS_MIN_S * ASR_RATE else ""
            text, segs = self._decode(samples, lang, prompt)
            if prompt and text != (kept := without_prompt_echo(text, prompt)):
                # It copied the prompt: the prompt did not fit this audio, decode it without one.
                text, segs = self._decode(samples, lang, "")
                text = text or kept
        logprob = sum(s.avg_logprob for s in segs) / len(segs) if segs else -10.0
        no_speech = max((s.no_speech_prob for s in segs), default=1.0)
        confidence = max(0.0, min(1.0, math.exp(logprob) * (1.0 - 0.5 * no_speech)))
        return Transcript(
            text, lang, confidence, tuple(Segment(float(s.start), float(s.end), s.text.strip()) for s in segs)
        )

    def _decode(self, samples: Float32, lang: str, prompt: str) -> tuple[str, list[Any]]:
        segments, _ = self._model.transcribe(
            samples,
            language=lang,
            beam_size=self.beam_size(lang),
            vad_filter=False,
            condition_on_previous_text=False,
            initial_prompt=prompt or None,
        )
        segs = list(segments)
        text = ("" if lang == "zh" else " ").join(s.text.strip() for s in segs).strip()
        if lang == "zh":
            import zhconv  # Whisper writes traditional characters as often as simplified ones

            text = zhconv.convert(text, "zh-cn")
        return text, segs

    def beam_size(self, language: str) -> int:
        return self.beam_sizes.get(language, 5)

    async def transcribe(self, audio: Audio, *, language: Language | None = None) -> Transcript:
        return await asyncio.to_thread(self.transcribe_sync, audio, language)


# --- TTS -------------------------------------------------------------------------------------------


class PiperTTS:
    """piper (VITS, ONNX) for English; one chunk per sentence, the first as soon as it is made."""

    def __init__(self, onnx_path: Path, *, model: str = "piper-en-us-joe-medium") -> None:
        _need(onnx_path, "piper", model)
        from piper import PiperVoice

        self._voice = PiperVoice.load(onnx_path, config_path=onnx_path.with_name(onnx_path.name + ".json"))
        self.sample_rate = int(self._voice.config.sample_rate)
        self.name = f"piper:{model}"
        self.languages: tuple[Language, ...] = ("en",)

    def chunks(self, text: str) -> Iterator[Audio]:
        for chunk in self._voice.synthesize(text):
            yield Audio(chunk.audio_int16_bytes, chunk.sample_rate)

    def synthesize(self, text: str, *, language: Language = "en") -> AsyncIterator[Audio]:
        if language != "en":
            raise EngineError(f"this voice speaks en, not {language}", engine="piper", model=self.name)
        return _stream_thread(lambda: self.chunks(text))


def _trim(samples: Float32, rate: int, threshold: float = 0.01) -> Float32:
    """Cut the model's leading/trailing near-silence (keeps 30 ms), so clause pauses stay short."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    if loud.size == 0:
        return samples[:0]
    pad = int(0.03 * rate)
    return samples[max(0, int(loud[0]) - pad) : int(loud[-1]) + pad]


# Clauses end at punctuation and before a parenthesis: the first clause of
# "您的订单100237（一件冬季外套）已发货。" is ready after 0.9 s of synthesis instead of 1.7 s (2 cores).
_ZH_SPLIT = re.compile(r"(?<=[。！？；!?;，,）)])|(?=[（(])")


class KokoroTTS:
    """Kokoro-82M int8 ONNX with misaki's Mandarin G2P: Mandarin phonemes in a Japanese voice style.

    The only Kokoro voice styles packaged offline are Japanese ones; Whisper understands the result, but
    it is audibly accented (see the README). One chunk per clause, so the first comes early.
    """

    SAMPLE_RATE = 24000
    MAX_TOKENS = 500

    # jm_kumo was the style Whisper understood best in Mandarin (CER 0.14 vs 0.19-0.44 for the four
    # female styles, 3 sentences at 8 kHz; see bench/engines.py).
    def __init__(
        self,
        model_dir: Path,
        *,
        model: str = "kokoro-82m-int8-zh",
        voice: str = "jm_kumo",
        threads: int = 2,
        speed: float = 1.0,
    ) -> None:
        onnx_path = model_dir / "kokoro-v1.0.int8.onnx"
        _need(onnx_path, "kokoro", model)
        import onnxruntime as ort
        from misaki import zh

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._vocab: dict[str, int] = json.loads((model_dir / "vocab.json").read_text(encoding="utf-8"))[
            "vocab"
        ]
        with np.load(model_dir / "voices_ja.npz") as npz:
            if voice not in npz.files:
                raise EngineError(
                    f"voice {voice} not in voices_ja.npz (have {', '.join(npz.files)})",
                    engine="kokoro",
                    model=model,
                )
            self._style = np.asarray(npz[voice], dtype=np.float32)
        self._g2p = zh.ZHG2P()
        self._lock = threading.Lock()
        self.speed = speed
        self.sample_rate = self.SAMPLE_RATE
        self.name = f"kokoro:{model}"
        self.languages: tuple[Language, ...] = ("zh",)

    def _clause_audio(self, clause: str) -> Float32:
        phonemes, _ = self._g2p(clause)
        tokens = [self._vocab[c] for c in phonemes if c in self._vocab][: self.MAX_TOKENS]
        if not tokens:
            return np.zeros(0, np.float32)
        ref = self._style[min(len(tokens), len(self._style)) - 1].reshape(1, 256)
        with self._lock:
            out = self._session.run(
                None,
                {
                    "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                    "style": ref,
                    "speed": np.array([self.speed], dtype=np.float32),
                },
            )[0]
        return _trim(np.asarray(out, dtype=np.float32).ravel(), self.SAMPLE_RATE)

    def chunks(self, text: str) -> Iterator[Audio]:
        clauses = [c.strip() for c in _ZH_SPLIT.split(text) if c.strip()]
        pause = np.zeros(int(0.12 * self.SAMPLE_RATE), np.float32)
        for clause in clauses:
            samples = self._clause_audio(clause)
            if samples.size:
                yield from_float(np.concatenate([samples, pause]), self.SAMPLE_RATE)

    def synthesize(self, text: str, *, language: Language = "zh") -> AsyncIterator[Audio]:
        if language != "zh":
            raise EngineError(f"this voice speaks zh, not {language}", engine="kokoro", model=self.name)
        return _stream_thread(lambda: self.chunks(text))


class MultiTTS:
    """One TTSEngine over per-language voices; output resampled to one rate the caller chose."""

    def __init__(self, voices: dict[str, PiperTTS | KokoroTTS], sample_rate: int = 16000) -> None:
        self._voices = voices
        self.sample_rate = sample_rate
        self.name = "+".join(v.name for v in voices.values())

    async def _run(self, text: str, language: Language) -> AsyncIterator[Audio]:
        from aicc.models.engines.audio import resample

        voice = self._voices.get(language)
        if voice is None:
            raise EngineError(f"no voice for language {language}", engine="tts", model=self.name)
        async for chunk in voice.synthesize(text, language=language):
            yield resample(chunk, self.sample_rate)

    def synthesize(self, text: str, *, language: Language) -> AsyncIterator[Audio]:
        return self._run(text, language)


# --- VAD -------------------------------------------------------------------------------------------


class SileroVAD:
    """Silero VAD v6 (ONNX) frame by frame, with its recurrent state and 64-sample context carried over."""

    sample_rate = 16000
    frame_samples = 512
    CONTEXT = 64

    def __init__(self, onnx_path: Path, *, threshold: float = 0.5, model: str = "silero-vad-v6") -> None:
        _need(onnx_path, "silero", model)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(self.CONTEXT, np.float32)

    def speech_probability(self, frame: bytes) -> SpeechProbability:
        if len(frame) != self.frame_samples * 2:
            raise ValueError(
                f"a frame is {self.frame_samples} samples ({self.frame_samples * 2} bytes) "
                f"at {self.sample_rate} Hz, got {len(frame)} bytes"
            )
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0
        x = np.concatenate([self._context, samples]).reshape(1, -1)
        prob, self._h, self._c = self._session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._context = samples[-self.CONTEXT :]
        p = float(np.asarray(prob).ravel()[0])
        return SpeechProbability(p, p >= self.threshold)

    def speech_spans(self, audio: Audio, min_silence_s: float = 0.3) -> list[tuple[float, float]]:
        """Utterance boundaries (seconds) in a recording: for segmenting before a non-streaming ASR."""
        pcm = from_float(float_at(audio, self.sample_rate), self.sample_rate).pcm
        step = self.frame_samples * 2
        self.reset()
        spans: list[tuple[float, float]] = []
        start: float | None = None
        silence = 0.0
        frame_s = self.frame_samples / self.sample_rate
        for i in range(0, len(pcm) - step + 1, step):
            t = i / 2 / self.sample_rate
            if self.speech_probability(pcm[i : i + step]).is_speech:
                if start is None:
                    start = t
                silence = 0.0
            elif start is not None:
                silence += frame_s
                if silence >= min_silence_s:
                    spans.append((start, t - silence + frame_s))
                    start, silence = None, 0.0
        if start is not None:
            spans.append((start, len(pcm) / 2 / self.sample_rate))
        return spans
