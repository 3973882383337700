"""One OpenAI-compatible chat client for vLLM (production) and llama.cpp's llama-server (embedded).

Both servers speak POST /v1/chat/completions with SSE streaming and `response_format` json_schema
(vLLM: guided decoding; llama.cpp: schema -> grammar), so the embedded tests run the production code.
Several base URLs are load-balanced round-robin, with fail-over to the next on connection errors.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from aicc.models.engines.base import ChatMessage, EngineError, LLMDelta


@dataclass
class Timing:
    """Client-side timings of the last request (the bench and the metrics read them)."""

    first_token_s: float | None = None
    total_s: float | None = None
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    server: dict[str, Any] = field(default_factory=dict)


def _message(m: ChatMessage) -> dict[str, Any]:
    d: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name:
        d["name"] = m.name
    return d


class OpenAICompatClient:
    """An LLMClient over an OpenAI-compatible server (or several behind round-robin)."""

    def __init__(
        self,
        base_urls: str | Sequence[str],
        model: str,
        *,
        engine: str = "llamacpp",
        api_key: str | None = None,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 3.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("at least one base URL is needed")
        self.base_urls = [u.rstrip("/") for u in urls]
        self.model = model
        self.engine = engine
        self._cycle = itertools.cycle(range(len(self.base_urls)))
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Read timeout bounds the gap between streamed tokens, so a stalled server fails fast, not hangs.
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=transport,
        )
        self.last = Timing()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> OpenAICompatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _error(self, message: str, url: str) -> EngineError:
        host = httpx.URL(url).host or url
        return EngineError(message, engine=self.engine, model=self.model, host=host)

    def _order(self) -> list[str]:
        start = next(self._cycle)
        return self.base_urls[start:] + self.base_urls[:start]

    def _body(self, messages: Sequence[ChatMessage], **extra: Any) -> dict[str, Any]:
        return {"model": self.model, "messages": [_message(m) for m in messages], **extra}

    async def _post(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        last_exc: Exception | None = None
        for base in self._order():
            url = f"{base}/v1/chat/completions"
            try:
                resp = await self._client.post(url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last_exc = self._error(f"cannot connect: {exc}", base)
                continue
            except httpx.TimeoutException as exc:
                raise self._error(f"timed out after {self._client.timeout.read}s", base) from exc
            if resp.status_code >= 400:
                raise self._error(f"HTTP {resp.status_code}: {resp.text[:300]}", base)
            try:
                data = resp.json()
            except ValueError as exc:
                raise self._error(f"answer is not JSON: {resp.text[:200]!r}", base) from exc
            if not isinstance(data, dict):
                raise self._error("answer is not a JSON object", base)
            return base, data
        assert last_exc is not None
        raise last_exc

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int = 256,
        temperature: float = 0.2,
        response_format: dict[str, Any] | None = None,
    ) -> AsyncIterator[LLMDelta]:
        body = self._body(
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            stream=True,
            stream_options={"include_usage": True},
        )
        if response_format is not None:
            body["response_format"] = response_format
        self.last = Timing()
        t0 = time.perf_counter()
        last_exc: Exception | None = None
        for base in self._order():
            url = f"{base}/v1/chat/completions"
            try:
                async with self._client.stream("POST", url, json=body) as resp:
                    if resp.status_code >= 400:
                        text = (await resp.aread()).decode(errors="replace")
                        raise self._error(f"HTTP {resp.status_code}: {text[:300]}", base)
                    async for delta in self._sse(resp, base, t0):
                        yield delta
                self.last.total_s = time.perf_counter() - t0
                return
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last_exc = self._error(f"cannot connect: {exc}", base)
                continue
            except httpx.TimeoutException as exc:
                raise self._error("timed out waiting for the next token", base) from exc
        assert last_exc is not None
        raise last_exc

    async def _sse(self, resp: httpx.Response, base: str, t0: float) -> AsyncIterator[LLMDelta]:
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue  # SSE comments and blank keep-alives
            payload = line[5:].strip()
            if payload == "[DONE]":
                return
            try:
                event = json.loads(payload)
            except ValueError as exc:
                raise self._error(f"garbled stream event: {payload[:120]!r}", base) from exc
            if usage := event.get("usage"):
                self._usage(usage)
            if "timings" in event:
                self.last.server = event["timings"]
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                text = delta.get("content") or ""
                finish = choice.get("finish_reason")
                if text and self.last.first_token_s is None:
                    self.last.first_token_s = time.perf_counter() - t0
                if text or finish:
                    yield LLMDelta(text=text, finish_reason=finish)

    def _usage(self, usage: dict[str, Any]) -> None:
        self.last.completion_tokens = usage.get("completion_tokens")
        self.last.prompt_tokens = usage.get("prompt_tokens")
        details = usage.get("prompt_tokens_details") or {}
        self.last.cached_tokens = details.get("cached_tokens")

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int = 256,
        temperature: float = 0.2,
        response_format: dict[str, Any] | None = None,
    ) -> str:
        body = self._body(messages, max_tokens=max_tokens, temperature=temperature)
        if response_format is not None:
            body["response_format"] = response_format
        self.last = Timing()
        t0 = time.perf_counter()
        base, data = await self._post(body)
        self.last.total_s = time.perf_counter() - t0
        if usage := data.get("usage"):
            self._usage(usage)
        self.last.server = data.get("timings") or {}
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise self._error(f"answer has no message content: {str(data)[:200]}", base) from exc
        if not isinstance(content, str):
            raise self._error("message content is not text", base)
        return content

    async def complete_json(
        self,
        messages: Sequence[ChatMessage],
        schema: dict[str, Any],
        *,
        max_tokens: int = 512,
        on_text: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Constrained by the server to `schema`; the result is parsed, not trusted (callers validate).

        With `on_text` the answer is streamed and on_text sees the text so far after every token, so a
        caller can act on its first fields before the rest is generated."""
        fmt = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": schema}}
        if on_text is None:
            text = await self.complete(messages, max_tokens=max_tokens, temperature=0.0, response_format=fmt)
        else:
            text = ""
            async for delta in self.stream_chat(
                messages, max_tokens=max_tokens, temperature=0.0, response_format=fmt
            ):
                if delta.text:
                    text += delta.text
                    on_text(text)
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise self._error(
                f"constrained answer is not JSON (truncated at max_tokens={max_tokens}?): {text[:200]!r}",
                self.base_urls[0],
            ) from exc
        if not isinstance(value, dict):
            raise self._error("constrained answer is not a JSON object", self.base_urls[0])
        return value
