-- Text conversations routed by the ACD (issue 19; api/chat_routing.py). A conversation handed to the
-- agents becomes an ACD contact (channel chat) in the queue app.yml's chat_queue names; the ACD offers
-- it to an agent with chat capacity left, the agent accepts in the desk, and it is re-queued when the
-- agent does not reply in time. The API processes are the ACD's gateway for these contacts (gateway
-- "api"): what they record here is how several of them agree on who acts (conditional UPDATEs).
--
-- acd_contact:      the conversation's contact in the ACD now (waiting, offered or connected); NULL
--                   when it has none (not routed, taken by hand, ended).
-- routed_at:        when acd_contact was set (a contact the ACD lost is re-queued after a while).
-- route_error:      why it is not routed (no such queue, not a chat queue, waited past max_wait_s):
--                   it waits for an agent to take it from the Chats tab, and says so.
-- offer_*:          the offer ringing now (reservation, agent, when the ring timeout ends): the API
--                   process that records it first is the one that reports no answer at its end.
-- accepted_at:      when the agent accepted the offer (the contact is connected to the assignee).
-- reply_due_at:     the agent's first reply is due by then (chat_first_reply_s), else re-queued.
ALTER TABLE aicc.conversations
    ADD COLUMN acd_contact       uuid,
    ADD COLUMN routed_at         timestamptz,
    ADD COLUMN route_error       text NOT NULL DEFAULT '' CHECK (length(route_error) <= 300),
    ADD COLUMN offer_reservation uuid,
    ADD COLUMN offer_agent       bigint,
    ADD COLUMN offer_expires_at  timestamptz,
    ADD COLUMN accepted_at       timestamptz,
    ADD COLUMN reply_due_at      timestamptz;

CREATE UNIQUE INDEX conversations_acd_contact ON aicc.conversations (acd_contact)
    WHERE acd_contact IS NOT NULL;
CREATE INDEX conversations_offer_expiry ON aicc.conversations (offer_expires_at)
    WHERE offer_expires_at IS NOT NULL;
CREATE INDEX conversations_reply_due ON aicc.conversations (reply_due_at) WHERE reply_due_at IS NOT NULL;
