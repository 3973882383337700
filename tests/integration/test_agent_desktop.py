"""The agent desktop and the supervisor wallboard in a real Chromium (Debian's, driven by Playwright)
against the lab: the agent logs in, the page's softphone registers with Kamailio over secure WebSocket
with short-lived credentials, the agent goes ready; a caller says 转人工 to the Mandarin bot, waits in the
queue, the page rings with the bot's transcript, the test clicks answer, audio flows both ways through
rtpengine (DTLS-SRTP to the browser, plain RTP to the caller); the agent picks the bank-card queue in
the transfer field and transfers the caller there (REFER through Kamailio to the gateway), where the
bank-card agent's SIP phone takes over, and wraps up; the CDR has the wait, talk time and the second
agent; the wallboard, in a second browser context, saw the waiting count go up and down. Screenshots
of both pages at each step go to the artifacts folder (AICC_ARTIFACTS, default the site's
artifacts/desktop).

The browser's microphone is Chromium's fake capture device playing a WAV of the agent's line.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import wave
from pathlib import Path
from typing import Any

import pytest

from aicc.appliance.voice.caller import Caller
from aicc.installer.smoke import SmokeParams, _open_asr, _open_tts, local_ip_towards, wait_quiet
from tests.integration.agentphone import AgentPhone
from tests.integration.appliance_fixture import Appliance
from tests.integration.test_contact_center import ASK_FOR_AGENT, CALLER, _heard, _say, _until
from tests.integration.test_voicebot import proxy_of

pytestmark = [pytest.mark.lab, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
AGENT_LINE = "Hello, this is the agent speaking. How can I help you?"
EXTENSION = "1050"


def _user(appliance: Appliance, username: str, role: str) -> tuple[int, str]:
    password = secrets.token_urlsafe(12) + "aA1!"
    r = appliance.api(
        "POST",
        "/api/users",
        json={"username": username, "display_name": username.title(), "role": role, "password": password},
    )
    if r.status_code == 409:  # a rerun on the same lab: give it a new password
        uid = next(u["id"] for u in appliance.api("GET", "/api/users").json() if u["username"] == username)
        r = appliance.api("POST", f"/api/users/{uid}/password", json={"password": password})
        assert r.status_code == 200, r.text
        return int(uid), password
    assert r.status_code == 201, r.text
    return int(r.json()["id"]), password


async def _mic_file(path: Path) -> Path:
    """The agent's line as a WAV for Chromium's fake microphone (it loops the file)."""
    tts = await asyncio.to_thread(_open_tts, SmokeParams.model_store, "en")
    parts = [c async for c in tts.synthesize(AGENT_LINE, language="en")]
    silence = b"\x00\x00" * parts[0].sample_rate  # a second between repeats
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(parts[0].sample_rate)
        w.writeframes(b"".join(p.pcm for p in parts) + silence)
    return path


async def _login(page: Any, url: str, username: str, password: str) -> None:
    await page.goto(url)
    await page.fill("#login-username", username)
    await page.fill("#login-password", password)
    await page.click("#login-submit")


async def _text(page: Any, selector: str) -> str:
    return str((await page.text_content(selector)) or "").strip()


def _status(appliance: Appliance, username: str) -> str:
    agents = appliance.api("GET", "/api/live/agents").json()
    return str(next(a["status"] for a in agents if a["username"] == username))


async def _go_ready(page: Any) -> None:
    """Click Ready until the ACD takes it: it reads registrations every 2 s, and refuses (409, shown
    on the page) a phone it has not seen registered yet."""
    for _ in range(20):
        await page.click("#status-ready")
        try:
            await page.wait_for_selector("#agent-status[data-status=ready]", timeout=1_500)
            return
        except Exception:  # Playwright's timeout: try again
            continue
    await page.wait_for_selector("#agent-status[data-status=ready]", timeout=2_000)


def test_an_agent_in_the_browser_takes_a_queued_call_with_audio_both_ways(appliance: Appliance) -> None:
    from playwright.async_api import async_playwright

    site = appliance.site
    artifacts = Path(os.environ.get("AICC_ARTIFACTS", site.site / "artifacts")) / "desktop"
    artifacts.mkdir(parents=True, exist_ok=True)
    agent_id, agent_password = _user(appliance, "desk-agent", "agent")
    r = appliance.api(
        "PUT",
        f"/api/agents/{agent_id}",
        json={
            "extension": EXTENSION,
            "skills": {"orders": 3},
            "languages": ["zh", "en"],
            "capacity": {"voice": 1},
        },
    )
    assert r.status_code == 200, r.text
    _, sup_password = _user(appliance, "wall-sup", "supervisor")
    # Only the browser's agent takes this call; the bank-card agent (demo-agent2) takes the transfer.
    for other in ("demo-agent", "demo-agent2"):
        appliance.set_status(other, "logged_out")
    creds = appliance.api("POST", f"/api/agents/{appliance.agent_id('demo-agent2')}/sip-credentials")
    assert creds.status_code == 201, creds.text
    proxy = proxy_of(site)
    local = local_ip_towards(*proxy)
    out: dict[str, Any] = {"waiting_seen": []}

    async def shot(page: Any, name: str) -> None:
        await page.screenshot(path=str(artifacts / f"{len(list(artifacts.glob('*.png'))):02d}-{name}.png"))

    async def run() -> None:
        mic = await _mic_file(artifacts / "agent-mic.wav")
        tts = await asyncio.to_thread(_open_tts, SmokeParams.model_store, "zh")
        asr = await asyncio.to_thread(_open_asr, SmokeParams.model_store)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-audio-capture={mic}",
                    "--autoplay-policy=no-user-gesture-required",
                ],
            )
            # The lab's certificates are the site CA's; this browser does not know that CA.
            desk_ctx = await browser.new_context(
                ignore_https_errors=True, viewport={"width": 1366, "height": 768}, locale="en-US"
            )
            await desk_ctx.grant_permissions(["microphone"], origin=appliance.url)
            wall_ctx = await browser.new_context(
                ignore_https_errors=True, viewport={"width": 1366, "height": 768}, locale="zh-CN"
            )
            desk, wall = await desk_ctx.new_page(), await wall_ctx.new_page()
            console: list[str] = []
            desk.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            try:
                started = time.monotonic()
                await _login(desk, f"{appliance.url}/desk/", "desk-agent", agent_password)
                await desk.wait_for_selector("#phone-status[data-state=registered]", timeout=30_000)
                out["desk_ready_s"] = time.monotonic() - started
                await _login(wall, f"{appliance.url}/wall/", "wall-sup", sup_password)
                await wall.wait_for_selector("#wall-queues tr[data-queue=support-zh]", timeout=15_000)
                await shot(desk, "desk-registered")
                await _go_ready(desk)
                await shot(desk, "desk-ready")
                await shot(wall, "wall-agent-ready")

                caller = Caller(local_ip=local, number=CALLER)
                await caller.start()
                try:
                    await caller.call("sip:4001@aicc.local", proxy)
                    await wait_quiet(caller, time.monotonic(), timeout=30)
                    for phrase in ASK_FOR_AGENT:
                        end = await _say(caller, tts, phrase, "zh")
                        try:
                            await desk.wait_for_selector("#call-state[data-state=ringing]", timeout=25_000)
                            break
                        except Exception:  # Playwright's timeout
                            await wait_quiet(caller, end, timeout=20)
                    await desk.wait_for_selector("#call-state[data-state=ringing]", timeout=5_000)
                    out["waiting_seen"].append(
                        await _text(wall, "#wall-queues tr[data-queue=support-zh] td.waiting")
                    )
                    await desk.wait_for_selector("#contact-pop:not([hidden])", timeout=5_000)
                    out["pop_transcript"] = await _text(desk, "#pop-transcript")
                    out["pop_caller"] = await _text(desk, "#pop-caller")
                    await shot(desk, "desk-ringing")
                    await shot(wall, "wall-waiting")
                    await desk.click("#answer")
                    await desk.wait_for_selector("#call-state[data-state=talking]", timeout=10_000)
                    caller.heard.frames.clear()
                    await asyncio.sleep(6.0)  # the fake microphone says the agent's line
                    out["caller_heard"] = await _heard(asr, caller, 0, time.monotonic())
                    await _say(caller, tts, "我想问一下我的订单。", "zh")
                    await asyncio.sleep(1.0)
                    out["stats"] = await desk.evaluate("window.aiccDesk.phone.stats()")
                    out["waiting_after"] = await _text(
                        wall, "#wall-queues tr[data-queue=support-zh] td.waiting"
                    )
                    await shot(desk, "desk-talking")
                    await shot(wall, "wall-talking")
                    out["call_id"] = caller.dialog.call_id if caller.dialog else ""
                    # Blind transfer to the bank-card queue, picked from the field's list.
                    password = creds.json()["password"]
                    cards = AgentPhone("1002", password, proxy, local, rtp_range=(45000, 45999))
                    await cards.start()
                    try:
                        assert await _until(
                            lambda: appliance.set_status("demo-agent2", "ready").status_code == 200, 15
                        )
                        out["transfer_choices"] = await desk.eval_on_selector_all(
                            "#transfer-queues option", "os => os.map(o => o.value)"
                        )
                        await desk.fill("#transfer-target", "cards-zh")
                        await desk.click("#transfer-blind")
                        await desk.wait_for_selector("#call-state:not([data-state=talking])", timeout=15_000)
                        out["transfer_banner"] = await _text(desk, "#banner")
                        await shot(desk, "desk-transferred")
                        assert await _until(lambda: cards.current is not None, 30), cards.rings
                        ring = cards.rings[-1]
                        out["cards_queue_header"] = ring.invite.get("X-AICC-Queue")
                        # The caller speaks: the bank-card agent hears them now.
                        await _say(caller, tts, "你好，我想问一下我的银行卡。", "zh")
                        await asyncio.sleep(1.0)
                        out["cards_heard_s"] = cards.heard_voice_s()
                        await caller.hangup()
                    finally:
                        await cards.close()
                finally:
                    await caller.close()
                await desk.wait_for_selector("#wrapup:not([hidden])", timeout=10_000)
                await shot(desk, "desk-wrapup")
                await desk.select_option("#wrapup-disposition", "resolved")
                await desk.fill("#wrapup-note", "Order question answered in the browser test.")
                await desk.click("#wrapup-submit")
                await desk.wait_for_selector("#wrapup", state="hidden", timeout=10_000)
                await shot(desk, "desk-after-wrapup")
            finally:
                out["console"] = console[-30:]
                await browser.close()

    asyncio.run(run())
    assert "agent" in out.get("caller_heard", "").lower(), out
    stats = out["stats"]
    assert stats and stats["inboundPackets"] > 100 and stats["outboundPackets"] > 100, out
    assert stats["dtlsState"] == "connected", stats
    assert out["waiting_seen"] == ["1"] and out["waiting_after"] == "0", out
    assert "人工" in out["pop_transcript"] and "****" in out["pop_caller"], out
    assert "cards-zh" in out["transfer_choices"] and "support-zh" in out["transfer_choices"], out
    assert out["cards_queue_header"] == "cards-zh" and out["cards_heard_s"] > 0.5, out
    assert "transferred" in out["transfer_banner"].lower(), out
    call_id = out["call_id"]
    detail: dict[str, Any] = {}

    def cdr_complete() -> bool:
        nonlocal detail
        detail = appliance.api("GET", f"/api/calls/{call_id}").json()
        contact = detail.get("contact") or {}
        return bool(detail.get("ended_at") and contact.get("talk_s") is not None)

    assert asyncio.run(_until(cdr_complete, 20)), detail
    # The call's record follows the caller: the bank-card queue and agent took it over.
    contact = detail["contact"]
    assert detail["agent"] == "1002" and detail["queue"] == "cards-zh", detail
    assert contact["outcome"] == "answered" and contact["talk_s"] > 1, contact
    lines = appliance.api("GET", f"/api/calls/{call_id}/transcript").json()
    assert any(ln["text"] == f"<transferred by agent {EXTENSION} to queue cards-zh>" for ln in lines), lines
    # The call's first contact was the browser agent's, wrapped up with its disposition.
    first: dict[str, Any] = {}

    def wrapped_up() -> bool:
        nonlocal first
        first = appliance.api("GET", f"/api/reports/cdr/{call_id}").json()
        return bool(first.get("disposition"))

    assert asyncio.run(_until(wrapped_up, 20)), first
    assert first["agent_id"] == agent_id and first["disposition"] == "resolved", first
    assert first["talk_s"] > 5 and first["queue"] == "support-zh", first
    assert first["wait_s"] is not None and first["wait_s"] < 30, first


def test_the_desktop_says_why_it_cannot_work(appliance: Appliance) -> None:
    """A wrong password, a blocked microphone (Ready stays off), Kamailio restarted under a registered
    page (it says so, and registers again by itself)."""
    from playwright.async_api import async_playwright

    _, password = _user(appliance, "desk-agent", "agent")
    out: dict[str, Any] = {}

    async def run() -> None:
        async with async_playwright() as pw:
            # No fake-UI flag: the microphone prompt is refused, as a user who clicks "Block" does.
            blocked = await pw.chromium.launch(executable_path=CHROMIUM)
            page = await (await blocked.new_context(ignore_https_errors=True, locale="en-US")).new_page()
            await _login(page, f"{appliance.url}/desk/", "desk-agent", password + "x")
            await page.wait_for_selector("#login-error:not(:empty)", timeout=10_000)
            out["wrong_password"] = await _text(page, "#login-error")
            await page.fill("#login-password", password)
            await page.click("#login-submit")
            await page.wait_for_selector("#phone-status[data-state=no-mic]", timeout=15_000)
            out["no_mic_banner"] = await _text(page, "#banner")
            out["ready_disabled"] = await page.is_disabled("#status-ready")
            await blocked.close()

            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                args=["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"],
            )
            page = await (await browser.new_context(ignore_https_errors=True, locale="en-US")).new_page()
            await _login(page, f"{appliance.url}/desk/", "desk-agent", password)
            await page.wait_for_selector("#phone-status[data-state=registered]", timeout=30_000)
            await _go_ready(page)
            restarted = await asyncio.to_thread(appliance.ssh, "sip_proxy", "systemctl restart kamailio")
            assert restarted.returncode == 0, restarted.stderr
            await page.wait_for_selector("#phone-status:not([data-state=registered])", timeout=15_000)
            out["lost_banner"] = await _text(page, "#banner")
            started = time.monotonic()
            await page.wait_for_selector("#phone-status[data-state=registered]", timeout=30_000)
            out["reregistered_s"] = time.monotonic() - started
            await asyncio.sleep(3)  # the ACD reads registrations every 2 s
            out["status_after_restart"] = _status(appliance, "desk-agent")
            # The tab goes away without logging out: its registration goes with its WebSocket, and the
            # ACD logs the agent out (after its grace) instead of offering calls to a phone that is gone.
            await _go_ready(page)
            await browser.close()
            closed = time.monotonic()
            while time.monotonic() - closed < 40 and _status(appliance, "desk-agent") != "logged_out":
                await asyncio.sleep(0.25)
            out["logged_out_s"] = time.monotonic() - closed

    asyncio.run(run())
    assert out["wrong_password"], out
    assert out["ready_disabled"] and "icrophone" in out["no_mic_banner"], out
    assert out["lost_banner"] and out["reregistered_s"] < 30, out
    assert out["status_after_restart"] == "ready", out  # a proxy restart does not log agents out
    # Kamailio's websocket module reports a closed connection after its rm_delay_interval (5 s); the
    # ACD reads registrations every 2 s and logs out after appliance_acd_phone_grace_s (15 s).
    assert 15 <= out["logged_out_s"] < 30, out
