"""Fake engines and a fake connector for the voice unit tests (fakes live only in tests).

The fake VAD calls loud frames speech; the fake ASR maps an utterance's tone frequency to a scripted
transcript; the fake TTS answers with a tone whose length follows the text; the fake LLM plans from
a table keyed by the caller's words. The fake connector has two of the retail tools; the shipped
retail definition runs on it (the dialogue manager offers the tools both have).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np
import pytest

from aicc.appliance.bots.definition import BotDefinition, shipped_definitions
from aicc.appliance.connectors.base import Connector, ConnectorError
from aicc.appliance.voice.audio import rms, tone
from aicc.models.engines.base import (
    Audio,
    ChatMessage,
    EngineError,
    Language,
    LLMDelta,
    SpeechProbability,
    ToolSpec,
    Transcript,
)

RATE = 16000
RETAIL = shipped_definitions()["retail"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeVAD:
    sample_rate = RATE
    frame_samples = 320  # 20 ms

    def speech_probability(self, frame: bytes) -> SpeechProbability:
        level = rms(frame)
        return SpeechProbability(min(1.0, level / 3000), level > 800)


def dominant_hz(pcm: bytes, rate: int) -> int:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x))
    return int(round(np.argmax(spectrum) * rate / len(x) / 50) * 50)


class FakeASR:
    """Transcribes by the tone frequency: scripts map Hz -> (text, language, confidence)."""

    name = "fake-asr"

    def __init__(self, scripts: dict[int, tuple[str, str, float]], fail: bool = False) -> None:
        self.scripts = scripts
        self.fail = fail
        self.calls: list[Language | None] = []

    async def transcribe(self, audio: Audio, *, language: Language | None = None) -> Transcript:
        self.calls.append(language)
        if self.fail:
            raise EngineError("asr down", engine="fake-asr")
        hz = dominant_hz(audio.pcm, audio.sample_rate)
        text, lang, conf = self.scripts.get(hz, ("", "en", 0.0))
        return Transcript(text=text, language=lang, confidence=conf)


class FakeTTS:
    name = "fake-tts"
    sample_rate = 22050

    def __init__(self, fail: bool = False, seconds_per_char: float = 0.02) -> None:
        self.fail = fail
        self.seconds_per_char = seconds_per_char
        self.spoken: list[tuple[str, Language]] = []

    async def synthesize(self, text: str, *, language: Language) -> AsyncIterator[Audio]:
        if self.fail:
            raise EngineError("tts down", engine="fake-tts")
        self.spoken.append((text, language))
        total = max(0.2, len(text) * self.seconds_per_char)
        pcm = tone(440, total, self.sample_rate, amplitude=0.5)
        step = self.sample_rate // 5 * 2
        for i in range(0, len(pcm), step):
            await asyncio.sleep(0)
            yield Audio(pcm[i : i + step], self.sample_rate)


class FakeLLM:
    model = "fake-llm"

    def __init__(
        self,
        plans: dict[str, dict[str, Any]],
        chat: str | Callable[[Sequence[ChatMessage]], str] = "We are open nine to six.",
        fail: bool = False,
        token_s: float = 0.0,
    ) -> None:
        self.plans = plans
        self.chat_answer = chat
        self.fail = fail
        self.token_s = token_s  # plans: seconds per 4-character "token"
        self.schemas: list[dict[str, Any]] = []
        self.requests: list[list[ChatMessage]] = []
        self.chat_requests: list[list[ChatMessage]] = []

    async def complete_json(
        self,
        messages: Sequence[ChatMessage],
        schema: dict[str, Any],
        *,
        max_tokens: int = 512,
        on_text: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        self.schemas.append(schema)
        self.requests.append(list(messages))
        if self.fail:
            raise EngineError("llm down", engine="fake-llm")
        said = messages[-1].content
        plan = next((p for key, p in self.plans.items() if key in said), {"intent": "unclear", "actions": []})
        text = json.dumps(plan, separators=(",", ":"), ensure_ascii=False)
        for end in range(4, len(text) + 4, 4):  # generated token by token, streamed or not
            await asyncio.sleep(self.token_s)
            if on_text is not None:
                on_text(text[:end])
        return plan

    async def stream_chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int = 256, temperature: float = 0.2
    ) -> AsyncIterator[LLMDelta]:
        self.chat_requests.append(list(messages))
        if self.fail:
            raise EngineError("llm down", engine="fake-llm")
        answer = self.chat_answer if isinstance(self.chat_answer, str) else self.chat_answer(messages)
        for word in answer.split(" "):
            yield LLMDelta(word + " ")


ORDER = {"type": "string", "pattern": "^[0-9]{6}$"}


class FakeConnector:
    name = "fake"

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.addresses: dict[str, str] = {"100234": "old street"}

    def tools(self) -> list[ToolSpec]:
        one = {
            "type": "object",
            "properties": {"order_id": ORDER},
            "required": ["order_id"],
            "additionalProperties": False,
        }
        addr = {
            "type": "object",
            "properties": {"order_id": ORDER, "new_address": {"type": "string", "minLength": 4}},
            "required": ["order_id", "new_address"],
            "additionalProperties": False,
        }
        return [
            ToolSpec("get_order_status", "status", one),
            ToolSpec("change_address", "address", addr, write=True),
        ]

    async def call(self, tool: str, arguments: dict[str, Any], *, caller: str, **_: Any) -> dict[str, Any]:
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise ConnectorError("backend down", kind="unavailable")
        self.calls.append((tool, arguments))
        if arguments["order_id"] != "100234":
            raise ConnectorError("no such order", kind="not_found")
        if tool == "change_address":
            self.addresses[arguments["order_id"]] = arguments["new_address"]
            return {"changed": True}
        return {"status": "shipped"}

    def describe(
        self, tool: str, arguments: dict[str, Any], result: dict[str, Any], language: Language
    ) -> str:
        if tool == "get_order_status":
            return (
                f"订单{arguments['order_id']}已发货。"
                if language == "zh"
                else f"Order {arguments['order_id']} has shipped."
            )
        return "地址已修改。" if language == "zh" else "Address changed."

    def confirm_line(self, tool: str, arguments: dict[str, Any], language: Language) -> str:
        return (
            "确认修改地址吗？" if language == "zh" else f"Change the address to {arguments['new_address']}?"
        )

    def not_found_line(self, tool: str, arguments: dict[str, Any], language: Language) -> str:
        return "没有找到订单。" if language == "zh" else "I couldn't find that order."

    def plan_examples(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (
                "status of order 555001",
                {
                    "intent": "tools",
                    "actions": [{"tool": "get_order_status", "arguments": {"order_id": "555001"}}],
                },
            ),
            ("refund 555002", {"intent": "tools", "actions": [{"tool": "refund", "arguments": {}}]}),
        ]


def retail_on(connector: Connector) -> dict[str, tuple[BotDefinition, Connector]]:
    """The dialogue manager's bots: the shipped retail bot on `connector`."""
    return {"retail": (RETAIL, connector)}
