"""The routing rules and the indexes that make each routing decision cheap.

Rules (the engine and any reference scan use these same functions):
- a contact's requirement at its overflow step (`requirement`), and who qualifies for it (`qualifies`:
  language, capacity on the channel, every required skill at its minimum proficiency);
- its place: `entry` = (virtual arrival, seq, id), ascending = best first. Score = wait_s + priority *
  priority_weight_s + tier offset, so ordering by virtual_arrival = enqueued_at - offsets gives the
  score order at any time, and a sorted structure never needs re-sorting as contacts age;
- the agent selection key (`selection_key`): lower first, ties by idle time then agent id.

Indexes (`Router`): waiting contacts are pooled by (channel, language, requirement), each pool sorted
by entry; each agent knows the pools it qualifies for, so an available agent looks at the heads of
those pools only, not at every contact. The agents qualifying for a requirement come from per-skill,
per-language and per-channel indexes of the profiles (remembered per requirement). Available agents
are kept per channel sorted by idle time, so longest-idle selection reads the front of that order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from typing import Any

from sortedcontainers import SortedList

from aicc.appliance.acd.model import AgentRuntime, Contact
from aicc.appliance.acd.policy import AgentProfile, QueueConfig, RoutingPolicy

Requirement = dict[str, int]
PoolKey = tuple[str, str, tuple[tuple[str, int], ...]]  # channel, language, sorted requirement
Entry = tuple[float, int, str]  # virtual arrival, seq, contact id
SelectionKey = tuple[float, float, int]

# Longest-idle selection reads this many available agents in idle order before it falls back to
# scanning the contact's qualified agents (few of the first ones qualify when skills are rare).
FRONT_SCAN = 48
# Distinct requirements whose qualified agents are remembered (contacts' own extra skills can make
# new ones without end); past this the memory starts over.
QUALIFIED_CACHE = 4096


def clamp_priority(value: int) -> int:
    return max(0, min(100, value))


def merged(base: Mapping[str, int], extra: Mapping[str, int]) -> Requirement:
    """Both requirements at once: the stricter minimum where both name a skill."""
    out = dict(base)
    for skill, level in extra.items():
        out[skill] = max(level, out.get(skill, 0))
    return out


def requirement(contact: Contact, cfg: QueueConfig) -> Requirement:
    """The skills an agent needs for `contact` at its overflow step in its queue `cfg`.

    Step 0: the queue's skills merged with the contact's own extras (after a move: the moving step's
    skills, or the new queue's, without extras). Step k >= 1: step k's skills, else the previous
    requirement without the extras.
    """
    if contact.moved:
        base = dict(contact.carried_skills) if contact.carried_skills is not None else dict(cfg.skills)
        req = base
    else:
        base = dict(cfg.skills)
        req = merged(base, contact.skills)
    for step in cfg.overflow[: contact.step]:
        if step.skills is not None:
            base = dict(step.skills)
        req = base
    return req


def pool_key(channel: str, language: str, req: Mapping[str, int]) -> PoolKey:
    return (channel, language, tuple(sorted(req.items())))


def qualifies(profile: AgentProfile, key: PoolKey) -> bool:
    channel, language, req = key
    skills = profile.skills
    return (
        profile.capacity.get(channel, 0) > 0  # type: ignore[call-overload]  # channel: any str here
        and language in profile.languages
        and all(skills.get(skill, 0) >= level for skill, level in req)
    )


def tier_offset(policy: RoutingPolicy, tier: str | None) -> float:
    if tier is not None and tier in policy.tiers:
        return policy.tiers[tier]
    return policy.tiers[policy.default_tier]


def virtual_arrival(contact: Contact, policy: RoutingPolicy) -> float:
    offsets = contact.priority * policy.priority_weight_s + tier_offset(policy, contact.tier)
    return contact.enqueued_at - offsets


def score(contact: Contact, policy: RoutingPolicy, now: float) -> float:
    """wait_s + priority * priority_weight_s + tier offset: higher is served first."""
    return now - virtual_arrival(contact, policy)


def entry(contact: Contact, policy: RoutingPolicy) -> Entry:
    return (virtual_arrival(contact, policy), contact.seq, contact.id)


def occupancy(agent: AgentRuntime, now: float) -> float:
    """Handled time over staffed time since the agent first went ready today."""
    staffed = now - agent.shift_start
    return agent.handled_s / staffed if staffed > 0 else 0.0


def skill_sum(profile: AgentProfile, key: PoolKey) -> int:
    """The agent's proficiency summed over the skills the requirement names."""
    return sum(profile.skills.get(skill, 0) for skill, _ in key[2])


def selection_key(
    policy: RoutingPolicy, agent: AgentRuntime, profile: AgentProfile, key: PoolKey, now: float
) -> SelectionKey:
    """Lower is chosen first: the policy's measure, then the longest idle, then the agent id."""
    if policy.agent_selection == "least_occupied":
        first = occupancy(agent, now)
    elif policy.agent_selection == "best_skilled":
        first = -float(skill_sum(profile, key))
    else:
        first = 0.0
    return (first, agent.idle_since, agent.agent_id)


def agent_order(policy: RoutingPolicy, agent: AgentRuntime, now: float) -> SelectionKey:
    """The order in which agents that became available at once pick their contacts."""
    first = occupancy(agent, now) if policy.agent_selection == "least_occupied" else 0.0
    return (first, agent.idle_since, agent.agent_id)


class Router:
    """Where every contact and available agent stands, and the two routing decisions.

    It reads the engine's profiles, agent runtimes and contacts (the mappings it is given stay
    live); the engine tells it each change with `place` and `set_open`.
    """

    def __init__(
        self,
        policy: RoutingPolicy,
        profiles: Mapping[int, AgentProfile],
        agents: Mapping[int, AgentRuntime],
        contacts: Mapping[str, Contact],
    ) -> None:
        self._policy = policy
        self._profiles = profiles
        self._agents = agents
        self._contacts = contacts
        self._pools: dict[PoolKey, Any] = {}  # SortedList[Entry] of waiting contacts
        self._pool_agents: dict[PoolKey, frozenset[int]] = {}  # who qualified when the pool was made
        self._agent_pools: dict[int, set[PoolKey]] = {}
        self._pool_of: dict[str, tuple[PoolKey, Entry]] = {}
        self._queues: dict[str, Any] = {}  # SortedList[Entry] of contacts waiting or ringing
        self._queue_of: dict[str, tuple[str, Entry]] = {}
        self._open: dict[str, Any] = {}  # channel -> SortedList[(idle_since, agent id)]
        self._open_key: dict[str, dict[int, tuple[float, int]]] = {}
        self._channels: dict[int, frozenset[str]] = {}
        self._qualified: dict[PoolKey, frozenset[int]] = {}
        self._sums: dict[PoolKey, dict[int, int]] = {}  # best_skilled: agent -> skill_sum
        self._by_skill: dict[str, dict[int, int]] = {}
        self._by_language: dict[str, set[int]] = {}
        self._by_channel: dict[str, set[int]] = {}
        self._people: dict[tuple[str, str], set[int]] = {}  # (channel, language) -> agents
        for aid, prof in profiles.items():
            for skill, level in prof.skills.items():
                self._by_skill.setdefault(skill, {})[aid] = level
            for lang in prof.languages:
                self._by_language.setdefault(lang, set()).add(aid)
            for channel, capacity in prof.capacity.items():
                if capacity > 0:
                    self._by_channel.setdefault(channel, set()).add(aid)

    # --- qualification -------------------------------------------------------------------------

    def qualified(self, key: PoolKey) -> frozenset[int]:
        """Agents whose profile qualifies for contacts of pool `key` (available or not)."""
        found = self._qualified.get(key)
        if found is None:
            if len(self._qualified) >= QUALIFIED_CACHE:
                self._qualified.clear()
                self._sums.clear()
            found = self._find_qualified(key)
            self._qualified[key] = found
        return found

    def _find_qualified(self, key: PoolKey) -> frozenset[int]:
        """`qualifies` for every profile, through the indexes: start from the rarest skill."""
        channel, language, req = key
        people = self._people.get((channel, language))
        if people is None:
            people = self._by_language.get(language, set()) & self._by_channel.get(channel, set())
            self._people[(channel, language)] = people
        if not req:
            return frozenset(people)
        rarest, *others = sorted(req, key=lambda need: len(self._by_skill.get(need[0], {})))
        found = {
            aid
            for aid, level in self._by_skill.get(rarest[0], {}).items()
            if level >= rarest[1] and aid in people
        }
        for skill, level in others:
            have = self._by_skill.get(skill, {})
            found = {aid for aid in found if have.get(aid, 0) >= level}
        return frozenset(found)

    # --- contacts --------------------------------------------------------------------------------

    def place(self, contact_id: str, queue: str | None, pool: PoolKey | None, at: Entry) -> bool:
        """Put a contact in `queue`'s order (None: in none) and among the routable contacts of `pool`
        (None: not routable). True when it entered a pool or changed pool or place: it needs a
        routing decision."""
        old_q = self._queue_of.get(contact_id)
        new_q = (queue, at) if queue is not None else None
        if old_q != new_q:
            if old_q is not None:
                _discard(self._queues, old_q[0], old_q[1])
                del self._queue_of[contact_id]
            if new_q is not None:
                self._queues.setdefault(new_q[0], SortedList()).add(at)
                self._queue_of[contact_id] = new_q
        old_p = self._pool_of.get(contact_id)
        new_p = (pool, at) if pool is not None else None
        if old_p == new_p:
            return False
        if old_p is not None:
            self._pools[old_p[0]].remove(old_p[1])
            if not self._pools[old_p[0]]:
                self._drop_pool(old_p[0])
            del self._pool_of[contact_id]
        if new_p is None:
            return False
        if new_p[0] not in self._pools:
            self._add_pool(new_p[0])
        self._pools[new_p[0]].add(at)
        self._pool_of[contact_id] = new_p
        return True

    def _add_pool(self, key: PoolKey) -> None:
        self._pools[key] = SortedList()
        agents = self.qualified(key)
        self._pool_agents[key] = agents
        for aid in agents:
            self._agent_pools.setdefault(aid, set()).add(key)

    def _drop_pool(self, key: PoolKey) -> None:
        del self._pools[key]
        for aid in self._pool_agents.pop(key):
            self._agent_pools[aid].discard(key)

    def pool_of(self, contact_id: str) -> PoolKey | None:
        found = self._pool_of.get(contact_id)
        return found[0] if found is not None else None

    def position(self, contact_id: str) -> int | None:
        """1-based place in its queue; None when it is in no queue (connected)."""
        found = self._queue_of.get(contact_id)
        if found is None:
            return None
        return int(self._queues[found[0]].bisect_left(found[1])) + 1

    def queue_contacts(self, queue: str) -> list[str]:
        """The contacts of `queue` in order, best first."""
        return [at[2] for at in self._queues.get(queue, ())]

    def queue_names(self) -> list[str]:
        return sorted(self._queues)

    # --- agents ----------------------------------------------------------------------------------

    def set_open(self, agent_id: int, channels: Iterable[str], idle_since: float) -> bool:
        """The channels on which the agent can take a contact now (empty: not available). True when
        it gained a channel: it needs a routing decision."""
        new = frozenset(channels)
        old = self._channels.get(agent_id, frozenset())
        key = (idle_since, agent_id)
        for channel in old:
            known = self._open_key[channel][agent_id]
            if channel not in new or known != key:
                self._open[channel].remove(known)
                del self._open_key[channel][agent_id]
        for channel in new:
            keys = self._open_key.setdefault(channel, {})
            if agent_id not in keys:
                self._open.setdefault(channel, SortedList()).add(key)
                keys[agent_id] = key
        if new:
            self._channels[agent_id] = new
        else:
            self._channels.pop(agent_id, None)
        return bool(new - old)

    def channels(self, agent_id: int) -> frozenset[str]:
        return self._channels.get(agent_id, frozenset())

    def is_open(self, agent_id: int, channel: str) -> bool:
        return agent_id in self._open_key.get(channel, {})

    # --- decisions -------------------------------------------------------------------------------

    def best_contact(self, agent_id: int) -> tuple[str | None, list[str]]:
        """The best-scored waiting contact the available agent qualifies for, and the better ones it
        passed over because the agent missed or refused them while another qualified agent is
        available (those need a decision of their own)."""
        channels = self._channels.get(agent_id)
        if not channels:
            return None, []
        best: Entry | None = None
        passed: list[str] = []
        for key in self._agent_pools.get(agent_id, ()):
            if key[0] not in channels:
                continue
            for at in self._pools[key]:
                if best is not None and at >= best:
                    break
                contact = self._contacts[at[2]]
                if agent_id in contact.refused and self._other_agent(contact, key, agent_id):
                    passed.append(contact.id)
                    continue
                best = at
                break
        return (best[2] if best is not None else None), passed

    def best_agent(self, contact: Contact, key: PoolKey, now: float) -> int | None:
        """The available agent qualifying for `contact` (in pool `key`) that the policy selects;
        agents who missed or refused it only when no other one is available."""
        channel = key[0]
        open_agents = self._open_key.get(channel)
        if not open_agents:
            return None
        qualified = self.qualified(key)
        refused = contact.refused
        if self._policy.agent_selection == "longest_idle":
            fallback: int | None = None
            front: list[tuple[float, int]] = list(islice(self._open[channel], FRONT_SCAN))
            for _, aid in front:
                if aid in qualified:
                    if aid not in refused:
                        return aid
                    if fallback is None:
                        fallback = aid
            if len(front) == len(open_agents):  # seen them all
                return fallback
        if len(qualified) <= len(open_agents):
            candidates = [aid for aid in qualified if aid in open_agents]
        else:
            candidates = [aid for aid in open_agents if aid in qualified]
        preferred = [aid for aid in candidates if aid not in refused] or candidates
        if not preferred:
            return None
        return min(preferred, key=self._ranking(key, now))

    def _ranking(self, key: PoolKey, now: float) -> Callable[[int], SelectionKey]:
        """`selection_key` for the agents qualifying for `key`; their skill sums are remembered per
        requirement (they only change with the configuration)."""
        agents, profiles, policy = self._agents, self._profiles, self._policy
        if policy.agent_selection != "best_skilled":
            return lambda aid: selection_key(policy, agents[aid], profiles[aid], key, now)
        sums = self._sums.get(key)
        if sums is None:
            sums = {aid: skill_sum(profiles[aid], key) for aid in self.qualified(key)}
            self._sums[key] = sums
        return lambda aid: (-float(sums[aid]), agents[aid].idle_since, aid)

    def _other_agent(self, contact: Contact, key: PoolKey, agent_id: int) -> bool:
        """Whether an available agent other than `agent_id` qualifies for `contact` and has not
        missed or refused it."""
        open_agents = self._open_key.get(key[0], {})
        qualified = self.qualified(key)
        pool: Iterable[int] = qualified if len(qualified) <= len(open_agents) else open_agents
        other = open_agents if pool is qualified else qualified
        return any(aid != agent_id and aid not in contact.refused and aid in other for aid in pool)


def _discard(index: dict[Any, Any], name: Any, at: Any) -> None:
    """Remove `at` from the sorted list `index[name]`, and the list when it is left empty."""
    items = index[name]
    items.remove(at)
    if not items:
        del index[name]
