//! Deployments sharing a cluster: each database has roles of its own
//! (migration 0004), a deployment's start-up touches only its own, and
//! another deployment's credentials open nothing. The legacy cluster-wide
//! `crm_app` / `crm_app_integration` keep no right in a migrated database.

use std::time::Duration;

use crm::proto::*;
use sqlx::{Connection, PgConnection};

use crate::cluster::PrivatePg;
use crate::helpers::*;

/// The tables of a migrated database.
const TABLES: [&str; 8] = [
    "accounts",
    "contacts",
    "deals",
    "activities",
    "quotes",
    "line_items",
    "number_sequences",
    "idempotency_keys",
];

/// The SQLSTATE of a failed connection attempt, with its message.
fn refused(result: Result<PgConnection, sqlx::Error>) -> (String, String) {
    match result {
        Ok(_) => panic!("the connection was accepted"),
        Err(sqlx::Error::Database(e)) => (
            e.code().map(|c| c.into_owned()).unwrap_or_default(),
            e.message().to_owned(),
        ),
        Err(e) => panic!("not a database error: {e:?}"),
    }
}

/// The name migration 0004 derives from the database's name.
async fn expected_suffix(conn: &mut PgConnection, db: &str) -> String {
    let hash: String = sqlx::query_scalar("SELECT left(md5($1), 8)")
        .bind(db)
        .fetch_one(conn)
        .await
        .unwrap();
    let name: String = db
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    format!("{name}_{hash}")
}

#[tokio::test]
async fn each_database_has_roles_of_its_own_and_the_legacy_roles_none() {
    let (a, b) = (spawn_app().await, spawn_app().await);
    assert_ne!(a.app_role, b.app_role);
    assert_ne!(a.integration_role, b.integration_role);
    for app in [&a, &b] {
        let mut conn = app.owner_conn().await;
        let suffix = expected_suffix(&mut conn, &app.db_name).await;
        assert_eq!(app.app_role, format!("crm_app_{suffix}"));
        assert_eq!(app.integration_role, format!("crm_int_{suffix}"));
        assert!(app.app_role.len() <= 63);
        let other = if app.db_name == a.db_name { &b } else { &a };

        // The legacy roles and the other database's roles: no table, schema,
        // function or database privilege here, no policy.
        let foreign = [
            "crm_app",
            "crm_app_integration",
            other.app_role.as_str(),
            other.integration_role.as_str(),
        ];
        for role in foreign {
            for table in TABLES {
                let any: bool = sqlx::query_scalar(
                    "SELECT has_table_privilege($1, $2, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')",
                )
                .bind(role)
                .bind(table)
                .fetch_one(&mut conn)
                .await
                .unwrap();
                assert!(!any, "{role} has a privilege on {table} in {}", app.db_name);
            }
            let connect: bool = sqlx::query_scalar(
                "SELECT has_database_privilege($1, current_database(), 'CONNECT')",
            )
            .bind(role)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            assert!(!connect, "{role} may connect to {}", app.db_name);
            let acl_entries: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM ( \
                   SELECT (aclexplode(relacl)).grantee FROM pg_class \
                   UNION ALL SELECT (aclexplode(nspacl)).grantee FROM pg_namespace \
                   UNION ALL SELECT (aclexplode(proacl)).grantee FROM pg_proc \
                   UNION ALL SELECT (aclexplode(datacl)).grantee FROM pg_database WHERE datname = current_database() \
                 ) g JOIN pg_roles r ON r.oid = g.grantee WHERE r.rolname = $1",
            )
            .bind(role)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            assert_eq!(acl_entries, 0, "{role} in {}", app.db_name);
            let policies: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_policy p JOIN pg_roles r ON r.oid = ANY (p.polroles) WHERE r.rolname = $1",
            )
            .bind(role)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            assert_eq!(policies, 0, "{role} in {}", app.db_name);
        }
        // This database's roles: what requests need, nothing more.
        for role in [&app.app_role, &app.integration_role] {
            for table in TABLES {
                let (rw, delete): (bool, bool) = sqlx::query_as(
                    "SELECT has_table_privilege($1, $2, 'SELECT'), has_table_privilege($1, $2, 'DELETE')",
                )
                .bind(role)
                .bind(table)
                .fetch_one(&mut conn)
                .await
                .unwrap();
                assert!(rw && !delete, "{role} on {table}");
            }
        }

        // Logins (the shared cluster trusts every TCP login, so only the
        // CONNECT privilege stands in the way): the legacy role and the other
        // database's request role are refused, this database's admitted.
        for role in ["crm_app", other.app_role.as_str()] {
            let (code, message) = refused(
                PgConnection::connect(&format!(
                    "{}/{}",
                    pg_base().replacen("postgres@", &format!("{role}@"), 1),
                    app.db_name
                ))
                .await,
            );
            assert_eq!(code, "42501", "{role}: {message}");
            assert_eq!(
                message,
                format!("permission denied for database \"{}\"", app.db_name)
            );
        }
        let mut own = PgConnection::connect(&format!(
            "{}/{}",
            pg_base().replacen("postgres@", &format!("{}@", app.app_role), 1),
            app.db_name
        ))
        .await
        .unwrap();
        let who: String = sqlx::query_scalar("SELECT session_user::text")
            .fetch_one(&mut own)
            .await
            .unwrap();
        assert_eq!(who, app.app_role);
    }
}

