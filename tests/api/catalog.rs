//! The schema's fitness for distribution by tenant_id, read from the catalog
//! of a freshly migrated database: the row-level-security policies (one per
//! table, permissive, subquery-free, fail-closed) and the keys and indexes
//! (leading with tenant_id). Needs no Citus.

use crate::helpers::*;
use sqlx::Connection;

/// Indexes of the background work, which spans tenants by design (the
/// sequencer's outbox order, due webhooks, pruning by age): they serve
/// scans over every tenant and would be useless led by tenant_id. On Citus
/// they are per shard, as every index is.
const CROSS_TENANT_INDEXES: &[&str] = &[
    "change_outbox_id_idx",
    "webhooks_due_idx",
    "webhook_deliveries_age_idx",
    "idempotency_keys_created_idx",
];

/// A row of `pg_policies`: name, permissive, roles, command, USING, WITH
/// CHECK.
type Policy = (
    String,
    String,
    Vec<String>,
    String,
    Option<String>,
    Option<String>,
);

#[tokio::test]
async fn every_table_has_one_permissive_policy_without_subqueries() {
    let app = spawn_app().await;
    let mut db = app.owner_conn().await;
    let tables: Vec<(String, bool, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity, c.relispartition \
         FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace \
         AND c.relkind IN ('r', 'p') AND c.relname <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(tables.len() >= 14, "{tables:?}");
    for (table, rls, forced, partition) in &tables {
        assert!(
            *rls && *forced,
            "{table}: row-level security enabled and forced"
        );
        let policies: Vec<Policy> = sqlx::query_as(
            "SELECT policyname::text, permissive, roles::text[], cmd, qual, with_check \
                 FROM pg_policies WHERE schemaname = 'public' AND tablename = $1",
        )
        .bind(table)
        .fetch_all(&mut db)
        .await
        .unwrap();
        if *partition {
            // Reached through the parent's policy; direct access sees nothing.
            assert!(policies.is_empty(), "{table}: {policies:?}");
            continue;
        }
        let [(name, permissive, roles, cmd, qual, check)] = policies.as_slice() else {
            panic!("{table}: exactly one policy, found {policies:?}");
        };
        assert_eq!(permissive, "PERMISSIVE", "{table}.{name}");
        assert_eq!(
            roles,
            &["public".to_owned()],
            "{table}.{name}: for every role"
        );
        assert_eq!(cmd, "ALL", "{table}.{name}");
        let qual = qual.as_deref().expect("a USING expression");
        assert_eq!(
            check.as_deref(),
            Some(qual),
            "{table}.{name}: WITH CHECK = USING"
        );
        let lower = qual.to_lowercase();
        assert!(
            !lower.contains("select"),
            "{table}.{name}: a subquery in {qual}"
        );
        assert!(
            !lower.contains("true"),
            "{table}.{name}: a constant in {qual}"
        );
        // The request roles' only way in is their tenant; the background
        // role's, its name.
        if table == "change_relay" {
            assert_eq!(qual, "(CURRENT_USER = crm_background_role())");
        } else {
            assert!(
                qual.contains("(tenant_id = crm_tenant())"),
                "{table}: {qual}"
            );
        }
    }
}

#[tokio::test]
async fn with_no_tenant_set_the_request_role_sees_and_writes_nothing() {
    let app = spawn_app().await;
    let token = app.token(&tenant(), "u");
    app.account(&token, "Acme").await;
    let mut db = app.owner_conn().await;
    let set_role = format!("SET ROLE {}", app.app_role);
    sqlx::raw_sql(sqlx::AssertSqlSafe(set_role))
        .execute(&mut db)
        .await
        .unwrap();
    for table in crm::db::distribute::TENANT_TABLES {
        if ["change_outbox", "change_relay"].contains(table) {
            continue; // no SELECT privilege at all
        }
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut db)
                .await
                .unwrap_or_else(|e| panic!("{table}: {e}"));
        assert_eq!(n, 0, "{table}: rows seen with no tenant set");
    }
    let e = sqlx::query(
        "INSERT INTO accounts (tenant_id, id, name) VALUES ('x', 'acc_01ARZ3NDEKTSV4RRFFQ69G5FAV', 'n')",
    )
    .execute(&mut db)
    .await
    .unwrap_err();
    assert!(e.to_string().contains("row-level security"), "{e}");
    db.close().await.ok();
}

