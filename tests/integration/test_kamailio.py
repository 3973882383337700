"""Kamailio on the installed lab, driven over the wire like a phone and a browser would.

Real SIP over UDP from this machine (the lab's bridge address) to the sip_proxy host. The flood
test runs last in this file: it bans this machine's address, then lifts the ban again.
"""

from __future__ import annotations

import secrets
import socket
import ssl
import time
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path

import pytest

from aicc.installer.settings import SiteSettings
from aicc.installer.site import Site
from tests.integration.sipclient import DEFAULT_SDP as SDP
from tests.integration.sipclient import SipClient
from tests.integration.site_fixture import InstalledSite

pytestmark = pytest.mark.lab


@cache
def _settings(site: str) -> SiteSettings:
    return Site(Path(site)).settings()


def settings(s: InstalledSite) -> SiteSettings:
    return _settings(str(s.site))


def proxy(s: InstalledSite) -> tuple[str, str]:
    name = s.hosts_in("sip_proxy")[0]
    return name, s.hosts[name]


def client(s: InstalledSite) -> SipClient:
    return SipClient((proxy(s)[1], settings(s).sip.udp_port), timeout=3.0)


def kamcmd(s: InstalledSite, *args: str) -> str:
    name, _ = proxy(s)
    res = s.ssh(name, "kamcmd " + " ".join(args))
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_service_active_enabled_and_listening_on_the_service_address_only(
    installed_site: InstalledSite,
) -> None:
    name, addr = proxy(installed_site)
    sip = settings(installed_site).sip
    state = installed_site.ssh(
        name, "systemctl is-active kamailio; systemctl is-enabled kamailio"
    ).stdout.split()
    assert state == ["active", "enabled"]
    sockets = installed_site.ssh(name, "ss -Hlntup | grep '\"kamailio\"' | awk '{print $1, $5}'").stdout
    bound = {tuple(line.split()) for line in sockets.splitlines()}
    expected = {
        ("udp", f"{addr}:{sip.udp_port}"),
        ("tcp", f"{addr}:{sip.udp_port}"),
        ("tcp", f"{addr}:{sip.tls_port}"),
        ("tcp", f"{addr}:{sip.wss_port}"),
        ("tcp", f"{addr}:{sip.metrics_port}"),
    }
    assert bound == expected


def test_options_to_the_proxy_gets_200(installed_site: InstalledSite) -> None:
    _, addr = proxy(installed_site)
    with client(installed_site) as c:
        resp = c.options(f"sip:{addr}:{settings(installed_site).sip.udp_port}")
    assert resp is not None and resp.status == 200
    # No product or version on the wire.
    assert "kamailio" not in resp.raw.lower()


def test_register_with_the_wrong_password_is_refused(installed_site: InstalledSite) -> None:
    domain = settings(installed_site).sip.domain
    with client(installed_site) as c:
        challenge, answer = c.register("1001", "not-the-password", domain=domain)
    assert challenge is not None and challenge.status == 401
    assert 'realm="' + domain + '"' in (challenge.header("www-authenticate") or "")
    assert answer is not None and answer.status in (401, 403)


def test_register_with_the_right_password_is_saved_in_the_database(installed_site: InstalledSite) -> None:
    domain = settings(installed_site).sip.domain
    password = Site(installed_site.site).secrets()["kamailio_demo_agent_password"]
    with client(installed_site) as c:
        challenge, answer = c.register("1001", password, domain=domain, expires=120)
        assert challenge is not None and challenge.status == 401
        assert answer is not None and answer.status == 200, answer and answer.raw
        assert f"{c.local_ip}:{c.local_port}" in (answer.header("contact") or "")
        # Registrations live in PostgreSQL (DB-only usrloc): visible to every proxy of the site.
        db = installed_site.hosts_in("db")[0]
        dbname = settings(installed_site).database.name
        rows = installed_site.ssh(
            db,
            f"runuser -u postgres -- psql -d {dbname} -Atc "
            "\"SELECT contact FROM kamailio.location WHERE username = '1001'\"",
        ).stdout
        assert f"{c.local_ip}:{c.local_port}" in rows
        c.register("1001", password, domain=domain, expires=0)  # unregister


