//! Storage: the request pool ([`Db`]), database creation and migrations
//! ([`setup`]), the roles ([`roles`]), and the tenant-bound transaction
//! ([`TenantTx`]) that is the only way to reach a tenant table. The SQL text
//! is built in `crate::sql`.

pub mod distribute;
pub mod embedded;
pub mod roles;
pub mod setup;
pub mod tx;

pub use roles::Roles;
pub use setup::{create_database_if_missing, migrate};
pub use tx::{TenantTx, WriteContext};

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres, Row, SqlSafeStr};

use crate::auth::Caller;
use crate::error::Error;
use crate::failpoint::Failpoints;
use crate::records::fields::RecordId;
use crate::sql::session::{begin_sql, read_one_sql};
use prometheus_client::metrics::counter::Counter;
use roles::set_app_password;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct DbConfig {
    /// The owner's URL: creates the database if missing and runs migrations.
    pub url: String,
    /// Optional URL that logs in directly as this database's request role
    /// ([`Roles::app`]). Without it, request connections log in as that role
    /// with `app_password` on `url`'s host, or (no password) use `url` and
    /// `SET ROLE` to it.
    pub app_url: Option<String>,
    /// Maximum connections of the request pool.
    pub pool_size: u32,
    /// How long a request waits for a pooled connection before UNAVAILABLE.
    pub acquire_timeout: Duration,
    /// Longest a statement may run before Postgres cancels it.
    pub statement_timeout: Duration,
    /// Password to give this database's request role (derived from a
    /// configured secret), so that request connections can log in as it when
    /// no `app_url` is given. No other role's password is touched.
    pub app_password: Option<String>,
    /// Test-only failpoints.
    pub failpoints: Failpoints,
    /// Counts the transactions begun (a metric).
    pub transactions: Counter<u64, AtomicU64>,
    /// `PREPARE` statements every connection runs as it opens (the
    /// single-message reads' statements, see [`Db::read_one`]).
    pub prepare: Vec<Arc<str>>,
}

/// The request pool.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    roles: Arc<Roles>,
    failpoints: Failpoints,
    transactions: Counter<u64, AtomicU64>,
    /// False while the database is known not to answer: requests then give
    /// up after [`FAST_FAIL`] instead of the whole acquire timeout.
    healthy: Arc<AtomicBool>,
}

/// How long a request waits for a connection while the database is down.
const FAST_FAIL: Duration = Duration::from_millis(250);
/// A pooled connection idle this long is pinged before use (one that has
/// just been used is known to work: sqlx tests it when it is released).
const PING_IDLE: Duration = Duration::from_secs(1);

