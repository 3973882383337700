"""Text conversations routed by the ACD (issue 19): the API processes are the ACD's gateway for chats.

A conversation handed to the agents (handler queue: the bot's handover on web chat or WeCom, or one
that starts there when there is no bot) becomes an ACD contact of channel `chat` in the queue app.yml's
`chat_queue` names, with a fresh contact id kept on the conversation (`acd_contact`), its language,
priority and the bot's summary. The ACD offers it like a call, within each agent's chat capacity (an
agent holds one call, or several chats); the offer goes to gateway GATEWAY, which every API process
listens as, and reaches the agent's desk through the live picture (`me.chat_offer`). The agent accepts
(POST /api/conversations/{id}/accept: OfferResult answered, the conversation becomes theirs) or
declines; no answer within the queue's ring timeout is reported as such and the ACD offers the next
agent. Resolving ends the contact (the agent's chat capacity frees); an agent who accepted and has not
replied within `chat_first_reply_s` loses the chat: the contact ends, the agent goes away (reason
no_reply) if ready, and the conversation joins the queue again with its wait counting from when it
first joined (audited; its messages are the conversation's and stay). A waiting or ringing chat taken
or assigned by hand to a chat agent is connected to them in the ACD (command assign: answered, in their
chat capacity and the queue's figures, never offered again); taken by someone the ACD does not know for
chats, it leaves the ACD (abandoned with reason cancelled). A chat an agent held and another takes
ends for the first (contact ended).

Several API processes may run: whatever must happen once happens in one transaction that claims its
rows (conditional UPDATEs, FOR UPDATE SKIP LOCKED), and every command to the ACD is stored in the same
transaction as the change it goes with (durable, in order, whatever the ACD's state). `ChatRouting`
runs in each process: it heartbeats as GATEWAY (the ACD abandons the contacts of a silent gateway) and
every SWEEP_S routes new conversations, reports offers past their ring timeout as no answer, re-queues
chats past their first-reply deadline and re-routes contacts the ACD lost (all API processes down for
longer than gateway_timeout_s, say).

A conversation that cannot be routed (no such queue, a queue of another channel, or one it waited in
past max_wait_s) keeps waiting for an agent to take it from the Chats tab; `route_error` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import ValidationError

from aicc.appliance.acd import commands as cmds
from aicc.appliance.acd.client import GatewayMessage, insert_command
from aicc.appliance.acd.policy import QueueConfig
from aicc.appliance.api import audit
from aicc.appliance.api.config import AppConfig
from aicc.appliance.api.deps import Pool
from aicc.appliance.conversations import store

log = logging.getLogger("aicc.chat_routing")

CHAT_CHANNEL: Literal["chat"] = "chat"  # every text conversation's ACD channel: one chat capacity
GATEWAY = "api"  # the ACD gateway the API processes are for chats
SOURCE = "api:chats"  # aicc.acd_commands.source of what this module stores
HEARTBEAT_S = 5.0
SWEEP_S = 1.0
LOST_CHECK_S = 10.0
LOST_AFTER_S = 30.0  # routed this long ago and neither in the ACD nor on its way there: lost
BATCH = 50
EndedBy = Literal["agent", "system"]
# The conversation's priority as the ACD's (queue priority + this; one point = priority_weight_s).
PRIORITY = {"urgent": 20, "high": 10, "normal": 0, "low": 0}
REMOVED = {
    "timeout": "it waited longer than the queue's max_wait_s; an agent takes it from the list",
    "no_agents": "nobody was staffed for it; an agent takes it from the list",
}


class RoutingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "aicc_chat_routing_total",
            "Text conversations and the ACD, by event (queued, not_routed, offered, accepted, declined, "
            "no_answer, requeued, withdrawn, assigned: taken by hand, ended, removed, lost).",
            ["event"],
            registry=registry,
        )


class NotOffered(Exception):
    """Accept or decline of a chat that is not ringing for this agent (now)."""


@dataclass(frozen=True)
class Offer:
    """The reservation ringing for a conversation's contact, as the ACD persisted it."""

    contact_id: str
    reservation_id: str
    agent_id: int


