-- Tickets: the case a customer's request becomes, with its SLA policy and its history. The ticket row
-- is the current state (for lists and filters); aicc.ticket_events is the append-only history that SLA
-- figures are computed from (appliance/tickets/sla.py), so a hand-edited field cannot move a deadline.

-- targets: {"urgent": {"first_response": 30, "next_response": 120, "resolution": 480}, ...} in business
-- minutes (null: no target); calendar: an aicc.appliance.ivr.calendar.Calendar as JSON.
CREATE TABLE aicc.sla_policies (
    name            text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,40}$'),
    description     text NOT NULL DEFAULT '',
    targets         jsonb NOT NULL,
    warn_at_percent integer NOT NULL DEFAULT 80 CHECK (warn_at_percent BETWEEN 1 AND 99),
    calendar        jsonb NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Numbers come from their own sequence: T-000123 is what customers quote on the phone.
CREATE SEQUENCE aicc.ticket_numbers;

CREATE TABLE aicc.tickets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number      text NOT NULL UNIQUE DEFAULT 'T-' || lpad(nextval('aicc.ticket_numbers')::text, 6, '0'),
    subject     text NOT NULL CHECK (length(subject) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    type        text NOT NULL DEFAULT 'question',
    priority    text NOT NULL DEFAULT 'normal' CHECK (priority IN ('urgent', 'high', 'normal', 'low')),
    status      text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'open', 'pending', 'resolved', 'closed')),
    "group"     text NOT NULL DEFAULT '',
    assignee    bigint REFERENCES aicc.users(id) ON DELETE SET NULL,
    customer    jsonb NOT NULL DEFAULT '{}',      -- identities: {"phone": ..., "email": ..., "name": ...}
    language    text NOT NULL DEFAULT '',
    source      text NOT NULL CHECK (source IN ('call', 'chat', 'email', 'bot', 'agent', 'api')),
    call_id     text,                             -- links by id only, as call records do: no foreign keys
    contact_id  uuid,
    sla_policy  text NOT NULL REFERENCES aicc.sla_policies(name),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tickets_status ON aicc.tickets (status);
CREATE INDEX tickets_assignee ON aicc.tickets (assignee) WHERE assignee IS NOT NULL;
CREATE INDEX tickets_call ON aicc.tickets (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX tickets_contact ON aicc.tickets (contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX tickets_customer_phone ON aicc.tickets ((customer ->> 'phone'));

-- data per kind: created {status, priority, ...}, status_changed {from, to}, assigned {from, to},
-- priority_changed {from, to}, group_changed {from, to}, commented {visibility, author, body},
-- customer_confirmed {note}.
CREATE TABLE aicc.ticket_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id bigint NOT NULL REFERENCES aicc.tickets(id),
    at        timestamptz NOT NULL DEFAULT now(),
    kind      text NOT NULL CHECK (kind IN ('created', 'status_changed', 'assigned', 'priority_changed',
                                            'group_changed', 'commented', 'customer_confirmed')),
    actor_id  bigint,
    actor     text NOT NULL,
    data      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX ticket_events_ticket ON aicc.ticket_events (ticket_id, at, id);
CREATE TRIGGER ticket_events_append_only BEFORE UPDATE OR DELETE ON aicc.ticket_events
    FOR EACH ROW EXECUTE FUNCTION aicc.refuse_change();
CREATE TRIGGER ticket_events_no_truncate BEFORE TRUNCATE ON aicc.ticket_events
    FOR EACH STATEMENT EXECUTE FUNCTION aicc.refuse_change();

INSERT INTO aicc.sla_policies (name, description, targets, calendar) VALUES (
    'default',
    'Business hours Mon-Fri 09:00-18:00 China time',
    '{"urgent": {"first_response": 30, "next_response": 120, "resolution": 480},
      "high": {"first_response": 60, "next_response": 240, "resolution": 1080},
      "normal": {"first_response": 240, "next_response": 480, "resolution": 2700},
      "low": {"first_response": 480, "next_response": 1080, "resolution": 5400}}',
    '{"name": "default", "timezone": "Asia/Shanghai",
      "weekly": {"mon": [["09:00", "18:00"]], "tue": [["09:00", "18:00"]], "wed": [["09:00", "18:00"]],
                 "thu": [["09:00", "18:00"]], "fri": [["09:00", "18:00"]]}}'
);
