"""The seed's IVR sections (appliance/api/seed.py applies them after queues): flows, the numbers that
select them, and site calendars. Created when missing, never overwritten; audited.

    calendars: [always, cn-office]      names of shipped calendars (checked), or calendar documents
    flows:     [retail-en, bank-card]   names of shipped flows, or {name, source: YAML text}
    numbers:   {"4000": retail-en}      number -> flow
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from aicc.appliance.api import audit
from aicc.appliance.documents import DocumentError, load_model
from aicc.appliance.ivr import store
from aicc.appliance.ivr.calendar import Calendar, load_calendars
from aicc.appliance.ivr.flow import shipped_flows


def _listed(data: Any, section: str, where: str) -> list[tuple[str, Any]]:
    if isinstance(data, list):
        return [(f"{section}[{i}]", item) for i, item in enumerate(data)]
    raise DocumentError(where, [(section, f"expected a list; found {type(data).__name__}")])


async def seed_calendars(conn: AsyncConnection[DictRow], data: Any, actor: str, where: str) -> list[str]:
    created = []
    shipped = load_calendars()
    for field, item in _listed(data, "calendars", where):
        if isinstance(item, str):
            if item not in shipped:
                raise DocumentError(where, [(field, f"no shipped calendar {item!r} ({', '.join(shipped)})")])
            continue  # shipped calendars are always there
        try:
            calendar = load_model(Calendar, item, where)
        except DocumentError as exc:
            raise DocumentError(
                where, [(f"{field}.{f}" if f else field, m) for f, m in exc.problems]
            ) from None
        cur = await conn.execute(
            "INSERT INTO aicc.calendars (name, document) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            (calendar.name, Jsonb(calendar.model_dump(mode="json"))),
        )
        if cur.rowcount:
            await audit.record(conn, actor, "calendar.create", "calendar", calendar.name, None, calendar)
            created.append(f"calendar {calendar.name}")
    return created


async def seed_flows(conn: AsyncConnection[DictRow], data: Any, actor: str, where: str) -> list[str]:
    created = []
    shipped = shipped_flows()
    for field, item in _listed(data, "flows", where):
        if isinstance(item, str):
            if item not in shipped:
                raise DocumentError(
                    where, [(field, f"no shipped flow {item!r} ({', '.join(sorted(shipped))})")]
                )
            name, source = item, shipped[item].read_text(encoding="utf-8")
        elif (
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("source"), str)
        ):
            name, source = item["name"], item["source"]
        else:
            raise DocumentError(where, [(field, "expected a shipped flow's name or {name, source}")])
        exists = await (
            await conn.execute("SELECT 1 FROM aicc.ivr_flows WHERE name = %s", (name,))
        ).fetchone()
        if exists:
            continue
        try:
            flow, version = await store.save_flow(conn, source, by=actor, comment="seed")
        except DocumentError as exc:
            raise DocumentError(
                where, [(f"{field}.{f}" if f else field, m) for f, m in exc.problems]
            ) from None
        if flow.name != name:
            raise DocumentError(where, [(field, f"the flow's document names {flow.name!r}, not {name!r}")])
        await audit.record(
            conn, actor, "flow.upload", "flow", name, None, {"version": version, "active": True}
        )
        created.append(f"flow {name}")
    return created


async def seed_numbers(conn: AsyncConnection[DictRow], data: Any, actor: str, where: str) -> list[str]:
    if not isinstance(data, dict):
        raise DocumentError(
            where, [("numbers", f"expected a mapping number -> flow; found {type(data).__name__}")]
        )
    active = set(await store.active_flows(conn))
    created = []
    for number, flow in data.items():
        field = f"numbers.{number}"
        if not str(number).lstrip("+").isdigit() or len(str(number)) > 21:
            raise DocumentError(where, [(field, "a service number is digits, optionally with a leading +")])
        if flow not in active:
            raise DocumentError(
                where, [(field, f"no flow {flow!r} in force ({', '.join(sorted(active)) or 'none'})")]
            )
        cur = await conn.execute(
            "INSERT INTO aicc.service_numbers (number, flow) VALUES (%s, %s) ON CONFLICT (number) DO NOTHING",
            (str(number), flow),
        )
        if cur.rowcount:
            await audit.record(conn, actor, "number.route", "number", str(number), None, {"flow": flow})
            created.append(f"number {number} -> {flow}")
    if created:
        await conn.execute("SELECT pg_notify(%s, 'seed')", (store.CHANNEL,))
    return created
