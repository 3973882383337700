-- SLA escalations (appliance/tickets/escalation.py): rules in the policy, an `escalated` event per
-- (ticket, target, state, cycle) in the history, notifications for the people they reach, and the
-- ticket groups' members (tickets' groups are free names; nothing else maps them to users).

-- [{"on": "warning"|"breached", "target": "first_response"|"next_response"|"resolution"|"any",
--   "actions": ["notify_assignee", "notify_group", "notify_supervisors", "raise_priority",
--               {"assign_group": "NAME"}]}, ...]; the default: warning -> the assignee (the group when
-- unassigned), breached -> the group's supervisors and one priority step up.
ALTER TABLE aicc.sla_policies ADD COLUMN escalations jsonb NOT NULL DEFAULT
    '[{"on": "warning", "target": "any", "actions": ["notify_assignee"]},
      {"on": "breached", "target": "any", "actions": ["notify_supervisors", "raise_priority"]}]';

-- escalated {target, state, cycle, due_at, actions, notified, priority, group}: written by the watcher
-- (actor `sla`) in the transaction that applies the actions.
ALTER TABLE aicc.ticket_events DROP CONSTRAINT ticket_events_kind_check;
ALTER TABLE aicc.ticket_events ADD CONSTRAINT ticket_events_kind_check
    CHECK (kind IN ('created', 'status_changed', 'assigned', 'priority_changed', 'group_changed',
                    'commented', 'customer_confirmed', 'escalated'));
-- Each transition escalates once, whatever runs the watcher (two API hosts, a restart mid-pass). `cycle`
-- is the target clock's start: next_response has one per unanswered customer message.
CREATE UNIQUE INDEX ticket_events_escalated_once ON aicc.ticket_events
    (ticket_id, (data ->> 'target'), (data ->> 'state'), (data ->> 'cycle')) WHERE kind = 'escalated';

CREATE TABLE aicc.ticket_group_members (
    "group"    text NOT NULL CHECK ("group" ~ '^[a-z0-9][a-z0-9_-]{0,40}$'),
    user_id    bigint NOT NULL REFERENCES aicc.users(id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY ("group", user_id)
);
CREATE INDEX ticket_group_members_user ON aicc.ticket_group_members (user_id);

-- A user's notifications; the text is rendered from kind and data at reading time (zh and en).
-- data: {number, subject, target, state, due_at, priority, timezone}.
CREATE TABLE aicc.notifications (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES aicc.users(id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('sla_warning', 'sla_breached')),
    ticket     text,                              -- the ticket's number (T-000123), no foreign key
    data       jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    read_at    timestamptz
);
CREATE INDEX notifications_user ON aicc.notifications (user_id, (read_at IS NOT NULL), created_at DESC);
