"""The ACD's Prometheus metrics: live queue figures for wallboards and alerts, and its own health.

Labels are queue and state only, never contact ids, call ids or numbers. Today's service level comes
from the event log (the source of truth), refreshed every 30 s, not from counters kept here.
"""

from __future__ import annotations

import math
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aicc.appliance.acd.engine import Acd
from aicc.appliance.acd.model import Changes

AGENT_STATES = ("ready", "reserved", "busy", "wrap_up", "away", "logged_out")


class AcdMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.leader = Gauge("aicc_acd_leader", "1 while this ACD process is the active one", registry=r)
        self.waiting = Gauge(
            "aicc_acd_contacts_waiting", "Contacts waiting in the queue", ["queue"], registry=r
        )
        self.longest_wait = Gauge(
            "aicc_acd_longest_wait_seconds", "Wait of the contact waiting longest", ["queue"], registry=r
        )
        self.agents = Gauge(
            "aicc_acd_agents", "Agents who qualify for the queue, by state", ["queue", "state"], registry=r
        )
        self.service_level = Gauge(
            "aicc_acd_service_level_ratio",
            "Today's contacts answered within the queue's target / (answered + abandoned), "
            "from the event log",
            ["queue"],
            registry=r,
        )
        self.commands = Counter(
            "aicc_acd_commands_total", "Commands applied, by kind and result", ["kind", "result"], registry=r
        )
        self.events = Counter("aicc_acd_events_total", "Events written, by kind", ["kind"], registry=r)
        self.offers = Counter("aicc_acd_offers_total", "Contacts offered to agents", registry=r)
        self.batch_seconds = Histogram(
            "aicc_acd_command_batch_seconds",
            "Applying a batch of commands and persisting its effects",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.persist_seconds = Histogram(
            "aicc_acd_persist_seconds",
            "Persisting a tick's changes",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self._queues: set[str] = set()
        self._observed = 0.0

    def count_changes(self, changes: Changes) -> None:
        for event in changes.events:
            self.events.labels(kind=event.kind).inc()
        self.offers.inc(len(changes.offers))

    def observe_engine(self, engine: Acd, now: float) -> None:
        if time.monotonic() - self._observed < 1.0:
            return
        self._observed = time.monotonic()
        stats = engine.queue_stats(now)
        for gone in self._queues - set(stats):
            self.service_level.remove(gone)
            self.waiting.remove(gone)
            self.longest_wait.remove(gone)
            for state in AGENT_STATES:
                self.agents.remove(gone, state)
        for queue, s in stats.items():
            self.waiting.labels(queue=queue).set(s.waiting)
            self.longest_wait.labels(queue=queue).set(s.longest_wait_s)
            for state in AGENT_STATES:
                self.agents.labels(queue=queue, state=state).set(s.agents.get(state, 0))
        self._queues = set(stats)

    def set_service_level(self, ratios: dict[str, float | None]) -> None:
        # NaN for a queue with no contact yet today: the series exists (dashboards and alerts know the
        # queue) but no comparison holds, so no alert fires on an empty morning.
        for queue in self._queues | set(ratios):
            ratio = ratios.get(queue)
            self.service_level.labels(queue=queue).set(math.nan if ratio is None else ratio)
