"""Tickets in PostgreSQL (async psycopg 3): the ticket rows, their append-only events and the SLA
policies. Every change writes its event in the caller's transaction, beside the row it changes, so
the row (for lists) and the history (for SLA figures) never disagree about what happened."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, LiteralString

from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from aicc.appliance.connectors.phone import e164
from aicc.appliance.tickets.sla import Event, SlaPolicy

COLUMNS: LiteralString = (
    'id, number, subject, description, type, priority, status, "group", assignee, customer, language, '
    "source, call_id, contact_id::text AS contact_id, conversation_id::text AS conversation_id, sla_policy, "
    "created_by, created_at, updated_at, purged_at"  # purged_at: appliance/retention/purge.py
)
# Fields PATCH may change, and the event each change writes.
CHANGE_EVENTS: dict[str, str] = {
    "status": "status_changed",
    "priority": "priority_changed",
    "assignee": "assigned",
    "group": "group_changed",
}


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    assignee: int | None = None
    group: str | None = None
    priority: str | None = None
    customer_phone: str | None = None
    unassigned: bool = False
    conversation_id: str | None = None


async def get_policy(conn: AsyncConnection[DictRow], name: str) -> SlaPolicy | None:
    row = await (
        await conn.execute(
            "SELECT name, description, targets, warn_at_percent, calendar, escalations "
            "FROM aicc.sla_policies WHERE name = %s",
            (name,),
        )
    ).fetchone()
    return SlaPolicy.model_validate(row) if row else None


async def list_policies(conn: AsyncConnection[DictRow]) -> list[SlaPolicy]:
    rows = await (
        await conn.execute(
            "SELECT name, description, targets, warn_at_percent, calendar, escalations "
            "FROM aicc.sla_policies ORDER BY name"
        )
    ).fetchall()
    return [SlaPolicy.model_validate(r) for r in rows]


async def put_policy(conn: AsyncConnection[DictRow], policy: SlaPolicy) -> None:
    doc = policy.model_dump(mode="json", by_alias=True)
    await conn.execute(
        "INSERT INTO aicc.sla_policies (name, description, targets, warn_at_percent, calendar, "
        "escalations) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
        "description = EXCLUDED.description, "
        "targets = EXCLUDED.targets, warn_at_percent = EXCLUDED.warn_at_percent, "
        "calendar = EXCLUDED.calendar, escalations = EXCLUDED.escalations, updated_at = now()",
        (
            policy.name,
            policy.description,
            Jsonb(doc["targets"]),
            policy.warn_at_percent,
            Jsonb(doc["calendar"]),
            Jsonb(doc["escalations"]),
        ),
    )


async def user_exists(conn: AsyncConnection[DictRow], user_id: int) -> bool:
    """An assignee must be an enabled user who works tickets (not an auditor)."""
    row = await (
        await conn.execute(
            "SELECT 1 FROM aicc.users WHERE id = %s AND NOT disabled AND role <> 'auditor'", (user_id,)
        )
    ).fetchone()
    return row is not None


async def append_event(
    conn: AsyncConnection[DictRow],
    ticket_id: int,
    kind: str,
    data: dict[str, Any],
    actor_id: int | None,
    actor: str,
    at: dt.datetime,
) -> dict[str, Any]:
    row = await (
        await conn.execute(
            "INSERT INTO aicc.ticket_events (ticket_id, at, kind, actor_id, actor, data) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id, at, kind, actor_id, actor, data",
            (ticket_id, at, kind, actor_id, actor, Jsonb(data)),
        )
    ).fetchone()
    assert row is not None
    return dict(row)


async def create(
    conn: AsyncConnection[DictRow],
    fields: dict[str, Any],
    actor_id: int | None,
    actor: str,
    at: dt.datetime,
) -> dict[str, Any]:
    """A new ticket and its created event; returns the row."""
    row = await (
        await conn.execute(
            'INSERT INTO aicc.tickets (subject, description, type, priority, status, "group", '  # noqa: S608
            "assignee, customer, language, source, call_id, contact_id, conversation_id, sla_policy, "
            "created_by, created_at, updated_at) VALUES (%(subject)s, %(description)s, %(type)s, "
            "%(priority)s, 'new', %(group)s, %(assignee)s, %(customer)s, %(language)s, %(source)s, "
            "%(call_id)s, %(contact_id)s, %(conversation_id)s, %(sla_policy)s, %(created_by)s, %(at)s, "
            "%(at)s) RETURNING " + COLUMNS,  # constant columns
            {
                "conversation_id": None,
                **fields,
                "customer": Jsonb(fields["customer"]),
                "created_by": actor,
                "at": at,
            },
        )
    ).fetchone()
    assert row is not None
    created = {
        k: fields.get(k)
        for k in (
            "priority",
            "type",
            "group",
            "assignee",
            "source",
            "call_id",
            "contact_id",
            "conversation_id",
            "sla_policy",
        )
    }
    await append_event(
        conn,
        int(row["id"]),
        "created",
        {"status": "new", **created, "contact_id": row["contact_id"]},
        actor_id,
        actor,
        at,
    )
    return dict(row)


async def caller_of(conn: AsyncConnection[DictRow], call_id: str | None, contact_id: str | None) -> str:
    """The number that called: from the call record, else the ACD contact still queued or connected
    ("" when neither is known)."""
    if call_id is not None:
        row = await (
            await conn.execute("SELECT caller FROM aicc.calls WHERE call_id = %s", (call_id,))
        ).fetchone()
        if row is not None:
            return str(row["caller"])
    if contact_id is not None:
        row = await (
            await conn.execute(
                "SELECT contact ->> 'caller' AS caller FROM aicc.acd_contacts WHERE id = %s", (contact_id,)
            )
        ).fetchone()
        if row is not None and row["caller"]:
            return str(row["caller"])
    return ""


async def get(conn: AsyncConnection[DictRow], number: str, *, lock: bool = False) -> dict[str, Any] | None:
    # A constant column list and a constant lock clause: no input reaches the text.
    query = "SELECT " + COLUMNS + " FROM aicc.tickets WHERE number = %s" + (" FOR UPDATE" if lock else "")  # noqa: S608
    row = await (await conn.execute(query, (number,))).fetchone()
    return dict(row) if row else None


async def change(
    conn: AsyncConnection[DictRow],
    ticket: dict[str, Any],
    changes: dict[str, Any],
    actor_id: int | None,
    actor: str,
    at: dt.datetime,
) -> dict[str, Any]:
    """Apply field changes (status, priority, assignee, group), one event each; returns the new row."""
    changed = {k: v for k, v in changes.items() if ticket[k] != v}
    if not changed:
        return ticket
    for key, value in changed.items():
        await append_event(
            conn, ticket["id"], CHANGE_EVENTS[key], {"from": ticket[key], "to": value}, actor_id, actor, at
        )
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in changed
    )
    row = await (
        await conn.execute(
            sql.SQL("UPDATE aicc.tickets SET {}, updated_at = %(at)s WHERE id = %(id)s RETURNING {}").format(
                assignments, sql.SQL(COLUMNS)
            ),
            {**changed, "at": at, "id": ticket["id"]},
        )
    ).fetchone()
    assert row is not None
    return dict(row)


async def touch(conn: AsyncConnection[DictRow], ticket_id: int, at: dt.datetime) -> None:
    await conn.execute("UPDATE aicc.tickets SET updated_at = %s WHERE id = %s", (at, ticket_id))


async def events(conn: AsyncConnection[DictRow], ticket_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Every event of the tickets, oldest first, by ticket id."""
    rows = await (
        await conn.execute(
            "SELECT id, ticket_id, at, kind, actor_id, actor, data FROM aicc.ticket_events "
            "WHERE ticket_id = ANY(%s) ORDER BY ticket_id, at, id",
            (ticket_ids,),
        )
    ).fetchall()
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in ticket_ids}
    for r in rows:
        out[int(r["ticket_id"])].append(dict(r))
    return out


