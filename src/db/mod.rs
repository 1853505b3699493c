//! Storage: the connection pools, database creation and migrations, and the
//! tenant-bound transaction ([`TenantTx`]) that is the only way to reach a
//! tenant table. SQL text for the record tables is built in [`sql`].

pub mod distribute;
pub mod sql;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{
    ConnectOptions, Connection, Executor, PgConnection, PgPool, Postgres, Row, SqlSafeStr,
    Transaction,
};

use crate::auth::Caller;
use crate::error::Error;
use crate::failpoint::Failpoints;
use crate::records::fields::RecordId;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// This database's roles (migration 0004), named after the database so that
/// deployments sharing a cluster never share one: requests run as
/// [`Roles::app`] (owns nothing, no BYPASSRLS), integration tokens' requests
/// switch to [`Roles::integration`] (the same rights; their app scope is the
/// `crm.app_id` setting that every table's policy compares). The
/// cluster-wide `crm_app` and `crm_app_integration` of migrations 0001 and
/// 0003 keep no right in a migrated database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roles {
    app: String,
    integration: String,
}

impl Roles {
    /// Both names, checked to be 1 to 63 characters of `[a-z0-9_]`: they are
    /// inlined unquoted in SQL text (`SET ROLE`, `ALTER ROLE`, the
    /// simple-query text of [`Db::begin`]).
    pub fn new(app: impl Into<String>, integration: impl Into<String>) -> anyhow::Result<Self> {
        let (app, integration) = (app.into(), integration.into());
        for name in [&app, &integration] {
            anyhow::ensure!(
                (1..=63).contains(&name.len())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "the role name {name:?} is not 1 to 63 characters of [a-z0-9_]"
            );
        }
        Ok(Self { app, integration })
    }

    /// Reads the names the migrations recorded in the database `conn` is
    /// connected to (`crm_app_role()`, `crm_integration_role()`).
    pub async fn load(conn: &mut PgConnection) -> anyhow::Result<Self> {
        let (app, integration): (String, String) =
            sqlx::query_as("SELECT crm_app_role(), crm_integration_role()")
                .fetch_one(conn)
                .await
                .context(
                    "reading the application roles (crm_app_role(), crm_integration_role())",
                )?;
        Self::new(app, integration)
    }

    /// The role requests run as, and the one `CRM_APP_DATABASE_URL` logs in as.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The role integration tokens' requests switch to.
    pub fn integration(&self) -> &str {
        &self.integration
    }
}

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

/// `s` as a SQL string literal, for the few values inlined into simple-query
/// text (which takes no parameters): only ids of the charset
/// `[A-Za-z0-9._:@-]` (tokens' ids by construction, see `auth`; record ids
/// after `parse_id`), checked again here, so no quoting is ever needed.
fn plain_literal(s: &str) -> Result<String, Error> {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b))
    {
        Ok(format!("'{s}'"))
    } else {
        Err(Error::internal(anyhow::anyhow!(
            "a value outside the id charset reached simple-query text"
        )))
    }
}

/// The statements that set the caller's row-level-security settings for the
/// current transaction: tenant and app (`crm_tenant()`, `crm_app_id()`, read
/// by every table's one policy), and for integration tokens the integration
/// role. `SET LOCAL`, not `set_config()`: Citus propagates `SET LOCAL` to
/// the workers that run a distributed query's shard statements (with
/// `citus.propagate_set_commands = 'local'`), never a function call. `SET`
/// takes no parameters, so the values are inlined: ids of the charset that
/// [`plain_literal`] checks, and a role name of [`Roles`].
fn scope_sql(caller: &Caller, roles: &Roles) -> Result<String, Error> {
    if caller.tenant_id().is_empty() {
        return Err(Error::internal(anyhow::anyhow!(
            "a caller without a tenant"
        )));
    }
    let tenant = plain_literal(caller.tenant_id())?;
    let app = plain_literal(caller.app_id().unwrap_or(""))?;
    let mut sql = format!("SET LOCAL crm.tenant_id = {tenant}; SET LOCAL crm.app_id = {app}");
    if caller.app_id().is_some() {
        sql.push_str("; SET LOCAL ROLE ");
        sql.push_str(roles.integration());
    }
    Ok(sql)
}

/// `s` as a standard SQL string literal (quotes doubled), for the writer's
/// `sub` in simple-query text. Safe because the connections run with
/// `standard_conforming_strings = on` (backslashes are plain characters),
/// and a NUL, which a literal cannot hold, is refused (the authenticator
/// already refuses control characters).
fn quoted_literal(s: &str) -> Result<String, Error> {
    if s.contains('\0') {
        return Err(Error::internal(anyhow::anyhow!(
            "a NUL reached simple-query text"
        )));
    }
    Ok(format!("'{}'", s.replace('\'', "''")))
}

