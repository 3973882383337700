"""The voice bot on the lab: real calls from the installer host through Kamailio and rtpengine to the
[voicebot] hosts, with the embedded engines and the demo backend on the [db] host.

Needs the lab converged with the voicebot role (installed_site). Under CI=true a missing lab or
voicebot host fails these tests; they never skip.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest

from aicc.appliance.voice import dialog as dlg
from aicc.appliance.voice.audio import rms
from aicc.appliance.voice.caller import Caller
from aicc.appliance.voice.dialogue import PROMPTS
from aicc.appliance.voice.transport import Addr, SipTransport
from aicc.installer.smoke import SmokeParams, local_ip_towards, run_smoke
from tests.integration.site_fixture import InstalledSite

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def proxy_of(site: InstalledSite) -> Addr:
    return site.address_of("sip_proxy"), 5060


def sql(site: InstalledSite, query: str) -> list[dict[str, Any]]:
    db = site.hosts_in("db")[0]
    cmd = f"runuser -u postgres -- psql -d aicc -AtXc \"SELECT coalesce(json_agg(t), '[]') FROM ({query}) t\""
    res = site.ssh(db, cmd)
    assert res.returncode == 0, res.stderr
    rows: list[dict[str, Any]] = json.loads(res.stdout.strip() or "[]")
    return rows


def tool_calls(site: InstalledSite, call_id: str) -> list[dict[str, Any]]:
    return sql(
        site,
        f"SELECT tool, arguments, ok, confirmed FROM aicc.call_tool_calls WHERE call_id = '{call_id}' "
        "ORDER BY seq",
    )


@pytest.fixture(scope="module")
def voicebot(installed_site: InstalledSite) -> InstalledSite:
    assert installed_site.hosts_in("voicebot"), "the lab inventory has no [voicebot] host"
    return installed_site


async def converse(
    site: InstalledSite,
    number: str,
    turns: list[str],
    lang: str,
    *,
    repeat_when_asked: bool = False,
    caller_number: str = "smoke",
) -> tuple[Caller, list[str]]:
    """Call, wait for the greeting, say each turn (local TTS), transcribe each reply (local ASR).

    With repeat_when_asked, a turn the bot did not catch ("Sorry..." / "抱歉...") is said once more, as
    a caller would: Whisper base over G.711 now and then mishears a whole request (1 call in about 10)."""
    from aicc.installer.smoke import _open_asr, _open_tts, _transcribe, wait_quiet

    tts = await asyncio.to_thread(_open_tts, SmokeParams.model_store, lang)  # type: ignore[arg-type]
    asr = await asyncio.to_thread(_open_asr, SmokeParams.model_store)
    proxy = proxy_of(site)
    caller = Caller(local_ip=local_ip_towards(*proxy), number=caller_number)
    await caller.start()
    replies: list[str] = []
    await caller.call(f"sip:{number}@aicc.local", proxy)
    await wait_quiet(caller, time.monotonic(), timeout=30)
    queue = list(turns)
    repeats = 1 if repeat_when_asked else 0
    while queue:
        text = queue.pop(0)
        parts = [c async for c in tts.synthesize(text, language=lang)]
        caller.play(b"".join(p.pcm for p in parts), parts[0].sample_rate)
        end = await caller.played()
        start, stop = await wait_quiet(caller, end, timeout=90)
        pcm = b"".join(
            f for at, f in caller.heard.frames if start is not None and start - 0.1 <= at <= stop + 0.1
        )
        replies.append(await _transcribe(asr, pcm, caller.sample_rate, lang))  # type: ignore[arg-type]
        if repeats and re.search(r"sorry|抱歉", replies[-1], re.IGNORECASE):
            repeats -= 1
            queue.insert(0, text)
    return caller, replies


def call_lines(site: InstalledSite, call_id: str) -> list[dict[str, Any]]:
    """Both sides of a call's transcript as stored (the gateway stores it just after the BYE)."""
    for _ in range(20):
        rows = sql(
            site, f"SELECT speaker, text FROM aicc.call_lines WHERE call_id = '{call_id}' ORDER BY seq"
        )
        if rows:
            return rows
        time.sleep(0.5)
    return []


