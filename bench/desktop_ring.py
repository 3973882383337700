"""The agent desktop on an installed lab: how soon the page rings after the ACD decides, how soon audio
flows both ways after the agent clicks answer, and how fast the desktop loads. Baseline, measured the
same way in the same run: a plain SIP phone (UDP, no WebRTC) taking the same kind of call.

    python bench/desktop_ring.py --site aicc-demo --lab demo [--calls 20]

Calls go to a flow made for the bench (straight into the support-en queue), which number 4002 is
pointed to for the run (Kamailio routes only the site's configured numbers) and back after; the
caller is a SIP client on this host; the browser is Debian's chromium with a fake microphone.
Goals (issue 15): ring <= 300 ms, two-way audio <= 1 s after answer, page load <= 1 s. Everything
it creates is named bench-*; the calls are bounded in number and each in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aicc.appliance.voice.caller import Caller  # noqa: E402
from aicc.installer.inventory import load_inventory  # noqa: E402
from aicc.installer.smoke import local_ip_towards  # noqa: E402
from tests.integration.agentphone import AgentPhone  # noqa: E402

NUMBER = "4002"
BROWSER_EXT, PHONE_EXT = "1061", "1062"
FLOW = """name: bench-direct
description: Straight into the support-en queue (bench/desktop_ring.py).
languages: [en]
language: en
calendar: always
start: agents
nodes:
  agents:
    type: queue
    queue: support-en
    next: bye
    callback: bye
    no_agents: bye
    timeout: bye
    failed: bye
  bye:
    type: hangup
