-- The WeChat official account (微信公众号, channels/wechat_oa.py; issue 19): conversations of channel
-- wechat_oa, one follower (customer identity kind openid) each; the account is the appliance's one.
ALTER TABLE aicc.conversations DROP CONSTRAINT conversations_channel_check,
    ADD CONSTRAINT conversations_channel_check
    CHECK (channel IN ('webchat', 'voice', 'email', 'wecom', 'wechat_oa', 'sms', 'app'));
ALTER TABLE aicc.channel_dead_letters DROP CONSTRAINT channel_dead_letters_channel_check,
    ADD CONSTRAINT channel_dead_letters_channel_check
    CHECK (channel IN ('webchat', 'voice', 'email', 'wecom', 'wechat_oa', 'sms', 'app'));

CREATE TABLE aicc.wechat_oa_conversations (
    conversation_id uuid PRIMARY KEY REFERENCES aicc.conversations (id) ON DELETE CASCADE,
    openid          text NOT NULL CHECK (length(openid) BETWEEN 1 AND 64)
);
CREATE INDEX wechat_oa_conversations_customer ON aicc.wechat_oa_conversations (openid);

-- Every message in and out. In: by the platform's MsgId, taken once (a callback the platform repeats
-- because it got no answer in time is not stored twice); status stored, or refused (the customer's
-- rate limit). Out: our own id (the customer-service API has none), pending until the platform took
-- it (sent) or it is dead (failed). Replies go only within 48 hours of the customer's last message
-- and at most 5 after it: counted here. at: the message's CreateTime; when a reply went out.
CREATE TABLE aicc.wechat_oa_messages (
    direction       text NOT NULL CHECK (direction IN ('in', 'out')),
    msgid           text NOT NULL CHECK (length(msgid) BETWEEN 1 AND 64),
    openid          text NOT NULL CHECK (length(openid) BETWEEN 1 AND 64),
    conversation_id uuid REFERENCES aicc.conversations (id) ON DELETE SET NULL,
    message_id      bigint REFERENCES aicc.conversation_messages (id) ON DELETE SET NULL,
    status          text NOT NULL CHECK (status IN ('stored', 'refused', 'pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    at              timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (direction, msgid)
);
CREATE INDEX wechat_oa_messages_customer ON aicc.wechat_oa_messages (openid, created_at);
-- The retention purge deletes old conversation messages: the reference is cleared, the row stays.
CREATE INDEX wechat_oa_messages_message ON aicc.wechat_oa_messages (message_id)
    WHERE message_id IS NOT NULL;
