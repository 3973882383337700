"""The ACD service against a real PostgreSQL: commands through the work queue and their results, offers
to the gateway holding the contact, events in the log in the same transaction as the state, one
active ACD of two (the other takes over), nothing lost across kill -9 of the process, contacts of a
silent gateway abandoned, agents whose phone unregisters logged out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.acd import commands as cmds
from aicc.appliance.acd.client import AcdClient, AcdRejected, GatewayMessage
from aicc.appliance.acd.metrics import AcdMetrics
from aicc.appliance.acd.policy import AgentProfile, QueueConfig
from aicc.appliance.acd.service import AcdService
from aicc.appliance.api.config import AcdSettings
from aicc.appliance.db.migrate import all_migrations, apply
from aicc.appliance.db.scratch import scratch_cluster

pytestmark = pytest.mark.anyio

SETTINGS = AcdSettings(
    registrations_poll_s=0.3, phone_grace_s=1.0, tick_s=0.1, gateway_timeout_s=5.0, result_timeout_s=5.0
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with scratch_cluster("aicc-acd-", "-c fsync=off -c full_page_writes=off") as dsn:
        yield dsn


_databases = iter(range(1000))


@pytest.fixture
def dsn(cluster: str) -> str:
    """A fresh migrated database per test, with two queues, two agents and Kamailio's location table."""
    name = f"acd{next(_databases)}"
    with psycopg.connect(cluster, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    d = cluster.replace("dbname=aicc", f"dbname={name}")
    apply(d, all_migrations())
    queue = QueueConfig(name="support-en", language="en", skills={"orders": 1}, wrap_up_s=1, ring_timeout_s=5)
    with psycopg.connect(d, autocommit=True) as conn:
        conn.execute("INSERT INTO aicc.skills (name) VALUES ('orders')")
        conn.execute(
            "INSERT INTO aicc.queues (name, config) VALUES (%s, %s)", (queue.name, queue.model_dump_json())
        )
        for i, ext in ((1, "1001"), (2, "1002")):
            conn.execute(
                "INSERT INTO aicc.users (id, username, role) OVERRIDING SYSTEM VALUE "
                "VALUES (%s, %s, 'agent')",
                (i, f"agent{i}"),
            )
            profile = AgentProfile(extension=ext, skills={"orders": 3}, languages=["en"])
            conn.execute(
                "INSERT INTO aicc.agents (user_id, extension, profile) VALUES (%s, %s, %s)",
                (i, ext, profile.model_dump_json(exclude={"extension"})),
            )
        conn.execute("CREATE SCHEMA kamailio")
        conn.execute("CREATE TABLE kamailio.location (username text, expires timestamp without time zone)")
    return d


def register(dsn: str, *extensions: str, expires_in_s: float = 3600) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for ext in extensions:
            conn.execute(
                "INSERT INTO kamailio.location VALUES (%s, localtimestamp + make_interval(secs => %s))",
                (ext, expires_in_s),
            )


def unregister(dsn: str, extension: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM kamailio.location WHERE username = %s", (extension,))


def heartbeat(dsn: str, gateway: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO aicc.gateway_heartbeats VALUES (%s, now()) "
            "ON CONFLICT (gateway) DO UPDATE SET seen_at = now()",
            (gateway,),
        )


def events(dsn: str) -> list[tuple[str, Any]]:
    with psycopg.connect(dsn) as conn:
        return [
            (k, d) for k, d in conn.execute("SELECT kind, data FROM aicc.cc_events ORDER BY id").fetchall()
        ]


class Harness:
    """An ACD service in this process and a client standing in for a gateway named gw1."""

    def __init__(self, dsn: str, pool: AsyncConnectionPool[Any]) -> None:
        self.dsn = dsn
        self.offers: asyncio.Queue[GatewayMessage] = asyncio.Queue()
        # As the gateway does it: the handler is set after the client exists (Gateway(acd=...)).
        self.client = AcdClient(pool, dsn, source="test", gateway="gw1")
        self.services: list[tuple[AcdService, asyncio.Event, asyncio.Task[None]]] = []

    def start_service(self) -> AcdService:
        service = AcdService(self.dsn, SETTINGS, AcdMetrics())
        stop = asyncio.Event()
        self.services.append((service, stop, asyncio.create_task(service.run(stop))))
        return service

    async def stop_all(self) -> None:
        for _, stop, task in self.services:
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def enqueue(self, priority: int = 0, tier: str | None = None) -> cmds.Enqueue:
        return cmds.Enqueue(
            contact_id=str(uuid.uuid4()),
            queue="support-en",
            language="en",
            priority=priority,
            tier=tier,
            gateway="gw1",
            call_id=f"call-{uuid.uuid4().hex[:8]}",
            caller="13800138000",
        )


@pytest.fixture
async def harness(dsn: str) -> AsyncIterator[Harness]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
    await pool.open(wait=True)
    h = Harness(dsn, pool)
    await h.client.start()
    h.client.on_gateway = h.offers.put_nowait
    heartbeat(dsn, "gw1")
    try:
        yield h
    finally:
        await h.stop_all()
        await h.client.close()
        await pool.close()


async def until(predicate: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


async def test_a_contact_is_offered_answered_ended_and_every_step_is_in_the_event_log(
    harness: Harness,
) -> None:
    harness.start_service()
    register(harness.dsn, "1001")
    await asyncio.sleep(0.5)  # the first registrations poll
    state = await harness.client.submit(cmds.AgentStatus(agent_id=1, status="ready", by="agent1"))
    assert state == {"status": "ready", "state": "idle", "reason": ""}
    contact = harness.enqueue()
    placed = await harness.client.submit(contact)
    assert placed is not None and placed["position"] == 1 and placed["staffed"] == 1
    offer = await asyncio.wait_for(harness.offers.get(), 5)
    assert (offer.type, offer.contact_id, offer.extension, offer.ring_timeout_s) == (
        "offer",
        contact.contact_id,
        "1001",
        5,
    )
    await harness.client.submit(
        cmds.OfferResult(
            reservation_id=offer.reservation_id, contact_id=contact.contact_id, outcome="answered"
        )
    )
    await harness.client.submit(cmds.ContactEnd(contact_id=contact.contact_id, talk_s=42.0, hold_s=3.0))
    await asyncio.sleep(1.5)  # the queue's 1 s wrap-up, then idle
    kinds = [k for k, _ in events(harness.dsn)]
    assert [k for k in kinds if k.startswith("contact.")] == [
        "contact.queued",
        "contact.offered",
        "contact.answered",
        "contact.ended",
        "contact.wrapup_done",  # closed by the queue's wrap-up timer
    ]
    states = [d["state"] for k, d in events(harness.dsn) if k == "agent.state"]
    assert states[-4:] == ["reserved", "busy", "wrap_up", "idle"], states


async def test_an_agent_without_a_registered_phone_cannot_go_ready_and_one_whose_phone_leaves_is_logged_out(
    harness: Harness,
) -> None:
    harness.start_service()
    await asyncio.sleep(0.5)
    with pytest.raises(AcdRejected) as refused:
        await harness.client.submit(cmds.AgentStatus(agent_id=2, status="ready", by="agent2"))
    assert refused.value.code == "not_registered"
    register(harness.dsn, "1002")
    await asyncio.sleep(0.5)
    await harness.client.submit(cmds.AgentStatus(agent_id=2, status="ready", by="agent2"))
    unregister(harness.dsn, "1002")

    def logged_out() -> bool:
        with psycopg.connect(harness.dsn) as conn:
            row = conn.execute(
                "SELECT state->>'status' FROM aicc.acd_agent_state WHERE user_id = 2"
            ).fetchone()
        return row is not None and row[0] == "logged_out"

    assert await until(logged_out, 5)


async def test_one_acd_is_active_and_the_standby_takes_over_with_the_queue_intact(harness: Harness) -> None:
    first = harness.start_service()
    await until(lambda: first.engine is not None, 5)
    second = harness.start_service()
    contacts = [harness.enqueue(), harness.enqueue(priority=5), harness.enqueue()]
    for c in contacts:
        await harness.client.submit(c)
    await asyncio.sleep(0.5)
    assert first.engine is not None and second.engine is None, "two active ACDs"
    positions = {
        c.contact_id: (await harness.client.submit(cmds.Status(contact_id=c.contact_id)))["position"]
        for c in contacts
    }  # type: ignore[index]
    # The active one goes away (its connections close): the standby holds the lock within seconds.
    _, stop, task = harness.services[0]
    stop.set()
    task.cancel()
    started = time.monotonic()
    assert await until(lambda: second.engine is not None, 10), "the standby did not take over"
    took = time.monotonic() - started
    after = {
        c.contact_id: (await harness.client.submit(cmds.Status(contact_id=c.contact_id)))["position"]
        for c in contacts
    }  # type: ignore[index]
    assert after == positions and positions[contacts[1].contact_id] == 1
    assert took < 5


def write_config(tmp: Path, dsn: str) -> tuple[Path, int]:
    (tmp / "db.conninfo").write_text(dsn)
    (tmp / "secret.key").write_text("k" * 48)
    port = _free_port()
    (tmp / "app.yml").write_text(
        f"database_dsn_file: {tmp / 'db.conninfo'}\nsecret_key_file: {tmp / 'secret.key'}\n"
        "public_url: https://aicc.test\n"
        f"acd_metrics_port: {port}\nacd: {{tick_s: 0.1, registrations_poll_s: 0.3}}\n"
    )
    return tmp / "app.yml", port


async def active(metrics_port: int, seconds: float = 20) -> bool:
    """The ACD process answers on its metrics port and says it is the active one."""
    import httpx

    async def leader() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1)
            return "aicc_acd_leader 1.0" in r.text
        except httpx.HTTPError:
            return False

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await leader():
            return True
        await asyncio.sleep(0.2)
    return False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "aicc.appliance.acd", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_kill_9_loses_no_waiting_contact_no_agent_state_and_keeps_the_order(
    harness: Harness, tmp_path: Path
) -> None:
    config, port = write_config(tmp_path, harness.dsn)
    register(harness.dsn, "1001")
    proc = spawn(config)
    try:
        assert await active(port), "the ACD process did not become active"
        await harness.client.submit(cmds.AgentStatus(agent_id=1, status="away", reason="break", by="agent1"))
        contacts = [
            harness.enqueue(),
            harness.enqueue(tier="vip"),
            harness.enqueue(priority=2),
            harness.enqueue(),
        ]
        for c in contacts:
            await harness.client.submit(c)
        order = [
            (await harness.client.submit(cmds.Status(contact_id=c.contact_id)))["position"] for c in contacts
        ]  # type: ignore[index]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # Commands sent while no ACD runs wait in the work queue.
        late = harness.enqueue()
        await harness.client.submit(late, wait=False)
        proc = spawn(config)
        assert await active(port), "the restarted ACD did not become active"
        again = [
            (await harness.client.submit(cmds.Status(contact_id=c.contact_id)))["position"] for c in contacts
        ]  # type: ignore[index]
        assert again == order
        late_position = (await harness.client.submit(cmds.Status(contact_id=late.contact_id)))["position"]  # type: ignore[index]
        assert late_position == len(contacts) + 1
        with psycopg.connect(harness.dsn) as conn:
            status = conn.execute(
                "SELECT state->>'status', state->>'reason' FROM aicc.acd_agent_state WHERE user_id = 1"
            ).fetchone()
        assert status == ("away", "break")
        # Served in the same order as before the kill.
        await harness.client.submit(cmds.AgentStatus(agent_id=1, status="ready", by="agent1"))
        offered = []
        for _ in contacts:
            offer = await asyncio.wait_for(harness.offers.get(), 5)
            offered.append(offer.contact_id)
            await harness.client.submit(
                cmds.OfferResult(
                    reservation_id=offer.reservation_id, contact_id=offer.contact_id, outcome="answered"
                )
            )
            await harness.client.submit(cmds.ContactEnd(contact_id=offer.contact_id, talk_s=1.0))
        by_position = [c.contact_id for _, c in sorted(zip(order, contacts, strict=True))]
        assert offered == by_position
        queued = [k for k, _ in events(harness.dsn) if k == "contact.queued"]
        assert len(queued) == len(contacts) + 1  # nothing duplicated by the replay
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


async def test_the_contacts_of_a_silent_gateway_are_abandoned(harness: Harness) -> None:
    harness.start_service()
    contact = harness.enqueue()
    await harness.client.submit(contact)
    with psycopg.connect(harness.dsn, autocommit=True) as conn:
        conn.execute("UPDATE aicc.gateway_heartbeats SET seen_at = now() - interval '1 hour'")

    def abandoned() -> bool:
        return any(
            k == "contact.abandoned" and d.get("reason") == "gateway_lost" for k, d in events(harness.dsn)
        )

    assert await until(abandoned, 10)


async def test_a_bad_command_gets_a_clear_error_and_changes_nothing(harness: Harness) -> None:
    harness.start_service()
    with pytest.raises(AcdRejected) as unknown:
        await harness.client.submit(cmds.Status(contact_id=str(uuid.uuid4())))
    assert unknown.value.code == "unknown_contact"
    bad = harness.enqueue().model_copy(update={"queue": "no-such-queue"})
    with pytest.raises(AcdRejected) as no_queue:
        await harness.client.submit(bad)
    assert no_queue.value.code == "unknown_queue"
    assert [k for k, _ in events(harness.dsn) if k.startswith("contact.")] == []
