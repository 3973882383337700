"""Text conversations routed by the ACD (api/chat_routing.py) against a real PostgreSQL, a real ACD
(AcdService) in this process and the API with its chat routing running: a chat handed over joins the
chat queue, is offered to a ready agent within their chat capacity and accepted; one that rings out or
is declined goes to the next agent; taking or assigning by hand connects it (answered); resolving frees
the capacity; a chat not replied to in time goes back to the queue with its wait; two API processes
accepting one offer: one wins; a chat for a voice queue is not routed and says why."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import pytest
from psycopg.rows import dict_row

from aicc.appliance.acd import commands as cmds
from aicc.appliance.acd.client import AcdClient, GatewayMessage
from aicc.appliance.acd.metrics import AcdMetrics
from aicc.appliance.acd.service import AcdService
from aicc.appliance.api.chat_routing import GATEWAY, ChatRouting
from aicc.appliance.api.config import AcdSettings
from aicc.appliance.api.deps import Principal
from aicc.appliance.api.live import LiveHub
from aicc.appliance.api.routes.live import snapshot
from aicc.appliance.conversations import store
from tests.unit.api_support import (
    Api,
    ApiDatabase,
    ApiUser,
    api_db_fixture,  # noqa: F401
    audit_since,
    fresh_database,
    last_audit_id,
    make_user,
    open_api,
)

T = TypeVar("T")
RING_S = 5  # the least ring timeout a queue may have
CHAT = {"name": "chat", "channel": "chat", "language": "zh", "ring_timeout_s": RING_S, "wrap_up_s": 0}
VOICE = {"name": "support", "language": "zh", "wrap_up_s": 0}
_extensions = iter(range(3000, 4000))


@pytest.fixture(scope="module")
def db(api_db: ApiDatabase) -> Iterator[ApiDatabase]:
    """This module's own database: a chat queue, a voice queue, and Kamailio's registrations."""
    fresh = fresh_database(api_db, "aicc_chat_routing")
    with psycopg.connect(fresh.dsn, autocommit=True) as conn:
        for config in (CHAT, VOICE):
            conn.execute(
                "INSERT INTO aicc.queues (name, config) VALUES (%s, %s)",
                (config["name"], psycopg.types.json.Jsonb(config)),
            )
        conn.execute("CREATE SCHEMA kamailio")
        conn.execute("CREATE TABLE kamailio.location (username text, expires timestamp)")
    yield fresh


@pytest.fixture(scope="module")
def staff(db: ApiDatabase) -> dict[str, ApiUser]:
    return {role: make_user(db, role, username=f"cr-{role}") for role in ("agent", "supervisor", "admin")}


def make_agent(db: ApiDatabase, chat: int = 2, voice: int = 1) -> ApiUser:
    """An agent with a registered phone and a profile: chat capacity `chat`, voice `voice`."""
    user = make_user(db, "agent")
    extension = str(next(_extensions))
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO aicc.agents (user_id, extension, profile) VALUES (%s, %s, %s)",
            (user.id, extension, psycopg.types.json.Jsonb({"capacity": {"voice": voice, "chat": chat}})),
        )
        conn.execute(
            "INSERT INTO kamailio.location VALUES (%s, localtimestamp + interval '1 day')", (extension,)
        )
    return user


def _wipe(db: ApiDatabase) -> None:
    """What one test leaves in the ACD and the queue, gone: the next one starts from nothing."""
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM aicc.acd_commands")
        conn.execute("DELETE FROM aicc.acd_contacts")
        conn.execute("DELETE FROM aicc.acd_agent_state")
        conn.execute("DELETE FROM aicc.gateway_heartbeats")
        conn.execute(
            "UPDATE aicc.conversations SET status = 'resolved', acd_contact = NULL, "
            "offer_reservation = NULL, offer_agent = NULL, offer_expires_at = NULL, reply_due_at = NULL "
            "WHERE status <> 'resolved'"
        )


@dataclass
class Side:
    """One API process: the app, its ACD client (gateway "api") and its chat routing."""

    api: Api
    acd: AcdClient
    routing: ChatRouting


@dataclass
class Site:
    db: ApiDatabase
    staff: dict[str, ApiUser]
    sides: list[Side]
    service: AcdService

    @property
    def api(self) -> Api:
        return self.sides[0].api

    def auth(self, user: ApiUser | str) -> dict[str, str]:
        return self.api.auth(user if isinstance(user, ApiUser) else self.staff[user])

    async def post(self, path: str, who: ApiUser | str, side: int = 0, **kw: Any) -> Any:
        return await self.sides[side].api.client.post(path, headers=self.auth(who), **kw)

    async def status(self, agent: ApiUser, status: str) -> None:
        r = await self.post("/api/agents/me/status", agent, json={"status": status})
        assert r.status_code == 200, r.text

    async def handed_over(self, summary: str = "订单100234要改地址", name: str = "王芳") -> UUID:
        """A web chat the bot hands over, as webchat.py does: handler queue with the bot's summary."""
        async with self.api.pool.connection() as conn:
            customer = await store.create_customer(conn, name=name, language="zh")
            c = await store.create_conversation(conn, customer, "webchat", language="zh", bot="retail")
            await store.add_message(conn, c["id"], direction="in", author="customer", body="转人工")
            await store.update_conversation(conn, c["id"], handler="queue", summary=summary)
        self.sides[0].routing.poke()
        return UUID(str(c["id"]))

    async def conversation(self, cid: UUID) -> dict[str, Any]:
        async with self.api.pool.connection() as conn:
            row = await store.get_conversation(conn, cid)
        assert row is not None
        return row

    def contact(self, contact_id: object) -> dict[str, Any] | None:
        with psycopg.connect(self.db.dsn, row_factory=dict_row) as conn:
            row = conn.execute(
                "SELECT contact FROM aicc.acd_contacts WHERE id = %s", (contact_id,)
            ).fetchone()
        return None if row is None else dict(row["contact"])

    def agent_state(self, agent: ApiUser) -> dict[str, Any]:
        with psycopg.connect(self.db.dsn, row_factory=dict_row) as conn:
            row = conn.execute(
                "SELECT state FROM aicc.acd_agent_state WHERE user_id = %s", (agent.id,)
            ).fetchone()
        return {} if row is None else dict(row["state"])

    def events(self, contact_id: object) -> list[dict[str, Any]]:
        with psycopg.connect(self.db.dsn, row_factory=dict_row) as conn:
            return conn.execute(
                "SELECT kind, agent_id, data FROM aicc.cc_events WHERE contact_id = %s ORDER BY id",
                (str(contact_id),),
            ).fetchall()

    async def offered(self, cid: UUID, to: ApiUser, timeout: float = 8.0) -> dict[str, Any]:
        """The conversation once the ACD offers it to `to` (the offer recorded by an API process)."""
        return await until(
            lambda: self.conversation(cid), lambda c: c["offer_agent"] == to.id, timeout, f"offer to {to.id}"
        )


