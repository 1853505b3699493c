-- Custom-field definitions (FieldDefinitionService): a tenant's typed
-- schema for the `custom_fields` of one resource type. Append-only: never
-- edit a landed migration.
--
-- Values stay in each record's `custom_fields jsonb`: no per-tenant column
-- and no DDL on a tenant's behalf beyond indexes. Equality and membership
-- on a key use the shared `jsonb_path_ops` GIN index of each table
-- (migration 0002). Ranges and order_by on a defined key use a partial
-- btree index of that definition alone, one per definition:
--
--   CREATE INDEX CONCURRENTLY cf_<definition id>
--       ON <table> (crm_cf_number(custom_fields, '<key>'), id)
--       WHERE tenant_id = '<tenant>' AND NOT is_deleted
--
-- (crm_cf_text for string, enum, date and datetime keys), which the
-- server's index worker builds outside any transaction (CREATE INDEX
-- CONCURRENTLY cannot run in one) and drops when the definition goes.
-- Dates are stored as YYYY-MM-DD and times as YYYY-MM-DDTHH:MM:SS.ffffffZ,
-- so their text order is time order: a ::date or ::timestamptz cast would
-- not be IMMUTABLE and cannot be indexed.

CREATE TABLE field_definitions (
    tenant_id     text        NOT NULL,
    id            text        NOT NULL,
    resource_type text        NOT NULL CHECK (resource_type IN ('account', 'contact', 'deal', 'activity', 'quote')),
    key           text        NOT NULL CHECK (key ~ '^[a-z][a-z0-9_]{0,62}$'),
    label         text        NOT NULL DEFAULT '' CHECK (char_length(label) <= 200),
    description   text        NOT NULL DEFAULT '' CHECK (char_length(description) <= 1024),
    type          text        NOT NULL CHECK (type IN ('string', 'number', 'integer', 'boolean', 'date', 'datetime', 'enum', 'multi_enum')),
    options       text[]      NOT NULL DEFAULT '{}',
    required      boolean     NOT NULL DEFAULT false,
    is_unique     boolean     NOT NULL DEFAULT false,
    max_length    integer,
    minimum       double precision,
    maximum       double precision,
    -- none | building | ready | failed (see FieldDefinition.index_state).
    index_state   text        NOT NULL DEFAULT 'none',
    index_error   text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    created_by    text        NOT NULL,
    updated_by    text        NOT NULL,
    version       integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, resource_type, key)
);

-- The index worker's queue: definitions whose index is not built yet.
CREATE INDEX field_definitions_building_idx ON field_definitions (tenant_id, id) WHERE index_state IN ('building', 'failed');

-- A defined key's value as a number, and as text: the expressions of the
-- definitions' indexes, of typed filters and of orders. Never an error,
-- whatever a record holds, and never NULL: no value (or one of another
-- type) is '-Infinity' (no JSON number is) and '' (a blank string counts as
-- no value), which sort first, so that every keyset page, in either
-- direction, is one range of the index.
CREATE FUNCTION crm_cf_number(doc jsonb, key text) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN jsonb_typeof(doc -> key) = 'number' THEN (doc -> key)::numeric ELSE '-Infinity'::numeric END $$;
CREATE FUNCTION crm_cf_text(doc jsonb, key text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN jsonb_typeof(doc -> key) = 'string' THEN doc ->> key ELSE '' END $$;

DO $$
DECLARE
    tenant constant text := 'tenant_id = crm_tenant() OR current_user = crm_background_role()';
    r text;
BEGIN
    ALTER TABLE field_definitions ENABLE ROW LEVEL SECURITY;
    ALTER TABLE field_definitions FORCE ROW LEVEL SECURITY;
    -- Definitions are the tenant's, whichever token (person or app) made
    -- them; the index worker (background role) sees every tenant's.
    EXECUTE format(
        'CREATE POLICY tenant_access ON field_definitions AS PERMISSIVE FOR ALL TO PUBLIC USING (%s) WITH CHECK (%s)',
        tenant, tenant);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON field_definitions TO %I, %I',
                   crm_app_role(), crm_integration_role());
    EXECUTE format('GRANT SELECT, UPDATE ON field_definitions TO %I', crm_background_role());
    FOREACH r IN ARRAY ARRAY[crm_app_role(), crm_integration_role()] LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION crm_cf_number(jsonb, text), crm_cf_text(jsonb, text) TO %I', r);
    END LOOP;
END
$$;

-- As in migration 0002: row-level security evaluates its policy before any
-- condition that is not LEAKPROOF, so a typed filter could never be an
-- index condition. The functions inside the two expressions above, and the
-- numeric comparisons, reveal nothing of a row (the jsonb-to-numeric cast
-- is only reached for JSON numbers, and its one error names a type, not a
-- value). Needs a superuser; without one, typed filters stay correct and
-- use the definitions' indexes for order_by only.
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        ALTER FUNCTION jsonb_object_field(jsonb, text) LEAKPROOF;
        ALTER FUNCTION jsonb_object_field_text(jsonb, text) LEAKPROOF;
        ALTER FUNCTION jsonb_typeof(jsonb) LEAKPROOF;
        ALTER FUNCTION pg_catalog."numeric"(jsonb) LEAKPROOF;
        ALTER FUNCTION numeric_eq(numeric, numeric) LEAKPROOF;
        ALTER FUNCTION numeric_ne(numeric, numeric) LEAKPROOF;
        ALTER FUNCTION numeric_lt(numeric, numeric) LEAKPROOF;
        ALTER FUNCTION numeric_le(numeric, numeric) LEAKPROOF;
        ALTER FUNCTION numeric_gt(numeric, numeric) LEAKPROOF;
        ALTER FUNCTION numeric_ge(numeric, numeric) LEAKPROOF;
    ELSE
        RAISE NOTICE 'not a superuser: typed custom-field filters stay non-LEAKPROOF and filter after their index';
    END IF;
END
$$;
