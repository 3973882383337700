"""The embedded speech server: PaddleSpeech's websocket protocol, served by the embedded CPU engines.

[speech] hosts without a GPU run this instead of the PaddleSpeech server, so the voice bot has one
client (aicc.models.engines.paddlespeech) for both, as it has one LLM client for vLLM and llama-server.
- /paddlespeech/asr/streaming: Silero VAD cuts utterances, faster-whisper transcribes each one (Whisper
  does not stream). Extension: the start message may carry "lang" ("zh" default, or "en").
- /paddlespeech/tts/streaming: piper (en) or Kokoro (zh), chosen by "lang" in the text message or by
  the text itself; PCM chunks resampled to --tts-rate (24000 like PaddleSpeech's CSMSC voice).
- GET /health, GET /metrics (Prometheus).

Run: python -m aicc.models.speech_server --host ADDR --port 8090 --store /var/lib/aicc/models
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from aicc.models.catalog import load_catalog
from aicc.models.engines.audio import resample
from aicc.models.engines.base import Audio, Language
from aicc.models.engines.embedded import KokoroTTS, PiperTTS, SileroVAD, WhisperASR
from aicc.models.store import DEFAULT_STORE, model_dir

log = logging.getLogger("aicc.speech")
ASR_RATE = 16000
UTTERANCE_END_S = 0.5
PREROLL_FRAMES = 20  # 640 ms at 16 kHz
_CJK = re.compile(r"[\u4e00-\u9fff]")

REGISTRY = CollectorRegistry()
ASR_SECONDS = Histogram(
    "aicc_speech_asr_seconds", "Time to transcribe one utterance", ["language"], registry=REGISTRY
)
TTS_FIRST = Histogram(
    "aicc_speech_tts_first_chunk_seconds", "Time to the first TTS chunk", ["language"], registry=REGISTRY
)
ERRORS = Counter("aicc_speech_errors_total", "Requests that failed", ["endpoint"], registry=REGISTRY)


@dataclass
class Engines:
    asr: WhisperASR
    vad_path: Path
    tts: dict[str, PiperTTS | KokoroTTS]
    tts_rate: int


def load_engines(store: Path, tts_rate: int = 24000, threads: int = 2) -> Engines:
    cat = load_catalog()
    asr = WhisperASR(model_dir(store, cat.default("asr", "zh")), threads=threads)
    vad = cat.default("vad", "zh")
    en = cat.default("tts", "en")
    zh = cat.default("tts", "zh")
    return Engines(
        asr=asr,
        vad_path=model_dir(store, vad) / vad.files[0].path,
        tts={
            "en": PiperTTS(model_dir(store, en) / en.files[0].path, model=en.name),
            "zh": KokoroTTS(model_dir(store, zh), model=zh.name, threads=threads),
        },
        tts_rate=tts_rate,
    )


def _lang(value: Any, text: str = "") -> Language:
    if value in ("zh", "en"):
        return "zh" if value == "zh" else "en"
    return "zh" if _CJK.search(text) else "en"


class AsrSession:
    """One websocket's audio: VAD-segmented, each finished utterance transcribed in a worker thread."""

    def __init__(self, engines: Engines, language: Language) -> None:
        self.engines = engines
        self.language = language
        self.vad = SileroVAD(engines.vad_path)
        self.pending = b""
        self.utterance = bytearray()
        self.silence_s = 0.0
        self.texts: list[str] = []
        self.times: list[dict[str, Any]] = []
        self.offset_s = 0.0
        self.start_s: float | None = None
        # VAD fires into a word, up to half a second late on a stream's first short word ("Is there
        # anything..." lost "Is there"): keep the audio before it, or onsets are clipped.
        self.preroll: deque[bytes] = deque(maxlen=PREROLL_FRAMES)

    def joined(self) -> str:
        return ("" if self.language == "zh" else " ").join(self.texts)

    async def feed(self, pcm: bytes) -> None:
        self.pending += pcm
        step = self.vad.frame_samples * 2
        frame_s = self.vad.frame_samples / ASR_RATE
        while len(self.pending) >= step:
            frame, self.pending = self.pending[:step], self.pending[step:]
            speech = self.vad.speech_probability(frame).is_speech
            if speech:
                if self.start_s is None:
                    self.start_s = max(0.0, self.offset_s - len(self.preroll) * frame_s)
                    self.utterance += b"".join(self.preroll)
                    self.preroll.clear()
                self.silence_s = 0.0
                self.utterance += frame
            elif self.utterance:
                self.utterance += frame
                self.silence_s += frame_s
                if self.silence_s >= UTTERANCE_END_S:
                    await self._flush()
            else:
                self.preroll.append(frame)
            self.offset_s += frame_s

    async def _flush(self) -> None:
        if not self.utterance:
            return
        audio = Audio(bytes(self.utterance), ASR_RATE)
        start = self.start_s or 0.0
        self.utterance.clear()
        self.silence_s = 0.0
        self.start_s = None
        t0 = time.perf_counter()
        result = await self.engines.asr.transcribe(audio, language=self.language)
        ASR_SECONDS.labels(self.language).observe(time.perf_counter() - t0)
        if result.text:
            self.texts.append(result.text)
            self.times.append(
                {"bg": round(start, 3), "ed": round(start + audio.duration_s, 3), "w": result.text}
            )

    async def finish(self) -> None:
        self.utterance += self.pending
        self.pending = b""
        await self._flush()


