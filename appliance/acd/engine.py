"""The ACD's state machine: contacts, agents, reservations, overflow and wrap-up, in memory.

Pure: no I/O and no clock (`now` is given, epoch seconds). Its owner (appliance/acd/service.py) applies
one command, then `route(now)`, then persists what `drain()` returns in one transaction; on restart it
rebuilds an engine with `restore()` from what it persisted, which then decides exactly as this one
would have. Every choice is deterministic: ties break on arrival order and agent id, never on the
order of a dict or a set.

Decisions worth knowing (the rest is in appliance/README.md, section ACD):
- staffed = an agent qualifying for the contact whose status is not logged_out (ready or away): the
  people on shift, who will take contacts; EWT is None when there is none.
- Ready and away both need a registered phone (until the first `registrations()`, every extension
  counts as registered). An agent whose phone is gone gets no offer at once and is logged out when it
  stays gone for `phone_grace_s` (so it cannot be away either); a phone back within that time (a
  proxy restart, a page reload, a network blip) leaves the agent's status as it was. The time it went
  missing is persisted with the agent, so a restarted engine keeps counting.
- An agent busy on one channel may be offered a contact of another where its capacity allows; one
  phone rings at a time (one reservation per agent), and pending wrap-up blocks every offer.
- A reservation with no report by its deadline counts as no answer (agent away, reason no_answer);
  its contact.offer_failed says reason "timeout" so reports can tell it from a reported no answer.
- A contact reaches max_wait_s by its total wait (from its first enqueue), measured against its current
  queue; it is not cut while an agent's phone rings for it (checked again when the offer fails). An
  enqueue may bring `waited_s` already waited (a chat re-queued): it counts in its place, its wait and
  max_wait_s, as if it had been enqueued that much earlier; its overflow clock starts now.
- Overflow steps count while a contact rings an agent too; only a move emits contact.overflowed. After
  a move the contact's priority is the new queue's priority plus its own, and its own extra skills no
  longer apply.
- The wrap-up timer ending records contact.wrapup_done (closed_by "timer", no disposition); a
  disposition given later records another one (closed_by "late", wrap_s 0, so sums stay right).
- A lost gateway's waiting contacts are abandoned (gateway_lost); its connected ones are ended
  (ended_by "system", reason "gateway_lost") so that their agents reach wrap-up instead of staying
  busy for ever. contact.abandoned carries the contact's gateway, which tells the caller.
"""

from __future__ import annotations

import heapq
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, get_args

from aicc.appliance.acd.model import (
    BOARD_STATES,
    OUTCOMES,
    STATUSES,
    AgentRuntime,
    Callback,
    Changes,
    Contact,
    EnqueueResult,
    Offer,
    QueueStats,
    Reservation,
    WrapUp,
)
from aicc.appliance.acd.policy import AgentProfile, Channel, Language, QueueConfig, RoutingPolicy
from aicc.appliance.acd.router import (
    PoolKey,
    Router,
    agent_order,
    clamp_priority,
    entry,
    pool_key,
    requirement,
)
from aicc.appliance.events.kinds import Event

AHT_WINDOW = 50  # ended contacts per queue the handle-time estimate is the mean of
RECENT_WRAPS = 5  # finished wrap-ups an agent may still give a disposition for
# Reservation and callback ids are UUIDs made from the contact (a restored engine makes the same ones).
_ID_NS = uuid.UUID("5f0c6f5e-8d44-4a53-9a55-2c1a0e4b6f11")

# Timers, in the order they run when due at the same moment.
_DEADLINE, _WRAP, _STEP, _MAX_WAIT = range(4)
Timer = tuple[float, int, int, str]  # due, kind, tie-break (contact seq or agent id), contact id

_Snapshot = tuple[str, str, str]  # status, state, reason


