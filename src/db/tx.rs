//! The tenant-bound transaction: the only way to reach a tenant table.

use sqlx::{PgConnection, Postgres, Transaction};

use crate::auth::Caller;
use crate::error::Error;
use crate::failpoint::Failpoints;
use crate::sql::session::{LIFT_APP_SCOPE, app_scope_sql};

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

/// A transaction bound to one caller. Every query on a tenant table goes
/// through one, so none can run without a tenant.
pub struct TenantTx {
    pub(super) tx: Transaction<'static, Postgres>,
    pub(super) caller: Caller,
    pub(super) failpoints: Failpoints,
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

    /// Runs `f` on the transaction's connection with an integration token's
    /// app scope lifted, leaving only the tenant's: for what the server keeps
    /// across the records of every app (rollups, exclusive flags, counters,
    /// the checks those need). The scope is restored when `f` succeeds; when
    /// it fails, the transaction is abandoned anyway. For a person's token
    /// (no app scope) it only runs `f`.
    pub async fn across_apps<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut PgConnection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let Some(app) = self.caller.app_id() else {
            return f(&mut self.tx).await;
        };
        let restore = app_scope_sql(app)?;
        sqlx::raw_sql(LIFT_APP_SCOPE).execute(&mut *self.tx).await?;
        let out = f(&mut self.tx).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(restore))
            .execute(&mut *self.tx)
            .await?;
        Ok(out)
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
