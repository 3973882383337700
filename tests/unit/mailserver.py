"""Real mail servers for tests of the email channel (IMAP in, SMTP out): Debian's Dovecot and Postfix
as throwaway instances on 127.0.0.1, every file of theirs in one temp dir, nothing left behind.

Fixture -- import it into your test module (pytest finds fixtures imported there; it is named
*_fixture in Python so that test parameters do not shadow the import):

    from tests.unit.mailserver import MailServers, mail_servers_fixture  # noqa: F401

- `mail_servers` (module): MailServers --
  - Dovecot: IMAP over implicit TLS only (`imap_port`, IDLE included), LMTP (`lmtp_port`, Postfix
    delivers there) and its SASL auth service (`auth_port`, Postfix's submission asks it);
  - Postfix: an MX-like port (`smtp_port`: no auth, takes mail for aicc.test and example.test only, as
    a customer's mail server would deliver it) and a submission port (`submission_port`: STARTTLS
    required, then AUTH as a Dovecot user; relays for authenticated users only).
  Users: support@aicc.test and customer@example.test with random passwords (`password(user)`);
  `add_user(address)` makes more. TLS is verified against `ca_file` (a CA made for this run), with
  `ssl_context()`. `send(msg)` delivers on the MX port, `submit(msg, user)` on the submission port,
  `wait_for_messages(user, count)` reads an INBOX over IMAPS; `maillog()` and `dovecot_log()` are the
  logs (there is no syslog here).

Needs root (Dovecot and Postfix masters run as root and drop to their packages' users) and
`scripts/bootstrap`'s dovecot-imapd, dovecot-lmtpd and postfix. A test that changes a mailbox should
use its own user (`add_user`), since the instance is shared by the module.
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import imaplib
import os
import pwd
import secrets
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.unit import tls_support

HOST = "127.0.0.1"
DOMAINS = ("aicc.test", "example.test")
DEFAULT_USERS = ("support@aicc.test", "customer@example.test")
DOVECOT = Path("/usr/sbin/dovecot")
POSTFIX = Path("/usr/sbin/postfix")
POSTMAP = Path("/usr/sbin/postmap")
START_TIMEOUT_S = 20.0
# The uid that owns the mailboxes: Debian's `mail` user (Dovecot refuses uids outside first/last_valid_uid).
MAIL_USER = "mail"


class MailServerError(RuntimeError):
    """A mail server did not start; the message ends with the tail of its log."""


def _free_tcp_ports(count: int) -> list[int]:
    """Ports free now, all different (each held until all are picked)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in socks]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} was not written)"


