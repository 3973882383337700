-- The contact-center event log: every leg of every contact and every agent state change, appended
-- once and never changed. It is the source of truth for CDRs and reports (appliance/events/kinds.py
-- lists the kinds and their data).
CREATE TABLE aicc.cc_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uid        uuid NOT NULL UNIQUE,          -- written by the producer: a replayed event is a no-op
    at         timestamptz NOT NULL,
    kind       text NOT NULL CHECK (kind ~ '^[a-z_]+\.[a-z_]+$'),
    contact_id uuid,
    call_id    text,
    queue      text,
    agent_id   bigint,
    data       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX cc_events_at ON aicc.cc_events (at);
CREATE INDEX cc_events_contact ON aicc.cc_events (contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX cc_events_call ON aicc.cc_events (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX cc_events_agent_at ON aicc.cc_events (agent_id, at) WHERE agent_id IS NOT NULL;
CREATE TRIGGER cc_events_append_only BEFORE UPDATE OR DELETE ON aicc.cc_events
    FOR EACH ROW EXECUTE FUNCTION aicc.refuse_change();
CREATE TRIGGER cc_events_no_truncate BEFORE TRUNCATE ON aicc.cc_events
    FOR EACH STATEMENT EXECUTE FUNCTION aicc.refuse_change();
