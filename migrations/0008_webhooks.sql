-- Webhooks (SPEC §12): HTTP callbacks receiving a tenant's change events.
-- A webhook belongs to a tenant and, when an integration token made it, to
-- that app. Its secret is stored to sign deliveries and shown only once.
-- `position` is the last sequence of the tenant's feed handled for it.

CREATE TABLE webhooks (
    tenant_id       text        NOT NULL,
    id              text        NOT NULL,
    app_id          text,
    url             text        NOT NULL CHECK (octet_length(url) BETWEEN 1 AND 2048),
    resource_types  text[]      NOT NULL DEFAULT '{}',
    operations      text[]      NOT NULL DEFAULT '{}',
    description     text        NOT NULL DEFAULT '' CHECK (char_length(description) <= 1024),
    enabled         boolean     NOT NULL DEFAULT true,
    disabled_reason text        NOT NULL DEFAULT '',
    secret          text        NOT NULL,
    position        bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    created_by      text        NOT NULL,
    updated_by      text        NOT NULL,
    version         integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);

CREATE INDEX webhooks_list_idx ON webhooks (tenant_id, created_at DESC, id DESC);

DO $$
DECLARE
    app text := crm_app_role();
    integration text := crm_integration_role();
    bg text := crm_background_role();
BEGIN
    ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;
    ALTER TABLE webhooks FORCE ROW LEVEL SECURITY;
    -- Requests: their tenant's webhooks (a person's token sees its apps'
    -- too, as with records); an integration token only its app's.
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON webhooks AS RESTRICTIVE FOR ALL TO %I, %I '
        'USING (tenant_id = (SELECT crm_tenant())) WITH CHECK (tenant_id = (SELECT crm_tenant()))',
        app, integration);
    EXECUTE format('CREATE POLICY background ON webhooks AS PERMISSIVE FOR ALL TO %I USING (true) WITH CHECK (true)', bg);
    EXECUTE format(
        'CREATE POLICY person_access ON webhooks AS PERMISSIVE FOR ALL TO %I '
        'USING (true) WITH CHECK (true)', app);
    EXECUTE format(
        'CREATE POLICY app_scope ON webhooks AS PERMISSIVE FOR ALL TO %I '
        'USING (app_id = (SELECT crm_app_id())) WITH CHECK (app_id = (SELECT crm_app_id()))', integration);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON webhooks TO %I, %I, %I', app, integration, bg);
END
$$;
