"""The agent desktop's Chats tab in a real browser, without a lab: the app served by uvicorn over its
own migrated database (as test_desk_tickets_page), web chat on with the real dialogue manager on the
voice tests' fake LLM and connector (as test_webchat), a visitor on the real session route and
WebSocket (the `websockets` client), and the agent in Debian's Chromium (Playwright).

The visitor asks the bot about an order, then for an agent; the agent, already on the Chats tab, sees
the chat arrive in "waiting" without reloading, opens it (the whole history, the bot's hand-over note,
a suggested article), takes it, replies with Enter (Shift+Enter a new line; the visitor's socket
receives it, and "agent typing" once for a burst of keys), sees the visitor's next messages (markup,
a 4,000-character one, Chinese) appear as text within a few seconds, sees "typing", and resolves it,
which takes it off "mine" and tells the visitor. Another test: two chats of the agent's own, the
"New" mark on the one not open, the keyboard, a reply whose answer is lost and is sent again (stored
once: its client id), and the labels in Mandarin. And with the ACD routing chats (a real AcdService
in a thread, a chat queue, the agent ready with chat capacity 2): the visitor's chat handed over is
offered to the agent's desk ("Chat offered", the ring time counting down), Accept opens it, the first
reply is due and the agent replies; resolving frees the chat capacity.

The desk polls the conversations' REST routes (no push to agents yet): every 3 s while the Chats tab
is shown, so "without reload" here means within that. The ACD's offer comes with the live push.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from aicc.appliance.acd.metrics import AcdMetrics
from aicc.appliance.acd.service import AcdService
from aicc.appliance.api.app import create_app
from aicc.appliance.api.auth import Passwords
from aicc.appliance.api.config import AcdSettings
from aicc.appliance.channels.textbot import BotRuntime
from aicc.appliance.channels.webchat import WebChatHub
from tests.unit.api_support import (
    FAST_HASHER,
    ApiDatabase,
    ApiUser,
    api_config,
    api_db_fixture,  # noqa: F401
    fresh_database,
    make_user,
)
from tests.unit.browser_support import browser_fixture, serve  # noqa: F401
from tests.unit.test_desk_tickets_page import STATIC, WAIT_MS, _keys, _screenshot
from tests.unit.test_voice_fakes import RETAIL, FakeConnector, FakeLLM, retail_on

KEY = "desk-chats-widget-key-0123"
SHOP = "https://shop.example"
STATUS = {"intent": "tools", "actions": [{"tool": "get_order_status", "arguments": {"order_id": "100234"}}]}
SCRIPT = "<script>alert('chat')</script>"
IMG = "<img src=x onerror=alert(1)>"
LONG = ("很长的消息" + "x" * 95) * 40  # 4,000 characters, the most a message may have
FEW_S = 10.0  # "within a few seconds": one poll (3 s) on a busy 2-core machine, with room
WAIT_S = 15.0


@dataclass(frozen=True)
class Site:
    url: str
    db: ApiDatabase
    agent: ApiUser
    article: int

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, self.url + path, headers=self.agent.headers, timeout=10, trust_env=False, **kwargs
        )


def _article(url: str, admin: ApiUser) -> int:
    """A public article about order status, published: the chat's suggestion."""
    with httpx.Client(base_url=url, headers=admin.headers, timeout=10, trust_env=False) as client:
        body = {
            "language": "zh",
            "title": "如何查询订单状态",
            "body": "客户可以在订单详情页查看订单状态和物流信息；订单发货后会收到短信。",
            "visibility": "public",
        }
        r = client.post("/api/kb/articles", json=body)
        assert r.status_code == 201, r.text
        article = int(r.json()["id"])
        r = client.post(f"/api/kb/articles/{article}/publish")
        assert r.status_code == 200, r.text
    return article


