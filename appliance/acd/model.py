"""The ACD's runtime state as plain dataclasses, and what one step of the engine hands to its owner.

AgentRuntime and Contact are persisted by the active ACD (aicc.acd_agent_state.state and
aicc.acd_contacts.contact, as `to_json()`) and read back with `from_json()` on restart or takeover;
everything routing depends on is in them, so a rebuilt engine decides exactly as the old one would.
Times are epoch seconds (float), as the engine is given them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import TypeAdapter

from aicc.appliance.acd.policy import QueueConfig
from aicc.appliance.events.kinds import Event

AgentStatus = Literal["logged_out", "ready", "away"]
AgentState = Literal["idle", "reserved", "busy", "wrap_up"]
ContactState = Literal["waiting", "reserved", "connected"]

STATUSES: tuple[AgentStatus, ...] = ("logged_out", "ready", "away")
# One word per agent for wallboards: its state, or when idle its status (ready = idle and ready).
BOARD_STATES = ("ready", "reserved", "busy", "wrap_up", "away", "logged_out")
OUTCOMES = ("answered", "no_answer", "busy", "rejected", "unreachable")


@dataclass
class Reservation:
    """A contact held for one agent while the agent's phone rings."""

    id: str
    contact_id: str
    agent_id: int
    extension: str
    created_at: float
    deadline: float  # ring timeout + grace: no report by then counts as no answer


@dataclass
class WrapUp:
    """After-contact work for one ended contact; `handled_s` is its talk + hold time."""

    contact_id: str
    queue: str
    call_id: str | None
    handled_s: float
    started_at: float
    ends_at: float


@dataclass
class AgentRuntime:
    """An agent as the ACD sees it: the human's status (and reason) and the ACD's state, kept apart.

    The state is derived from what the agent holds: a ringing reservation, connected contacts, pending
    wrap-ups. `idle_since` orders agents for longest-idle selection: when the agent last became idle,
    went ready, or was given a contact. The occupancy window (`shift_*`, `handled_s`) starts when the
    agent first goes ready on a (UTC) day.
    """

    agent_id: int
    status: AgentStatus = "logged_out"
    reason: str = ""
    since: float = 0.0  # last status or state change
    idle_since: float = 0.0
    reserved_for: str | None = None  # contact id of the ringing reservation
    connected: dict[str, str] = field(default_factory=dict)  # contact id -> channel
    wraps: list[WrapUp] = field(default_factory=list)
    recent: list[WrapUp] = field(default_factory=list)  # finished wrap-ups, for late dispositions
    shift_day: int = -1
    shift_start: float = 0.0
    handled_s: float = 0.0
    phone_lost_at: float | None = None  # when the ACD first missed the ready or away agent's phone

    @property
    def state(self) -> AgentState:
        if self.reserved_for is not None:
            return "reserved"
        if self.connected:
            return "busy"
        if self.wraps:
            return "wrap_up"
        return "idle"

    def to_json(self) -> dict[str, Any]:
        # `state` is derived; it is written for readers of the table (API, reports) and ignored on load.
        out: dict[str, Any] = _AGENT.dump_python(self, mode="json")
        return {**out, "state": self.state}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AgentRuntime:
        return _AGENT.validate_python({k: v for k, v in data.items() if k != "state"})


@dataclass
class EnqueueResult:
    """What the sender of an enqueue learns; kept so that a replayed enqueue gets the same answer."""

    position: int
    ewt_s: float | None
    staffed: int
    callback_offer: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "ewt_s": self.ewt_s,
            "staffed": self.staffed,
            "callback_offer": self.callback_offer,
        }


@dataclass
class Contact:
    """A contact from enqueue until it is answered and ended, abandoned, or turned into a callback.

    Its place in the queue is fixed by `enqueued_at`, `priority`, `tier` (under the routing policy)
    and `seq`, the arrival order that breaks ties. Overflow: `step` counts the steps passed in the
    current queue (clock restarted at `entered_at`); after a move, `moved` drops the contact's own
    extra `skills` and `carried_skills` holds the moving step's skills, if it had any.
    `queue_config` is set only while the contact's queue is no longer configured: it keeps the
    queue's last configuration until the contact leaves.
    """

    id: str
    seq: int
    queue: str
    channel: str
    language: str
    base_priority: int  # as enqueued; priority = queue's priority + this, clamped to 0..100
    priority: int
    tier: str | None
    skills: dict[str, int]
    attributes: dict[str, Any]
    gateway: str
    call_id: str | None
    caller: str
    enqueued_at: float
    entered_at: float
    entry: EnqueueResult
    state: ContactState = "waiting"
    step: int = 0
    moved: bool = False
    carried_skills: dict[str, int] | None = None
    reservation: Reservation | None = None
    agent_id: int | None = None
    answered_at: float | None = None
    offers: int = 0
    refused: list[int] = field(default_factory=list)  # agents who missed or refused it
    queue_config: QueueConfig | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _CONTACT.dump_python(self, mode="json")
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Contact:
        return _CONTACT.validate_python(data)


@dataclass(frozen=True)
class Offer:
    """Ring `extension` for `contact_id`: sent to the gateway holding the contact (NOTIFY acd_offers)."""

    gateway: str
    contact_id: str
    reservation_id: str
    agent_id: int
    extension: str
    ring_timeout_s: int
    queue: str
    attributes: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _OFFER.dump_python(self, mode="json")
        return out


@dataclass(frozen=True)
class Callback:
    """A callback to store (aicc.acd_callbacks); `contact_id` is None when none was waiting."""

    id: str
    contact_id: str | None
    queue: str
    number: str
    language: str
    requested_at: float

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _CALLBACK.dump_python(self, mode="json")
        return out


@dataclass
class Changes:
    """What changed since the last drain: persist it in one transaction, then send the offers."""

    agents: set[int] = field(default_factory=set)
    contacts: set[str] = field(default_factory=set)  # changed and still present
    removed: set[str] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)
    offers: list[Offer] = field(default_factory=list)
    callbacks: list[Callback] = field(default_factory=list)


@dataclass(frozen=True)
class QueueStats:
    """One queue now. Agents are those qualifying for the queue's own requirement (language, channel
    capacity, skills), counted once each by BOARD_STATES: busy, reserved or in wrap-up whatever their
    status, else by status. Staffed = not logged out; available = could be offered a contact now."""

    queue: str
    waiting: int  # waiting or ringing an agent
    longest_wait_s: float
    agents: dict[str, int]
    staffed: int
    available: int

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _STATS.dump_python(self, mode="json")
        return out


_AGENT = TypeAdapter(AgentRuntime)
_CONTACT = TypeAdapter(Contact)
_OFFER = TypeAdapter(Offer)
_CALLBACK = TypeAdapter(Callback)
_STATS = TypeAdapter(QueueStats)
