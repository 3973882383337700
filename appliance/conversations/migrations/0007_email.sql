-- Email (channels/email.py; issue 19): a conversation is one thread with one customer address (customer
-- identity kind email); the mailbox the appliance reads is the site's one.
CREATE TABLE aicc.email_conversations (
    conversation_id uuid PRIMARY KEY REFERENCES aicc.conversations (id) ON DELETE CASCADE,
    address         text NOT NULL CHECK (length(address) BETWEEN 3 AND 320),
    name            text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    subject         text NOT NULL DEFAULT '' CHECK (length(subject) <= 300)
);
CREATE INDEX email_conversations_address ON aicc.email_conversations (address);

-- Every message in and out by its Message-ID: the thread's references are looked up here. In: taken
-- once (the same message fetched again, or delivered twice, is not stored twice); status stored, or
-- refused (malformed, too large, automatic mail, the sender's rate limit). Out: the Message-ID we gave
-- the reply, pending until the mail server took it (sent) or it is dead (failed, or bounced later).
-- at: the message's Date; when a reply went out.
CREATE TABLE aicc.email_messages (
    direction       text NOT NULL CHECK (direction IN ('in', 'out')),
    msgid           text NOT NULL CHECK (length(msgid) BETWEEN 3 AND 256),
    address         text NOT NULL CHECK (length(address) <= 320),
    conversation_id uuid REFERENCES aicc.conversations (id) ON DELETE SET NULL,
    message_id      bigint REFERENCES aicc.conversation_messages (id) ON DELETE SET NULL,
    status          text NOT NULL CHECK (status IN ('stored', 'refused', 'pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    at              timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (direction, msgid)
);
CREATE INDEX email_messages_msgid ON aicc.email_messages (msgid);
CREATE INDEX email_messages_conversation ON aicc.email_messages (conversation_id, created_at)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX email_messages_message ON aicc.email_messages (message_id) WHERE message_id IS NOT NULL;

-- Where reading the mailbox got to (the last UID of its UIDVALIDITY), and which API process reads it
-- now: one at a time, the others take over when its lease runs out.
CREATE TABLE aicc.email_mailboxes (
    mailbox     text PRIMARY KEY CHECK (length(mailbox) BETWEEN 1 AND 600),
    uidvalidity bigint,
    last_uid    bigint NOT NULL DEFAULT 0,
    owner       text NOT NULL DEFAULT '',
    lease_until timestamptz NOT NULL DEFAULT '-infinity',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