def test_smoke_verb_gets_the_demo_order_status(voicebot: InstalledSite) -> None:
    params = SmokeParams(proxy=proxy_of(voicebot), target="sip:4000@aicc.local", lang="en")
    result = asyncio.run(run_smoke(params))
    lines = call_lines(voicebot, result.call_id)
    calls = tool_calls(voicebot, result.call_id)
    # On failure: what the caller heard, what the bot meant to say and did, to tell ASR from dialogue.
    story = f"heard {result.reply!r}; stored transcript {lines}; tool calls {calls}"
    assert result.ok, f"{result.problem}: {story}"
    assert [(c["tool"], c["arguments"], c["ok"]) for c in calls] == [
        ("get_order_status", {"order_id": "100234"}, True)
    ], story
    assert result.setup_s is not None and result.setup_s < 3.0
    # The caller heard the hold line while the bot looked the order up, then the answer.
    bot_said = [ln["text"] for ln in lines if ln["speaker"] == "bot"]
    assert PROMPTS["hold"]["en"] in bot_said, story
    # (A lookup longer than a second has the progress line between them.)
    after_hold = [
        t for t in bot_said[bot_said.index(PROMPTS["hold"]["en"]) + 1 :] if t != PROMPTS["progress"]["en"]
    ]
    assert "100234" in after_hold[0], story
    turns = sql(
        voicebot, f"SELECT stages FROM aicc.call_turns WHERE call_id = '{result.call_id}' ORDER BY turn"
    )
    assert 0 < turns[0]["stages"]["hold"] < turns[0]["stages"]["turn"], turns


@pytest.mark.parametrize(
    ("number", "lang", "turns", "order"),
    [
        (
            "4000",
            "en",
            [
                "What is the status of order 1 0 0 2 3 6, and please change its delivery address to "
                "8 Nanjing Road, Shanghai.",
                "Yes, go ahead.",
            ],
            "100236",
        ),
        (
            "4001",
            "zh",
            ["查询订单一零零二三七的状态，再把收货地址改成上海市南京路八号。", "可以，就这么改。"],
            "100237",
        ),
    ],
)
def test_compound_request_runs_every_tool_after_confirmation(
    voicebot: InstalledSite, number: str, lang: str, turns: list[str], order: str
) -> None:
    async def run() -> str:
        caller, _ = await converse(voicebot, number, turns, lang, repeat_when_asked=True)
        call_id = caller.dialog.call_id if caller.dialog else ""
        await caller.hangup()
        await caller.close()
        return call_id

    call_id = asyncio.run(run())
    lines = call_lines(voicebot, call_id)
    calls = tool_calls(voicebot, call_id)
    assert [c["tool"] for c in calls if c["ok"]] == ["get_order_status", "change_address"], (calls, lines)
    assert all(c["arguments"]["order_id"] == order for c in calls), calls
    assert calls[1]["confirmed"] is True, calls
    # Whisper base hears the street name, not always the rest of a Mandarin address over G.711.
    assert re.search("Nanjing Road|南京", calls[1]["arguments"]["new_address"]), calls


def _call(site: InstalledSite, turns: list[str]) -> tuple[str, list[str]]:
    """One Mandarin call to the shop from the demo customer who owns order 100235."""

    async def run() -> tuple[str, list[str]]:
        caller, replies = await converse(
            site, "4001", turns, "zh", repeat_when_asked=True, caller_number="13800000002"
        )
        call_id = caller.dialog.call_id if caller.dialog else ""
        await caller.hangup()
        await caller.close()
        return call_id, replies

    return asyncio.run(run())


def _steps(site: InstalledSite, call_id: str) -> list[dict[str, Any]]:
    return sql(
        site, f"SELECT tool, ok, result FROM aicc.call_tool_calls WHERE call_id = '{call_id}' ORDER BY seq"
    )


def test_the_bot_answers_from_the_public_article_it_names(voicebot: InstalledSite) -> None:
    """How to get an invoice: no tool does that, the demo shop's public article 开具发票 does; the
    bot names it and answers from it (the call record keeps which article and version)."""
    call_id, replies = _call(voicebot, ["请问发票怎么开？"])
    lines, steps = call_lines(voicebot, call_id), _steps(voicebot, call_id)
    kb = [s for s in steps if s["tool"] == "kb_answer" and s["ok"]]
    assert kb and kb[0]["result"]["title"] == "开具发票", (steps, lines)
    said = [line["text"] for line in lines if line["speaker"] == "bot"]
    assert any(t.startswith("根据《开具发票》") for t in said), said
    assert "发票" in "".join(replies), replies  # what the caller heard (local ASR)
    assert not any(s["tool"] == "create_ticket" for s in steps), steps


