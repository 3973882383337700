"""Agents' routing profiles (AgentProfile: SIP extension, skills, languages, capacity), one per user who
takes contacts. Every change asks the ACD to reload, in the same transaction."""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

import psycopg
from fastapi import APIRouter, Depends, Request
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

from aicc.appliance.acd.policy import AgentProfile
from aicc.appliance.api import audit
from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    ApiError,
    PoolDep,
    Principal,
    client_address,
    conflict,
    error_responses,
    get_config,
    not_found,
    require,
)
from aicc.appliance.api.permissions import Role
from aicc.appliance.api.routes import request_acd_reload
from aicc.appliance.api.routes.skills import unknown_skills

router = APIRouter(tags=["agents"], responses=COMMON_ERRORS)


class AgentOut(BaseModel):
    user_id: int
    username: str
    display_name: str
    role: Role
    disabled: bool
    profile: AgentProfile


_SELECT = (
    # The extension column is the truth (unique, what Kamailio's accounts are named by).
    "SELECT u.id AS user_id, u.username, u.display_name, u.role, u.disabled, "
    "a.profile || jsonb_build_object('extension', a.extension) AS profile "
    "FROM aicc.agents a JOIN aicc.users u ON u.id = a.user_id "
)


async def _agent(conn: AsyncConnection[DictRow], user_id: int) -> AgentOut | None:
    row = await (await conn.execute(_SELECT + "WHERE u.id = %s", (user_id,))).fetchone()
    return AgentOut(**row) if row else None


async def profile_problems(
    conn: AsyncConnection[DictRow], user_id: int, profile: AgentProfile
) -> tuple[list[tuple[str, str]], str | None]:
    """(field problems, conflict message) of giving `user_id` this profile."""
    problems = [
        (f"skills.{s}", "not in the skill catalog (POST /api/skills to add it)")
        for s in await unknown_skills(conn, profile.skills)
    ]
    clash = None
    if profile.extension is not None:
        row = await (
            await conn.execute(
                "SELECT u.username FROM aicc.agents a JOIN aicc.users u ON u.id = a.user_id "
                "WHERE a.extension = %s AND a.user_id <> %s",
                (profile.extension, user_id),
            )
        ).fetchone()
        if row:
            clash = f"extension {profile.extension!r} belongs to agent {row['username']!r} already"
    return problems, clash


async def upsert_profile(conn: AsyncConnection[DictRow], user_id: int, profile: AgentProfile) -> None:
    await conn.execute(
        "INSERT INTO aicc.agents (user_id, extension, profile) VALUES (%s, %s, %s) "
        "ON CONFLICT (user_id) DO UPDATE SET extension = excluded.extension, profile = excluded.profile, "
        "updated_at = now()",
        (user_id, profile.extension, Jsonb(profile.model_dump(mode="json"))),
    )


@router.get("/api/agents", response_model=list[AgentOut])
async def list_agents(
    principal: Annotated[Principal, Depends(require("config.read"))], pool: PoolDep
) -> list[AgentOut]:
    """Users with a routing profile."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(_SELECT + "ORDER BY u.username")).fetchall()
    return [AgentOut(**r) for r in rows]


@router.get("/api/agents/{user_id}", response_model=AgentOut, responses=error_responses(404))
async def get_agent(
    user_id: int, principal: Annotated[Principal, Depends(require("config.read"))], pool: PoolDep
) -> AgentOut:
    async with pool.connection() as conn:
        agent = await _agent(conn, user_id)
    if agent is None:
        raise not_found("agent profile for user", user_id)
    return agent


@router.put("/api/agents/{user_id}", response_model=AgentOut, responses=error_responses(404, 409))
async def put_agent(
    user_id: int,
    body: AgentProfile,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> AgentOut:
    """Give a user a routing profile, or replace it."""
    async with pool.connection() as conn:
        user = await (
            await conn.execute("SELECT role FROM aicc.users WHERE id = %s FOR UPDATE", (user_id,))
        ).fetchone()
        if user is None:
            raise not_found("user", user_id)
        if user["role"] == "auditor":
            raise conflict("auditors do not take contacts; give the profile to an agent or supervisor")
        problems, clash = await profile_problems(conn, user_id, body)
        if problems:
            raise ApiError(422, "invalid_reference", "the profile names unknown skills", problems=problems)
        if clash:
            raise conflict(clash)
        before = await _agent(conn, user_id)
        await upsert_profile(conn, user_id, body)
        after = await _agent(conn, user_id)
        assert after is not None
        await request_acd_reload(conn)
        await audit.record(
            conn,
            principal,
            "agent.update",
            "agent",
            user_id,
            before.profile if before else None,
            after.profile,
            client_address(request),
        )
    return after


class SipCredentials(BaseModel):
    extension: str
    domain: str = Field(description="the SIP domain and digest realm the phone registers in")
    password: str = Field(description="shown once: only digests are stored (Kamailio's subscriber table)")


@router.post(
    "/api/agents/{user_id}/sip-credentials",
    response_model=SipCredentials,
    status_code=201,
    responses=error_responses(404, 409, 503),
)
async def new_sip_credentials(
    user_id: int,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> SipCredentials:
    """A new SIP password for the agent's extension (any SIP phone registers with it), shown once;
    the one before stops working. Kamailio stores only the HA1 digests."""
    config = get_config(request)
    async with pool.connection() as conn:
        agent = await _agent(conn, user_id)
        if agent is None:
            raise not_found("agent", user_id)
        extension = agent.profile.extension
        if not extension:
            raise conflict(f"agent {agent.username!r} has no extension; PUT /api/agents/{user_id} sets one")
        password = secrets.token_urlsafe(18)
        domain = config.sip_domain
        # HA1 digests, as Kamailio's auth_db reads them (RFC 2617 MD5: what SIP digest uses).
        ha1 = hashlib.md5(f"{extension}:{domain}:{password}".encode()).hexdigest()  # noqa: S324
        ha1b = hashlib.md5(f"{extension}@{domain}:{domain}:{password}".encode()).hexdigest()  # noqa: S324
        try:
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (username, domain, ha1, ha1b) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (username, domain) DO UPDATE SET ha1 = EXCLUDED.ha1, ha1b = EXCLUDED.ha1b"
                ).format(sql.Identifier(config.sip_schema, "subscriber")),
                (extension, domain, ha1, ha1b),
            )
        except psycopg.errors.UndefinedTable:
            raise ApiError(
                503,
                "sip_unavailable",
                f"Kamailio's table {config.sip_schema}.subscriber is not in the database: install the "
                "site's [sip_proxy] hosts (their role creates it), or correct sip_schema in app.yml",
            ) from None
        await audit.record(
            conn,
            principal,
            "agent.sip_credentials",
            "agent",
            str(user_id),
            None,
            {"extension": extension, "domain": domain},
            client_address(request),
        )
    return SipCredentials(extension=extension, domain=domain, password=password)