"""
# The page records when the call rings and when its first inbound audio packets arrive.
WATCH = """() => {
  window.__bench = {ring: [], inbound: []};
  new MutationObserver(() => {
    const s = document.querySelector('#call-state');
    if (s && s.dataset.state === 'ringing') window.__bench.ring.push(Date.now());
  }).observe(document.querySelector('#call-state'), {attributes: true, attributeFilter: ['data-state']});
}"""
FIRST_INBOUND = """async () => {
  const t0 = Date.now();
  while (Date.now() - t0 < 5000) {
    const s = await window.aiccDesk.phone.stats();
    if (s && s.inboundPackets > 0) return Date.now();
    await new Promise((r) => setTimeout(r, 20));
  }
  return null;
}"""


AICC = str(Path(sys.executable).parent / "aicc")


class Site:
    def __init__(self, folder: Path, lab: str) -> None:
        self.folder = folder
        self.inventory = load_inventory(folder / "inventory.ini")
        self.lab = lab

    def address(self, group: str) -> str:
        return str(self.inventory.group(group)[0].address)

    def sql(self, query: str) -> list[dict[str, Any]]:
        db = self.inventory.group("db")[0].name
        select = f"SELECT coalesce(json_agg(t), '[]') FROM ({query}) t"
        cmd = f'runuser -u postgres -- psql -d aicc -AtXc "{select}"'
        out = subprocess.run(
            [AICC, "lab", "ssh", db, "--name", self.lab, "--", cmd],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        rows: list[dict[str, Any]] = json.loads(out.stdout.strip() or "[]")
        return rows


def offered_at(site: Site, agent_ext: str, after: float) -> float | None:
    rows = site.sql(
        "SELECT extract(epoch FROM e.at)::float8 AS at FROM aicc.cc_events e JOIN aicc.agents a "
        f"ON a.user_id = e.agent_id WHERE e.kind = 'contact.offered' AND a.extension = '{agent_ext}' "
        f"AND e.at > to_timestamp({after}) ORDER BY e.at LIMIT 1"
    )
    return float(rows[0]["at"]) if rows else None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, values: list[float], goal: float | None = None) -> str:
    if not values:
        return f"{name:34} no samples"
    p50, p95 = statistics.median(values), pct(values, 0.95)
    goal_text = f"  goal <= {goal * 1000:.0f} ms: {'met' if p95 <= goal else 'MISSED'}" if goal else ""
    return f"{name:34} p50 {p50 * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  n={len(values)}{goal_text}"


async def main(args: argparse.Namespace) -> None:

    site = Site(Path(args.site).resolve(), args.lab)
    url = f"https://{site.address('app')}"
    ca = site.folder / "pki" / "ca.crt"
    http = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=20)
    admin = f"bench-admin-{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(16) + "aA1!"
    with tempfile.NamedTemporaryFile("w", delete=False) as fh:
        fh.write(password + "\n")
    Path(fh.name).chmod(0o600)
    made = subprocess.run(
        [AICC, "admin", "create", "--site", str(site.folder),
         "--username", admin, "--password-file", fh.name],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    Path(fh.name).unlink()
    if made.returncode:
        sys.exit(f"cannot create the bench admin: {made.stderr or made.stdout}")
    token = http.post(f"{url}/api/auth/login", json={"username": admin, "password": password}).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}

    def api(method: str, path: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return http.request(method, url + path, headers={**auth, **(headers or {})}, **kw)

    def user(name: str, extension: str) -> tuple[int, str]:
        pw = secrets.token_urlsafe(12) + "aA1!"
        r = api("POST", "/api/users", json={"username": name, "role": "agent", "password": pw})
        uid = (
            r.json()["id"]
            if r.status_code == 201
            else next(u["id"] for u in api("GET", "/api/users").json() if u["username"] == name)
        )
        api("POST", f"/api/users/{uid}/password", json={"password": pw})
        profile = {
            "extension": extension,
            "skills": {"orders": 3},
            "languages": ["en"],
            "capacity": {"voice": 1},
        }
        api("PUT", f"/api/agents/{uid}", json=profile).raise_for_status()
        return int(uid), pw

    browser_uid, browser_pw = user("bench-desk", BROWSER_EXT)
    phone_uid, phone_pw = user("bench-phone", PHONE_EXT)
    phone_login = http.post(f"{url}/api/auth/login", json={"username": "bench-phone", "password": phone_pw})
    phone_auth = {"Authorization": f"Bearer {phone_login.json()['token']}"}
    phone_creds = api("POST", f"/api/agents/{phone_uid}/sip-credentials").json()
    api("POST", "/api/flows", content=FLOW, headers={"Content-Type": "application/yaml"})
    before = next(n["flow"] for n in api("GET", "/api/numbers").json() if n["number"] == NUMBER)
    api("PUT", f"/api/numbers/{NUMBER}", json={"flow": "bench-direct"}).raise_for_status()
    try:
        await measure(
            site, api, http, url, browser_uid, browser_pw, phone_uid, phone_creds, phone_auth, args.calls
        )
    finally:
        api("PUT", f"/api/numbers/{NUMBER}", json={"flow": before}).raise_for_status()


async def measure(
    site: Site,
    api: Any,
    http: httpx.Client,
    url: str,
    browser_uid: int,
    browser_pw: str,
    phone_uid: int,
    phone_creds: dict[str, Any],
    phone_auth: dict[str, str],
    calls: int,
) -> None:
    from playwright.async_api import async_playwright

    for agent in api("GET", "/api/live/agents").json():  # only the bench's agent takes the calls
        if agent["status"] != "logged_out":
            api("POST", f"/api/agents/{agent['agent_id']}/status", json={"status": "logged_out"})

    proxy = (site.address("sip_proxy"), 5060)
    local = local_ip_towards(*proxy)
    mic = Path(tempfile.mkdtemp()) / "mic.wav"
    with wave.open(str(mic), "wb") as w:  # a 440 Hz tone: energy the caller can detect
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(
            b"".join(int(8000 * math.sin(2 * math.pi * 440 * i / 16000)).to_bytes(2, "little", signed=True)
                     for i in range(16000))
        )  # fmt: skip

    async def one_call(answer: Any, ring_seen: Any, ext: str) -> tuple[float | None, float | None]:
        """(ring latency after the ACD's offer, two-way audio after answer) for one call. `answer`
        answers and returns (when it answered, when its own side first got audio) as epoch times."""
        caller = Caller(local_ip=local, number="13800138000")
        await caller.start()
        try:
            started = time.time()
            await caller.call(f"sip:{NUMBER}@aicc.local", proxy)
            rang = await ring_seen(started)
            offered = offered_at(site, ext, started - 1)
            if rang is None or offered is None:
                return None, None
            clicked, inbound = await answer()
            heard = None
            t0 = time.monotonic()
            while time.monotonic() - t0 < 5:
                at = caller.heard.first_voice_after(0)
                if at is not None:
                    heard = time.time() - (time.monotonic() - at)
                    break
                await asyncio.sleep(0.02)
            audio = max(inbound, heard) - clicked if inbound and heard else None
            await asyncio.sleep(0.5)
            return rang - offered, audio
        finally:
            await caller.hangup()
            await caller.close()

    browser_ring: list[float] = []
    browser_audio: list[float] = []
    phone_ring: list[float] = []
    phone_audio: list[float] = []
    loads: list[float] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-audio-capture={mic}"],
        )  # fmt: skip
        ctx = await browser.new_context(ignore_https_errors=True, viewport={"width": 1366, "height": 768})
        page = await ctx.new_page()
        for _ in range(5):
            await page.goto(f"{url}/desk/", wait_until="load")
            loads.append(
                await page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd") / 1000
            )
        await page.fill("#login-username", "bench-desk")
        await page.fill("#login-password", browser_pw)
        await page.click("#login-submit")
        await page.wait_for_selector("#phone-status[data-state=registered]", timeout=30_000)
        for _ in range(20):
            if api("POST", f"/api/agents/{browser_uid}/status", json={"status": "ready"}).status_code == 200:
                break
            await asyncio.sleep(1)
        await page.evaluate(WATCH)

        async def page_rang(started: float) -> float | None:
            for _ in range(300):
                rings = [r / 1000 for r in await page.evaluate("window.__bench.ring") if r / 1000 > started]
                if rings:
                    return rings[0]
                await asyncio.sleep(0.05)
            return None

        async def page_answer() -> tuple[float, float | None]:
            clicked = time.time()
            await page.click("#answer")
            at = await page.evaluate(FIRST_INBOUND)
            return clicked, (at / 1000 if at else None)

        for i in range(calls):
            ring, audio = await one_call(page_answer, page_rang, BROWSER_EXT)
            print(f"browser call {i + 1}: ring {ring}, audio {audio}", flush=True)
            if ring is not None:
                browser_ring.append(ring)
            if audio is not None:
                browser_audio.append(audio)
            await page.wait_for_selector("#wrapup:not([hidden])", timeout=15_000)
            await page.select_option("#wrapup-disposition", index=1)
            await page.click("#wrapup-submit")
            await page.wait_for_selector("#wrapup", state="hidden", timeout=10_000)
        api("POST", f"/api/agents/{browser_uid}/status", json={"status": "logged_out"})
        await browser.close()

    tone = mic.read_bytes()[44:]  # the same tone, as 16 kHz PCM
    phone = AgentPhone(PHONE_EXT, phone_creds["password"], proxy, local, answer_after_s=0.0)
    await phone.start()
    try:
        for _ in range(20):
            if api("POST", f"/api/agents/{phone_uid}/status", json={"status": "ready"}).status_code == 200:
                break
            await asyncio.sleep(1)

        async def phone_rang(started: float) -> float | None:
            n = len(phone.rings)
            for _ in range(300):
                if len(phone.rings) > n:
                    return time.time() - (time.monotonic() - phone.rings[-1].at)
                await asyncio.sleep(0.05)
            return None

        async def phone_answer() -> tuple[float, float | None]:
            # It answers by itself at once; what it sends is what the caller must hear.
            for _ in range(200):
                ring = phone.rings[-1] if phone.rings else None
                if ring is not None and ring.answered_at is not None and ring.ended_at is None:
                    phone.play(tone * 5, 16000)
                    answered = time.time() - (time.monotonic() - ring.answered_at)
                    for _ in range(250):
                        first = next((at for at, _ in phone.heard if at >= ring.answered_at), None)
                        if first is not None:
                            return answered, time.time() - (time.monotonic() - first)
                        await asyncio.sleep(0.02)
                    return answered, None
                await asyncio.sleep(0.02)
            return time.time(), None

        for i in range(calls):
            ring, audio = await one_call(phone_answer, phone_rang, PHONE_EXT)
            print(f"SIP phone call {i + 1}: ring {ring}, audio {audio}", flush=True)
            if ring is not None:
                phone_ring.append(ring)
            if audio is not None:
                phone_audio.append(audio)
            http.post(f"{url}/api/agents/me/wrapup", headers=phone_auth, json={"disposition": "resolved"})
            await asyncio.sleep(1)
    finally:
        api("POST", f"/api/agents/{phone_uid}/status", json={"status": "logged_out"})
        await phone.close()

    print()
    print(summary("browser: ACD offer -> page rings", browser_ring, 0.3))
    print(summary("SIP phone: ACD offer -> INVITE", phone_ring))
    if browser_ring and phone_ring:
        ratio = statistics.median(browser_ring) / statistics.median(phone_ring)
        print(f"{'':34} ratio browser/phone (p50) {ratio:.2f}")
    print(summary("browser: answer -> audio both ways", browser_audio, 1.0))
    print(summary("SIP phone: answer -> audio both ways", phone_audio))
    print(summary("desktop page load", loads, 1.0))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", required=True, help="the lab's site folder (aicc lab up --site ...)")
    parser.add_argument("--lab", default="demo", help="the lab's name (aicc lab up --name ...)")
    parser.add_argument("--calls", type=int, default=20, help="calls per phone kind (default 20)")
    asyncio.run(main(parser.parse_args()))
