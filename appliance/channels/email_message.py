"""Email as the channel reads and writes it (channels/email.py): a customer's RFC 5322 message to what a
conversation stores, and an agent's reply to a message their mail client threads under the original.

In: the sender, the subject, the thread (Message-ID, In-Reply-To, References), the text (text/plain
first; HTML only as text, through the ammonia sanitizer: no markup, script or style survives), with the
quoted history and "On ... wrote:" / "在 ... 写道：" lines trimmed, so agents read what is new. Charsets
as declared, GB2312 read as its superset GB18030 (Chinese mail often declares one and uses the other).
Mail that no person wrote is told apart (`automatic`): auto-replies (Auto-Submitted, RFC 3834;
X-Autoreply), bulk and list mail (Precedence, List-Id), bounces (multipart/report, the mailer daemon)
and our own mail coming back (X-Loop): none of it opens a conversation or gets an answer.

Out: one text/plain UTF-8 part, "Re: " and the subject once, In-Reply-To and References (the last
REFERENCES_MAX ids), our own Message-ID, X-Loop with our address, and Auto-Submitted on the bot's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import re
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime
from typing import Literal

import nh3

Automatic = Literal["auto_reply", "bulk", "list", "bounce", "loop"]

SUBJECT_MAX = 300
REFERENCES_MAX = 20
MSGID = re.compile(r"<[^<>\s]{1,250}>")
# Reply and forward prefixes mail clients add, in English and Chinese (回复, 答复, 转发), repeated.
SUBJECT_PREFIX = re.compile(r"^\s*((re|aw|fw|fwd|回复|答复|转发)\s*(\[\d+\])?\s*[:：]\s*)+", re.IGNORECASE)
# Where quoted history starts in a reply: "On <date>, <name> wrote:", Outlook's and Foxmail's headers.
QUOTE_START = re.compile(
    r"^\s*(on\s.{1,200}\swrote:|在\s?.{1,200}写道[:：]|-{2,}\s*(original message|原始邮件)\s*-{2,}|"
    r"(from|发件人)\s*[:：].{1,300})\s*$",
    re.IGNORECASE,
)
BLOCK = re.compile(r"</?(p|div|li|tr|h[1-6]|blockquote|table|ul|ol|pre)\b[^>]*>|<br\s*/?>", re.IGNORECASE)
GB_WORD = re.compile(rb"=\?(gb2312|gbk|x-gbk)\?", re.IGNORECASE)
CHARSETS = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "ks_c_5601-1987": "cp949"}


class MalformedEmail(ValueError):
    """A message the channel cannot read; the text says what is wrong."""


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class InboundEmail:
    message_id: str  # as sent, with the angle brackets; made from the content when it has none
    sender: str  # the address, lower case
    name: str
    subject: str
    sent_at: dt.datetime | None
    thread: tuple[str, ...]  # In-Reply-To, then References newest first: the ids this one answers
    text: str  # what is new, as plain text ("" when there is none)
    attachments: tuple[Attachment, ...]
    automatic: Automatic | None


def parse(raw: bytes, own_address: str) -> InboundEmail:
    """A received message as the channel stores it; MalformedEmail when it has no usable sender."""
    msg = BytesParser(policy=policy.default).parsebytes(_gb_headers(raw))
    try:
        sender, name = _sender(msg)
        subject = " ".join(str(msg.get("Subject", "")).split())[:SUBJECT_MAX]
        own_id = _ids(msg.get("Message-ID"))
        thread = _ids(msg.get("In-Reply-To")) + tuple(reversed(_ids(msg.get("References"))))
        loops = str(msg.get("X-Loop", "")).lower()
        sent_at = _date(msg)
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        # The policy parses headers lazily; a header it cannot parse raises here, not above.
        raise MalformedEmail(f"unreadable header: {type(exc).__name__}: {str(exc)[:200]}") from None
    message_id = own_id[0] if own_id else f"<{hashlib.sha256(raw).hexdigest()[:40]}@aicc.missing-id>"
    automatic = _automatic(msg, sender, own_address.lower(), loops)
    return InboundEmail(
        message_id=message_id,
        sender=sender,
        name=name,
        subject=subject,
        sent_at=sent_at,
        thread=tuple(dict.fromkeys(t for t in thread if t != message_id))[:REFERENCES_MAX],
        text=trim_quoted(_body(msg)),
        attachments=tuple(_attachments(msg)),
        automatic=automatic,
    )


def _gb_headers(raw: bytes) -> bytes:
    """Encoded words (RFC 2047) in GB2312 or GBK read as GB18030, their superset: a subject or a name
    declared GB2312 often holds GBK characters (镕, 喆, 堃), which would come out garbled."""
    head, sep, body = raw.partition(b"\r\n\r\n") if b"\r\n\r\n" in raw else raw.partition(b"\n\n")
    return GB_WORD.sub(b"=?gb18030?", head) + sep + body


def _sender(msg: EmailMessage) -> tuple[str, str]:
    header = msg.get("From")
    addresses = getattr(header, "addresses", ()) if header is not None else ()
    if not addresses:
        raise MalformedEmail("no From address")
    address = addresses[0]
    spec = address.addr_spec.strip().lower()
    if not re.fullmatch(r"[^@\s<>]{1,64}@[^@\s<>]{1,255}", spec):
        raise MalformedEmail(f"the From address {spec[:100]!r} is not an address")
    return spec, " ".join(address.display_name.split())[:200]


def _ids(value: object) -> tuple[str, ...]:
    return tuple(MSGID.findall(str(value or "")))


def _date(msg: EmailMessage) -> dt.datetime | None:
    header = msg.get("Date")
    when = getattr(header, "datetime", None)
    if not isinstance(when, dt.datetime):
        return None
    return when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _automatic(msg: EmailMessage, sender: str, own: str, loops: str) -> Automatic | None:
    if sender == own or (own and own in loops):
        return "loop"
    if msg.get_content_type() == "multipart/report" or re.match(r"(mailer-daemon|postmaster)@", sender):
        return "bounce"
    if str(msg.get("Auto-Submitted", "no")).strip().lower() not in ("", "no") or msg.get("X-Autoreply"):
        return "auto_reply"
    if str(msg.get("Precedence", "")).strip().lower() in ("bulk", "junk", "list", "auto_reply"):
        return "bulk"
    if msg.get("List-Id") or msg.get("List-Unsubscribe"):
        return "list"
    return None


def _body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None or not isinstance(part, EmailMessage):
        return ""
    text = _decode(part)
    if part.get_content_type() == "text/html":
        text = html_to_text(text)
    return _tidy(text)


def _decode(part: EmailMessage) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = (part.get_content_charset() or "utf-8").lower()
    charset = CHARSETS.get(charset, charset)
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know: the bytes as UTF-8, what is not shown as such
        return payload.decode("utf-8", errors="replace")


def html_to_text(markup: str) -> str:
    """The text of an HTML part: blocks start and end on their own lines; every tag goes (script and
    style with their content), entities are decoded last, so nothing in the text is markup again."""
    marked = BLOCK.sub("\n", markup)
    stripped = nh3.clean(marked, tags=set(), clean_content_tags={"script", "style", "head", "title"})
    return html.unescape(stripped)


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).replace("\x00", "").strip()


def trim_quoted(text: str) -> str:
    """What is new in a reply: up to the first line that starts the quoted history, without the lines
    quoted with ">" after it. The whole text when trimming would leave nothing."""
    kept: list[str] = []
    for line in text.split("\n"):
        if QUOTE_START.match(line):
            break
        kept.append(line)
    while kept and (not kept[-1].strip() or kept[-1].lstrip().startswith(">")):
        kept.pop()
    trimmed = "\n".join(kept).strip()
    return trimmed or text


def _attachments(msg: EmailMessage) -> list[Attachment]:
    found = []
    for part in msg.iter_attachments():
        if not isinstance(part, EmailMessage):
            continue
        payload = part.get_payload(decode=True)
        name = " ".join(str(part.get_filename() or "").split())[:200] or "(no name)"
        found.append(
            Attachment(name, part.get_content_type(), len(payload) if isinstance(payload, bytes) else 0)
        )
    return found


@dataclass(frozen=True)
class BounceReport:
    original_ids: tuple[str, ...]  # the Message-IDs of what bounced
    diagnostic: str  # the report's Status and Diagnostic-Code, for the dead letter


def bounce_report(raw: bytes) -> BounceReport:
    """What a bounce (a delivery status notification, RFC 3464) says: which message of ours did not
    arrive, and why. Mailers quote the original's headers (text/rfc822-headers) or the whole message."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    ids: list[str] = list(_ids(msg.get("In-Reply-To")))
    said: list[str] = []
    for part in msg.walk():
        kind = part.get_content_type()
        try:
            if kind == "message/delivery-status":
                for block in _messages(part.get_payload()):
                    for field in ("Final-Recipient", "Status", "Diagnostic-Code"):
                        if block.get(field):
                            said.append(f"{field}: {' '.join(str(block[field]).split())}")
            elif kind == "text/rfc822-headers" and isinstance(part, EmailMessage):
                quoted = BytesParser(policy=policy.default).parsebytes(
                    part.get_content().encode("utf-8", "replace"), headersonly=True
                )
                ids.extend(_ids(quoted.get("Message-ID")))
            elif kind == "message/rfc822":
                for inner in _messages(part.get_payload()):
                    ids.extend(_ids(inner.get("Message-ID")))
        except (ValueError, TypeError, AttributeError, LookupError):
            continue  # a part that does not read: what the others say is enough
    subject = " ".join(str(msg.get("Subject", "")).split())
    return BounceReport(tuple(dict.fromkeys(ids)), "; ".join(said)[:800] or subject[:200] or "bounced")


