"""Email (channels/email*.py) against real mail servers: Debian's Dovecot (IMAP with TLS and IDLE, LMTP)
and Postfix (an MX-like port customers' mail arrives on, submission with STARTTLS and SASL through
Dovecot), run on loopback by tests/unit/mailserver.py, with the real app and database.

A customer's mail reaches the support mailbox through Postfix, the channel reads it over IMAP IDLE into
a conversation, an agent's reply goes out over SMTP submission and arrives in the customer's mailbox
threaded under their mail, and the customer's answer joins the same conversation."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import make_msgid
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.rows import dict_row

from aicc.appliance.api.config import ConfigError, EmailSettings
from aicc.appliance.channels.email import EmailHub
from aicc.appliance.channels.textbot import BotRuntime
from aicc.installer.settings import SiteSettings
from tests.unit.api_support import (
    Api,
    ApiDatabase,
    ApiUser,
    api_db_fixture,  # noqa: F401
    api_users_fixture,  # noqa: F401
    open_api,
)
from tests.unit.mailserver import MailServers, mail_servers_fixture  # noqa: F401
from tests.unit.test_voice_fakes import RETAIL, FakeConnector, FakeLLM, retail_on

SUPPORT = "support@aicc.test"
WAIT_S = 20.0
STATUS = {"intent": "tools", "actions": [{"tool": "get_order_status", "arguments": {"order_id": "100234"}}]}


def _settings(servers: MailServers, folder: Path, **extra: Any) -> dict[str, Any]:
    secret = folder / "email-password"
    secret.write_text(servers.password(SUPPORT) + "\n", encoding="utf-8")
    return {
        "enabled": True,
        "address": SUPPORT,
        "display_name": "客服中心",
        "imap_host": servers.host,
        "imap_port": servers.imap_port,
        "imap_password_file": str(secret),
        "smtp_host": servers.host,
        "smtp_port": servers.submission_port,
        "ca_file": str(servers.ca_file),
        "idle_s": 5,
        "retry_base_s": 0.05,
        "send_attempts": 2,
        "timeout_s": 10,
        **extra,
    }


@contextlib.asynccontextmanager
async def email_site(
    db: ApiDatabase, users: dict[str, ApiUser], servers: MailServers, folder: Path, **extra: Any
) -> AsyncIterator[Api]:
    async with open_api(db, users, email=_settings(servers, folder, **extra)) as api:
        hub: EmailHub = api.app.state.email
        await hub.start()  # the lifespan's part (the test client does not run the lifespan)
        try:
            yield api
        finally:
            await hub.close()


def _customer(servers: MailServers, name: str) -> str:
    """A customer's mailbox of its own for one test (the servers live for the module)."""
    address = f"{name}@example.test"
    if address not in servers.users:
        servers.add_user(address)
    return address


