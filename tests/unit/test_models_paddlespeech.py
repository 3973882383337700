"""PaddleSpeech server clients against a small fake server speaking PaddleSpeech's websocket protocol.

The real PaddleSpeech server cannot run on these machines (GPU stack, models on Baidu's CDN); these
tests pin the client to the protocol as paddlespeech/server/ws/{asr,tts}_api.py implement it. The same
client is run against aicc's embedded speech server, with real engines, in the integration tests.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from aicc.models.engines.base import Audio, EngineError
from aicc.models.engines.paddlespeech import PaddleSpeechASR, PaddleSpeechTTS

Handler = Callable[[ServerConnection], Awaitable[None]]


async def fake_asr(ws: ServerConnection) -> None:
    received = 0
    async for msg in ws:
        if isinstance(msg, bytes):
            received += len(msg)
            await ws.send(json.dumps({"result": f"partial {received}"}))
            continue
        data = json.loads(msg)
        if data["signal"] == "start":
            assert data["nbest"] == 1 and data["name"]
            await ws.send(json.dumps({"status": "ok", "signal": "server_ready"}))
        elif data["signal"] == "end":
            await ws.send(
                json.dumps({"status": "ok", "signal": "finished", "result": f"final {received}", "times": []})
            )
            return


async def fake_tts(ws: ServerConnection) -> None:
    async for msg in ws:
        data = json.loads(msg)
        if data.get("signal") == "start":
            await ws.send(json.dumps({"status": 0, "signal": "server ready", "session": "s1"}))
        elif data.get("signal") == "end":
            await ws.send(json.dumps({"status": 0, "signal": "connection will be closed", "session": "s1"}))
            return
        else:
            text = base64.b64decode(data["text"]).decode()
            for i in range(len(text)):
                await ws.send(
                    json.dumps({"status": 1, "audio": base64.b64encode(bytes([i, 0]) * 240).decode()})
                )
            await ws.send(json.dumps({"status": 2, "audio": ""}))


def run_with(handler: Handler, body: Callable[[int], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            return await body(port)

    return asyncio.run(main())


def test_streaming_asr_partials_then_final() -> None:
    audio = Audio(b"\x01\x00" * 8000, 8000)  # 1 s at 8 kHz -> 32000 bytes at 16 kHz

    async def body(port: int) -> list[Any]:
        asr = PaddleSpeechASR("127.0.0.1", port)

        async def chunks() -> AsyncIterator[Audio]:
            yield audio

        return [t async for t in asr.stream(chunks())]

    results = run_with(fake_asr, body)
    assert results[0].text.startswith("partial ") and results[0].confidence == 0.0
    assert results[-1].text == "final 32000" and results[-1].confidence == 1.0
    assert len(results) == 1 + 32000 // (int(0.085 * 16000) * 2) + 1


def test_asr_rejects_a_language_the_server_lacks() -> None:
    async def go() -> None:
        await PaddleSpeechASR("127.0.0.1", 1).transcribe(Audio(b"", 8000), language="en")

    with pytest.raises(EngineError, match="recognises zh, not en"):
        asyncio.run(go())


def test_streaming_tts_chunks_in_order() -> None:
    async def body(port: int) -> list[Audio]:
        tts = PaddleSpeechTTS("127.0.0.1", port)
        return [c async for c in tts.synthesize("你好吗", language="zh")]

    chunks = run_with(fake_tts, body)
    assert [c.pcm[0] for c in chunks] == [0, 1, 2]
    assert all(c.sample_rate == 24000 and len(c.pcm) == 480 for c in chunks)


async def garbage(ws: ServerConnection) -> None:
    await ws.recv()
    await ws.send("this is not json")


async def silent(ws: ServerConnection) -> None:
    await ws.recv()
    await asyncio.sleep(5)


async def bad_audio(ws: ServerConnection) -> None:
    await ws.recv()
    await ws.send(json.dumps({"status": 0, "signal": "server ready", "session": "s"}))
    await ws.recv()
    await ws.send(json.dumps({"status": 1, "audio": "%%%not base64"}))


@pytest.mark.parametrize(
    ("handler", "message"),
    [(garbage, "not JSON"), (silent, "within 0.3s"), (bad_audio, "not base64")],
)
def test_tts_errors_name_engine_model_and_host(handler: Handler, message: str) -> None:
    async def body(port: int) -> None:
        tts = PaddleSpeechTTS("127.0.0.1", port, timeout_s=0.3)
        async for _ in tts.synthesize("你好", language="zh"):
            pass

    with pytest.raises(EngineError) as err:
        run_with(handler, body)
    text = str(err.value)
    assert message in text and "engine paddlespeech-tts" in text and "host 127.0.0.1" in text
    assert "model paddlespeech-fastspeech2-cnndecoder-csmsc-zh" in text


def test_connection_refused_is_an_engine_error() -> None:
    async def go() -> None:
        await PaddleSpeechASR("127.0.0.1", 1, timeout_s=1).transcribe(Audio(b"\x00\x00" * 80, 8000))

    with pytest.raises(EngineError, match="cannot connect"):
        asyncio.run(go())
