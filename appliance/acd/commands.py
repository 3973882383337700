"""Commands to the active ACD: what producers (the API, the voice gateways) may ask, validated at both
ends. A command travels as a row of aicc.acd_commands (kind + JSON payload); its result comes back
as NOTIFY acd_results {"uid", "ok", "result" | "error"}.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aicc.appliance.acd.policy import Channel, Language, QueueName, SkillName

Uid = Annotated[str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]


class _Cmd(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Enqueue(_Cmd):
    kind: Literal["enqueue"] = "enqueue"
    contact_id: Uid
    queue: QueueName
    channel: Channel = "voice"
    language: Language
    priority: int = Field(0, ge=0, le=100)
    tier: str | None = None
    skills: dict[SkillName, Annotated[int, Field(ge=1, le=5)]] = Field(default_factory=dict)
    attributes: dict[str, Any] = Field(default_factory=dict)
    gateway: str = Field("", max_length=200)
    call_id: str | None = Field(None, max_length=300)
    caller: str = Field("", max_length=100)
    # Waited before this enqueue (a chat back in the queue): its place and wait count from then.
    waited_s: float = Field(0.0, ge=0, le=86400)


class Abandon(_Cmd):
    kind: Literal["abandon"] = "abandon"
    contact_id: Uid
    reason: Literal["caller_hangup", "gateway_lost", "no_agents", "timeout", "cancelled"] = "caller_hangup"


class Assign(_Cmd):
    """A waiting or ringing contact an agent took by hand: connected to them (answered)."""

    kind: Literal["assign"] = "assign"
    contact_id: Uid
    agent_id: int = Field(ge=1)


class TakeCallback(_Cmd):
    kind: Literal["callback"] = "callback"
    contact_id: Uid | None = None
    queue: QueueName
    number: str = Field(pattern=r"^\+?[0-9]{3,20}$")
    language: Language


class OfferResult(_Cmd):
    kind: Literal["offer_result"] = "offer_result"
    reservation_id: Uid
    contact_id: Uid
    outcome: Literal["answered", "no_answer", "busy", "rejected", "unreachable"]


class ContactEnd(_Cmd):
    kind: Literal["contact_end"] = "contact_end"
    contact_id: Uid
    talk_s: float = Field(ge=0)
    hold_s: float = Field(0.0, ge=0)
    ended_by: Literal["caller", "agent", "system"] = "caller"


class AgentStatus(_Cmd):
    kind: Literal["agent_status"] = "agent_status"
    agent_id: int = Field(ge=1)
    status: Literal["ready", "away", "logged_out"]
    reason: str = Field("", max_length=40, pattern=r"^[a-z0-9_]*$")
    by: str = Field(max_length=64)


class WrapupDone(_Cmd):
    kind: Literal["wrapup_done"] = "wrapup_done"
    agent_id: int = Field(ge=1)
    contact_id: Uid | None = None
    disposition: str = Field("", max_length=40, pattern=r"^[a-z0-9_]*$")
    note: str = Field("", max_length=2000)


class Reload(_Cmd):
    kind: Literal["reload"] = "reload"


class Status(_Cmd):
    """Where a contact stands (for the caller's position announcements); changes nothing."""

    kind: Literal["status"] = "status"
    contact_id: Uid


class Live(_Cmd):
    """Every queue's live figures (the API's wallboard data); changes nothing."""

    kind: Literal["live"] = "live"


Command = (
    Enqueue
    | Abandon
    | Assign
    | TakeCallback
    | OfferResult
    | ContactEnd
    | AgentStatus
    | WrapupDone
    | Reload
    | Status
    | Live
)

BY_KIND: dict[str, type[_Cmd]] = {
    "enqueue": Enqueue,
    "abandon": Abandon,
    "assign": Assign,
    "callback": TakeCallback,
    "offer_result": OfferResult,
    "contact_end": ContactEnd,
    "agent_status": AgentStatus,
    "wrapup_done": WrapupDone,
    "reload": Reload,
    "status": Status,
    "live": Live,
}


def parse(kind: str, payload: dict[str, Any]) -> Command:
    model = BY_KIND.get(kind)
    if model is None:
        raise ValueError(f"unknown ACD command {kind!r}")
    return model.model_validate({**payload, "kind": kind})  # type: ignore[return-value]


def payload_of(cmd: Command) -> dict[str, Any]:
    return cmd.model_dump(mode="json", exclude={"kind"})