@pytest.fixture(scope="module")
def site(api_db: ApiDatabase) -> Iterator[Site]:
    db = fresh_database(api_db, "desk_chats")
    agent = make_user(db, "agent", username="desk-chats-agent")
    admin = make_user(db, "admin", username="desk-chats-admin")
    config = api_config(
        db,
        acd={"result_timeout_s": 0.3},  # no ACD here: the live picture's question to it gives up quickly
        chat_queue="",  # nor chats routed by one: agents take them from the list
        webchat_keys=[KEY],
        webchat_origins=[SHOP],
        webchat_rate_messages=100,
    )
    app = create_app(config)
    app.state.aicc.passwords = Passwords(hasher=FAST_HASHER)
    hub: WebChatHub = app.state.webchat
    hub.use_runtime(
        BotRuntime(FakeLLM({"订单": STATUS, "order": STATUS}), retail_on(FakeConnector()), "retail")
    )
    with serve(app) as url:
        yield Site(url, db, agent, _article(url, admin))


@contextlib.contextmanager
def acd_running(db: ApiDatabase) -> Iterator[AcdService]:
    """The ACD in a thread of its own, as on an [app] host."""
    service = AcdService(db.dsn, AcdSettings(registrations_poll_s=0.5, tick_s=0.2), AcdMetrics())
    started = threading.Event()
    box: dict[str, Any] = {}

    async def run() -> None:
        box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
        started.set()
        await service.run(box["stop"])

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield service
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(15)


@pytest.fixture(scope="module")
def routed(api_db: ApiDatabase) -> Iterator[Site]:
    """The site with the ACD routing chats: the chat queue (app.yml's chat_queue), an agent with a
    registered phone and chat capacity 2."""
    db = fresh_database(api_db, "desk_chats_acd")
    agent = make_user(db, "agent", username="desk-acd-agent")
    chat = {"name": "chat", "channel": "chat", "language": "zh", "ring_timeout_s": 60, "wrap_up_s": 0}
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO aicc.queues (name, config) VALUES ('chat', %s)", (Jsonb(chat),))
        conn.execute("CREATE SCHEMA kamailio")
        conn.execute("CREATE TABLE kamailio.location (username text, expires timestamp)")
        conn.execute("INSERT INTO kamailio.location VALUES ('1201', localtimestamp + interval '1 day')")
        conn.execute(
            "INSERT INTO aicc.agents (user_id, extension, profile) VALUES (%s, '1201', %s)",
            (agent.id, Jsonb({"capacity": {"voice": 1, "chat": 2}})),
        )
    config = api_config(db, webchat_keys=[KEY], webchat_origins=[SHOP], webchat_rate_messages=100)
    app = create_app(config)
    app.state.aicc.passwords = Passwords(hasher=FAST_HASHER)
    hub: WebChatHub = app.state.webchat
    hub.use_runtime(
        BotRuntime(FakeLLM({"订单": STATUS, "order": STATUS}), retail_on(FakeConnector()), "retail")
    )
    with acd_running(db), serve(app) as url:
        yield Site(url, db, agent, 0)


# --- the visitor -----------------------------------------------------------------------------------


