//! Creating the database and applying the migrations.

use std::str::FromStr;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};

use super::Roles;

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