async def until(
    read: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float = 8.0, what: str = ""
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not reached within {timeout} s: {value}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def side(db: ApiDatabase, staff: dict[str, ApiUser], **settings: Any) -> AsyncIterator[Side]:
    """An API process as its lifespan makes it: its ACD client listens as gateway "api" for offers."""
    async with open_api(db, staff, **settings) as api:
        routing = api.state.chat_routing
        assert routing is not None
        acd = AcdClient(
            api.pool,  # type: ignore[arg-type]
            db.dsn,
            source="test-api",
            gateway=GATEWAY,
            on_gateway=routing.on_gateway,
        )
        await acd.start()
        api.state.acd = acd
        await routing.start()
        try:
            yield Side(api, acd, routing)
        finally:
            await routing.close()
            await acd.close()


@contextlib.asynccontextmanager
async def running(
    db: ApiDatabase, staff: dict[str, ApiUser], processes: int = 1, **settings: Any
) -> AsyncIterator[Site]:
    """The ACD and `processes` API processes, over what was set up before (agents, queues)."""
    _wipe(db)
    service = AcdService(db.dsn, AcdSettings(registrations_poll_s=0.2, tick_s=0.1), AcdMetrics())
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        async with contextlib.AsyncExitStack() as stack:
            sides = [await stack.enter_async_context(side(db, staff, **settings)) for _ in range(processes)]
            for _ in range(100):
                if service.engine is not None:
                    break
                await asyncio.sleep(0.05)
            yield Site(db, staff, sides, service)
    finally:
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        _wipe(db)


# --- a chat's way through the ACD -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_chat_handed_over_is_queued_offered_to_a_ready_agent_and_accepted(
    db: ApiDatabase, staff: dict[str, ApiUser]
) -> None:
    agent = make_agent(db)
    async with running(db, staff, chat_first_reply_s=120) as site:
        await site.status(agent, "ready")
        cid = await site.handed_over()
        c = await site.offered(cid, agent)
        assert c["queue"] == "chat" and c["route_error"] == "" and c["acd_contact"] is not None
        contact = site.contact(c["acd_contact"])
        assert contact is not None and contact["channel"] == "chat" and contact["gateway"] == GATEWAY
        assert contact["attributes"]["conversation_id"] == str(cid)
        assert contact["attributes"]["summary"] == "订单100234要改地址"
        assert contact["language"] == "zh" and contact["reservation"]["agent_id"] == agent.id
        assert c["offer_expires_at"] - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=RING_S)

        # The desk: the offer apart from the phone's pop, with the conversation and until when it rings.
        hub = LiveHub("UTC")
        picture = await hub.picture(site.api.pool, site.sides[0].acd)
        me = (await snapshot(picture, Principal(agent.id, agent.username, "agent", 0), site.api.pool))["me"]
        assert me["state"] == "reserved" and me["contact"] is None
        offer = me["chat_offer"]
        assert offer["conversation_id"] == str(cid) and offer["customer"] == "王芳"
        assert offer["queue"] == "chat" and offer["summary"] == "订单100234要改地址"
        assert offer["expires_at"] - offer["offered_at"] == RING_S
        assert me["chats"] == {"held": 0, "capacity": 2}

        # Another agent cannot accept it; its agent can, once.
        other = make_agent(db)
        refused = await site.post(f"/api/conversations/{cid}/accept", other)
        assert refused.status_code == 409 and "another agent" in refused.json()["error"]["message"]
        before = last_audit_id(db)
        r = await site.post(f"/api/conversations/{cid}/accept", agent)
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["handler"], got["assignee"]) == ("agent", agent.id)
        assert got["accepted_at"] is not None and got["offer_agent"] is None
        due = dt.datetime.fromisoformat(got["reply_due_at"]) - dt.datetime.now(dt.UTC)
        assert dt.timedelta(seconds=110) < due <= dt.timedelta(seconds=120)
        again = await site.post(f"/api/conversations/{cid}/accept", agent)
        assert again.status_code == 409
        [entry] = audit_since(db, before)
        assert entry["action"] == "conversation.accept" and entry["after"]["assignee"] == agent.id
        state = await until(
            lambda: asyncio.sleep(0, site.agent_state(agent)), lambda s: s.get("state") == "busy"
        )
        assert state["connected"] == {str(c["acd_contact"]): "chat"}
        kinds = [e["kind"] for e in site.events(c["acd_contact"])]
        assert kinds == ["contact.queued", "contact.offered", "contact.answered"]

        # The agent's reply meets the first-reply deadline; resolving ends the contact.
        r = await site.post(f"/api/conversations/{cid}/messages", agent, json={"body": "您好，我来处理。"})
        assert r.status_code == 201, r.text
        assert (await site.conversation(cid))["reply_due_at"] is None
        r = await site.post(f"/api/conversations/{cid}/resolve", agent)
        assert r.status_code == 200 and r.json()["acd_contact"] is None
        await until(lambda: asyncio.sleep(0, site.agent_state(agent)), lambda s: s.get("connected") == {})
        ended = [e for e in site.events(c["acd_contact"]) if e["kind"] == "contact.ended"]
        assert ended and ended[0]["data"]["ended_by"] == "agent" and ended[0]["agent_id"] == agent.id


