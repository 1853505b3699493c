//! Storage: the connection pools, database creation and migrations, and the
//! tenant-bound transaction ([`TenantTx`]) that is the only way to reach a
//! tenant table. SQL text for the record tables is built in [`sql`].

pub mod sql;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, PgPool, Postgres, Transaction};

use crate::auth::Caller;
use crate::error::Error;

/// The role requests run as (created by the migrations; owns nothing, no
/// BYPASSRLS).
pub const APP_ROLE: &str = "crm_app";
/// The role integration tokens' requests switch to: crm_app's rights, plus
/// the app-scope policies.
pub const INTEGRATION_ROLE: &str = "crm_app_integration";

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct DbConfig {
    /// The owner's URL: creates the database if missing and runs migrations.
    pub url: String,
    /// Optional URL that logs in directly as the application role. Without
    /// it, request connections use `url` and `SET ROLE crm_app`.
    pub app_url: Option<String>,
    /// Maximum connections of the request pool.
    pub pool_size: u32,
    /// How long a request waits for a pooled connection before UNAVAILABLE.
    pub acquire_timeout: Duration,
}

/// The request pool.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
}

/// Creates the database named in `url` when it does not exist.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url).context("parsing DATABASE_URL")?;
    let name = options
        .get_database()
        .unwrap_or_else(|| options.get_username())
        .to_owned();
    let mut conn = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .context("connecting to the maintenance database \"postgres\"")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        // CREATE DATABASE takes no bind parameters: the name is quoted as an
        // identifier (it comes from configuration, not from a request).
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match conn.execute(sqlx::AssertSqlSafe(sql)).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Created concurrently by someone else: fine.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context("creating the database"),
        }
    }
    conn.close().await.ok();
    Ok(())
}

/// Applies the embedded migrations (`migrations/`) as the owner.
pub async fn migrate(url: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url)
        .await
        .context("connecting to run migrations")?;
    sqlx::migrate!("./migrations")
        .run(&mut conn)
        .await
        .context("running migrations")?;
    conn.close().await.ok();
    Ok(())
}

impl Db {
    /// Opens the request pool. Connections run as the application role.
    pub async fn connect(config: &DbConfig) -> anyhow::Result<Self> {
        let (url, set_role) = match &config.app_url {
            Some(u) => (u.as_str(), false),
            None => (config.url.as_str(), true),
        };
        let options = PgConnectOptions::from_str(url)
            .context("parsing database URL")?
            .application_name("crm");
        let pool = PgPoolOptions::new()
            .max_connections(config.pool_size)
            .acquire_timeout(config.acquire_timeout)
            .test_before_acquire(true)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if set_role {
                        conn.execute("SET ROLE crm_app").await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        let db = Self { pool };
        db.check_role().await?;
        Ok(db)
    }

    /// Refuses to serve if request connections could bypass row-level
    /// security.
    async fn check_role(&self) -> anyhow::Result<()> {
        let (user, superuser, bypass): (String, bool, bool) = sqlx::query_as(
            "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&self.pool)
        .await
        .context("checking the application role")?;
        anyhow::ensure!(
            !superuser && !bypass,
            "request connections run as {user}, which bypasses row-level security"
        );
        Ok(())
    }

    /// Starts a transaction bound to `caller`: the tenant (and app) settings
    /// that row-level security reads are set for this transaction only.
    pub async fn begin(&self, caller: &Caller) -> Result<TenantTx, Error> {
        let mut tx = self.pool.begin().await?;
        // Integration tokens run as the integration role, whose policies add
        // the app scope; a person's token keeps the connection's crm_app.
        sqlx::query(
            "SELECT set_config('crm.tenant_id', $1, true), set_config('crm.app_id', $2, true), \
             CASE WHEN $2 <> '' THEN set_config('role', $3, true) END",
        )
        .bind(caller.tenant_id())
        .bind(caller.app_id().unwrap_or(""))
        .bind(INTEGRATION_ROLE)
        .execute(&mut *tx)
        .await?;
        Ok(TenantTx {
            tx,
            caller: caller.clone(),
        })
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Closes the pool (on shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A transaction bound to one caller. Every query on a tenant table goes
/// through one, so none can run without a tenant.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    caller: Caller,
}

impl TenantTx {
    /// The caller this transaction acts for.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The underlying connection, for executing queries.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Lifts the app scope of an integration token for the statements that
    /// follow, leaving only the tenant's: for invariants the server maintains
    /// across records of every app (rollups, exclusive flags, counters). Pair
    /// with [`TenantTx::restore_app_scope`]. No-op for a person's token.
    pub async fn lift_app_scope(&mut self) -> Result<(), Error> {
        if self.caller.app_id().is_some() {
            sqlx::query("SELECT set_config('role', $1, true)")
                .bind(APP_ROLE)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Restores the caller's app scope after [`TenantTx::lift_app_scope`].
    pub async fn restore_app_scope(&mut self) -> Result<(), Error> {
        if self.caller.app_id().is_some() {
            sqlx::query("SELECT set_config('role', $1, true)")
                .bind(INTEGRATION_ROLE)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await?;
        Ok(())
    }
}
