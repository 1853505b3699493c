-- Webhook delivery (SPEC §12). Delivery reads the change feed itself; what
-- it keeps per webhook is its place in that feed and the state of the
-- event being tried:
--   position          the last sequence handled (delivered, given up or
--                     filtered out);
--   attempt           failed attempts at the next matching event;
--   first_attempt_at  when that event was first tried (its 72 h start);
--   next_attempt_at   when the webhook may be tried next;
--   failing_since     the first failure since the last success (5 days of
--                     it disable the webhook);
--   lease_until, lease_token
--                     the worker trying it now: claimed with FOR UPDATE
--                     SKIP LOCKED, so replicas never try one webhook at
--                     once; a lease that lapses (its process died) is
--                     claimed again;
--   generation        bumped by RedeliverWebhook, so a worker that was in
--                     the middle of an attempt does not move the position
--                     it set.

ALTER TABLE webhooks
    ADD COLUMN attempt          integer     NOT NULL DEFAULT 0,
    ADD COLUMN first_attempt_at timestamptz,
    ADD COLUMN next_attempt_at  timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN failing_since    timestamptz,
    ADD COLUMN lease_until      timestamptz,
    ADD COLUMN lease_token      text,
    ADD COLUMN generation       bigint      NOT NULL DEFAULT 0;

CREATE INDEX webhooks_due_idx ON webhooks (next_attempt_at) WHERE enabled;

-- One row per attempt, newest first by id; kept 30 days.
CREATE TABLE webhook_deliveries (
    tenant_id       text        NOT NULL,
    webhook_id      text        NOT NULL,
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    app_id          text,
    event_id        text        NOT NULL,
    sequence        bigint      NOT NULL,
    attempt         integer     NOT NULL,
    status_code     integer     NOT NULL,
    error           text        NOT NULL DEFAULT '',
    attempted_at    timestamptz NOT NULL,
    duration_ms     bigint      NOT NULL,
    next_attempt_at timestamptz,
    PRIMARY KEY (tenant_id, webhook_id, id),
    FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX webhook_deliveries_age_idx ON webhook_deliveries (attempted_at);

DO $$
DECLARE
    app text := crm_app_role();
    integration text := crm_integration_role();
    bg text := crm_background_role();
BEGIN
    ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
    ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
    -- Requests read their tenant's log (an integration token its app's);
    -- only the delivery worker (background role) writes it.
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON webhook_deliveries AS RESTRICTIVE FOR SELECT TO %I, %I '
        'USING (tenant_id = (SELECT crm_tenant()))',
        app, integration);
    EXECUTE format('CREATE POLICY person_access ON webhook_deliveries AS PERMISSIVE FOR SELECT TO %I USING (true)', app);
    EXECUTE format(
        'CREATE POLICY app_scope ON webhook_deliveries AS PERMISSIVE FOR SELECT TO %I '
        'USING (app_id = (SELECT crm_app_id()))', integration);
    EXECUTE format('CREATE POLICY background ON webhook_deliveries AS PERMISSIVE FOR ALL TO %I USING (true) WITH CHECK (true)', bg);
    EXECUTE format('GRANT SELECT ON webhook_deliveries TO %I, %I', app, integration);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON webhook_deliveries TO %I', bg);
END
$$;