impl Db {
    /// Opens the request pool of a migrated database. Its roles are read as
    /// the owner; connections log in as its request role: with `app_url`, or
    /// with the owner's URL and the derived password (given to that role
    /// alone). Only when neither is possible (no secret to derive it from,
    /// or an owner not allowed to set it) do they use the owner's login with
    /// `SET ROLE`, and a warning says so.
    pub async fn connect(config: &DbConfig) -> anyhow::Result<Self> {
        let mut owner = PgConnection::connect(&config.url)
            .await
            .context("connecting as the owner to read the application roles")?;
        let roles = Roles::load(&mut owner).await?;
        let app = roles.app();
        let (options, set_role) = match (&config.app_url, &config.app_password) {
            (Some(u), _) => (
                PgConnectOptions::from_str(u).context("parsing CRM_APP_DATABASE_URL")?,
                false,
            ),
            (None, Some(password)) => match set_app_password(&mut owner, app, password).await {
                Ok(()) => (
                    PgConnectOptions::from_str(&config.url)
                        .context("parsing DATABASE_URL")?
                        .username(app)
                        .password(password),
                    false,
                ),
                Err(e) => {
                    tracing::warn!(error = %e, role = app, "cannot give the request role a login: request connections use the owner's login and SET ROLE");
                    (
                        PgConnectOptions::from_str(&config.url).context("parsing DATABASE_URL")?,
                        true,
                    )
                }
            },
            (None, None) => {
                tracing::warn!(
                    role = app,
                    "no secret to derive the request role's password from: request connections use the owner's login and SET ROLE (set CRM_APP_DATABASE_URL)"
                );
                (
                    PgConnectOptions::from_str(&config.url).context("parsing DATABASE_URL")?,
                    true,
                )
            }
        };
        owner.close().await.ok();
        // Inlined: the name is [a-z0-9_] (Roles).
        let set_role_sql = format!("SET ROLE {app}");
        // Prepared as the request role (plans are per role anyway).
        let prepare_sql: Arc<str> = config.prepare.join("; ").into();
        let statement_timeout = format!("{}ms", config.statement_timeout.as_millis());
        let options = options.application_name("crm").options([
            // A transaction left open (a crashed handler) is ended by Postgres.
            ("idle_in_transaction_session_timeout", "30s"),
            ("statement_timeout", statement_timeout.as_str()),
            // Quoting in simple-query text relies on it (the default since
            // PostgreSQL 9.1; set so that no server setting can change it).
            ("standard_conforming_strings", "on"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(config.pool_size)
            .acquire_timeout(config.acquire_timeout)
            // Not a ping per request: only connections idle a while.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _meta| {
                let set_role_sql = set_role_sql.clone();
                let prepare_sql = prepare_sql.clone();
                Box::pin(async move {
                    if set_role {
                        conn.execute(sqlx::AssertSqlSafe(set_role_sql)).await?;
                    }
                    if !prepare_sql.is_empty() {
                        sqlx::raw_sql(sqlx::AssertSqlSafe(prepare_sql.to_string()))
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        let db = Self {
            pool,
            roles: Arc::new(roles),
            failpoints: config.failpoints.clone(),
            transactions: config.transactions.clone(),
            healthy: Arc::new(AtomicBool::new(true)),
        };
        db.check_role(!set_role).await?;
        Ok(db)
    }

    /// Refuses to serve if request connections could bypass row-level
    /// security, do not run as this database's request role, or (with
    /// `login`) are not logged in as it.
    async fn check_role(&self, login: bool) -> anyhow::Result<()> {
        let (user, session, superuser, bypass): (String, String, bool, bool) = sqlx::query_as(
            "SELECT current_user::text, session_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&self.pool)
        .await
        .context("checking the application role")?;
        anyhow::ensure!(
            !superuser && !bypass,
            "request connections run as {user}, which bypasses row-level security"
        );
        let app = self.roles.app();
        anyhow::ensure!(user == app, "request connections run as {user}, not {app}");
        anyhow::ensure!(
            !login || session == app,
            "request connections log in as {session}, not {app}"
        );
        Ok(())
    }

    /// A pooled connection; within [`FAST_FAIL`] while the database is known
    /// to be down.
    async fn acquire(&self) -> Result<PoolConnection<Postgres>, Error> {
        let conn = if self.healthy.load(Ordering::Relaxed) {
            self.pool.acquire().await
        } else {
            tokio::time::timeout(FAST_FAIL, self.pool.acquire())
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut))
        };
        self.note(conn)
    }

    /// Remembers whether the database answered.
    fn note<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, Error> {
        match result {
            Ok(v) => {
                self.healthy.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                if crate::error::is_unavailable(&e) {
                    self.healthy.store(false, Ordering::Relaxed);
                }
                Err(e.into())
            }
        }
    }

    /// Starts a transaction bound to `caller`: the tenant (and app) settings
    /// that row-level security reads are set for this transaction only.
    pub async fn begin(&self, caller: &Caller) -> Result<TenantTx, Error> {
        self.begin_with(caller, None).await
    }

    /// Starts a write transaction bound to `caller`, recording `write` for
    /// the change feed.
    pub async fn begin_write(
        &self,
        caller: &Caller,
        write: &WriteContext,
    ) -> Result<TenantTx, Error> {
        self.begin_with(caller, Some(write)).await
    }

    async fn begin_with(
        &self,
        caller: &Caller,
        write: Option<&WriteContext>,
    ) -> Result<TenantTx, Error> {
        self.transactions.inc();
        let sql = sqlx::AssertSqlSafe(begin_sql(caller, &self.roles, write)?);
        let conn = self.acquire().await?;
        let tx = self.note(sqlx::Transaction::begin(conn, Some(sql.into_sql_str())).await)?;
        let mut tx = TenantTx {
            tx,
            caller: caller.clone(),
            failpoints: self.failpoints.clone(),
        };
        tx.failpoint("in_transaction").await?;
        Ok(tx)
    }

    /// The one row the statement prepared as `name` (a `get_name` of
    /// `sql::statements`: `$1` tenant, `$2` app, `$3` id, one `text` column) finds
    /// for `caller`: the settings and the read in one message, one round
    /// trip, no explicit transaction to end, no planning.
    pub async fn read_one(
        &self,
        caller: &Caller,
        name: &str,
        id: &RecordId,
    ) -> Result<Option<String>, Error> {
        self.transactions.inc();
        let sql = sqlx::AssertSqlSafe(read_one_sql(caller, &self.roles, name, id)?);
        let mut conn = self.acquire().await?;
        let rows = self.note(sqlx::raw_sql(sql).fetch_all(&mut *conn).await)?;
        // The settings (`SET`) return no rows: any row is the read's.
        match rows.as_slice() {
            [] => Ok(None),
            [row] => Ok(Some(row.try_get::<String, _>(0)?)),
            _ => Err(Error::internal(anyhow::anyhow!(
                "a single-record read returned {} rows",
                rows.len()
            ))),
        }
    }

    /// True when the database answers within `within` (and remembered, for
    /// fast failing).
    pub async fn ping(&self, within: Duration) -> bool {
        let up = tokio::time::timeout(within, sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .is_ok_and(|r| r.is_ok());
        self.healthy.store(up, Ordering::Relaxed);
        up
    }

    /// The test failpoints.
    pub fn failpoints(&self) -> &Failpoints {
        &self.failpoints
    }

    /// Connections open, connections idle, and the maximum.
    pub fn pool_stats(&self) -> (u32, usize, u32) {
        (
            self.pool.size(),
            self.pool.num_idle(),
            self.pool.options().get_max_connections(),
        )
    }

    /// Closes the pool (on shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
