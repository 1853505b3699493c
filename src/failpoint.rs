//! Failpoints for tests of timeouts, crashes and shutdown: named places in
//! the request path where a configured action runs. Configured only through
//! `CRM_FAILPOINTS` (e.g. `before_commit=sleep(2000)`,
//! `in_transaction=panic`), per server; with none configured a check is one
//! `Option` test. Never set it in production.
//!
//! Actions: `sleep(ms)` (an async sleep), `sql_sleep(ms)` (a `pg_sleep` in
//! the transaction, to trip `statement_timeout`), `panic`, `sql_error`
//! (an invalid statement).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgConnection;

use crate::error::Error;

/// What a failpoint does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Sleep this long.
    Sleep(Duration),
    /// `SELECT pg_sleep(…)` in the transaction.
    SqlSleep(Duration),
    /// Panic.
    Panic,
    /// Run an invalid statement.
    SqlError,
}

/// Parses `name=action[,name=action…]`.
pub fn parse(spec: &str) -> Result<HashMap<String, Action>, String> {
    let mut out = HashMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, action) = item
            .split_once('=')
            .ok_or_else(|| format!("failpoint {item:?}: expected name=action"))?;
        let ms = |a: &str, prefix: &str| -> Result<Duration, String> {
            a.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|n| n.parse().ok())
                .map(Duration::from_millis)
                .ok_or_else(|| format!("failpoint {item:?}: bad duration"))
        };
        let action = match action {
            "panic" => Action::Panic,
            "sql_error" => Action::SqlError,
            a if a.starts_with("sleep(") => Action::Sleep(ms(a, "sleep(")?),
            a if a.starts_with("sql_sleep(") => Action::SqlSleep(ms(a, "sql_sleep(")?),
            a => return Err(format!("failpoint {item:?}: unknown action {a:?}")),
        };
        out.insert(name.to_owned(), action);
    }
    Ok(out)
}

/// The failpoints of one server (none by default).
#[derive(Clone, Debug, Default)]
pub struct Failpoints(Option<Arc<HashMap<String, Action>>>);

impl Failpoints {
    /// Failpoints from `CRM_FAILPOINTS` syntax; empty means none.
    pub fn from_spec(spec: &str) -> Result<Self, String> {
        let points = parse(spec)?;
        if points.is_empty() {
            return Ok(Self(None));
        }
        tracing::warn!(%spec, "FAILPOINTS ACTIVE: for tests only");
        Ok(Self(Some(Arc::new(points))))
    }

    /// Runs the failpoint `name`, if configured, outside any transaction:
    /// sleeps and panics; the SQL actions need [`Failpoints::hit`].
    pub async fn pause(&self, name: &str) {
        match self.0.as_ref().and_then(|p| p.get(name)) {
            Some(Action::Sleep(d)) => tokio::time::sleep(*d).await,
            Some(Action::Panic) => panic!("failpoint {name}"),
            _ => {}
        }
    }

    /// Runs the failpoint `name`, if configured, on `conn` (inside the
    /// request's transaction).
    pub async fn hit(&self, name: &str, conn: &mut PgConnection) -> Result<(), Error> {
        let Some(action) = self.0.as_ref().and_then(|p| p.get(name)) else {
            return Ok(());
        };
        match action {
            Action::Sleep(d) => tokio::time::sleep(*d).await,
            Action::SqlSleep(d) => {
                sqlx::query("SELECT pg_sleep($1)")
                    .bind(d.as_secs_f64())
                    .execute(&mut *conn)
                    .await?;
            }
            Action::Panic => panic!("failpoint {name}"),
            Action::SqlError => {
                sqlx::query("SELECT * FROM failpoint_no_such_table")
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let p = parse("before_commit=sleep(250), in_transaction=panic,x=sql_sleep(10),y=sql_error")
            .unwrap();
        assert_eq!(
            p["before_commit"],
            Action::Sleep(Duration::from_millis(250))
        );
        assert_eq!(p["in_transaction"], Action::Panic);
        assert_eq!(p["x"], Action::SqlSleep(Duration::from_millis(10)));
        assert_eq!(p["y"], Action::SqlError);
        assert!(parse("a=explode").is_err());
        assert!(parse("a").is_err());
        assert!(parse("a=sleep(x)").is_err());
        assert!(parse("").unwrap().is_empty());
    }
}
