"""Email as the channel reads and writes it (channels/email_message.py): what agents see of a customer's
mail (the new text, no markup, the right characters), which mail is automatic, and replies that mail
clients thread. Hostile and broken input is refused with a reason or read safely, never a crash."""

from __future__ import annotations

import base64
import datetime as dt
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicc.appliance.channels.email_message import (
    MalformedEmail,
    bounce_report,
    compose,
    html_to_text,
    parse,
    reply_subject,
    trim_quoted,
)

OWN = "support@aicc.test"


def _mail(body: str = "Where is my order 100234?", **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = headers.pop("From", "Li Lei <Li.Lei@Example.test>")
    msg["To"] = OWN
    msg["Subject"] = headers.pop("Subject", "Order 100234")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def test_a_reply_is_read_as_its_new_text_in_its_thread() -> None:
    raw = _mail(
        "Yes, please change it to 5 Main Street.\n\nOn Tue, 1 Dec 2026, Support <support@aicc.test> wrote:\n"
        "> Shall we change the address?\n> -- \n",
        Subject="Re: RE: 回复: Order 100234",
        Message_ID="<c2@example.test>",
        In_Reply_To="<r1@aicc.test>",
        References="<c1@example.test> <r1@aicc.test>",
        Date="Thu, 03 Dec 2026 09:30:00 +0800",
    )
    mail = parse(raw, OWN)
    assert mail.sender == "li.lei@example.test" and mail.name == "Li Lei"
    assert mail.message_id == "<c2@example.test>"
    assert mail.thread == ("<r1@aicc.test>", "<c1@example.test>")  # what it answers first
    assert mail.text == "Yes, please change it to 5 Main Street."
    assert mail.sent_at == dt.datetime(2026, 12, 3, 1, 30, tzinfo=dt.UTC)
    assert mail.automatic is None and mail.attachments == ()
    assert reply_subject(mail.subject) == "Re: Order 100234"


@pytest.mark.parametrize(
    ("text", "new"),
    [
        (
            "好的，谢谢。\n\n在 2026年12月1日 周二 10:00，客服 <support@aicc.test> 写道：\n> 还有问题吗？",
            "好的，谢谢。",
        ),
        ("Thanks\n\n-----Original Message-----\nFrom: Support\nSent: today", "Thanks"),
        ("收到\n\n发件人: 客服 <support@aicc.test>\n发送时间: 2026年12月1日", "收到"),
        ("> only a quote\n> nothing new", "> only a quote\n> nothing new"),  # nothing left: all of it
        ("Line one\n> a quote inside\nLine three", "Line one\n> a quote inside\nLine three"),
    ],
)
def test_quoted_history_is_trimmed_in_english_and_chinese(text: str, new: str) -> None:
    assert trim_quoted(text) == new


def test_html_mail_becomes_text_without_markup_or_script() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.test"
    msg["Subject"] = "html"
    msg.set_content(
        "<html><head><title>t</title><style>p{color:red}</style></head><body>"
        "<p>您好 &amp; hello</p><div>line<br>two</div><script>alert('x')</script>"
        '<img src=x onerror="alert(1)"><a href="javascript:evil()">link</a>'
        "<p>&lt;script&gt;not code&lt;/script&gt;</p></body></html>",
        subtype="html",
    )
    text = parse(msg.as_bytes(), OWN).text
    lines = [line for line in text.split("\n") if line]
    assert lines == ["您好 & hello", "line", "two", "link", "<script>not code</script>"]
    assert "alert" not in text and "onerror" not in text and "color" not in text
    assert html_to_text("<scr<script>ipt>alert(1)</script>").count("alert(1)") <= 1


def test_chinese_charsets_are_read_right() -> None:
    body = "您的订单已发货，朱镕基路 5 号"  # 镕 is in GBK, not in GB2312: mail declares gb2312 anyway
    raw = (
        b"From: =?gb2312?b?wO7A1w==?= <c@example.test>\r\nSubject: =?gbk?b?"
        + base64.b64encode("订单问题".encode("gbk"))
        + b"?=\r\nContent-Type: text/plain; charset=gb2312\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + body.encode("gbk")
    )
    mail = parse(raw, OWN)
    assert mail.text == body and mail.subject == "订单问题" and mail.name == "李雷"
    # A subject declared GB2312 that holds GBK characters, as Chinese mail clients send it.
    subject = base64.b64encode("王喆的订单（朱镕基路）".encode("gbk"))
    raw = b"From: c@example.test\r\nSubject: =?GB2312?B?" + subject + b"?=\r\n\r\nhi"
    assert parse(raw, OWN).subject == "王喆的订单（朱镕基路）"
    unknown = b"From: c@example.test\r\nContent-Type: text/plain; charset=x-no-such\r\n\r\nhello \xff"
    assert parse(unknown, OWN).text.startswith("hello")


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ({"Auto_Submitted": "auto-replied"}, "auto_reply"),
        ({"X_Autoreply": "yes"}, "auto_reply"),
        ({"Precedence": "bulk"}, "bulk"),
        ({"List_Id": "<news.example.test>"}, "list"),
        ({"From": "MAILER-DAEMON@example.test"}, "bounce"),
        ({"From": "Support <SUPPORT@aicc.test>"}, "loop"),
        ({"X_Loop": "support@aicc.test"}, "loop"),
        ({"Auto_Submitted": "no"}, None),
    ],
)
def test_mail_no_person_wrote_is_told_apart(headers: dict[str, str], kind: str | None) -> None:
    assert parse(_mail(**headers), OWN).automatic == kind


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: no sender\r\n\r\nhello",
        b"From: undisclosed-recipients:;\r\n\r\nhello",
        b"From: not an address\r\n\r\nhello",
        b"",
    ],
)
def test_mail_without_a_usable_sender_is_refused_with_a_reason(raw: bytes) -> None:
    with pytest.raises(MalformedEmail):
        parse(raw, OWN)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=2000)
    | st.builds(
        lambda h, b: b"From: a@example.test\r\n" + h + b"\r\n\r\n" + b,
        st.binary(max_size=300),
        st.binary(max_size=300),
    )
)
def test_any_bytes_are_read_or_refused_never_a_crash(raw: bytes) -> None:
    try:
        mail = parse(raw, OWN)
    except MalformedEmail:
        return
    assert "@" in mail.sender and "\x00" not in mail.text
    assert all(t.startswith("<") and t.endswith(">") for t in (mail.message_id, *mail.thread))