# --- in the caller's transaction ---------------------------------------------------------------------


async def _command(conn: AsyncConnection[DictRow], cmd: cmds.Command) -> None:
    """Stored with the change it goes with: durable, in order, taken by whichever ACD leads."""
    await insert_command(conn, cmd, uid=str(uuid.uuid4()), source=SOURCE, expires_s=None)


async def chat_queue(conn: AsyncConnection[DictRow], name: str) -> tuple[QueueConfig | None, str]:
    """The queue's configuration when chats may join it, else (None, why not)."""
    if not name:
        return None, "chat_queue is empty in app.yml: chats are not routed"
    cur = await conn.execute("SELECT config FROM aicc.queues WHERE name = %s", (name,))
    row = await cur.fetchone()
    if row is None:
        return None, f"no queue {name!r} is configured (chat_queue): create it with channel chat"
    try:
        config = QueueConfig.model_validate(row["config"])
    except ValidationError:
        return None, f"queue {name!r} has a configuration this version cannot read"
    if config.channel != CHAT_CHANNEL:
        return None, (
            f"queue {name!r} takes {config.channel} contacts, not chats: chat_queue must name a queue "
            "of channel chat"
        )
    return config, ""


async def _enqueue(
    conn: AsyncConnection[DictRow], row: dict[str, Any], queue: QueueConfig, waited_s: float
) -> UUID:
    """Make the conversation (row: locked, with customer_name) a waiting contact of `queue`."""
    contact = uuid.uuid4()
    language = row["language"] if row["language"] in ("zh", "en") else queue.language
    attributes = {
        "conversation_id": str(row["id"]),
        "channel": row["channel"],
        "summary": (row["summary"] or "")[:1000],
        "customer": (row.get("customer_name") or "")[:200],
    }
    await _command(
        conn,
        cmds.Enqueue(
            contact_id=str(contact),
            queue=queue.name,
            channel=CHAT_CHANNEL,
            language=language,
            priority=PRIORITY.get(row["priority"], 0),
            attributes=attributes,
            gateway=GATEWAY,
            waited_s=min(max(0.0, waited_s), 86400.0),
        ),
    )
    await conn.execute(
        "UPDATE aicc.conversations SET acd_contact = %s, routed_at = now(), route_error = '', queue = %s, "
        "offer_reservation = NULL, offer_agent = NULL, offer_expires_at = NULL WHERE id = %s",
        (contact, queue.name, row["id"]),
    )
    return contact


Withdrawn = Literal["withdrawn", "ended", "assigned"]


async def withdraw(
    conn: AsyncConnection[DictRow], conversation: dict[str, Any], *, keep: int | None, ended_by: EndedBy
) -> Withdrawn | None:
    """The conversation (locked) leaves the ACD's queue, or the ACD learns who holds it. Taken by hand
    while waiting or ringing (`keep`, the agent taking it, a chat agent of the ACD's): the contact is
    connected to them (assigned: it counts in their chat capacity and as answered in the queue's
    figures). Otherwise a waiting or ringing contact is abandoned (reason cancelled: the taker is not a
    chat agent, or nobody takes it), and one connected to its assignee ends (ended_by), freeing the
    agent's capacity, unless that assignee is `keep`. What happened, None when nothing did."""
    contact = conversation.get("acd_contact")
    if contact is None:
        return None
    accepted = conversation.get("accepted_at")
    if accepted is None and keep is not None and await _chat_agent(conn, keep):
        await _command(conn, cmds.Assign(contact_id=str(contact), agent_id=keep))
        await conn.execute(
            "UPDATE aicc.conversations SET accepted_at = now(), reply_due_at = NULL, "
            "offer_reservation = NULL, offer_agent = NULL, offer_expires_at = NULL WHERE id = %s",
            (conversation["id"],),
        )
        return "assigned"
    if accepted is not None:
        if keep is not None and conversation["assignee"] == keep:
            return None
        talk_s = max(0.0, time.time() - accepted.timestamp())
        await _command(conn, cmds.ContactEnd(contact_id=str(contact), talk_s=talk_s, ended_by=ended_by))
    else:
        await _command(conn, cmds.Abandon(contact_id=str(contact), reason="cancelled"))
    await conn.execute(
        "UPDATE aicc.conversations SET acd_contact = NULL, routed_at = NULL, accepted_at = NULL, "
        "reply_due_at = NULL, offer_reservation = NULL, offer_agent = NULL, offer_expires_at = NULL "
        "WHERE id = %s",
        (conversation["id"],),
    )
    return "ended" if accepted is not None else "withdrawn"


