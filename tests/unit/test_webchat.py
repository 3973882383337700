"""Web chat end to end against the real app: uvicorn on 127.0.0.1 over its own migrated database, the
visitor side with the `websockets` client, the agents' side over REST, and the widget in Debian's
Chromium (Playwright) on a page of another origin. The bot is the real dialogue manager (the voice
bot's) with the fake LLM and connector of the voice tests, so its answers are known.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi.testclient import TestClient
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from aicc.appliance.api.app import create_app
from aicc.appliance.channels.textbot import BotRuntime, open_runtime
from aicc.appliance.channels.webchat import WebChatHub, issue_token
from tests.unit.api_support import (
    ApiDatabase,
    ApiUser,
    api_config,
    api_db_fixture,  # noqa: F401
    fresh_database,
    make_user,
)
from tests.unit.browser_support import browser_fixture  # noqa: F401
from tests.unit.test_voice_fakes import RETAIL, FakeConnector, FakeLLM, retail_on

KEY = "shop-widget-key-0123456789"
SHOP = "https://shop.example"  # the customer's site, as the non-browser tests present it
EVIL = "<img src=x onerror=alert(1)>"
WAIT_S = 10.0
STATUS = {"intent": "tools", "actions": [{"tool": "get_order_status", "arguments": {"order_id": "100234"}}]}


@dataclass
class Site:
    url: str
    db: ApiDatabase
    agent: ApiUser
    hub: WebChatHub
    page_origin: str  # the test page's own server (another origin), for the browser
    page_url: str

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, self.url + path, headers=self.agent.headers, timeout=10, trust_env=False, **kwargs
        )

    def session(self, origin: str = SHOP, **body: Any) -> httpx.Response:
        return httpx.post(
            self.url + "/chat/v1/sessions",
            json={"key": KEY, **body},
            headers={"Origin": origin},
            timeout=10,
            trust_env=False,
        )

    def refused(self, reason: str) -> float:
        value = self.hub.metrics.refused.labels(reason)._value.get()
        return float(value)


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


class _Page(http.server.BaseHTTPRequestHandler):
    """The customer's site: one page with the widget's one script tag."""

    html = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(api_db: ApiDatabase) -> Iterator[Site]:
    db = fresh_database(api_db, "webchat")
    agent = make_user(db, "agent", username="webchat-agent")
    api_sock, page_sock = _free_socket(), _free_socket()
    api_url = f"http://127.0.0.1:{api_sock.getsockname()[1]}"
    page_origin = f"http://127.0.0.1:{page_sock.getsockname()[1]}"
    config = api_config(
        db,
        acd={"result_timeout_s": 0.3},
        webchat_keys=[KEY],
        webchat_origins=[SHOP, page_origin],
    )
    app = create_app(config)
    hub: WebChatHub = app.state.webchat
    llm = FakeLLM({"order": STATUS, "订单": STATUS})
    hub.use_runtime(BotRuntime(llm, retail_on(FakeConnector()), "retail"))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [api_sock]}, daemon=True)
    thread.start()
    _Page.html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Shop</title></head><body><h1>Shop</h1>"
        f'<script src="{api_url}/static/widget/aicc-chat.js" data-key="{KEY}" data-lang="en" async></script>'
        "</body></html>"
    ).encode()
    page_sock.listen()
    pages = http.server.ThreadingHTTPServer(page_sock.getsockname(), _Page, bind_and_activate=False)
    pages.socket.close()
    pages.socket = page_sock
    page_thread = threading.Thread(target=pages.serve_forever, daemon=True)
    page_thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Site(api_url, db, agent, hub, page_origin, page_origin + "/shop.html")
    finally:
        pages.shutdown()
        server.should_exit = True
        thread.join(15)
        api_sock.close()
        page_sock.close()


@dataclass
class Visitor:
    """A visitor's session and socket; `frames` keeps everything the server sent."""

    site: Site
    session: dict[str, Any]
    ws: ClientConnection
    frames: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # the status frame sent on connect

    @property
    def conversation_id(self) -> str:
        return str(self.session["conversation_id"])

    def send(self, frame: dict[str, Any] | str) -> None:
        self.ws.send(frame if isinstance(frame, str) else json.dumps(frame, ensure_ascii=False))

    def say(self, body: str, client_id: str | None = None) -> str:
        client_id = client_id or uuid.uuid4().hex
        self.send({"type": "message", "client_id": client_id, "body": body})
        return client_id

    def wait(self, match: Callable[[dict[str, Any]], bool], timeout: float = WAIT_S) -> dict[str, Any]:
        """The first frame (seen already or coming) that matches; consumed."""
        deadline = time.monotonic() + timeout
        while True:
            for i, frame in enumerate(self.frames):
                if match(frame):
                    return self.frames.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching frame within {timeout} s; got {self.frames}")
            try:
                self.frames.append(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                continue

    def quiet(self, match: Callable[[dict[str, Any]], bool], seconds: float) -> None:
        with contextlib.suppress(AssertionError):
            found = self.wait(match, seconds)
            raise AssertionError(f"unexpected frame {found}")

    def bot_says(self) -> str:
        return str(self.wait(lambda f: f["type"] == "message" and f["author"] == "bot")["body"])

    def bot_said(self, text: str) -> None:
        """The bot says `text` (lines before it, such as "Anything else?" after an answer, skipped)."""
        self.wait(lambda f: f["type"] == "message" and f["author"] == "bot" and f["body"] == text)


@contextlib.contextmanager
def visitor(site: Site, *, language: str = "en", visitor_id: str | None = None) -> Iterator[Visitor]:
    body: dict[str, Any] = {"language": language}
    if visitor_id:
        body["visitor"] = visitor_id
    r = site.session(**body)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == SHOP
    session = r.json()
    ws_url = site.url.replace("http", "ws") + session["ws_path"] + "?token=" + session["token"]
    with connect(ws_url, origin=Origin(SHOP), proxy=None, open_timeout=10) as ws:
        v = Visitor(site, session, ws)
        v.wait(lambda f: f["type"] == "history")
        v.status = v.wait(lambda f: f["type"] == "status")
        yield v


def _conversation(site: Site, cid: str) -> dict[str, Any]:
    r = site.api("GET", f"/api/conversations/{cid}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _count(site: Site, query: str, *args: Any) -> int:
    with psycopg.connect(site.db.dsn) as conn:
        row = conn.execute(query, args).fetchone()
    assert row is not None
    return int(row[0])


# --- sessions --------------------------------------------------------------------------------------


def test_web_chat_is_off_without_widget_keys(api_db: ApiDatabase) -> None:
    app = create_app(api_config(api_db))
    client = TestClient(app)
    r = client.post("/chat/v1/sessions", json={"key": KEY}, headers={"Origin": SHOP})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.options("/chat/v1/sessions", headers={"Origin": SHOP}).status_code == 404


def test_a_session_needs_a_widget_key_and_an_allowed_origin(site: Site) -> None:
    r = site.session(key="not-the-key-of-this-site")
    assert r.status_code == 403 and "key" in r.json()["error"]["message"]
    assert r.headers["access-control-allow-origin"] == SHOP  # the widget can read why
    r = site.session(origin="https://evil.example")
    assert r.status_code == 403 and "webchat_origins" in r.json()["error"]["message"]
    assert "access-control-allow-origin" not in r.headers
    r = httpx.post(site.url + "/chat/v1/sessions", json={"key": KEY}, timeout=10, trust_env=False)
    assert r.status_code == 403  # no Origin: not a browser on an allowed site
    r = site.session(language="fr")
    assert r.status_code == 422
    preflight = {"Origin": SHOP, "Access-Control-Request-Method": "POST"}
    r = httpx.options(site.url + "/chat/v1/sessions", headers=preflight, timeout=10, trust_env=False)
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == SHOP
    assert r.headers["access-control-allow-headers"] == "Content-Type"
    r = httpx.options(
        site.url + "/chat/v1/sessions", headers={**preflight, "Origin": "https://evil.example"}, timeout=10
    )
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


def test_the_websocket_refuses_other_origins_and_bad_tokens(site: Site) -> None:
    session = site.session().json()
    url = site.url.replace("http", "ws") + "/chat/v1/ws?token="
    with pytest.raises(InvalidStatus) as refused:
        connect(url + session["token"], origin=Origin("https://evil.example"), proxy=None)
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        connect(url + session["token"], proxy=None)  # no Origin at all
    forged = issue_token(
        b"another-key-" * 4, uuid.UUID(session["conversation_id"]), uuid.uuid4(), 60, time.time()
    )
    expired = issue_token(
        site.db.secret_key, uuid.UUID(session["conversation_id"]), uuid.uuid4(), 60, time.time() - 120
    )
    for token in (forged, expired, "wc1.garbage", ""):
        with pytest.raises(InvalidStatus):
            connect(url + token, origin=Origin(SHOP), proxy=None)
    assert site.refused("origin") >= 2 and site.refused("token") >= 4


# --- the bot --------------------------------------------------------------------------------------


def test_the_bot_greets_and_answers_in_the_language_of_each_message(site: Site) -> None:
    with visitor(site, language="en") as v:
        assert v.bot_says() == RETAIL.prompt("greeting", "en")
        client_id = v.say("what is the status of order 100234")
        ack = v.wait(lambda f: f["type"] == "ack")
        assert ack["client_id"] == client_id and not ack["duplicate"]
        own = v.wait(lambda f: f["type"] == "message" and f["author"] == "customer")
        assert own["client_id"] == client_id and own["body"] == "what is the status of order 100234"
        v.wait(lambda f: f == {"type": "typing", "author": "bot"})
        v.bot_said("Order 100234 has shipped.")
        v.say("查一下订单100234的状态")
        v.bot_said("订单100234已发货。")
    detail = _conversation(site, v.conversation_id)
    assert detail["language"] == "zh" and detail["handler"] == "bot" and detail["channel"] == "webchat"
    said = [(m["author"], m["body"]) for m in detail["messages"]]
    assert said[:3] == [
        ("bot", RETAIL.prompt("greeting", "en")),
        ("customer", "what is the status of order 100234"),
        ("bot", "Order 100234 has shipped."),
    ]
    assert ("bot", "订单100234已发货。") in said[said.index(("customer", "查一下订单100234的状态")) :]


def test_asking_for_an_agent_hands_over_and_the_agents_reply_reaches_the_visitor(site: Site) -> None:
    with visitor(site, language="zh") as v:
        assert v.bot_says() == RETAIL.prompt("greeting", "zh")
        v.say("转人工")
        assert v.bot_says() == RETAIL.prompt("transfer", "zh")
        assert v.wait(lambda f: f["type"] == "status")["handler"] == "queue"
        queued = site.api("GET", "/api/conversations?handler=queue&channel=webchat").json()
        assert v.conversation_id in {c["id"] for c in queued}
        detail = _conversation(site, v.conversation_id)
        assert detail["visitor_connected"] is True and detail["summary"]

        v.send({"type": "typing"})
        deadline = time.monotonic() + WAIT_S
        while not _conversation(site, v.conversation_id)["visitor_typing"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert site.api("POST", f"/api/conversations/{v.conversation_id}/typing").status_code == 204
        v.wait(lambda f: f == {"type": "typing", "author": "agent"})
        r = site.api("POST", f"/api/conversations/{v.conversation_id}/messages", json={"body": EVIL})
        assert r.status_code == 201, r.text
        assert v.wait(lambda f: f["type"] == "status")["handler"] == "agent"
        said = v.wait(lambda f: f["type"] == "message" and f["author"] == "agent")
        assert said["body"] == EVIL and "author_id" not in said
        # The agent has it: the bot answers no more.
        v.say("订单100234的状态呢")
        v.wait(lambda f: f["type"] == "ack")
        v.quiet(lambda f: f["type"] == "message" and f["author"] == "bot", 1.0)
        # Resolved by the agent: the visitor is told, and this conversation takes no more messages.
        assert site.api("POST", f"/api/conversations/{v.conversation_id}/resolve").status_code == 200
        assert v.wait(lambda f: f["type"] == "status")["status"] == "resolved"
        v.say("还有一个问题")
        assert v.wait(lambda f: f["type"] == "error")["code"] == "resolved"
    messages = _conversation(site, v.conversation_id)["messages"]
    assert messages[-1]["body"] == "订单100234的状态呢" and messages[-2]["delivered_at"] is not None
    # The same visitor comes back: a new conversation, greeted again.
    with visitor(site, language="zh", visitor_id=v.session["visitor"]) as again:
        assert again.session["resumed"] is False and again.conversation_id != v.conversation_id
        assert again.bot_says() == RETAIL.prompt("greeting", "zh")


def test_english_agent_request(site: Site) -> None:
    with visitor(site, language="en") as v:
        v.bot_says()
        v.say("agent please")
        assert v.bot_says() == RETAIL.prompt("transfer", "en")
        assert v.wait(lambda f: f["type"] == "status")["handler"] == "queue"


def test_without_a_bot_chats_go_straight_to_the_agents(site: Site) -> None:
    runtime = site.hub._runtime
    site.hub.use_runtime(None)
    try:
        with visitor(site) as v:
            assert v.status["handler"] == "queue"
            v.say("hello, is anyone there?")
            v.wait(lambda f: f["type"] == "ack")
            v.quiet(lambda f: f["type"] in ("typing", "message") and f.get("author") == "bot", 0.5)
    finally:
        site.hub.use_runtime(runtime)
    assert [m["author"] for m in _conversation(site, v.conversation_id)["messages"]] == ["customer"]


@pytest.mark.asyncio
async def test_the_production_runtime_needs_an_llm_and_a_known_bot(api_db: ApiDatabase) -> None:
    assert await open_runtime(api_config(api_db)) is None  # no llm_urls: no bot
    config = api_config(api_db, llm_urls=["http://127.0.0.1:9"], webchat_bot="no-such-bot")
    assert await open_runtime(config) is None
    runtime = await open_runtime(api_config(api_db, llm_urls=["http://127.0.0.1:9"]))
    assert runtime is not None and runtime.bot == "retail" and "retail" in runtime.bots
    assert runtime.params.notice is False and runtime.params.hold_line is False
    await runtime.close()


# --- reconnects, duplicates, limits, bad frames --------------------------------------------------


def test_a_reconnect_resumes_the_conversation_with_its_whole_history(site: Site) -> None:
    with visitor(site) as v:
        v.bot_says()
        v.say("status of order 100234")
        v.bot_said("Order 100234 has shipped.")
        v.say("and order 100234 again")
        v.bot_said("Order 100234 has shipped.")
        time.sleep(0.5)  # the bot's last lines stored
    first = v.session
    expected = [(m["author"], m["body"]) for m in _conversation(site, v.conversation_id)["messages"]]
    with visitor(site, visitor_id=first["visitor"]) as again:
        assert again.session["resumed"] is True and again.conversation_id == v.conversation_id
        history = _history(again.site, again)
        assert [(m["author"], m["body"]) for m in history] == expected
        assert [m["seq"] for m in history] == list(range(1, len(expected) + 1))
        assert history[1]["body"] == "status of order 100234" and len(history) >= 5
        assert again.status == {"type": "status", "status": "open", "handler": "bot"}
        # The bot was rebuilt, without greeting again, and answers.
        again.say("status of order 100234 once more")
        assert again.bot_says() == "Order 100234 has shipped."  # no greeting before it


def _history(site: Site, v: Visitor) -> list[dict[str, Any]]:
    # The history frame came first (visitor() consumed it); ask for it again by reconnecting.
    url = site.url.replace("http", "ws") + "/chat/v1/ws?token=" + v.session["token"]
    with connect(url, origin=Origin(SHOP), proxy=None) as ws:
        frame = json.loads(ws.recv(timeout=WAIT_S))
    assert frame["type"] == "history" and frame["conversation_id"] == v.conversation_id
    return list(frame["messages"])


def test_a_message_sent_twice_is_stored_once(site: Site) -> None:
    with visitor(site) as v:
        v.bot_says()
        v.say("hello there, order 100234?", client_id="dup-1")
        assert not v.wait(lambda f: f["type"] == "ack")["duplicate"]
        v.bot_said("Order 100234 has shipped.")
        time.sleep(0.5)
        v.frames.clear()
        v.say("hello there, order 100234?", client_id="dup-1")
        again = v.wait(lambda f: f["type"] == "ack")
        assert again["duplicate"] and again["seq"] == 2
        v.quiet(lambda f: f["type"] == "message", 0.5)
    stored = _count(
        site,
        "SELECT count(*) FROM aicc.conversation_messages WHERE conversation_id = %s AND client_id = 'dup-1'",
        v.conversation_id,
    )
    assert stored == 1


def test_the_sixth_message_in_ten_seconds_is_refused(site: Site) -> None:
    before = site.refused("rate_limited")
    with visitor(site) as v:
        v.bot_says()
        ids = [v.say(f"message {i}") for i in range(6)]
        acks = [v.wait(lambda f: f["type"] in ("ack", "error")) for _ in ids]
        assert [a["type"] for a in acks] == ["ack"] * 5 + ["error"]
        assert acks[5]["code"] == "rate_limited" and acks[5]["client_id"] == ids[5]
        assert 0 < acks[5]["retry_after"] <= 10
    customer = _count(
        site,
        "SELECT count(*) FROM aicc.conversation_messages WHERE conversation_id = %s AND author = 'customer'",
        v.conversation_id,
    )
    assert customer == 5
    assert site.refused("rate_limited") == before + 1


def test_bad_frames_get_an_error_and_the_connection_stays(site: Site) -> None:
    with visitor(site) as v:
        v.bot_says()
        for raw, code in (
            ("{not json", "bad_json"),
            ("[1, 2]", "bad_json"),
            ('{"type": "dance"}', "unknown_type"),
            ('{"type": "message", "body": "hi"}', "bad_message"),
            ('{"type": "message", "client_id": "a b", "body": "hi"}', "bad_message"),
            ('{"type": "message", "client_id": "x1", "body": "   "}', "bad_message"),
            (json.dumps({"type": "message", "client_id": "x2", "body": "x" * 4001}), "too_long"),
        ):
            before = site.refused(code)
            v.send(raw)
            assert v.wait(lambda f: f["type"] == "error")["code"] == code, raw
            assert site.refused(code) == before + 1
        v.ws.send(b"\x00\x01")
        assert v.wait(lambda f: f["type"] == "error")["code"] == "bad_json"
        v.say("status of order 100234")
        v.bot_said("Order 100234 has shipped.")
    assert (
        _count(
            site,
            "SELECT count(*) FROM aicc.conversation_messages WHERE conversation_id = %s "
            "AND author = 'customer'",
            v.conversation_id,
        )
        == 1
    )


# --- the widget in a browser ---------------------------------------------------------------------


def test_the_widget_on_another_origin(site: Site, browser: Any) -> None:
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.set_default_timeout(WAIT_S * 1000)
    dialogs: list[str] = []
    errors: list[str] = []

    def on_dialog(dialog: Any) -> None:  # an alert() would be the agent's text running
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(site.page_url)
        page.click(".launcher")  # Playwright's CSS pierces the widget's open shadow root
        page.wait_for_selector(".msg.bot >> text=" + RETAIL.prompt("greeting", "en"))
        question = "where is my order 100234, asks the browser"
        page.fill("textarea", question)
        page.press("textarea", "Enter")
        page.wait_for_selector(".msg.bot >> text=Order 100234 has shipped.")
        assert page.locator(".msg.customer:not(.pending)").count() == 1
        cid = _conversation_of(site, question)
        r = site.api("POST", f"/api/conversations/{cid}/messages", json={"body": EVIL})
        assert r.status_code == 201
        agent = page.wait_for_selector(".msg.agent .body")
        assert agent.text_content() == EVIL
        images = "h => h.shadowRoot.querySelectorAll('img').length"
        assert page.locator("[data-aicc-chat]").evaluate(images) == 0
        page.wait_for_selector(".msg.system >> text=An agent has joined.")
        shown = page.locator(".msg:not(.system) .body").all_text_contents()
        # A reload resumes the conversation (the visitor id is in localStorage) with its history.
        page.reload()
        page.click(".launcher")
        page.wait_for_selector(".msg.agent .body")
        assert page.locator(".msg:not(.system) .body").all_text_contents() == shown
        assert shown[-1] == EVIL and question in shown
        assert not dialogs and not errors, (dialogs, errors)
    finally:
        context.close()


def _conversation_of(site: Site, body: str) -> str:
    with psycopg.connect(site.db.dsn) as conn:
        row = conn.execute(
            "SELECT conversation_id FROM aicc.conversation_messages WHERE body = %s", (body,)
        ).fetchone()
    assert row is not None
    return str(row[0])