/// What a write transaction records for the change feed (read by the
/// `crm_record_changed` trigger): the writer, its `request_id`, and an id
/// shared by every event of the transaction.
#[derive(Clone, Debug)]
pub struct WriteContext {
    /// The write's `request_id`, if it has one.
    pub request_id: Option<uuid::Uuid>,
    /// Shared by the transaction's change events.
    pub transaction_id: String,
}

impl WriteContext {
    /// A context with a fresh transaction id.
    pub fn new(request_id: Option<uuid::Uuid>) -> Self {
        Self {
            request_id,
            transaction_id: format!("txn_{}", ulid::Ulid::generate()),
        }
    }
}

/// `BEGIN` and the caller's settings (and, for a write, its feed context) as
/// one simple-query message: one round trip instead of two.
fn begin_sql(
    caller: &Caller,
    roles: &Roles,
    write: Option<&WriteContext>,
) -> Result<String, Error> {
    let mut sql = format!("BEGIN; {}", scope_sql(caller, roles)?);
    if let Some(w) = write {
        let request_id = w.request_id.map(|u| u.to_string()).unwrap_or_default();
        sql.push_str(&format!(
            "; SET LOCAL crm.sub = {}; SET LOCAL crm.request_id = {}; \
             SET LOCAL crm.transaction_id = {}",
            quoted_literal(caller.sub())?,
            plain_literal(&request_id)?,
            plain_literal(&w.transaction_id)?,
        ));
    }
    Ok(sql)
}

/// One read as one simple-query message, which Postgres runs as one implicit
/// transaction: the caller's settings, then `EXECUTE` of the statement every
/// connection prepared as `name` (`$1` tenant, `$2` app, `$3` id), its plan
/// cached by Postgres. The id can only be one the id parser made
/// ([`RecordId`]); tenant and app are the authenticator's, checked again by
/// [`plain_literal`]; `name` is a `db::sql` statement name (`[a-z_]`).
fn read_one_sql(
    caller: &Caller,
    roles: &Roles,
    name: &str,
    id: &RecordId,
) -> Result<String, Error> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(Error::internal(anyhow::anyhow!(
            "not a prepared statement's name: {name:?}"
        )));
    }
    let app = match caller.app_id() {
        Some(a) => plain_literal(a)?,
        None => "NULL".into(),
    };
    Ok(format!(
        "{}; EXECUTE {name}({}, {app}, {})",
        scope_sql(caller, roles)?,
        plain_literal(caller.tenant_id())?,
        plain_literal(id.as_str())?
    ))
}