@dataclass
class Visitor:
    """A visitor's session and socket; `frames` keeps what the server sent and nobody waited for."""

    session: dict[str, Any]
    ws: ClientConnection
    frames: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.session["conversation_id"])

    def say(self, body: str) -> None:
        frame = {"type": "message", "client_id": uuid.uuid4().hex, "body": body}
        self.ws.send(json.dumps(frame, ensure_ascii=False))
        self.wait(lambda f: f["type"] == "ack" and f["client_id"] == frame["client_id"])

    def typing(self) -> None:
        self.ws.send('{"type": "typing"}')

    def drain(self, seconds: float = 0.0) -> None:
        """Read what has come (waiting up to `seconds` for more) into `frames`."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.frames.append(json.loads(self.ws.recv(timeout=max(0.0, deadline - time.monotonic()))))
            except TimeoutError:
                return

    def wait(self, match: Callable[[dict[str, Any]], bool], timeout: float = WAIT_S) -> dict[str, Any]:
        """The first frame (come already or coming) that matches; consumed."""
        deadline = time.monotonic() + timeout
        while True:
            for i, frame in enumerate(self.frames):
                if match(frame):
                    return self.frames.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching frame within {timeout} s; got {self.frames}")
            with contextlib.suppress(TimeoutError):
                self.frames.append(json.loads(self.ws.recv(timeout=left)))

    def bot_said(self, text: str) -> None:
        self.wait(lambda f: f["type"] == "message" and f["author"] == "bot" and f["body"] == text)


@contextlib.contextmanager
def visitor(site: Site, language: str = "zh") -> Iterator[Visitor]:
    r = httpx.post(
        site.url + "/chat/v1/sessions",
        json={"key": KEY, "language": language},
        headers={"Origin": SHOP},
        timeout=10,
        trust_env=False,
    )
    assert r.status_code == 200, r.text
    session = r.json()
    url = site.url.replace("http", "ws") + session["ws_path"] + "?token=" + session["token"]
    with connect(url, origin=Origin(SHOP), proxy=None, open_timeout=10) as ws:
        v = Visitor(session, ws)
        v.wait(lambda f: f["type"] == "history")
        v.wait(lambda f: f["type"] == "status")
        yield v


def _handed_over(v: Visitor) -> None:
    """The bot greets, answers an order question, and hands over on 转人工."""
    v.bot_said(RETAIL.prompt("greeting", "zh"))
    v.say("查一下订单100234的状态")
    v.bot_said("订单100234已发货。")
    v.say("转人工")
    v.bot_said(RETAIL.prompt("transfer", "zh"))
    assert v.wait(lambda f: f["type"] == "status")["handler"] == "queue"


# --- the agent's desk --------------------------------------------------------------------------------


@pytest.fixture
def page(browser: Any, site: Site, tmp_path_factory: pytest.TempPathFactory, request: Any) -> Iterator[Any]:
    """A signed-in desk (English) with the Chats tab open. A failing test leaves a screenshot."""
    with _desk(browser, site, tmp_path_factory, request) as tab:
        yield tab


@pytest.fixture
def routed_page(
    browser: Any, routed: Site, tmp_path_factory: pytest.TempPathFactory, request: Any
) -> Iterator[Any]:
    """The desk of the site where the ACD routes chats."""
    with _desk(browser, routed, tmp_path_factory, request) as tab:
        yield tab


@contextlib.contextmanager
def _desk(browser: Any, site: Site, tmp_path_factory: pytest.TempPathFactory, request: Any) -> Iterator[Any]:
    context = browser.new_context(locale="en-US", viewport={"width": 1366, "height": 768})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    alerts: list[str] = []
    errors: list[str] = []

    def on_dialog(dialog: Any) -> None:  # an alert() would be the visitor's text running
        alerts.append(dialog.message)
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.alerts, tab.errors = alerts, errors
    tab.goto(f"{site.url}/desk/")
    tab.fill("#login-username", site.agent.username)
    tab.fill("#login-password", str(site.agent.password))
    tab.click("#login-submit")
    tab.wait_for_selector("#desk:not([hidden])")
    tab.click("#tab-chats")
    tab.wait_for_selector("#pane-chats:not([hidden])")
    tab.wait_for_selector("#pane-tickets", state="hidden")
    try:
        yield tab
        assert not alerts and not errors, (alerts, errors)
    except BaseException:
        _screenshot(tab, tmp_path_factory, request.node.name)
        raise
    finally:
        context.close()


def _wait_text(tab: Any, selector: str, text: str, timeout_s: float = WAIT_S) -> float:
    """Seconds until the element under `selector` has exactly `text` as its text."""
    start = time.monotonic()
    tab.wait_for_function(
        "([s, t]) => [...document.querySelectorAll(s)].some((n) => n.textContent === t)",
        arg=[selector, text],
        timeout=timeout_s * 1000,
    )
    return time.monotonic() - start


def _bodies(tab: Any, author: str) -> list[str]:
    return [
        str(x)
        for x in tab.locator(
            f"#cv-messages .chat-msg[data-author='{author}'] .chat-msg-body"
        ).all_text_contents()
    ]


def test_an_agent_takes_answers_and_resolves_a_web_chat(page: Any, site: Site) -> None:
    tab = page
    with visitor(site) as v:
        _handed_over(v)
        item = f"#chats-waiting li[data-id='{v.id}']"
        start = time.monotonic()
        tab.wait_for_selector(item)  # polled in: no reload
        assert time.monotonic() - start < FEW_S
        assert tab.is_visible(f"{item} .chat-new")
        assert re.fullmatch(r"\d\d:\d\d", str(tab.text_content(f"{item} .chat-wait"))), tab.text_content(item)
        transfer = RETAIL.prompt("transfer", "zh")
        assert f"Bot: {transfer}" in str(tab.text_content(f"{item} .chat-item-last"))
        assert tab.get_attribute("#tab-chats-count", "hidden") is None

        # Open it: the whole history, styled by author, the bot's note; waiting, so no reply yet.
        tab.click(f"{item} .chat-open")
        tab.wait_for_selector(f"#chat-view[data-id='{v.id}'][data-state='waiting']")
        assert not tab.is_visible(f"{item} .chat-new")  # seen
        assert _bodies(tab, "customer") == ["查一下订单100234的状态", "转人工"]
        assert _bodies(tab, "bot")[:2] == [RETAIL.prompt("greeting", "zh"), "订单100234已发货。"]
        detail = site.api("GET", f"/api/conversations/{v.id}").json()
        assert detail["summary"] and tab.text_content("#cv-summary") == detail["summary"]
        assert tab.text_content("#cv-state") == "Waiting"
        assert tab.text_content("#cv-presence") == "Customer online"
        channel = tab.locator("#cv-facts .kv-row", has_text="Channel").text_content()
        assert "Web chat" in str(channel) and "Chinese" in str(tab.text_content("#cv-facts"))
        assert tab.is_disabled("#cv-body") and tab.text_content("#cv-reply-hint") == "Take the chat to reply."
        tab.wait_for_selector(f"#cv-kb-list li[data-id='{site.article}']")
        assert (
            tab.text_content(f"#cv-kb-list li[data-id='{site.article}'] .kb-hit-title") == "如何查询订单状态"
        )

        # Take it: it moves from "waiting" to "mine", and the visitor is told an agent has it.
        tab.click("#cv-take")
        tab.wait_for_selector("#chat-view[data-state='mine']")
        tab.wait_for_selector(f"#chats-mine li[data-id='{v.id}']")
        tab.wait_for_selector(item, state="detached")
        assert v.wait(lambda f: f["type"] == "status")["handler"] == "agent"
        assert tab.evaluate("document.activeElement.id") == "cv-body"

        # A reply of two lines (Shift+Enter), sent with Enter; "typing" reaches the visitor once.
        v.drain()
        v.frames.clear()
        tab.type("#cv-body", "您好，我是客服小李，马上为您查询。", delay=15)
        tab.keyboard.press("Shift+Enter")
        tab.type("#cv-body", "请稍等。")
        tab.keyboard.press("Enter")
        reply = "您好，我是客服小李，马上为您查询。\n请稍等。"
        said = v.wait(lambda f: f["type"] == "message" and f["author"] == "agent")
        assert said["body"] == reply and said["client_id"].startswith("desk-")
        v.drain(0.3)
        assert [f for f in v.frames if f["type"] == "typing"] == [{"type": "typing", "author": "agent"}]
        _wait_text(tab, "#cv-messages .chat-msg[data-author='agent'][data-seq] .chat-msg-body", reply)
        assert tab.input_value("#cv-body") == ""

        # The visitor writes: each line shows as text, in order, within a few seconds.
        for body in (SCRIPT, IMG, "我还想改一下收货地址", LONG):
            v.say(body)
        elapsed = _wait_text(tab, "#cv-messages .chat-msg[data-author='customer'] .chat-msg-body", LONG)
        assert elapsed < FEW_S, elapsed
        assert _bodies(tab, "customer")[-4:] == [SCRIPT, IMG, "我还想改一下收货地址", LONG]
        assert tab.locator("#pane-chats img, #pane-chats script").count() == 0
        v.typing()
        tab.wait_for_function("() => document.querySelector('#cv-typing').textContent.includes('typing')")

        # A ticket from the chat: it opens in the Tickets tab, linked to the chat, with its words.
        tab.click("#cv-ticket")
        tab.wait_for_selector("#pane-tickets:not([hidden]) #ticket-view:not([hidden])")
        number = str(tab.text_content("#tv-number")).strip()
        ticket = site.api("GET", f"/api/tickets/{number}").json()
        language = site.api("GET", f"/api/conversations/{v.id}").json()["language"]  # the latest message's
        assert ticket["conversation_id"] == str(v.id) and ticket["source"] == "chat"
        assert ticket["language"] == language
        assert ticket["subject"] == " ".join(detail["summary"].split())[:120]
        assert f"Customer: {LONG}" in ticket["description"] and f"Agent: {reply}" in ticket["description"]
        tab.click("#tab-chats")
        tab.wait_for_selector(f"#chat-view[data-id='{v.id}'][data-state='mine']")

        # Resolved: off "mine"; the visitor is told; nothing more to send.
        tab.click("#cv-resolve")
        tab.wait_for_selector("#chat-view[data-state='resolved']")
        tab.wait_for_selector(f"#chats-mine li[data-id='{v.id}']", state="detached")
        assert v.wait(lambda f: f["type"] == "status")["status"] == "resolved"
        assert tab.is_disabled("#cv-body") and tab.is_hidden("#cv-resolve")
    detail = site.api("GET", f"/api/conversations/{v.id}").json()
    assert (detail["status"], detail["assignee"], detail["handler"]) == ("resolved", site.agent.id, "agent")
    agent_lines = [m for m in detail["messages"] if m["author"] == "agent"]
    assert [m["body"] for m in agent_lines] == [reply] and agent_lines[0]["author_id"] == site.agent.id
    assert not tab.alerts


def test_the_acd_offers_a_handed_over_chat_to_the_ready_agent_who_accepts_and_replies(
    routed_page: Any, routed: Site
) -> None:
    tab, site = routed_page, routed
    r = site.api("POST", "/api/agents/me/status", json={"status": "ready"})
    assert r.status_code == 200, r.text
    tab.wait_for_selector("#agent-status[data-status='ready']")
    with visitor(site) as v:
        _handed_over(v)
        # Offered with the live push, above the tabs: the customer, the bot's note, the ring time.
        offer = f"#chat-offer:not([hidden])[data-id='{v.id}']"
        start = time.monotonic()
        tab.wait_for_selector(offer)
        assert time.monotonic() - start < FEW_S
        # It chimed once (a WebAudio chime: the agent may be in another window), not at every push.
        tab.wait_for_function("() => document.body.dataset.chimes === '1'", timeout=FEW_S * 1000)
        summary = site.api("GET", f"/api/conversations/{v.id}").json()["summary"]
        assert summary and tab.text_content("#chat-offer-summary") == summary
        assert tab.text_content("#chat-offer-queue") == "chat"
        assert tab.text_content("#chat-offer-channel") == "Web chat"
        left = str(tab.text_content("#chat-offer-timer"))
        assert re.fullmatch(r"00:[0-5]\d|01:00", left), left
        tab.wait_for_function("t => document.querySelector('#chat-offer-timer').textContent !== t", arg=left)
        assert tab.get_attribute("#agent-status", "data-state") == "reserved"

        # Accept: the chat opens in the Chats tab, the customer is told, the first reply is due.
        tab.click("#chat-offer-accept")
        tab.wait_for_selector(f"#chat-view[data-id='{v.id}'][data-state='mine']")
        tab.wait_for_selector("#chat-offer", state="hidden")
        assert v.wait(lambda f: f["type"] == "status")["handler"] == "agent"
        assert tab.evaluate("document.body.dataset.chimes") == "1"  # the live pushes since: no more
        tab.wait_for_selector(f"#chats-mine li[data-id='{v.id}']")
        assert "Reply within" in str(tab.text_content("#cv-facts"))
        _wait_text(tab, "#chats-capacity", "Chats held: 1 of 2")
        detail = site.api("GET", f"/api/conversations/{v.id}").json()
        assert detail["assignee"] == site.agent.id and detail["accepted_at"] and detail["reply_due_at"]

        # The reply goes to the visitor; the deadline is met.
        tab.fill("#cv-body", "您好，我是客服小李。")
        tab.keyboard.press("Enter")
        said = v.wait(lambda f: f["type"] == "message" and f["author"] == "agent")
        assert said["body"] == "您好，我是客服小李。"
        tab.wait_for_function(
            "() => !document.querySelector('#cv-facts').textContent.includes('Reply within')"
        )
        assert site.api("GET", f"/api/conversations/{v.id}").json()["reply_due_at"] is None

        # Resolved: the contact ends and the agent's chat capacity frees.
        tab.click("#cv-resolve")
        tab.wait_for_selector("#chat-view[data-state='resolved']")
        _wait_text(tab, "#chats-capacity", "Chats held: 0 of 2")
    site.api("POST", "/api/agents/me/status", json={"status": "logged_out"})


def _mine(site: Site, v: Visitor) -> None:
    r = site.api("POST", f"/api/conversations/{v.id}/assign", json={"unassigned_only": True})
    assert r.status_code == 200, r.text
    assert v.wait(lambda f: f["type"] == "status")["handler"] == "agent"


def test_new_messages_a_lost_answer_and_the_page_in_mandarin(page: Any, site: Site) -> None:
    tab = page
    with visitor(site) as first, visitor(site) as second:
        for v in (first, second):
            v.bot_said(RETAIL.prompt("greeting", "zh"))
            v.say("转人工")
            v.wait(lambda f: f["type"] == "status" and f["handler"] == "queue")
            _mine(site, v)
        one, two = f"#chats-mine li[data-id='{first.id}']", f"#chats-mine li[data-id='{second.id}']"
        tab.wait_for_selector(f"{one}[data-unread='true']")  # the bot's hand-over line, not seen yet
        tab.click(f"{two} .chat-open")
        tab.wait_for_selector(f"{two}[data-unread='false']")
        # Open the first with the keyboard; the second's customer writes: it is marked new.
        # (locator.press focuses and presses in one step: a list redrawn in between cannot eat the key)
        tab.locator(f"{one} .chat-open").press("Enter")
        tab.wait_for_selector(f"#chat-view[data-id='{first.id}'][data-state='mine']")
        tab.wait_for_selector(f"{one}[data-unread='false']")
        second.say("有人吗？")
        tab.wait_for_selector(f"{two}[data-unread='true'] .chat-new:not([hidden])", timeout=FEW_S * 1000)
        assert tab.get_attribute("#tab-chats-count", "data-unread") == "true"
        order = tab.locator("#chats-mine li").evaluate_all("items => items.map((li) => li.dataset.id)")
        tab.focus(f"{one} .chat-open")
        tab.keyboard.press("ArrowDown" if order.index(first.id) < order.index(second.id) else "ArrowUp")
        assert tab.evaluate("document.activeElement.closest('li').dataset.id") == second.id
        tab.keyboard.press("Enter")
        tab.wait_for_selector(f"#chat-view[data-id='{second.id}']")
        tab.wait_for_selector(f"{two}[data-unread='false']")
        _wait_text(tab, "#cv-messages .chat-msg[data-author='customer'] .chat-msg-body", "有人吗？")

        # The answer to a reply is lost (the API stored it), and the chat's reads see nothing new
        # meanwhile: "Send again" sends the same client id, and the API keeps the message once.
        lost: list[str] = []
        flaky = {"lose": True, "hold": True}

        def network(route: Any) -> None:
            request = route.request
            if request.method == "POST" and request.url.endswith("/messages") and flaky["lose"]:
                flaky["lose"] = False
                route.fetch()  # the request reaches the API...
                lost.append(request.post_data or "")
                route.abort()  # ...and its answer never reaches the page
            elif request.method == "GET" and flaky["hold"]:
                route.fulfill(status=304)
            else:
                route.continue_()

        chat_routes = re.compile(r"/api/conversations/[0-9a-f-]{36}")
        tab.route(chat_routes, network)
        tab.fill("#cv-body", "在的，请讲。")
        tab.press("#cv-body", "Enter")
        tab.wait_for_selector("#cv-messages .chat-msg[data-pending='failed'] .chat-retry")
        said = second.wait(lambda f: f["type"] == "message" and f["author"] == "agent")
        tab.click("#cv-messages .chat-msg[data-pending='failed'] .chat-retry")
        tab.wait_for_selector("#cv-messages .chat-msg[data-pending='sent']")
        flaky["hold"] = False
        tab.wait_for_selector("#cv-messages .chat-msg[data-pending]", state="detached")
        tab.unroute(chat_routes)
        _wait_text(
            tab, "#cv-messages .chat-msg[data-author='agent'][data-seq] .chat-msg-body", "在的，请讲。"
        )
        messages = site.api("GET", f"/api/conversations/{second.id}").json()["messages"]
        agent_lines = [m for m in messages if m["author"] == "agent"]
        assert len(agent_lines) == 1 and agent_lines[0]["client_id"] == said["client_id"], agent_lines
        assert json.loads(lost[0])["client_id"] == said["client_id"]
        assert _bodies(tab, "agent") == ["在的，请讲。"]

        # 中文
        tab.select_option("#lang-switch", "zh")
        tab.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
        assert str(tab.text_content("#tab-chats")).startswith("在线会话")
        assert str(tab.text_content("#h-chats-waiting")).startswith("等待人工")
        assert str(tab.text_content("#h-chats-mine")).startswith("我的会话")
        assert tab.text_content("#cv-state") == "由您处理"
        assert tab.text_content("#cv-resolve") == "结束会话" and tab.text_content("#cv-send") == "发送"
        assert tab.text_content("#cv-reply-hint") == "Enter 发送 · Shift+Enter 换行"
        heads = tab.locator("#cv-messages .chat-msg-who").all_text_contents()
        assert {"客户", "机器人", "我"} <= set(heads), heads
        assert "网页聊天" in str(tab.text_content("#cv-facts"))
        for v in (first, second):
            assert site.api("POST", f"/api/conversations/{v.id}/resolve").status_code == 200
        tab.wait_for_selector("#chats-mine li", state="detached")
        assert (
            tab.is_visible("#chats-mine-empty")
            and tab.text_content("#chats-mine-empty") == "您没有进行中的会话。"
        )


def test_every_chat_string_is_in_both_languages() -> None:
    """Mandarin as complete as English, and every key the page and chats.js name exists."""
    source = (STATIC / "js" / "i18n.js").read_text(encoding="utf-8")
    en_block, zh_block = source.split("\n  zh: {", 1)
    en, zh = _keys(en_block.split("\n  en: {", 1)[1]), _keys(zh_block.split("\n};", 1)[0])
    assert en == zh, {"only en": sorted(en - zh), "only zh": sorted(zh - en)}
    html = (STATIC / "desk.html").read_text(encoding="utf-8")
    named = set(re.findall(r'data-i18n(?:-title|-placeholder|-aria)?="([^"]+)"', html))
    script = (STATIC / "js" / "chats.js").read_text(encoding="utf-8")
    # Every key written out (labelFor's first argument is a prefix, can's a permission).
    named |= set(re.findall(r"(?<!labelFor\()(?<!can\()'((?:chats|kb|tabs)\.[a-zA-Z0-9_.]+)'", script))
    named |= {f"chats.state.{s}" for s in ("waiting", "mine", "other", "bot", "resolved")}
    named |= {f"chats.author.{a}" for a in ("customer", "bot", "agent", "system", "me")}
    named |= {f"chats.ident.{k}" for k in ("phone", "email", "wecom", "openid", "app", "other")}
    named |= {f"chats.channelName.{c}" for c in ("webchat", "voice", "email", "wecom", "sms", "app")}
    named |= {"chats.lang.zh", "chats.lang.en"}
    assert {"tabs.chats", "chats.take", "chats.resolve", "chats.replyHint"} <= named
    assert named - en == set(), sorted(named - en)
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "/static/js/chats.js" not in html  # loaded by desk.js, as tickets.js and knowledge.js
    assert 'href="/static/css/chats.css"' in html