/// Creates an account through `app` and reads it back: the request
/// connections work.
async fn create_and_get(app: &TestApp, token: &str, name: &str) {
    let created = app
        .accounts()
        .create_account(authed(
            token,
            CreateAccountRequest {
                account: Some(Account {
                    name: name.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_or_else(|s| panic!("create in {}: {s:?}", app.db_name))
        .into_inner();
    let got = app
        .accounts()
        .get_account(authed(token, GetAccountRequest { id: created.id }))
        .await
        .unwrap_or_else(|s| panic!("get in {}: {s:?}", app.db_name))
        .into_inner();
    assert_eq!(got.name, name);
}

/// The stored password (a SCRAM verifier) of `role`.
async fn verifier(conn: &mut PgConnection, role: &str) -> String {
    sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(role)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// The users of `app`'s request connections.
async fn sessions(conn: &mut PgConnection, app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT usename::text FROM pg_stat_activity WHERE datname = $1 AND application_name = 'crm'",
    )
    .bind(&app.db_name)
    .fetch_all(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn deployments_sharing_a_password_cluster_keep_their_own_credentials() {
    const SECRET_A: &str = "deployment-a-secret-deployment-a-secret-0001";
    const SECRET_B: &str = "deployment-b-secret-deployment-b-secret-0002";
    let pg = PrivatePg::start_with_password("Cluster0Superuser0Password");

    // Deployment A serves.
    let a = spawn_app_with(|c| {
        c.base.database_url = pg.url("deploy_a");
        c.jwt.secret = Some(SECRET_A.into());
    })
    .await;
    let token_a = a.token(&tenant(), "u");
    create_and_get(&a, &token_a, "A1").await;
    let mut owner = a.owner_conn().await;
    let a_verifier = verifier(&mut owner, &a.app_role).await;
    assert!(a_verifier.starts_with("SCRAM-SHA-256$"), "{a_verifier}");

    // Deployment B starts on the same cluster, with another secret.
    let b = spawn_app_with(|c| {
        c.base.database_url = pg.url("deploy_b");
        c.jwt.secret = Some(SECRET_B.into());
    })
    .await;
    assert_ne!(a.app_role, b.app_role);
    assert_eq!(
        verifier(&mut owner, &a.app_role).await,
        a_verifier,
        "B's start-up changed A's password"
    );

    // A's request connections log in again (as after a restart of the
    // database or a pool turnover): with A's password, still valid.
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'deploy_a' AND application_name = 'crm'",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap();
    assert!(!ended.is_empty() && ended.iter().all(|e| *e));
    // Idle connections are pinged (and the dead ones replaced) after 1 s; the
    // health watcher does the same every second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    create_and_get(&a, &token_a, "A2").await;
    let users = sessions(&mut owner, &a).await;
    assert!(
        !users.is_empty() && users.iter().all(|u| *u == a.app_role),
        "{users:?}"
    );
    create_and_get(&b, &b.token(&tenant(), "u"), "B1").await;

    // B's request role, with B's password, cannot reach A's data: it may not
    // even connect to A's database.
    let password_a = crm::app::app_password(SECRET_A);
    let password_b = crm::app::app_password(SECRET_B);
    assert_ne!(password_a, password_b);
    let (code, message) =
        refused(PgConnection::connect(&pg.url_as(&b.app_role, &password_b, "deploy_a")).await);
    assert_eq!(code, "42501", "{message}");
    assert_eq!(message, "permission denied for database \"deploy_a\"");
    // (The password itself is right: it opens B's database.)
    let mut conn = PgConnection::connect(&pg.url_as(&b.app_role, &password_b, "deploy_b"))
        .await
        .unwrap();
    let who: String = sqlx::query_scalar("SELECT session_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(who, b.app_role);
    conn.close().await.unwrap();

    // A's role logs in to A's database with A's password, not with B's.
    let mut conn = PgConnection::connect(&pg.url_as(&a.app_role, &password_a, "deploy_a"))
        .await
        .unwrap();
    let who: String = sqlx::query_scalar("SELECT session_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(who, a.app_role);
    conn.close().await.unwrap();
    let (code, message) =
        refused(PgConnection::connect(&pg.url_as(&a.app_role, &password_b, "deploy_a")).await);
    assert_eq!(code, "28P01", "{message}");

    // The legacy cluster-wide role, given a password by someone (a deployment
    // of an older version would): it opens neither database.
    sqlx::query("ALTER ROLE crm_app WITH LOGIN PASSWORD 'Legacy0Password'")
        .execute(&mut owner)
        .await
        .unwrap();
    for db in ["deploy_a", "deploy_b"] {
        let (code, message) =
            refused(PgConnection::connect(&pg.url_as("crm_app", "Legacy0Password", db)).await);
        assert_eq!(code, "42501", "{db}: {message}");
    }

    // Both deployments still serve.
    create_and_get(&a, &token_a, "A3").await;
    create_and_get(&b, &b.token(&tenant(), "u"), "B2").await;
    owner.close().await.ok();
    drop((a, b));
}
