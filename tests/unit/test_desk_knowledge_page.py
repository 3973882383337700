"""The agent desktop's knowledge base and notifications in a real browser, without a lab: the app served
by uvicorn over its own migrated database, Debian's Chromium driven by Playwright (as
test_desk_tickets_page). An administrator writes four articles through the API (a zh and an en public
one, an internal one, a draft); an agent searches in Mandarin and sees the zh article with the matched
words in <mark>, an article body holding HTML as text, never the draft; opens and copies an article;
gets the articles suggested for the contact on screen from the bot's summary and the caller's words;
and sees an SLA notification on the bell, which, chosen, is read (the API says so) and opens the
ticket. An auditor (no notifications.own) never asks for notifications.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from aicc.appliance.api.app import create_app
from aicc.appliance.api.auth import Passwords
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
from tests.unit.test_desk_tickets_page import EVIL, STATIC, WAIT_MS, _keys, _live, _screenshot

ZH_BODY = f"快递包裹破损时，客户可以在签收后七天内申请换货。{EVIL}\n第二步：请客户拍照上传破损的外箱。"
EN_BODY = "A damaged parcel can be exchanged within seven days.\nAsk the customer for a photo of the box."


@dataclass(frozen=True)
class Site:
    url: str
    db: ApiDatabase
    agent: ApiUser
    auditor: ApiUser
    articles: dict[str, int]

    def api(self, method: str, path: str, who: ApiUser | None = None, **kwargs: Any) -> httpx.Response:
        headers = (who or self.agent).headers
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kwargs)


def _seed(url: str, admin: ApiUser) -> dict[str, int]:
    """Four articles written and (but the draft) published as the knowledge manager does."""
    specs = {
        "zh": {"language": "zh", "title": "包裹破损如何换货", "body": ZH_BODY, "visibility": "public"},
        "en": {"language": "en", "title": "Damaged parcel exchange", "body": EN_BODY, "visibility": "public"},
        "internal": {
            "language": "zh",
            "title": "破损理赔内部审批",
            "body": "内部流程：包裹破损金额超过五百元的换货需要主管审批。",
            "visibility": "internal",
        },
        "draft": {"language": "zh", "title": "换货新政策草稿", "body": "草稿：包裹破损换货的新规定。"},
    }
    ids: dict[str, int] = {}
    with httpx.Client(base_url=url, headers=admin.headers, timeout=10) as client:
        for name, body in specs.items():
            r = client.post("/api/kb/articles", json=body)
            assert r.status_code == 201, r.text
            ids[name] = r.json()["id"]
            if name != "draft":
                r = client.post(f"/api/kb/articles/{ids[name]}/publish")
                assert r.status_code == 200 and r.json()["status"] == "published", r.text
    return ids


@pytest.fixture(scope="module")
def site(api_db: ApiDatabase) -> Iterator[Site]:
    """The whole app on a free port, in a thread, over a database of its own."""
    db = fresh_database(api_db, "desk_knowledge")
    agent = make_user(db, "agent", username="desk-kb-agent")
    auditor = make_user(db, "auditor", username="desk-kb-auditor")
    admin = make_user(db, "admin", username="desk-kb-admin")
    app = create_app(api_config(db, acd={"result_timeout_s": 0.3}))
    app.state.aicc.passwords = Passwords(hasher=FAST_HASHER)
    with serve(app) as url:
        yield Site(url, db, agent, auditor, _seed(url, admin))


@pytest.fixture
def desk(browser: Any, site: Site, tmp_path_factory: pytest.TempPathFactory, request: Any) -> Iterator[Any]:
    """Opens signed-in desks: desk(user) -> a page (English). A failing test leaves screenshots."""
    contexts: list[Any] = []
    tabs: list[Any] = []

    def open_desk(user: ApiUser) -> Any:
        context = browser.new_context(locale="en-US", viewport={"width": 1366, "height": 768})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
        contexts.append(context)
        tab = context.new_page()
        tab.set_default_timeout(WAIT_MS)
        tab.alerts, tab.errors, tab.requests = [], [], []

        def on_dialog(dialog: Any) -> None:  # an alert() would be injected HTML running
            tab.alerts.append(dialog.message)
            dialog.dismiss()

        tab.on("dialog", on_dialog)
        tab.on("pageerror", lambda e: tab.errors.append(str(e)))
        tab.on("request", lambda r: tab.requests.append(r.url))
        tab.goto(f"{site.url}/desk/")
        tab.fill("#login-username", user.username)
        tab.fill("#login-password", str(user.password))
        tab.click("#login-submit")
        tab.wait_for_selector("#desk:not([hidden])")
        tabs.append(tab)
        return tab

    try:
        yield open_desk
        for tab in tabs:
            assert not tab.alerts and not tab.errors, (tab.alerts, tab.errors)
    except BaseException:
        for i, tab in enumerate(tabs):
            _screenshot(tab, tmp_path_factory, f"{request.node.name}-{i}")
        raise
    finally:
        for context in contexts:
            context.close()


def test_search_in_mandarin_read_and_copy(desk: Any, site: Site) -> None:
    tab = desk(site.agent)
    ids = site.articles
    tab.select_option("#lang-switch", "zh")
    tab.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
    assert tab.text_content("#tab-knowledge") == "知识库"
    tab.click("#tab-knowledge")
    tab.wait_for_selector("#pane-knowledge:not([hidden])")
    assert tab.is_hidden("#pane-contact") and tab.is_hidden("#pane-tickets")
    assert tab.is_checked("input[name='kb-lang'][value='zh']")  # the page's language

    tab.fill("#kb-q", "包裹破损换货")
    tab.press("#kb-q", "Enter")
    hit = f"#kb-results li[data-id='{ids['zh']}']"
    tab.wait_for_selector(hit)
    shown = {int(x) for x in tab.eval_on_selector_all("#kb-results li", "ns => ns.map(n => n.dataset.id)")}
    assert ids["zh"] in shown and ids["internal"] in shown, shown
    assert ids["draft"] not in shown and ids["en"] not in shown, shown  # never drafts; zh only
    marks = tab.locator(f"{hit} .kb-snippet mark").all_text_contents()
    assert marks and all(m in "包裹破损换货" for m in marks), marks
    # The snippet's escaped HTML is text: no element, no alert.
    assert EVIL in str(tab.text_content(f"{hit} .kb-snippet"))
    assert tab.locator("#pane-knowledge img").count() == 0
    assert tab.text_content(f"#kb-results li[data-id='{ids['internal']}'] .kb-visibility") == "内部"
    assert "找到" in str(tab.text_content("#kb-status"))

    # The toggle asks the other language again at once: no English article says this.
    tab.check("input[name='kb-lang'][value='en']")
    tab.wait_for_function("() => document.querySelector('#kb-status').textContent.startsWith('没有')")
    assert tab.locator("#kb-results li").count() == 0
    tab.fill("#kb-q", "damaged parcel")
    tab.press("#kb-q", "Enter")
    tab.wait_for_selector(f"#kb-results li[data-id='{ids['en']}'] .kb-snippet mark")
    tab.check("input[name='kb-lang'][value='zh']")
    tab.fill("#kb-q", "包裹破损")
    tab.press("#kb-q", "Enter")
    tab.wait_for_selector(hit)

    # Opened with the keyboard: the whole body, as text, its line breaks kept; then copied.
    tab.focus(f"{hit} .kb-hit-title")
    tab.keyboard.press("Enter")
    tab.wait_for_selector(f"#kb-article[data-id='{ids['zh']}']:not([hidden])")
    assert tab.text_content("#kb-article-title") == "包裹破损如何换货"
    assert tab.text_content("#kb-article-body") == ZH_BODY
    assert tab.eval_on_selector("#kb-article-body", "n => getComputedStyle(n).whiteSpace") == "pre-wrap"
    assert tab.locator("#pane-knowledge img").count() == 0
    assert "公开" in str(tab.text_content("#kb-article-meta"))
    tab.click("#kb-copy")
    tab.wait_for_selector("#kb-copy-note:not([hidden])")
    assert tab.text_content("#kb-copy-note") == "已复制，可粘贴到回复中。"
    assert tab.evaluate("() => navigator.clipboard.readText()") == ZH_BODY

    # Another tab hides the pane; back again with the keyboard, the article is still there.
    tab.click("#tab-tickets")
    tab.wait_for_selector("#pane-knowledge", state="hidden")
    tab.keyboard.press("ArrowRight")
    tab.wait_for_selector("#kb-article:not([hidden])")
    assert tab.evaluate("() => document.activeElement.id") == "tab-knowledge"
    assert tab.is_hidden("#pane-tickets") and tab.is_hidden("#pane-contact")


def test_articles_suggested_for_the_contact_on_screen(desk: Any, site: Site) -> None:
    tab = desk(site.agent)
    agent, contact_id, call_id = site.agent.id, str(uuid.uuid4()), f"call-{uuid.uuid4().hex[:12]}"
    profile = {"skills": {}, "languages": ["zh"], "capacity": {"voice": 1}}
    contact = {
        "caller": "13800138000",
        "call_id": call_id,
        "language": "zh",
        "enqueued_at": time.time() - 30,
        "attributes": {"intent": "exchange", "summary": "客户的包裹破损了"},
    }
    busy = {"status": "ready", "state": "busy", "since": time.time(), "connected": {contact_id: {}}}
    try:
        with psycopg.connect(site.db.dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO aicc.calls (call_id, caller, service, language, started_at, outcome) "
                "VALUES (%s, '13800138000', 'hotline', 'zh', now(), 'transferred')",
                (call_id,),
            )
            for seq, (speaker, text) in enumerate(
                [("bot", "您好，请问有什么可以帮您？"), ("caller", "我收到的快递外箱压坏了，想换货")], 1
            ):
                conn.execute(
                    "INSERT INTO aicc.call_lines (call_id, seq, speaker, text, at_s) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (call_id, seq, speaker, text, seq * 3.0),
                )
            conn.execute(
                "INSERT INTO aicc.agents (user_id, extension, profile) VALUES (%s, '1094', %s)",
                (agent, Jsonb(profile)),
            )
            conn.execute(
                "INSERT INTO aicc.acd_contacts (id, seq, queue, state, contact) "
                "VALUES (%s, 1, 'desk-kb', 'connected', %s)",
                (contact_id, Jsonb(contact)),
            )
        _live(
            site.db, "INSERT INTO aicc.acd_agent_state (user_id, state) VALUES (%s, %s)", agent, Jsonb(busy)
        )
        suggestion = f"#contact-pop:not([hidden]) #kb-suggest li[data-id='{site.articles['zh']}']"
        tab.wait_for_selector(suggestion)
        assert tab.is_visible("#kb-suggest")
        assert tab.text_content("#h-kb-suggest") == "Suggested articles"
        assert "快递外箱压坏了" in str(tab.text_content("#pop-transcript"))
        ids = "ns => ns.map(n => n.dataset.id)"
        shown = {int(x) for x in tab.eval_on_selector_all("#kb-suggest-list li", ids)}
        assert len(shown) <= 3 and site.articles["draft"] not in shown, shown
        assert tab.locator("#kb-suggest-list mark").count() > 0
        assert tab.locator("#contact-pop img").count() == 0
        # The search was asked with the summary and the caller's words, in the contact's language.
        asked = [u for u in tab.requests if "/api/kb/search" in u]
        query = httpx.URL(asked[-1]).params
        assert query["language"] == "zh" and query["limit"] == "3", asked
        assert "客户的包裹破损了" in query["q"] and "想换货" in query["q"], query
        assert "有什么可以帮您" not in query["q"], query  # the bot's words are not the caller's
        # Chosen, it opens in the Knowledge tab.
        tab.click(f"{suggestion} .kb-hit-title")
        tab.wait_for_selector("#pane-knowledge:not([hidden])")
        tab.wait_for_selector(f"#kb-article[data-id='{site.articles['zh']}']:not([hidden])")
        assert tab.get_attribute("#tab-knowledge", "aria-selected") == "true"
        assert tab.is_hidden("#pane-contact")
        assert tab.text_content("#kb-article-body") == ZH_BODY
        # The contact gone, so are its suggestions.
        _live(site.db, "DELETE FROM aicc.acd_contacts WHERE id = %s", contact_id)
        _live(site.db, "UPDATE aicc.acd_agent_state SET state = %s WHERE user_id = %s", Jsonb({}), agent)
        tab.wait_for_selector("#kb-suggest", state="hidden")
    finally:
        with psycopg.connect(site.db.dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM aicc.acd_contacts WHERE id = %s", (contact_id,))
            conn.execute("DELETE FROM aicc.acd_agent_state WHERE user_id = %s", (agent,))
            conn.execute("DELETE FROM aicc.agents WHERE user_id = %s", (agent,))
            conn.execute("DELETE FROM aicc.calls WHERE call_id = %s", (call_id,))


def test_a_notification_opens_its_ticket(desk: Any, site: Site) -> None:
    r = site.api("POST", "/api/tickets", json={"subject": "发票抬头开错", "priority": "urgent"})
    assert r.status_code == 201, r.text
    number = r.json()["number"]
    due = dt.datetime(2024, 3, 1, 2, 0, tzinfo=dt.UTC).isoformat()
    data = {
        "target": "first_response",
        "state": "breached",
        "due_at": due,
        "subject": "发票抬头开错",
        "priority": "urgent",
        "timezone": "Asia/Shanghai",
    }
    with psycopg.connect(site.db.dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO aicc.notifications (user_id, kind, ticket, data) "
            "VALUES (%s, 'sla_breached', %s, %s) RETURNING id",
            (site.agent.id, number, Jsonb(data)),
        ).fetchone()
    assert row is not None
    nid = int(row[0])

    tab = desk(site.agent)
    tab.wait_for_selector("#notif-count:not([hidden])")
    assert tab.text_content("#notif-count") == "1"
    assert tab.get_attribute("#notif-count", "data-kind") == "sla_breached"
    assert tab.get_attribute("#notif-bell", "aria-label") == "Notifications: 1 unread"
    tab.select_option("#lang-switch", "zh")
    tab.focus("#notif-bell")
    tab.keyboard.press("Enter")
    item = f"#notif-list li[data-id='{nid}'][data-unread='true']"
    tab.wait_for_selector(f"{item} button:focus")  # the keyboard lands on the first one
    assert tab.get_attribute("#notif-bell", "aria-expanded") == "true"
    text = str(tab.text_content(f"{item} .notif-text"))
    assert text == f"工单 {number} 首次响应已超时（截止 2024-03-01 10:00）：发票抬头开错", text
    assert tab.text_content(f"{item} .sla-badge") == "SLA 已超时"
    # Escape closes the list and gives the focus back to the bell.
    tab.keyboard.press("Escape")
    tab.wait_for_selector("#notif-panel", state="hidden")
    assert tab.evaluate("() => document.activeElement.id") == "notif-bell"
    tab.keyboard.press("Enter")
    tab.wait_for_selector(item)

    tab.click(f"{item} button")
    tab.wait_for_selector("#notif-panel", state="hidden")
    tab.wait_for_selector("#pane-tickets:not([hidden])")
    tab.wait_for_selector(f"#ticket-view[data-number='{number}']:not([hidden])")
    tab.wait_for_function("s => document.querySelector('#tv-subject').textContent === s", arg="发票抬头开错")
    tab.wait_for_selector("#notif-count", state="hidden")
    [n] = site.api("GET", "/api/notifications").json()
    assert n["id"] == nid and n["read_at"] is not None, n
    assert site.api("GET", "/api/notifications?unread=true").json() == []
    # Read ones stay in the list, no longer marked new.
    tab.click("#notif-bell")
    tab.wait_for_selector(f"#notif-list li[data-id='{nid}'][data-unread='false']")


def test_an_auditor_has_knowledge_but_no_notifications(desk: Any, site: Site) -> None:
    tab = desk(site.auditor)
    tab.wait_for_selector("#tab-knowledge:not([hidden])")
    tab.wait_for_function(  # the tickets' first load shows the page started for this user
        "() => !document.querySelector('#tab-tickets-count').hidden"
    )
    assert tab.is_hidden("#notif")
    assert not [u for u in tab.requests if "/api/notifications" in u], tab.requests


def test_every_knowledge_string_is_in_both_languages() -> None:
    """Mandarin as complete as English, and every key the page and its scripts name exists."""
    source = (STATIC / "js" / "i18n.js").read_text(encoding="utf-8")
    en_block, zh_block = source.split("\n  zh: {", 1)
    en, zh = _keys(en_block.split("\n  en: {", 1)[1]), _keys(zh_block.split("\n};", 1)[0])
    assert en == zh, {"only en": sorted(en - zh), "only zh": sorted(zh - en)}
    html = (STATIC / "desk.html").read_text(encoding="utf-8")
    named = set(re.findall(r'data-i18n(?:-title|-placeholder|-aria)?="([^"]+)"', html))
    for name in ("knowledge.js", "notifications.js"):
        script = (STATIC / "js" / name).read_text(encoding="utf-8")
        # Every key written out (a permission is includes()'s argument, not a key).
        named |= set(re.findall(r"(?<!includes\()'((?:kb|notif|tabs)\.[a-zA-Z0-9_.]+)'", script))
    named |= {"kb.visibility.internal", "kb.visibility.public", "kb.lang.zh", "kb.lang.en"}
    named |= {"notif.kind.sla_warning", "notif.kind.sla_breached"}
    assert {"kb.suggested", "notif.title", "tabs.knowledge"} <= named
    assert named - en == set(), sorted(named - en)
