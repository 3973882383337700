"""The skill catalog: names queues require and agents' profiles grant (with a proficiency 1-5).

Queues and profiles may only name skills in the catalog, and a skill still named by one cannot be
deleted: a typo in a skill name would otherwise route nobody.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import BaseModel, Field

from aicc.appliance.acd.policy import AgentProfile, QueueConfig, SkillName
from aicc.appliance.api import audit
from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    PoolDep,
    Principal,
    client_address,
    conflict,
    error_responses,
    not_found,
    require,
)
from aicc.appliance.api.routes import Strict

router = APIRouter(tags=["skills"], responses=COMMON_ERRORS)
Description = Annotated[str, Field(max_length=500)]


class Skill(BaseModel):
    name: SkillName
    description: Description = ""


class SkillCreate(Strict):
    name: SkillName
    description: Description = ""


class SkillUpdate(Strict):
    description: Description


async def unknown_skills(conn: AsyncConnection[DictRow], names: Iterable[str]) -> list[str]:
    """The names among `names` that the catalog does not hold, sorted."""
    wanted = sorted(set(names))
    if not wanted:
        return []
    rows = await (
        await conn.execute("SELECT name FROM aicc.skills WHERE name = ANY(%s)", (wanted,))
    ).fetchall()
    known = {r["name"] for r in rows}
    return [n for n in wanted if n not in known]


async def skill_users(conn: AsyncConnection[DictRow], skill: str) -> list[str]:
    """Queues (their skills or an overflow step's) and agents whose profile name `skill`."""
    users = []
    for row in await (await conn.execute("SELECT name, config FROM aicc.queues ORDER BY name")).fetchall():
        q = QueueConfig.model_validate(row["config"])
        if skill in q.skills or any(skill in (s.skills or {}) for s in q.overflow):
            users.append(f"queue {q.name}")
    rows = await (
        await conn.execute(
            "SELECT u.username, a.profile FROM aicc.agents a JOIN aicc.users u ON u.id = a.user_id "
            "ORDER BY u.username"
        )
    ).fetchall()
    users += [
        f"agent {r['username']}" for r in rows if skill in AgentProfile.model_validate(r["profile"]).skills
    ]
    return users


async def _get(conn: AsyncConnection[DictRow], name: str) -> Skill | None:
    row = await (
        await conn.execute("SELECT name, description FROM aicc.skills WHERE name = %s FOR UPDATE", (name,))
    ).fetchone()
    return Skill(**row) if row else None


async def insert_skill(conn: AsyncConnection[DictRow], skill: SkillCreate) -> bool:
    """Add a skill; False when it exists already."""
    cur = await conn.execute(
        "INSERT INTO aicc.skills (name, description) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
        (skill.name, skill.description),
    )
    return cur.rowcount == 1


@router.get("/api/skills", response_model=list[Skill])
async def list_skills(
    principal: Annotated[Principal, Depends(require("config.read"))], pool: PoolDep
) -> list[Skill]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT name, description FROM aicc.skills ORDER BY name")
        ).fetchall()
    return [Skill(**r) for r in rows]


@router.post("/api/skills", response_model=Skill, status_code=201, responses=error_responses(409))
async def create_skill(
    body: SkillCreate,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> Skill:
    async with pool.connection() as conn:
        if not await insert_skill(conn, body):
            raise conflict(f"skill {body.name!r} exists already")
        await audit.record(
            conn, principal, "skill.create", "skill", body.name, None, body, client_address(request)
        )
    return Skill(**body.model_dump())


@router.put("/api/skills/{name}", response_model=Skill, responses=error_responses(404))
async def update_skill(
    name: str,
    body: SkillUpdate,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> Skill:
    async with pool.connection() as conn:
        before = await _get(conn, name)
        if before is None:
            raise not_found("skill", name)
        await conn.execute(
            "UPDATE aicc.skills SET description = %s WHERE name = %s", (body.description, name)
        )
        after = Skill(name=before.name, description=body.description)
        await audit.record(
            conn, principal, "skill.update", "skill", name, before, after, client_address(request)
        )
    return after


@router.delete("/api/skills/{name}", status_code=204, responses=error_responses(404, 409))
async def delete_skill(
    name: str,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> Response:
    """Remove a skill no queue and no agent's profile names."""
    async with pool.connection() as conn:
        before = await _get(conn, name)
        if before is None:
            raise not_found("skill", name)
        users = await skill_users(conn, name)
        if users:
            raise conflict(f"skill {name!r} is still used by {', '.join(users)}; remove it there first")
        await conn.execute("DELETE FROM aicc.skills WHERE name = %s", (name,))
        await audit.record(
            conn, principal, "skill.delete", "skill", name, before, None, client_address(request)
        )
    return Response(status_code=204)
