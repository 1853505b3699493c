//! The definitions' own indexes: one partial btree index per sortable
//! definition, `(crm_cf_number|crm_cf_text(custom_fields, '<key>'), id)
//! WHERE tenant_id = '<tenant>' AND NOT is_deleted`, serving
//! ranges and order_by on the key within the tenant. `CREATE INDEX
//! CONCURRENTLY` builds it without blocking writes, but cannot run inside a
//! transaction, so it is not the request's work: a definition starts with
//! `index_state = 'building'`, and one crm process at a time (the
//! single-writer role `field_indexes`) builds what is missing, marks it
//! `ready` (or `failed`, with the error, tried again later), and drops the
//! indexes of deleted definitions. It runs on the owner's connection (DDL
//! needs the table's owner) and reads the definitions as the background
//! role.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::{Connection, Executor, PgConnection};

use super::cache::Schemas;
use super::values::FieldType;

/// How often the worker looks again without being woken.
const INTERVAL: Duration = Duration::from_secs(10);

/// The index of the definition `id` (`cf_fld_…`, lowercase).
pub fn index_name(id: &str) -> String {
    format!("cf_{}", id.to_ascii_lowercase())
}

/// The SQL of a defined key's value as its type compares, on the row alias
/// `alias` (e.g. `t.`, or empty): never NULL, [`missing`] when the record
/// has no value of the type. `key` is a definition's key
/// (`[a-z][a-z0-9_]{0,62}`), inlined: the expression must be the index's,
/// literally, for the planner to match them.
pub fn expression(ty: FieldType, key: &str, alias: &str) -> String {
    assert!(
        !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "a definition key is [a-z][a-z0-9_]*"
    );
    let f = if ty.numeric() {
        "crm_cf_number"
    } else {
        "crm_cf_text"
    };
    format!("{f}({alias}custom_fields, '{key}')")
}

/// The value [`expression`] has for a record without one: below every
/// value (`-Infinity` is no JSON number; a blank string is no value).
pub fn missing(ty: FieldType) -> &'static str {
    if ty.numeric() {
        "'-Infinity'::numeric"
    } else {
        "''"
    }
}

/// The statistics object of a definition: the planner ignores the
/// expression statistics of partial indexes, so without it a typed range
/// would be estimated at a third of the tenant's rows, and the partial index
/// passed over.
fn statistics_sql(id: &str, table: &str, ty: FieldType, key: &str) -> String {
    format!(
        "CREATE STATISTICS IF NOT EXISTS {}_st ON ({}) FROM \"{table}\"",
        index_name(id),
        expression(ty, key, "")
    )
}

/// The `CREATE INDEX CONCURRENTLY` of a definition.
fn create_sql(id: &str, tenant: &str, table: &str, ty: FieldType, key: &str) -> String {
    // The tenant id is the authenticator's ([A-Za-z0-9._:@-]); quoted all
    // the same.
    let tenant = tenant.replace('\'', "''");
    format!(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON \"{table}\" ({}, id) \
         WHERE tenant_id = '{tenant}' AND NOT is_deleted",
        index_name(id),
        expression(ty, key, "")
    )
}

/// Runs the index work on `conn` (holding the role) while this process
/// holds the role; DDL on a connection to `owner_url`.
pub async fn work(
    mut conn: PgConnection,
    owner_url: String,
    schemas: Arc<Schemas>,
) -> anyhow::Result<()> {
    loop {
        let woken = schemas.changed.notified();
        reconcile(&mut conn, &owner_url).await?;
        tokio::time::timeout(INTERVAL, woken).await.ok();
    }
}

type Pending = (String, String, String, String, String);