async def _chat_agent(conn: AsyncConnection[DictRow], user_id: int) -> bool:
    """Whether the user's agent profile gives them chat capacity (the ACD knows them for chats)."""
    cur = await conn.execute(
        "SELECT (profile->'capacity'->>%s)::int > 0 AS chats FROM aicc.agents WHERE user_id = %s",
        (CHAT_CHANNEL, user_id),
    )
    row = await cur.fetchone()
    return row is not None and bool(row["chats"])


async def replied(conn: AsyncConnection[DictRow], conversation_id: UUID) -> None:
    """An agent replied: the first-reply deadline is met."""
    await conn.execute(
        "UPDATE aicc.conversations SET reply_due_at = NULL WHERE id = %s AND reply_due_at IS NOT NULL",
        (conversation_id,),
    )


async def offer_of(conn: AsyncConnection[DictRow], conversation: dict[str, Any], agent_id: int) -> Offer:
    """The offer ringing for `agent_id` on the conversation (locked), as the ACD persisted it (the
    authority: its reservation, not what the offer's notification left); NotOffered otherwise."""
    contact = conversation.get("acd_contact")
    if contact is None or conversation.get("accepted_at") is not None:
        raise NotOffered("this chat is not offered to anyone now (taken, accepted or not routed)")
    cur = await conn.execute("SELECT contact FROM aicc.acd_contacts WHERE id = %s", (contact,))
    row = await cur.fetchone()
    reservation = (row["contact"] or {}).get("reservation") if row is not None else None
    if not reservation:
        raise NotOffered("this chat is waiting in its queue, not offered to you now")
    if int(reservation["agent_id"]) != agent_id:
        raise NotOffered("this chat is offered to another agent")
    return Offer(str(contact), str(reservation["id"]), agent_id)


async def accepted(
    conn: AsyncConnection[DictRow], conversation_id: UUID, agent_id: int, first_reply_s: int
) -> dict[str, Any] | None:
    """After the ACD took the answer: the conversation is the agent's, its first reply due."""
    await conn.execute(
        "UPDATE aicc.conversations SET handler = 'agent', assignee = %s, accepted_at = now(), "
        "reply_due_at = CASE WHEN %s > 0 THEN now() + make_interval(secs => %s) END, "
        "offer_reservation = NULL, offer_agent = NULL, offer_expires_at = NULL, updated_at = now() "
        "WHERE id = %s",
        (agent_id, first_reply_s, first_reply_s, conversation_id),
    )
    return await store.get_conversation(conn, conversation_id)


async def declined(conn: AsyncConnection[DictRow], offer: Offer) -> None:
    await _command(
        conn,
        cmds.OfferResult(
            reservation_id=offer.reservation_id, contact_id=offer.contact_id, outcome="rejected"
        ),
    )
    await conn.execute(
        "UPDATE aicc.conversations SET offer_reservation = NULL, offer_agent = NULL, "
        "offer_expires_at = NULL WHERE acd_contact = %s",
        (offer.contact_id,),
    )