@pytest.mark.asyncio
async def test_a_declined_or_unanswered_offer_goes_to_the_next_agent(
    db: ApiDatabase, staff: dict[str, ApiUser]
) -> None:
    first, second = make_agent(db), make_agent(db)
    async with running(db, staff) as site:
        await site.status(first, "ready")
        await site.status(second, "ready")
        cid = await site.handed_over()
        c = await until(lambda: site.conversation(cid), lambda c: c["offer_agent"] is not None)
        one = first if c["offer_agent"] == first.id else second
        two = second if one is first else first

        # Declined: the ACD offers the next agent; the one who declined is away (rejected).
        r = await site.post(f"/api/conversations/{cid}/decline", one)
        assert r.status_code == 204, r.text
        await site.offered(cid, two)
        assert (site.agent_state(one)["status"], site.agent_state(one)["reason"]) == ("away", "rejected")

        # Not answered within the ring timeout: reported as no answer, that agent away too.
        started = time.monotonic()
        c = await until(
            lambda: site.conversation(cid), lambda c: c["offer_agent"] is None, RING_S + 4, "the ring out"
        )
        assert RING_S - 1 <= time.monotonic() - started <= RING_S + 4
        await until(lambda: asyncio.sleep(0, site.agent_state(two)), lambda s: s.get("status") == "away")
        assert site.agent_state(two)["reason"] == "no_answer"
        late = await site.post(f"/api/conversations/{cid}/accept", two)
        assert late.status_code == 409
        failed = [
            e["data"]["reason"] for e in site.events(c["acd_contact"]) if e["kind"] == "contact.offer_failed"
        ]
        assert failed == ["rejected", "no_answer"]

        # Nobody else: the first agent back gets it again, and takes it.
        await site.status(one, "ready")
        await site.offered(cid, one)
        r = await site.post(f"/api/conversations/{cid}/accept", one)
        assert r.status_code == 200 and r.json()["assignee"] == one.id