def test_call_to_a_registered_agent_needs_credentials_and_reaches_its_phone(
    installed_site: InstalledSite,
) -> None:
    domain = settings(installed_site).sip.domain
    password = Site(installed_site.site).secrets()["kamailio_demo_agent_password"]
    uri = f"sip:1001@{domain}"
    with client(installed_site) as agent, client(installed_site) as caller:
        _, ok = agent.register("1001", password, domain=domain, expires=120)
        assert ok is not None and ok.status == 200
        try:
            call_id, tag = secrets.token_hex(8), secrets.token_hex(4)
            invite, branch = caller.build(
                "INVITE",
                uri,
                from_uri=f"sip:1001@{domain}",
                to_uri=uri,
                call_id=call_id,
                cseq=1,
                from_tag=tag,
                body=SDP.format(ip=caller.local_ip),
            )
            caller.send_raw(invite)
            challenge = caller.final(call_id)
            assert challenge is not None and challenge.status == 407
            ack, _ = caller.build(
                "ACK",
                uri,
                from_uri=f"sip:1001@{domain}",
                to_uri=uri,
                call_id=call_id,
                cseq=1,
                from_tag=tag,
                to_tag=challenge.to_tag,
                branch=branch,
            )
            caller.send_raw(ack)
            auth = SipClient.authorization(challenge, "1001", password, "INVITE", uri)
            invite, branch = caller.build(
                "INVITE",
                uri,
                from_uri=f"sip:1001@{domain}",
                to_uri=uri,
                call_id=call_id,
                cseq=2,
                from_tag=tag,
                extra=[auth],
                body=SDP.format(ip=caller.local_ip),
            )
            caller.send_raw(invite)
            # The proxy looks the agent up in usrloc and forwards the call to where it registered.
            received = agent.receive_request(timeout=5)
            assert received is not None and received[0].startswith("INVITE ")
            assert f"{agent.local_ip}:{agent.local_port}" in received[0].split("\r\n", 1)[0]
            agent.respond(received[0], received[1], 486, "Busy Here")
            final = caller.final(call_id, timeout=5)
            assert final is not None and final.status == 486
            ack, _ = caller.build(
                "ACK",
                uri,
                from_uri=f"sip:1001@{domain}",
                to_uri=uri,
                call_id=call_id,
                cseq=2,
                from_tag=tag,
                to_tag=final.to_tag,
                branch=branch,
            )
            caller.send_raw(ack)
        finally:
            agent.register("1001", password, domain=domain, expires=0)


def test_invite_to_an_unknown_number_gets_404(installed_site: InstalledSite) -> None:
    domain = settings(installed_site).sip.domain
    unknown = "7" * 9
    assert unknown not in settings(installed_site).sip.service_numbers
    with client(installed_site) as c:
        resp = c.invite(f"sip:{unknown}@{domain}", domain=domain)
    assert resp is not None and resp.status == 404


def test_service_numbers_are_loaded_and_dispatched_to_the_voicebot_hosts(
    installed_site: InstalledSite,
) -> None:
    s = settings(installed_site)
    table = kamcmd(installed_site, "htable.dump", "did")
    for number, service in s.sip.service_numbers.items():
        assert number in table and service in table
    voicebots = [installed_site.hosts[h] for h in installed_site.hosts_in("voicebot")]
    dispatcher = kamcmd(installed_site, "dispatcher.list")
    for addr in voicebots:
        assert f"sip:{addr}:5080" in dispatcher
    # A service number is not "unknown": it goes to the dispatcher (which answers 503 while no gateway is up).
    number = next(iter(s.sip.service_numbers))
    with client(installed_site) as c:
        resp = c.invite(f"sip:{number}@{s.sip.domain}", domain=s.sip.domain, timeout=8)
    assert resp is None or resp.status != 404
    if resp is not None and resp.status == 200 and installed_site.hosts_in("media"):
        # Answered by a voice gateway: the SDP it answered with was anchored on a media host (rtpengine).
        media = {installed_site.hosts[h] for h in installed_site.hosts_in("media")}
        assert any(f"c=IN IP4 {addr}" in resp.body for addr in media), resp.body


