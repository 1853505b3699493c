-- Field history and erasure (SPEC §15). Append-only: never edit a landed
-- migration.
--
-- History: the change trigger of migration 0006 (crm_record_changed, one
-- function for the six record tables) already compares every column of the
-- old and new row; it now also appends one record_history row per change,
-- in the write's own transaction — a client's write and every side write
-- (rollups, stamps, exclusive flags) alike, so server-maintained fields are
-- included. The row holds the changed fields only: `old_values` and
-- `new_values` are objects keyed by field (each key of `custom_fields` on
-- its own, as `custom_fields.<key>`), values as the row held them (the
-- column's JSON; JSON null for none). The API shows one entry per field.
-- One row per change, not per field: a write costs one more insert and one
-- index entry, whatever it changed; its storage is the changed values.
--
-- A record changed twice in one version (a hook and a side write of one
-- transaction) keeps one row: the first old values, the last new values.
--
-- Rows are kept as long as the record exists; PurgeRecord deletes them.

CREATE TABLE record_history (
    tenant_id      text        NOT NULL,
    record_id      text        NOT NULL,
    record_version integer     NOT NULL,
    resource_type  text        NOT NULL,
    changed_at     timestamptz NOT NULL,
    changed_by     text        NOT NULL,
    app_id         text,
    request_id     text,
    old_values     jsonb,
    new_values     jsonb       NOT NULL
);
-- One row per (record, version); read newest first (a forward scan).
CREATE UNIQUE INDEX record_history_key
    ON record_history (tenant_id, record_id, record_version DESC);

-- Erasures: who erased which record when, and how many rows of each kind
-- went. No value of the erased record is kept.
CREATE TABLE purge_audit (
    tenant_id     text        NOT NULL,
    id            bigint      GENERATED ALWAYS AS IDENTITY,
    resource_type text        NOT NULL,
    record_id     text        NOT NULL,
    purged_at     timestamptz NOT NULL DEFAULT now(),
    purged_by     text        NOT NULL,
    app_id        text,
    request_id    text,
    cascade       boolean     NOT NULL,
    erased        jsonb       NOT NULL,
    CONSTRAINT purge_audit_pkey PRIMARY KEY (tenant_id, id)
);

CREATE OR REPLACE FUNCTION crm_record_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    ignored  text[] := TG_ARGV[1:];
    new_row  jsonb := to_jsonb(NEW) - ignored;
    changed  text[];
    old_row  jsonb;
    op       text;
    seq      bigint;
    actor    text := coalesce(current_setting('crm.sub', true), '');
    req      text := nullif(current_setting('crm.request_id', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        op := 'created';
        SELECT coalesce(array_agg(key ORDER BY key), '{}') INTO changed
        FROM jsonb_each(new_row)
        WHERE value NOT IN ('null', '""', '[]', '{}', 'false', '0');
    ELSE
        old_row := to_jsonb(OLD);
        SELECT array_agg(n.key ORDER BY n.key) INTO changed
        FROM jsonb_each(new_row) n
        WHERE n.value IS DISTINCT FROM old_row -> n.key;
        IF changed IS NULL THEN
            RETURN NULL;  -- nothing changed: no event, no history
        END IF;
        op := CASE
            WHEN NEW.is_deleted AND NOT OLD.is_deleted THEN 'deleted'
            WHEN OLD.is_deleted AND NOT NEW.is_deleted THEN 'undeleted'
            ELSE 'updated'
        END;
    END IF;

    -- History: the changed fields' old and new values, custom fields per key.
    INSERT INTO record_history AS h (tenant_id, record_id, record_version, resource_type,
                                     changed_at, changed_by, app_id, request_id,
                                     old_values, new_values)
    SELECT NEW.tenant_id, NEW.id, NEW.version, TG_ARGV[0],
           coalesce(NEW.updated_at, now()), actor, NEW.app_id, req,
           CASE WHEN TG_OP = 'UPDATE' THEN jsonb_object_agg(c.field, coalesce(c.old_value, 'null')) END,
           jsonb_object_agg(c.field, coalesce(c.new_value, 'null'))
    FROM (
        SELECT k AS field, old_row -> k AS old_value, new_row -> k AS new_value
        FROM unnest(changed) AS k
        WHERE k <> 'custom_fields'
        UNION ALL
        SELECT 'custom_fields.' || k, old_row -> 'custom_fields' -> k, new_row -> 'custom_fields' -> k
        FROM (
            SELECT jsonb_object_keys(new_row -> 'custom_fields')
            WHERE jsonb_typeof(new_row -> 'custom_fields') = 'object'
            UNION
            SELECT jsonb_object_keys(old_row -> 'custom_fields')
            WHERE jsonb_typeof(old_row -> 'custom_fields') = 'object'
        ) AS keys (k)
        WHERE 'custom_fields' = ANY (changed)
          AND nullif(old_row -> 'custom_fields' -> k, 'null')
              IS DISTINCT FROM nullif(new_row -> 'custom_fields' -> k, 'null')
    ) AS c
    HAVING count(*) > 0
    ON CONFLICT (tenant_id, record_id, record_version) DO UPDATE
        -- A create stays a create (no old values); otherwise the first old
        -- value of a field wins and the last new value does.
        SET old_values = CASE WHEN h.old_values IS NULL THEN NULL
                              ELSE coalesce(excluded.old_values, '{}') || h.old_values END,
            new_values = h.new_values || excluded.new_values,
            changed_at = excluded.changed_at;

    IF current_setting('crm.changes_sequencing', true) = 'counter' THEN
        INSERT INTO change_heads AS h (tenant_id, last_sequence) VALUES (NEW.tenant_id, 1)
            ON CONFLICT (tenant_id) DO UPDATE SET last_sequence = h.last_sequence + 1
            RETURNING last_sequence INTO seq;
        INSERT INTO change_events (tenant_id, sequence, committed_at, resource_type, record_id,
                                   record_version, operation, changed_fields, record, actor,
                                   app_id, request_id, transaction_id)
        VALUES (NEW.tenant_id, seq, clock_timestamp(), TG_ARGV[0], NEW.id, NEW.version, op,
                changed, new_row, actor, NEW.app_id, req,
                coalesce(current_setting('crm.transaction_id', true), ''));
    ELSE
        INSERT INTO change_outbox (tenant_id, id, resource_type, record_id, record_version,
                                   operation, changed_fields, record, actor, app_id, request_id,
                                   transaction_id)
        VALUES (NEW.tenant_id, nextval('change_outbox_seq'), TG_ARGV[0], NEW.id, NEW.version, op,
                changed, new_row, actor, NEW.app_id, req,
                coalesce(current_setting('crm.transaction_id', true), ''));
    END IF;
    RETURN NULL;
END
$$;

-- The `purged` event of an erased record: its ids only (no record, no
-- changed fields), sequenced like any other event.
CREATE FUNCTION crm_record_purged(tenant text, resource_type text, record_id text,
                                  record_version integer, app_id text) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    seq bigint;
    actor text := coalesce(current_setting('crm.sub', true), '');
    req text := nullif(current_setting('crm.request_id', true), '');
    txn text := coalesce(current_setting('crm.transaction_id', true), '');
BEGIN
    IF current_setting('crm.changes_sequencing', true) = 'counter' THEN
        INSERT INTO change_heads AS h (tenant_id, last_sequence) VALUES (tenant, 1)
            ON CONFLICT (tenant_id) DO UPDATE SET last_sequence = h.last_sequence + 1
            RETURNING last_sequence INTO seq;
        INSERT INTO change_events (tenant_id, sequence, committed_at, resource_type, record_id,
                                   record_version, operation, changed_fields, record, actor,
                                   app_id, request_id, transaction_id)
        VALUES (tenant, seq, clock_timestamp(), resource_type, record_id, record_version,
                'purged', '{}', NULL, actor, app_id, req, txn);
    ELSE
        INSERT INTO change_outbox (tenant_id, id, resource_type, record_id, record_version,
                                   operation, changed_fields, record, actor, app_id, request_id,
                                   transaction_id)
        VALUES (tenant, nextval('change_outbox_seq'), resource_type, record_id, record_version,
                'purged', '{}', NULL, actor, app_id, req, txn);
    END IF;
END
$$;

-- A stored JSON value with every copy of the records `ids` taken out: an
-- array loses each element that holds one of them anywhere (the id itself,
-- a line-item summary, a participant `{"contact_id": id, "email": …}`), an
-- object's members are cleaned the same way, and a string that is one of
-- them becomes NULL. For the copies of erased records inside other records
-- (reference lists, a quote's line_items, an activity's participants) and
-- their history and change events.
CREATE FUNCTION crm_scrub(doc jsonb, ids text[]) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(doc)
        WHEN 'array' THEN (
            SELECT coalesce(jsonb_agg(crm_scrub(e, ids) ORDER BY n), '[]'::jsonb)
            FROM jsonb_array_elements(doc) WITH ORDINALITY AS a (e, n)
            WHERE NOT EXISTS (SELECT 1 FROM unnest(ids) AS i (id) WHERE strpos(e::text, i.id) > 0))
        WHEN 'object' THEN (
            SELECT coalesce(jsonb_object_agg(k, crm_scrub(v, ids)), '{}'::jsonb)
            FROM jsonb_each(doc) AS o (k, v))
        WHEN 'string' THEN CASE WHEN doc #>> '{}' = ANY (ids) THEN NULL ELSE doc END
        ELSE doc
    END
$$;

-- The one way a request role removes a record row: request roles have no
-- DELETE privilege on the record tables (a delete is soft), so an erasure
-- calls this function, which runs as the migrations' owner. It deletes only
-- a row of the caller's tenant (and app, for an integration token's
-- session), stated in its own predicate — the owner may be a superuser,
-- which row-level security does not bind. Returns the version the row had
-- (NULL: no such row).
CREATE FUNCTION crm_purge_row(record_table text, record_id text) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    gone integer;
BEGIN
    IF record_table NOT IN ('accounts', 'contacts', 'deals', 'activities', 'quotes', 'line_items') THEN
        RAISE EXCEPTION 'not a record table: %', record_table;
    END IF;
    IF crm_tenant() IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('DELETE FROM %I WHERE tenant_id = crm_tenant() '
                   'AND (crm_app_id() IS NULL OR app_id = crm_app_id()) AND id = $1 '
                   'RETURNING version', record_table)
        INTO gone USING record_id;
    RETURN gone;
END
$$;
REVOKE ALL ON FUNCTION crm_purge_row(text, text) FROM PUBLIC;

DO $$
DECLARE
    scoped constant text := 'tenant_id = crm_tenant() AND (crm_app_id() IS NULL OR app_id = crm_app_id())';
    tenant constant text := 'tenant_id = crm_tenant()';
    r text;
BEGIN
    ALTER TABLE record_history ENABLE ROW LEVEL SECURITY;
    ALTER TABLE record_history FORCE ROW LEVEL SECURITY;
    -- A record's history is visible exactly where the record is (app_id is
    -- the record's app, as on its change events).
    EXECUTE format(
        'CREATE POLICY tenant_access ON record_history AS PERMISSIVE FOR ALL TO PUBLIC USING (%s) WITH CHECK (%s)',
        scoped, scoped);
    ALTER TABLE purge_audit ENABLE ROW LEVEL SECURITY;
    ALTER TABLE purge_audit FORCE ROW LEVEL SECURITY;
    EXECUTE format(
        'CREATE POLICY tenant_access ON purge_audit AS PERMISSIVE FOR ALL TO PUBLIC USING (%s) WITH CHECK (%s)',
        tenant, tenant);
    FOREACH r IN ARRAY ARRAY[crm_app_role(), crm_integration_role()] LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON record_history TO %I', r);
        EXECUTE format('GRANT SELECT, INSERT ON purge_audit TO %I', r);
        -- Erasure empties the record of the erased record's events.
        EXECUTE format('GRANT SELECT, UPDATE (record) ON change_outbox TO %I', r);
        EXECUTE format('GRANT UPDATE (record) ON change_events TO %I', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION crm_record_purged(text, text, text, integer, text), crm_scrub(jsonb, text[]) TO %I', r);
    END LOOP;
    EXECUTE format('GRANT EXECUTE ON FUNCTION crm_purge_row(text, text) TO %I, %I',
                   crm_app_role(), crm_integration_role());
END
$$;
