"""The ACD engine's rules, one behaviour per test: who gets which contact and when, what agents and
contacts go through (offer, answer, no answer, wrap-up, overflow, abandon), and what it records."""

from __future__ import annotations

import uuid
from typing import Any, get_args

import pytest

from aicc.appliance.acd import commands as cmds
from aicc.appliance.acd.engine import Acd, AcdError
from aicc.appliance.acd.model import AgentRuntime, Changes, Contact
from aicc.appliance.acd.policy import AgentProfile, OverflowStep, QueueConfig, RoutingPolicy

T0 = 1_767_000_000.0


def queue(name: str = "sales", **kw: Any) -> QueueConfig:
    return QueueConfig.model_validate({"name": name, "language": "zh", **kw})


def agent(ext: str | None, skills: dict[str, int] | None = None, **kw: Any) -> AgentProfile:
    return AgentProfile.model_validate({"extension": ext, "skills": skills or {}, **kw})


class Site:
    """An engine with a clock, driven the way the ACD service drives it: command, route, drain."""

    def __init__(
        self,
        queues: list[QueueConfig],
        agents: dict[int, AgentProfile],
        policy: RoutingPolicy | None = None,
        phone_grace_s: float = 0.0,
    ) -> None:
        self.policy = policy or RoutingPolicy()
        self.acd = Acd(self.policy, {q.name: q for q in queues}, agents, phone_grace_s=phone_grace_s)
        self.now = T0

    def at(self, seconds: float) -> float:
        self.now = T0 + seconds
        return self.now

    def step(self) -> Changes:
        self.acd.tick(self.now)
        self.acd.route(self.now)
        return self.acd.drain()

    def ready(self, *agent_ids: int) -> Changes:
        for aid in agent_ids:
            self.acd.set_status(agent_id=aid, status="ready", reason="", by="agent", now=self.now)
        return self.step()

    def enqueue(self, cid: str, q: str = "sales", **kw: Any) -> dict[str, Any]:
        args: dict[str, Any] = {
            "channel": "voice",
            "language": "zh",
            "priority": 0,
            "tier": None,
            "skills": {},
            "attributes": {},
            "gateway": "gw1",
            "call_id": f"call-{cid}",
            "caller": "+8613800000000",
            **kw,
        }
        return self.acd.enqueue(contact_id=cid, queue=q, now=self.now, **args)

    def offer(self, cid: str) -> str:
        res = self.acd.contact(cid).reservation
        assert res is not None, f"{cid} is not offered"
        return res.id

    def answer(self, cid: str) -> Changes:
        self.acd.offer_result(
            reservation_id=self.offer(cid), contact_id=cid, outcome="answered", now=self.now
        )
        return self.step()

    def end(self, cid: str, talk_s: float = 60.0, hold_s: float = 0.0) -> Changes:
        self.acd.contact_end(contact_id=cid, talk_s=talk_s, hold_s=hold_s, ended_by="caller", now=self.now)
        return self.step()

    def offered_to(self, cid: str) -> int | None:
        res = self.acd.contact(cid).reservation
        return res.agent_id if res is not None else None


def kinds(changes: Changes) -> list[str]:
    return [e.kind for e in changes.events]


def event(changes: Changes, kind: str) -> Any:
    found = [e for e in changes.events if e.kind == kind]
    assert len(found) == 1, f"{kind}: {[e.kind for e in changes.events]}"
    return found[0]


# --- offering ------------------------------------------------------------------------------------


def test_a_contact_is_offered_to_a_ready_qualified_agent_with_the_offer_and_events() -> None:
    site = Site(
        [queue(skills={"billing": 2})], {1: agent("1001", {"billing": 1}), 2: agent("1002", {"billing": 3})}
    )
    site.ready(1, 2)
    site.at(5)
    result = site.enqueue("c1", attributes={"service": "hotline"})
    assert result == {"position": 1, "ewt_s": 180.0, "staffed": 1, "callback_offer": True}
    changes = site.step()
    assert kinds(changes) == ["contact.queued", "contact.offered", "agent.state"]
    queued = event(changes, "contact.queued")
    assert (queued.contact_id, queued.queue, queued.call_id) == ("c1", "sales", "call-c1")
    assert queued.data == {
        "channel": "voice",
        "language": "zh",
        "priority": 0,
        "tier": None,
        "position": 1,
        "call_id": "call-c1",
        "service": "hotline",
    }
    assert queued.at.timestamp() == T0 + 5
    offered = event(changes, "contact.offered")
    assert offered.agent_id == 2  # agent 1's billing level 1 is below the queue's minimum 2
    reservation = site.offer("c1")
    assert uuid.UUID(reservation)
    assert offered.data == {"reservation_id": reservation, "extension": "1002", "ring_timeout_s": 15}
    (offer,) = changes.offers
    assert offer.to_json() == {
        "gateway": "gw1",
        "contact_id": "c1",
        "reservation_id": reservation,
        "agent_id": 2,
        "extension": "1002",
        "ring_timeout_s": 15,
        "queue": "sales",
        "attributes": {"service": "hotline"},
    }
    state = event(changes, "agent.state")
    assert state.agent_id == 2
    assert state.data == {
        "status": "ready",
        "state": "reserved",
        "reason": "",
        "previous_status": "ready",
        "previous_state": "idle",
        "by": "acd",
    }
    assert changes.agents == {2} and changes.contacts == {"c1"}


