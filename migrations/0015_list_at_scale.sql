-- Lists at a million records for every value, not only where the default
-- order's index finds matches early. Append-only: never edit a landed
-- migration.
--
-- 1. The name of each entity (its first search field), folded as the
--    search document is and cut to 256 characters (a B-tree entry must fit
--    a third of a page), stored as name_doc and indexed in a B-tree with
--    text_pattern_ops: search's exact
--    and prefix tiers (src/sql/list.rs) find their records there instead of
--    through the trigram index, which returns every record of a common word.
-- 2. Orders combined filters use: activities by date (the old index was
--    DESC NULLS FIRST, which list's `DESC NULLS LAST` cannot use) and by
--    date within an account; deals by value, within a stage too, and by
--    name; contacts by last name.
--
-- The GIN indexes (search, string lists, custom_fields) stay as 0002 made
-- them, without tenant_id. List's walk and gather (src/sql/list.rs) decide
-- between the order's index and the GIN index instead of the planner's
-- statistics. (A GIN index whose posting lists hold one tenant's rows is
-- the next step for values that are rare in a tenant but common in others.)

-- A stored column, like search_doc (0002), so that the tiers' conditions
-- are plain-column conditions, which row-level security lets be index
-- conditions (an expression index's expression holds functions that are not
-- LEAKPROOF). Not a field: the change trigger leaves it out of events and
-- history, as it does search_doc.
ALTER TABLE accounts ADD COLUMN name_doc text GENERATED ALWAYS AS (left(crm_search_norm(coalesce(name, '')), 256)) STORED;
CREATE INDEX accounts_name_doc_idx ON accounts (tenant_id, name_doc text_pattern_ops);
DROP TRIGGER accounts_changed ON accounts;
CREATE TRIGGER accounts_changed AFTER INSERT OR UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('account', 'search_doc', 'name_doc');
ALTER TABLE contacts ADD COLUMN name_doc text GENERATED ALWAYS AS (left(crm_search_norm(coalesce(display_name, '')), 256)) STORED;
CREATE INDEX contacts_name_doc_idx ON contacts (tenant_id, name_doc text_pattern_ops);
DROP TRIGGER contacts_changed ON contacts;
CREATE TRIGGER contacts_changed AFTER INSERT OR UPDATE ON contacts
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('contact', 'search_doc', 'name_doc');
ALTER TABLE deals ADD COLUMN name_doc text GENERATED ALWAYS AS (left(crm_search_norm(coalesce(name, '')), 256)) STORED;
CREATE INDEX deals_name_doc_idx ON deals (tenant_id, name_doc text_pattern_ops);
DROP TRIGGER deals_changed ON deals;
CREATE TRIGGER deals_changed AFTER INSERT OR UPDATE ON deals
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('deal', 'search_doc', 'name_doc');
ALTER TABLE activities ADD COLUMN name_doc text GENERATED ALWAYS AS (left(crm_search_norm(coalesce(subject, '')), 256)) STORED;
CREATE INDEX activities_name_doc_idx ON activities (tenant_id, name_doc text_pattern_ops);
DROP TRIGGER activities_changed ON activities;
CREATE TRIGGER activities_changed AFTER INSERT OR UPDATE ON activities
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('activity', 'search_doc', 'name_doc');
ALTER TABLE quotes ADD COLUMN name_doc text GENERATED ALWAYS AS (left(crm_search_norm(coalesce(name, '')), 256)) STORED;
CREATE INDEX quotes_name_doc_idx ON quotes (tenant_id, name_doc text_pattern_ops);
DROP TRIGGER quotes_changed ON quotes;
CREATE TRIGGER quotes_changed AFTER INSERT OR UPDATE ON quotes
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('quote', 'search_doc', 'name_doc');
ALTER TABLE line_items ADD COLUMN name_doc text GENERATED ALWAYS AS (left(crm_search_norm(coalesce(description, '')), 256)) STORED;
CREATE INDEX line_items_name_doc_idx ON line_items (tenant_id, name_doc text_pattern_ops);
DROP TRIGGER line_items_changed ON line_items;
CREATE TRIGGER line_items_changed AFTER INSERT OR UPDATE ON line_items
    FOR EACH ROW EXECUTE FUNCTION crm_record_changed('line_item', 'search_doc', 'name_doc');

DROP INDEX activities_occurred_idx;
CREATE INDEX activities_occurred_idx ON activities (tenant_id, occurred_at DESC NULLS LAST, id DESC);
DROP INDEX activities_account_idx;
CREATE INDEX activities_account_idx ON activities (tenant_id, account_id, occurred_at DESC NULLS LAST, id DESC)
    WHERE account_id IS NOT NULL;
CREATE INDEX deals_value_idx ON deals (tenant_id, value DESC NULLS LAST, id DESC);
CREATE INDEX deals_stage_value_idx ON deals (tenant_id, stage, value DESC NULLS LAST, id DESC);
CREATE INDEX deals_name_idx ON deals (tenant_id, name NULLS FIRST, id);
CREATE INDEX contacts_last_name_idx ON contacts (tenant_id, last_name NULLS FIRST, id);
