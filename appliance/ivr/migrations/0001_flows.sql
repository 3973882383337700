-- IVR flows (versioned YAML documents), the version in force for each, business calendars, and the
-- service numbers that select a flow.
CREATE TABLE aicc.ivr_flows (
    name       text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    version    integer NOT NULL CHECK (version > 0),
    source     text NOT NULL,             -- the YAML as uploaded
    document   jsonb NOT NULL,            -- the validated flow
    comment    text NOT NULL DEFAULT '',
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

-- The version in force; a rollback points it at an older version (and is audited).
CREATE TABLE aicc.ivr_active (
    name         text PRIMARY KEY,
    version      integer NOT NULL,
    activated_by text NOT NULL,
    activated_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (name, version) REFERENCES aicc.ivr_flows (name, version)
);

CREATE TABLE aicc.calendars (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,40}$'),
    document   jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Dialled number -> flow. Kamailio routes the number to a voice gateway; the gateway runs this flow.
CREATE TABLE aicc.service_numbers (
    number     text PRIMARY KEY CHECK (number ~ '^\+?[0-9]{1,20}$'),
    flow       text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