def test_agents_who_are_away_logged_out_or_lack_the_language_get_nothing() -> None:
    site = Site(
        [queue()],
        {1: agent("1001"), 2: agent("1002"), 3: agent("1003", languages=["en"])},
    )
    site.ready(1, 3)
    site.acd.set_status(agent_id=1, status="away", reason="lunch", by="agent", now=site.now)
    site.enqueue("c1")
    changes = site.step()
    assert changes.offers == []
    site.ready(2)
    assert site.offered_to("c1") == 2


def test_longest_idle_agent_is_chosen_by_default() -> None:
    site = Site([queue()], {1: agent("1001"), 2: agent("1002"), 3: agent("1003")})
    site.ready(2)
    site.at(10)
    site.ready(1, 3)
    site.at(20)
    site.enqueue("c1")
    site.step()
    assert site.offered_to("c1") == 2


def test_best_skilled_policy_prefers_the_highest_proficiency_on_the_required_skills() -> None:
    site = Site(
        [queue(skills={"billing": 1, "vip": 1})],
        {1: agent("1001", {"billing": 2, "vip": 2}), 2: agent("1002", {"billing": 5, "vip": 4})},
        RoutingPolicy(agent_selection="best_skilled"),
    )
    site.ready(1)
    site.at(30)
    site.ready(2)
    site.enqueue("c1")
    site.step()
    assert site.offered_to("c1") == 2


def test_least_occupied_policy_prefers_the_agent_who_handled_less_of_their_time() -> None:
    site = Site(
        [queue(wrap_up_s=0)],
        {1: agent("1001"), 2: agent("1002")},
        RoutingPolicy(agent_selection="least_occupied"),
    )
    site.ready(1, 2)
    site.enqueue("c1")
    site.step()
    assert site.offered_to("c1") == 1  # same occupancy (none): longest idle, then id
    site.answer("c1")
    site.at(600)
    site.end("c1", talk_s=590)  # agent 1: 590 s handled of 600 staffed
    site.enqueue("c2")
    site.step()
    assert site.offered_to("c2") == 2


def test_an_agent_busy_on_a_call_can_take_chats_up_to_its_chat_capacity() -> None:
    site = Site(
        [queue(), queue("web", channel="chat")],
        {1: agent("1001", capacity={"voice": 1, "chat": 2})},
    )
    site.ready(1)
    site.enqueue("v1")
    site.step()
    site.answer("v1")
    site.enqueue("v2")
    site.enqueue("chat1", "web", channel="chat")
    site.enqueue("chat2", "web", channel="chat")
    site.enqueue("chat3", "web", channel="chat")
    site.step()
    assert site.offered_to("v2") is None  # voice capacity 1, in use
    assert site.offered_to("chat1") == 1
    site.answer("chat1")
    assert site.offered_to("chat2") == 1
    site.answer("chat2")
    assert site.offered_to("chat3") is None
    assert site.acd.agent(1).state == "busy"


def test_a_contact_enqueued_again_keeps_the_wait_it_had_for_its_place_and_max_wait() -> None:
    """A chat back in the queue (its agent did not reply) comes with the wait it had: it goes ahead of
    those that came after it first joined, and its maximum wait counts from then."""
    site = Site([queue(max_wait_s=300)], {1: agent("1001")})
    site.enqueue("later")
    site.at(60)
    site.enqueue("back", waited_s=100.0)  # first queued at -40 s: before "later"
    assert site.acd.position("back") == 1 and site.acd.position("later") == 2
    assert site.acd.contact("back").enqueued_at == site.now - 100.0
    assert site.acd.contact("back").entered_at == site.now  # its overflow clock starts now
    site.at(259)
    assert "contact.abandoned" not in kinds(site.step())
    site.at(260)
    assert event(site.step(), "contact.abandoned").contact_id == "back"


