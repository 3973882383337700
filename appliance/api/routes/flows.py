"""IVR flows with version history and rollback, the service numbers that select them, and the
business calendars their hours nodes read. Every change is audited and tells the voice gateways
(NOTIFY ivr_changed), which switch within seconds without dropping a call in progress.

Uploads are YAML (Content-Type application/yaml) or JSON; a bad flow is answered 422 with each
problem named by field (nodes.menu.options.1.next: unknown node ...). A flow may only route to queues
that exist and read calendars the site has.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

from aicc.appliance.api import audit
from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    ApiError,
    PoolDep,
    Principal,
    client_address,
    conflict,
    error_responses,
    not_found,
    require,
)
from aicc.appliance.api.routes import Strict
from aicc.appliance.documents import DocumentError, load_model, parse_text
from aicc.appliance.ivr import store
from aicc.appliance.ivr.calendar import Calendar, load_calendars
from aicc.appliance.ivr.flow import Flow, load_flow_text
from aicc.appliance.ivr.simulate import ScriptError, simulate

router = APIRouter(tags=["ivr"], responses=COMMON_ERRORS)

_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
MAX_UPLOAD = 512 * 1024
Comment = Annotated[str, Query(max_length=500, description="why (kept with the version)")]

_UPLOAD: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


class FlowSummary(BaseModel):
    name: str
    active_version: int | None
    latest_version: int
    versions: int
    activated_at: datetime | None
    activated_by: str | None


class FlowVersion(BaseModel):
    name: str
    version: int
    active: bool
    comment: str
    created_by: str
    created_at: datetime
    source: str | None = Field(None, description="the document as uploaded (single-version reads)")
    document: dict[str, Any] | None = None


class Rollback(Strict):
    version: int = Field(ge=1, description="the version to put in force again")


class Checked(BaseModel):
    ok: bool
    name: str
    nodes: int
    languages: list[str]


class SimulateRequest(Strict):
    inputs: list[str] = Field(
        default_factory=list, max_length=100, description="as `aicc ivr simulate --input`"
    )
    at: datetime | None = Field(None, description="when the simulated call happens (default: now)")
    caller: str = Field("13800138000", max_length=32)
    number: str = Field("", max_length=32)
    language: str | None = None


class SimulatedStep(BaseModel):
    node: str
    type: str
    detail: str


class Simulated(BaseModel):
    outcome: str
    path: list[SimulatedStep]
    variables: dict[str, str]
    unused_inputs: list[str]


class NumberRoute(BaseModel):
    number: str
    flow: str
    updated_at: datetime | None = None


class NumberChange(Strict):
    flow: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")


class CalendarEntry(BaseModel):
    name: str
    site: bool = Field(description="false: shipped with aicc (a site calendar of that name overrides it)")
    document: dict[str, Any]


async def _text(request: Request, what: str) -> str:
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media != "application/json" and media not in _YAML_TYPES:
        raise ApiError(
            415, "unsupported_media_type", f"send application/yaml or application/json; found {media!r}"
        )
    raw = await request.body()
    if len(raw) > MAX_UPLOAD:
        raise ApiError(
            413, "too_large", f"the {what} has {len(raw)} bytes; at most {MAX_UPLOAD} are accepted"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(422, "invalid_document", f"{what}: not UTF-8 text ({exc.reason})") from None


def _invalid(exc: DocumentError) -> ApiError:
    return ApiError(422, "invalid_document", str(exc), problems=exc.problems)


def _queue_refs(flow: Flow) -> list[tuple[str, str]]:
    """(field, queue name) of every queue the flow routes to."""
    refs = []
    for name, node in flow.nodes.items():
        queue = getattr(node, "queue", None)
        if isinstance(queue, str):
            refs.append((f"nodes.{name}.queue", queue))
        elif isinstance(queue, dict):
            refs += [(f"nodes.{name}.queue.{lang}", q) for lang, q in queue.items()]
    return refs


async def _checked_flow(conn: AsyncConnection[DictRow], text: str) -> Flow:
    """Parse and validate a flow against this site's calendars and queues."""
    try:
        flow = load_flow_text(text, "flow upload", calendars=set(await store.calendars(conn)))
    except DocumentError as exc:
        raise _invalid(exc) from None
    queues = {r["name"] for r in await (await conn.execute("SELECT name FROM aicc.queues")).fetchall()}
    missing = [
        (field, f"no queue {q!r} (POST /api/queues creates it)")
        for field, q in _queue_refs(flow)
        if q not in queues
    ]
    if missing:
        raise ApiError(
            422, "invalid_reference", f"flow {flow.name!r} routes to unknown queues", problems=missing
        )
    return flow