async def _send(ws: ServerConnection, data: dict[str, Any]) -> None:
    await ws.send(json.dumps(data, ensure_ascii=False))


async def asr_handler(ws: ServerConnection, engines: Engines) -> None:
    session: AsrSession | None = None
    async for message in ws:
        if isinstance(message, bytes):
            if session is None:
                await _send(ws, {"status": "error", "message": "send the start signal first"})
                continue
            if len(message) % 2:
                await _send(ws, {"status": "error", "message": "audio must be 16-bit PCM"})
                continue
            await session.feed(message)
            await _send(ws, {"result": session.joined()})
            continue
        try:
            msg = json.loads(message)
        except ValueError:
            await _send(ws, {"status": "ok", "message": "no valid json data"})
            continue
        signal = msg.get("signal") if isinstance(msg, dict) else None
        if signal == "start":
            session = AsrSession(engines, _lang(msg.get("lang"), "") if msg.get("lang") else "zh")
            await _send(ws, {"status": "ok", "signal": "server_ready"})
        elif signal == "end" and session is not None:
            await session.finish()
            await _send(
                ws, {"status": "ok", "signal": "finished", "result": session.joined(), "times": session.times}
            )
            return
        else:
            await _send(ws, {"status": "ok", "message": "no valid json data"})


async def tts_handler(ws: ServerConnection, engines: Engines) -> None:
    session: str | None = None
    async for message in ws:
        try:
            msg = json.loads(message)
            if not isinstance(msg, dict):
                raise ValueError("not an object")
        except ValueError:
            await _send(ws, {"status": -1, "message": "no valid json data"})
            continue
        if msg.get("signal") == "start":
            session = f"{time.time_ns():x}"
            await _send(ws, {"status": 0, "signal": "server ready", "session": session})
            continue
        if msg.get("signal") == "end":
            await _send(ws, {"status": 0, "signal": "connection will be closed", "session": session or ""})
            return
        if session is None or not isinstance(msg.get("text"), str):
            await _send(ws, {"status": -1, "message": "send the start signal, then text"})
            continue
        try:
            text = base64.b64decode(msg["text"], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            await _send(ws, {"status": -1, "message": "text must be base64 of UTF-8"})
            continue
        language = _lang(msg.get("lang"), text)
        t0 = time.perf_counter()
        first = True
        async for chunk in engines.tts[language].synthesize(text, language=language):
            if first:
                TTS_FIRST.labels(language).observe(time.perf_counter() - t0)
                first = False
            out = resample(chunk, engines.tts_rate)
            await _send(ws, {"status": 1, "audio": base64.b64encode(out.pcm).decode("ascii")})
        await _send(ws, {"status": 2, "audio": ""})


def _http(request: Request) -> Response | None:
    """Plain HTTP for health and metrics; websocket upgrades pass through."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return None
    if request.path == "/health":
        return Response(HTTPStatus.OK, "OK", Headers([("Content-Type", "text/plain")]), b"ok\n")
    if request.path == "/metrics":
        return Response(
            HTTPStatus.OK, "OK", Headers([("Content-Type", CONTENT_TYPE_LATEST)]), generate_latest(REGISTRY)
        )
    return Response(
        HTTPStatus.NOT_FOUND, "Not Found", Headers([("Content-Type", "text/plain")]), b"not found\n"
    )


async def serve_forever(host: str, port: int, engines: Engines, ready: asyncio.Event | None = None) -> None:
    async def route(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request else ""
        endpoint = "asr" if path == "/paddlespeech/asr/streaming" else "tts"
        try:
            if path == "/paddlespeech/asr/streaming":
                await asr_handler(ws, engines)
            elif path == "/paddlespeech/tts/streaming":
                await tts_handler(ws, engines)
            else:
                await ws.close(1008, "unknown path")
        except ConnectionClosed:
            pass  # the caller hung up (barge-in, end of call): nothing to answer
        except Exception:
            ERRORS.labels(endpoint).inc()
            log.exception("speech request failed")
            await ws.close(1011, "engine error")

    async with serve(route, host, port, process_request=lambda _c, r: _http(r), max_size=2**22) as server:
        if ready is not None:
            ready.set()
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", required=True, help="the host's service address (never 0.0.0.0)")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--store", type=Path, default=DEFAULT_STORE)
    p.add_argument("--tts-rate", type=int, default=24000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    engines = load_engines(args.store, args.tts_rate, args.threads)
    log.info("serving ASR and TTS on %s:%d", args.host, args.port)
    asyncio.run(serve_forever(args.host, args.port, engines))


if __name__ == "__main__":
    main()
