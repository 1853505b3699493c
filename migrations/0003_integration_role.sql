-- App scope as a role of its own. Append-only: never edit a landed migration.
--
-- Integration tokens' requests run as crm_app_integration (SET LOCAL ROLE in
-- their transaction), whose policies add `app_id = crm.app_id`; a person's
-- requests run as crm_app with the tenant policy alone. Before, one policy
-- carried both cases as `crm_app_id() IS NULL OR app_id = crm_app_id()`,
-- which the planner cannot estimate: it took every list for a rare one and
-- sorted instead of walking the (tenant_id, created_at, id) index.

DO $$
BEGIN
    CREATE ROLE crm_app_integration NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    -- crm_app switches to crm_app_integration for integration tokens; the
    -- owner too, when it connects for crm_app (SET ROLE).
    IF NOT pg_has_role('crm_app', 'crm_app_integration', 'MEMBER') THEN
        BEGIN
            GRANT crm_app_integration TO crm_app;
        EXCEPTION
            -- Role membership is cluster-wide: another database's migration
            -- may be granting it at this moment.
            WHEN OTHERS THEN
                IF NOT pg_has_role('crm_app', 'crm_app_integration', 'MEMBER') THEN
                    RAISE;
                END IF;
        END;
    END IF;
    IF NOT pg_has_role(current_user, 'crm_app_integration', 'MEMBER') THEN
        EXECUTE format('GRANT crm_app_integration TO %I', current_user);
    END IF;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['accounts', 'contacts', 'deals', 'activities', 'quotes', 'line_items']
    LOOP
        EXECUTE format('DROP POLICY app_scope ON %I', t);
        EXECUTE format('CREATE POLICY person_access ON %I AS PERMISSIVE FOR ALL TO crm_app USING (true) WITH CHECK (true)', t);
        EXECUTE format(
            'CREATE POLICY app_scope ON %I AS PERMISSIVE FOR ALL TO crm_app_integration '
            'USING (app_id = (SELECT crm_app_id())) WITH CHECK (app_id = (SELECT crm_app_id()))', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I TO crm_app_integration', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['number_sequences', 'idempotency_keys']
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I TO crm_app_integration', t);
    END LOOP;
END
$$;
GRANT USAGE ON SCHEMA public TO crm_app_integration;
GRANT EXECUTE ON FUNCTION crm_tenant(), crm_app_id(), crm_search_norm(text) TO crm_app_integration;