async def chats_held(conn: AsyncConnection[DictRow], user_id: int) -> tuple[int, int | None]:
    """(open text conversations the user holds, their chat capacity): the capacity when their agent
    profile names one for chat, else None (no limit: not a chat agent of the ACD's)."""
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM aicc.conversations WHERE assignee = %s AND status <> 'resolved' "
        "AND channel <> 'voice') AS held, (SELECT profile->'capacity'->%s FROM aicc.agents "
        "WHERE user_id = %s) AS capacity",
        (user_id, CHAT_CHANNEL, user_id),
    )
    row = await cur.fetchone()
    assert row is not None
    capacity = row["capacity"]
    return int(row["held"]), int(capacity) if isinstance(capacity, int) else None


# --- the API process's part ----------------------------------------------------------------------


class ChatRouting:
    """One per API process: the gateway's heartbeat, the offers' notifications, and the sweeps."""

    def __init__(
        self,
        pool: Callable[[], Pool | None],
        config: AppConfig,
        metrics: RoutingMetrics,
        on_change: Callable[[dict[str, Any]], object] = lambda row: None,
    ) -> None:
        self.pool = pool
        self.config = config
        self.metrics = metrics
        self.on_change = on_change  # a conversation changed hands (the visitor's status frame)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._next_heartbeat = 0.0
        self._next_lost = 0.0

    async def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.create_task(self._run(), name="chat-routing")

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._loop] if self._loop is not None else [])]
        self._loop = None
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def poke(self) -> None:
        """A conversation went to the agents: route it now rather than at the next sweep."""
        self._wake.set()

    def on_gateway(self, message: GatewayMessage) -> None:
        """The ACD's message to gateway GATEWAY (the AcdClient's callback, in the event loop)."""
        if message.type == "offer":
            self._spawn(self._offered(message))
        elif message.type == "removed":
            self._spawn(self._removed(message))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        backoff = SWEEP_S
        while True:
            try:
                await self.sweep()
                backoff = SWEEP_S
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away, a bug: say so, try again later
                log.warning("chat routing sweep failed: %s", exc)
                backoff = min(backoff * 2, 30.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff)
            self._wake.clear()

    async def sweep(self) -> None:
        """Everything due now (tests call it to not wait for the loop)."""
        pool = self.pool()
        if pool is None:
            return
        now = time.monotonic()
        if now >= self._next_heartbeat:
            await self._heartbeat(pool)
            self._next_heartbeat = now + HEARTBEAT_S
        await self._route_new(pool)
        await self._expire_offers(pool)
        await self._requeue_unanswered(pool)
        if now >= self._next_lost:
            await self._reroute_lost(pool)
            self._next_lost = now + LOST_CHECK_S

    async def _heartbeat(self, pool: Pool) -> None:
        """The ACD abandons the contacts of a gateway silent for gateway_timeout_s (30 s)."""
        async with pool.connection() as conn:
            await conn.execute(
                "INSERT INTO aicc.gateway_heartbeats (gateway, seen_at) VALUES (%s, now()) "
                "ON CONFLICT (gateway) DO UPDATE SET seen_at = now()",
                (GATEWAY,),
            )

    async def _route_new(self, pool: Pool) -> None:
        name = self.config.chat_queue
        if not name:
            return
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT c.id, c.channel, c.language, c.priority, c.summary, cu.name AS customer_name, "
                "extract(epoch FROM now() - coalesce(c.queued_at, c.created_at))::float8 AS waited_s "
                "FROM aicc.conversations c JOIN aicc.customers cu ON cu.id = c.customer_id "
                "WHERE c.handler = 'queue' AND c.assignee IS NULL AND c.status <> 'resolved' "
                "AND c.acd_contact IS NULL AND c.route_error = '' AND c.channel <> 'voice' "
                "ORDER BY coalesce(c.queued_at, c.created_at) LIMIT %s FOR UPDATE OF c SKIP LOCKED",
                (BATCH,),
            )
            rows = await cur.fetchall()
            if not rows:
                return
            queue, problem = await chat_queue(conn, name)
            for row in rows:
                if queue is None:
                    await conn.execute(
                        "UPDATE aicc.conversations SET route_error = %s, queue = %s WHERE id = %s",
                        (problem[:300], name, row["id"]),
                    )
                    log.warning("conversation %s waits for an agent to take it: %s", row["id"], problem)
                    self.metrics.events.labels("not_routed").inc()
                    continue
                contact = await _enqueue(conn, row, queue, float(row["waited_s"] or 0.0))
                log.info("conversation %s queued in %s as ACD contact %s", row["id"], queue.name, contact)
                self.metrics.events.labels("queued").inc()

    async def _offered(self, message: GatewayMessage) -> None:
        """Record the offer on its conversation; the process that records it first owns its ring
        timeout (every process gets the notification)."""
        pool = self.pool()
        if pool is None:
            return
        async with pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE aicc.conversations SET offer_reservation = %s, offer_agent = %s, "
                "offer_expires_at = now() + make_interval(secs => %s) WHERE acd_contact = %s "
                "AND status <> 'resolved' AND accepted_at IS NULL "
                "AND offer_reservation IS DISTINCT FROM %s::uuid RETURNING id",
                (
                    message.reservation_id,
                    message.agent_id,
                    message.ring_timeout_s,
                    message.contact_id,
                    message.reservation_id,
                ),
            )
            row = await cur.fetchone()
        if row is not None:
            log.info("conversation %s offered to agent %s", row["id"], message.agent_id)
            self.metrics.events.labels("offered").inc()

    async def _removed(self, message: GatewayMessage) -> None:
        """The ACD took the contact out of its queue (max_wait_s): it waits for a taker by hand."""
        pool = self.pool()
        if pool is None:
            return
        why = REMOVED.get(message.reason, f"the ACD removed it ({message.reason})")
        async with pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE aicc.conversations SET acd_contact = NULL, routed_at = NULL, route_error = %s, "
                "offer_reservation = NULL, offer_agent = NULL, offer_expires_at = NULL "
                "WHERE acd_contact = %s RETURNING id",
                (why, message.contact_id),
            )
            row = await cur.fetchone()
        if row is not None:
            log.warning("conversation %s left the ACD: %s", row["id"], why)
            self.metrics.events.labels("removed").inc()

    async def _expire_offers(self, pool: Pool) -> None:
        """Offers past their ring timeout: no answer (the agent goes away; the next agent's turn)."""
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "WITH due AS (SELECT id, acd_contact, offer_reservation FROM aicc.conversations "
                "WHERE offer_expires_at <= now() LIMIT %s FOR UPDATE SKIP LOCKED) "
                "UPDATE aicc.conversations c SET offer_reservation = NULL, offer_agent = NULL, "
                "offer_expires_at = NULL FROM due WHERE c.id = due.id "
                "RETURNING due.id, due.acd_contact, due.offer_reservation",
                (BATCH,),
            )
            for row in await cur.fetchall():
                if row["acd_contact"] is None or row["offer_reservation"] is None:
                    continue
                await _command(
                    conn,
                    cmds.OfferResult(
                        reservation_id=str(row["offer_reservation"]),
                        contact_id=str(row["acd_contact"]),
                        outcome="no_answer",
                    ),
                )
                log.info("conversation %s: the offer rang out", row["id"])
                self.metrics.events.labels("no_answer").inc()

    async def _requeue_unanswered(self, pool: Pool) -> None:
        """Chats accepted and not replied to in time go back to the queue, their wait counting."""
        changed: list[dict[str, Any]] = []
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT {store.CONVERSATION}, cu.name AS customer_name, "  # noqa: S608
                "extract(epoch FROM now() - coalesce(c.queued_at, c.created_at))::float8 AS waited_s "
                "FROM aicc.conversations c JOIN aicc.customers cu ON cu.id = c.customer_id "
                "WHERE c.reply_due_at <= now() AND c.status <> 'resolved' "
                "LIMIT %s FOR UPDATE OF c SKIP LOCKED",
                (BATCH,),
            )
            for row in await cur.fetchall():
                after = await self._requeue(conn, row)
                if after is not None:
                    changed.append(after)
        for row in changed:
            self.on_change(row)

    async def _requeue(self, conn: AsyncConnection[DictRow], row: dict[str, Any]) -> dict[str, Any] | None:
        agent = row["assignee"]
        await withdraw(conn, row, keep=None, ended_by="system")
        if agent is not None:
            cur = await conn.execute(
                "SELECT state->>'status' AS status FROM aicc.acd_agent_state WHERE user_id = %s", (agent,)
            )
            state = await cur.fetchone()
            if state is not None and state["status"] == "ready":
                # As an agent who lets a call ring out: no more offers until they say they are back.
                await _command(
                    conn, cmds.AgentStatus(agent_id=agent, status="away", reason="no_reply", by="system")
                )
        await conn.execute(
            "UPDATE aicc.conversations SET handler = 'queue', assignee = NULL, reply_due_at = NULL, "
            "updated_at = now() WHERE id = %s",
            (row["id"],),
        )
        queue, problem = await chat_queue(conn, row["queue"] or self.config.chat_queue)
        if queue is not None:
            await _enqueue(conn, row, queue, float(row["waited_s"] or 0.0))
        else:
            await conn.execute(
                "UPDATE aicc.conversations SET route_error = %s WHERE id = %s", (problem[:300], row["id"])
            )
        after = await store.get_conversation(conn, row["id"])
        assert after is not None
        limit = self.config.chat_first_reply_s
        await audit.record(
            conn,
            "system",
            "conversation.requeue",
            "conversation",
            row["id"],
            {"handler": row["handler"], "assignee": agent},
            {"handler": "queue", "assignee": None, "reason": f"no reply from the agent within {limit} s"},
        )
        log.info("conversation %s: agent %s did not reply within %d s: queued again", row["id"], agent, limit)
        self.metrics.events.labels("requeued").inc()
        return after

    async def _reroute_lost(self, pool: Pool) -> None:
        """Contacts the ACD no longer holds and no command brings (its gateway timed out while every
        API process was down, its state was restored from an older backup ...): one waiting is routed
        again, one an agent holds is left to the agent."""
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT {store.CONVERSATION}, cu.name AS customer_name, "  # noqa: S608
                "extract(epoch FROM now() - coalesce(c.queued_at, c.created_at))::float8 AS waited_s "
                "FROM aicc.conversations c JOIN aicc.customers cu ON cu.id = c.customer_id "
                "WHERE c.acd_contact IS NOT NULL AND c.routed_at < now() - make_interval(secs => %s) "
                "AND NOT EXISTS (SELECT 1 FROM aicc.acd_contacts a WHERE a.id = c.acd_contact) "
                "AND NOT EXISTS (SELECT 1 FROM aicc.acd_commands k "
                " WHERE k.payload->>'contact_id' = c.acd_contact::text) "
                "LIMIT %s FOR UPDATE OF c SKIP LOCKED",
                (LOST_AFTER_S, BATCH),
            )
            for row in await cur.fetchall():
                await conn.execute(
                    "UPDATE aicc.conversations SET acd_contact = NULL, routed_at = NULL, "
                    "offer_reservation = NULL, offer_agent = NULL, offer_expires_at = NULL WHERE id = %s",
                    (row["id"],),
                )
                self.metrics.events.labels("lost").inc()
                if row["status"] == "resolved" or row["handler"] != "queue" or row["assignee"] is not None:
                    continue
                queue, problem = await chat_queue(conn, row["queue"] or self.config.chat_queue)
                if queue is None:
                    await conn.execute(
                        "UPDATE aicc.conversations SET route_error = %s WHERE id = %s",
                        (problem[:300], row["id"]),
                    )
                    continue
                log.warning("conversation %s: the ACD lost its contact; queued again", row["id"])
                await _enqueue(conn, row, queue, float(row["waited_s"] or 0.0))