def test_kamailio_talks_to_postgresql_over_tls_without_a_password_in_its_config(
    installed_site: InstalledSite,
) -> None:
    name, _ = proxy(installed_site)
    db = installed_site.hosts_in("db")[0]
    dbname = settings(installed_site).database.name
    rows = installed_site.ssh(
        db,
        f'runuser -u postgres -- psql -d {dbname} -Atc "SELECT s.ssl FROM pg_stat_ssl s '
        "JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'kamailio'\"",
    ).stdout.split()
    assert rows and set(rows) == {"t"}
    secret = Site(installed_site.site).secrets()["kamailio_db_password"]
    found = installed_site.ssh(
        name, f"grep -rlF -- '{secret}' /etc/kamailio /etc/default/kamailio || true"
    ).stdout
    assert found.split() == ["/etc/kamailio/pgpass"]
    mode = installed_site.ssh(name, "stat -c '%a %U' /etc/kamailio/pgpass /etc/pgbouncer/userlist.txt").stdout
    assert mode.split("\n")[:2] == ["600 kamailio", "600 postgres"]
    # The pooler that carries the TLS to PostgreSQL listens on loopback only.
    pooler = installed_site.ssh(name, "ss -Hlntp | grep '\"pgbouncer\"' | awk '{print $4}'").stdout.split()
    assert pooler == ["127.0.0.1:15432"]


def test_tls_listener_presents_the_site_certificate(installed_site: InstalledSite) -> None:
    _, addr = proxy(installed_site)
    ctx = ssl.create_default_context(cafile=str(installed_site.site / "pki" / "ca.crt"))
    with (
        socket.create_connection((addr, settings(installed_site).sip.tls_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=addr) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_secure_websocket_accepts_a_sip_upgrade(installed_site: InstalledSite) -> None:
    _, addr = proxy(installed_site)
    port = settings(installed_site).sip.wss_port
    ctx = ssl.create_default_context(cafile=str(installed_site.site / "pki" / "ca.crt"))
    request = (
        f"GET / HTTP/1.1\r\nHost: {addr}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: sip\r\nOrigin: https://agent.example\r\n\r\n"
    )
    with (
        socket.create_connection((addr, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=addr) as tls,
    ):
        tls.sendall(request.encode())
        head = tls.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 101"), head
    assert "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455's accept value for this key


def metric(text: str, name: str) -> float | None:
    """Value of an unlabelled sample (xhttp_prom lines: NAME VALUE TIMESTAMP)."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == name:
            return float(fields[1])
    return None


def scrape(s: InstalledSite) -> str:
    _, addr = proxy(s)
    with urllib.request.urlopen(f"http://{addr}:{settings(s).sip.metrics_port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


def test_metrics_endpoint_serves_kamailio_metrics(installed_site: InstalledSite) -> None:
    before = scrape(installed_site)
    assert (metric(before, "kamailio_core_rcv_requests") or 0) > 0
    # The routing's own counter moves with what it does.
    domain = settings(installed_site).sip.domain
    with client(installed_site) as c:
        resp = c.invite(f"sip:{'8' * 9}@{domain}", domain=domain)
    assert resp is not None and resp.status == 404
    after = scrape(installed_site)
    assert (metric(after, "kamailio_unknown_number") or 0) >= (
        metric(before, "kamailio_unknown_number") or 0
    ) + 1
    _, addr = proxy(installed_site)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://{addr}:{settings(installed_site).sip.metrics_port}/other", timeout=5)
    assert err.value.code == 404


def test_zz_flood_from_one_source_is_blocked(installed_site: InstalledSite) -> None:
    """Bounded: 4 x flood_limit OPTIONS in about a second, then the ban is lifted again."""
    s = settings(installed_site)
    _, addr = proxy(installed_site)
    uri = f"sip:{addr}:{s.sip.udp_port}"
    with client(installed_site) as c:
        assert (r := c.options(uri)) is not None and r.status == 200
        for i in range(4 * s.sip.flood_limit):
            msg, _ = c.build(
                "OPTIONS",
                uri,
                from_uri=f"sip:flood@{s.sip.domain}",
                to_uri=uri,
                call_id=f"flood-{i}-{time.monotonic_ns()}",
                cseq=1,
            )
            c.send_raw(msg)
            time.sleep(0.005)
        time.sleep(0.5)
        while c.receive(timeout=0.2) is not None:  # drain the replies sent before the ban
            pass
        try:
            assert c.options(uri) is None, "a flooding source must get no answer"
            banned = kamcmd(installed_site, "htable.get", "ipban", c.local_ip)
            assert "1" in banned
            assert (metric(scrape(installed_site), "kamailio_flood_blocked") or 0) >= 1
        finally:
            kamcmd(installed_site, "htable.delete", "ipban", c.local_ip)
        # pike forgets the source a few seconds after the flood stops.
        deadline = time.monotonic() + 20
        answered = None
        while time.monotonic() < deadline:
            kamcmd(installed_site, "htable.delete", "ipban", c.local_ip)
            answered = c.options(uri)
            if answered is not None:
                break
            time.sleep(2)
        assert answered is not None and answered.status == 200
