-- external_id: the caller's own key for a record (an ERP or billing id),
-- the key of Upsert and BatchUpsert. At most 255 characters (the service
-- says so first, naming the field; the CHECK is the backstop). Unique per
-- tenant and app namespace among live records: a person token's records
-- share the '' namespace, each integration app has its own. A deleted
-- record frees its key.
--
-- The unique index leads with (tenant_id, external_id), so it also serves
-- `filter=external_id="..."` and Upsert's lookup; its name follows the
-- <table>_<field>_key convention that maps a clash to ALREADY_EXISTS on
-- the field.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['accounts', 'contacts', 'deals', 'activities', 'quotes', 'line_items'] LOOP
        EXECUTE format(
            'ALTER TABLE %1$I ADD COLUMN external_id text '
            'CONSTRAINT %1$s_external_id_check CHECK (char_length(external_id) BETWEEN 1 AND 255)', t);
        EXECUTE format(
            'CREATE UNIQUE INDEX %1$s_external_id_key ON %1$I '
            '(tenant_id, external_id, (COALESCE(app_id, ''''))) '
            'WHERE external_id IS NOT NULL AND NOT is_deleted', t);
    END LOOP;
END
$$;
