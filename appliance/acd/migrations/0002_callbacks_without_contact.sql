-- A callback can be taken without a waiting contact (an IVR callback node, e.g. out of hours).
ALTER TABLE aicc.acd_callbacks ALTER COLUMN contact_id DROP NOT NULL;