class AcdError(Exception):
    """A command the engine refuses: `code` for programs, `message` for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Acd:
    def __init__(
        self,
        policy: RoutingPolicy,
        queues: Mapping[str, QueueConfig],
        agents: Mapping[int, AgentProfile],
        *,
        phone_grace_s: float = 0.0,
    ) -> None:
        self._policy = policy
        self._phone_grace_s = phone_grace_s
        self._queues = _checked_queues(queues)
        self._profiles = dict(agents)
        self._agents: dict[int, AgentRuntime] = {aid: AgentRuntime(agent_id=aid) for aid in sorted(agents)}
        self._contacts: dict[str, Contact] = {}
        self._registered: set[str] | None = None  # None: no registrations seen yet, all count
        self._handle: dict[str, deque[float]] = {}
        self._seq = 0
        self._timers: list[Timer] = []
        self._pending_agents: set[int] = set()
        self._pending_contacts: set[str] = set()
        self._changes = Changes()
        self._router = Router(policy, self._profiles, self._agents, self._contacts)

    # --- configuration and restart ---------------------------------------------------------------

    def configure(
        self,
        policy: RoutingPolicy,
        queues: Mapping[str, QueueConfig],
        agents: Mapping[int, AgentProfile],
        now: float,
    ) -> None:
        """New configuration, runtime kept. Contacts of a queue no longer configured keep its last
        configuration until they leave; agents removed or left without an extension are logged out."""
        new_queues = _checked_queues(queues)
        for c in self._by_seq():
            if c.queue in new_queues:
                if c.queue_config is not None:
                    c.queue_config = None
                    self._changes.contacts.add(c.id)
            elif c.queue_config is None:
                c.queue_config = self._queues[c.queue]
                self._changes.contacts.add(c.id)
        self._policy = policy
        self._queues = new_queues
        self._profiles = dict(agents)
        for aid in sorted(self._profiles):  # an agent added since: logged out until they say otherwise
            self._agents.setdefault(aid, AgentRuntime(agent_id=aid))
        self._rebuild()
        self._normalize(now, by="config")

    def restore(
        self,
        agents: Iterable[AgentRuntime],
        contacts: Iterable[Contact],
        now: float,
        handle_times: Mapping[str, Iterable[float]] | None = None,
    ) -> None:
        """Replace the runtime with persisted agents and contacts (and, when kept, the handle times
        of `handle_times()`; without them EWT uses each queue's default AHT until contacts end).
        Feed `registrations()` before the first command, as the engine that persisted this did."""
        self._agents = {rt.agent_id: rt for rt in agents}
        for aid in sorted(self._profiles):
            self._agents.setdefault(aid, AgentRuntime(agent_id=aid))
        ordered = sorted(contacts, key=lambda c: c.seq)
        self._contacts = {c.id: c for c in ordered}
        self._seq = ordered[-1].seq + 1 if ordered else 0
        self._handle = {q: deque(v, maxlen=AHT_WINDOW) for q, v in (handle_times or {}).items()}
        self._changes = Changes()
        for c in ordered:
            if c.queue not in self._queues and c.queue_config is None:
                # Its queue was removed while no engine ran: its last configuration is unknown.
                c.queue_config = QueueConfig.model_validate(
                    {"name": c.queue, "language": c.language, "channel": c.channel}
                )
                self._changes.contacts.add(c.id)
        self._rebuild()
        self._normalize(now, by="config")

    def handle_times(self) -> dict[str, list[float]]:
        """Each queue's recent handle times (talk + hold + wrap), for `restore()`."""
        return {q: list(v) for q, v in sorted(self._handle.items())}

    def _rebuild(self) -> None:
        self._router = Router(self._policy, self._profiles, self._agents, self._contacts)
        self._timers = []
        self._pending_agents.clear()
        self._pending_contacts.clear()
        for c in self._by_seq():
            self._place(c)
            self._arm(c)
            if c.reservation is not None:
                self._push(c.reservation.deadline, _DEADLINE, c.seq, c.id)
        for aid in sorted(self._agents):
            rt = self._agents[aid]
            self._sync_agent(rt)
            for w in rt.wraps:
                self._push(w.ends_at, _WRAP, aid, "")

    def _normalize(self, now: float, by: str) -> None:
        """Log out agents who can no longer take contacts: profile removed, no extension (a phone
        gone is `registrations()`' to judge); and give contacts their queue's current priority."""
        for aid in sorted(self._agents):
            rt = self._agents[aid]
            prof = self._profiles.get(aid)
            if rt.status == "logged_out":
                continue
            if prof is None:
                self._log_out(rt, "removed", by, now)
            elif prof.extension is None:
                self._log_out(rt, "no_extension", by, now)
        for c in self._by_seq():
            if c.queue_config is None:
                priority = clamp_priority(self._queues[c.queue].priority + c.base_priority)
                if priority != c.priority:
                    c.priority = priority
                    self._place(c)
                    self._changes.contacts.add(c.id)

    # --- commands --------------------------------------------------------------------------------

    def enqueue(
        self,
        *,
        contact_id: str,
        queue: str,
        channel: str,
        language: str,
        priority: int,
        tier: str | None,
        skills: dict[str, int],
        attributes: dict[str, Any],
        gateway: str,
        call_id: str | None,
        caller: str,
        now: float,
        waited_s: float = 0.0,
    ) -> dict[str, Any]:
        known = self._contacts.get(contact_id)
        if known is not None:  # a replayed command
            return known.entry.to_json()
        cfg = self._queue(queue)
        if channel not in get_args(Channel):
            raise AcdError("bad_request", f"channel {channel!r} is not one of {', '.join(get_args(Channel))}")
        if language not in get_args(Language):
            raise AcdError(
                "bad_request", f"language {language!r} is not one of {', '.join(get_args(Language))}"
            )
        c = Contact(
            id=contact_id,
            seq=self._seq,
            queue=queue,
            channel=channel,
            language=language,
            base_priority=priority,
            priority=clamp_priority(cfg.priority + priority),
            tier=tier,
            skills=dict(skills),
            attributes=dict(attributes),
            gateway=gateway,
            call_id=call_id,
            caller=caller,
            enqueued_at=now - max(0.0, waited_s),
            entered_at=now,
            entry=EnqueueResult(position=0, ewt_s=None, staffed=0, callback_offer=False),
        )
        self._seq += 1
        self._contacts[c.id] = c
        self._place(c)
        position = self._position(c)
        ewt, staffed = self._estimate(c, position)
        offer_callback = cfg.callback.enabled and (ewt is None or ewt > cfg.callback.offer_after_ewt_s)
        c.entry = EnqueueResult(position=position, ewt_s=ewt, staffed=staffed, callback_offer=offer_callback)
        self._changes.contacts.add(c.id)
        self._changes.removed.discard(c.id)
        self._arm(c)
        self._emit(
            "contact.queued",
            now,
            c,
            data={
                "channel": channel,
                "language": language,
                "priority": c.priority,
                "tier": tier,
                "position": position,
                "call_id": call_id,
                "service": attributes.get("service"),
            },
        )
        return c.entry.to_json()

    def abandon(self, *, contact_id: str, reason: str, now: float) -> dict[str, Any]:
        c = self._contact(contact_id)
        self._not_connected(c, "abandon")
        wait = float(now - c.enqueued_at)
        data = {"wait_s": wait, "reason": reason, "gateway": c.gateway}  # the gateway says goodbye
        self._leave(c, "contact.abandoned", now, data, with_position=True)
        return {"wait_s": wait}

    def assign(self, *, contact_id: str, agent_id: int, now: float) -> dict[str, Any]:
        """A waiting or ringing contact an agent took by hand (a chat taken from the list, or given to
        them by a supervisor): connected to that agent as if offered and answered, so it counts in
        their capacity and as answered in the queue's figures. A ring for another agent stops (offer
        failed, reason taken)."""
        c = self._contact(contact_id)
        self._not_connected(c, "assign")
        rt = self._agents.get(agent_id)
        if rt is None or agent_id not in self._profiles:
            raise AcdError("unknown_agent", f"agent {agent_id} has no profile in the ACD")
        res = c.reservation
        if res is not None and res.agent_id != agent_id:
            other = self._agents[res.agent_id]
            before = _snap(other)
            other.reserved_for = None
            self._emit(
                "contact.offer_failed",
                now,
                c,
                agent_id=res.agent_id,
                data={"reservation_id": res.id, "reason": "taken"},
            )
            self._agent_done(other, before, "acd", now)
        before = _snap(rt)
        if rt.reserved_for == c.id:
            rt.reserved_for = None
        rt.connected[c.id] = c.channel
        rt.idle_since = now
        c.state, c.agent_id, c.answered_at, c.reservation = "connected", agent_id, now, None
        self._place(c)
        self._changes.contacts.add(c.id)
        wait = float(now - c.enqueued_at)
        data: dict[str, Any] = {"wait_s": wait, "by": "hand"}
        if res is not None and res.agent_id == agent_id:
            data["reservation_id"] = res.id
        self._emit("contact.answered", now, c, agent_id=agent_id, data=data)
        self._agent_done(rt, before, "acd", now)
        return {"wait_s": wait}

    def take_callback(
        self, *, contact_id: str | None, queue: str, number: str, language: str, now: float
    ) -> dict[str, Any]:
        self._queue(queue)
        if contact_id is None:
            callback_id = str(uuid.uuid5(_ID_NS, f"callback:{queue}:{number}:{now!r}"))
        else:
            c = self._contact(contact_id)
            self._not_connected(c, "take a callback for")
            callback_id = str(uuid.uuid5(_ID_NS, f"callback:{contact_id}"))
            data = {"wait_s": float(now - c.enqueued_at), "callback_id": callback_id}
            self._leave(c, "contact.callback", now, data, with_position=False)
        self._changes.callbacks.append(
            Callback(
                id=callback_id,
                contact_id=contact_id,
                queue=queue,
                number=number,
                language=language,
                requested_at=now,
            )
        )
        return {"callback_id": callback_id}

    def offer_result(
        self, *, reservation_id: str, contact_id: str, outcome: str, now: float
    ) -> dict[str, Any]:
        if outcome not in OUTCOMES:
            raise AcdError("bad_request", f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
        c = self._contact(contact_id)
        if c.reservation is None or c.reservation.id != reservation_id:
            current = c.reservation.id if c.reservation is not None else "none"
            raise AcdError(
                "bad_state",
                f"reservation {reservation_id!r} is not the current offer of contact {contact_id!r} "
                f"(current: {current}); it was answered, timed out or cancelled",
            )
        if outcome == "answered":
            self._answer(c, now)
        else:
            self._offer_failed(c, outcome, outcome, now)
        return {"state": c.state}

    def contact_end(
        self, *, contact_id: str, talk_s: float, hold_s: float, ended_by: str, now: float
    ) -> dict[str, Any]:
        c = self._contact(contact_id)
        if c.state != "connected" or c.agent_id is None:
            raise AcdError(
                "bad_state",
                f"contact {contact_id!r} is {c.state}, not connected to an agent; "
                "a contact that leaves before an answer is abandoned",
            )
        data: dict[str, Any] = {"talk_s": float(talk_s), "hold_s": float(hold_s), "ended_by": ended_by}
        return self._end(c, c.agent_id, data, now)

    def _end(self, c: Contact, agent_id: int, data: dict[str, Any], now: float) -> dict[str, Any]:
        """A connected contact ends: event contact.ended (`data`), its agent goes to wrap-up."""
        cfg = self._config(c)
        rt = self._agents[agent_id]
        before = _snap(rt)
        del rt.connected[c.id]
        handled = data["talk_s"] + data["hold_s"]
        rt.handled_s += handled
        self._emit("contact.ended", now, c, agent_id=rt.agent_id, data=data)
        wrap = WrapUp(
            contact_id=c.id,
            queue=c.queue,
            call_id=c.call_id,
            handled_s=handled,
            started_at=now,
            ends_at=now + cfg.wrap_up_s,
        )
        rt.wraps.append(wrap)
        if cfg.wrap_up_s > 0:
            self._push(wrap.ends_at, _WRAP, rt.agent_id, "")
        else:
            self._close_wrap(rt, wrap, now, "", "", closed_by="timer")
        self._remove(c)
        self._agent_done(rt, before, "acd", now)
        return {"wrap_up_s": cfg.wrap_up_s}

    def set_status(self, *, agent_id: int, status: str, reason: str, by: str, now: float) -> dict[str, Any]:
        prof = self._profiles.get(agent_id)
        if prof is None:
            raise AcdError("unknown_agent", f"agent {agent_id} has no routing profile; create one first")
        if status not in STATUSES:
            raise AcdError("bad_request", f"status {status!r} is not one of {', '.join(STATUSES)}")
        if status != "logged_out" and not self._is_registered(prof):
            # Away needs the phone too: the ACD logs out agents whose phone is gone (registrations).
            where = f"extension {prof.extension!r} is" if prof.extension else "it has no extension, none"
            raise AcdError(
                "not_registered",
                f"agent {agent_id} cannot be {status}: {where} registered; register the phone "
                "(or set the agent's extension) first",
            )
        rt = self._agents[agent_id]
        before = _snap(rt)
        if status == "ready" and rt.status != "ready":
            day = int(now // 86400)
            if day != rt.shift_day:
                rt.shift_day, rt.shift_start, rt.handled_s = day, now, 0.0
            rt.idle_since = now
        rt.status = status
        rt.reason = reason
        self._agent_done(rt, before, by, now)
        return {"status": rt.status, "state": rt.state, "reason": rt.reason}

    def wrapup_done(
        self, *, agent_id: int, contact_id: str | None, disposition: str, note: str, now: float
    ) -> dict[str, Any]:
        rt = self._agents.get(agent_id)
        if rt is None:
            raise AcdError("unknown_agent", f"agent {agent_id} is not known to the ACD")
        if contact_id is None:
            if not rt.wraps:
                raise AcdError(
                    "bad_state",
                    f"agent {agent_id} has no contact in wrap-up; "
                    "name the contact to record a late disposition",
                )
            wrap = rt.wraps[0]
        else:
            found = [w for w in rt.wraps if w.contact_id == contact_id]
            if not found:
                late = [w for w in rt.recent if w.contact_id == contact_id]
                if not late:
                    raise AcdError(
                        "unknown_contact",
                        f"agent {agent_id} has no contact {contact_id!r} in wrap-up "
                        f"nor among its last {RECENT_WRAPS} contacts",
                    )
                self._wrap_event(rt.agent_id, late[-1], now, 0.0, disposition, note, "late")
                return {"state": rt.state}
            wrap = found[0]
        before = _snap(rt)
        self._close_wrap(rt, wrap, now, disposition, note, closed_by="agent")
        self._agent_done(rt, before, "agent", now)
        return {"state": rt.state}

    def registrations(self, extensions: set[str], now: float) -> None:
        """The SIP extensions registered now. A ready or away agent whose phone is not among them gets
        no offer; one missing for phone_grace_s is logged out (its connected contacts go on)."""
        self._registered = set(extensions)
        for aid in sorted(self._agents):
            rt = self._agents[aid]
            prof = self._profiles.get(aid)
            lost_at: float | None = None
            if rt.status != "logged_out" and (prof is None or not self._is_registered(prof)):
                lost_at = now if rt.phone_lost_at is None else rt.phone_lost_at
                if now - lost_at >= self._phone_grace_s:
                    rt.phone_lost_at = None
                    self._log_out(rt, "unregistered", "acd", now)
                    continue
            if lost_at != rt.phone_lost_at:
                rt.phone_lost_at = lost_at
                self._changes.agents.add(aid)
            self._sync_agent(rt)  # a phone gone closes the agent to offers, one back opens it again

    def gateways_lost(self, gateways: set[str], now: float) -> None:
        for c in self._by_seq():
            if c.gateway not in gateways:
                continue
            if c.state == "connected" and c.agent_id is not None and c.answered_at is not None:
                talk = float(now - c.answered_at)
                data = {"talk_s": talk, "hold_s": 0.0, "ended_by": "system", "reason": "gateway_lost"}
                self._end(c, c.agent_id, data, now)
            else:
                self.abandon(contact_id=c.id, reason="gateway_lost", now=now)

    def tick(self, now: float) -> None:
        """Everything due by `now`: ring deadlines, wrap-up ends, overflow steps, maximum waits."""
        while self._timers and self._timers[0][0] <= now:
            _, kind, tie, cid = heapq.heappop(self._timers)
            # Timers are never cancelled: each one checks that what it was set for still holds.
            if kind == _WRAP:
                self._wraps_due(tie, now)
                continue
            c = self._contacts.get(cid)
            if c is None:
                continue
            if kind == _DEADLINE:
                if c.reservation is not None and c.reservation.deadline <= now:
                    self._offer_failed(c, "no_answer", "timeout", now)
            elif kind == _STEP:
                self._steps_due(c, now)
            elif c.state == "waiting" and now - c.enqueued_at >= self._config(c).max_wait_s:
                self.abandon(contact_id=c.id, reason="timeout", now=now)

    def route(self, now: float) -> None:
        """Make every match possible now: agents that became available pick their best contact (in
        the policy's agent order), then contacts that became routable pick their agent (best score
        first). Afterwards no waiting contact has an available agent qualifying for it."""
        agents = sorted(self._pending_agents, key=lambda a: agent_order(self._policy, self._agents[a], now))
        self._pending_agents.clear()
        passed: set[str] = set()
        for aid in agents:
            if not self._router.channels(aid):
                continue
            cid, skipped = self._router.best_contact(aid)
            passed.update(skipped)
            if cid is not None:
                self._reserve(self._contacts[cid], aid, now)
        candidates = [
            self._contacts[cid]
            for cid in self._pending_contacts | passed
            if cid in self._contacts and self._contacts[cid].state == "waiting"
        ]
        self._pending_contacts.clear()
        for c in sorted(candidates, key=lambda c: entry(c, self._policy)):
            if c.state != "waiting":
                continue
            key = self._router.pool_of(c.id)
            if key is None:
                continue
            chosen = self._router.best_agent(c, key, now)
            if chosen is not None:
                self._reserve(c, chosen, now)

    def drain(self) -> Changes:
        changes, self._changes = self._changes, Changes()
        return changes

    # --- read side -------------------------------------------------------------------------------

    def position(self, contact_id: str) -> int:
        return self._position(self._contact(contact_id))

    def ewt(self, contact_id: str, now: float) -> float | None:
        """Estimated wait: position * AHT / staffed qualified agents; None when none is staffed.
        (`now` is part of the read interface; the estimate itself does not age.)"""
        c = self._contact(contact_id)
        return self._estimate(c, self._position(c))[0]

    def queue_stats(self, now: float) -> dict[str, QueueStats]:
        configs = dict(self._queues)
        for name in self._router.queue_names():
            if name not in configs:
                configs[name] = self._config(self._contacts[self._router.queue_contacts(name)[0]])
        out: dict[str, QueueStats] = {}
        for name, cfg in sorted(configs.items()):
            ids = self._router.queue_contacts(name)
            key = pool_key(cfg.channel, cfg.language, cfg.skills)
            qualified = sorted(self._router.qualified(key))
            agents: Counter[str] = Counter(dict.fromkeys(BOARD_STATES, 0))
            for aid in qualified:
                rt = self._agents[aid]
                agents[rt.status if rt.state == "idle" else rt.state] += 1
            out[name] = QueueStats(
                queue=name,
                waiting=len(ids),
                longest_wait_s=max((now - self._contacts[i].enqueued_at for i in ids), default=0.0),
                agents=dict(agents),
                staffed=sum(1 for aid in qualified if self._agents[aid].status != "logged_out"),
                available=sum(1 for aid in qualified if self._router.is_open(aid, cfg.channel)),
            )
        return out

    def gateways(self) -> set[str]:
        """The gateways holding contacts now (whose heartbeats matter)."""
        return {c.gateway for c in self._contacts.values()}

    def agent(self, agent_id: int) -> AgentRuntime:
        """The agent's runtime (the engine's own object: read it, do not change it)."""
        rt = self._agents.get(agent_id)
        if rt is None:
            raise AcdError("unknown_agent", f"agent {agent_id} is not known to the ACD")
        return rt

    def contact(self, contact_id: str) -> Contact:
        """The contact (the engine's own object: read it, do not change it)."""
        return self._contact(contact_id)

    # --- transitions -----------------------------------------------------------------------------

    def _reserve(self, c: Contact, aid: int, now: float) -> None:
        rt = self._agents[aid]
        extension = self._profiles[aid].extension
        assert extension is not None  # only agents with a registered extension are available
        cfg = self._config(c)
        c.offers += 1
        c.reservation = Reservation(
            id=str(uuid.uuid5(_ID_NS, f"reservation:{c.id}:{c.offers}")),
            contact_id=c.id,
            agent_id=aid,
            extension=extension,
            created_at=now,
            deadline=now + cfg.ring_timeout_s + self._policy.reservation_grace_s,
        )
        c.state = "reserved"
        self._place(c)
        self._changes.contacts.add(c.id)
        before = _snap(rt)
        rt.reserved_for = c.id
        self._emit(
            "contact.offered",
            now,
            c,
            agent_id=aid,
            data={
                "reservation_id": c.reservation.id,
                "extension": extension,
                "ring_timeout_s": cfg.ring_timeout_s,
            },
        )
        self._agent_done(rt, before, "acd", now)
        self._changes.offers.append(
            Offer(
                gateway=c.gateway,
                contact_id=c.id,
                reservation_id=c.reservation.id,
                agent_id=aid,
                extension=extension,
                ring_timeout_s=cfg.ring_timeout_s,
                queue=c.queue,
                attributes=dict(c.attributes),
            )
        )
        self._push(c.reservation.deadline, _DEADLINE, c.seq, c.id)

    def _answer(self, c: Contact, now: float) -> None:
        assert c.reservation is not None
        res = c.reservation
        rt = self._agents[res.agent_id]
        before = _snap(rt)
        rt.reserved_for = None
        rt.connected[c.id] = c.channel
        rt.idle_since = now  # given work: other channels' longest-idle order puts it last
        c.state, c.agent_id, c.answered_at, c.reservation = "connected", rt.agent_id, now, None
        self._place(c)
        self._changes.contacts.add(c.id)
        self._emit(
            "contact.answered",
            now,
            c,
            agent_id=rt.agent_id,
            data={"reservation_id": res.id, "wait_s": float(now - c.enqueued_at)},
        )
        self._agent_done(rt, before, "acd", now)

    def _offer_failed(self, c: Contact, outcome: str, reason: str, now: float) -> None:
        assert c.reservation is not None
        res = c.reservation
        rt = self._agents[res.agent_id]
        before = _snap(rt)
        rt.reserved_for = None
        if outcome == "unreachable":
            rt.status, rt.reason = "logged_out", "unreachable"
        elif rt.status == "ready":
            rt.status, rt.reason = self._policy.no_answer_status, outcome
        c.reservation, c.state = None, "waiting"
        if res.agent_id not in c.refused:
            c.refused.append(res.agent_id)
        self._place(c)
        self._changes.contacts.add(c.id)
        self._emit(
            "contact.offer_failed",
            now,
            c,
            agent_id=res.agent_id,
            data={"reservation_id": res.id, "reason": reason},
        )
        self._agent_done(rt, before, "acd", now)
        # Its maximum wait was not enforced while it rang.
        self._push(max(now, c.enqueued_at + self._config(c).max_wait_s), _MAX_WAIT, c.seq, c.id)

    def _leave(self, c: Contact, kind: str, now: float, data: dict[str, Any], with_position: bool) -> None:
        """A waiting or ringing contact leaves the queue (abandoned or callback)."""
        if with_position:
            data = {**data, "position": self._position(c), "entry_position": c.entry.position}
        agent_id = c.reservation.agent_id if c.reservation is not None else None
        self._emit(kind, now, c, agent_id=agent_id, data=data)
        if agent_id is not None:
            # Its phone stops ringing (the gateway cancels): back to idle, keeping its place in line.
            rt = self._agents[agent_id]
            before = _snap(rt)
            rt.reserved_for = None
            self._agent_done(rt, before, "acd", now)
        self._remove(c)

    def _steps_due(self, c: Contact, now: float) -> None:
        while c.id in self._contacts and c.state != "connected":
            cfg = self._config(c)
            if c.step >= len(cfg.overflow):
                return
            step = cfg.overflow[c.step]
            due = c.entered_at + step.after_s
            if due > now:
                return
            if step.queue is not None and step.queue in self._queues:
                from_queue, number = c.queue, c.step + 1
                c.queue, c.step, c.entered_at, c.moved = step.queue, 0, due, True
                c.carried_skills = dict(step.skills) if step.skills is not None else None
                c.queue_config = None
                c.priority = clamp_priority(self._queues[step.queue].priority + c.base_priority)
                self._emit("contact.overflowed", now, c, data={"from_queue": from_queue, "step": number})
            else:  # widen (a move to a queue no longer configured only widens, if it can)
                c.step += 1
            self._place(c)
            self._changes.contacts.add(c.id)
            self._arm(c)

    def _wraps_due(self, aid: int, now: float) -> None:
        rt = self._agents.get(aid)
        if rt is None:
            return
        due = sorted((w for w in rt.wraps if w.ends_at <= now), key=lambda w: (w.ends_at, w.contact_id))
        if not due:
            return
        before = _snap(rt)
        for w in due:
            self._close_wrap(rt, w, w.ends_at, "", "", closed_by="timer")
        self._agent_done(rt, before, "acd", now)

    def _close_wrap(
        self, rt: AgentRuntime, w: WrapUp, at: float, disposition: str, note: str, closed_by: str
    ) -> None:
        wrap_s = at - w.started_at
        rt.wraps.remove(w)
        rt.recent = [*rt.recent, w][-RECENT_WRAPS:]
        rt.handled_s += wrap_s
        self._handle.setdefault(w.queue, deque(maxlen=AHT_WINDOW)).append(w.handled_s + wrap_s)
        if rt.state == "idle":
            rt.idle_since = at
        self._wrap_event(rt.agent_id, w, at, wrap_s, disposition, note, closed_by)

    def _wrap_event(
        self, aid: int, w: WrapUp, at: float, wrap_s: float, disposition: str, note: str, closed_by: str
    ) -> None:
        self._changes.events.append(
            Event(
                kind="contact.wrapup_done",
                at=datetime.fromtimestamp(at, UTC),
                contact_id=w.contact_id,
                call_id=w.call_id,
                queue=w.queue,
                agent_id=aid,
                data={
                    "wrap_s": float(wrap_s),
                    "disposition": disposition,
                    "note": note,
                    "closed_by": closed_by,
                },
            )
        )

    def _log_out(self, rt: AgentRuntime, reason: str, by: str, now: float) -> None:
        before = _snap(rt)
        rt.status, rt.reason = "logged_out", reason
        self._agent_done(rt, before, by, now)

    def _remove(self, c: Contact) -> None:
        self._router.place(c.id, None, None, entry(c, self._policy))
        del self._contacts[c.id]
        self._changes.contacts.discard(c.id)
        self._changes.removed.add(c.id)
        self._pending_contacts.discard(c.id)

    # --- helpers ---------------------------------------------------------------------------------

    def _agent_done(self, rt: AgentRuntime, before: _Snapshot, by: str, now: float) -> None:
        """After a change to an agent: record it, emit agent.state if status, state or reason changed
        (one event for all of them), and update its availability."""
        self._changes.agents.add(rt.agent_id)
        if _snap(rt) != before:
            rt.since = now
            self._emit(
                "agent.state",
                now,
                None,
                agent_id=rt.agent_id,
                data={
                    "status": rt.status,
                    "state": rt.state,
                    "reason": rt.reason,
                    "previous_status": before[0],
                    "previous_state": before[1],
                    "by": by,
                },
            )
        self._sync_agent(rt)

    def _sync_agent(self, rt: AgentRuntime) -> None:
        prof = self._profiles.get(rt.agent_id)
        channels: list[str] = []
        if (
            prof is not None
            and rt.status == "ready"
            and rt.reserved_for is None
            and not rt.wraps
            and self._is_registered(prof)
        ):
            load = Counter(rt.connected.values())
            channels = [ch for ch, cap in prof.capacity.items() if load[ch] < cap]
        if self._router.set_open(rt.agent_id, channels, rt.idle_since):
            self._pending_agents.add(rt.agent_id)

    def _place(self, c: Contact) -> None:
        """Tell the router where the contact stands; a contact that became routable (or changed its
        requirement or place) needs a routing decision."""
        at = entry(c, self._policy)
        if c.state == "connected":
            self._router.place(c.id, None, None, at)
            return
        key = self._key(c) if c.state == "waiting" else None
        if self._router.place(c.id, c.queue, key, at):
            self._pending_contacts.add(c.id)

    def _arm(self, c: Contact) -> None:
        """Timers for the contact's next overflow step and its maximum wait."""
        cfg = self._config(c)
        if c.step < len(cfg.overflow):
            self._push(c.entered_at + cfg.overflow[c.step].after_s, _STEP, c.seq, c.id)
        self._push(c.enqueued_at + cfg.max_wait_s, _MAX_WAIT, c.seq, c.id)

    def _push(self, due: float, kind: int, tie: int, cid: str) -> None:
        heapq.heappush(self._timers, (due, kind, tie, cid))

    def _key(self, c: Contact) -> PoolKey:
        return pool_key(c.channel, c.language, requirement(c, self._config(c)))

    def _estimate(self, c: Contact, position: int) -> tuple[float | None, int]:
        """(EWT, staffed qualified agents): position * AHT / staffed; None when none is staffed."""
        qualified = self._router.qualified(self._key(c))
        staffed = sum(1 for aid in qualified if self._agents[aid].status != "logged_out")
        if staffed == 0:
            return None, 0
        samples = self._handle.get(c.queue)
        aht = sum(samples) / len(samples) if samples else float(self._config(c).default_aht_s)
        return position * aht / staffed, staffed

    def _position(self, c: Contact) -> int:
        position = self._router.position(c.id)
        if position is None:
            raise AcdError("bad_state", f"contact {c.id!r} is connected to an agent, no longer in a queue")
        return position

    def _config(self, c: Contact) -> QueueConfig:
        return c.queue_config if c.queue_config is not None else self._queues[c.queue]

    def _queue(self, name: str) -> QueueConfig:
        cfg = self._queues.get(name)
        if cfg is None:
            known = ", ".join(sorted(self._queues)) or "none"
            raise AcdError("unknown_queue", f"queue {name!r} is not configured (configured: {known})")
        return cfg

    def _contact(self, contact_id: str) -> Contact:
        c = self._contacts.get(contact_id)
        if c is None:
            raise AcdError(
                "unknown_contact", f"contact {contact_id!r} is not in the ACD (never queued, or it left)"
            )
        return c

    def _not_connected(self, c: Contact, action: str) -> None:
        if c.state == "connected":
            raise AcdError(
                "bad_state",
                f"cannot {action} contact {c.id!r}: it is connected to agent {c.agent_id}; "
                "end it with contact_end",
            )

    def _is_registered(self, prof: AgentProfile) -> bool:
        return prof.extension is not None and (self._registered is None or prof.extension in self._registered)

    def _by_seq(self) -> list[Contact]:
        return sorted(self._contacts.values(), key=lambda c: c.seq)

    def _emit(
        self,
        kind: str,
        now: float,
        c: Contact | None,
        *,
        agent_id: int | None = None,
        data: dict[str, Any],
    ) -> None:
        self._changes.events.append(
            Event(
                kind=kind,
                at=datetime.fromtimestamp(now, UTC),
                contact_id=c.id if c is not None else None,
                call_id=c.call_id if c is not None else None,
                queue=c.queue if c is not None else None,
                agent_id=agent_id,
                data=data,
            )
        )


def _snap(rt: AgentRuntime) -> _Snapshot:
    return (rt.status, rt.state, rt.reason)


def _checked_queues(queues: Mapping[str, QueueConfig]) -> dict[str, QueueConfig]:
    for name, cfg in queues.items():
        if name != cfg.name:
            raise ValueError(f"queue mapping: key {name!r} holds the configuration of queue {cfg.name!r}")
    return dict(queues)
