"""The routing policy (RoutingPolicy), versioned: every change adds a version, the highest is in force,
and a rollback adds a new version holding an old document. Uploads are JSON, or YAML text with
Content-Type application/yaml; a bad document is answered 422 naming each field."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

from aicc.appliance.acd.policy import RoutingPolicy
from aicc.appliance.api import audit
from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    ApiError,
    PoolDep,
    Principal,
    client_address,
    error_responses,
    not_found,
    require,
)
from aicc.appliance.api.routes import Strict, request_acd_reload
from aicc.appliance.documents import DocumentError, load_model, parse_text

router = APIRouter(tags=["routing policy"], responses=COMMON_ERRORS)

Comment = Annotated[str, Field(max_length=500)]
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
MAX_UPLOAD = 256 * 1024


class PolicyVersion(BaseModel):
    version: int = Field(description="0: no policy was ever set; the defaults are in force")
    document: RoutingPolicy
    comment: str
    created_by: str
    created_at: datetime | None


class Rollback(Strict):
    version: int = Field(ge=1, description="the version whose document becomes the new version")
    comment: Comment = ""


_SELECT = "SELECT version, document, comment, created_by, created_at FROM aicc.routing_policies "


async def current_policy(conn: AsyncConnection[DictRow]) -> PolicyVersion:
    row = await (await conn.execute(_SELECT + "ORDER BY version DESC LIMIT 1")).fetchone()
    if row is None:
        return PolicyVersion(
            version=0, document=RoutingPolicy(), comment="", created_by="default", created_at=None
        )
    return PolicyVersion(**row)


async def add_version(
    conn: AsyncConnection[DictRow], policy: RoutingPolicy, *, source: str, comment: str, created_by: str
) -> PolicyVersion:
    """Store `policy` as the next version. Concurrent writers queue on the table lock, so versions never
    collide."""
    await conn.execute("LOCK TABLE aicc.routing_policies IN SHARE ROW EXCLUSIVE MODE")
    row = await (
        await conn.execute(
            "INSERT INTO aicc.routing_policies (version, document, source, comment, created_by) "
            "SELECT coalesce(max(version), 0) + 1, %s, %s, %s, %s FROM aicc.routing_policies "
            "RETURNING version, document, comment, created_by, created_at",
            (Jsonb(policy.model_dump(mode="json")), source, comment, created_by),
        )
    ).fetchone()
    assert row is not None
    return PolicyVersion(**row)


@router.get("/api/routing-policy", response_model=PolicyVersion)
async def get_policy(
    principal: Annotated[Principal, Depends(require("config.read"))], pool: PoolDep
) -> PolicyVersion:
    """The policy in force."""
    async with pool.connection() as conn:
        return await current_policy(conn)


_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/RoutingPolicy"}},
            "application/yaml": {"schema": {"$ref": "#/components/schemas/RoutingPolicy"}},
        },
    }
}


@router.put(
    "/api/routing-policy",
    response_model=PolicyVersion,
    openapi_extra=_BODY,
    responses=error_responses(413, 415),
)
async def put_policy(
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
    comment: Annotated[str, Query(max_length=500, description="why (kept with the version)")] = "",
) -> PolicyVersion:
    """A new version from a JSON body, or YAML text (Content-Type: application/yaml)."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media != "application/json" and media not in _YAML_TYPES:
        raise ApiError(
            415, "unsupported_media_type", f"send application/json or application/yaml; found {media!r}"
        )
    raw = await request.body()
    if len(raw) > MAX_UPLOAD:
        raise ApiError(
            413, "too_large", f"the document has {len(raw)} bytes; at most {MAX_UPLOAD} are accepted"
        )
    where = "routing policy upload"
    try:
        text = raw.decode("utf-8")
        # YAML is a superset of JSON: one parser reads both, and errors name the line.
        policy = load_model(RoutingPolicy, parse_text(text, where), where)
    except UnicodeDecodeError as exc:
        raise ApiError(422, "invalid_document", f"{where}: not UTF-8 text ({exc.reason})") from None
    except DocumentError as exc:
        raise ApiError(422, "invalid_document", str(exc), problems=exc.problems) from None
    async with pool.connection() as conn:
        before = await current_policy(conn)
        after = await add_version(conn, policy, source=text, comment=comment, created_by=principal.username)
        await request_acd_reload(conn)
        await audit.record(
            conn,
            principal,
            "routing_policy.update",
            "routing_policy",
            after.version,
            before.document if before.version else None,
            after.document,
            client_address(request),
        )
    return after


@router.get("/api/routing-policy/versions", response_model=list[PolicyVersion])
async def list_versions(
    principal: Annotated[Principal, Depends(require("config.read"))], pool: PoolDep
) -> list[PolicyVersion]:
    """Every version, newest first."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(_SELECT + "ORDER BY version DESC")).fetchall()
    return [PolicyVersion(**r) for r in rows]


@router.post("/api/routing-policy/rollback", response_model=PolicyVersion, responses=error_responses(404))
async def rollback(
    body: Rollback,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> PolicyVersion:
    """Put an old version's document back in force, as a new version."""
    async with pool.connection() as conn:
        old = await (
            await conn.execute(
                "SELECT document, source FROM aicc.routing_policies WHERE version = %s", (body.version,)
            )
        ).fetchone()
        if old is None:
            raise not_found("routing policy version", body.version)
        before = await current_policy(conn)
        after = await add_version(
            conn,
            RoutingPolicy.model_validate(old["document"]),
            source=old["source"],
            comment=body.comment or f"rollback to version {body.version}",
            created_by=principal.username,
        )
        await request_acd_reload(conn)
        await audit.record(
            conn,
            principal,
            "routing_policy.rollback",
            "routing_policy",
            after.version,
            before.document,
            {"from_version": body.version, "document": after.document},
            client_address(request),
        )
    return after
