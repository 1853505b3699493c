//! The change feed (SPEC §11): every committed change to every record, one
//! gapless sequence per tenant, read by `ChangeService` (a page at a time or
//! as a stream) and relayed to NATS JetStream.
//!
//! Events are captured in the write's own transaction by one trigger
//! (`crm_record_changed`, migration 0006) on every record table, so a side
//! effect is captured exactly like a client's write, and no entity writes an
//! event by hand. How sequences are assigned is [`Sequencing`]; the rest of
//! this module is the work around the tables:
//!
//! - [`hub`]: wake-ups — local commits, `LISTEN crm_changes`, fan-out to the
//!   watches of this process;
//! - [`sequencer`]: moves finished transactions' rows from the outbox into
//!   the feed, numbering them (`relay` mode);
//! - [`feed`]: reading a tenant's events as the caller (RLS applies);
//! - [`relay`]: publishes the feed to JetStream when `CRM_NATS_URL` is set;
//! - [`maintenance`]: weekly partitions ahead, retention behind;
//! - [`leader`]: single-writer roles for the above across replicas
//!   (session advisory locks), so any number of processes may serve one
//!   database.

pub mod feed;
pub mod hub;
pub mod leader;
pub mod maintenance;
pub mod relay;
pub mod sequencer;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

pub use hub::Hub;

/// How sequence numbers are assigned (`CRM_CHANGES_SEQUENCING`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Sequencing {
    /// Writes append to an outbox without contention; one sequencer numbers
    /// committed rows. One PostgreSQL node (one outbox sequence).
    #[default]
    Relay,
    /// Each write takes its tenant's counter row until commit: correct on
    /// Citus (each tenant's counter lives with its rows); a tenant's writes
    /// commit one at a time.
    Counter,
}

impl Sequencing {
    /// The value of the database setting `crm.changes_sequencing`.
    pub fn setting(self) -> &'static str {
        match self {
            Sequencing::Relay => "relay",
            Sequencing::Counter => "counter",
        }
    }
}

/// Settings of the feed.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// The owner's URL (background work switches to the background role).
    pub owner_url: String,
    /// Sequencing mode.
    pub sequencing: Sequencing,
    /// How long events are kept (at least).
    pub retention: Duration,
    /// Idle time before a watch sends a heartbeat.
    pub heartbeat: Duration,
    /// The JetStream relay's server, if any.
    pub nats_url: Option<String>,
}

/// The background role of this database (`crm_background_role()`), checked
/// to be a plain identifier: it is inlined in `SET ROLE`.
async fn background_role(pool: &PgPool) -> anyhow::Result<String> {
    let role: String = sqlx::query_scalar("SELECT crm_background_role()")
        .fetch_one(pool)
        .await
        .context("reading the background role (migration 0006)")?;
    anyhow::ensure!(
        !role.is_empty()
            && role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "the background role {role:?} is not a plain identifier"
    );
    Ok(role)
}

/// Connections for background work: the owner's login, switched to the
/// background role (whose policies cover the feed tables, and only them).
pub async fn background_pool(owner_url: &str, size: u32) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(owner_url)
        .context("parsing DATABASE_URL")?
        .application_name("crm-background");
    let owner = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .context("connecting for background work")?;
    let role = background_role(&owner).await?;
    owner.close().await;
    let set_role = format!("SET ROLE {role}");
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _| {
            let sql = set_role.clone();
            Box::pin(async move {
                conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                Ok(())
            })
        })
        .connect_lazy_with(options))
}

/// Makes the database's writes use `mode` (the trigger reads
/// `crm.changes_sequencing`, a database default every new session takes up)
/// and makes sure the coming weeks have partitions. Run at start-up, as the
/// owner; every replica of a deployment must be given the same mode.
pub async fn prepare(owner_url: &str, mode: Sequencing) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(owner_url)
        .await
        .context("connecting to prepare the change feed")?;
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await?;
    let current: Option<String> =
        sqlx::query_scalar("SELECT current_setting('crm.changes_sequencing', true)")
            .fetch_one(&mut conn)
            .await?;
    if current.as_deref().unwrap_or("relay") != mode.setting() || current.is_none() {
        // ALTER DATABASE takes no parameters: the name is quoted as an
        // identifier and the value is one of two constants.
        let sql = format!(
            "ALTER DATABASE \"{}\" SET crm.changes_sequencing = '{}'",
            db.replace('"', "\"\""),
            mode.setting()
        );
        conn.execute(sqlx::AssertSqlSafe(sql))
            .await
            .context("setting crm.changes_sequencing")?;
        tracing::info!(mode = mode.setting(), "change feed sequencing");
    }
    maintenance::ensure_partitions(&mut conn).await?;
    conn.close().await.ok();
    Ok(())
}
