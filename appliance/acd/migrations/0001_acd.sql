-- The ACD: configuration (skills, queues, agents' profiles, routing policy, dispositions), which
-- admins change through the API, and the runtime state the active ACD persists as it changes
-- (agent states, waiting and connected contacts, callbacks), so a restart or a takeover loses nothing.

CREATE TABLE aicc.skills (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9_]{1,40}$'),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- config: a validated QueueConfig (appliance/acd/policy.py) as JSON.
CREATE TABLE aicc.queues (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,40}$'),
    config     jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- An agent's routing profile (a user who takes contacts): SIP extension, skills with proficiency,
-- languages, capacity per channel (AgentProfile in appliance/acd/policy.py).
CREATE TABLE aicc.agents (
    user_id    bigint PRIMARY KEY REFERENCES aicc.users(id) ON DELETE CASCADE,
    extension  text UNIQUE CHECK (extension ~ '^[0-9A-Za-z_.-]{1,32}$'),
    profile    jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The routing policy (RoutingPolicy), versioned: the highest version is in force; a rollback adds a
-- new version with an old document.
CREATE TABLE aicc.routing_policies (
    version    integer PRIMARY KEY,
    document   jsonb NOT NULL,
    source     text NOT NULL DEFAULT '',
    comment    text NOT NULL DEFAULT '',
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE aicc.dispositions (
    code   text PRIMARY KEY CHECK (code ~ '^[a-z0-9_]{1,40}$'),
    label  jsonb NOT NULL,            -- {"en": "...", "zh": "..."}
    active boolean NOT NULL DEFAULT true
);

-- Commands to the active ACD (from the API and the voice gateways): a work queue taken with
-- FOR UPDATE SKIP LOCKED; each insert is followed by NOTIFY acd_commands. A command is deleted in the
-- same transaction that persists its effects, so a crash between the two replays it.
CREATE TABLE aicc.acd_commands (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uid        uuid NOT NULL UNIQUE,
    kind       text NOT NULL,
    payload    jsonb NOT NULL,
    source     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz
);

-- Runtime state, written by the active ACD only.
CREATE TABLE aicc.acd_agent_state (
    user_id    bigint PRIMARY KEY REFERENCES aicc.users(id) ON DELETE CASCADE,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE aicc.acd_contacts (
    id         uuid PRIMARY KEY,
    seq        bigint NOT NULL,           -- arrival order: ties in the queue order break on it
    queue      text NOT NULL,
    state      text NOT NULL CHECK (state IN ('waiting', 'reserved', 'connected')),
    contact    jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE aicc.acd_callbacks (
    id           uuid PRIMARY KEY,
    contact_id   uuid NOT NULL,
    queue        text NOT NULL,
    number       text NOT NULL,
    language     text NOT NULL,
    requested_at timestamptz NOT NULL,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'cancelled')),
    note         text NOT NULL DEFAULT '',
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   text NOT NULL DEFAULT ''
);
CREATE INDEX acd_callbacks_pending ON aicc.acd_callbacks (requested_at) WHERE status = 'pending';

-- Voice gateways say they are alive; contacts of a gateway silent for long are abandoned by the ACD.
CREATE TABLE aicc.gateway_heartbeats (
    gateway text PRIMARY KEY,
    seen_at timestamptz NOT NULL
);
