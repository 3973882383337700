"""The site's starting configuration from a seed document (YAML), applied once per site by the
installer: what is missing is created, nothing existing is changed, so running it again (or after
admins edited things) does nothing. Every creation is audited (actor "installer").

Sections, applied in this order (another component adds its own to SECTIONS, e.g. flows after queues):

    skills:          [orders, {name: cards, description: Card services}]   (or {name: description})
    dispositions:    [{code: resolved, label: {en: Resolved, zh: 已解决}}, wrong_number]
                     (or {code: label}; a label is a {en, zh} mapping or one text for both)
    routing_policy:  a RoutingPolicy mapping; used only when the site has no policy yet
    queues:          [QueueConfig mapping, ...]   (or {name: QueueConfig without name})
    users:           [{username, display_name, role, language, agent: AgentProfile}, ...]
                     (or {username: {...}}); created without a password: no login until an admin
                     sets one. An existing user without a routing profile gets the agent part.
    calendars, flows, numbers: the IVR's (appliance/ivr/seed.py).
    kb:              [shop, bank]   shipped knowledge-base article sets (appliance/kb/seed/NAME.yml),
                     published; an article the site has (same translation group and language) is kept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import BaseModel, ConfigDict, Field

from aicc.appliance.acd.policy import AgentProfile, QueueConfig, RoutingPolicy
from aicc.appliance.api import audit
from aicc.appliance.api.permissions import Role
from aicc.appliance.api.routes import request_acd_reload
from aicc.appliance.api.routes.agents import profile_problems, upsert_profile
from aicc.appliance.api.routes.dispositions import DispositionCreate, insert_disposition
from aicc.appliance.api.routes.queues import insert_queue, queue_problems
from aicc.appliance.api.routes.routing_policy import add_version, current_policy
from aicc.appliance.api.routes.skills import SkillCreate, insert_skill
from aicc.appliance.api.routes.users import Language, Username, insert_user
from aicc.appliance.documents import DocumentError, load_model
from aicc.appliance.ivr import seed as ivr_seed


@dataclass
class SeedContext:
    actor: str
    where: str  # the seed file, for error messages
    acd_changed: bool = False  # a section created something the ACD routes with


SectionFn = Callable[[AsyncConnection[DictRow], Any, SeedContext], Awaitable[list[str]]]


class SeedUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username
    display_name: str = Field("", max_length=200)
    role: Role = "agent"
    language: Language = "zh"
    agent: AgentProfile | None = None


def _entries(data: Any, section: str, where: str) -> list[tuple[str, str | None, Any]]:
    """A section's entries as (field path, key, value): a list gives (path, None, item), a mapping
    gives (path, key, value)."""
    if isinstance(data, list):
        return [(f"{section}[{i}]", None, item) for i, item in enumerate(data)]
    if isinstance(data, dict):
        return [(f"{section}.{key}", str(key), value) for key, value in data.items()]
    raise DocumentError(where, [(section, f"expected a list or a mapping; found {type(data).__name__}")])


def _item(key_field: str, key: str | None, value: Any) -> Any:
    """A mapping entry (key -> fields) as one item holding its key; a list item as it is."""
    if key is None:
        return value
    if value is None:
        return {key_field: key}
    if isinstance(value, dict):
        return {key_field: key, **value}
    return value  # validation says what is wrong with it


def _model(model: type[Any], item: Any, where: str, field: str) -> Any:
    try:
        return load_model(model, item, where)
    except DocumentError as exc:
        raise DocumentError(where, [(f"{field}.{f}" if f else field, m) for f, m in exc.problems]) from None


async def _skills(conn: AsyncConnection[DictRow], data: Any, ctx: SeedContext) -> list[str]:
    created = []
    for field, key, value in _entries(data, "skills", ctx.where):
        if isinstance(value, str):
            item: Any = {"name": value} if key is None else {"name": key, "description": value}
        else:
            item = _item("name", key, value)
        skill: SkillCreate = _model(SkillCreate, item, ctx.where, field)
        if await insert_skill(conn, skill):
            await audit.record(conn, ctx.actor, "skill.create", "skill", skill.name, None, skill)
            created.append(f"skill {skill.name}")
    return created


async def _dispositions(conn: AsyncConnection[DictRow], data: Any, ctx: SeedContext) -> list[str]:
    created = []
    for field, key, value in _entries(data, "dispositions", ctx.where):
        if isinstance(value, str):
            item: Any = {"code": value} if key is None else {"code": key, "label": value}
        elif key is not None and isinstance(value, dict) and value and set(value) <= {"en", "zh"}:
            item = {"code": key, "label": value}  # code: {en: ..., zh: ...}
        else:
            item = _item("code", key, value)
        if isinstance(item, dict) and isinstance(item.get("label"), str):
            item = {**item, "label": {"en": item["label"], "zh": item["label"]}}
        disposition: DispositionCreate = _model(DispositionCreate, item, ctx.where, field)
        if await insert_disposition(conn, disposition):
            await audit.record(
                conn, ctx.actor, "disposition.create", "disposition", disposition.code, None, disposition
            )
            created.append(f"disposition {disposition.code}")
    return created


async def _routing_policy(conn: AsyncConnection[DictRow], data: Any, ctx: SeedContext) -> list[str]:
    policy: RoutingPolicy = _model(RoutingPolicy, data, ctx.where, "routing_policy")
    if (await current_policy(conn)).version:
        return []
    version = await add_version(conn, policy, source="seed", comment="seed", created_by=ctx.actor)
    await audit.record(
        conn, ctx.actor, "routing_policy.update", "routing_policy", version.version, None, version.document
    )
    ctx.acd_changed = True
    return [f"routing_policy version {version.version}"]


async def _queues(conn: AsyncConnection[DictRow], data: Any, ctx: SeedContext) -> list[str]:
    created: list[tuple[str, QueueConfig]] = []
    for field, key, value in _entries(data, "queues", ctx.where):
        queue: QueueConfig = _model(QueueConfig, _item("name", key, value), ctx.where, field)
        if await insert_queue(conn, queue):
            created.append((field, queue))
    # References are checked once all are in: queues of one seed may overflow into each other.
    problems = [(f"{field}.{f}", m) for field, queue in created for f, m in await queue_problems(conn, queue)]
    if problems:
        raise DocumentError(ctx.where, problems)
    for _, queue in created:
        await audit.record(conn, ctx.actor, "queue.create", "queue", queue.name, None, queue)
    ctx.acd_changed |= bool(created)
    return [f"queue {queue.name}" for _, queue in created]


async def _users(conn: AsyncConnection[DictRow], data: Any, ctx: SeedContext) -> list[str]:
    created = []
    for field, key, value in _entries(data, "users", ctx.where):
        user: SeedUser = _model(SeedUser, _item("username", key, value), ctx.where, field)
        row = await insert_user(
            conn,
            username=user.username,
            display_name=user.display_name,
            role=user.role,
            language=user.language,
            password_hash=None,
        )
        if row is not None:
            await audit.record(
                conn, ctx.actor, "user.create", "user", row.id, None, row.model_dump(mode="json")
            )
            created.append(f"user {user.username}")
            user_id = row.id
        else:
            found = await (
                await conn.execute("SELECT id FROM aicc.users WHERE username = %s", (user.username,))
            ).fetchone()
            assert found is not None
            user_id = found["id"]
        if user.agent is None or await _has_profile(conn, user_id):
            continue
        problems, clash = await profile_problems(conn, user_id, user.agent)
        if clash:
            problems.append(("extension", clash))
        if problems:
            raise DocumentError(ctx.where, [(f"{field}.agent.{f}", m) for f, m in problems])
        await upsert_profile(conn, user_id, user.agent)
        await audit.record(conn, ctx.actor, "agent.update", "agent", user_id, None, user.agent)
        created.append(f"agent {user.username}")
        ctx.acd_changed = True
    return created


async def _has_profile(conn: AsyncConnection[DictRow], user_id: int) -> bool:
    row = await (
        await conn.execute("SELECT 1 AS x FROM aicc.agents WHERE user_id = %s", (user_id,))
    ).fetchone()
    return row is not None


async def _calendars(conn: AsyncConnection[DictRow], data: Any, ctx: SeedContext) -> list[str]:
    return await ivr_seed.seed_calendars(conn, data, ctx.actor, ctx.where)


async def _flows(conn: AsyncConnection[DictRow], data: Any, ctx: SeedContext) -> list[str]:
    return await ivr_seed.seed_flows(conn, data, ctx.actor, ctx.where)


async def _numbers(conn: AsyncConnection[DictRow], data: Any, ctx: SeedContext) -> list[str]:
    return await ivr_seed.seed_numbers(conn, data, ctx.actor, ctx.where)


async def _kb(conn: AsyncConnection[DictRow], data: Any, ctx: SeedContext) -> list[str]:
    from aicc.appliance.kb import store as kb_store

    if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
        raise DocumentError(ctx.where, [("kb", f"expected a list of article set names; found {data!r}")])
    return await kb_store.seed_sets(conn, data, ctx.actor, ctx.where)


SECTIONS: list[tuple[str, SectionFn]] = [
    ("skills", _skills),
    ("dispositions", _dispositions),
    ("routing_policy", _routing_policy),
    ("queues", _queues),
    ("users", _users),
    # Flows route to queues and read calendars: after both.
    ("calendars", _calendars),
    ("flows", _flows),
    ("numbers", _numbers),
    # The shipped article sets (appliance/kb/seed/NAME.yml) by name: the demo shop's and bank's FAQ.
    ("kb", _kb),
]


async def seed(
    conn: AsyncConnection[DictRow],
    document: Mapping[str, Any],
    actor: str = "installer",
    *,
    where: str = "seed",
) -> list[str]:
    """Create what `document` names and the database lacks, in one transaction; returns what was
    created ("queue support-en", ...), empty when there was nothing to do. A bad document raises
    DocumentError (naming the section and field) with nothing changed."""
    if not isinstance(document, Mapping):
        raise DocumentError(where, [("", f"expected a mapping of sections; found {type(document).__name__}")])
    known = [name for name, _ in SECTIONS]
    unknown = [str(k) for k in document if k not in known]
    if unknown:
        raise DocumentError(where, [(k, f"not a known section; known: {', '.join(known)}") for k in unknown])
    ctx = SeedContext(actor=actor, where=where)
    created: list[str] = []
    async with conn.transaction():
        for name, apply in SECTIONS:
            if document.get(name) is not None:
                created += await apply(conn, document[name], ctx)
        if ctx.acd_changed:
            await request_acd_reload(conn, source=actor)
    return created