#[tokio::test]
async fn every_key_and_index_leads_with_tenant_id() {
    let app = spawn_app().await;
    let mut db = app.owner_conn().await;
    // Every table but the migrations' bookkeeping is a tenant table, and the
    // distribution plan names each (in an order that respects the foreign
    // keys: see the next test).
    let mut tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace \
         AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname <> '_sqlx_migrations'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    tables.sort();
    let mut planned: Vec<String> = crm::db::distribute::TENANT_TABLES
        .iter()
        .map(|s| s.to_string())
        .collect();
    planned.sort();
    assert_eq!(tables, planned, "every table is distributed by tenant_id");
    let constraints: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, c.conname::text, \
                (SELECT attname::text FROM pg_attribute WHERE attrelid = c.conrelid AND attnum = c.conkey[1]), \
                (SELECT attname::text FROM pg_attribute WHERE attrelid = c.confrelid AND attnum = c.confkey[1]) \
         FROM pg_constraint c WHERE c.connamespace = 'public'::regnamespace AND c.contype IN ('p', 'u', 'f') \
         AND c.conrelid <> '_sqlx_migrations'::regclass",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(constraints.len() > 20, "{constraints:?}");
    for (table, name, first, referenced) in &constraints {
        assert_eq!(first, "tenant_id", "{table}.{name} leads with tenant_id");
        if let Some(r) = referenced {
            assert_eq!(
                r, "tenant_id",
                "{table}.{name} references a key led by tenant_id"
            );
        }
    }
    let indexes: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text, am.amname::text, \
                COALESCE((SELECT attname::text FROM pg_attribute WHERE attrelid = t.oid AND attnum = x.indkey[0]), '(expression)') \
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_am am ON am.oid = i.relam \
         WHERE t.relnamespace = 'public'::regnamespace AND t.relname <> '_sqlx_migrations'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    for (table, index, method, first) in &indexes {
        if CROSS_TENANT_INDEXES.contains(&index.as_str()) {
            continue;
        }
        if method == "gin" {
            // Inverted indexes over a row's own values (tags, search text,
            // custom fields): btree's tenant_id cannot lead them without
            // btree_gin; the tags' and custom fields' keys carry the tenant
            // instead (migration 0016), and every query that uses one also
            // carries tenant_id = $n (the statement test). Shard-local on
            // Citus.
            continue;
        }
        assert_eq!(
            first, "tenant_id",
            "{table}: index {index} ({method}) leads with tenant_id"
        );
    }
    // The exemptions name real indexes (a rename must update them).
    for name in CROSS_TENANT_INDEXES {
        assert!(
            indexes.iter().any(|(_, i, _, _)| i == name),
            "{name} no longer exists"
        );
    }
}

#[tokio::test]
async fn the_distribution_plan_puts_referenced_tables_first() {
    let app = spawn_app().await;
    let mut db = app.owner_conn().await;
    let fks: Vec<(String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint \
         WHERE connamespace = 'public'::regnamespace AND contype = 'f' AND conrelid <> confrelid",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(!fks.is_empty());
    let plan = crm::db::distribute::TENANT_TABLES;
    let at = |t: &str| {
        plan.iter()
            .position(|p| *p == t)
            .unwrap_or_else(|| panic!("{t} planned"))
    };
    for (from, to) in fks {
        assert!(
            at(&to) < at(&from),
            "{to} is distributed before {from}, which references it"
        );
    }
}

#[tokio::test]
async fn distribute_refuses_without_citus() {
    let app = spawn_app().await;
    let url = app.owner_url().to_owned();
    let e = crm::db::distribute::distribute(&url).await.unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("--distribute needs Citus"), "{msg}");
    assert!(msg.contains("CREATE EXTENSION citus"), "{msg}");
}