@pytest.mark.asyncio
async def test_a_chat_taken_by_hand_is_answered_in_the_acd_and_never_offered_twice(
    db: ApiDatabase, staff: dict[str, ApiUser]
) -> None:
    a, b = make_agent(db, chat=3), make_agent(db, chat=3)
    async with running(db, staff) as site:
        # Waiting (nobody ready): B takes it from the list. The ACD connects it to B: answered (the
        # queue's figures count it so, not as abandoned) and in B's chat capacity.
        waiting = await site.handed_over()
        c = await until(lambda: site.conversation(waiting), lambda c: c["acd_contact"] is not None)
        await until(lambda: asyncio.sleep(0, site.contact(c["acd_contact"])), lambda x: x is not None)
        r = await site.post(f"/api/conversations/{waiting}/assign", b, json={"unassigned_only": True})
        assert r.status_code == 200 and r.json()["assignee"] == b.id
        assert r.json()["acd_contact"] == str(c["acd_contact"]) and r.json()["accepted_at"] is not None
        contact = await until(
            lambda: asyncio.sleep(0, site.contact(c["acd_contact"])), lambda x: x["state"] == "connected"
        )
        assert contact["agent_id"] == b.id
        answered = [e for e in site.events(c["acd_contact"]) if e["kind"] == "contact.answered"]
        assert answered[0]["agent_id"] == b.id and answered[0]["data"]["by"] == "hand"
        assert not [e for e in site.events(c["acd_contact"]) if e["kind"] == "contact.abandoned"]
        assert len(site.agent_state(b)["connected"]) == 1

        # Ringing for A: a supervisor gives it to B; A's offer stops (taken, not missed), A stays ready.
        await site.status(a, "ready")
        ringing = await site.handed_over()
        c2 = await site.offered(ringing, a)
        r = await site.post(f"/api/conversations/{ringing}/assign", "supervisor", json={"assignee": b.id})
        assert r.status_code == 200, r.text
        await until(lambda: asyncio.sleep(0, site.agent_state(a)), lambda s: s.get("state") == "idle")
        assert site.agent_state(a)["status"] == "ready"
        assert (await site.post(f"/api/conversations/{ringing}/accept", a)).status_code == 409
        failed = [e for e in site.events(c2["acd_contact"]) if e["kind"] == "contact.offer_failed"]
        assert [(e["agent_id"], e["data"]["reason"]) for e in failed] == [(a.id, "taken")]
        await until(lambda: asyncio.sleep(0, site.agent_state(b)), lambda s: len(s.get("connected", {})) == 2)

        # Accepted by A: handed to B, A's chat ends (A's capacity frees); nobody is offered it.
        held = await site.handed_over()
        c3 = await site.offered(held, a)
        assert (await site.post(f"/api/conversations/{held}/accept", a)).status_code == 200
        await until(lambda: asyncio.sleep(0, site.agent_state(a)), lambda s: len(s.get("connected", {})) == 1)
        r = await site.post(f"/api/conversations/{held}/assign", "supervisor", json={"assignee": b.id})
        assert r.status_code == 200 and r.json()["assignee"] == b.id
        await until(lambda: asyncio.sleep(0, site.agent_state(a)), lambda s: s.get("connected") == {})
        ended = [e for e in site.events(c3["acd_contact"]) if e["kind"] == "contact.ended"]
        assert ended[0]["data"]["ended_by"] == "system"
        assert (await site.conversation(held))["acd_contact"] is None

        # B resolves the two the ACD gave B: their contacts end and B's chat capacity frees.
        for cid in (waiting, ringing):
            assert (await site.post(f"/api/conversations/{cid}/resolve", b)).status_code == 200
        await until(lambda: asyncio.sleep(0, site.agent_state(b)), lambda s: s.get("connected") == {})

        # Someone the ACD does not know for chats (a supervisor without an agent profile) takes one: it
        # leaves the ACD (abandoned, reason cancelled), so that nobody is offered it as well.
        other = await site.handed_over()
        c4 = await until(lambda: site.conversation(other), lambda c: c["acd_contact"] is not None)
        await until(lambda: asyncio.sleep(0, site.contact(c4["acd_contact"])), lambda x: x is not None)
        r = await site.post(
            f"/api/conversations/{other}/assign", "supervisor", json={"unassigned_only": True}
        )
        assert r.status_code == 200 and r.json()["acd_contact"] is None
        await until(lambda: asyncio.sleep(0, site.contact(c4["acd_contact"])), lambda x: x is None)
        abandoned = [e for e in site.events(c4["acd_contact"]) if e["kind"] == "contact.abandoned"]
        assert abandoned[0]["data"]["reason"] == "cancelled"


