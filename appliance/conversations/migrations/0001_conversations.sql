-- Conversations on every channel, one model (issue 19). A customer has identities per channel; a
-- conversation is one exchange on one channel, handled by the bot, waiting in a queue, or held by an
-- agent; its messages are numbered per conversation (seq). Voice calls are not copied here: a
-- customer's history joins aicc.calls by the customer's phone identities (E.164).

CREATE TABLE aicc.customers (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    language   text NOT NULL DEFAULT '' CHECK (language ~ '^([a-z]{2})?$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- value: phone numbers in E.164; webchat: HMAC-SHA256 of the visitor id the widget keeps (the id is a
-- bearer secret of the visitor's browser, so it is not stored as such).
CREATE TABLE aicc.customer_identities (
    customer_id uuid NOT NULL REFERENCES aicc.customers(id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('phone', 'email', 'wecom', 'openid', 'app', 'webchat')),
    value       text NOT NULL CHECK (length(value) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, value)
);
CREATE INDEX customer_identities_customer ON aicc.customer_identities (customer_id);

CREATE TABLE aicc.conversations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id     uuid NOT NULL REFERENCES aicc.customers(id),
    channel         text NOT NULL CHECK (channel IN ('webchat', 'voice', 'email', 'wecom', 'sms', 'app')),
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'pending', 'snoozed', 'resolved')),
    handler         text NOT NULL DEFAULT 'bot' CHECK (handler IN ('bot', 'queue', 'agent')),
    priority        text NOT NULL DEFAULT 'normal' CHECK (priority IN ('urgent', 'high', 'normal', 'low')),
    assignee        bigint REFERENCES aicc.users(id) ON DELETE SET NULL,
    queue           text NOT NULL DEFAULT '',
    language        text NOT NULL DEFAULT '' CHECK (language ~ '^([a-z]{2})?$'),
    tags            text[] NOT NULL DEFAULT '{}',
    bot             text NOT NULL DEFAULT '',
    summary         text NOT NULL DEFAULT '',     -- the bot's one line when it hands over
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_message_at timestamptz,
    resolved_at     timestamptz
);
CREATE INDEX conversations_customer ON aicc.conversations (customer_id, created_at);
CREATE INDEX conversations_open ON aicc.conversations (handler, updated_at) WHERE status <> 'resolved';
CREATE INDEX conversations_assignee ON aicc.conversations (assignee) WHERE assignee IS NOT NULL;

-- client_id: the sender's idempotency key (the widget's per message): a message sent twice (a
-- reconnect resending) is stored once.
CREATE TABLE aicc.conversation_messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES aicc.conversations(id),
    seq             integer NOT NULL CHECK (seq >= 1),
    direction       text NOT NULL CHECK (direction IN ('in', 'out')),
    author          text NOT NULL CHECK (author IN ('customer', 'bot', 'agent', 'system')),
    author_id       bigint,                       -- the agent's user id
    body            text NOT NULL CHECK (length(body) BETWEEN 1 AND 4000),
    client_id       text CHECK (length(client_id) BETWEEN 1 AND 64),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (conversation_id, seq),
    UNIQUE (conversation_id, client_id)
);

-- A customer's history finds their calls by number.
CREATE INDEX calls_caller ON aicc.calls (caller);
