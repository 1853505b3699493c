//! Partitions and retention of `change_events`: weekly partitions are made
//! four weeks ahead, and a partition whose every event is older than the
//! retention is dropped whole — a catalog change, not a mass delete, so no
//! long lock and no vacuum storm. Before dropping, each tenant's
//! `oldest_sequence` is raised past the events about to go, in its own
//! committed transaction: a reader behind it then gets CHANGES_EXPIRED, and
//! no reader can have events vanish under it silently.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{Executor, PgConnection};

/// How often maintenance runs.
pub const INTERVAL: Duration = Duration::from_secs(3600);
/// Weeks of partitions made ahead.
pub const WEEKS_AHEAD: i32 = 4;

/// Makes sure the coming weeks have partitions (as the owner: DDL).
pub async fn ensure_partitions(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query("SELECT crm_ensure_change_partitions($1)")
        .bind(WEEKS_AHEAD)
        .execute(conn)
        .await
        .context("creating change_events partitions")?;
    Ok(())
}

/// Drops the partitions wholly older than `retention`; returns how many.
/// `conn` is a background connection (background role set); DDL runs as its
/// session user, the owner.
pub async fn prune(conn: &mut PgConnection, retention: Duration) -> anyhow::Result<usize> {
    let cut = Utc::now() - chrono::Duration::from_std(retention).context("retention too long")?;
    let partitions: Vec<(String, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT name, upper_bound FROM crm_change_partitions()")
            .fetch_all(&mut *conn)
            .await?;
    let doomed: Vec<(String, DateTime<Utc>)> = partitions
        .into_iter()
        .filter_map(|(name, hi)| hi.filter(|hi| *hi <= cut).map(|hi| (name, hi)))
        .collect();
    let Some(boundary) = doomed.iter().map(|(_, hi)| *hi).max() else {
        return Ok(0);
    };
    // Every event kept is at or after `boundary`. A tenant with none there
    // keeps none of the doomed ones either: its oldest becomes one past them.
    sqlx::query(
        "UPDATE change_heads h SET oldest_sequence = GREATEST(h.oldest_sequence, COALESCE( \
             (SELECT min(e.sequence) FROM change_events e \
              WHERE e.tenant_id = h.tenant_id AND e.committed_at >= $1), \
             (SELECT max(e.sequence) + 1 FROM change_events e \
              WHERE e.tenant_id = h.tenant_id AND e.committed_at < $1), \
             h.oldest_sequence))",
    )
    .bind(boundary)
    .execute(&mut *conn)
    .await
    .context("raising oldest_sequence before pruning")?;
    conn.execute("RESET ROLE").await?;
    let mut dropped = 0;
    for (name, _) in &doomed {
        // The name comes from the catalog (change_events_YYYYMMDD).
        anyhow::ensure!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "unexpected partition name {name:?}"
        );
        conn.execute(sqlx::AssertSqlSafe(format!("DROP TABLE \"{name}\"")))
            .await
            .with_context(|| format!("dropping {name}"))?;
        dropped += 1;
    }
    Ok(dropped)
}

/// Maintenance's loop, on the connection that holds its role.
pub async fn run(
    mut conn: PgConnection,
    background_role: String,
    retention: Duration,
) -> anyhow::Result<()> {
    let set_role = format!("SET ROLE {background_role}");
    loop {
        conn.execute("RESET ROLE").await?;
        ensure_partitions(&mut conn).await?;
        conn.execute(sqlx::AssertSqlSafe(set_role.clone())).await?;
        let dropped = prune(&mut conn, retention).await?;
        conn.execute(sqlx::AssertSqlSafe(set_role.clone())).await?;
        if dropped > 0 {
            tracing::info!(dropped, "pruned change_events partitions past retention");
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