# --- order -----------------------------------------------------------------------------------------


def test_tier_offset_puts_a_vip_ahead_of_earlier_standard_callers() -> None:
    site = Site([queue()], {1: agent("1001")})
    site.enqueue("std", tier="standard")
    site.at(100)
    site.enqueue("gold", tier="gold")  # +60 s: behind std (waited 100 s)
    site.enqueue("vip", tier="vip")  # +180 s: ahead of std
    site.enqueue("unknown", tier="platinum")  # unknown tier counts as the default (standard)
    assert [site.acd.position(c) for c in ("vip", "std", "gold", "unknown")] == [1, 2, 3, 4]
    site.ready(1)
    assert site.offered_to("vip") == 1


def test_priority_goes_first_until_aging_overtakes_it() -> None:
    site = Site([queue(priority=1)], {1: agent("1001")}, RoutingPolicy(priority_weight_s=60.0))
    site.enqueue("old")  # priority 1 (the queue's)
    site.at(90)
    site.enqueue("urgent", priority=2)  # priority 3: +120 s over old, which waited 90 s
    assert site.acd.contact("urgent").priority == 3
    assert site.acd.position("urgent") == 1
    site.at(200)
    site.enqueue("urgent2", priority=2)  # old has waited 200 s: more than 120 s of priority
    assert [site.acd.position(c) for c in ("urgent", "old", "urgent2")] == [1, 2, 3]
    site.ready(1)
    assert site.offered_to("urgent") == 1


def test_equal_scores_are_served_in_arrival_order() -> None:
    site = Site([queue()], {1: agent("1001")})
    for cid in ("a", "b", "c"):
        site.enqueue(cid)
    assert [site.acd.position(c) for c in ("a", "b", "c")] == [1, 2, 3]
    site.ready(1)
    assert site.offered_to("a") == 1


def test_an_agent_takes_the_best_scored_contact_across_its_queues() -> None:
    site = Site(
        [queue("a", skills={"x": 1}), queue("b", skills={"y": 1})], {1: agent("1001", {"x": 1, "y": 1})}
    )
    site.enqueue("in-a", "a")
    site.at(10)
    site.enqueue("in-b", "b", tier="gold")  # +60 s: better than in-a's 10 s of waiting
    site.ready(1)
    assert site.offered_to("in-b") == 1


# --- answer, no answer, wrap-up -------------------------------------------------------------------


def test_wrap_up_lasts_the_queues_timer_and_is_never_available() -> None:
    site = Site([queue(wrap_up_s=30)], {1: agent("1001")})
    site.ready(1)
    site.enqueue("c1")
    site.step()
    site.at(2)
    reservation = site.offer("c1")
    answered = site.answer("c1")
    assert event(answered, "contact.answered").data == {"reservation_id": reservation, "wait_s": 2.0}
    assert site.acd.agent(1).state == "busy"
    site.at(100)
    ended = site.end("c1", talk_s=95, hold_s=3)
    assert event(ended, "contact.ended").data == {"talk_s": 95.0, "hold_s": 3.0, "ended_by": "caller"}
    assert ended.removed == {"c1"}
    assert site.acd.agent(1).state == "wrap_up"
    site.enqueue("c2")
    site.at(129)
    assert site.step().offers == []  # wrap-up: not offered
    site.at(130)
    changes = site.step()
    done = event(changes, "contact.wrapup_done")
    assert done.contact_id == "c1" and done.agent_id == 1
    assert done.data == {"wrap_s": 30.0, "disposition": "", "note": "", "closed_by": "timer"}
    assert site.offered_to("c2") == 1


def test_wrapup_done_ends_wrap_up_early_and_a_late_disposition_is_still_recorded() -> None:
    site = Site([queue(wrap_up_s=60)], {1: agent("1001")})
    site.ready(1)
    site.enqueue("c1")
    site.step()
    site.answer("c1")
    site.end("c1")
    site.at(10)
    site.acd.wrapup_done(agent_id=1, contact_id="c1", disposition="solved", note="ok", now=site.now)
    changes = site.step()
    assert event(changes, "contact.wrapup_done").data == {
        "wrap_s": 10.0,
        "disposition": "solved",
        "note": "ok",
        "closed_by": "agent",
    }
    assert site.acd.agent(1).state == "idle"
    site.acd.wrapup_done(agent_id=1, contact_id="c1", disposition="sale", note="", now=site.now)
    late = event(site.step(), "contact.wrapup_done")
    assert (
        late.data["closed_by"] == "late" and late.data["wrap_s"] == 0.0 and late.data["disposition"] == "sale"
    )
    with pytest.raises(AcdError) as err:
        site.acd.wrapup_done(agent_id=1, contact_id=None, disposition="x", note="", now=site.now)
    assert err.value.code == "bad_state"


