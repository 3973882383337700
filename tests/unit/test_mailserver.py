"""The real mail servers of tests/unit/mailserver.py: mail flows MX -> LMTP -> IMAPS and submission ->
LMTP, relaying needs AUTH, IMAP is TLS only, and nothing listens beyond the fixture's loopback ports."""

from __future__ import annotations

import os
import re
import smtplib
import socket
import subprocess
import uuid
from email.message import EmailMessage

import pytest

from tests.unit.mailserver import MailServers, mail_servers_fixture  # noqa: F401


def _message(sender: str, to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"] = sender, to
    msg["Subject"] = f"test {uuid.uuid4()}"
    msg.set_content("Hello from the mail server tests.\n")
    return msg


def test_mx_delivery_arrives_in_imap_inbox(mail_servers: MailServers) -> None:
    msg = _message("someone@example.test", "support@aicc.test")
    mail_servers.send(msg)
    got = mail_servers.wait_for_messages("support@aicc.test", 1)
    assert [m["Subject"] for m in got] == [msg["Subject"]]
    assert got[0].get_content() == "Hello from the mail server tests.\n"


def test_submission_with_starttls_and_auth_delivers(mail_servers: MailServers) -> None:
    msg = _message("support@aicc.test", "customer@example.test")
    mail_servers.submit(msg, "support@aicc.test")
    got = mail_servers.wait_for_messages("customer@example.test", 1)
    assert [m["Subject"] for m in got] == [msg["Subject"]]
    # Postfix stamps an authenticated, encrypted submission "ESMTPSA".
    assert any("with ESMTPSA" in str(r) for r in got[0].get_all("Received", []))


def test_relay_without_auth_is_refused(mail_servers: MailServers) -> None:
    outside = _message("support@aicc.test", "someone@elsewhere.test")
    with smtplib.SMTP(mail_servers.host, mail_servers.submission_port, local_hostname="client.test") as smtp:
        # Nothing before STARTTLS (and no AUTH offered in clear)...
        smtp.ehlo()
        assert not smtp.has_extn("auth")
        with pytest.raises(smtplib.SMTPSenderRefused) as clear:
            smtp.send_message(outside)
        assert clear.value.smtp_code == 530
        # ...and after it, no relaying without AUTH.
        smtp.starttls(context=mail_servers.ssl_context())
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.send_message(outside)
        assert refused.value.recipients["someone@elsewhere.test"][0] == 554
    # The MX-like port takes mail for its own domains only.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as relay:
        mail_servers.send(outside)
    code, text = relay.value.recipients["someone@elsewhere.test"]
    assert code == 554
    assert b"Relay access denied" in text
    # Nor for a mailbox that does not exist.
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        mail_servers.send(_message("someone@example.test", "nobody@aicc.test"))


def test_imap_is_tls_only_and_everything_listens_on_loopback(mail_servers: MailServers) -> None:
    # A plain-text client on the IMAP port gets no greeting: the port speaks TLS from the first byte.
    with socket.create_connection((mail_servers.host, mail_servers.imap_port), timeout=5) as s:
        s.sendall(
            b"a1 LOGIN support@aicc.test " + mail_servers.password("support@aicc.test").encode() + b"\r\n"
        )
        received = b""
        while chunk := s.recv(4096):
            received += chunk
    assert b"* OK" not in received
    assert b"a1 OK" not in received
    # ...while IMAPS with the run's CA works.
    with mail_servers.imap("support@aicc.test") as conn:
        assert "IDLE" in conn.capabilities

    # Every TCP socket the servers listen on is one of the fixture's ports, on 127.0.0.1 only.
    listing = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    ours: set[str] = set()
    for line in listing.splitlines():
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        groups: set[int] = set()
        for pid in pids:
            try:
                groups.add(os.getpgid(pid))
            except ProcessLookupError:
                continue
        if groups & set(mail_servers.process_groups):
            ours.add(line.split()[3])
    expected = {
        f"127.0.0.1:{port}"
        for port in (
            mail_servers.imap_port,
            mail_servers.lmtp_port,
            mail_servers.auth_port,
            mail_servers.smtp_port,
            mail_servers.submission_port,
        )
    }
    assert ours == expected
