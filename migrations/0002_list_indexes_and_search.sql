-- List at scale: free-text search and the indexes behind filters and orders.
-- Append-only: never edit a landed migration.
--
-- Search is pg_trgm over an unaccented, lowercased document per row:
-- trigram GIN indexes serve substring/prefix matches (LIKE '%q%') and typo
-- tolerance (word similarity, `<%`), case- and accent-insensitively; the
-- tenant_id leads every index (btree_gin), so one tenant's rows are found
-- without touching another's. Full-text search (tsvector) was not used: it
-- matches whole stemmed words only, while CRM users type prefixes, partial
-- emails, domains and numbers like DEAL-2026-00417.
--
-- The GIN indexes (search, string lists, custom_fields) do not lead with
-- tenant_id, unlike every B-tree: a GIN index has no order, and a tenant_id
-- entry (btree_gin) would be a posting list of all the tenant's rows that
-- every lookup intersects with. The tenant condition is applied to the few
-- candidate rows instead (and row-level security to all of them).

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS unaccent;

-- unaccent() is STABLE (its dictionary could change); this wrapper pins the
-- dictionary so the result can be indexed.
CREATE FUNCTION crm_search_norm(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT lower(public.unaccent('public.unaccent'::regdictionary, $1)) $$;
GRANT EXECUTE ON FUNCTION crm_search_norm(text) TO crm_app;

-- The search document of each row: its human fields, unaccented and
-- lowercased. A stored column (not an expression index) so that the query's
-- `search_doc LIKE …` / `… <% search_doc` are plain-column conditions, which
-- can be index conditions under row-level security once the operators are
-- LEAKPROOF (below). The fields match the entities' `search` lists in
-- src/entities; the record mechanism ignores columns without a proto field.
ALTER TABLE accounts ADD COLUMN search_doc text GENERATED ALWAYS AS (crm_search_norm(coalesce(name, '') || ' ' || coalesce(legal_name, '') || ' ' || coalesce(domain, '') || ' ' || coalesce(website, '') || ' ' || coalesce(description, ''))) STORED;
CREATE INDEX accounts_search_idx ON accounts USING gin (search_doc gin_trgm_ops);
ALTER TABLE contacts ADD COLUMN search_doc text GENERATED ALWAYS AS (crm_search_norm(coalesce(display_name, '') || ' ' || coalesce(first_name, '') || ' ' || coalesce(last_name, '') || ' ' || coalesce(email, ''))) STORED;
CREATE INDEX contacts_search_idx ON contacts USING gin (search_doc gin_trgm_ops);
ALTER TABLE deals ADD COLUMN search_doc text GENERATED ALWAYS AS (crm_search_norm(coalesce(name, '') || ' ' || coalesce(deal_number, ''))) STORED;
CREATE INDEX deals_search_idx ON deals USING gin (search_doc gin_trgm_ops);
ALTER TABLE activities ADD COLUMN search_doc text GENERATED ALWAYS AS (crm_search_norm(coalesce(subject, '') || ' ' || coalesce(description, '') || ' ' || coalesce(notes, ''))) STORED;
CREATE INDEX activities_search_idx ON activities USING gin (search_doc gin_trgm_ops);
ALTER TABLE quotes ADD COLUMN search_doc text GENERATED ALWAYS AS (crm_search_norm(coalesce(name, '') || ' ' || coalesce(quote_number, '') || ' ' || coalesce(notes, ''))) STORED;
CREATE INDEX quotes_search_idx ON quotes USING gin (search_doc gin_trgm_ops);
ALTER TABLE line_items ADD COLUMN search_doc text GENERATED ALWAYS AS (crm_search_norm(coalesce(description, ''))) STORED;
CREATE INDEX line_items_search_idx ON line_items USING gin (search_doc gin_trgm_ops);

-- Membership in string lists (tags:vip, contact_ids:con_...).
CREATE INDEX accounts_tags_idx ON accounts USING gin (tags);
CREATE INDEX contacts_tags_idx ON contacts USING gin (tags);
CREATE INDEX deals_tags_idx ON deals USING gin (tags);
CREATE INDEX deals_contact_ids_idx ON deals USING gin (contact_ids);
CREATE INDEX activities_tags_idx ON activities USING gin (tags);
CREATE INDEX activities_contact_ids_idx ON activities USING gin (contact_ids);
CREATE INDEX quotes_tags_idx ON quotes USING gin (tags);

-- custom_fields.<key> = value (jsonb containment).
CREATE INDEX accounts_custom_fields_idx ON accounts USING gin (custom_fields jsonb_path_ops);
CREATE INDEX contacts_custom_fields_idx ON contacts USING gin (custom_fields jsonb_path_ops);
CREATE INDEX deals_custom_fields_idx ON deals USING gin (custom_fields jsonb_path_ops);
CREATE INDEX activities_custom_fields_idx ON activities USING gin (custom_fields jsonb_path_ops);
CREATE INDEX quotes_custom_fields_idx ON quotes USING gin (custom_fields jsonb_path_ops);

-- "Changed since" syncs and order_by=updated_at.
CREATE INDEX accounts_updated_idx ON accounts (tenant_id, updated_at DESC, id DESC);
CREATE INDEX contacts_updated_idx ON contacts (tenant_id, updated_at DESC, id DESC);
CREATE INDEX deals_updated_idx ON deals (tenant_id, updated_at DESC, id DESC);
CREATE INDEX activities_updated_idx ON activities (tenant_id, updated_at DESC, id DESC);
CREATE INDEX quotes_updated_idx ON quotes (tenant_id, updated_at DESC, id DESC);
CREATE INDEX line_items_updated_idx ON line_items (tenant_id, updated_at DESC, id DESC);

-- Common filters: "my records" and pipeline stages, newest first.
CREATE INDEX accounts_owner_idx ON accounts (tenant_id, owner_id, created_at DESC, id DESC);
CREATE INDEX accounts_name_idx ON accounts (tenant_id, name NULLS FIRST, id);
CREATE INDEX contacts_email_idx ON contacts (tenant_id, email) WHERE email IS NOT NULL;
CREATE INDEX deals_owner_idx ON deals (tenant_id, owner_id, created_at DESC, id DESC);
CREATE INDEX deals_stage_idx ON deals (tenant_id, stage, created_at DESC, id DESC);
CREATE INDEX activities_occurred_idx ON activities (tenant_id, occurred_at DESC, id DESC);
CREATE INDEX quotes_status_idx ON quotes (tenant_id, status, created_at DESC, id DESC);

-- Row-level security evaluates its policies before any condition that is not
-- LEAKPROOF, so such a condition can never be an index condition. The
-- operators behind List's indexed filters cannot reveal a row's data (no
-- error or side effect depends on it), so they are declared LEAKPROOF in this
-- database. That needs a superuser; with an owner that is not one, lists stay
-- correct but tag, custom_fields and search filters scan instead of using
-- their GIN indexes.
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        ALTER FUNCTION textlike(text, text) LEAKPROOF;
        ALTER FUNCTION arraycontains(anyarray, anyarray) LEAKPROOF;
        ALTER FUNCTION jsonb_contains(jsonb, jsonb) LEAKPROOF;
        ALTER FUNCTION word_similarity_op(text, text) LEAKPROOF;
        ALTER FUNCTION word_similarity_commutator_op(text, text) LEAKPROOF;
    ELSE
        RAISE NOTICE 'not a superuser: list filter operators stay non-LEAKPROOF; GIN-backed filters will scan';
    END IF;
END
$$;
