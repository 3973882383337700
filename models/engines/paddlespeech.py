"""Clients for the PaddleSpeech server (production [speech] hosts): streaming ASR and streaming TTS.

Protocols as PaddleSpeech's server implements them (paddlespeech/server/ws/asr_api.py, tts_api.py):
- ASR  ws://HOST:PORT/paddlespeech/asr/streaming: JSON {"name","signal":"start","nbest":1} ->
  {"status":"ok","signal":"server_ready"}; binary 16 kHz s16le chunks -> {"result": partial};
  {"signal":"end"} -> {"status":"ok","signal":"finished","result": final,"times":[...]}.
- TTS  ws://HOST:PORT/paddlespeech/tts/streaming: {"task":"tts","signal":"start"} -> {"status":0,
  "signal":"server ready","session"}; {"text": base64(utf-8 text),"spk_id":0} -> {"status":1,"audio":
  base64 s16le} ... {"status":2}; {"task":"tts","signal":"end"} -> {"status":0,...}.
PaddleSpeech cannot run on the development machines (no GPU, 2.7 GB of dependencies, models only on
Baidu's CDN): these clients are tested against a small fake server in unit tests only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from aicc.models.engines.audio import resample
from aicc.models.engines.base import Audio, EngineError, Language, Transcript

ASR_RATE = 16000
CHUNK_S = 0.085  # PaddleSpeech's own client sends 85 ms chunks to the streaming conformer


class PaddleSpeechASR:
    """Streaming Mandarin ASR over the PaddleSpeech websocket."""

    def __init__(
        self,
        host: str,
        port: int = 8090,
        *,
        model: str = "paddlespeech-conformer-online-wenetspeech-zh",
        timeout_s: float = 10.0,
        languages: tuple[Language, ...] = ("zh",),
    ) -> None:
        # languages: ("zh",) for PaddleSpeech's conformer; ("zh", "en") for aicc's embedded speech server,
        # which reads the extra "lang" field PaddleSpeech ignores.
        self.languages = languages
        self.url = f"ws://{host}:{port}/paddlespeech/asr/streaming"
        self.host = host
        self.model = model
        self.timeout_s = timeout_s
        self.name = f"paddlespeech:{model}"

    def _error(self, message: str) -> EngineError:
        return EngineError(message, engine="paddlespeech-asr", model=self.model, host=self.host)

    async def _recv(self, ws: ClientConnection) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await ws.recv()
        except TimeoutError as exc:
            raise self._error(f"no answer within {self.timeout_s}s") from exc
        try:
            data = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise self._error(f"answer is not JSON: {str(raw)[:120]!r}") from exc
        if not isinstance(data, dict):
            raise self._error("answer is not a JSON object")
        return data

    async def stream(
        self, chunks: AsyncIterator[Audio], language: Language = "zh"
    ) -> AsyncIterator[Transcript]:
        """Partial transcripts while audio flows in; the last one yielded is final (confidence 1)."""
        name = uuid.uuid4().hex
        try:
            async with asyncio.timeout(self.timeout_s):
                ws = await websockets.connect(self.url, max_size=2**22)
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            raise self._error(f"cannot connect to {self.url}: {exc}") from exc
        async with ws:
            await ws.send(json.dumps({"name": name, "signal": "start", "nbest": 1, "lang": language}))
            ready = await self._recv(ws)
            if ready.get("signal") != "server_ready":
                raise self._error(f"server not ready: {ready}")
            async for chunk in chunks:
                pcm = resample(chunk, ASR_RATE).pcm
                step = int(CHUNK_S * ASR_RATE) * 2
                for i in range(0, len(pcm), step):
                    await ws.send(pcm[i : i + step])
                    partial = await self._recv(ws)
                    text = partial.get("result")
                    if isinstance(text, str) and text:
                        yield Transcript(text, language, 0.0)
            await ws.send(json.dumps({"name": name, "signal": "end", "nbest": 1}))
            final = await self._recv(ws)
            if final.get("signal") != "finished" or not isinstance(final.get("result"), str):
                raise self._error(f"no final result: {str(final)[:200]}")
            yield Transcript(final["result"], language, 1.0)

    async def transcribe(self, audio: Audio, *, language: Language | None = None) -> Transcript:
        lang: Language = language or self.languages[0]
        if lang not in self.languages:
            raise self._error(f"this server recognises {', '.join(self.languages)}, not {lang}")

        async def one() -> AsyncIterator[Audio]:
            yield audio

        last: Transcript | None = None
        async for t in self.stream(one(), lang):
            last = t
        assert last is not None  # stream() always ends with the final transcript or raises
        return last


class PaddleSpeechTTS:
    """Streaming TTS over the PaddleSpeech websocket; chunks are 16-bit PCM at the voice's rate."""

    def __init__(
        self,
        host: str,
        port: int = 8092,
        *,
        sample_rate: int = 24000,
        model: str = "paddlespeech-fastspeech2-cnndecoder-csmsc-zh",
        timeout_s: float = 10.0,
        languages: tuple[Language, ...] = ("zh",),
    ) -> None:
        self.languages = languages
        self.url = f"ws://{host}:{port}/paddlespeech/tts/streaming"
        self.host = host
        self.model = model
        self.sample_rate = sample_rate
        self.timeout_s = timeout_s
        self.name = f"paddlespeech:{model}"

    def _error(self, message: str) -> EngineError:
        return EngineError(message, engine="paddlespeech-tts", model=self.model, host=self.host)

    async def _recv(self, ws: ClientConnection) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await ws.recv()
            data = json.loads(raw)
        except TimeoutError as exc:
            raise self._error(f"no audio within {self.timeout_s}s") from exc
        except (TypeError, ValueError) as exc:
            raise self._error("answer is not JSON") from exc
        if not isinstance(data, dict):
            raise self._error("answer is not a JSON object")
        return data

    async def _run(self, text: str, language: Language) -> AsyncIterator[Audio]:
        try:
            async with asyncio.timeout(self.timeout_s):
                ws = await websockets.connect(self.url, max_size=2**24)
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            raise self._error(f"cannot connect to {self.url}: {exc}") from exc
        async with ws:
            await ws.send(json.dumps({"task": "tts", "signal": "start"}))
            ready = await self._recv(ws)
            if ready.get("status") != 0 or ready.get("signal") != "server ready":
                raise self._error(f"server not ready: {ready}")
            encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
            await ws.send(json.dumps({"text": encoded, "spk_id": 0, "lang": language}))
            while True:
                msg = await self._recv(ws)
                status = msg.get("status")
                if status == 2:
                    break
                if status != 1:
                    raise self._error(f"unexpected message: {str(msg)[:200]}")
                try:
                    pcm = base64.b64decode(msg.get("audio") or "", validate=True)
                except ValueError as exc:
                    raise self._error("audio is not base64") from exc
                if len(pcm) % 2:
                    raise self._error("audio chunk is not 16-bit PCM")
                if pcm:
                    yield Audio(pcm, self.sample_rate)
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(json.dumps({"task": "tts", "signal": "end"}))
                await self._recv(ws)

    def synthesize(self, text: str, *, language: Language = "zh") -> AsyncIterator[Audio]:
        if language not in self.languages:
            raise self._error(f"this server speaks {', '.join(self.languages)}, not {language}")
        return self._run(text, language)