def test_zero_wrap_up_makes_the_agent_idle_at_once() -> None:
    site = Site([queue(wrap_up_s=0)], {1: agent("1001")})
    site.ready(1)
    site.enqueue("c1")
    site.enqueue("c2")
    site.step()
    site.answer("c1")
    changes = site.end("c1")
    assert kinds(changes)[:2] == ["contact.ended", "contact.wrapup_done"]
    assert site.offered_to("c2") == 1


def test_no_answer_makes_the_agent_away_and_the_contact_waits_again_in_its_place() -> None:
    site = Site([queue()], {1: agent("1001"), 2: agent("1002")})
    site.enqueue("first")
    site.at(5)
    site.enqueue("second")
    site.ready(1)
    assert site.offered_to("first") == 1
    missed = site.offer("first")
    site.acd.offer_result(reservation_id=missed, contact_id="first", outcome="no_answer", now=site.now)
    changes = site.step()
    failed = event(changes, "contact.offer_failed")
    assert failed.agent_id == 1 and failed.data == {"reservation_id": missed, "reason": "no_answer"}
    assert event(changes, "agent.state").data == {
        "status": "away",
        "state": "idle",
        "reason": "no_answer",
        "previous_status": "ready",
        "previous_state": "reserved",
        "by": "acd",
    }
    assert site.acd.position("first") == 1
    site.ready(2)
    assert site.offered_to("first") == 2
    assert site.offer("first") != missed


def test_unreachable_phone_logs_the_agent_out() -> None:
    site = Site([queue()], {1: agent("1001")})
    site.ready(1)
    site.enqueue("c1")
    site.step()
    site.acd.offer_result(
        reservation_id=site.offer("c1"), contact_id="c1", outcome="unreachable", now=site.now
    )
    site.step()
    rt = site.acd.agent(1)
    assert (rt.status, rt.reason, rt.state) == ("logged_out", "unreachable", "idle")


def test_a_ring_with_no_report_by_the_deadline_counts_as_no_answer() -> None:
    site = Site([queue(ring_timeout_s=20)], {1: agent("1001")}, RoutingPolicy(reservation_grace_s=5))
    site.ready(1)
    site.enqueue("c1")
    site.step()
    reservation = site.offer("c1")
    site.at(24.9)
    assert site.step().events == []
    site.at(25)
    changes = site.step()
    assert event(changes, "contact.offer_failed").data == {"reservation_id": reservation, "reason": "timeout"}
    assert (site.acd.agent(1).status, site.acd.agent(1).reason) == ("away", "no_answer")
    with pytest.raises(AcdError) as err:  # the gateway's report comes too late
        site.acd.offer_result(reservation_id=reservation, contact_id="c1", outcome="answered", now=site.now)
    assert err.value.code == "bad_state"


def test_an_agent_who_missed_a_contact_is_not_offered_it_again_while_another_is_available() -> None:
    site = Site(
        [queue(skills={"x": 1})],
        {1: agent("1001", {"x": 5}), 2: agent("1002", {"x": 4}), 3: agent("1003", {"x": 3})},
        RoutingPolicy(agent_selection="best_skilled"),
    )
    site.ready(1, 2, 3)
    site.enqueue("c1")
    site.step()
    assert site.offered_to("c1") == 1
    site.acd.offer_result(reservation_id=site.offer("c1"), contact_id="c1", outcome="rejected", now=site.now)
    site.step()
    assert site.offered_to("c1") == 2
    site.ready(1)  # the best skilled is back
    site.acd.offer_result(reservation_id=site.offer("c1"), contact_id="c1", outcome="busy", now=site.now)
    site.step()
    assert site.offered_to("c1") == 3  # not 1 again: 3 has not missed it


def test_a_missed_contact_goes_back_to_the_same_agent_when_no_one_else_is_available() -> None:
    site = Site([queue()], {1: agent("1001")})
    site.ready(1)
    site.enqueue("c1")
    site.step()
    site.acd.offer_result(reservation_id=site.offer("c1"), contact_id="c1", outcome="no_answer", now=site.now)
    site.step()
    site.at(30)
    site.ready(1)
    assert site.offered_to("c1") == 1