async def _version(conn: AsyncConnection[DictRow], name: str, version: int) -> dict[str, Any] | None:
    row = await (
        await conn.execute(
            "SELECT f.name, f.version, f.comment, f.created_by, f.created_at, f.source, f.document, "
            "coalesce(a.version = f.version, false) AS active FROM aicc.ivr_flows f "
            "LEFT JOIN aicc.ivr_active a ON a.name = f.name WHERE f.name = %s AND f.version = %s",
            (name, version),
        )
    ).fetchone()
    return dict(row) if row else None


async def _active_version(conn: AsyncConnection[DictRow], name: str) -> int | None:
    row = await (
        await conn.execute("SELECT version FROM aicc.ivr_active WHERE name = %s", (name,))
    ).fetchone()
    return int(row["version"]) if row else None


# --- flows ---------------------------------------------------------------------------------------


@router.get("/api/flows", response_model=list[FlowSummary])
async def list_flows(
    principal: Annotated[Principal, Depends(require("config.read"))], pool: PoolDep
) -> list[FlowSummary]:
    async with pool.connection() as conn:
        return [FlowSummary(**r) for r in await store.flow_summaries(conn)]


@router.post(
    "/api/flows",
    response_model=FlowVersion,
    status_code=201,
    openapi_extra=_UPLOAD,
    responses=error_responses(413, 415),
)
async def upload_flow(
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
    comment: Comment = "",
    activate: Annotated[bool, Query(description="put the new version in force at once")] = True,
) -> FlowVersion:
    """A new version of a flow (a new flow when its name is new), in force at once unless activate=false."""
    text = await _text(request, "flow")
    async with pool.connection() as conn:
        await _checked_flow(conn, text)
        await conn.execute("LOCK TABLE aicc.ivr_flows IN SHARE ROW EXCLUSIVE MODE")  # versions never collide
        try:
            flow, version = await store.save_flow(
                conn, text, by=principal.username, comment=comment, activate=activate
            )
        except DocumentError as exc:
            raise _invalid(exc) from None
        row = await _version(conn, flow.name, version)
        assert row is not None
        await audit.record(
            conn,
            principal,
            "flow.upload",
            "flow",
            flow.name,
            None,
            {"version": version, "active": activate, "comment": comment},
            client_address(request),
        )
    return FlowVersion(**{**row, "source": None, "document": None})


@router.post(
    "/api/flows/validate", response_model=Checked, openapi_extra=_UPLOAD, responses=error_responses(413, 415)
)
async def validate_flow(
    request: Request, principal: Annotated[Principal, Depends(require("config.read"))], pool: PoolDep
) -> Checked:
    """Check a flow without storing it: 200 when it would be accepted, 422 naming every problem."""
    text = await _text(request, "flow")
    async with pool.connection() as conn:
        flow = await _checked_flow(conn, text)
    return Checked(ok=True, name=flow.name, nodes=len(flow.nodes), languages=list(flow.languages))


@router.get("/api/flows/{name}", response_model=FlowVersion, responses=error_responses(404))
async def get_flow(
    name: str, principal: Annotated[Principal, Depends(require("config.read"))], pool: PoolDep
) -> FlowVersion:
    """The version in force, with its source and document."""
    async with pool.connection() as conn:
        version = await _active_version(conn, name)
        row = await _version(conn, name, version) if version is not None else None
    if row is None:
        raise not_found("flow in force", name)
    return FlowVersion(**row)


@router.get("/api/flows/{name}/versions", response_model=list[FlowVersion], responses=error_responses(404))
async def flow_versions(
    name: str, principal: Annotated[Principal, Depends(require("config.read"))], pool: PoolDep
) -> list[FlowVersion]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT f.name, f.version, f.comment, f.created_by, f.created_at, "
                "coalesce(a.version = f.version, false) AS active FROM aicc.ivr_flows f "
                "LEFT JOIN aicc.ivr_active a ON a.name = f.name WHERE f.name = %s ORDER BY f.version DESC",
                (name,),
            )
        ).fetchall()
    if not rows:
        raise not_found("flow", name)
    return [FlowVersion(**r) for r in rows]


@router.get(
    "/api/flows/{name}/versions/{version}", response_model=FlowVersion, responses=error_responses(404)
)
async def flow_version(
    name: str, version: int, principal: Annotated[Principal, Depends(require("config.read"))], pool: PoolDep
) -> FlowVersion:
    async with pool.connection() as conn:
        row = await _version(conn, name, version)
    if row is None:
        raise not_found(f"version {version} of flow", name)
    return FlowVersion(**row)


