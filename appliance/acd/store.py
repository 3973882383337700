"""The ACD's tables: configuration read at start and on reload, runtime state written as it changes,
commands taken from the work queue. All functions take the caller's connection (and transaction)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from aicc.appliance.acd.client import GATEWAY_CHANNEL, LIVE_CHANNEL, RESULTS_CHANNEL
from aicc.appliance.acd.engine import Acd
from aicc.appliance.acd.model import AgentRuntime, Callback, Changes, Contact
from aicc.appliance.acd.policy import AgentProfile, QueueConfig, RoutingPolicy
from aicc.appliance.events.writer import insert_events

Conn = psycopg.AsyncConnection[Any]

# NOTIFY payloads are limited to 8000 bytes; results carry small dicts, offers a few ids.
_MAX_NOTIFY = 7900


@dataclass
class Config:
    policy: RoutingPolicy
    queues: dict[str, QueueConfig]
    agents: dict[int, AgentProfile]


@dataclass(frozen=True)
class StoredCommand:
    id: int
    uid: str
    kind: str
    payload: dict[str, Any]
    expired: bool


async def load_config(conn: Conn) -> Config:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT document FROM aicc.routing_policies ORDER BY version DESC LIMIT 1")
        row = await cur.fetchone()
        policy = RoutingPolicy.model_validate(row["document"]) if row else RoutingPolicy()
        await cur.execute("SELECT name, config FROM aicc.queues")
        queues = {r["name"]: QueueConfig.model_validate(r["config"]) for r in await cur.fetchall()}
        # Only agents whose user can log in: a disabled user takes no contacts.
        await cur.execute(
            "SELECT a.user_id, a.profile, a.extension FROM aicc.agents a "
            "JOIN aicc.users u ON u.id = a.user_id WHERE NOT u.disabled"
        )
        agents = {
            int(r["user_id"]): AgentProfile.model_validate({**r["profile"], "extension": r["extension"]})
            for r in await cur.fetchall()
        }
    return Config(policy, queues, agents)


async def load_state(conn: Conn) -> tuple[list[AgentRuntime], list[Contact]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT state FROM aicc.acd_agent_state")
        agents = [AgentRuntime.from_json(r["state"]) for r in await cur.fetchall()]
        await cur.execute("SELECT contact FROM aicc.acd_contacts ORDER BY seq")
        contacts = [Contact.from_json(r["contact"]) for r in await cur.fetchall()]
    return agents, contacts


async def recent_handle_times(conn: Conn, per_queue: int = 50) -> dict[str, list[float]]:
    """The last handle times (talk + hold + wrap-up) of each queue, from the event log: the wait
    estimate after a restart starts from them instead of the queue's default."""
    cur = await conn.execute(
        "SELECT queue, handled FROM (SELECT e.queue, e.id, "
        "coalesce((e.data->>'talk_s')::float8, 0) + coalesce((e.data->>'hold_s')::float8, 0) "
        "+ coalesce((SELECT sum((w.data->>'wrap_s')::float8) FROM aicc.cc_events w "
        "WHERE w.contact_id = e.contact_id AND w.kind = 'contact.wrapup_done'), 0) AS handled, "
        "row_number() OVER (PARTITION BY e.queue ORDER BY e.id DESC) AS n "
        "FROM aicc.cc_events e WHERE e.kind = 'contact.ended' AND e.queue IS NOT NULL "
        "AND e.at > now() - interval '7 days') t WHERE n <= %s ORDER BY queue, id",
        (per_queue,),
    )
    out: dict[str, list[float]] = {}
    for queue, handled in await cur.fetchall():
        out.setdefault(str(queue), []).append(float(handled))
    return out


