//! `crm migrate --distribute`: the schema on Citus, distributed by
//! `tenant_id`.
//!
//! Every tenant table becomes a distributed table with `tenant_id` as its
//! distribution column, all co-located with `accounts` (so a tenant's rows of
//! every table live on one worker, foreign keys hold there and a request's
//! statements route to that worker). There is no truly global table yet, so
//! no reference table. The functions the row-level-security policies call
//! are distributed too (the workers evaluate the policies), and the request
//! and background roles get `citus.propagate_set_commands = 'local'`, which
//! makes Citus send the transaction's `SET LOCAL crm.tenant_id` (see
//! `db::scope_sql`) to the workers.
//!
//! Idempotent: a table or function already distributed is left as it is.

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};

/// The tenant tables in an order where every table comes after the tables
/// its foreign keys reference (Citus distributes a referenced table first).
/// A test checks it against the catalog: every table with a `tenant_id`, and
/// no other.
pub const TENANT_TABLES: &[&str] = &[
    "accounts",
    "contacts",
    "deals",
    "activities",
    "quotes",
    "line_items",
    "idempotency_keys",
    "number_sequences",
    "change_outbox",
    "change_events",
    "change_heads",
    "change_relay",
    "webhooks",
    "webhook_deliveries",
    "field_definitions",
    "record_history",
    "purge_audit",
];

/// The table every other is co-located with.
const COLOCATION_ANCHOR: &str = "accounts";

/// The functions the policies and the search expressions call, which the
/// workers must have.
const FUNCTIONS: &[&str] = &[
    "crm_tenant()",
    "crm_app_id()",
    "crm_app_role()",
    "crm_integration_role()",
    "crm_background_role()",
    "crm_search_norm(text)",
    "crm_cf_number(jsonb, text)",
    "crm_cf_text(jsonb, text)",
    "crm_scrub(jsonb, text[])",
];

/// What `--distribute` did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Distribution {
    /// Tables distributed by this run.
    pub distributed: Vec<String>,
    /// Tables that already were.
    pub already: Vec<String>,
}

/// The Citus version installed in the database `conn` is connected to.
async fn citus_version(conn: &mut PgConnection) -> anyhow::Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'citus'")
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// Distributes a migrated database (owner URL `url`) on the Citus cluster
/// whose coordinator holds it; refuses when the `citus` extension is not
/// installed there.
pub async fn distribute(url: &str) -> anyhow::Result<Distribution> {
    let mut conn = PgConnection::connect(url)
        .await
        .context("connecting to distribute the tables")?;
    let Some(version) = citus_version(&mut conn).await? else {
        let db: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&mut conn)
            .await?;
        bail!(
            "--distribute needs Citus: the extension \"citus\" is not installed in database \
             {db:?}. On a Citus coordinator, run CREATE EXTENSION citus in it (and add the \
             workers with citus_add_node) first; a single PostgreSQL server needs no distribution"
        );
    };
    tracing::info!(citus = %version, "distributing by tenant_id");
    for f in FUNCTIONS {
        let done: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_dist_object WHERE classid = 'pg_proc'::regclass \
             AND objid = $1::regprocedure)",
        )
        .bind(f)
        .fetch_one(&mut conn)
        .await
        .with_context(|| format!("checking whether {f} is distributed"))?;
        if !done {
            sqlx::query("SELECT create_distributed_function($1::regprocedure::text)")
                .bind(f)
                .execute(&mut conn)
                .await
                .with_context(|| format!("distributing the function {f}"))?;
        }
    }
    let mut out = Distribution::default();
    for &table in TENANT_TABLES {
        let done: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = $1::regclass)",
        )
        .bind(table)
        .fetch_one(&mut conn)
        .await
        .with_context(|| format!("checking whether {table} is distributed"))?;
        if done {
            out.already.push(table.to_owned());
            continue;
        }
        let colocate = if table == COLOCATION_ANCHOR {
            "default"
        } else {
            COLOCATION_ANCHOR
        };
        sqlx::query(
            "SELECT create_distributed_table($1::regclass, 'tenant_id', colocate_with => $2)",
        )
        .bind(table)
        .bind(colocate)
        .execute(&mut conn)
        .await
        .with_context(|| format!("distributing {table} by tenant_id"))?;
        out.distributed.push(table.to_owned());
    }
    // The roles' transactions set their tenant with SET LOCAL; Citus sends it
    // on to the workers only with this setting. Role names are [a-z0-9_].
    let roles: Vec<String> = sqlx::query_scalar("SELECT unnest(crm_roles())")
        .fetch_all(&mut conn)
        .await?;
    for role in roles {
        anyhow::ensure!(
            role.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "unexpected role name {role:?}"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER ROLE {role} SET citus.propagate_set_commands = 'local'"
        )))
        .execute(&mut conn)
        .await
        .with_context(|| format!("setting citus.propagate_set_commands for {role}"))?;
    }
    conn.close().await.ok();
    Ok(out)
}