@pytest.mark.asyncio
async def test_chat_capacity_bounds_offers_resolving_frees_it_and_a_call_still_reaches_the_agent(
    db: ApiDatabase, staff: dict[str, ApiUser]
) -> None:
    agent = make_agent(db, chat=2, voice=1)
    async with running(db, staff) as site:
        await site.status(agent, "ready")
        chats = []
        for i in range(3):
            cid = await site.handed_over(summary=f"chat {i}")
            chats.append(cid)
            if i < 2:
                await site.offered(cid, agent)
                assert (await site.post(f"/api/conversations/{cid}/accept", agent)).status_code == 200
        # Two chats held: the third waits, offered to nobody; nor may the agent take it by hand.
        third = await until(lambda: site.conversation(chats[2]), lambda c: c["acd_contact"] is not None)
        await until(lambda: asyncio.sleep(0, site.contact(third["acd_contact"])), lambda x: x is not None)
        await asyncio.sleep(1.0)
        contact = site.contact(third["acd_contact"])
        assert contact is not None and contact["reservation"] is None and contact["state"] == "waiting"
        assert site.agent_state(agent)["state"] == "busy"
        taken = await site.post(
            f"/api/conversations/{chats[2]}/assign", agent, json={"unassigned_only": True}
        )
        assert taken.status_code == 409 and "capacity is 2" in taken.json()["error"]["message"]
        hub = LiveHub("UTC")
        picture = await hub.picture(site.api.pool, site.sides[0].acd)
        me = (await snapshot(picture, Principal(agent.id, agent.username, "agent", 0), site.api.pool))["me"]
        assert me["chats"] == {"held": 2, "capacity": 2} and me["chat_offer"] is None

        # Resolving one frees a place: the third is offered.
        assert (await site.post(f"/api/conversations/{chats[0]}/resolve", agent)).status_code == 200
        await site.offered(chats[2], agent)
        assert (await site.post(f"/api/conversations/{chats[2]}/accept", agent)).status_code == 200

        # Two chats held, the phone free: a call is offered to the agent, shown as the phone's contact.
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO aicc.gateway_heartbeats VALUES ('gw-test', now()) "
                "ON CONFLICT (gateway) DO UPDATE SET seen_at = now()"
            )
        call = str(uuid.uuid4())
        await site.sides[0].acd.submit(
            cmds.Enqueue(
                contact_id=call, queue="support", language="zh", gateway="gw-test", caller="13800138000"
            )
        )
        offered = await until(
            lambda: asyncio.sleep(0, site.contact(call)), lambda x: bool(x and x["reservation"])
        )
        assert offered["reservation"]["agent_id"] == agent.id
        picture = await LiveHub("UTC").picture(site.api.pool, site.sides[0].acd)
        me = (await snapshot(picture, Principal(agent.id, agent.username, "agent", 0), site.api.pool))["me"]
        assert me["contact"]["contact_id"] == call and me["chat_offer"] is None
        assert me["chats"]["held"] == 2


