-- The change feed (SPEC §11). Append-only: never edit a landed migration.
--
-- Every committed change to a record row — a client's write or a side effect
-- of one — is captured by one trigger, crm_record_changed(), in the write's
-- own transaction: a rolled-back write leaves nothing, an UPDATE that changes
-- no column leaves nothing. Where the event goes depends on how sequences are
-- assigned (the database setting crm.changes_sequencing, set by the server
-- from CRM_CHANGES_SEQUENCING):
--
--   relay (default, one PostgreSQL node): the trigger appends to
--     change_outbox (no lock, no contention). Each row takes an id from a
--     sequence after the write took its row lock, so two writes of one record
--     (the second waits for the first to commit) get ids in commit order. One
--     sequencer (a single-writer role held by an advisory lock) repeatedly
--     moves the committed rows it can see into change_events, in id order,
--     numbering each tenant's rows on from its head, gapless. A row committed
--     later is moved later and numbered higher: a sequence, once shown to a
--     reader, never gains an event below it, and the feed follows commit order
--     (change_outbox_seq must keep CACHE 1: ids in the order they were taken).
--   counter (Citus, where a sequence and a sequencer would be one node's):
--     the trigger takes
--     the tenant's row in change_heads (held to commit) and writes the event
--     to change_events itself. Gapless and in commit order everywhere, but a
--     tenant's writes then commit one at a time.
--
-- change_events is partitioned by week of committed_at; retention drops
-- whole partitions (no mass DELETE, no vacuum storm). The record is stored as
-- its row (to_jsonb) and turned into the exact Get shape when read.
--
-- Access: request roles read their tenant's events and head (integration
-- roles only their app's events) and write only through the trigger's
-- inserts, checked against the tenant. Background work that spans tenants
-- (sequencer, relay, pruning, wake-ups) runs as this database's background
-- role crm_bg_<name>_<hash> (NOLOGIN; the server's owner connection switches
-- to it), whose policies cover the feed tables only — never a record table.

DO $$
DECLARE
    bg text := 'crm_bg_' || substr(crm_app_role(), length('crm_app_') + 1);
BEGIN
    BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT', bg);
    EXCEPTION
        WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    IF NOT pg_has_role(current_user, bg, 'MEMBER') THEN
        EXECUTE format('GRANT %I TO %I', bg, current_user);
    END IF;
    EXECUTE format(
        'CREATE FUNCTION crm_background_role() RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS %L',
        format('SELECT %L::text', bg));
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', bg);
    -- Only this database's roles (and the owner) may connect (0004).
    IF pg_has_role(current_user, (SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), bg);
    END IF;
END
$$;

-- Every role of this database, for tooling that cleans up after a database
-- is dropped (roles are cluster-wide).
CREATE FUNCTION crm_roles() RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ARRAY[crm_app_role(), crm_integration_role(), crm_background_role()] $$;

CREATE SEQUENCE change_outbox_seq;
CREATE TABLE change_outbox (
    tenant_id      text    NOT NULL,
    id             bigint  NOT NULL,
    resource_type  text    NOT NULL,
    record_id      text    NOT NULL,
    record_version integer NOT NULL,
    operation      text    NOT NULL,
    changed_fields text[]  NOT NULL,
    record         jsonb,
    actor          text    NOT NULL,
    app_id         text,
    request_id     text,
    transaction_id text    NOT NULL,
    CONSTRAINT change_outbox_pkey PRIMARY KEY (tenant_id, id)
);
-- The sequencer reads the table in id order (LIMIT a batch): an index scan,
-- whatever the planner's idea of the table's size. The table is a queue
-- (every row is deleted within milliseconds): vacuumed by its dead rows'
-- count alone, not a share of a size that is always near zero.
CREATE INDEX change_outbox_id_idx ON change_outbox (id);
ALTER TABLE change_outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0
);

CREATE TABLE change_events (
    tenant_id      text        NOT NULL,
    sequence       bigint      NOT NULL,
    committed_at   timestamptz NOT NULL,
    resource_type  text        NOT NULL,
    record_id      text        NOT NULL,
    record_version integer     NOT NULL,
    operation      text        NOT NULL,
    changed_fields text[]      NOT NULL,
    record         jsonb,
    actor          text        NOT NULL,
    app_id         text,
    request_id     text,
    transaction_id text        NOT NULL,
    CONSTRAINT change_events_pkey PRIMARY KEY (tenant_id, sequence, committed_at)
) PARTITION BY RANGE (committed_at);
-- Filtered reads (resource_types × operations) walk only matching events.
CREATE INDEX change_events_filter_idx ON change_events (tenant_id, resource_type, operation, sequence);

-- Each tenant's latest sequence, and the oldest it still keeps (retention
-- raises it before it drops the partitions below it, so a reader behind it is
-- told its position expired, never skipped silently).
CREATE TABLE change_heads (
    tenant_id       text   NOT NULL,
    last_sequence   bigint NOT NULL,
    oldest_sequence bigint NOT NULL DEFAULT 1,
    CONSTRAINT change_heads_pkey PRIMARY KEY (tenant_id)
);

-- How far the JetStream relay has published each tenant's events.
CREATE TABLE change_relay (
    tenant_id     text   NOT NULL,
    last_sequence bigint NOT NULL,
    CONSTRAINT change_relay_pkey PRIMARY KEY (tenant_id)
);

