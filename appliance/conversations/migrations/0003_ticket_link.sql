-- A ticket opened from a conversation (a web chat now, email and WeCom later) links to it, as one
-- from a call links its call_id. Here rather than with the tickets because conversations come later
-- in the migration order (appliance/db/migrate.py): the foreign key needs both tables.
ALTER TABLE aicc.tickets ADD COLUMN conversation_id uuid REFERENCES aicc.conversations (id) ON DELETE SET NULL;
CREATE INDEX tickets_conversation ON aicc.tickets (conversation_id) WHERE conversation_id IS NOT NULL;
