"""The core roles (common, pki, postgresql, rtpengine, monitoring) on the installed lab, checked from
outside as an operator or an attacker on the network would: units, sockets, Prometheus' own view of
its targets, PostgreSQL's refusal of weak connections, rtpengine's control port filter, idempotence.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.parse
import urllib.request
from typing import Any

import psycopg
import pytest

from aicc.installer.inventory import load_inventory
from aicc.installer.settings import SiteSettings
from aicc.installer.site import Site
from aicc.installer.sizing import COMMON_SERVICES, SERVICES, common_listeners, listeners
from tests.integration.site_fixture import InstalledSite

pytestmark = pytest.mark.lab

MY_GROUPS = ("db", "media", "monitoring", "sip_proxy")
# Sockets of these roles bound to loopback only (not reachable from other hosts), per group.
LOOPBACK_OK = {"db": {("tcp", 5432)}, "media": {("tcp", 2224)}}
# Processes these roles run; other roles' loopback-only helpers are theirs to check.
MY_PROCESSES = {
    "postgres",
    "prometheus-post",
    "rtpengine",
    "prometheus",
    "prometheus-aler",
    "prometheus-node",
}


def groups_of(site: InstalledSite) -> dict[str, list[str]]:
    inv = load_inventory(site.inventory)
    return {name: host.groups for name, host in inv.hosts.items()}


def test_services_active_and_enabled(installed_site: InstalledSite) -> None:
    problems = []
    for host, groups in groups_of(installed_site).items():
        units = [u for u, _ in COMMON_SERVICES] + [
            u for g in groups if g in MY_GROUPS for u, _ in SERVICES.get(g, [])
        ]
        if "db" in groups:
            units.append("postgresql")  # Debian's umbrella unit starts the cluster at boot
        res = installed_site.ssh(
            host,
            # A unit that does not exist prints nothing: report it as "missing".
            " ; ".join(
                f"a=$(systemctl is-active {u} 2>/dev/null); e=$(systemctl is-enabled {u} 2>/dev/null); "
                f'echo {u} "${{a:-missing}}" "${{e:-missing}}"'
                for u in units
            ),
        )
        for line in res.stdout.splitlines():
            unit, active, enabled = line.split()[:3]
            if (active, enabled) != ("active", "enabled"):
                problems.append(f"{host}: {unit} is {active}/{enabled}")
        # chrony is enabled everywhere; a container without CAP_SYS_TIME skips it by its unit condition.
        chrony = installed_site.ssh(host, "systemctl is-enabled chrony").stdout.strip()
        if chrony != "enabled":
            problems.append(f"{host}: chrony is {chrony}")
    assert not problems, problems


def sockets(site: InstalledSite, host: str) -> set[tuple[str, str, int, str]]:
    """(proto, address, port, process) of every listening socket on the host."""
    res = site.ssh(host, "ss -H -lntup")
    assert res.returncode == 0, res.stderr
    found = set()
    for line in res.stdout.splitlines():
        fields = line.split()
        proto, local = fields[0], fields[4]
        address, port = local.rsplit(":", 1)
        proc = re.search(r'users:\(\("([^"]+)"', line)
        found.add((proto, address.strip("[]").split("%")[0], int(port), proc.group(1) if proc else "?"))
    return found


def test_listening_where_expected_and_nowhere_else(installed_site: InstalledSite) -> None:
    settings = Site(installed_site.site).settings()
    problems = []
    for host, groups in groups_of(installed_site).items():
        address = installed_site.hosts[host]
        expected = {(lst.proto, address, lst.port, lst.process) for lst in common_listeners(settings)}
        allowed = set(expected)
        for group in groups:
            mine = listeners(group, settings)
            wanted = {(lst.proto, address, lst.port, lst.process) for lst in mine}
            allowed |= wanted
            if group in MY_GROUPS:
                # An optional one (Grafana, only with its .deb in the bundle) may listen, need not.
                expected |= {(lst.proto, address, lst.port, lst.process) for lst in mine if not lst.optional}
        actual = sockets(installed_site, host)
        for sock in expected - actual:
            problems.append(f"{host}: nothing listens on {sock}")
        loopback_ok = set().union(*(LOOPBACK_OK.get(g, set()) for g in groups))
        # Media ports of calls in progress (or held for delete_delay after them) are expected.
        media_ranges = [(proc_, lo, hi) for g, proc_, lo, hi in media_port_ranges(settings) if g in groups]
        for proto, addr, port, proc in actual:
            if (proto, addr, port, proc) in allowed:
                continue
            if (
                proto == "udp"
                and addr == address
                and any(proc == p and lo <= port <= hi for p, lo, hi in media_ranges)
            ):
                continue
            if port == 22 and proc == "sshd":
                continue
            if addr in ("127.0.0.1", "::1") and ((proto, port) in loopback_ok or proc not in MY_PROCESSES):
                continue
            problems.append(f"{host}: unexpected listener {proto} {addr}:{port} ({proc})")
    assert not problems, problems


def media_port_ranges(settings: SiteSettings) -> list[tuple[str, str, int, int]]:
    """(group, process, first, last) of the UDP ranges RTP uses."""
    return [
        ("media", "rtpengine", settings.media.port_min, settings.media.port_max),
        ("voicebot", "python", settings.voicebot.rtp_port_min, settings.voicebot.rtp_port_max),
    ]


def prometheus_targets(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/targets?state=active", timeout=10) as resp:
        doc = json.load(resp)
    assert doc["status"] == "success"
    targets: list[dict[str, Any]] = doc["data"]["activeTargets"]
    return targets


def test_prometheus_reports_every_target_up(installed_site: InstalledSite) -> None:
    settings = Site(installed_site.site).settings()
    mon = installed_site.address_of("monitoring")
    url = f"http://{mon}:{settings.monitoring.prometheus_port}"
    groups = groups_of(installed_site)
    expected = {("node", h) for h in groups}
    for job, group in (
        ("postgres", "db"),
        ("kamailio", "sip_proxy"),
        ("rtpengine", "media"),
        ("prometheus", "monitoring"),
        ("alertmanager", "monitoring"),
        ("aicc_voicebot", "voicebot"),
        ("aicc_api", "app"),
        ("aicc_acd", "app"),
        ("aicc_llm", "llm"),
    ):
        expected |= {(job, h) for h, g in groups.items() if group in g}
    # Right after an install some targets have not been scraped yet: wait for two intervals at most.
    deadline = time.monotonic() + 2 * settings.monitoring.scrape_interval_s + 15
    while True:
        targets = prometheus_targets(url)
        state = {(t["labels"]["job"], t["labels"]["host"]): (t["health"], t["lastError"]) for t in targets}
        down = {k: v for k, v in state.items() if v[0] != "up"}
        if (set(state) >= expected and not down) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert expected <= set(state), f"targets missing from Prometheus: {sorted(expected - set(state))}"
    assert not down, f"targets not up: {down}"


def db_params(site: InstalledSite) -> dict[str, Any]:
    settings = Site(site.site).settings()
    return {
        "host": site.address_of("db"),
        "port": settings.database.port,
        "dbname": settings.database.name,
        "connect_timeout": 10,
    }


def test_postgresql_refuses_plain_tcp_from_other_hosts(installed_site: InstalledSite) -> None:
    secrets = Site(installed_site.site).secrets()
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(
            **db_params(installed_site),
            user="aicc_reporting",
            password=secrets["postgresql_reporting_password"],
            sslmode="disable",
        )


def test_postgresql_refuses_missing_or_wrong_password(installed_site: InstalledSite) -> None:
    params = db_params(installed_site)
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(**params, user="aicc_reporting", sslmode="require")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**params, user="aicc_reporting", password="not-the-password", sslmode="require")


def test_postgresql_refuses_logins_not_meant_for_the_installer_host(installed_site: InstalledSite) -> None:
    secrets = Site(installed_site.site).secrets()
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(
            **db_params(installed_site),
            user="aicc_app",
            password=secrets["postgresql_app_password"],
            sslmode="require",
        )


def test_postgresql_accepts_the_right_password_over_verified_tls(installed_site: InstalledSite) -> None:
    secrets = Site(installed_site.site).secrets()
    with psycopg.connect(
        **db_params(installed_site),
        user="aicc_reporting",
        password=secrets["postgresql_reporting_password"],
        sslmode="verify-full",
        sslrootcert=str(installed_site.site / "pki" / "ca.crt"),
    ) as conn:
        (ssl,) = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() or (
            None,
        )
        (archive_mode,) = conn.execute("SHOW archive_mode").fetchone() or (None,)
        (encryption,) = conn.execute("SHOW password_encryption").fetchone() or (None,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE aicc.should_fail (id int)")
    assert ssl is True
    assert archive_mode == "on"
    assert encryption == "scram-sha-256"


def test_kamailio_login_may_create_its_schema(installed_site: InstalledSite) -> None:
    """What the kamailio role relies on: CONNECT and CREATE on the appliance database."""
    db = installed_site.hosts_in("db")[0]
    res = installed_site.ssh(
        db,
        "su postgres -c \"psql -d aicc -Atc \\\"SELECT has_database_privilege('kamailio', "
        "'aicc', 'CONNECT'), has_database_privilege('kamailio', 'aicc', 'CREATE')\\\"\"",
    )
    assert res.stdout.strip() == "t|t", res.stdout + res.stderr


def test_wal_segments_are_archived(installed_site: InstalledSite) -> None:
    db = installed_site.hosts_in("db")[0]
    switch = installed_site.ssh(
        db, "cd / && su postgres -c \"psql -Atc 'SELECT pg_walfile_name(pg_switch_wal())'\""
    )
    segment = switch.stdout.strip()
    assert re.fullmatch(r"[0-9A-F]{24}", segment), switch.stdout + switch.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if installed_site.ssh(db, f"test -f /var/backups/aicc/wal/{segment}").returncode == 0:
            return
        time.sleep(1)
    pytest.fail(f"WAL segment {segment} did not reach /var/backups/aicc/wal")


def ng_ping(address: str, port: int, timeout: float = 2.0) -> bytes | None:
    """One rtpengine ng 'ping' over UDP; the answer, or None when nothing came back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(b"aicc1 d7:command4:pinge", (address, port))
        try:
            return sock.recv(1000)
        except TimeoutError:
            return None