def _ssha512(password: str) -> str:
    """Dovecot's {SSHA512} scheme: base64(sha512(password + salt) + salt)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


@dataclass
class MailServers:
    root: Path
    imap_port: int
    lmtp_port: int
    auth_port: int
    smtp_port: int
    submission_port: int
    ca_file: Path
    host: str = HOST
    # The servers' process groups (each runs in a session of its own), for checks on their sockets.
    process_groups: list[int] = field(default_factory=list)
    _passwords: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def users(self) -> list[str]:
        return list(self._passwords)

    def password(self, user: str) -> str:
        return self._passwords[user.lower()]

    def add_user(self, address: str) -> str:
        """A new mailbox in aicc.test or example.test; returns its random password."""
        address = address.lower()
        local, _, domain = address.partition("@")
        if not local or domain not in DOMAINS or ":" in address or address in self._passwords:
            raise ValueError(f"not a new address in {DOMAINS}: {address!r}")
        password = secrets.token_urlsafe(18)
        mail = pwd.getpwnam(MAIL_USER)
        home = self.root / "mail" / domain / local
        # Dovecot re-reads its passwd-file when it changes (auth and LMTP both look users up there).
        with (self.root / "dovecot" / "users").open("a", encoding="utf-8") as f:
            f.write(f"{address}:{_ssha512(password)}:{mail.pw_uid}:{mail.pw_gid}::{home}::\n")
        # Postfix only takes mail for listed mailboxes; its daemons reopen a rebuilt hash table.
        self._passwords[address] = password
        maps = self.root / "postfix" / "etc" / "vmailbox"
        maps.write_text("".join(f"{a} {a}\n" for a in self._passwords), encoding="utf-8")
        subprocess.run(
            [str(POSTMAP), "-c", str(maps.parent), f"hash:{maps}"], check=True, capture_output=True
        )
        # Dovecot looks at the passwd-file at most once per second (db-passwd-file.c, last_sync_time):
        # a login within the second of the last look would not see the new user yet.
        time.sleep(1.02 - time.time() % 1)
        return password

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this run's CA only (hostname and chain verified)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def maillog(self) -> str:
        return (self.root / "postfix" / "maillog").read_text(encoding="utf-8", errors="replace")

    def dovecot_log(self) -> str:
        return (self.root / "dovecot" / "dovecot.log").read_text(encoding="utf-8", errors="replace")

    def send(self, msg: EmailMessage) -> None:
        """Deliver `msg` as a customer's mail server would: plain SMTP to the MX-like port."""
        # An explicit HELO name: smtplib's default (socket.getfqdn) may wait for DNS.
        with smtplib.SMTP(self.host, self.smtp_port, local_hostname="mx.example.test", timeout=10) as smtp:
            smtp.send_message(msg)

    def submit(self, msg: EmailMessage, user: str) -> None:
        """Send `msg` as `user` on the submission port: STARTTLS (verified), then AUTH."""
        with smtplib.SMTP(self.host, self.submission_port, local_hostname="client.test", timeout=10) as smtp:
            smtp.starttls(context=self.ssl_context())
            smtp.login(user, self.password(user))
            smtp.send_message(msg)

    @contextmanager
    def imap(self, user: str) -> Iterator[imaplib.IMAP4_SSL]:
        """A logged-in IMAPS session of `user` (TLS verified against ca_file)."""
        conn = imaplib.IMAP4_SSL(self.host, self.imap_port, ssl_context=self.ssl_context(), timeout=10)
        try:
            conn.login(user, self.password(user))
            yield conn
        finally:
            with suppress(OSError, imaplib.IMAP4.error):
                conn.logout()

    def wait_for_messages(self, user: str, count: int, timeout: float = 20) -> list[EmailMessage]:
        """The messages of `user`'s INBOX once it holds at least `count` (oldest first)."""
        deadline = time.monotonic() + timeout
        with self.imap(user) as conn:
            while True:
                typ, data = conn.select("INBOX", readonly=True)
                assert typ == "OK", data
                typ, data = conn.uid("SEARCH", "ALL")
                assert typ == "OK", data
                uids = data[0].split() if data and data[0] else []
                if len(uids) >= count:
                    return [self._fetch(conn, uid) for uid in uids]
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{user}: {len(uids)} of {count} messages after {timeout} s\n"
                        f"--- postfix maillog ---\n{_tail(self.root / 'postfix' / 'maillog')}\n"
                        f"--- dovecot log ---\n{_tail(self.root / 'dovecot' / 'dovecot.log')}"
                    )
                time.sleep(0.1)

    @staticmethod
    def _fetch(conn: imaplib.IMAP4_SSL, uid: bytes) -> EmailMessage:
        typ, data = conn.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
        assert typ == "OK", data
        raw = next(part[1] for part in data if isinstance(part, tuple))
        # IMAP sends CRLF line ends; Python's text content uses LF.
        msg = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


def _dovecot_conf(servers: MailServers, cert: Path, key: Path) -> str:
    d = servers.root / "dovecot"
    mail = pwd.getpwnam(MAIL_USER)
    return f"""\
# A throwaway Dovecot for tests (tests/unit/mailserver.py): loopback only, TLS required.
base_dir = {d}/run
state_dir = {d}/state
instance_name = aicc-test-{servers.imap_port}
protocols = imap lmtp
listen = {HOST}
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {mail.pw_uid}
last_valid_uid = {mail.pw_uid}
first_valid_gid = {mail.pw_gid}
last_valid_gid = {mail.pw_gid}
mail_location = maildir:~/Maildir
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=SSHA512 username_format=%Lu {d}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%Lu {d}/users
}}
service imap-login {{
  # No plain IMAP port at all: IMAP is implicit TLS only.
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {servers.imap_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {HOST}
    port = {servers.lmtp_port}
  }}
}}
service auth {{
  # Postfix's submission asks here (smtpd_sasl_type = dovecot); a client socket, not a master one.
  inet_listener postfix-sasl {{
    address = {HOST}
    port = {servers.auth_port}
  }}
}}
"""


