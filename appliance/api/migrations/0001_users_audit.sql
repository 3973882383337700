-- Users, API and session tokens, and the append-only audit log of every change.
CREATE SCHEMA IF NOT EXISTS aicc;

-- Refuses UPDATE, DELETE and TRUNCATE on append-only tables (audit log, contact-center events),
-- whoever asks, the owner login included: history is written once.
CREATE FUNCTION aicc.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'aicc.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TABLE aicc.users (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username            text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9._-]{1,63}$'),
    display_name        text NOT NULL DEFAULT '',
    role                text NOT NULL CHECK (role IN ('agent', 'supervisor', 'admin', 'auditor')),
    -- argon2id (PHC string); NULL: no password login (API tokens only)
    password_hash       text,
    disabled            boolean NOT NULL DEFAULT false,
    failed_logins       integer NOT NULL DEFAULT 0,
    locked_until        timestamptz,
    last_login_at       timestamptz,
    password_changed_at timestamptz,
    language            text NOT NULL DEFAULT 'zh' CHECK (language IN ('zh', 'en')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- API tokens (kind api: long-lived, named, shown once) and login sessions (kind session). Only a keyed
-- hash of each token is stored (HMAC-SHA256 with the site's api_secret_key): a copy of the database
-- does not let anyone log in.
CREATE TABLE aicc.api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES aicc.users(id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('api', 'session')),
    name         text NOT NULL DEFAULT '',
    token_hash   bytea NOT NULL UNIQUE,
    prefix       text NOT NULL,
    source       text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_tokens_user ON aicc.api_tokens (user_id);

-- Who changed what, when, from where, before and after. Secrets never appear in before/after.
CREATE TABLE aicc.audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor_id    bigint,                      -- no foreign key: entries outlive their users
    actor       text NOT NULL,               -- username, or installer / acd / system
    source      text NOT NULL DEFAULT '',    -- client address
    action      text NOT NULL,               -- user.create, queue.update, agent.state, ...
    target_type text NOT NULL,
    target_id   text NOT NULL,
    before      jsonb,
    after       jsonb,
    request_id  text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON aicc.audit_log (at);
CREATE INDEX audit_log_target ON aicc.audit_log (target_type, target_id);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON aicc.audit_log
    FOR EACH ROW EXECUTE FUNCTION aicc.refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON aicc.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION aicc.refuse_change();
