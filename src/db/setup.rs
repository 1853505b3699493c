//! Creating the database and applying the migrations.

use std::str::FromStr;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};

use super::Roles;

/// The name of the database `url` names, refusing a URL that names none
/// (Postgres would pick the user's name, usually `postgres`) or a database
/// the cluster itself uses: crm's migrations create roles, policies and
/// LEAKPROOF marks that belong in a database of its own.
pub fn database_name(url: &str) -> anyhow::Result<String> {
    let options = PgConnectOptions::from_str(url).context("parsing DATABASE_URL")?;
    match options.get_database() {
        None | Some("") => anyhow::bail!(
            "DATABASE_URL names no database ({}): add one of crm's own, e.g. …:5432/crm",
            redacted(url)
        ),
        Some(name @ ("postgres" | "template0" | "template1")) => anyhow::bail!(
            "DATABASE_URL names the cluster's own database \"{name}\": give crm a database of \
             its own, e.g. …:5432/crm (it is created on start)"
        ),
        Some(name) => Ok(name.to_owned()),
    }
}

/// `url` without its password, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Creates the database named in `url` when it does not exist.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let name = database_name(url)?;
    let options = PgConnectOptions::from_str(url).context("parsing DATABASE_URL")?;
    let server = format!("{}:{}", options.get_host(), options.get_port());
    let mut conn = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at {server} (DATABASE_URL {}); is it running? \
                 `crm serve --dev` starts a private one when PostgreSQL is installed",
                redacted(url)
            )
        })?;
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
    database_name(url)?;
    let mut conn = PgConnection::connect(url)
        .await
        .context("connecting to run migrations")?;
    sqlx::migrate!("./migrations")
        .run(&mut conn)
        .await
        .context(
            "running migrations (they need the pg_trgm and unaccent extensions: on Debian/Ubuntu \
             the postgresql-contrib package)",
        )?;
    let roles = Roles::load(&mut conn).await?;
    conn.close().await.ok();
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_must_name_a_database_of_its_own() {
        assert_eq!(database_name("postgres://u@h:5432/crm").unwrap(), "crm");
        for url in [
            "postgres://postgres@127.0.0.1:5432",
            "postgres://postgres@127.0.0.1:5432/",
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://u:secret@h/template1",
        ] {
            let e = database_name(url).unwrap_err().to_string();
            assert!(e.contains("DATABASE_URL"), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
