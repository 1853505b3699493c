-- Roles of this database alone. Append-only: never edit a landed migration.
--
-- crm_app and crm_app_integration (0001, 0003) are cluster-wide, so every
-- deployment sharing a cluster shared them: each reset crm_app's password at
-- start-up, which locked the deployments started before it out, and its
-- password opened their databases. Each database now has roles of its own,
-- and only they (and the owner) may connect to it:
--
--   crm_app_<name>_<hash>  requests (LOGIN; the server gives it its password)
--   crm_int_<name>_<hash>  integration tokens' requests (NOLOGIN; SET ROLE)
--
-- <name> is the database's name lowercased, every character outside
-- [a-z0-9_] replaced by '_', cut to 32 characters; <hash> the first 8 hex
-- digits of md5(database name), which keeps names distinct when <name> is
-- not. So a name is [a-z0-9_]+, at most 49 bytes: never quoted, safe to
-- inline. crm_app_role() and crm_integration_role() return them, fixed here
-- (renaming the database later does not rename the roles). The legacy
-- cluster-wide roles keep no right in this database.

DO $$
DECLARE
    suffix      text := left(regexp_replace(lower(current_database()), '[^a-z0-9_]', '_', 'g'), 32)
                        || '_' || left(md5(current_database()), 8);
    app         text := 'crm_app_' || suffix;
    integration text := 'crm_int_' || suffix;
BEGIN
    BEGIN
        EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT', app);
    EXCEPTION
        -- Left by an earlier database of the same name, or created by a
        -- concurrent migration of one: roles are cluster-wide.
        WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT', integration);
    EXCEPTION
        WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    -- The request role switches to the integration role for integration
    -- tokens (SET LOCAL ROLE); the owner to either when request connections
    -- use its login (SET ROLE, which needs membership; superusers have it).
    IF NOT pg_has_role(app, integration, 'MEMBER') THEN
        EXECUTE format('GRANT %I TO %I', integration, app);
    END IF;
    IF NOT pg_has_role(current_user, app, 'MEMBER') THEN
        EXECUTE format('GRANT %I TO %I', app, current_user);
    END IF;
    IF NOT pg_has_role(current_user, integration, 'MEMBER') THEN
        EXECUTE format('GRANT %I TO %I', integration, current_user);
    END IF;

    -- The names, for the server, the tests, the benches and operators.
    EXECUTE format(
        'CREATE FUNCTION crm_app_role() RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS %L',
        format('SELECT %L::text', app));
    EXECUTE format(
        'CREATE FUNCTION crm_integration_role() RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS %L',
        format('SELECT %L::text', integration));
END
$$;

-- What crm_app and crm_app_integration had here, now for this database's
-- roles; the app-scope policies move to them.
DO $$
DECLARE
    app         text := crm_app_role();
    integration text := crm_integration_role();
    r           text;
    t           text;
BEGIN
    FOREACH r IN ARRAY ARRAY[app, integration]
    LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION crm_tenant(), crm_app_id(), crm_search_norm(text) TO %I', r);
        FOREACH t IN ARRAY ARRAY['accounts', 'contacts', 'deals', 'activities', 'quotes', 'line_items',
                                 'number_sequences', 'idempotency_keys']
        LOOP
            EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I TO %I', t, r);
        END LOOP;
    END LOOP;
    FOREACH t IN ARRAY ARRAY['accounts', 'contacts', 'deals', 'activities', 'quotes', 'line_items']
    LOOP
        EXECUTE format('DROP POLICY person_access ON %I', t);
        EXECUTE format('DROP POLICY app_scope ON %I', t);
        EXECUTE format(
            'CREATE POLICY person_access ON %I AS PERMISSIVE FOR ALL TO %I USING (true) WITH CHECK (true)',
            t, app);
        EXECUTE format(
            'CREATE POLICY app_scope ON %I AS PERMISSIVE FOR ALL TO %I '
            'USING (app_id = (SELECT crm_app_id())) WITH CHECK (app_id = (SELECT crm_app_id()))',
            t, integration);
    END LOOP;
END
$$;

-- The legacy roles can do nothing here: another deployment's migrations keep
-- them (and may set crm_app's password), so they must open nothing.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['crm_app', 'crm_app_integration']
    LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %I', r);
        EXECUTE format('REVOKE ALL ON FUNCTION crm_tenant(), crm_app_id(), crm_search_norm(text) FROM %I', r);
        EXECUTE format('REVOKE ALL ON SCHEMA public FROM %I', r);
    END LOOP;
END
$$;

-- Only this database's roles (and the owner) may connect: another
-- deployment's request role, with its own valid password, is refused at
-- login. Changing the database's privileges needs its owner (or a
-- superuser); other migrators leave it open, with a warning.
DO $$
DECLARE
    db text := current_database();
BEGIN
    IF pg_has_role(current_user, (SELECT datdba FROM pg_database WHERE datname = db), 'USAGE') THEN
        EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', db);
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crm_app') THEN
            EXECUTE format('REVOKE ALL ON DATABASE %I FROM crm_app', db);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crm_app_integration') THEN
            EXECUTE format('REVOKE ALL ON DATABASE %I FROM crm_app_integration', db);
        END IF;
        -- The owner keeps CONNECT (an owner holds every privilege on its
        -- database); the migrator is granted it too, should it act as a
        -- member of the owning role rather than as the owner.
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I, %I, %I',
                       db, crm_app_role(), crm_integration_role(), current_user);
    ELSE
        RAISE WARNING 'not the owner of database %: CONNECT stays granted to PUBLIC, so other roles of the cluster may log in to it; as its owner, run REVOKE CONNECT ON DATABASE % FROM PUBLIC; GRANT CONNECT ON DATABASE % TO %, %',
            db, db, db, crm_app_role(), crm_integration_role();
    END IF;
END
$$;