def test_rtpengine_ng_answers_sip_proxies_only(installed_site: InstalledSite) -> None:
    settings = Site(installed_site.site).settings()
    media = installed_site.hosts_in("media")[0]
    address, port = installed_site.hosts[media], settings.media.control_port
    sip = installed_site.hosts_in("sip_proxy")[0]
    probe = (
        'python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); '
        f"s.sendto(b'aicc1 d7:command4:pinge', ('{address}', {port})); print(s.recv(1000).decode())\""
    )
    from_sip = installed_site.ssh(sip, probe)
    assert "pong" in from_sip.stdout, from_sip.stdout + from_sip.stderr
    # This machine (the installer host) is no SIP proxy: rtpengine must not hear it.
    caps = installed_site.ssh(media, "grep CapEff /proc/self/status").stdout.split()[-1]
    assert int(caps, 16) & (1 << 12), (
        f"{media} lacks CAP_NET_ADMIN, so the rtpengine role cannot filter the ng port there (the lab's "
        "systemd-nspawn needs --capability=CAP_NET_ADMIN; real hosts have it)"
    )
    assert ng_ping(address, port) is None, "rtpengine answered an ng ping from a host that is not a SIP proxy"


def test_second_install_changes_nothing_on_any_host(installed_site: InstalledSite) -> None:
    report = installed_site.second_install()
    assert report.get("ok"), report.get("failures") or report.get("error")
    changed = {host: stats.get("changed") for host, stats in report["hosts"].items() if stats.get("changed")}
    assert not changed, f"a second install changed something: {changed} (log: {report.get('log')})"


