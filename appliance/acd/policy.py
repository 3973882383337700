"""The ACD's configuration as data: queues, agents' routing profiles and the routing policy.

Admins change them through the API (each change audited); the ACD reloads them without a restart.
Everything is validated here, so a bad document is refused before it reaches the router.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Channel = Literal["voice", "chat", "email", "sms", "wecom", "app"]
Language = Literal["zh", "en"]
SkillName = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")]
QueueName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")]
Extension = Annotated[str, Field(pattern=r"^[0-9A-Za-z_.-]{1,32}$")]
TierName = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,20}$")]
Proficiency = Annotated[int, Field(ge=1, le=5)]
Skills = dict[SkillName, Proficiency]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServiceLevel(_Doc):
    """The target: `percent` % of contacts answered within `seconds`."""

    percent: float = Field(80.0, gt=0, le=100)
    seconds: int = Field(20, ge=1, le=3600)


class CallbackOffer(_Doc):
    enabled: bool = True
    offer_after_ewt_s: int = Field(
        120, ge=0, le=86400, description="Offer a callback when the estimated wait is longer than this."
    )


class OverflowStep(_Doc):
    """After `after_s` seconds in the queue: require `skills` instead of the queue's own (widen), and/or
    move the contact to `queue` (it keeps its place by its original arrival)."""

    after_s: int = Field(ge=1, le=86400)
    skills: Skills | None = None
    queue: QueueName | None = None

    @model_validator(mode="after")
    def _does_something(self) -> OverflowStep:
        if self.skills is None and self.queue is None:
            raise ValueError("an overflow step needs skills (to widen the match), queue (to move), or both")
        return self


class QueueConfig(_Doc):
    name: QueueName
    display_name: dict[Language, str] = Field(default_factory=dict)
    channel: Channel = "voice"
    language: Language
    skills: Skills = Field(default_factory=dict, description="skill -> minimum proficiency an agent needs")
    priority: int = Field(0, ge=0, le=100, description="base priority of this queue's contacts")
    wrap_up_s: int = Field(30, ge=0, le=3600, description="after-contact work before the agent is idle")
    ring_timeout_s: int = Field(15, ge=5, le=120, description="an agent's phone rings this long at most")
    service_level: ServiceLevel = Field(default_factory=ServiceLevel)
    short_abandon_s: int = Field(5, ge=0, le=600, description="abandons sooner than this are counted apart")
    default_aht_s: int = Field(180, ge=10, le=36000, description="handle time assumed until one is measured")
    max_wait_s: int = Field(900, ge=10, le=86400, description="a contact waits this long at most")
    announce_every_s: int = Field(30, ge=0, le=3600, description="position announcements; 0: none")
    callback: CallbackOffer = Field(default_factory=CallbackOffer)
    overflow: list[OverflowStep] = Field(default_factory=list, max_length=6)

    @model_validator(mode="after")
    def _steps_in_order(self) -> QueueConfig:
        times = [s.after_s for s in self.overflow]
        if times != sorted(set(times)):
            raise ValueError(f"overflow steps must have increasing after_s; found {times}")
        if any(s.queue == self.name for s in self.overflow):
            raise ValueError(f"an overflow step moves contacts to {self.name!r}, the queue itself")
        return self


def _mandarin() -> list[Language]:
    return ["zh"]


def _one_call() -> dict[Channel, int]:
    return {"voice": 1}


class AgentProfile(_Doc):
    extension: Extension | None = Field(None, description="SIP extension the agent's phone registers")
    skills: Skills = Field(default_factory=dict)
    languages: list[Language] = Field(default_factory=_mandarin, min_length=1)
    capacity: dict[Channel, Annotated[int, Field(ge=0, le=50)]] = Field(default_factory=_one_call)


class RoutingPolicy(_Doc):
    """Site-wide routing rules. A contact's score (higher first) is
    wait_s + priority * priority_weight_s + tiers[tier]."""

    priority_weight_s: float = Field(
        60.0, ge=0, le=86400, description="seconds of waiting one priority point is worth"
    )
    tiers: dict[TierName, Annotated[float, Field(ge=0, le=86400)]] = Field(
        default_factory=lambda: {"standard": 0.0, "gold": 60.0, "vip": 180.0},
        description="customer value tier -> score offset in seconds",
    )
    default_tier: str = "standard"
    agent_selection: Literal["longest_idle", "least_occupied", "best_skilled"] = "longest_idle"
    reservation_grace_s: int = Field(
        5, ge=1, le=60, description="after the ring timeout, how long to wait for the gateway's report"
    )
    no_answer_status: Literal["away", "logged_out"] = Field(
        "away", description="status of an agent who let an offered contact ring out"
    )

    @model_validator(mode="after")
    def _default_tier_known(self) -> RoutingPolicy:
        if self.default_tier not in self.tiers:
            known = sorted(self.tiers)
            raise ValueError(f"default_tier {self.default_tier!r} is not one of the tiers {known}")
        return self