def _mail(subject: str, body: str, *, sender: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"李雷 <{sender}>"
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Message-ID"] = headers.pop("Message_ID", make_msgid(domain="example.test"))
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def _row(db: ApiDatabase, query: str, *params: Any) -> dict[str, Any] | None:
    with psycopg.connect(db.dsn, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchone()  # type: ignore[arg-type]


async def _until(what: str, probe: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s")
        await asyncio.sleep(0.1)


async def _conversation_of(db: ApiDatabase, msgid: str) -> UUID:
    row = await _until(
        f"the email {msgid} stored",
        lambda: _row(
            db,
            "SELECT conversation_id FROM aicc.email_messages WHERE direction = 'in' AND msgid = %s "
            "AND conversation_id IS NOT NULL",
            msgid,
        ),
    )
    return UUID(str(row["conversation_id"]))


async def _messages(api: Api, cid: UUID) -> list[dict[str, Any]]:
    got = await api.client.get(f"/api/conversations/{cid}", headers=api.auth("agent"))
    assert got.status_code == 200, got.text
    messages: list[dict[str, Any]] = got.json()["messages"]
    return messages


@pytest.mark.asyncio
async def test_an_email_becomes_a_conversation_the_reply_threads_and_the_answer_joins_it(
    api_db: ApiDatabase, api_users: dict[str, ApiUser], mail_servers: MailServers, tmp_path: Path
) -> None:
    customer = _customer(mail_servers, "lilei")
    async with email_site(api_db, api_users, mail_servers, tmp_path) as api:
        first = _mail(
            "订单 100234 的地址",
            "你好，请把订单 100234 的地址改成上海市浦东新区世纪大道 100 号。",
            sender=customer,
        )
        await asyncio.to_thread(mail_servers.send, first)
        cid = await _conversation_of(api_db, first["Message-ID"])
        got = await api.client.get(f"/api/conversations/{cid}", headers=api.auth("agent"))
        detail = got.json()
        assert detail["channel"] == "email" and detail["handler"] == "queue" and detail["language"] == "zh"
        assert detail["summary"] == "订单 100234 的地址"
        assert [i["kind"] for i in detail["customer"]["identities"]] == ["email"]
        assert [(m["direction"], m["author"], m["body"]) for m in detail["messages"]] == [
            ("in", "customer", "你好，请把订单 100234 的地址改成上海市浦东新区世纪大道 100 号。")
        ]

        sent = await api.client.post(
            f"/api/conversations/{cid}/messages",
            headers=api.auth("agent"),
            json={"body": "您好，地址已改为上海市浦东新区世纪大道 100 号。\nThe address is updated."},
        )
        assert sent.status_code == 201, sent.text
        (reply,) = await asyncio.to_thread(mail_servers.wait_for_messages, customer, 1, WAIT_S)
        assert reply["Subject"] == "Re: 订单 100234 的地址"
        assert reply["In-Reply-To"] == first["Message-ID"]
        assert first["Message-ID"] in str(reply["References"])
        assert reply["From"].addresses[0].addr_spec == SUPPORT
        assert reply["From"].addresses[0].display_name == "客服中心"
        assert (
            reply.get_content().strip()
            == "您好，地址已改为上海市浦东新区世纪大道 100 号。\nThe address is updated."
        )
        ledger = await _until(
            "the reply marked sent",
            lambda: _row(
                api_db,
                "SELECT status, attempts FROM aicc.email_messages WHERE direction = 'out' AND msgid = %s "
                "AND status = 'sent'",
                reply["Message-ID"],
            ),
        )
        assert ledger["attempts"] == 1
        assert (await _messages(api, cid))[-1]["delivered_at"] is not None

        # The customer answers the reply from their mail client: quoted history and all.
        answer = _mail(
            "Re: 订单 100234 的地址",
            "谢谢！\n\n在 2026年12月5日，客服中心 <support@aicc.test> 写道：\n> 您好，地址已改为……",
            sender=customer,
            In_Reply_To=reply["Message-ID"],
            References=f"{first['Message-ID']} {reply['Message-ID']}",
        )
        await asyncio.to_thread(mail_servers.send, answer)
        assert await _conversation_of(api_db, answer["Message-ID"]) == cid
        bodies = [m["body"] for m in await _messages(api, cid)]
        assert bodies[-1] == "谢谢！" and len(bodies) == 3

        # What the channel read is marked read in the mailbox, for people who look at it too.
        with mail_servers.imap(SUPPORT) as conn:
            conn.select("INBOX", readonly=True)
            typ, data = conn.uid("SEARCH", "UNSEEN")
        assert typ == "OK" and data == [b""]


@pytest.mark.asyncio
async def test_with_the_bot_on_it_answers_the_mail_through_the_business_api(
    api_db: ApiDatabase, api_users: dict[str, ApiUser], mail_servers: MailServers, tmp_path: Path
) -> None:
    customer = _customer(mail_servers, "zhaolei")
    async with email_site(api_db, api_users, mail_servers, tmp_path, bot=True) as api:
        runtime = BotRuntime(FakeLLM({"订单": STATUS, "order": STATUS}), retail_on(FakeConnector()), "retail")
        api.app.state.webchat.use_runtime(runtime)
        ask = _mail("订单状态", "请问订单 100234 到哪里了？", sender=customer)
        await asyncio.to_thread(mail_servers.send, ask)
        cid = await _conversation_of(api_db, ask["Message-ID"])
        for count in (1, 2, 3):  # the bot may say it is looking before it answers
            replies = await asyncio.to_thread(mail_servers.wait_for_messages, customer, count, WAIT_S)
            bodies = [r.get_content().strip() for r in replies]
            if any("100234" in b for b in bodies):
                break
        # No greeting mail: the first mail the customer gets answers theirs, through the order API.
        assert any("100234" in b for b in bodies), bodies
        assert RETAIL.prompt("greeting", "zh") not in bodies
        assert replies[0]["In-Reply-To"] == ask["Message-ID"]
        for reply in replies:
            assert reply["Auto-Submitted"] == "auto-replied"  # their auto-responder must not answer it
            assert ask["Message-ID"] in str(reply["References"])
        detail = (await api.client.get(f"/api/conversations/{cid}", headers=api.auth("agent"))).json()
        assert detail["handler"] == "bot" and detail["messages"][0]["author"] == "customer"


@pytest.mark.asyncio
async def test_duplicates_automatic_mail_and_oversized_mail_open_nothing(
    api_db: ApiDatabase, api_users: dict[str, ApiUser], mail_servers: MailServers, tmp_path: Path
) -> None:
    async with email_site(api_db, api_users, mail_servers, tmp_path, max_message_bytes=64 * 1024) as api:
        hub: EmailHub = api.app.state.email
        customer = _customer(mail_servers, "hanmeimei")
        twice = _mail("Where is my parcel?", "Order 555001 has not arrived.", sender=customer)
        noise = [
            twice,
            twice,  # the same message delivered again (a retrying MTA, a forwarding loop)
            _mail("Out of office", "I am away.", sender=customer, Auto_Submitted="auto-replied"),
            _mail(
                "Newsletter", "Our news.", sender=customer, List_Id="<news.example.test>", Precedence="bulk"
            ),
            _mail("Re: loop", "our own", sender=SUPPORT),
            _mail("Big", "x" * 100_000, sender=customer),
        ]
        for msg in noise:
            await asyncio.to_thread(mail_servers.send, msg)
        last = _mail("Sentinel", "read after all of the above", sender=customer)
        await asyncio.to_thread(mail_servers.send, last)
        await _conversation_of(api_db, last["Message-ID"])
        counts = _row(
            api_db,
            "SELECT count(*) AS n FROM aicc.conversation_messages m JOIN aicc.email_messages e "
            "ON e.message_id = m.id WHERE e.msgid = %s",
            twice["Message-ID"],
        )
        assert counts is not None and counts["n"] == 1
        for msg in noise[2:]:
            assert (
                _row(api_db, "SELECT 1 FROM aicc.email_messages WHERE msgid = %s", msg["Message-ID"]) is None
            )
        refused = {
            s.labels["reason"]: s.value
            for m in hub.metrics.refused.collect()
            for s in m.samples
            if s.name.endswith("_total")
        }
        assert refused == {"auto_reply": 1, "bulk": 1, "loop": 1, "too_large": 1}
        assert hub.metrics.duplicates._value.get() == 1
        # The oversized one stays in the mailbox, flagged for a person, not marked read.
        with mail_servers.imap(SUPPORT) as conn:
            conn.select("INBOX", readonly=True)
            typ, data = conn.uid("SEARCH", "FLAGGED", "UNSEEN")
        assert typ == "OK" and len(data[0].split()) == 1


@pytest.mark.asyncio
async def test_an_answer_to_a_resolved_conversation_opens_it_again_for_the_agents(
    api_db: ApiDatabase, api_users: dict[str, ApiUser], mail_servers: MailServers, tmp_path: Path
) -> None:
    customer = _customer(mail_servers, "zhangwei")
    async with email_site(api_db, api_users, mail_servers, tmp_path) as api:
        first = _mail("Refund", "Please refund order 777001.", sender=customer)
        await asyncio.to_thread(mail_servers.send, first)
        cid = await _conversation_of(api_db, first["Message-ID"])
        done = await api.client.post(f"/api/conversations/{cid}/resolve", headers=api.auth("agent"), json={})
        assert done.status_code == 200, done.text
        again = _mail(
            "Re: Refund", "It has not arrived yet.", sender=customer, In_Reply_To=first["Message-ID"]
        )
        await asyncio.to_thread(mail_servers.send, again)
        assert await _conversation_of(api_db, again["Message-ID"]) == cid
        detail = (await api.client.get(f"/api/conversations/{cid}", headers=api.auth("agent"))).json()
        assert (detail["status"], detail["handler"], detail["assignee"]) == ("open", "queue", None)
        # A new mail from the same customer, in no thread, is a new conversation.
        other = _mail("Another question", "Do you ship to Hangzhou?", sender=customer)
        await asyncio.to_thread(mail_servers.send, other)
        assert await _conversation_of(api_db, other["Message-ID"]) != cid


@pytest.mark.asyncio
async def test_undeliverable_and_bounced_replies_are_dead_letters_for_admins(
    api_db: ApiDatabase, api_users: dict[str, ApiUser], mail_servers: MailServers, tmp_path: Path
) -> None:
    async with email_site(api_db, api_users, mail_servers, tmp_path) as api:
        # Mail from an address the server has no mailbox for: the reply is refused at RCPT (5xx).
        lost = _mail("Hello", "Write back please.", sender="nobody@example.test")
        await asyncio.to_thread(mail_servers.send, lost)
        cid = await _conversation_of(api_db, lost["Message-ID"])
        sent = await api.client.post(
            f"/api/conversations/{cid}/messages", headers=api.auth("agent"), json={"body": "Hello!"}
        )
        assert sent.status_code == 201, sent.text
        letter = await _until(
            "a dead letter",
            lambda: _row(api_db, "SELECT * FROM aicc.channel_dead_letters WHERE conversation_id = %s", cid),
        )
        assert letter["channel"] == "email" and letter["recipient"] == "nobody@example.test"
        assert letter["attempts"] == 1 and "550" in letter["error"]  # refused: not retried
        listed = await api.client.get("/api/channels/dead-letters", headers=api.auth("admin"))
        assert listed.status_code == 200 and any(d["conversation_id"] == str(cid) for d in listed.json())

        # A reply that went out and bounced later (the customer's server sends a report).
        customer = _customer(mail_servers, "wangfang")
        first = _mail("Invoice", "Send me the invoice.", sender=customer)
        await asyncio.to_thread(mail_servers.send, first)
        cid2 = await _conversation_of(api_db, first["Message-ID"])
        sent = await api.client.post(
            f"/api/conversations/{cid2}/messages", headers=api.auth("agent"), json={"body": "Attached."}
        )
        assert sent.status_code == 201
        (reply,) = await asyncio.to_thread(mail_servers.wait_for_messages, customer, 1, WAIT_S)
        await asyncio.to_thread(mail_servers.send, _bounce(customer, reply["Message-ID"]))
        letter = await _until(
            "the bounce's dead letter",
            lambda: _row(api_db, "SELECT * FROM aicc.channel_dead_letters WHERE conversation_id = %s", cid2),
        )
        assert letter["recipient"] == customer and letter["error"].startswith("bounced: ")
        assert "Status: 5.2.2" in letter["error"] and "mailbox full" in letter["error"]
        status = _row(api_db, "SELECT status FROM aicc.email_messages WHERE msgid = %s", reply["Message-ID"])
        assert status == {"status": "failed"}
        # The bounce itself opened nothing.
        assert _row(
            api_db, "SELECT count(*) AS n FROM aicc.conversation_messages WHERE conversation_id = %s", cid2
        ) == {"n": 2}


def _bounce(recipient: str, original_id: str) -> EmailMessage:
    """A delivery status notification as a customer's mail server sends one (RFC 3464)."""
    raw = (
        "From: Mail Delivery System <MAILER-DAEMON@example.test>\r\n"
        f"To: {SUPPORT}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: {make_msgid(domain='example.test')}\r\nAuto-Submitted: auto-replied\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="DSN"\r\n'
        "\r\n--DSN\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--DSN\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.test\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.2.2\r\n"
        "Diagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n\r\n"
        f"--DSN\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: {SUPPORT}\r\nTo: {recipient}\r\n"
        f"Message-ID: {original_id}\r\nSubject: Re: Invoice\r\n\r\n--DSN--\r\n"
    )
    msg = BytesParser(policy=policy.default).parsebytes(raw.encode())
    assert isinstance(msg, EmailMessage)
    return msg


@pytest.mark.asyncio
async def test_one_api_process_reads_the_mailbox_and_another_takes_over_when_it_stops(
    api_db: ApiDatabase, api_users: dict[str, ApiUser], mail_servers: MailServers, tmp_path: Path
) -> None:
    customer = _customer(mail_servers, "liuyang")
    async with (
        email_site(api_db, api_users, mail_servers, tmp_path) as one,
        email_site(api_db, api_users, mail_servers, tmp_path, idle_s=5, timeout_s=5) as two,
    ):
        hubs: list[EmailHub] = [one.app.state.email, two.app.state.email]
        first = [_mail(f"Question {n}", f"Question number {n}", sender=customer) for n in range(3)]
        for msg in first:
            await asyncio.to_thread(mail_servers.send, msg)
        for msg in first:
            await _conversation_of(api_db, msg["Message-ID"])
        readers = [h for h in hubs if h.metrics.reading._value.get() == 1]
        assert len(readers) == 1  # the lease: one reader, the other waits
        await readers[0].close()  # it stops (releasing the lease): the other reads on
        later = _mail("Question 4", "Still there?", sender=customer)
        await asyncio.to_thread(mail_servers.send, later)
        await _conversation_of(api_db, later["Message-ID"])
        (other,) = [h for h in hubs if h is not readers[0]]
        assert other.metrics.reading._value.get() == 1
    for msg in [*first, later]:
        row = _row(
            api_db,
            "SELECT count(*) AS n FROM aicc.conversation_messages m JOIN aicc.email_messages e "
            "ON e.message_id = m.id WHERE e.msgid = %s",
            msg["Message-ID"],
        )
        assert row == {"n": 1}


@pytest.mark.asyncio
async def test_a_refused_login_is_logged_counted_and_retried(
    api_db: ApiDatabase,
    api_users: dict[str, ApiUser],
    mail_servers: MailServers,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with email_site(api_db, api_users, mail_servers, tmp_path) as api:
        hub: EmailHub = api.app.state.email
        await hub.close()
        hub._passwords = ("wrong-password", "wrong-password")
        await hub.start()
        await _until("two failed sessions", lambda: hub.metrics.mailbox_errors._value.get() >= 2)
        await hub.close()
    failures = [r.getMessage() for r in caplog.records if r.name == "aicc.email" and r.levelname == "ERROR"]
    assert failures and f"reading {SUPPORT}@{mail_servers.host}:{mail_servers.imap_port}/INBOX" in failures[0]
    assert "the login of support@aicc.test" in failures[0]
    assert all("wrong-password" not in f for f in failures)


def test_settings_name_what_is_missing_or_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="address, imap_host, imap_password_file, smtp_host not set"):
        EmailSettings(enabled=True)
    missing = EmailSettings(
        enabled=True,
        address=SUPPORT,
        imap_host="127.0.0.1",
        smtp_host="127.0.0.1",
        imap_password_file=tmp_path / "nope",
    )
    with pytest.raises(ConfigError, match=r"nope \(email.imap_password_file\)"):
        missing.passwords()
    site = {"enabled": True, "imap_host": "10.0.0.25", "smtp_host": "10.0.0.25"}
    with pytest.raises(ValueError, match="needed when the channel is enabled"):
        SiteSettings.model_validate({"channels": {"email": site}})
    with pytest.raises(ValueError, match="not PEM certificates"):
        SiteSettings.model_validate(
            {"channels": {"email": {**site, "address": SUPPORT, "ca_pem": "-----BEGIN CERTIFICATE-----\nxx"}}}
        )
    with pytest.raises(ValueError, match="smtp_host needed"):
        SiteSettings.model_validate({"channels": {"email": {**site, "address": SUPPORT, "smtp_host": ""}}})