def _postfix_main_cf(servers: MailServers, cert: Path, key: Path) -> str:
    p = servers.root / "postfix"
    return f"""\
# A throwaway Postfix for tests (tests/unit/mailserver.py): loopback only, no DNS, no local delivery,
# mail for the virtual domains goes to Dovecot over LMTP, everything else is refused.
compatibility_level = 3.6
queue_directory = {p}/queue
data_directory = {p}/data
maillog_file = {p}/maillog
maillog_file_prefixes = {p}
myhostname = mx.aicc.test
mydomain = aicc.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 no local delivery
alias_maps =
alias_database =
inet_interfaces = {HOST}
inet_protocols = ipv4
mynetworks_style = host
relayhost =
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtpd_peername_lookup = no
default_transport = error:5.7.1 mail for other domains is not delivered
relay_transport = error:5.7.1 mail for other domains is not delivered
virtual_mailbox_domains = {" ".join(DOMAINS)}
virtual_mailbox_maps = hash:{p}/etc/vmailbox
virtual_transport = lmtp:inet:{HOST}:{servers.lmtp_port}
smtpd_banner = $myhostname ESMTP
smtpd_tls_chain_files = {key}, {cert}
smtpd_tls_security_level = may
smtpd_sasl_auth_enable = no
# The MX-like port: only mail for the virtual mailboxes, from anyone, as port 25 would.
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
biff = no
"""


def _postfix_master_cf(servers: MailServers) -> str:
    return f"""\
# service type  private unpriv  chroot  wakeup  maxproc command + args (nothing chrooted: no copies
# of /etc files into the queue directory)
{HOST}:{servers.smtp_port} inet n - n - - smtpd
{HOST}:{servers.submission_port} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=inet:{HOST}:{servers.auth_port}
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _wait_for_ports(servers: MailServers, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """Until every port accepts a connection; raises with the logs of a server that died or hung."""

    def logs(name: str) -> str:
        # stderr: what either says before its own log is open (e.g. a config file it cannot parse).
        log = servers.root / name / ("dovecot.log" if name == "dovecot" else "maillog")
        return f"--- {log} ---\n{_tail(log)}\n--- {name} stderr ---\n{_tail(servers.root / name / 'stderr')}"

    ports = {
        "dovecot": (servers.imap_port, servers.lmtp_port, servers.auth_port),
        "postfix": (servers.smtp_port, servers.submission_port),
    }
    deadline = time.monotonic() + START_TIMEOUT_S
    for name, proc in procs.items():
        for port in ports[name]:
            while True:
                if proc.poll() is not None:
                    raise MailServerError(f"{name} exited ({proc.returncode}):\n{logs(name)}")
                with socket.socket() as s:
                    s.settimeout(1)
                    if s.connect_ex((HOST, port)) == 0:
                        break
                if time.monotonic() > deadline:
                    raise MailServerError(
                        f"{name}: nothing on port {port} after {START_TIMEOUT_S} s:\n{logs(name)}"
                    )
                time.sleep(0.05)


def _postfix_groups(etc: Path) -> set[int]:
    """The process groups of this Postfix instance: `start-fg` still detaches the master into a
    session of its own. Found by their MAIL_CONFIG, which every Postfix process keeps."""
    groups: set[int] = set()
    tag = f"MAIL_CONFIG={etc}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with suppress(OSError):
            if tag in environ.read_bytes().split(b"\0"):
                groups.add(os.getpgid(int(environ.parent.name)))
    return groups


def _kill_group(group: int, sig: signal.Signals = signal.SIGKILL) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """End a server's command and anything left in its session (start_new_session made it the leader)."""
    if proc.poll() is None:
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    _kill_group(proc.pid)


def _stop_dovecot(proc: subprocess.Popen[bytes]) -> None:
    # SIGTERM is Dovecot's orderly shutdown: its master stops its services, then exits.
    _end(proc)


def _stop_postfix(proc: subprocess.Popen[bytes], etc: Path) -> None:
    if proc.poll() is None:
        # An orderly stop of a running master (a no-op while start-fg is still in its checks).
        stop = [str(POSTFIX), "-c", str(etc), "stop"]
        if subprocess.run(stop, capture_output=True, check=False, timeout=30).returncode == 0:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)  # start-fg returns once the master has exited
    # A failed start: its checks end before they start a master...
    _end(proc)
    # ...and a master that came up meanwhile, or did not stop, goes with its whole process group.
    for group in _postfix_groups(etc):
        _kill_group(group)