def sla_events(rows: list[dict[str, Any]]) -> list[Event]:
    return [Event(at=r["at"], kind=str(r["kind"]), data=dict(r["data"])) for r in rows]


async def listing(
    conn: AsyncConnection[DictRow], filters: Filters, limit: int | None, offset: int
) -> list[dict[str, Any]]:
    """Tickets matching `filters`, newest first; `limit` None: all of them."""
    where: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    for key, column in (
        ("status", "status"),
        ("assignee", "assignee"),
        ("group", "group"),
        ("priority", "priority"),
    ):
        value = getattr(filters, key)
        if value is not None:
            where.append(sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(key)))
            params[key] = value
    if filters.unassigned:
        where.append(sql.SQL("assignee IS NULL"))
    if filters.conversation_id is not None:
        where.append(sql.SQL("conversation_id = %(conversation_id)s"))
        params["conversation_id"] = filters.conversation_id
    if filters.customer_phone is not None:
        # As typed (13800138000) or as the bot and calls keep it (+8613800138000): the same customer.
        where.append(sql.SQL("customer ->> 'phone' = ANY(%(phones)s)"))
        params["phones"] = list(
            {filters.customer_phone, e164(filters.customer_phone) or filters.customer_phone}
        )
    query = sql.SQL(
        "SELECT {} FROM aicc.tickets WHERE {} ORDER BY created_at DESC, id DESC "
        "LIMIT %(limit)s OFFSET %(offset)s"
    ).format(sql.SQL(COLUMNS), sql.SQL(" AND ").join(where))
    rows = await (await conn.execute(query, params)).fetchall()
    return [dict(r) for r in rows]


# SLA escalations (appliance/tickets/escalation.py): the tickets whose clocks run, who hears of them, and
# the notifications they get.

