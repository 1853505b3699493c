-- Row-level security that survives distribution. Append-only: never edit a
-- landed migration.
--
-- Until now each tenant table had a RESTRICTIVE tenant policy beside
-- PERMISSIVE ones (`USING (true)` for the request role, the app scope for
-- the integration role, `USING (true)` for the background role), and the
-- tenant was read through a scalar subquery `(SELECT crm_tenant())`. On
-- Citus (distributed by tenant_id) that design leaks: Citus re-creates
-- policies on the shards without `AS RESTRICTIVE`, so the permissive
-- `USING (true)` beside it let the request role read and insert other
-- tenants' rows; and it refuses policies with subqueries on distributed
-- tables.
--
-- Now every table has exactly one policy, PERMISSIVE, for every role
-- (TO PUBLIC: no role list that a propagation could lose), in USING and
-- WITH CHECK alike, with no subquery and no constant `true`:
--
--   records, webhooks, deliveries, feed:  tenant_id = crm_tenant()
--       AND (crm_app_id() IS NULL OR app_id = crm_app_id())
--   per-tenant bookkeeping:               tenant_id = crm_tenant()
--
-- The app scope of integration tokens is the crm.app_id setting (set with
-- the tenant, cleared by the server alone for the invariants it keeps across
-- apps). Fail-closed as before: with no tenant set, crm_tenant() is NULL and
-- the policy admits no row and no insert.
--
-- The background role (feed sequencing and relay, webhook delivery, pruning)
-- works across tenants on the feed and webhook tables only; their one
-- policy admits it by name (`current_user = crm_background_role()`), which
-- holds for no other role even where a policy's role list were dropped. It
-- has no privilege on any record table.
DO $$
DECLARE
    t text;
    p record;
    scoped constant text := 'tenant_id = crm_tenant() AND (crm_app_id() IS NULL OR app_id = crm_app_id())';
    tenant constant text := 'tenant_id = crm_tenant()';
    background constant text := 'current_user = crm_background_role()';
    rule text;
BEGIN
    FOR t, rule IN VALUES
        ('accounts', scoped), ('contacts', scoped), ('deals', scoped),
        ('activities', scoped), ('quotes', scoped), ('line_items', scoped),
        ('idempotency_keys', tenant), ('number_sequences', tenant),
        ('webhooks', format('(%s) OR %s', scoped, background)),
        ('webhook_deliveries', format('(%s) OR %s', scoped, background)),
        ('change_outbox', format('(%s) OR %s', scoped, background)),
        ('change_events', format('(%s) OR %s', scoped, background)),
        ('change_heads', format('(%s) OR %s', tenant, background)),
        ('change_relay', background)
    LOOP
        FOR p IN SELECT policyname FROM pg_policies WHERE schemaname = 'public' AND tablename = t LOOP
            EXECUTE format('DROP POLICY %I ON %I', p.policyname, t);
        END LOOP;
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_access ON %I AS PERMISSIVE FOR ALL TO PUBLIC USING (%s) WITH CHECK (%s)',
            t, rule, rule);
    END LOOP;
    EXECUTE format('GRANT EXECUTE ON FUNCTION crm_background_role() TO %I, %I, %I',
                   crm_app_role(), crm_integration_role(), crm_background_role());
    EXECUTE format('GRANT EXECUTE ON FUNCTION crm_tenant(), crm_app_id() TO %I', crm_background_role());
END
$$;