def test_a_ticket_the_caller_asks_for_is_a_real_ticket(voicebot: InstalledSite) -> None:
    """A broken grinder, and a ticket asked for by name: a ticket in the agents' list (source bot,
    this call, the caller's phone, Mandarin), the number the bot said."""
    call_id, _ = _call(voicebot, ["我买的磨豆机坏了请帮我登记一个工单。"])
    lines, steps = call_lines(voicebot, call_id), _steps(voicebot, call_id)
    tickets = sql(
        voicebot,
        f"SELECT number, source, customer, language FROM aicc.tickets WHERE call_id = '{call_id}' "
        "ORDER BY number",
    )
    assert tickets and {(t["source"], t["language"]) for t in tickets} == {("bot", "zh")}, (steps, lines)
    assert all(t["customer"] == {"phone": "+8613800000002"} for t in tickets), tickets
    made = [s["result"]["ticket_id"] for s in steps if s["tool"] == "create_ticket" and s["ok"]]
    assert made == [t["number"] for t in tickets], steps
    said = " ".join(line["text"] for line in lines if line["speaker"] == "bot")
    assert tickets[0]["number"] in said, said


def test_caller_speech_stops_the_greeting_within_300ms(voicebot: InstalledSite) -> None:
    from aicc.installer.smoke import _open_tts

    async def run() -> float:
        tts = await asyncio.to_thread(_open_tts, SmokeParams.model_store, "en")
        parts = [c async for c in tts.synthesize("Hello, I have a question about my order.", language="en")]
        proxy = proxy_of(voicebot)
        caller = Caller(local_ip=local_ip_towards(*proxy))
        await caller.start()
        await caller.call("sip:4000@aicc.local", proxy)
        first = None
        for _ in range(100):
            await asyncio.sleep(0.05)
            first = caller.heard.first_voice_after(0)
            if first is not None:
                break
        assert first is not None, "no greeting"
        await asyncio.sleep(5.0)  # into the interruptible greeting (after the recording notice)
        caller.play(b"".join(p.pcm for p in parts), parts[0].sample_rate)
        speech_started = time.monotonic()
        await asyncio.sleep(1.5)
        quiet_from = next((at for at, f in caller.heard.frames if at > speech_started and rms(f) < 300), None)
        await caller.hangup()
        await caller.close()
        assert quiet_from is not None, "the bot kept talking"
        return quiet_from - speech_started

    stop_s = asyncio.run(run())
    # 300 ms for the bot plus the path back through rtpengine and the caller's jitter buffer (60 ms).
    assert stop_s <= 0.3 + 0.1, f"bot audio stopped {stop_s * 1000:.0f} ms after the caller began"


def test_unsupported_codec_gets_488_through_kamailio(voicebot: InstalledSite) -> None:
    async def run() -> int:
        proxy = proxy_of(voicebot)
        t = SipTransport(lambda m, a: None)
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: t, local_addr=(local_ip_towards(*proxy), 0)
        )
        offer = (
            f"v=0\r\no=- 1 1 IN IP4 {t.local[0]}\r\ns=-\r\nc=IN IP4 {t.local[0]}\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n"
        ).encode()
        try:
            await dlg.invite(
                t, target="sip:4000@aicc.local", proxy=proxy, from_uri=f"sip:t@{t.local[0]}", sdp=offer
            )
        except dlg.CallFailed as exc:
            return exc.status
        finally:
            t.close()
        return 200

    assert asyncio.run(run()) == 488


def test_ten_calls_at_once_all_complete(voicebot: InstalledSite) -> None:
    async def one() -> bool:
        proxy = proxy_of(voicebot)
        caller = Caller(local_ip=local_ip_towards(*proxy))
        await caller.start()
        try:
            await caller.call("sip:4000@aicc.local", proxy)
            await asyncio.sleep(8)
            heard = caller.heard.first_voice_after(0) is not None
            return heard and await caller.hangup() == 200
        finally:
            await caller.close()

    async def run() -> list[bool]:
        return list(await asyncio.gather(*(one() for _ in range(10))))

    assert all(asyncio.run(run()))