/// Gives this database's request role `app` its login password (on the
/// owner's connection `conn`); no other role is touched, so deployments
/// sharing the cluster keep theirs. Concurrent start-ups of one deployment
/// (several servers) may collide on the role's catalog row; the update is
/// retried.
async fn set_app_password(
    conn: &mut PgConnection,
    app: &str,
    password: &str,
) -> Result<(), sqlx::Error> {
    // ALTER ROLE takes no bind parameters: the name is [a-z0-9_] (Roles), the
    // password hex.
    assert!(password.bytes().all(|b| b.is_ascii_hexdigit()));
    let sql = format!("ALTER ROLE {app} WITH LOGIN PASSWORD '{password}'");
    let mut attempt = 0;
    loop {
        attempt += 1;
        match conn.execute(sqlx::AssertSqlSafe(sql.clone())).await {
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("XX000") && attempt < 10 =>
            {
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            other => return other.map(|_| ()),
        }
    }
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

/// Applies the embedded migrations (`migrations/`) as the owner; returns
/// the database's roles they created.
pub async fn migrate(url: &str) -> anyhow::Result<Roles> {
    let mut conn = PgConnection::connect(url)
        .await
        .context("connecting to run migrations")?;
    sqlx::migrate!("./migrations")
        .run(&mut conn)
        .await
        .context("running migrations")?;
    let roles = Roles::load(&mut conn).await?;
    conn.close().await.ok();
    Ok(roles)
}

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
    /// `db::sql`: `$1` tenant, `$2` app, `$3` id, one `text` column) finds
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

/// A transaction bound to one caller. Every query on a tenant table goes
/// through one, so none can run without a tenant.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    caller: Caller,
    failpoints: Failpoints,
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
            sqlx::raw_sql("SET LOCAL crm.app_id = ''")
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Restores the caller's app scope after [`TenantTx::lift_app_scope`].
    pub async fn restore_app_scope(&mut self) -> Result<(), Error> {
        if let Some(app) = self.caller.app_id() {
            let sql = format!("SET LOCAL crm.app_id = {}", plain_literal(app)?);
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Runs the test failpoint `name` (nothing unless configured).
    pub async fn failpoint(&mut self, name: &str) -> Result<(), Error> {
        self.failpoints.hit(name, &mut self.tx).await
    }

    /// Ends a read-only transaction without a round trip of its own: the
    /// `ROLLBACK` is queued on the connection and goes out with the pool's
    /// check of the connection as it is released (one message), after the
    /// response has left. A read has nothing to commit.
    pub fn end_read(self) {
        drop(self);
    }

    /// Commits (after the `before_commit` failpoint).
    pub async fn commit(mut self) -> Result<(), Error> {
        self.failpoint("before_commit").await?;
        self.tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> Roles {
        Roles::new("crm_app_crm_1a2b3c4d", "crm_int_crm_1a2b3c4d").unwrap()
    }

    #[test]
    fn role_names_are_plain_identifiers() {
        assert!(Roles::new("crm_app_x_0123abcd", "crm_int_x_0123abcd").is_ok());
        for bad in [
            "",
            "Crm_app",
            "crm-app",
            "crm app",
            "crm_app'; DROP ROLE postgres; --",
            "crm_app\"",
            "crm_appé",
        ] {
            assert!(Roles::new(bad, "crm_int_x").is_err(), "{bad:?}");
            assert!(Roles::new("crm_app_x", bad).is_err(), "{bad:?}");
        }
        assert!(Roles::new("a".repeat(64), "crm_int_x").is_err());
    }

    #[test]
    fn begin_sets_the_callers_scope_in_one_message() {
        let roles = roles();
        let person = begin_sql(&Caller::unchecked("acme-1", "u", None), &roles, None).unwrap();
        assert_eq!(
            person,
            "BEGIN; SET LOCAL crm.tenant_id = 'acme-1'; SET LOCAL crm.app_id = ''"
        );
        let app = begin_sql(
            &Caller::unchecked("acme-1", "u", Some("app:x@y.z")),
            &roles,
            None,
        )
        .unwrap();
        assert!(
            app.ends_with(
                "SET LOCAL crm.app_id = 'app:x@y.z'; SET LOCAL ROLE crm_int_crm_1a2b3c4d"
            )
        );
        // Ids the authenticator would never let through are refused here too.
        for (tenant, app) in [
            ("a'b", None),
            ("", None),
            ("ok", Some("x'; DROP TABLE accounts; --")),
            ("a\\b", None),
        ] {
            assert!(
                begin_sql(&Caller::unchecked(tenant, "u", app), &roles, None).is_err(),
                "{tenant:?} {app:?}"
            );
        }
    }

    #[test]
    fn a_write_records_its_context_with_the_writer_quoted() {
        let roles = roles();
        let write = WriteContext {
            request_id: Some(uuid::Uuid::nil()),
            transaction_id: "txn_01HX".into(),
        };
        let sql = begin_sql(
            &Caller::unchecked("acme-1", "O'Brien \\ x", None),
            &roles,
            Some(&write),
        )
        .unwrap();
        assert!(
            sql.ends_with(
                "SET LOCAL crm.sub = 'O''Brien \\ x'; SET LOCAL crm.request_id = \
                 '00000000-0000-0000-0000-000000000000'; SET LOCAL crm.transaction_id = 'txn_01HX'"
            ),
            "{sql}"
        );
        assert!(begin_sql(&Caller::unchecked("t", "a\0b", None), &roles, Some(&write)).is_err());
    }

    #[test]
    fn a_read_is_one_message_with_its_values_inlined() {
        let roles = roles();
        let kind = &crate::entities::account::KIND;
        let id = RecordId::parse(kind, "acc_01arz3ndektsv4rrffq69g5fav").unwrap();
        let person = Caller::unchecked("acme-1", "u", None);
        assert_eq!(
            read_one_sql(&person, &roles, "crm_get_accounts", &id).unwrap(),
            "SET LOCAL crm.tenant_id = 'acme-1'; SET LOCAL crm.app_id = ''; \
             EXECUTE crm_get_accounts('acme-1', NULL, 'acc_01ARZ3NDEKTSV4RRFFQ69G5FAV')"
        );
        let app = Caller::unchecked("acme-1", "u", Some("app-7"));
        assert_eq!(
            read_one_sql(&app, &roles, "crm_get_accounts", &id).unwrap(),
            "SET LOCAL crm.tenant_id = 'acme-1'; SET LOCAL crm.app_id = 'app-7'; \
             SET LOCAL ROLE crm_int_crm_1a2b3c4d; EXECUTE crm_get_accounts('acme-1', 'app-7', 'acc_01ARZ3NDEKTSV4RRFFQ69G5FAV')"
        );
        // Only the parser makes a RecordId: anything else is not one.
        for bad in [
            "acc_1' OR true --",
            "acc_01ARZ3NDEKTSV4RRFFQ69G5FAV'",
            "con_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        ] {
            assert!(RecordId::parse(kind, bad).is_none(), "{bad:?}");
        }
        assert!(read_one_sql(&person, &roles, "x; DROP TABLE accounts", &id).is_err());
    }
}