@contextmanager
def run_mail_servers(root: Path) -> Iterator[MailServers]:
    """Dovecot and Postfix with all their state under `root` (an empty folder); stopped afterwards."""
    for exe in (DOVECOT, POSTFIX, POSTMAP):
        if not exe.exists():
            raise FileNotFoundError(
                f"{exe} missing: scripts/bootstrap installs dovecot-imapd, dovecot-lmtpd, postfix"
            )
    if os.geteuid() != 0:
        raise PermissionError("the Dovecot and Postfix masters run as root (they drop to their own users)")
    # The servers' unprivileged users (dovenull, dovecot, mail, postfix) must reach their folders.
    root.chmod(0o755)
    # Both masters read the key as root before their services drop privileges: root only (0600).
    ca_file, cert, key = tls_support.issue(root / "tls", "localhost", (HOST,), ca_name="aicc test mail CA")
    imap, lmtp, auth, smtp, submission = _free_tcp_ports(5)
    servers = MailServers(
        root,
        imap_port=imap,
        lmtp_port=lmtp,
        auth_port=auth,
        smtp_port=smtp,
        submission_port=submission,
        ca_file=ca_file,
    )
    mail = pwd.getpwnam(MAIL_USER)

    dovecot = root / "dovecot"
    for sub in (dovecot, dovecot / "run", dovecot / "state"):
        sub.mkdir(mode=0o755)
    (dovecot / "users").touch(mode=0o644)
    (dovecot / "dovecot.conf").write_text(_dovecot_conf(servers, cert, key), encoding="utf-8")
    # Mailboxes: owned by the mail user that Dovecot's mail processes (and LMTP deliveries) run as.
    (root / "mail").mkdir(mode=0o700)
    os.chown(root / "mail", mail.pw_uid, mail.pw_gid)

    # Postfix: config_directory, queue_directory and data_directory apart (postfix-script checks the
    # config dir is all root's, the queue has postfix-owned parts, data_directory is postfix's).
    postfix = root / "postfix"
    etc, queue, data = postfix / "etc", postfix / "queue", postfix / "data"
    for sub in (postfix, etc, queue, data):
        sub.mkdir(mode=0o755)
    shutil.chown(data, "postfix", "postfix")
    (etc / "main.cf").write_text(_postfix_main_cf(servers, cert, key), encoding="utf-8")
    (etc / "master.cf").write_text(_postfix_master_cf(servers), encoding="utf-8")
    # Postfix re-reads a main.cf changed within the last second, in steps of 0.3 s, until it is older.
    past = time.time() - 10
    for cf in ("main.cf", "master.cf"):
        os.utime(etc / cf, (past, past))
    (etc / "vmailbox").touch(mode=0o644)
    for user in DEFAULT_USERS:
        servers.add_user(user)

    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with (dovecot / "stderr").open("wb") as stderr:
            procs["dovecot"] = subprocess.Popen(
                [str(DOVECOT), "-F", "-c", str(dovecot / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        # A config directory given with -c is honoured for root without alternate_config_directories
        # in /etc/postfix/main.cf (that list only guards the set-gid postdrop/postqueue, unused here),
        # so nothing outside `root` is written. start-fg: the command lasts as long as the master does.
        with (postfix / "stderr").open("wb") as stderr:
            procs["postfix"] = subprocess.Popen(
                [str(POSTFIX), "-c", str(etc), "start-fg"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        _wait_for_ports(servers, procs)
        servers.process_groups.extend({procs["dovecot"].pid, *_postfix_groups(etc)})
        yield servers
    finally:
        if "postfix" in procs:
            _stop_postfix(procs["postfix"], etc)
        if "dovecot" in procs:
            _stop_dovecot(procs["dovecot"])


@pytest.fixture(scope="module", name="mail_servers")
def mail_servers_fixture() -> Iterator[MailServers]:
    # Outside pytest's 0700 temp dirs: the servers' own users must reach their folders.
    root = Path(tempfile.mkdtemp(prefix="aicc-mail-"))
    try:
        with run_mail_servers(root) as servers:
            yield servers
    finally:
        shutil.rmtree(root, ignore_errors=True)
