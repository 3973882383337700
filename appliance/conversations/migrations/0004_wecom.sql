-- WeCom customer service (企业微信 微信客服, channels/wecom.py; issue 19), and the dead letters of every
-- channel. A WeCom conversation is one customer (identity kind wecom: the external_userid) on one
-- customer-service account (open_kfid): replies go back through that account.
CREATE TABLE aicc.wecom_conversations (
    conversation_id uuid PRIMARY KEY REFERENCES aicc.conversations (id) ON DELETE CASCADE,
    open_kfid       text NOT NULL CHECK (length(open_kfid) BETWEEN 1 AND 64),
    external_userid text NOT NULL CHECK (length(external_userid) BETWEEN 1 AND 128)
);
CREATE INDEX wecom_conversations_customer ON aicc.wecom_conversations (open_kfid, external_userid);

-- Where sync_msg stopped, per account: the next callback's sync starts there.
CREATE TABLE aicc.wecom_cursors (
    open_kfid  text PRIMARY KEY CHECK (length(open_kfid) BETWEEN 1 AND 64),
    cursor     text NOT NULL CHECK (length(cursor) <= 256),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every WeCom message in and out by its msgid. In: a msgid is taken once (the same message synced
-- again is not stored twice); status stored, or refused (the customer's rate limit). Out: our msgid
-- (send_msg's idempotency key), pending until WeCom took it (sent) or it is dead (failed). WeCom lets
-- a reply go only within 48 hours of the customer's last message and at most 5 after it: counted here.
-- at: WeCom's send_time of a customer's message; when a reply went out.
CREATE TABLE aicc.wecom_messages (
    direction       text NOT NULL CHECK (direction IN ('in', 'out')),
    msgid           text NOT NULL CHECK (length(msgid) BETWEEN 1 AND 128),
    open_kfid       text NOT NULL CHECK (length(open_kfid) BETWEEN 1 AND 64),
    external_userid text NOT NULL CHECK (length(external_userid) BETWEEN 1 AND 128),
    conversation_id uuid REFERENCES aicc.conversations (id) ON DELETE SET NULL,
    message_id      bigint REFERENCES aicc.conversation_messages (id) ON DELETE SET NULL,
    status          text NOT NULL CHECK (status IN ('stored', 'refused', 'pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    at              timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (direction, msgid)
);
CREATE INDEX wecom_messages_customer ON aicc.wecom_messages (open_kfid, external_userid, created_at);
-- The retention purge deletes old conversation messages: the reference is cleared, the row stays.
CREATE INDEX wecom_messages_message ON aicc.wecom_messages (message_id) WHERE message_id IS NOT NULL;

-- What a channel could not deliver after its retries (conversations/dead_letters.py); the text stays
-- in the message, under its retention.
CREATE TABLE aicc.channel_dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel         text NOT NULL CHECK (channel IN ('webchat', 'voice', 'email', 'wecom', 'sms', 'app')),
    conversation_id uuid REFERENCES aicc.conversations (id) ON DELETE SET NULL,
    message_id      bigint REFERENCES aicc.conversation_messages (id) ON DELETE SET NULL,
    recipient       text NOT NULL CHECK (length(recipient) <= 300),
    reference       text NOT NULL CHECK (length(reference) <= 128),
    attempts        integer NOT NULL CHECK (attempts >= 0),
    error           text NOT NULL CHECK (length(error) <= 1000),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX channel_dead_letters_message ON aicc.channel_dead_letters (message_id)
    WHERE message_id IS NOT NULL;