# The statuses in which SLA clocks run and escalations happen (pending waits on the customer).
RUNNING: tuple[str, ...] = ("new", "open")


async def open_counts(conn: AsyncConnection[DictRow]) -> dict[str, int]:
    """Tickets neither resolved nor closed, by priority."""
    rows = await (
        await conn.execute(
            "SELECT priority, count(*) AS n FROM aicc.tickets WHERE status NOT IN ('resolved', 'closed') "
            "GROUP BY priority"
        )
    ).fetchall()
    return {str(r["priority"]): int(r["n"]) for r in rows}


async def running_tickets(conn: AsyncConnection[DictRow]) -> list[dict[str, Any]]:
    rows = await (
        await conn.execute(
            "SELECT " + COLUMNS + " FROM aicc.tickets WHERE status = ANY(%s) ORDER BY id",  # noqa: S608
            (list(RUNNING),),
        )
    ).fetchall()
    return [dict(r) for r in rows]


async def group_members(conn: AsyncConnection[DictRow], group: str) -> list[int]:
    """The group's enabled members (auditors work no tickets)."""
    rows = await (
        await conn.execute(
            "SELECT u.id FROM aicc.ticket_group_members m JOIN aicc.users u ON u.id = m.user_id "
            """WHERE m."group" = %s AND NOT u.disabled AND u.role <> 'auditor' ORDER BY u.id""",
            (group,),
        )
    ).fetchall()
    return [int(r["id"]) for r in rows]


async def supervisors(conn: AsyncConnection[DictRow], group: str) -> list[int]:
    """The group's enabled supervisors; every enabled supervisor when the group has none."""
    rows = await (
        await conn.execute(
            "SELECT u.id FROM aicc.users u WHERE u.role = 'supervisor' AND NOT u.disabled AND "
            'EXISTS (SELECT 1 FROM aicc.ticket_group_members m WHERE m.user_id = u.id AND m."group" = %s) '
            "ORDER BY u.id",
            (group,),
        )
    ).fetchall()
    if not rows:
        rows = await (
            await conn.execute(
                "SELECT id FROM aicc.users WHERE role = 'supervisor' AND NOT disabled ORDER BY id"
            )
        ).fetchall()
    return [int(r["id"]) for r in rows]


async def ticket_groups(conn: AsyncConnection[DictRow]) -> dict[str, list[int]]:
    rows = await (
        await conn.execute(
            'SELECT "group", array_agg(user_id ORDER BY user_id) AS members FROM aicc.ticket_group_members '
            'GROUP BY "group" ORDER BY "group"'
        )
    ).fetchall()
    return {str(r["group"]): [int(u) for u in r["members"]] for r in rows}


async def set_group_members(conn: AsyncConnection[DictRow], group: str, user_ids: list[int]) -> list[int]:
    """Replace the group's members; returns the members before."""
    before = (await ticket_groups(conn)).get(group, [])
    await conn.execute('DELETE FROM aicc.ticket_group_members WHERE "group" = %s', (group,))
    for user_id in sorted(set(user_ids)):
        await conn.execute(
            'INSERT INTO aicc.ticket_group_members ("group", user_id) VALUES (%s, %s)', (group, user_id)
        )
    return before


NOTIFICATION_COLUMNS: LiteralString = "id, kind, ticket, data, created_at, read_at"


async def notify(
    conn: AsyncConnection[DictRow],
    user_ids: list[int],
    kind: str,
    ticket: str,
    data: dict[str, Any],
    at: dt.datetime,
) -> None:
    for user_id in user_ids:
        await conn.execute(
            "INSERT INTO aicc.notifications (user_id, kind, ticket, data, created_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            (user_id, kind, ticket, Jsonb(data), at),
        )


async def notifications(
    conn: AsyncConnection[DictRow], user_id: int, *, unread: bool, limit: int
) -> list[dict[str, Any]]:
    """A user's notifications, unread first, newest first."""
    rows = await (
        await conn.execute(
            "SELECT " + NOTIFICATION_COLUMNS + " FROM aicc.notifications WHERE user_id = %s "  # noqa: S608
            "AND (NOT %s OR read_at IS NULL) ORDER BY read_at IS NOT NULL, created_at DESC, id DESC LIMIT %s",
            (user_id, unread, limit),
        )
    ).fetchall()
    return [dict(r) for r in rows]


async def mark_read(
    conn: AsyncConnection[DictRow], user_id: int, notification_id: int, at: dt.datetime
) -> dict[str, Any] | None:
    """Mark one of the user's notifications read (the first reading counts); None: not theirs."""
    row = await (
        await conn.execute(
            "UPDATE aicc.notifications SET read_at = coalesce(read_at, %s) WHERE id = %s "  # noqa: S608
            "AND user_id = %s RETURNING " + NOTIFICATION_COLUMNS,  # constant columns
            (at, notification_id, user_id),
        )
    ).fetchone()
    return dict(row) if row else None