# --- overflow ----------------------------------------------------------------------------------------


def test_overflow_widens_the_requirement_then_moves_the_contact_keeping_its_total_wait() -> None:
    steps = [OverflowStep(after_s=30, skills={"support": 1}), OverflowStep(after_s=60, queue="general")]
    site = Site(
        [
            queue("vip", skills={"vip": 3}, overflow=steps),
            queue("general", skills={"general": 1}, overflow=[OverflowStep(after_s=20, skills={})]),
        ],
        {
            1: agent("1001", {"support": 1}),
            2: agent("1002", {"general": 1}),
            3: agent("1003", {"other": 1}),
            4: agent("1004", {"other": 1}),
        },
    )
    site.enqueue("c1", "vip", skills={"support": 3})  # its own extra need, dropped when widened
    site.at(10)
    site.enqueue("g1", "general")  # widened at 30 s by general's own step
    site.at(29)
    site.ready(1)
    assert site.offered_to("c1") is None  # support 1 < 3 (its own extra), and no vip skill
    site.at(30)
    site.step()
    assert site.offered_to("c1") == 1  # widened: support >= 1, its extras no longer apply
    site.acd.offer_result(reservation_id=site.offer("c1"), contact_id="c1", outcome="no_answer", now=site.now)
    site.step()
    site.at(60)
    moved = event(site.step(), "contact.overflowed")
    assert (moved.contact_id, moved.queue, moved.data) == ("c1", "general", {"from_queue": "vip", "step": 2})
    assert site.acd.contact("c1").queue == "general"
    assert site.acd.position("c1") == 1  # enqueued before g1: ahead of it in general
    site.at(79)
    site.ready(3)
    assert site.offered_to("c1") is None  # general's skill is needed until its step, 20 s after the move
    assert site.offered_to("g1") == 3
    site.at(80)
    site.ready(4)
    assert site.offered_to("c1") == 4


def test_a_contact_waiting_past_max_wait_is_abandoned_with_reason_timeout() -> None:
    site = Site([queue(max_wait_s=60)], {1: agent("1001")})
    site.enqueue("c1")
    site.step()
    site.at(59)
    assert site.step().events == []
    site.at(61)
    gone = event(site.step(), "contact.abandoned")
    assert gone.data == {
        "wait_s": 61.0,
        "reason": "timeout",
        "gateway": "gw1",
        "position": 1,
        "entry_position": 1,
    }
    with pytest.raises(AcdError):
        site.acd.contact("c1")


# --- leaving ---------------------------------------------------------------------------------------


def test_abandon_while_ringing_frees_the_agent_for_the_next_contact() -> None:
    site = Site([queue()], {1: agent("1001")})
    site.ready(1)
    site.enqueue("c1")
    site.step()
    site.enqueue("c2")
    site.at(8)
    site.acd.abandon(contact_id="c1", reason="caller_hangup", now=site.now)
    changes = site.step()
    gone = event(changes, "contact.abandoned")
    assert gone.agent_id == 1
    assert gone.data == {
        "wait_s": 8.0,
        "reason": "caller_hangup",
        "gateway": "gw1",
        "position": 1,
        "entry_position": 1,
    }
    assert "c1" in changes.removed
    assert site.offered_to("c2") == 1


def test_a_contact_taken_by_hand_is_answered_by_that_agent_and_a_ring_for_another_stops() -> None:
    chat = queue("chat", channel="chat")
    site = Site([chat], {1: agent("1001", capacity={"chat": 2}), 2: agent("1002", capacity={"chat": 1})})
    site.ready(1)
    site.enqueue("c1", "chat", channel="chat")
    site.step()
    assert site.offered_to("c1") == 1
    site.at(12)
    # Agent 2 (away, never offered it) takes it by hand while it rings for agent 1.
    site.acd.assign(contact_id="c1", agent_id=2, now=site.now)
    changes = site.step()
    failed = event(changes, "contact.offer_failed")
    assert failed.agent_id == 1 and failed.data["reason"] == "taken"
    answered = event(changes, "contact.answered")
    assert answered.agent_id == 2 and answered.data == {"wait_s": 12.0, "by": "hand"}
    assert site.acd.contact("c1").state == "connected" and site.acd.contact("c1").agent_id == 2
    assert site.acd.agent(2).connected == {"c1": "chat"}  # in agent 2's capacity
    rt1 = site.acd.agent(1)
    assert rt1.status == "ready" and rt1.reserved_for is None  # taken, not missed: agent 1 stays ready
    # The next chat goes to agent 1; agent 2 is full (capacity 1) even when ready.
    site.ready(2)
    site.enqueue("c2", "chat", channel="chat")
    site.step()
    assert site.offered_to("c2") == 1
    with pytest.raises(AcdError) as connected:
        site.acd.assign(contact_id="c1", agent_id=1, now=site.now)
    assert connected.value.code == "bad_state"
    with pytest.raises(AcdError) as unknown:
        site.acd.assign(contact_id="c2", agent_id=9, now=site.now)
    assert unknown.value.code == "unknown_agent"
    site.end("c1")
    assert site.acd.agent(2).connected == {}


