-- When a conversation last went to the agents (handler queue): the agent desktop lists the chats
-- waiting for an agent oldest first, with how long each has waited. store.create_conversation and
-- store.update_conversation stamp it; it stays once an agent has the conversation.

ALTER TABLE aicc.conversations ADD COLUMN queued_at timestamptz;

-- Conversations waiting now: handed over just after the bot's last line (its transfer
-- prompt), or queued from the start when the bot never spoke.
UPDATE aicc.conversations c SET queued_at = coalesce(
    (SELECT max(m.created_at) FROM aicc.conversation_messages m
     WHERE m.conversation_id = c.id AND m.author = 'bot'),
    c.created_at)
WHERE c.handler = 'queue';

CREATE INDEX conversations_waiting ON aicc.conversations (queued_at)
    WHERE handler = 'queue' AND assignee IS NULL AND status <> 'resolved';
