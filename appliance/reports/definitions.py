"""What every report figure means, and the formulas that turn counts into rates: one place, used by the
report queries (appliance/reports/queries.py) and quoted in appliance/README.md ("Event log and
reports"; `markdown()` renders the lists).

Every figure is computed from aicc.cc_events, never from counters kept elsewhere. Times are the
events' `at`; periods are [since, until) in the report's time zone. Queue thresholds (service level
seconds, short-abandon seconds) are the queue's current settings (aicc.queues), or QueueConfig's
defaults for a queue that is no longer configured. Rates are percentages (0-100) rounded to 2
decimals, durations are seconds; a figure whose denominator is 0 is empty (null), not 0.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str  # the report column
    unit: str
    meaning: str


_PERIOD = (
    Metric(
        "period_start",
        "time",
        "Start of the row's period: the hour or day in the report's time zone (or the whole range when "
        "not grouped), clipped to the report's range.",
    ),
    Metric("period_end", "time", "End of the row's period (exclusive), clipped to the report's range."),
)

_HANDLING = (
    Metric(
        "aht_s",
        "s",
        "Average handle time: (talk + hold + wrap) / handled. Talk and hold come from contact.ended "
        "(talk_s excludes hold), wrap from the contact's contact.wrapup_done (0 until it arrives).",
    ),
    Metric("avg_talk_s", "s", "Talk time / handled."),
    Metric("avg_hold_s", "s", "Hold time / handled."),
    Metric("avg_wrap_s", "s", "Wrap-up time / handled."),
)

QUEUE_METRICS: tuple[Metric, ...] = (
    *_PERIOD,
    Metric("queue", "", "The queue where the contact was first queued."),
    Metric(
        "offered",
        "contacts",
        "Contacts whose first contact.queued falls in the period, counted in the queue of that first "
        "contact.queued: a contact that overflows elsewhere stays offered, answered or abandoned in the "
        "queue it entered first. The period of a contact is that of its first contact.queued, whatever "
        "time it was answered.",
    ),
    Metric("answered", "contacts", "Offered contacts an agent answered (contact.answered)."),
    Metric(
        "abandoned",
        "contacts",
        "Offered contacts that left while waiting (contact.abandoned), short abandons included.",
    ),
    Metric(
        "short_abandoned",
        "contacts",
        "Abandoned sooner than the queue's short_abandon_s after the first contact.queued (wait < "
        "short_abandon_s): misdials and instant hang-ups, left out of every rate.",
    ),
    Metric(
        "callbacks",
        "contacts",
        "Offered contacts that took a callback instead of waiting (contact.callback); left out of every "
        "rate: they neither were answered nor gave up.",
    ),
    Metric(
        "overflowed_out",
        "contacts",
        "Overflows (contact.overflowed) out of this queue, of contacts offered in the period.",
    ),
    Metric(
        "overflowed_in",
        "contacts",
        "Overflows into this queue, of contacts offered in the period (counted as offered elsewhere).",
    ),
    Metric(
        "answered_within_sl",
        "contacts",
        "Answered with a wait (first contact.queued to contact.answered) of at most the queue's service "
        "level seconds (wait <= service_level.seconds).",
    ),
    Metric("sl_threshold_s", "s", "The queue's service level seconds used for answered_within_sl."),
    Metric(
        "answer_rate",
        "%",
        "answered / (offered - callbacks - short_abandoned): of the contacts that really waited for an "
        "agent, the share answered.",
    ),
    Metric(
        "abandon_rate",
        "%",
        "(abandoned - short_abandoned) / (offered - callbacks - short_abandoned). Contacts still waiting "
        "count in the denominator only, so answer_rate + abandon_rate is below 100 while some wait.",
    ),
    Metric(
        "service_level",
        "%",
        "answered_within_sl / (answered + abandoned - short_abandoned): callbacks and short abandons are "
        "in neither part; an abandon after any wait counts against the service level.",
    ),
    Metric(
        "asa_s",
        "s",
        "Average speed of answer: the mean wait of answered contacts, from their first contact.queued "
        "to contact.answered (overflow time included).",
    ),
    Metric("handled", "contacts", "Answered contacts whose conversation ended (contact.ended)."),
    *_HANDLING,
    Metric(
        "csat",
        "score 1-5",
        "Mean post-call survey score (contact.survey) of the contacts counted in the row.",
    ),
    Metric("csat_count", "surveys", "Survey answers behind csat."),
)

AGENT_METRICS: tuple[Metric, ...] = (
    *_PERIOD,
    Metric("agent_id", "", "The agent's user id."),
    Metric("username", "", "The agent's login name (empty when the user no longer exists)."),
    Metric("display_name", "", "The agent's display name."),
    Metric("offers", "contacts", "Contacts reserved for the agent, phone ringing (contact.offered)."),
    Metric(
        "answered",
        "contacts",
        "Contacts the agent answered (contact.answered) in the period, chats taken by hand included.",
    ),
    Metric(
        "missed",
        "contacts",
        "Offers the agent did not take (contact.offer_failed), not counting those another agent took "
        "by hand while they rang (reason taken).",
    ),
    Metric(
        "handled",
        "contacts",
        "Conversations of the agent that ended in the period (contact.ended); handle times below are "
        "those of these contacts.",
    ),
    *_HANDLING,
    Metric(
        "staffed_s",
        "s",
        "Time staffed: status ready, or state reserved, busy or wrap_up whatever the status (an agent who "
        "chose away during a call is working until it ends). From agent.state events; the state in force "
        "at the period's start counts from the start.",
    ),
    Metric("available_s", "s", "Time with status ready and state idle: waiting for a contact."),
    Metric("reserved_s", "s", "Time with state reserved: the agent's phone ringing."),
    Metric("busy_s", "s", "Time with state busy: in a conversation (talk and hold)."),
    Metric("wrap_up_s", "s", "Time with state wrap_up: after-contact work."),
    Metric("away_s", "s", "Time logged in with status away and no contact (reserved, busy, wrap_up)."),
    Metric("occupancy", "%", "(busy_s + wrap_up_s) / staffed_s."),
    Metric(
        "csat",
        "score 1-5",
        "Mean survey score of the surveys answered in the period about contacts the agent answered (the "
        "last agent to answer the contact).",
    ),
    Metric("csat_count", "surveys", "Survey answers behind csat."),
)

BOT_METRICS: tuple[Metric, ...] = (
    *_PERIOD,
    Metric("bot", "", "The bot that handled the call (call.ended data.bot)."),
    Metric("calls", "calls", "Calls handled by the bot that ended in the period (call.ended with a bot)."),
    Metric(
        "contained",
        "calls",
        "Calls the bot resolved without a person: outcome resolved and not transferred.",
    ),
    Metric("transferred", "calls", "Calls transferred to an agent (transferred, or outcome transferred)."),
    Metric("abandoned", "calls", "Calls the caller left (outcome abandoned)."),
    Metric("failed", "calls", "Calls that failed (outcome failed)."),
    Metric("containment", "%", "Bot containment: contained / calls."),
    Metric("avg_duration_s", "s", "Mean call duration (call.ended duration_s)."),
)

REPORTS: dict[str, tuple[Metric, ...]] = {
    "queues": QUEUE_METRICS,
    "agents": AGENT_METRICS,
    "bot": BOT_METRICS,
}


def percent(part: float, whole: float) -> float | None:
    """part / whole in %, 2 decimals; None when whole is 0 (no basis, which is not 0 %)."""
    return round(100.0 * part / whole, 2) if whole > 0 else None


def mean(total: float | None, count: int) -> float | None:
    """total / count, 2 decimals; None when count is 0."""
    return round((total or 0.0) / count, 2) if count > 0 else None


def waited_for_agent(offered: int, callbacks: int, short_abandoned: int) -> int:
    """Contacts that really waited for an agent: the denominator of answer and abandon rates."""
    return offered - callbacks - short_abandoned


def answer_rate(answered: int, offered: int, callbacks: int, short_abandoned: int) -> float | None:
    return percent(answered, waited_for_agent(offered, callbacks, short_abandoned))


def abandon_rate(abandoned: int, short_abandoned: int, offered: int, callbacks: int) -> float | None:
    return percent(abandoned - short_abandoned, waited_for_agent(offered, callbacks, short_abandoned))


def service_level(
    answered_within_sl: int, answered: int, abandoned: int, short_abandoned: int
) -> float | None:
    return percent(answered_within_sl, answered + abandoned - short_abandoned)


def handle_times(
    talk_s: float | None, hold_s: float | None, wrap_s: float | None, handled: int
) -> tuple[float | None, float | None, float | None, float | None]:
    """(aht_s, avg_talk_s, avg_hold_s, avg_wrap_s) of `handled` contacts from their summed times."""
    total = (talk_s or 0.0) + (hold_s or 0.0) + (wrap_s or 0.0)
    return mean(total, handled), mean(talk_s, handled), mean(hold_s, handled), mean(wrap_s, handled)


def occupancy(busy_s: float, wrap_up_s: float, staffed_s: float) -> float | None:
    return percent(busy_s + wrap_up_s, staffed_s)


def containment(contained: int, calls: int) -> float | None:
    return percent(contained, calls)


def markdown() -> str:
    """The definitions as Markdown lists, one per report, for appliance/README.md."""
    out: list[str] = []
    for report, metrics in REPORTS.items():
        out.append(f"`GET /api/reports/{report}`:\n")
        for m in metrics:
            unit = f" ({m.unit})" if m.unit else ""
            out.append(f"- **{m.name}**{unit}: {m.meaning}")
        out.append("")
    return "\n".join(out)