def test_every_command_kind_parses() -> None:
    assert set(cmds.BY_KIND) == {
        get_args(c.model_fields["kind"].annotation)[0] for c in get_args(cmds.Command)
    }


def test_a_callback_takes_the_contact_out_of_the_queue() -> None:
    site = Site([queue()], {1: agent("1001")})
    site.enqueue("c1")
    site.enqueue("c2")
    site.at(40)
    result = site.acd.take_callback(
        contact_id="c1", queue="sales", number="+86138", language="zh", now=site.now
    )
    changes = site.step()
    (cb,) = changes.callbacks
    assert cb.id == result["callback_id"] and (cb.contact_id, cb.number, cb.requested_at) == (
        "c1",
        "+86138",
        site.now,
    )
    assert event(changes, "contact.callback").data == {"wait_s": 40.0, "callback_id": cb.id}
    assert site.acd.position("c2") == 1


def test_a_lost_gateway_abandons_its_waiting_contacts_and_ends_its_calls() -> None:
    site = Site([queue(wrap_up_s=10)], {1: agent("1001")})
    site.ready(1)
    site.enqueue("talking", gateway="gw1")
    site.step()
    site.answer("talking")
    site.enqueue("waiting", gateway="gw1")
    site.enqueue("elsewhere", gateway="gw2")
    site.at(50)
    site.acd.gateways_lost({"gw1"}, site.now)
    changes = site.step()
    assert event(changes, "contact.abandoned").data["reason"] == "gateway_lost"
    ended = event(changes, "contact.ended").data
    assert (ended["ended_by"], ended["reason"], ended["talk_s"]) == ("system", "gateway_lost", 50.0)
    assert site.acd.gateways() == {"gw2"}
    assert changes.removed == {"talking", "waiting"}
    assert site.acd.agent(1).state == "wrap_up"
    assert site.acd.position("elsewhere") == 1


# --- registrations and status --------------------------------------------------------------------


def test_an_agent_whose_phone_unregisters_is_logged_out_but_keeps_its_call() -> None:
    site = Site([queue()], {1: agent("1001"), 2: agent("1002")})
    site.ready(1, 2)  # before any registrations: every extension counts as registered
    site.enqueue("c1")
    site.step()
    site.answer("c1")
    site.acd.registrations({"1002"}, site.now)
    changes = site.step()
    assert event(changes, "agent.state").data["reason"] == "unregistered"
    rt = site.acd.agent(1)
    assert (rt.status, rt.state) == ("logged_out", "busy")
    assert site.acd.contact("c1").state == "connected"
    with pytest.raises(AcdError) as err:
        site.acd.set_status(agent_id=1, status="ready", reason="", by="agent", now=site.now)
    assert err.value.code == "not_registered" and "1001" in err.value.message
    with pytest.raises(AcdError) as err:  # away too: its phone is gone
        site.acd.set_status(agent_id=1, status="away", reason="break", by="agent", now=site.now)
    assert err.value.code == "not_registered"
    site.acd.registrations({"1001", "1002"}, site.now)
    assert site.acd.set_status(agent_id=1, status="ready", reason="", by="agent", now=site.now) == {
        "status": "ready",
        "state": "busy",
        "reason": "",
    }