@router.post("/api/flows/{name}/rollback", response_model=FlowVersion, responses=error_responses(404))
async def rollback_flow(
    name: str,
    body: Rollback,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> FlowVersion:
    """Put an earlier (or any stored) version in force again."""
    async with pool.connection() as conn:
        row = await _version(conn, name, body.version)
        if row is None:
            raise not_found(f"version {body.version} of flow", name)
        before = await _active_version(conn, name)
        await store.activate_version(conn, name, body.version, by=principal.username)
        await audit.record(
            conn,
            principal,
            "flow.activate",
            "flow",
            name,
            {"version": before},
            {"version": body.version},
            client_address(request),
        )
    return FlowVersion(**{**row, "active": True})


@router.delete("/api/flows/{name}", status_code=204, responses=error_responses(404, 409))
async def delete_flow(
    name: str,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> Response:
    """Remove a flow and its history; refused while a service number selects it."""
    async with pool.connection() as conn:
        versions = await (
            await conn.execute("SELECT count(*) AS n FROM aicc.ivr_flows WHERE name = %s", (name,))
        ).fetchone()
        if not versions or not versions["n"]:
            raise not_found("flow", name)
        numbers = await (
            await conn.execute(
                "SELECT number FROM aicc.service_numbers WHERE flow = %s ORDER BY number", (name,)
            )
        ).fetchall()
        if numbers:
            raise conflict(
                f"flow {name!r} is selected by number(s) {', '.join(r['number'] for r in numbers)}"
            )
        active = await _active_version(conn, name)
        await conn.execute("DELETE FROM aicc.ivr_active WHERE name = %s", (name,))
        await conn.execute("DELETE FROM aicc.ivr_flows WHERE name = %s", (name,))
        await conn.execute("SELECT pg_notify(%s, %s)", (store.CHANNEL, name))
        await audit.record(
            conn,
            principal,
            "flow.delete",
            "flow",
            name,
            {"versions": versions["n"], "active_version": active},
            None,
            client_address(request),
        )
    return Response(status_code=204)


@router.post("/api/flows/{name}/simulate", response_model=Simulated, responses=error_responses(404))
async def simulate_flow(
    name: str,
    body: SimulateRequest,
    principal: Annotated[Principal, Depends(require("config.read"))],
    pool: PoolDep,
) -> Simulated:
    """Walk the version in force with scripted inputs, as `aicc ivr simulate` does, without a phone."""
    async with pool.connection() as conn:
        flows = await store.active_flows(conn)
        calendars = await store.calendars(conn)
    flow = flows.get(name)
    if flow is None:
        raise not_found("flow in force", name)
    if body.language is not None and body.language not in flow.languages:
        raise ApiError(
            422,
            "invalid",
            f"language {body.language!r} is not one of the flow's ({', '.join(flow.languages)})",
            problems=[("language", "not a language of the flow")],
        )
    at = body.at or datetime.now(UTC)
    try:
        result, io = await simulate(
            flow,
            body.inputs,
            at=at,
            caller=body.caller,
            calendars=calendars,
            language=body.language,
            number=body.number,
        )
    except ScriptError as exc:
        raise ApiError(422, "invalid_input", str(exc), problems=[("inputs", str(exc))]) from None
    return Simulated(
        outcome=result.outcome,
        path=[SimulatedStep(node=s.node, type=s.type, detail=s.detail) for s in result.path],
        variables=dict(result.variables),
        unused_inputs=list(io.unused),
    )


# --- service numbers -----------------------------------------------------------------------------


@router.get("/api/numbers", response_model=list[NumberRoute])
async def list_numbers(
    principal: Annotated[Principal, Depends(require("config.read"))], pool: PoolDep
) -> list[NumberRoute]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT number, flow, updated_at FROM aicc.service_numbers ORDER BY number")
        ).fetchall()
    return [NumberRoute(**r) for r in rows]


@router.put("/api/numbers/{number}", response_model=NumberRoute, responses=error_responses(422))
async def route_number(
    number: Annotated[str, Field(pattern=r"^\+?[0-9]{1,20}$")],
    body: NumberChange,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> NumberRoute:
    """Calls to `number` run flow `flow` (one in force). Kamailio must route the number to the voice
    gateways too: it takes the site's sip.service_numbers setting."""
    async with pool.connection() as conn:
        if await _active_version(conn, body.flow) is None:
            raise ApiError(
                422,
                "invalid_reference",
                f"no flow {body.flow!r} in force",
                problems=[("flow", "no such flow in force")],
            )
        before = await (
            await conn.execute(
                "SELECT flow FROM aicc.service_numbers WHERE number = %s FOR UPDATE", (number,)
            )
        ).fetchone()
        row = await (
            await conn.execute(
                "INSERT INTO aicc.service_numbers (number, flow) VALUES (%s, %s) ON CONFLICT (number) "
                "DO UPDATE SET flow = EXCLUDED.flow, updated_at = now() RETURNING number, flow, updated_at",
                (number, body.flow),
            )
        ).fetchone()
        assert row is not None
        await conn.execute("SELECT pg_notify(%s, %s)", (store.CHANNEL, number))
        await audit.record(
            conn,
            principal,
            "number.route",
            "number",
            number,
            {"flow": before["flow"]} if before else None,
            {"flow": body.flow},
            client_address(request),
        )
    return NumberRoute(**row)


@router.delete("/api/numbers/{number}", status_code=204, responses=error_responses(404))
async def unroute_number(
    number: str,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> Response:
    async with pool.connection() as conn:
        row = await (
            await conn.execute("DELETE FROM aicc.service_numbers WHERE number = %s RETURNING flow", (number,))
        ).fetchone()
        if row is None:
            raise not_found("service number", number)
        await conn.execute("SELECT pg_notify(%s, %s)", (store.CHANNEL, number))
        await audit.record(
            conn,
            principal,
            "number.delete",
            "number",
            number,
            {"flow": row["flow"]},
            None,
            client_address(request),
        )
    return Response(status_code=204)


# --- calendars -----------------------------------------------------------------------------------


@router.get("/api/calendars", response_model=list[CalendarEntry])
async def list_calendars(
    principal: Annotated[Principal, Depends(require("config.read"))], pool: PoolDep
) -> list[CalendarEntry]:
    shipped = load_calendars()
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT name, document FROM aicc.calendars ORDER BY name")
        ).fetchall()
    site = {r["name"]: r["document"] for r in rows}
    out = [
        CalendarEntry(name=n, site=False, document=c.model_dump(mode="json"))
        for n, c in shipped.items()
        if n not in site
    ]
    out += [CalendarEntry(name=n, site=True, document=d) for n, d in site.items()]
    return sorted(out, key=lambda e: e.name)


@router.put(
    "/api/calendars/{name}",
    response_model=CalendarEntry,
    openapi_extra=_UPLOAD,
    responses=error_responses(413, 415),
)
async def put_calendar(
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")],
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> CalendarEntry:
    """Create or replace a site calendar (YAML or JSON); one named like a shipped calendar overrides it."""
    text = await _text(request, "calendar")
    try:
        calendar = load_model(Calendar, parse_text(text, "calendar upload"), "calendar upload")
    except DocumentError as exc:
        raise _invalid(exc) from None
    if calendar.name != name:
        raise ApiError(
            422,
            "name_mismatch",
            f"the body names calendar {calendar.name!r} but the path {name!r}",
            problems=[("name", f"must be {name!r}")],
        )
    document = calendar.model_dump(mode="json")
    async with pool.connection() as conn:
        before = await (
            await conn.execute("SELECT document FROM aicc.calendars WHERE name = %s FOR UPDATE", (name,))
        ).fetchone()
        await conn.execute(
            "INSERT INTO aicc.calendars (name, document) VALUES (%s, %s) ON CONFLICT (name) "
            "DO UPDATE SET document = EXCLUDED.document, updated_at = now()",
            (name, Jsonb(document)),
        )
        await conn.execute("SELECT pg_notify(%s, %s)", (store.CHANNEL, name))
        await audit.record(
            conn,
            principal,
            "calendar.update" if before else "calendar.create",
            "calendar",
            name,
            before["document"] if before else None,
            document,
            client_address(request),
        )
    return CalendarEntry(name=name, site=True, document=document)


@router.delete("/api/calendars/{name}", status_code=204, responses=error_responses(404, 409))
async def delete_calendar(
    name: str,
    request: Request,
    principal: Annotated[Principal, Depends(require("config.write"))],
    pool: PoolDep,
) -> Response:
    """Remove a site calendar (a shipped one of the same name applies again); refused while a flow in
    force reads a calendar that only the site has."""
    async with pool.connection() as conn:
        before = await (
            await conn.execute("SELECT document FROM aicc.calendars WHERE name = %s FOR UPDATE", (name,))
        ).fetchone()
        if before is None:
            raise not_found("site calendar", name)
        if name not in load_calendars():
            users = [
                f.name
                for f in (await store.active_flows(conn)).values()
                if f.calendar == name or any(getattr(n, "calendar", None) == name for n in f.nodes.values())
            ]
            if users:
                raise conflict(f"calendar {name!r} is read by flow(s) {', '.join(sorted(users))}")
        await conn.execute("DELETE FROM aicc.calendars WHERE name = %s", (name,))
        await conn.execute("SELECT pg_notify(%s, %s)", (store.CHANNEL, name))
        await audit.record(
            conn,
            principal,
            "calendar.delete",
            "calendar",
            name,
            before["document"],
            None,
            client_address(request),
        )
    return Response(status_code=204)
