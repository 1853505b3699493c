-- crm schema, version 1. Migrations are append-only: never edit a migration
-- that has landed on main; add a new file instead.
--
-- Every table's columns are named after the fields of its proto message
-- (proto/crm/v1/*.proto): the record mechanism maps them generically, and a
-- test checks that every proto field has a column of the matching type.
-- Empty strings are stored as NULL. tenant_id leads every primary key, unique
-- key, foreign key and index, so the schema can be distributed by tenant.
--
-- Requests run as the role crm_app (no ownership, no BYPASSRLS); row-level
-- security compares tenant_id (and, for integration tokens, app_id) with the
-- transaction-local settings crm.tenant_id / crm.app_id. With no tenant set a
-- connection sees nothing and can write nothing.

DO $$
BEGIN
    CREATE ROLE crm_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
EXCEPTION
    -- Roles are cluster-wide: another database (or a concurrent migration)
    -- may have created it already.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    -- The owner connection switches to crm_app with SET ROLE, which needs
    -- membership (superusers have it implicitly).
    IF NOT pg_has_role(current_user, 'crm_app', 'MEMBER') THEN
        EXECUTE format('GRANT crm_app TO %I', current_user);
    END IF;
END
$$;

-- The caller's tenant and app for the current transaction; NULL when unset
-- (current_setting returns '' after a transaction-local value ends).
CREATE FUNCTION crm_tenant() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('crm.tenant_id', true), '') $$;
CREATE FUNCTION crm_app_id() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('crm.app_id', true), '') $$;

CREATE TABLE accounts (
    tenant_id          text        NOT NULL,
    id                 text        NOT NULL,
    app_id             text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    created_by         text        NOT NULL,
    updated_by         text        NOT NULL,
    source             text        NOT NULL,
    source_type        text        NOT NULL CHECK (source_type IN ('frontend', 'backend', 'server', 'system', 'api')),
    is_deleted         boolean     NOT NULL DEFAULT false,
    deleted_at         timestamptz,
    deleted_by         text,
    schema_version     integer     NOT NULL,
    version            integer     NOT NULL CHECK (version >= 1),
    owner_id           text,
    name               text        NOT NULL,
    legal_name         text,
    industry           text,
    sub_industry       text,
    website            text,
    domain             text,
    phone              text,
    addresses          jsonb,
    annual_revenue     numeric     CHECK (annual_revenue >= 0),
    employee_count     integer     CHECK (employee_count >= 0),
    lifecycle_stage    text,
    lead_source        text,
    health_score       text,
    parent_account_id  text,
    description        text,
    last_activity_at   timestamptz,
    first_contacted_at timestamptz,
    custom_fields      jsonb,
    tags               text[]      NOT NULL DEFAULT '{}',
    CONSTRAINT accounts_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT accounts_parent_account_id_fkey FOREIGN KEY (tenant_id, parent_account_id)
        REFERENCES accounts (tenant_id, id)
);
CREATE INDEX accounts_list_idx ON accounts (tenant_id, created_at DESC, id DESC);
CREATE INDEX accounts_parent_idx ON accounts (tenant_id, parent_account_id) WHERE parent_account_id IS NOT NULL;

CREATE TABLE contacts (
    tenant_id             text        NOT NULL,
    id                    text        NOT NULL,
    app_id                text,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    created_by            text        NOT NULL,
    updated_by            text        NOT NULL,
    source                text        NOT NULL,
    source_type           text        NOT NULL CHECK (source_type IN ('frontend', 'backend', 'server', 'system', 'api')),
    is_deleted            boolean     NOT NULL DEFAULT false,
    deleted_at            timestamptz,
    deleted_by            text,
    schema_version        integer     NOT NULL,
    version               integer     NOT NULL CHECK (version >= 1),
    account_id            text,
    first_name            text,
    last_name             text,
    display_name          text,
    email                 text,
    phone                 text,
    job_title             text,
    seniority             text,
    decision_role         text,
    is_primary            boolean,
    linkedin_url          text,
    reports_to_contact_id text,
    last_interaction_at   timestamptz,
    opted_in              boolean,
    opted_in_at           timestamptz,
    gdpr_consent          jsonb,
    custom_fields         jsonb,
    tags                  text[]      NOT NULL DEFAULT '{}',
    CONSTRAINT contacts_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT contacts_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES accounts (tenant_id, id),
    CONSTRAINT contacts_reports_to_contact_id_fkey FOREIGN KEY (tenant_id, reports_to_contact_id)
        REFERENCES contacts (tenant_id, id),
    CONSTRAINT contacts_name_or_email CHECK (first_name IS NOT NULL OR last_name IS NOT NULL OR email IS NOT NULL)
);
CREATE INDEX contacts_list_idx ON contacts (tenant_id, created_at DESC, id DESC);
CREATE INDEX contacts_account_idx ON contacts (tenant_id, account_id) WHERE account_id IS NOT NULL;
CREATE INDEX contacts_reports_to_idx ON contacts (tenant_id, reports_to_contact_id) WHERE reports_to_contact_id IS NOT NULL;
-- Email unique within (tenant, account) among live contacts; an unattached
-- contact counts as account ''.
CREATE UNIQUE INDEX contacts_email_key ON contacts (tenant_id, COALESCE(account_id, ''), email)
    WHERE NOT is_deleted AND email IS NOT NULL;
CREATE UNIQUE INDEX contacts_is_primary_key ON contacts (tenant_id, account_id)
    WHERE is_primary AND NOT is_deleted AND account_id IS NOT NULL;

CREATE TABLE deals (
    tenant_id           text        NOT NULL,
    id                  text        NOT NULL,
    app_id              text,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    created_by          text        NOT NULL,
    updated_by          text        NOT NULL,
    source              text        NOT NULL,
    source_type         text        NOT NULL CHECK (source_type IN ('frontend', 'backend', 'server', 'system', 'api')),
    is_deleted          boolean     NOT NULL DEFAULT false,
    deleted_at          timestamptz,
    deleted_by          text,
    schema_version      integer     NOT NULL,
    version             integer     NOT NULL CHECK (version >= 1),
    account_id          text        NOT NULL,
    owner_id            text,
    name                text        NOT NULL,
    deal_number         text        NOT NULL,
    pipeline_id         text,
    stage               text,
    value               numeric     CHECK (value >= 0),
    currency            text,
    probability         numeric     CHECK (probability >= 0 AND probability <= 100),
    forecast_category   text,
    expected_close_date timestamptz,
    actual_close_date   timestamptz,
    next_followup_date  timestamptz,
    deal_type           text,
    deal_source         text,
    competitors         text[]      NOT NULL DEFAULT '{}',
    loss_reason         text,
    loss_category       text,
    closure_notes       text,
    primary_contact_id  text,
    contact_ids         text[]      NOT NULL DEFAULT '{}',
    rfp_record_id       text,
    quote_ids           text[]      NOT NULL DEFAULT '{}',
    proposal_ids        text[]      NOT NULL DEFAULT '{}',
    attachment_refs     text[]      NOT NULL DEFAULT '{}',
    linked_task_ids     text[]      NOT NULL DEFAULT '{}',
    audit_log           jsonb       NOT NULL DEFAULT '[]',
    custom_fields       jsonb,
    tags                text[]      NOT NULL DEFAULT '{}',
    CONSTRAINT deals_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT deals_deal_number_key UNIQUE (tenant_id, deal_number),
    CONSTRAINT deals_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES accounts (tenant_id, id),
    CONSTRAINT deals_primary_contact_id_fkey FOREIGN KEY (tenant_id, primary_contact_id)
        REFERENCES contacts (tenant_id, id),
    CONSTRAINT deals_closed_lost_reason CHECK (
        stage IS DISTINCT FROM 'closed_lost' OR (loss_reason IS NOT NULL AND loss_category IS NOT NULL))
);
CREATE INDEX deals_list_idx ON deals (tenant_id, created_at DESC, id DESC);
CREATE INDEX deals_account_idx ON deals (tenant_id, account_id);
CREATE INDEX deals_primary_contact_idx ON deals (tenant_id, primary_contact_id) WHERE primary_contact_id IS NOT NULL;

CREATE TABLE activities (
    tenant_id            text        NOT NULL,
    id                   text        NOT NULL,
    app_id               text,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    created_by           text        NOT NULL,
    updated_by           text        NOT NULL,
    source               text        NOT NULL,
    source_type          text        NOT NULL CHECK (source_type IN ('frontend', 'backend', 'server', 'system', 'api')),
    is_deleted           boolean     NOT NULL DEFAULT false,
    deleted_at           timestamptz,
    deleted_by           text,
    schema_version       integer     NOT NULL,
    version              integer     NOT NULL CHECK (version >= 1),
    account_id           text,
    deal_id              text,
    contact_id           text,
    contact_ids          text[]      NOT NULL DEFAULT '{}',
    activity_type        text,
    subject              text,
    description          text,
    activity_date        timestamptz,
    due_date             timestamptz,
    completed_at         timestamptz,
    status               text,
    priority             text,
    direction            text,
    outcome              text,
    actor_type           text,
    performed_by_user_id text,
    participants         jsonb,
    linked_trace_id      text,
    attachment_refs      text[]      NOT NULL DEFAULT '{}',
    recurrence           jsonb,
    reminder_sent        boolean,
    custom_fields        jsonb,
    tags                 text[]      NOT NULL DEFAULT '{}',
    type                 text        NOT NULL CHECK (type IN ('call', 'email', 'meeting', 'note', 'task')),
    owner_id             text,
    notes                text,
    occurred_at          timestamptz,
    CONSTRAINT activities_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT activities_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES accounts (tenant_id, id),
    CONSTRAINT activities_deal_id_fkey FOREIGN KEY (tenant_id, deal_id)
        REFERENCES deals (tenant_id, id),
    CONSTRAINT activities_contact_id_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contacts (tenant_id, id),
    CONSTRAINT activities_subject_required CHECK (
        account_id IS NOT NULL OR deal_id IS NOT NULL OR contact_id IS NOT NULL)
);
CREATE INDEX activities_list_idx ON activities (tenant_id, created_at DESC, id DESC);
CREATE INDEX activities_account_idx ON activities (tenant_id, account_id) WHERE account_id IS NOT NULL;
CREATE INDEX activities_deal_idx ON activities (tenant_id, deal_id) WHERE deal_id IS NOT NULL;
CREATE INDEX activities_contact_idx ON activities (tenant_id, contact_id) WHERE contact_id IS NOT NULL;

CREATE TABLE quotes (
    tenant_id         text        NOT NULL,
    id                text        NOT NULL,
    app_id            text,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    created_by        text        NOT NULL,
    updated_by        text        NOT NULL,
    source            text        NOT NULL,
    source_type       text        NOT NULL CHECK (source_type IN ('frontend', 'backend', 'server', 'system', 'api')),
    is_deleted        boolean     NOT NULL DEFAULT false,
    deleted_at        timestamptz,
    deleted_by        text,
    schema_version    integer     NOT NULL,
    version           integer     NOT NULL CHECK (version >= 1),
    owner_id          text,
    name              text,
    quote_number      text        NOT NULL,
    account_id        text        NOT NULL,
    deal_id           text,
    value             numeric,
    currency          text,
    status            text        NOT NULL CHECK (status IN ('draft', 'sent', 'accepted', 'rejected', 'expired')),
    date_issued       timestamptz,
    validity_date     timestamptz,
    contract_duration text,
    is_primary        boolean,
    notes             text,
    line_items        jsonb       NOT NULL DEFAULT '[]',
    custom_fields     jsonb,
    tags              text[]      NOT NULL DEFAULT '{}',
    total             numeric,
    valid_until       timestamptz,
    CONSTRAINT quotes_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT quotes_quote_number_key UNIQUE (tenant_id, quote_number),
    CONSTRAINT quotes_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES accounts (tenant_id, id),
    CONSTRAINT quotes_deal_id_fkey FOREIGN KEY (tenant_id, deal_id)
        REFERENCES deals (tenant_id, id)
);
CREATE INDEX quotes_list_idx ON quotes (tenant_id, created_at DESC, id DESC);
CREATE INDEX quotes_account_idx ON quotes (tenant_id, account_id);
CREATE INDEX quotes_deal_idx ON quotes (tenant_id, deal_id) WHERE deal_id IS NOT NULL;
CREATE UNIQUE INDEX quotes_is_primary_key ON quotes (tenant_id, deal_id)
    WHERE is_primary AND NOT is_deleted AND deal_id IS NOT NULL;

CREATE TABLE line_items (
    tenant_id      text        NOT NULL,
    id             text        NOT NULL,
    app_id         text,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    created_by     text        NOT NULL,
    updated_by     text        NOT NULL,
    source         text        NOT NULL,
    source_type    text        NOT NULL CHECK (source_type IN ('frontend', 'backend', 'server', 'system', 'api')),
    is_deleted     boolean     NOT NULL DEFAULT false,
    deleted_at     timestamptz,
    deleted_by     text,
    schema_version integer     NOT NULL,
    version        integer     NOT NULL CHECK (version >= 1),
    quote_id       text        NOT NULL,
    description    text,
    quantity       numeric     NOT NULL CHECK (quantity > 0),
    unit_price     numeric     NOT NULL CHECK (unit_price >= 0),
    discount       numeric     CHECK (discount >= 0),
    total          numeric     NOT NULL,
    currency       text,
    discount_type  text        NOT NULL CHECK (discount_type IN ('amount', 'percent')),
    CONSTRAINT line_items_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT line_items_quote_id_fkey FOREIGN KEY (tenant_id, quote_id)
        REFERENCES quotes (tenant_id, id)
);
CREATE INDEX line_items_list_idx ON line_items (tenant_id, created_at DESC, id DESC);
CREATE INDEX line_items_quote_idx ON line_items (tenant_id, quote_id, created_at, id);

-- Per-tenant, per-year counters behind DEAL-<year>-<n> and Q-<year>-<n>.
CREATE TABLE number_sequences (
    tenant_id  text    NOT NULL,
    kind       text    NOT NULL,
    year       integer NOT NULL,
    last_value integer NOT NULL,
    CONSTRAINT number_sequences_pkey PRIMARY KEY (tenant_id, kind, year)
);

-- request_id idempotency: the first response of each (tenant, request_id),
-- written in the same transaction as the write it describes.
CREATE TABLE idempotency_keys (
    tenant_id    text        NOT NULL,
    request_id   uuid        NOT NULL,
    method       text        NOT NULL,
    request_hash bytea       NOT NULL,
    response     bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (tenant_id, request_id)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- Row-level security: restrictive tenant isolation on every table, plus (on
-- the record tables) the app scope of integration tokens.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['accounts', 'contacts', 'deals', 'activities', 'quotes', 'line_items',
                             'number_sequences', 'idempotency_keys']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I AS RESTRICTIVE FOR ALL '
            'USING (tenant_id = (SELECT crm_tenant())) WITH CHECK (tenant_id = (SELECT crm_tenant()))', t);
        IF t IN ('number_sequences', 'idempotency_keys') THEN
            EXECUTE format('CREATE POLICY tenant_access ON %I AS PERMISSIVE FOR ALL USING (true) WITH CHECK (true)', t);
        ELSE
            EXECUTE format(
                'CREATE POLICY app_scope ON %I AS PERMISSIVE FOR ALL '
                'USING ((SELECT crm_app_id()) IS NULL OR app_id = (SELECT crm_app_id())) '
                'WITH CHECK ((SELECT crm_app_id()) IS NULL OR app_id = (SELECT crm_app_id()))', t);
        END IF;
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I TO crm_app', t);
    END LOOP;
END
$$;
GRANT USAGE ON SCHEMA public TO crm_app;
GRANT EXECUTE ON FUNCTION crm_tenant(), crm_app_id() TO crm_app;