def test_a_phone_back_within_the_grace_keeps_the_agent_ready_and_gets_no_offer_meanwhile() -> None:
    site = Site([queue()], {1: agent("1001"), 2: agent("1002")}, phone_grace_s=15)
    site.acd.registrations({"1001", "1002"}, site.now)
    site.ready(1)
    site.acd.registrations({"1002"}, site.at(1))  # Kamailio restarted: the page registers again
    site.enqueue("c1")
    assert site.step().offers == [] and site.acd.agent(1).status == "ready"
    site.acd.registrations({"1002"}, site.at(15.5))
    assert site.step().offers == [] and site.acd.agent(1).status == "ready"
    site.acd.registrations({"1001", "1002"}, site.at(16))
    assert [o.agent_id for o in site.step().offers] == [1]
    assert site.acd.agent(1).phone_lost_at is None
    site.answer("c1")
    # Gone for longer than the grace (counted from when it was first missed): logged out.
    site.acd.registrations({"1002"}, site.at(20))
    site.acd.registrations({"1002"}, site.at(34.9))
    assert site.acd.agent(1).status == "ready"
    site.acd.registrations({"1002"}, site.at(35))
    changes = site.step()
    assert event(changes, "agent.state").data["reason"] == "unregistered"
    assert site.acd.agent(1).status == "logged_out"
    assert site.acd.contact("c1").state == "connected"  # the call goes on


def test_an_agent_without_extension_cannot_be_ready() -> None:
    site = Site([queue()], {1: agent(None)})
    with pytest.raises(AcdError) as err:
        site.acd.set_status(agent_id=1, status="ready", reason="", by="agent", now=site.now)
    assert err.value.code == "not_registered"


def test_each_status_change_emits_one_agent_state_event_with_who_did_it() -> None:
    site = Site([queue()], {1: agent("1001")})
    site.ready(1)
    site.acd.set_status(agent_id=1, status="away", reason="training", by="supervisor:li", now=site.now)
    changes = site.step()
    assert event(changes, "agent.state").data == {
        "status": "away",
        "state": "idle",
        "reason": "training",
        "previous_status": "ready",
        "previous_state": "idle",
        "by": "supervisor:li",
    }
    site.acd.set_status(agent_id=1, status="away", reason="training", by="agent", now=site.now)
    assert site.step().events == []  # nothing changed


# --- estimates and results ---------------------------------------------------------------------


def test_ewt_uses_default_aht_then_measured_handle_times_and_callback_offer_follows_it() -> None:
    cfg = queue(default_aht_s=200, wrap_up_s=20, callback={"enabled": True, "offer_after_ewt_s": 150})
    site = Site([cfg], {1: agent("1001"), 2: agent("1002")})
    first = site.enqueue("c0")
    assert first == {"position": 1, "ewt_s": None, "staffed": 0, "callback_offer": True}  # nobody staffed
    site.acd.set_status(agent_id=1, status="away", reason="", by="agent", now=site.now)
    site.acd.set_status(agent_id=2, status="away", reason="", by="agent", now=site.now)
    assert site.enqueue("c1") == {"position": 2, "ewt_s": 200.0, "staffed": 2, "callback_offer": True}
    assert site.acd.ewt("c0", site.now) == 100.0  # 1 * 200 / 2: under 150, no callback offered
    assert site.enqueue("c2")["callback_offer"] is True  # 3 * 200 / 2 = 300
    site.ready(1)
    site.answer("c0")
    site.at(100)
    site.end("c0", talk_s=70, hold_s=10)
    site.at(120)
    site.step()  # wrap-up ends: handle time 70 + 10 + 20 = 100 s
    site.acd.set_status(agent_id=1, status="away", reason="", by="agent", now=site.now)
    site.step()
    assert site.acd.ewt("c2", site.now) == pytest.approx(2 * 100 / 2)


def test_a_replayed_enqueue_gets_the_same_result_and_changes_nothing() -> None:
    site = Site([queue()], {1: agent("1001")})
    first = site.enqueue("c1")
    site.enqueue("c2")
    site.step()
    site.at(30)
    assert site.enqueue("c1", priority=50) == first
    changes = site.step()
    assert changes.events == [] and changes.contacts == set()


def test_commands_on_unknown_things_say_what_is_wrong() -> None:
    site = Site([queue()], {1: agent("1001")})
    with pytest.raises(AcdError) as err:
        site.enqueue("c1", "nope")
    assert err.value.code == "unknown_queue" and "sales" in err.value.message
    with pytest.raises(AcdError) as err:
        site.acd.abandon(contact_id="ghost", reason="caller_hangup", now=site.now)
    assert err.value.code == "unknown_contact"
    with pytest.raises(AcdError) as err:
        site.acd.set_status(agent_id=9, status="ready", reason="", by="agent", now=site.now)
    assert err.value.code == "unknown_agent"
    with pytest.raises(AcdError) as err:
        site.acd.set_status(agent_id=1, status="sleeping", reason="", by="agent", now=site.now)
    assert err.value.code == "bad_request"
    site.enqueue("c1")
    with pytest.raises(AcdError) as err:
        site.acd.contact_end(contact_id="c1", talk_s=1, hold_s=0, ended_by="agent", now=site.now)
    assert err.value.code == "bad_state"


