"""The contact-center event log's kinds: one line each, with the data the producer puts in it.

aicc.cc_events is append-only and the source of truth: CDRs, reports and SLA figures are computed
from these rows, never from counters kept elsewhere. Producers: the ACD (contact.* routing events
and agent.state), the voice gateway (call.*, contact.held/resumed, contact.survey). Every event has
`at`, a producer-made `uid` (a replay after an outage is a no-op), and where they apply contact_id,
call_id, queue and agent_id as columns; the rest is in `data`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

KINDS: dict[str, str] = {
    # --- contacts, by the ACD (queue = the queue the contact is in at that moment) ---
    "contact.queued": "entered a queue: channel, language, priority, tier, position, call_id, service",
    "contact.offered": "reserved for an agent whose phone rings: reservation_id, extension, ring_timeout_s",
    "contact.offer_failed": "the agent did not take it: reservation_id, reason (no_answer, busy, rejected, "
    "unreachable, timeout; taken: another agent took it by hand, and it does not wait again); the "
    "contact waits again in its place",
    "contact.answered": "an agent answered: reservation_id, wait_s (from the first contact.queued); by "
    "hand when the agent took it without an offer (a chat taken from the list, no reservation_id)",
    "contact.overflowed": "moved on after waiting: from_queue, step; queue is the new queue",
    "contact.abandoned": "left while waiting: wait_s, position, entry_position, reason (caller_hangup, "
    "gateway_lost, no_agents, timeout)",
    "contact.callback": "took a callback instead of waiting: wait_s, callback_id",
    "contact.ended": "the conversation with the agent ended: talk_s, hold_s, ended_by (caller, agent)",
    "contact.wrapup_done": "the agent finished wrap-up: wrap_s, disposition, note",
    # --- contacts, by the voice gateway ---
    "contact.held": "the agent put the caller on hold",
    "contact.resumed": "the agent took the caller off hold: hold_s",
    "contact.survey": "post-call survey answer: score (1-5)",
    # --- agents, by the ACD ---
    "agent.state": "an agent's status or state changed: status, state, reason, previous_status, "
    "previous_state, by",
    # --- calls, by the voice gateway ---
    "call.started": "a call reached a voice gateway: service, flow, language, gateway",
    "call.ended": "the call ended: outcome, end_reason, bot (the bot that handled it, or empty), "
    "duration_s, transferred (bool)",
}


class UnknownEventKind(ValueError):
    pass


@dataclass(frozen=True)
class Event:
    kind: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    contact_id: str | None = None
    call_id: str | None = None
    queue: str | None = None
    agent_id: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UnknownEventKind(f"unknown event kind {self.kind!r}; known: {', '.join(sorted(KINDS))}")
