//! This database's roles and the request role's password.

use std::time::Duration;

use anyhow::Context;
use sqlx::{Executor, PgConnection};

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

/// Gives this database's request role `app` its login password (on the
/// owner's connection `conn`); no other role is touched, so deployments
/// sharing the cluster keep theirs. Concurrent start-ups of one deployment
/// (several servers) may collide on the role's catalog row; the update is
/// retried.
pub(super) async fn set_app_password(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
