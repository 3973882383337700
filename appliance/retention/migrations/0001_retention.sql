-- Retention of personal data (issue 17; PIPL Art. 19, MLPS 8.1.4.10/8.1.4.11): the API's purge job
-- deletes call transcripts, the bot's tool calls and web-chat messages older than the retention, and
-- records every run here. A run holds the advisory lock aicc.appliance.retention.purge.LOCK_KEY for
-- its whole life, so at most one row is 'running' at a time; one left 'running' by a process that died
-- is marked failed by the next run.
CREATE TABLE aicc.retention_runs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trigger         text NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    actor           text NOT NULL,                 -- 'retention', or the admin who started it
    host            text NOT NULL DEFAULT '',      -- the API host that ran it
    transcript_days integer NOT NULL CHECK (transcript_days >= 1),
    cutoff          timestamptz NOT NULL,          -- what started before this was purged
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
    purged          jsonb NOT NULL DEFAULT '{}',   -- rows per kind, committed batch by batch
    error           text,
    CHECK ((status = 'running') = (finished_at IS NULL)),
    CHECK ((status = 'failed') = (error IS NOT NULL))
);
CREATE INDEX retention_runs_started ON aicc.retention_runs (started_at);
CREATE INDEX retention_runs_succeeded ON aicc.retention_runs (finished_at) WHERE status = 'succeeded';

-- A call record past the retention keeps its figures (times, outcome, queue, agent, flow, bot, the
-- per-turn latencies) and loses what identifies or quotes the caller; purged_at marks it done, so a
-- run finds the next calls to purge through a small partial index instead of every call ever made.
ALTER TABLE aicc.calls ADD COLUMN purged_at timestamptz;
CREATE INDEX calls_unpurged ON aicc.calls (started_at) WHERE purged_at IS NULL;

-- A purged call stays purged: a gateway replaying an old spooled record (appliance/calls/writer.py)
-- cannot write its transcript, tool calls, number or summary back.
CREATE FUNCTION aicc.keep_call_purged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.purged_at IS NOT NULL THEN
        NEW.caller := '';
        NEW.summary := '';
        NEW.purged_at := OLD.purged_at;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER calls_keep_purged BEFORE UPDATE ON aicc.calls
    FOR EACH ROW EXECUTE FUNCTION aicc.keep_call_purged();

CREATE FUNCTION aicc.skip_purged_call_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM aicc.calls WHERE call_id = NEW.call_id AND purged_at IS NOT NULL) THEN
        RETURN NULL;  -- the row is not stored
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER call_lines_skip_purged BEFORE INSERT ON aicc.call_lines
    FOR EACH ROW EXECUTE FUNCTION aicc.skip_purged_call_rows();
CREATE TRIGGER call_tool_calls_skip_purged BEFORE INSERT ON aicc.call_tool_calls
    FOR EACH ROW EXECUTE FUNCTION aicc.skip_purged_call_rows();

-- Messages are deleted by age; conversations lose the bot's handover summary once idle past it.
CREATE INDEX conversation_messages_created ON aicc.conversation_messages (created_at);
CREATE INDEX conversations_summary_idle ON aicc.conversations ((coalesce(last_message_at, created_at)))
    WHERE summary <> '';
