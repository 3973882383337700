-- Call records written as the call goes (not only at its end): which gateway holds the call, the flow
-- it runs, and its way through the ACD. A gateway that restarts closes its calls left open.
ALTER TABLE aicc.calls
    ADD COLUMN gateway    text NOT NULL DEFAULT '',
    ADD COLUMN flow       text NOT NULL DEFAULT '',
    ADD COLUMN bot        text NOT NULL DEFAULT '',
    ADD COLUMN queue      text NOT NULL DEFAULT '',
    ADD COLUMN contact_id uuid,
    ADD COLUMN agent      text NOT NULL DEFAULT '',
    ADD COLUMN summary    text NOT NULL DEFAULT '';
ALTER TABLE aicc.calls DROP CONSTRAINT calls_outcome_check;
ALTER TABLE aicc.calls ADD CONSTRAINT calls_outcome_check
    CHECK (outcome IN ('resolved', 'transferred', 'abandoned', 'failed', 'rejected', 'callback'));
CREATE INDEX calls_open ON aicc.calls (gateway) WHERE ended_at IS NULL;
