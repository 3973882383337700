-- Retention of tickets and customers (issue 17; PIPL Art. 19): a ticket finished (closed, or resolved
-- and left so) before the ticket retention loses what names or quotes the customer; a customer with no
-- activity since the transcript cutoff loses their name and identities. appliance/retention/purge.py.

-- The periods a run applied; NULL: a run from before tickets and customers were purged. A ticket
-- outlives the transcripts of its case (RetentionSettings says why the purge relies on it).
ALTER TABLE aicc.retention_runs
    ADD COLUMN ticket_days integer CHECK (ticket_days >= 30),
    ADD COLUMN ticket_cutoff timestamptz,  -- finished tickets last changed before this were purged
    ADD CHECK (ticket_days >= transcript_days);

-- A purged ticket keeps its number, status, priority, group, assignee, type, source, links, times and
-- its event log (the SLA figures are computed from it); the subject ('(purged)': the bot writes the
-- caller's words there), the description and the customer's identities go, and so do the texts of its
-- comments and confirmations. purged_at says when; the partial index finds the next ones.
ALTER TABLE aicc.tickets ADD COLUMN purged_at timestamptz;
CREATE INDEX tickets_finished_unpurged ON aicc.tickets (updated_at)
    WHERE purged_at IS NULL AND status IN ('resolved', 'closed');

-- A purged ticket stays purged whatever writes it again (the API refuses changes to it; this holds for
-- any other writer).
CREATE FUNCTION aicc.keep_ticket_purged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.purged_at IS NOT NULL THEN
        NEW.subject := '(purged)';
        NEW.description := '';
        NEW.customer := '{}';
        NEW.purged_at := OLD.purged_at;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tickets_keep_purged BEFORE UPDATE ON aicc.tickets
    FOR EACH ROW EXECUTE FUNCTION aicc.keep_ticket_purged();

-- The event log stays append-only with one exception: the text of a comment (body) or of a customer's
-- confirmation (note) of a finished ticket may be blanked, nothing else of the row changed. That is
-- all the purge does to it, so every SLA figure (times, kinds, authors, visibilities, statuses,
-- priorities) stays as it was. The ticket's status is checked rather than its purged_at: the purge
-- blanks the texts in the statement that marks the ticket, which the trigger's query may not see yet.
CREATE FUNCTION aicc.ticket_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
        AND OLD.kind IN ('commented', 'customer_confirmed')
        AND (NEW.id, NEW.ticket_id, NEW.at, NEW.kind, NEW.actor) = (OLD.id, OLD.ticket_id, OLD.at, OLD.kind, OLD.actor)
        AND NEW.actor_id IS NOT DISTINCT FROM OLD.actor_id
        AND NEW.data - 'body' - 'note' = OLD.data - 'body' - 'note'
        AND coalesce(NEW.data ->> 'body', '') = '' AND coalesce(NEW.data ->> 'note', '') = ''
        AND EXISTS (SELECT 1 FROM aicc.tickets t WHERE t.id = OLD.ticket_id AND t.status IN ('resolved', 'closed'))
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'aicc.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
DROP TRIGGER ticket_events_append_only ON aicc.ticket_events;
CREATE TRIGGER ticket_events_append_only BEFORE UPDATE OR DELETE ON aicc.ticket_events
    FOR EACH ROW EXECUTE FUNCTION aicc.ticket_events_guard();

-- An event written for a purged ticket later (a replayed write; the API refuses them) has no text.
CREATE FUNCTION aicc.blank_purged_ticket_texts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind IN ('commented', 'customer_confirmed')
        AND EXISTS (SELECT 1 FROM aicc.tickets WHERE id = NEW.ticket_id AND purged_at IS NOT NULL) THEN
        NEW.data := NEW.data || CASE NEW.kind WHEN 'commented' THEN '{"body": ""}'::jsonb
                                              ELSE '{"note": ""}'::jsonb END;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ticket_events_blank_purged BEFORE INSERT ON aicc.ticket_events
    FOR EACH ROW EXECUTE FUNCTION aicc.blank_purged_ticket_texts();

-- Notifications quote the ticket's subject; the purge blanks it there too, found by number.
CREATE INDEX notifications_ticket ON aicc.notifications (ticket) WHERE ticket IS NOT NULL;

-- A customer loses name and identities; the row stays (conversations keep their foreign key) with
-- purged_at set. Personal data written to it again (a name, an identity) makes it a candidate again:
-- that data has a lifetime of its own.
ALTER TABLE aicc.customers ADD COLUMN purged_at timestamptz;
CREATE INDEX customers_unpurged ON aicc.customers (created_at) WHERE purged_at IS NULL;

CREATE FUNCTION aicc.customer_data_again() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'customers' THEN
        IF OLD.purged_at IS NOT NULL AND NEW.name <> '' THEN
            NEW.purged_at := NULL;
        END IF;
        RETURN NEW;
    END IF;
    UPDATE aicc.customers SET purged_at = NULL WHERE id = NEW.customer_id AND purged_at IS NOT NULL;
    RETURN NULL;  -- AFTER INSERT: the result is ignored
END $$;
CREATE TRIGGER customers_data_again BEFORE UPDATE ON aicc.customers
    FOR EACH ROW EXECUTE FUNCTION aicc.customer_data_again();
CREATE TRIGGER customer_identities_data_again AFTER INSERT ON aicc.customer_identities
    FOR EACH ROW EXECUTE FUNCTION aicc.customer_data_again();

-- The forms a caller's number takes in aicc.calls.caller for one E.164 number, as
-- aicc.appliance.conversations.store.number_forms gives them (+8613800138000, 8613800138000,
-- 008613800138000, 13800138000; 021... for a landline); a value that is no E.164 number as itself.
CREATE FUNCTION aicc.number_forms(phone text) RETURNS text[] LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN phone ~ '^\+[1-9][0-9]{7,14}$' THEN
        ARRAY[phone, substr(phone, 2), '00' || substr(phone, 2)]
        || CASE WHEN left(phone, 3) = '+86' THEN
               ARRAY[CASE WHEN substr(phone, 4) ~ '^1[0-9]{10}$' THEN substr(phone, 4) ELSE '0' || substr(phone, 4) END]
           ELSE '{}'::text[] END
    ELSE ARRAY[phone] END
$$;