/// Builds the missing indexes and drops those of deleted definitions.
async fn reconcile(conn: &mut PgConnection, owner_url: &str) -> anyhow::Result<()> {
    let pending: Vec<Pending> = sqlx::query_as(
        "SELECT tenant_id, id, resource_type, key, type FROM field_definitions \
         WHERE index_state IN ('building', 'failed') ORDER BY index_state = 'failed', id",
    )
    .fetch_all(&mut *conn)
    .await
    .context("reading the definitions to index")?;
    let existing: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relname LIKE 'cf\\_fld\\_%'",
    )
    .fetch_all(&mut *conn)
    .await?;
    let statistics: Vec<String> = sqlx::query_scalar(
        "SELECT stxname::text FROM pg_statistic_ext \
         WHERE stxnamespace = current_schema()::regnamespace AND stxname LIKE 'cf\\_fld\\_%\\_st'",
    )
    .fetch_all(&mut *conn)
    .await?;
    let defined: std::collections::HashSet<String> =
        sqlx::query_scalar("SELECT lower(id) FROM field_definitions")
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    let orphans: Vec<&String> = existing
        .iter()
        .map(|(name, _)| name)
        .filter(|name| !defined.contains(&name[3..]))
        .collect();
    let orphan_statistics: Vec<&String> = statistics
        .iter()
        .filter(|name| !defined.contains(&name[3..name.len() - 3]))
        .collect();
    if pending.is_empty() && orphans.is_empty() && orphan_statistics.is_empty() {
        return Ok(());
    }
    let mut owner = PgConnection::connect(owner_url)
        .await
        .context("connecting as the owner to build indexes")?;
    owner
        .execute("SET standard_conforming_strings = on; SET statement_timeout = 0")
        .await?;
    for name in orphans {
        tracing::info!(index = %name, "dropping the index of a deleted field definition");
        owner
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP INDEX CONCURRENTLY IF EXISTS {name}"
            )))
            .await?;
    }
    for name in orphan_statistics {
        owner
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP STATISTICS IF EXISTS {name}"
            )))
            .await?;
    }
    for (tenant, id, resource, key, ty) in pending {
        let (Some(kind), Some(ty)) = (
            crate::entities::kinds().find(|k| k.resource == resource),
            FieldType::parse(&ty),
        ) else {
            continue;
        };
        let name = index_name(&id);
        // A build interrupted earlier leaves an invalid index: start over.
        if existing.iter().any(|(n, valid)| *n == name && !valid) {
            owner
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP INDEX CONCURRENTLY IF EXISTS {name}"
                )))
                .await?;
        }
        let started = std::time::Instant::now();
        let mut result = owner
            .execute(sqlx::AssertSqlSafe(create_sql(
                &id, &tenant, kind.table, ty, &key,
            )))
            .await;
        if result.is_ok() {
            // The planner's estimates of the key's ranges, from now on.
            result = owner
                .execute(sqlx::AssertSqlSafe(statistics_sql(
                    &id, kind.table, ty, &key,
                )))
                .await;
        }
        if result.is_ok() {
            result = owner
                .execute(sqlx::AssertSqlSafe(format!("ANALYZE \"{}\"", kind.table)))
                .await;
        }
        let (state, error) = match &result {
            Ok(_) => {
                tracing::info!(index = %name, ms = started.elapsed().as_millis() as u64, "built a field definition's index");
                ("ready", String::new())
            }
            Err(e) => {
                tracing::warn!(index = %name, error = %e, "building a field definition's index failed");
                // Dropped so that the next attempt starts clean.
                owner
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP INDEX CONCURRENTLY IF EXISTS {name}"
                    )))
                    .await
                    .ok();
                (
                    "failed",
                    "the index could not be built; it is tried again".to_owned(),
                )
            }
        };
        sqlx::query(
            "UPDATE field_definitions SET index_state = $3, index_error = $4 \
             WHERE tenant_id = $1 AND id = $2 AND index_state IN ('building', 'failed')",
        )
        .bind(&tenant)
        .bind(&id)
        .bind(state)
        .bind(&error)
        .execute(&mut *conn)
        .await?;
        if result.is_err() {
            // Not again at once: the next pass, after the interval.
            break;
        }
    }
    owner.close().await.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_sql_inlines_only_checked_text() {
        assert_eq!(
            create_sql("fld_01ABC", "t-1", "accounts", FieldType::Integer, "seats"),
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS cf_fld_01abc ON \"accounts\" \
             (crm_cf_number(custom_fields, 'seats'), id) \
             WHERE tenant_id = 't-1' AND NOT is_deleted"
        );
        assert_eq!(
            statistics_sql("fld_01ABC", "accounts", FieldType::Integer, "seats"),
            "CREATE STATISTICS IF NOT EXISTS cf_fld_01abc_st ON \
             (crm_cf_number(custom_fields, 'seats')) FROM \"accounts\""
        );
        assert_eq!(
            expression(FieldType::Date, "renewal", "t."),
            "crm_cf_text(t.custom_fields, 'renewal')"
        );
    }

    #[test]
    #[should_panic(expected = "a definition key")]
    fn keys_outside_the_pattern_are_refused() {
        expression(FieldType::String, "a'); DROP TABLE accounts; --", "");
    }
}
