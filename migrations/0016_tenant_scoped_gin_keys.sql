-- Tag and custom_fields filters whose cost is the tenant's matches, not
-- every tenant's. Append-only: never edit a landed migration.
--
-- The GIN indexes of 0002 on `tags` and `custom_fields` hold one posting
-- list per value for all tenants together: `tags:skewed` in a tenant with
-- ten such records read the 500 000 records of other tenants carrying that
-- tag, fetched each from the heap and only then dropped them by tenant
-- (350 ms at 1M records a tenant). A GIN index cannot lead with tenant_id
-- usefully (a tenant's entry would be a posting list of all its rows, which
-- every lookup intersects with), so the keys themselves carry the tenant:
--
-- * tenant_tags: each tag as `tenant_id || chr(31) || tag`;
-- * tenant_custom_fields: `{tenant_id: custom_fields}`, so that every path
--   hash of the jsonb_path_ops index starts at the tenant's key.
--
-- List's filters (src/sql/filter.rs) test containment in these columns
-- with the caller's tenant in the key, and the custom-field uniqueness
-- check (src/custom/unique.rs) does too; the old indexes go. Stored columns,
-- like search_doc and name_doc, so that the conditions are plain-column
-- conditions that row-level security lets be index conditions. Not fields:
-- the change trigger leaves them out of events and history.

-- IMMUTABLE (the tenant and the tags are its only inputs), so a generated
-- column may use it.
CREATE FUNCTION crm_tenant_keys(tenant text, items text[]) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT ARRAY(SELECT tenant || chr(31) || x FROM unnest(items) AS x) $$;

ALTER TABLE accounts
    ADD COLUMN tenant_tags text[] GENERATED ALWAYS AS (crm_tenant_keys(tenant_id, tags)) STORED,
    ADD COLUMN tenant_custom_fields jsonb GENERATED ALWAYS AS (jsonb_set('{}', ARRAY[tenant_id], custom_fields)) STORED;
ALTER TABLE contacts
    ADD COLUMN tenant_tags text[] GENERATED ALWAYS AS (crm_tenant_keys(tenant_id, tags)) STORED,
    ADD COLUMN tenant_custom_fields jsonb GENERATED ALWAYS AS (jsonb_set('{}', ARRAY[tenant_id], custom_fields)) STORED;
ALTER TABLE deals
    ADD COLUMN tenant_tags text[] GENERATED ALWAYS AS (crm_tenant_keys(tenant_id, tags)) STORED,
    ADD COLUMN tenant_custom_fields jsonb GENERATED ALWAYS AS (jsonb_set('{}', ARRAY[tenant_id], custom_fields)) STORED;
ALTER TABLE activities
    ADD COLUMN tenant_tags text[] GENERATED ALWAYS AS (crm_tenant_keys(tenant_id, tags)) STORED,
    ADD COLUMN tenant_custom_fields jsonb GENERATED ALWAYS AS (jsonb_set('{}', ARRAY[tenant_id], custom_fields)) STORED;
ALTER TABLE quotes
    ADD COLUMN tenant_tags text[] GENERATED ALWAYS AS (crm_tenant_keys(tenant_id, tags)) STORED,
    ADD COLUMN tenant_custom_fields jsonb GENERATED ALWAYS AS (jsonb_set('{}', ARRAY[tenant_id], custom_fields)) STORED;

DROP INDEX accounts_tags_idx;
DROP INDEX contacts_tags_idx;
DROP INDEX deals_tags_idx;
DROP INDEX activities_tags_idx;
DROP INDEX quotes_tags_idx;
DROP INDEX accounts_custom_fields_idx;
DROP INDEX contacts_custom_fields_idx;
DROP INDEX deals_custom_fields_idx;
DROP INDEX activities_custom_fields_idx;
DROP INDEX quotes_custom_fields_idx;
CREATE INDEX accounts_tenant_tags_idx ON accounts USING gin (tenant_tags);
CREATE INDEX contacts_tenant_tags_idx ON contacts USING gin (tenant_tags);
CREATE INDEX deals_tenant_tags_idx ON deals USING gin (tenant_tags);
CREATE INDEX activities_tenant_tags_idx ON activities USING gin (tenant_tags);
CREATE INDEX quotes_tenant_tags_idx ON quotes USING gin (tenant_tags);
CREATE INDEX accounts_tenant_custom_fields_idx ON accounts USING gin (tenant_custom_fields jsonb_path_ops);
CREATE INDEX contacts_tenant_custom_fields_idx ON contacts USING gin (tenant_custom_fields jsonb_path_ops);
CREATE INDEX deals_tenant_custom_fields_idx ON deals USING gin (tenant_custom_fields jsonb_path_ops);
CREATE INDEX activities_tenant_custom_fields_idx ON activities USING gin (tenant_custom_fields jsonb_path_ops);
CREATE INDEX quotes_tenant_custom_fields_idx ON quotes USING gin (tenant_custom_fields jsonb_path_ops);

DROP TRIGGER accounts_changed ON accounts;
CREATE TRIGGER accounts_changed AFTER INSERT OR UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('account', 'search_doc', 'name_doc', 'tenant_tags', 'tenant_custom_fields');
DROP TRIGGER contacts_changed ON contacts;
CREATE TRIGGER contacts_changed AFTER INSERT OR UPDATE ON contacts
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('contact', 'search_doc', 'name_doc', 'tenant_tags', 'tenant_custom_fields');
DROP TRIGGER deals_changed ON deals;
CREATE TRIGGER deals_changed AFTER INSERT OR UPDATE ON deals
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('deal', 'search_doc', 'name_doc', 'tenant_tags', 'tenant_custom_fields');
DROP TRIGGER activities_changed ON activities;
CREATE TRIGGER activities_changed AFTER INSERT OR UPDATE ON activities
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('activity', 'search_doc', 'name_doc', 'tenant_tags', 'tenant_custom_fields');
DROP TRIGGER quotes_changed ON quotes;
CREATE TRIGGER quotes_changed AFTER INSERT OR UPDATE ON quotes
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('quote', 'search_doc', 'name_doc', 'tenant_tags', 'tenant_custom_fields');