async def take_commands(conn: Conn, limit: int = 200) -> list[StoredCommand]:
    """The oldest commands, locked for this transaction (a second ACD never sees them twice)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, uid::text, kind, payload, coalesce(expires_at < now(), false) AS expired "
            "FROM aicc.acd_commands ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (limit,),
        )
        rows = await cur.fetchall()
    return [StoredCommand(r["id"], r["uid"], r["kind"], r["payload"], r["expired"]) for r in rows]


async def delete_commands(conn: Conn, ids: Sequence[int]) -> None:
    if ids:
        await conn.execute("DELETE FROM aicc.acd_commands WHERE id = ANY(%s)", (list(ids),))


async def persist(conn: Conn, engine: Acd, changes: Changes) -> None:
    """Write what changed, in the caller's transaction: state rows, callbacks, events, and the offers as
    notifications (delivered only if the transaction commits)."""
    if changes.agents:
        await _executemany(
            conn,
            "INSERT INTO aicc.acd_agent_state (user_id, state, updated_at) VALUES (%s, %s, now()) "
            "ON CONFLICT (user_id) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
            [(a, json.dumps(engine.agent(a).to_json())) for a in sorted(changes.agents)],
        )
    live = sorted(changes.contacts - changes.removed)
    if live:
        rows = []
        for cid in live:
            c = engine.contact(cid)
            rows.append((cid, c.seq, c.queue, c.state, json.dumps(c.to_json(), ensure_ascii=False)))
        await _executemany(
            conn,
            "INSERT INTO aicc.acd_contacts (id, seq, queue, state, contact, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (id) DO UPDATE SET queue = EXCLUDED.queue, "
            "state = EXCLUDED.state, contact = EXCLUDED.contact, updated_at = now()",
            rows,
        )
    if changes.removed:
        await conn.execute("DELETE FROM aicc.acd_contacts WHERE id = ANY(%s)", (sorted(changes.removed),))
    if changes.agents or live or changes.removed:
        await conn.execute("SELECT pg_notify(%s, '')", (LIVE_CHANNEL,))
    if changes.callbacks:
        await _store_callbacks(conn, changes.callbacks)
    if changes.events:
        await insert_events(conn, changes.events)
    for offer in changes.offers:
        await notify(
            conn,
            GATEWAY_CHANNEL,
            {
                "type": "offer",
                "gateway": offer.gateway,
                "contact_id": offer.contact_id,
                "reservation_id": offer.reservation_id,
                "agent_id": offer.agent_id,
                "extension": offer.extension,
                "ring_timeout_s": offer.ring_timeout_s,
            },
        )
    for event in changes.events:
        # A contact the ACD itself took out of the queue: its gateway must tell the caller.
        if event.kind == "contact.abandoned" and event.data.get("reason") in ("timeout", "no_agents"):
            gateway = event.data.get("gateway", "")
            await notify(
                conn,
                GATEWAY_CHANNEL,
                {
                    "type": "removed",
                    "gateway": gateway,
                    "contact_id": event.contact_id,
                    "reason": event.data["reason"],
                },
            )


async def _store_callbacks(conn: Conn, callbacks: Iterable[Callback]) -> None:
    await _executemany(
        conn,
        "INSERT INTO aicc.acd_callbacks (id, contact_id, queue, number, language, requested_at) "
        "VALUES (%s, %s, %s, %s, %s, to_timestamp(%s)) ON CONFLICT (id) DO NOTHING",
        [(c.id, c.contact_id, c.queue, c.number, c.language, c.requested_at) for c in callbacks],
    )


async def notify(conn: Conn, channel: str, message: dict[str, Any]) -> None:
    payload = json.dumps(message, ensure_ascii=False, default=str)
    if len(payload.encode()) > _MAX_NOTIFY:
        payload = json.dumps(
            {k: message[k] for k in ("uid", "ok") if k in message}
            | {"error": {"code": "too_large", "message": "result too large for a notification"}}
        )
    await conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


async def notify_result(
    conn: Conn, uid: str, result: dict[str, Any] | None, error: tuple[str, str] | None
) -> None:
    message: dict[str, Any] = {"uid": uid, "ok": error is None}
    if error is None:
        message["result"] = result or {}
    else:
        message["error"] = {"code": error[0], "message": error[1]}
    await notify(conn, RESULTS_CHANNEL, message)


async def registered_extensions(conn: Conn, table: str) -> set[str]:
    """SIP usernames with a live registration in Kamailio's location table (usrloc db_mode 3)."""
    schema, _, name = table.partition(".")
    query = sql.SQL("SELECT DISTINCT username FROM {} WHERE expires > localtimestamp").format(
        sql.Identifier(schema, name)
    )
    cur = await conn.execute(query)
    return {str(r[0]) for r in await cur.fetchall()}


async def silent_gateways(conn: Conn, gateways: set[str], timeout_s: float) -> set[str]:
    """Of these gateways, the ones with no heartbeat for timeout_s (or none at all)."""
    if not gateways:
        return set()
    cur = await conn.execute(
        "SELECT gateway FROM aicc.gateway_heartbeats WHERE gateway = ANY(%s) "
        "AND seen_at > now() - make_interval(secs => %s)",
        (sorted(gateways), timeout_s),
    )
    alive = {str(r[0]) for r in await cur.fetchall()}
    return gateways - alive


async def _executemany(conn: Conn, query: LiteralString, rows: Sequence[tuple[Any, ...]]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(query, rows)
