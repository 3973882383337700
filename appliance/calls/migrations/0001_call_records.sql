-- Call records: one row per call, its transcript lines, tool calls and per-turn stage latencies.
CREATE SCHEMA IF NOT EXISTS aicc;

CREATE TABLE aicc.calls (
    call_id          text PRIMARY KEY,
    caller           text NOT NULL,
    service          text NOT NULL,
    language         text NOT NULL DEFAULT '',
    started_at       timestamptz NOT NULL,
    answered_at      timestamptz,
    ended_at         timestamptz,
    outcome          text NOT NULL CHECK (outcome IN ('resolved', 'transferred', 'abandoned', 'failed', 'rejected')),
    end_reason       text NOT NULL DEFAULT '',
    transfer_target  text NOT NULL DEFAULT '',
    setup_s          double precision,
    barge_ins        integer NOT NULL DEFAULT 0
);
CREATE INDEX calls_started_at ON aicc.calls (started_at);

CREATE TABLE aicc.call_lines (
    call_id     text NOT NULL REFERENCES aicc.calls(call_id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    speaker     text NOT NULL CHECK (speaker IN ('caller', 'bot')),
    text        text NOT NULL,
    at_s        double precision NOT NULL,
    duration_s  double precision NOT NULL DEFAULT 0,
    language    text NOT NULL DEFAULT '',
    confidence  double precision,
    PRIMARY KEY (call_id, seq)
);

CREATE TABLE aicc.call_tool_calls (
    call_id     text NOT NULL REFERENCES aicc.calls(call_id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    tool        text NOT NULL,
    arguments   jsonb NOT NULL,
    ok          boolean NOT NULL,
    result      jsonb NOT NULL,
    error       text NOT NULL DEFAULT '',
    seconds     double precision NOT NULL,
    at_s        double precision NOT NULL,
    confirmed   boolean,
    PRIMARY KEY (call_id, seq)
);

CREATE TABLE aicc.call_turns (
    call_id     text NOT NULL REFERENCES aicc.calls(call_id) ON DELETE CASCADE,
    turn        integer NOT NULL,
    stages      jsonb NOT NULL,
    PRIMARY KEY (call_id, turn)
);