@pytest.mark.asyncio
async def test_a_chat_not_replied_to_in_time_goes_back_to_the_queue_with_its_wait(
    db: ApiDatabase, staff: dict[str, ApiUser]
) -> None:
    slow, quick = make_agent(db), make_agent(db)
    async with running(db, staff, chat_first_reply_s=1) as site:
        await site.status(slow, "ready")
        cid = await site.handed_over()
        first = await site.offered(cid, slow)
        r = await site.post(f"/api/conversations/{cid}/accept", slow)
        assert r.status_code == 200, r.text
        before = last_audit_id(db)
        await site.status(quick, "ready")  # after the slow agent accepted: nothing for them yet

        # No reply within a second: the contact ends, the agent is away, the chat waits again.
        back = await until(lambda: site.conversation(cid), lambda c: c["handler"] == "queue", 6, "re-queue")
        assert back["assignee"] is None and back["accepted_at"] is None and back["reply_due_at"] is None
        assert back["queued_at"] == first["queued_at"]  # its wait counts from when it first joined
        assert back["acd_contact"] not in (None, first["acd_contact"])
        ended = await until(
            lambda: asyncio.sleep(
                0, [e for e in site.events(first["acd_contact"]) if e["kind"] == "contact.ended"]
            ),
            bool,
        )
        assert ended[0]["data"]["ended_by"] == "system" and ended[0]["agent_id"] == slow.id
        state = await until(
            lambda: asyncio.sleep(0, site.agent_state(slow)), lambda s: s.get("status") == "away"
        )
        assert state["reason"] == "no_reply" and state["connected"] == {}
        entry = next(e for e in audit_since(db, before) if e["action"] == "conversation.requeue")
        assert entry["actor"] == "system" and entry["before"]["assignee"] == slow.id
        assert "within 1 s" in entry["after"]["reason"]

        # The next agent gets it, the wait it had counted in the ACD; the customer's words are all there.
        again = await site.offered(cid, quick)
        contact = site.contact(again["acd_contact"])
        assert contact is not None
        assert contact["enqueued_at"] <= first["queued_at"].timestamp() + 0.5
        assert (await site.post(f"/api/conversations/{cid}/accept", quick)).status_code == 200
        r = await site.post(f"/api/conversations/{cid}/messages", quick, json={"body": "您好"})
        assert r.status_code == 201
        await asyncio.sleep(1.5)  # replied in time: it stays
        now = await site.conversation(cid)
        assert (now["handler"], now["assignee"]) == ("agent", quick.id)
        detail = (await site.api.client.get(f"/api/conversations/{cid}", headers=site.auth(quick))).json()
        assert [m["body"] for m in detail["messages"]] == ["转人工", "您好"]


@pytest.mark.asyncio
async def test_two_api_processes_accepting_one_offer_one_wins(
    db: ApiDatabase, staff: dict[str, ApiUser]
) -> None:
    agent = make_agent(db)
    async with running(db, staff, processes=2) as site:
        await site.status(agent, "ready")
        cid = await site.handed_over()
        await site.offered(cid, agent)
        await asyncio.sleep(0.3)  # both processes had the offer's notification
        registries = [s.api.state.metrics.registry for s in site.sides]
        offered = [
            r.get_sample_value("aicc_chat_routing_total", {"event": "offered"}) or 0 for r in registries
        ]
        assert sum(offered) == 1, offered  # recorded once, by one of them
        before = last_audit_id(db)
        answers = await asyncio.gather(
            site.post(f"/api/conversations/{cid}/accept", agent, side=0),
            site.post(f"/api/conversations/{cid}/accept", agent, side=1),
        )
        assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
        assert [e["action"] for e in audit_since(db, before)] == ["conversation.accept"]
        c = await site.conversation(cid)
        kinds = [e["kind"] for e in site.events(c["acd_contact"])]
        assert kinds.count("contact.answered") == 1


