//! Single-writer roles (the sequencer, the relay, maintenance): any number
//! of crm processes may serve one database, and exactly one of them holds a
//! role at a time — the one whose connection holds the session advisory lock
//! named after it. The role's work runs on that very connection, so when the
//! holder dies (or its connection does) the lock goes with it and another
//! process takes the role within [`RETRY`].

use std::future::Future;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};

/// How often a process without the role tries to take it.
pub const RETRY: Duration = Duration::from_secs(2);

/// Runs `work` whenever this process holds the role `name`, for as long as
/// the process runs. `work` gets the connection that holds the lock and
/// returns only when it fails (then the connection is dropped, releasing the
/// role, and this process competes for it again).
pub async fn hold<F, Fut>(pool: PgPool, name: &'static str, mut work: F)
where
    F: FnMut(PgConnection) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    loop {
        match take(&pool, name).await {
            Ok(Some(conn)) => {
                tracing::info!(role = name, "took the single-writer role");
                if let Err(e) = work(conn).await {
                    tracing::warn!(role = name, error = %e, "single-writer role lost");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(role = name, error = %e, "cannot compete for the role"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// A connection holding the lock of `name`, or `None` when another holds it.
async fn take(pool: &PgPool, name: &str) -> anyhow::Result<Option<PgConnection>> {
    // Detached: the lock lives exactly as long as this connection.
    let mut conn = pool.acquire().await?.detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("crm:{name}"))
        .fetch_one(&mut conn)
        .await?;
    Ok(locked.then_some(conn))
}