def test_queue_stats_count_waiting_contacts_and_each_qualifying_agent_once() -> None:
    site = Site(
        [queue(skills={"x": 1})],
        {
            1: agent("1001", {"x": 1}),
            2: agent("1002", {"x": 2}),
            3: agent("1003"),
            4: agent("1004", {"x": 1}),
        },
    )
    site.ready(1, 2, 3)
    site.acd.set_status(agent_id=2, status="away", reason="", by="agent", now=site.now)
    site.enqueue("c1")
    site.step()
    site.enqueue("c2")
    site.at(50)
    stats = site.acd.queue_stats(site.now)["sales"]
    assert stats.waiting == 2 and stats.longest_wait_s == 50.0
    assert stats.agents == {"ready": 0, "reserved": 1, "busy": 0, "wrap_up": 0, "away": 1, "logged_out": 1}
    assert (stats.staffed, stats.available) == (2, 0)


# --- configuration and restart ----------------------------------------------------------------------


def test_reconfiguring_logs_out_removed_agents_and_keeps_a_removed_queues_config_for_its_contacts() -> None:
    site = Site([queue(ring_timeout_s=40), queue("other")], {1: agent("1001"), 2: agent("1002")})
    site.ready(1, 2)
    site.acd.set_status(agent_id=1, status="away", reason="", by="agent", now=site.now)
    site.acd.set_status(agent_id=2, status="away", reason="", by="agent", now=site.now)
    site.enqueue("c1")
    site.step()
    site.acd.configure(site.policy, {"other": queue("other")}, {1: agent("1001"), 2: agent(None)}, site.now)
    changes = site.step()
    assert site.acd.agent(2).status == "logged_out" and site.acd.agent(2).reason == "no_extension"
    assert "c1" in changes.contacts and site.acd.contact("c1").queue_config is not None
    site.ready(1)
    assert site.offered_to("c1") == 1
    assert site.acd.contact("c1").reservation.deadline == site.now + 40 + 5  # type: ignore[union-attr]
    site.acd.configure(site.policy, {"other": queue("other")}, {}, site.now)
    assert site.acd.agent(1).status == "logged_out" and site.acd.agent(1).reason == "removed"


def test_an_agent_added_by_a_reload_is_logged_out_then_works_like_the_others() -> None:
    site = Site([queue()], {1: agent("1001")})
    site.acd.configure(site.policy, {"sales": queue()}, {1: agent("1001"), 2: agent("1002")}, site.now)
    site.step()
    # Once a KeyError here: the new agent had a profile (so the router counted them) and no runtime.
    assert site.acd.queue_stats(site.now)["sales"].agents["logged_out"] == 2
    assert site.acd.agent(2).status == "logged_out"
    site.ready(2)
    site.enqueue("c1")
    site.step()
    assert site.offered_to("c1") == 2


def test_a_restored_engine_keeps_queue_order_reservations_and_agent_states() -> None:
    queues = [queue(), queue("vip", priority=5)]
    profiles = {1: agent("1001"), 2: agent("1002"), 3: agent("1003")}
    site = Site(queues, profiles)
    site.ready(1, 2)
    for n, q in enumerate(["sales", "vip", "sales", "vip", "sales"]):
        site.at(n)
        site.enqueue(f"c{n}", q, tier="gold" if n == 4 else None)
    site.step()
    site.answer(next(c for c in ("c1", "c3") if site.offered_to(c) == 1))
    agents = [AgentRuntime.from_json(site.acd.agent(a).to_json()) for a in profiles]
    contacts = [Contact.from_json(site.acd.contact(c).to_json()) for c in ("c0", "c1", "c2", "c3", "c4")]
    fresh = Acd(site.policy, {q.name: q for q in queues}, profiles)
    fresh.restore(agents, contacts, site.now, handle_times=site.acd.handle_times())
    fresh.route(site.now)
    assert fresh.drain().offers == []
    for cid in ("c0", "c2", "c3", "c4"):
        assert fresh.position(cid) == site.acd.position(cid)
        assert fresh.contact(cid).reservation == site.acd.contact(cid).reservation
    for aid in profiles:
        assert fresh.agent(aid).to_json() == site.acd.agent(aid).to_json()
    for engine in (fresh, site.acd):
        engine.set_status(agent_id=3, status="ready", reason="", by="agent", now=site.now)
        engine.route(site.now)
    assert [o.contact_id for o in fresh.drain().offers] == [o.contact_id for o in site.step().offers]