-- Weekly partitions (Monday 00:00 UTC) of change_events from the current
-- week to `weeks_ahead` weeks ahead; run by the migration and hourly by the
-- server's maintenance task (as the owner).
CREATE FUNCTION crm_ensure_change_partitions(weeks_ahead integer) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    start timestamptz := date_trunc('week', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    lo    timestamptz;
    name  text;
BEGIN
    FOR i IN 0..weeks_ahead LOOP
        lo := start + make_interval(weeks => i);
        name := 'change_events_' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF change_events FOR VALUES FROM (%L) TO (%L)',
                           name, lo, lo + interval '1 week');
            -- Read only through change_events (whose policies apply); a
            -- partition named directly shows nothing.
            EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', name);
            EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', name);
        END IF;
    END LOOP;
END
$$;

-- The partitions of change_events with their upper bounds, for retention
-- (which raises change_heads.oldest_sequence first, then drops them whole).
CREATE FUNCTION crm_change_partitions() RETURNS TABLE (name text, upper_bound timestamptz)
    LANGUAGE sql STABLE AS $$
    SELECT c.relname::text,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'change_events'::regclass
$$;

SELECT crm_ensure_change_partitions(4);

-- The trigger: one event per changed row. TG_ARGV[0] is the resource type,
-- the rest are columns that are not fields (search_doc).
CREATE FUNCTION crm_record_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    ignored  text[] := TG_ARGV[1:];
    new_row  jsonb := to_jsonb(NEW) - ignored;
    changed  text[];
    old_row  jsonb;
    op       text;
    seq      bigint;
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
            RETURN NULL;  -- nothing changed: no event
        END IF;
        op := CASE
            WHEN NEW.is_deleted AND NOT OLD.is_deleted THEN 'deleted'
            WHEN OLD.is_deleted AND NOT NEW.is_deleted THEN 'undeleted'
            ELSE 'updated'
        END;
    END IF;
    IF current_setting('crm.changes_sequencing', true) = 'counter' THEN
        INSERT INTO change_heads AS h (tenant_id, last_sequence) VALUES (NEW.tenant_id, 1)
            ON CONFLICT (tenant_id) DO UPDATE SET last_sequence = h.last_sequence + 1
            RETURNING last_sequence INTO seq;
        INSERT INTO change_events (tenant_id, sequence, committed_at, resource_type, record_id,
                                   record_version, operation, changed_fields, record, actor,
                                   app_id, request_id, transaction_id)
        VALUES (NEW.tenant_id, seq, clock_timestamp(), TG_ARGV[0], NEW.id, NEW.version, op,
                changed, new_row, coalesce(current_setting('crm.sub', true), ''), NEW.app_id,
                nullif(current_setting('crm.request_id', true), ''),
                coalesce(current_setting('crm.transaction_id', true), ''));
    ELSE
        INSERT INTO change_outbox (tenant_id, id, resource_type, record_id, record_version,
                                   operation, changed_fields, record, actor, app_id, request_id,
                                   transaction_id)
        VALUES (NEW.tenant_id, nextval('change_outbox_seq'), TG_ARGV[0], NEW.id, NEW.version, op,
                changed, new_row,
                coalesce(current_setting('crm.sub', true), ''), NEW.app_id,
                nullif(current_setting('crm.request_id', true), ''),
                coalesce(current_setting('crm.transaction_id', true), ''));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER accounts_changed AFTER INSERT OR UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('account', 'search_doc');
CREATE TRIGGER contacts_changed AFTER INSERT OR UPDATE ON contacts
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('contact', 'search_doc');
CREATE TRIGGER deals_changed AFTER INSERT OR UPDATE ON deals
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('deal', 'search_doc');
CREATE TRIGGER activities_changed AFTER INSERT OR UPDATE ON activities
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('activity', 'search_doc');
CREATE TRIGGER quotes_changed AFTER INSERT OR UPDATE ON quotes
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('quote', 'search_doc');
CREATE TRIGGER line_items_changed AFTER INSERT OR UPDATE ON line_items
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('line_item', 'search_doc');

-- Row-level security on the feed tables.
DO $$
DECLARE
    app text := crm_app_role();
    integration text := crm_integration_role();
    bg text := crm_background_role();
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['change_outbox', 'change_events', 'change_heads', 'change_relay']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        -- Background work spans tenants; this role touches no record table.
        EXECUTE format('CREATE POLICY background ON %I AS PERMISSIVE FOR ALL TO %I USING (true) WITH CHECK (true)', t, bg);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO %I', t, bg);
    END LOOP;
    -- The trigger's inserts, as the writing request: its tenant only (an
    -- integration token's side effect may touch another app's record).
    EXECUTE format('CREATE POLICY tenant_write ON change_outbox AS PERMISSIVE FOR INSERT TO %I, %I WITH CHECK (tenant_id = crm_tenant())', app, integration);
    EXECUTE format('GRANT INSERT ON change_outbox TO %I, %I', app, integration);
    EXECUTE format('GRANT USAGE ON SEQUENCE change_outbox_seq TO %I, %I', app, integration);
    EXECUTE format('CREATE POLICY tenant_read ON change_events AS PERMISSIVE FOR SELECT TO %I USING (tenant_id = crm_tenant())', app);
    EXECUTE format('CREATE POLICY app_read ON change_events AS PERMISSIVE FOR SELECT TO %I USING (tenant_id = crm_tenant() AND app_id = crm_app_id())', integration);
    EXECUTE format('CREATE POLICY tenant_write ON change_events AS PERMISSIVE FOR INSERT TO %I, %I WITH CHECK (tenant_id = crm_tenant())', app, integration);
    EXECUTE format('GRANT SELECT, INSERT ON change_events TO %I, %I', app, integration);
    EXECUTE format('CREATE POLICY tenant_access ON change_heads AS PERMISSIVE FOR ALL TO %I, %I USING (tenant_id = crm_tenant()) WITH CHECK (tenant_id = crm_tenant())', app, integration);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON change_heads TO %I, %I', app, integration);
END
$$;