@pytest.mark.asyncio
async def test_a_chat_for_a_voice_queue_or_no_queue_waits_for_a_taker_and_says_why(
    db: ApiDatabase, staff: dict[str, ApiUser]
) -> None:
    agent = make_agent(db)
    async with running(db, staff, chat_queue="support") as site:
        await site.status(agent, "ready")
        cid = await site.handed_over()
        c = await until(lambda: site.conversation(cid), lambda c: c["route_error"] != "")
        assert "takes voice contacts, not chats" in c["route_error"] and c["acd_contact"] is None
        assert c["queue"] == "support"
        listed = await site.api.client.get(
            "/api/conversations?handler=queue&unassigned=true&status=open", headers=site.auth(agent)
        )
        assert str(cid) in [x["id"] for x in listed.json()]
        r = await site.post(f"/api/conversations/{cid}/assign", agent, json={"unassigned_only": True})
        assert r.status_code == 200
    async with running(db, staff, chat_queue="nowhere") as site:
        cid = await site.handed_over()
        c = await until(lambda: site.conversation(cid), lambda c: c["route_error"] != "")
        assert "no queue 'nowhere'" in c["route_error"]


@pytest.mark.asyncio
async def test_the_api_heartbeats_as_the_chats_gateway_and_handles_removed_and_lost_contacts(
    db: ApiDatabase, staff: dict[str, ApiUser]
) -> None:
    async with running(db, staff) as site:
        routing = site.sides[0].routing
        await routing.sweep()
        with psycopg.connect(db.dsn) as conn:
            seen = conn.execute(
                "SELECT seen_at FROM aicc.gateway_heartbeats WHERE gateway = 'api'"
            ).fetchone()
        assert seen is not None
        # The ACD took it out of its queue (max_wait_s): it waits for a taker, and says why.
        cid = await site.handed_over()
        c = await until(lambda: site.conversation(cid), lambda c: c["acd_contact"] is not None)
        routing.on_gateway(GatewayMessage(type="removed", contact_id=str(c["acd_contact"]), reason="timeout"))
        c = await until(lambda: site.conversation(cid), lambda c: c["acd_contact"] is None)
        assert "max_wait_s" in c["route_error"]
        # A contact the ACD lost (no such contact, no command on its way): routed again.
        lost = uuid.uuid4()
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE aicc.conversations SET acd_contact = %s, route_error = '', "
                "routed_at = now() - interval '1 minute' WHERE id = %s",
                (lost, cid),
            )
        routing._next_lost = 0.0  # the next sweep looks for lost contacts
        await routing.sweep()
        c = await until(lambda: site.conversation(cid), lambda c: c["acd_contact"] not in (None, lost))
        await until(lambda: asyncio.sleep(0, site.contact(c["acd_contact"])), lambda x: x is not None)


@pytest.mark.asyncio
async def test_a_chat_queue_overflows_only_into_chat_queues(
    db: ApiDatabase, staff: dict[str, ApiUser]
) -> None:
    async with open_api(db, staff) as api:
        body = {**CHAT, "name": "chat-vip", "overflow": [{"after_s": 60, "queue": "support"}]}
        r = await api.client.post("/api/queues", json=body, headers=api.auth(staff["admin"]))
        assert r.status_code == 422, r.text
        [problem] = r.json()["error"]["problems"]
        assert problem["field"] == "overflow[0].queue" and "takes voice contacts" in problem["message"]
        body["overflow"] = [{"after_s": 60, "queue": "chat"}]
        r = await api.client.post("/api/queues", json=body, headers=api.auth(staff["admin"]))
        assert r.status_code == 201, r.text
