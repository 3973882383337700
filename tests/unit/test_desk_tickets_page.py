"""The agent desktop's tickets in a real browser, without a lab: the app (create_app) served by uvicorn
on 127.0.0.1 over its own migrated database, Debian's Chromium driven by Playwright. An agent logs in,
creates a ticket through the form (a 422 names the field first), sees it in the list with its number,
opens it, takes it, adds an internal note and a public reply and sets it pending, which the API then
shows; a subject with HTML in it stays text; a back-dated ticket shows the red breached badge; the
page in Mandarin; and a call in progress (its ACD state written straight into the database, as the
ACD persists it) offers "Ticket from this call", which links the call.

The page's softphone cannot start here (headless Chromium refuses the microphone, and there is no
Kamailio): the page says so in its banner and the tickets work regardless. Chromium treats
http://127.0.0.1 as a secure origin, so the session cookie (Secure, as in production) is kept.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
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

STATIC = Path(__file__).resolve().parents[2] / "appliance" / "web" / "static"
WAIT_MS = 15_000
SUBJECT = "快递包裹破损，要求换货"
EVIL = "<img src=x onerror=alert(1)>"


@dataclass(frozen=True)
class Site:
    url: str
    db: ApiDatabase
    agent: ApiUser

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers=self.agent.headers, timeout=10, **kwargs)


@pytest.fixture(scope="module")
def site(api_db: ApiDatabase) -> Iterator[Site]:
    """The whole app on a free port, in a thread, over a database of its own (no other test's tickets)."""
    db = fresh_database(api_db, "desk_tickets")
    agent = make_user(db, "agent", username="desk-tickets-agent")
    # No ACD runs here: the live picture's question to it gives up quickly.
    app = create_app(api_config(db, acd={"result_timeout_s": 0.3}))
    app.state.aicc.passwords = Passwords(hasher=FAST_HASHER)
    with serve(app) as url:
        yield Site(url, db, agent)


@pytest.fixture
def page(browser: Any, site: Site, tmp_path_factory: pytest.TempPathFactory, request: Any) -> Iterator[Any]:
    """A signed-in desk (English), with the Tickets tab open. A failing test leaves a screenshot."""
    context = browser.new_context(locale="en-US", viewport={"width": 1366, "height": 768})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    alerts: list[str] = []
    errors: list[str] = []

    def on_dialog(dialog: Any) -> None:  # an alert() would be the injected subject running
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
    tab.click("#tab-tickets")
    tab.wait_for_selector("#pane-tickets:not([hidden])")
    try:
        yield tab
        assert not alerts and not errors, (alerts, errors)
    except BaseException:
        _screenshot(tab, tmp_path_factory, request.node.name)
        raise
    finally:
        context.close()


def _screenshot(tab: Any, factory: pytest.TempPathFactory, name: str) -> None:
    try:
        path = factory.mktemp("desk-tickets") / f"{name}.png"
        tab.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
    except Exception as exc:  # the page may be gone already
        print(f"no screenshot: {exc}")


def _create_in_form(tab: Any, subject: str, **fields: str) -> str:
    tab.click("#ticket-new")
    tab.wait_for_selector("#ticket-form:not([hidden])")
    tab.fill("#nt-subject", subject)
    for name, value in fields.items():
        tab.fill(f"#nt-{name}", value)
    tab.click("#nt-submit")
    tab.wait_for_selector("#ticket-view:not([hidden])")
    tab.wait_for_function(
        "s => document.querySelector('#tv-subject').textContent === s", arg=subject, timeout=WAIT_MS
    )
    number = str(tab.text_content("#tv-number")).strip()
    assert re.fullmatch(r"T-\d{6,}", number), number
    return number


def test_an_agent_creates_takes_and_works_a_ticket(page: Any, site: Site) -> None:
    tab = page
    # A phone the API refuses: the 422 names the field (by its label) and marks it.
    tab.click("#ticket-new")
    tab.fill("#nt-subject", SUBJECT)
    tab.fill("#nt-phone", "12ab")
    tab.click("#nt-submit")
    tab.wait_for_selector("#nt-error:not([hidden])")
    assert "Phone" in str(tab.text_content("#nt-error")), tab.text_content("#nt-error")
    assert tab.get_attribute("#nt-phone", "aria-invalid") == "true"
    # Corrected, and sent with Enter from the subject field.
    tab.fill("#nt-phone", "13800138000")
    tab.fill("#nt-description", "客户收到的包裹外箱破损，商品有划痕。")
    tab.select_option("#nt-priority", "high")
    tab.focus("#nt-subject")
    tab.keyboard.press("Enter")
    tab.wait_for_selector("#ticket-view:not([hidden])")
    tab.wait_for_function("s => document.querySelector('#tv-subject').textContent === s", arg=SUBJECT)
    number = str(tab.text_content("#tv-number")).strip()
    assert re.fullmatch(r"T-\d{6,}", number), number
    assert number in str(tab.text_content("#tickets-notice"))
    row = f"#tickets-queue tr[data-number='{number}']"
    tab.wait_for_selector(row)
    assert tab.text_content(f"{row} td.subject") == SUBJECT
    assert tab.text_content(f"{row} th.number") == number

    # Open it from the list with the keyboard, then take it.
    tab.focus(f"{row} th.number button")
    tab.keyboard.press("Enter")
    tab.wait_for_selector(f"#ticket-view[data-number='{number}'] #tv-take:not([disabled])")
    tab.click("#tv-take")
    tab.wait_for_selector("#tv-take[disabled]")
    tab.wait_for_selector(f"#tickets-mine tr[data-number='{number}']")

    # An internal note, then a public reply (which opens the new ticket), then pending.
    tab.check("input[name='tv-visibility'][value='internal']")
    assert tab.text_content("#tv-comment-submit") == "Add note"
    tab.fill("#tv-comment-body", "仓库确认是运输途中损坏，已联系快递公司。")
    tab.click("#tv-comment-submit")
    tab.wait_for_selector("#tv-history .event[data-visibility='internal']")
    tab.check("input[name='tv-visibility'][value='public']")
    tab.fill("#tv-comment-body", "您好，我们已为您安排换货，新包裹明天发出。")
    tab.press("#tv-comment-body", "Control+Enter")
    tab.wait_for_selector("#tv-history .event[data-visibility='public']")
    tab.wait_for_selector("#tv-status[data-status='open']")
    tab.select_option("#tv-status-select", "pending")
    tab.click("#tv-apply")
    tab.wait_for_selector("#tv-status[data-status='pending']")
    tab.wait_for_selector(f"#tickets-mine tr[data-number='{number}'] td.status[data-status='pending']")
    tab.wait_for_function(
        "() => document.querySelector('#tv-history').textContent.includes('Open → Pending')"
    )
    history = str(tab.text_content("#tv-history"))
    assert "Internal note" in history and "Public reply" in history and "Pending" in history, history

    r = site.api("GET", f"/api/tickets/{number}")
    assert r.status_code == 200, r.text
    ticket = r.json()
    assert ticket["subject"] == SUBJECT and ticket["priority"] == "high", ticket
    assert ticket["assignee"] == site.agent.id and ticket["status"] == "pending", ticket
    assert ticket["customer"]["phone"] == "138****8000" and ticket["source"] == "agent", ticket
    events = site.api("GET", f"/api/tickets/{number}/events").json()
    comments = [(e["data"]["visibility"], e["data"]["body"]) for e in events if e["kind"] == "commented"]
    assert comments == [
        ("internal", "仓库确认是运输途中损坏，已联系快递公司。"),
        ("public", "您好，我们已为您安排换货，新包裹明天发出。"),
    ], events

    # A subject with HTML in it is text, in the list and in the ticket: no element, no alert.
    evil = _create_in_form(tab, EVIL)
    evil_row = f"#tickets-queue tr[data-number='{evil}']"
    tab.wait_for_selector(evil_row)
    assert tab.text_content(f"{evil_row} td.subject") == EVIL
    assert tab.text_content("#tv-subject") == EVIL
    assert tab.locator("#pane-tickets img").count() == 0
    assert not tab.alerts


def _backdated_ticket(db: ApiDatabase, subject: str) -> str:
    """An urgent ticket created Monday 6 January 2020 09:00 China time that nobody answered (the
    figures come from the event log, so back-dating the log is the clock; as test_api_tickets does)."""
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute(
            "INSERT INTO aicc.tickets (subject, priority, source, sla_policy, created_by, created_at, "
            "customer) VALUES (%s, 'urgent', 'api', 'default', 'test', '2020-01-06 09:00+08', %s) "
            "RETURNING id, number",
            (subject, Jsonb({"phone": "13900139000"})),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO aicc.ticket_events (ticket_id, at, kind, actor, data) "
            "VALUES (%s, '2020-01-06 09:00+08', 'created', 'test', %s)",
            (row[0], Jsonb({"status": "new", "priority": "urgent", "source": "api"})),
        )
    return str(row[1])


def test_a_breached_ticket_is_red_and_the_page_speaks_mandarin(page: Any, site: Site) -> None:
    tab = page
    number = _backdated_ticket(site.db, "发票抬头开错，需要重开")
    tab.click("#tickets-refresh")
    badge = f"#tickets-queue tr[data-number='{number}'] .sla-badge[data-sla='breached']"
    tab.wait_for_selector(badge)
    assert tab.text_content(badge) == "Breached"
    assert "was due" in str(tab.text_content(f"#tickets-queue tr[data-number='{number}'] td.sla"))
    red = tab.eval_on_selector(badge, "n => getComputedStyle(n).backgroundColor")
    assert red == "rgb(180, 35, 24)", red  # app.css --err: the stylesheet loaded under the CSP
    assert tab.get_attribute("#tab-tickets-count", "data-sla") == "breached"
    # Breached ones come first.
    first = tab.get_attribute("#tickets-queue tbody tr:first-child", "data-number")
    assert first == number, first
    tab.click(f"#tickets-queue tr[data-number='{number}'] th.number button")
    tab.wait_for_selector("#tv-sla-table tr[data-target='first_response'] .sla-badge[data-sla='breached']")

    tab.select_option("#lang-switch", "zh")
    tab.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
    assert tab.text_content(badge) == "已超时"
    assert "工单" in str(tab.text_content("#tab-tickets"))
    assert str(tab.text_content("#h-tickets-mine")).startswith("我的工单")
    assert str(tab.text_content("#h-tickets-queue")).startswith("待分配")
    headers = tab.locator("#tickets-queue thead th").all_text_contents()
    assert headers == ["编号", "主题", "优先级", "状态", "SLA"], headers
    assert tab.text_content(f"#tickets-queue tr[data-number='{number}'] td.status") == "新建"
    assert tab.text_content(f"#tickets-queue tr[data-number='{number}'] td.priority") == "紧急"
    assert tab.text_content("#tv-sla-table tr[data-target='first_response'] th") == "首次响应"
    assert tab.text_content("#tv-comment-submit") == "发送回复"
    assert tab.text_content("#ticket-new") == "新建工单"


def _live(db: ApiDatabase, sql: str, *params: Any) -> None:
    """A change of the ACD's persisted state, announced as the ACD announces its own."""
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(sql, params)
        conn.execute("SELECT pg_notify('acd_live', '')")


def test_a_ticket_from_the_call_in_progress(page: Any, site: Site) -> None:
    tab = page
    agent, contact_id, call_id = site.agent.id, str(uuid.uuid4()), f"call-{uuid.uuid4().hex[:12]}"
    profile = {"skills": {}, "languages": ["zh"], "capacity": {"voice": 1}}
    contact = {
        "caller": "13800138000",
        "call_id": call_id,
        "language": "zh",
        "enqueued_at": time.time() - 40,
        "attributes": {"intent": "exchange", "summary": "包裹破损，要求换货"},
    }
    busy = {"status": "ready", "state": "busy", "since": time.time(), "connected": {contact_id: {}}}
    try:
        with psycopg.connect(site.db.dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO aicc.agents (user_id, extension, profile) VALUES (%s, '1093', %s)",
                (agent, Jsonb(profile)),
            )
            conn.execute(
                "INSERT INTO aicc.acd_contacts (id, seq, queue, state, contact) "
                "VALUES (%s, 1, 'desk-tickets', 'connected', %s)",
                (contact_id, Jsonb(contact)),
            )
        _live(
            site.db, "INSERT INTO aicc.acd_agent_state (user_id, state) VALUES (%s, %s)", agent, Jsonb(busy)
        )
        # The pop comes forward by itself, with the button.
        tab.wait_for_selector("#contact-pop:not([hidden]) #ticket-from-call:not([hidden])")
        assert tab.get_attribute("#tab-contact", "aria-selected") == "true"
        tab.focus("#ticket-from-call")
        tab.keyboard.press("Enter")
        tab.wait_for_selector("#ticket-form:not([hidden]) #nt-call:not([hidden])")
        assert tab.text_content("#nt-call-id") == call_id
        # An agent sees the caller's number masked, so it is not filled in: the call is linked instead.
        assert tab.input_value("#nt-phone") == ""
        assert tab.is_visible("#nt-phone-note")
        number = _create_in_form_filled(tab, "来电：包裹破损换货")
        ticket = site.api("GET", f"/api/tickets/{number}").json()
        assert (ticket["source"], ticket["call_id"], ticket["contact_id"]) == ("call", call_id, contact_id)
        assert ticket["language"] == "zh", ticket

        # In wrap-up the call is still there to make a ticket from.
        wraps = [
            {
                "contact_id": contact_id,
                "call_id": call_id,
                "queue": "desk-tickets",
                "ends_at": time.time() + 60,
            }
        ]
        wrap = {"status": "ready", "state": "wrap_up", "since": time.time(), "wraps": wraps}
        _live(site.db, "DELETE FROM aicc.acd_contacts WHERE id = %s", contact_id)
        _live(site.db, "UPDATE aicc.acd_agent_state SET state = %s WHERE user_id = %s", Jsonb(wrap), agent)
        tab.click("#tab-contact")
        tab.wait_for_selector("#wrapup:not([hidden])")
        tab.wait_for_selector("#contact-pop:not([hidden]) #ticket-from-call:not([hidden])")
        _live(site.db, "UPDATE aicc.acd_agent_state SET state = %s WHERE user_id = %s", Jsonb({}), agent)
        tab.wait_for_selector("#ticket-from-call", state="hidden")
    finally:
        with psycopg.connect(site.db.dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM aicc.acd_contacts WHERE id = %s", (contact_id,))
            conn.execute("DELETE FROM aicc.acd_agent_state WHERE user_id = %s", (agent,))
            conn.execute("DELETE FROM aicc.agents WHERE user_id = %s", (agent,))


def _create_in_form_filled(tab: Any, subject: str) -> str:
    """Submit the form already open (prefilled from the call) with a subject; the new number."""
    tab.fill("#nt-subject", subject)
    tab.click("#nt-submit")
    tab.wait_for_function(
        "s => document.querySelector('#tv-subject').textContent === s", arg=subject, timeout=WAIT_MS
    )
    number = str(tab.text_content("#tv-number")).strip()
    assert re.fullmatch(r"T-\d{6,}", number) and number in str(tab.text_content("#tickets-notice"))
    return number


def _keys(block: str) -> set[str]:
    return set(re.findall(r"^\s+'([a-zA-Z0-9_.-]+)':", block, re.MULTILINE))


@pytest.fixture
def quick_revalidation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live stream checks its session every 0.5 s (the app runs in this process): set before the
    page opens its stream, whose first wait takes the interval of that moment."""
    from aicc.appliance.api.routes import live

    monkeypatch.setattr(live, "REVALIDATE_S", 0.5)
    monkeypatch.setattr(live, "PING_S", 0.5)


def test_a_session_ended_elsewhere_brings_back_the_login_form(
    quick_revalidation: None, page: Any, site: Site
) -> None:
    """An administrator ends the agent's session (or it times out) while the desk is open: the live
    stream's periodic check ends the stream, and the page says why and asks for a new login instead of
    reconnecting for ever."""
    with psycopg.connect(site.db.dsn, autocommit=True) as conn:
        revoked = conn.execute(
            "UPDATE aicc.api_tokens SET revoked_at = now() WHERE user_id = %s AND kind = 'session' "
            "AND revoked_at IS NULL",
            (site.agent.id,),
        ).rowcount
    assert revoked >= 1
    page.wait_for_selector("#login-form:not([hidden])", timeout=WAIT_MS)
    page.wait_for_selector("#login-error:not([hidden])")
    assert page.text_content("#login-error") == "Your session has expired. Please sign in again."
    assert page.is_hidden("#desk")
    # Signing in again brings the desk back.
    page.fill("#login-username", site.agent.username)
    page.fill("#login-password", str(site.agent.password))
    page.click("#login-submit")
    page.wait_for_selector("#desk:not([hidden])")


def test_every_ticket_string_is_in_both_languages() -> None:
    """Mandarin as complete as English: the same keys, and every key the page names exists."""
    source = (STATIC / "js" / "i18n.js").read_text(encoding="utf-8")
    en_block, zh_block = source.split("\n  zh: {", 1)
    en, zh = _keys(en_block.split("\n  en: {", 1)[1]), _keys(zh_block.split("\n};", 1)[0])
    assert en == zh, {"only en": sorted(en - zh), "only zh": sorted(zh - en)}
    html = (STATIC / "desk.html").read_text(encoding="utf-8")
    named = set(re.findall(r'data-i18n(?:-title|-placeholder|-aria)?="([^"]+)"', html))
    script = (STATIC / "js" / "tickets.js").read_text(encoding="utf-8")
    # Every key written out in the script (labelFor's first argument is a prefix, can's a permission).
    named |= set(re.findall(r"(?<!labelFor\()(?<!can\()'((?:tickets|sla|tabs)\.[a-zA-Z0-9_.]+)'", script))
    named |= {f"sla.state.{v}" for v in ("breached", "warning", "running", "paused", "met", "none")}
    named |= {f"ticket.status.{v}" for v in ("new", "open", "pending", "resolved", "closed")}
    assert named - en == set(), sorted(named - en)