def test_a_message_without_an_id_gets_one_from_its_content() -> None:
    first, again = parse(_mail(), OWN), parse(_mail(), OWN)
    assert first.message_id == again.message_id and first.message_id.endswith("@aicc.missing-id>")
    assert parse(_mail("other text"), OWN).message_id != first.message_id


def test_attachments_are_named() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.test"
    msg.set_content("see attached")
    msg.add_attachment(b"%PDF-1.4" + b"x" * 100, maintype="application", subtype="pdf", filename="发票.pdf")
    mail = parse(msg.as_bytes(), OWN)
    assert mail.text == "see attached"
    assert [(a.filename, a.content_type, a.size) for a in mail.attachments] == [
        ("发票.pdf", "application/pdf", 108)
    ]


def test_a_reply_threads_under_the_conversation_and_reads_back() -> None:
    reply = compose(
        sender=OWN,
        sender_name="客服中心",
        to="li.lei@example.test",
        subject="回复：Re: 订单 100234 的地址",
        text="您好，地址已更新。\nThe address is updated.",
        message_id="<r2@aicc.test>",
        thread=("<c2@example.test>", "<r1@aicc.test>", "<c1@example.test>"),
    )
    raw = reply.as_bytes()
    back = BytesParser(policy=policy.default).parsebytes(raw)
    assert back["Subject"] == "Re: 订单 100234 的地址"
    assert back["In-Reply-To"] == "<c2@example.test>"
    assert back["References"] == "<c1@example.test> <r1@aicc.test> <c2@example.test>"
    assert back["From"].addresses[0].display_name == "客服中心"
    assert back.get_content().replace("\r\n", "\n").strip() == "您好，地址已更新。\nThe address is updated."
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))  # RFC 5322's line limit
    assert parse(raw, OWN).automatic == "loop"  # our own reply, should it come back


def test_a_header_smuggled_into_the_subject_stays_in_the_subject() -> None:
    raw = b"From: a@example.test\r\nSubject: =?utf-8?q?hi=0D=0ABcc:_victim@example.test?=\r\n\r\nx"
    mail = parse(raw, OWN)
    reply = compose(
        sender=OWN,
        sender_name="",
        to=mail.sender,
        subject=mail.subject,
        text="ok",
        message_id="<r@a.test>",
        thread=(),
    )
    back = BytesParser(policy=policy.default).parsebytes(reply.as_bytes())
    assert back["Bcc"] is None and "victim" in back["Subject"]


def test_a_bounce_names_the_reply_that_did_not_arrive() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.aicc.test (Mail Delivery System)\r\nTo: support@aicc.test\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.aicc.test\r\n\r\n"
        b"Final-Recipient: rfc822; gone@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 <gone@example.test>: User unknown\r\n\r\n"
        b"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: support@aicc.test\r\n"
        b"Message-ID: <r9@aicc.test>\r\nSubject: Re: x\r\n\r\n--B--\r\n"
    )
    assert parse(raw, OWN).automatic == "bounce"
    report = bounce_report(raw)
    assert report.original_ids == ("<r9@aicc.test>",)
    assert "Status: 5.1.1" in report.diagnostic and "User unknown" in report.diagnostic
