//! Side writes: the changes the server makes to other records as the effect
//! of a write (rollups, exclusive flags, last-activity stamps, back
//! references). They go through one mechanism, so that every one of them
//!
//! - is stamped like a client's write (`version` + 1, `updated_at`,
//!   `updated_by` the writer), and so is seen by optimistic concurrency and
//!   the change feed (whose trigger records every row it touches);
//! - carries its tenant predicate (`<alias>.tenant_id = $1`) itself;
//! - runs across apps ([`TenantTx::across_apps`]): the invariants it keeps
//!   hold over the tenant's records of every app.
//!
//! An entity declares the statement as a `static` [`SideWrite`] (what it
//! sets, over which rows) and runs it with [`apply`], binding its own
//! parameters from `$3`: `$1` is always the tenant and `$2` the writer.

use sqlx::Postgres;
use sqlx::postgres::PgArguments;

use crate::db::TenantTx;
use crate::error::Error;

pub use crate::sql::side_write::SideWrite;

/// A statement under construction by [`apply`]'s caller: its parameters from
/// `$3` on.
pub type Binds = sqlx::query::Query<'static, Postgres, PgArguments>;

/// Runs `write` in `tx` across apps, as the transaction's writer: `$1` the
/// tenant, `$2` the writer's `sub`, then what `bind` adds. Returns the rows
/// written.
pub async fn apply(
    tx: &mut TenantTx,
    write: &'static SideWrite,
    bind: impl FnOnce(Binds) -> Binds,
) -> Result<u64, Error> {
    // Bound values are encoded as they are bound: nothing is kept borrowed.
    let caller = tx.caller();
    let query = bind(
        sqlx::query(sqlx::AssertSqlSafe(write.sql()))
            .bind(caller.tenant_id())
            .bind(caller.sub()),
    );
    tx.across_apps(async |conn| match query.execute(conn).await {
        Ok(done) => Ok(done.rows_affected()),
        Err(e) => {
            let refused = match &e {
                sqlx::Error::Database(d) => d.constraint().and_then(|c| write.refused(c)),
                _ => None,
            };
            Err(refused.unwrap_or_else(|| e.into()))
        }
    })
    .await
}