def prometheus_query(url: str, query: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}", timeout=10
    ) as r:
        doc = json.load(r)
    assert doc["status"] == "success", doc
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def test_postgres_exporter_reaches_the_database(installed_site: InstalledSite) -> None:
    """An exporter target can be up while its database login fails: pg_up says whether it got in."""
    settings = Site(installed_site.site).settings()
    url = f"http://{installed_site.address_of('monitoring')}:{settings.monitoring.prometheus_port}"
    deadline = time.monotonic() + 2 * settings.monitoring.scrape_interval_s + 15
    while True:
        series = prometheus_query(url, "pg_up")
        if series or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert {s["metric"]["host"]: s["value"][1] for s in series} == dict.fromkeys(
        installed_site.hosts_in("db"), "1"
    )


def test_common_base_settings_on_every_host(installed_site: InstalledSite) -> None:
    settings = Site(installed_site.site).settings()
    problems = []
    for host in installed_site.hosts:
        res = installed_site.ssh(
            host,
            "readlink -f /etc/localtime; grep ^LANG= /etc/default/locale; "
            "sed -n '/BEGIN aicc inventory hosts/,/END aicc/p' /etc/hosts; "
            "openssl verify /etc/aicc/tls/host.crt; stat -c '%a %U %G' /etc/aicc/tls/host.key",
        )
        out = res.stdout
        if not out.startswith(f"/usr/share/zoneinfo/{settings.timezone}\n"):
            problems.append(f"{host}: time zone {out.splitlines()[:1]}")
        if f"LANG={settings.locale}" not in out:
            problems.append(f"{host}: locale not {settings.locale}")
        for name, address in installed_site.hosts.items():
            if f"{address} {name}" not in out:
                problems.append(f"{host}: /etc/hosts lacks {name}")
        # The host certificate verifies against the system store: the site CA is trusted there.
        if "/etc/aicc/tls/host.crt: OK" not in out:
            problems.append(f"{host}: host certificate not trusted: {res.stdout} {res.stderr}")
        if "640 root ssl-cert" not in out:
            problems.append(f"{host}: host key permissions wrong")
    assert not problems, problems