def _messages(payload: object) -> list[Message]:
    """The parts of a message/* payload (a list of messages), nothing for anything else."""
    return [m for m in payload if isinstance(m, Message)] if isinstance(payload, list) else []


def reply_subject(subject: str) -> str:
    """'Re: ' and the subject without the prefixes replies and forwards piled up."""
    base = SUBJECT_PREFIX.sub("", subject).strip()
    return f"Re: {base}"[:SUBJECT_MAX] if base else "Re:"


def compose(
    *,
    sender: str,
    sender_name: str,
    to: str,
    subject: str,
    text: str,
    message_id: str,
    thread: tuple[str, ...],
    automatic: bool = False,
    now: dt.datetime | None = None,
) -> EmailMessage:
    """A reply: `thread` is the ids of the conversation's messages, newest first; `automatic` when the
    bot wrote it (Auto-Submitted, RFC 3834: the customer's auto-responder does not answer it)."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(sender_name, addr_spec=sender)
    msg["To"] = Address(addr_spec=to)
    msg["Subject"] = reply_subject(subject)
    msg["Date"] = format_datetime(now or dt.datetime.now(dt.UTC))
    msg["Message-ID"] = message_id
    if thread:
        msg["In-Reply-To"] = thread[0]
        msg["References"] = " ".join(reversed(thread[:REFERENCES_MAX]))
    msg["X-Loop"] = sender
    if automatic:
        msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(text, charset="utf-8")
    return msg
