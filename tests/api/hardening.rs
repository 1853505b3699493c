//! Hardening: the database role underneath, tenant isolation through a busy
//! pool, resource limits, timeouts, load shedding, and errors that leak
//! nothing.

use std::time::{Duration, Instant};

use crm::proto::*;
use tonic::Code;

use crate::helpers::*;

fn account(name: &str) -> CreateAccountRequest {
    CreateAccountRequest {
        account: Some(Account {
            name: name.into(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

#[tokio::test]
async fn request_connections_log_in_as_the_unprivileged_role() {
    let app = spawn_app().await;
    let mut conn = app.owner_conn().await;
    // The pool's sessions, seen from the owner.
    let t = app.token("tenant-a", "u1");
    app.accounts()
        .list_accounts(authed(&t, ListAccountsRequest::default()))
        .await
        .unwrap();
    let sessions: Vec<(String,)> = sqlx::query_as(
        "SELECT usename::text FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'crm'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(!sessions.is_empty());
    // This database's request role (not the cluster-wide crm_app).
    assert!(app.app_role.starts_with("crm_app_"), "{}", app.app_role);
    assert!(
        sessions.iter().all(|(u,)| *u == app.app_role),
        "{sessions:?} vs {}",
        app.app_role
    );
    // Both roles: no superuser, no BYPASSRLS, own no table; every table
    // forces RLS.
    for role in [&app.app_role, &app.integration_role] {
        let (superuser, bypass): (bool, bool) =
            sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
                .bind(role)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert!(!superuser && !bypass, "{role}");
    }
    let owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner \
         WHERE r.rolname IN ($1, $2, 'crm_app', 'crm_app_integration') AND c.relkind IN ('r', 'p')",
    )
    .bind(&app.app_role)
    .bind(&app.integration_role)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(owned, 0);
    let unprotected: Vec<(String,)> = sqlx::query_as(
        "SELECT relname::text FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' \
         AND relname <> '_sqlx_migrations' AND NOT (relrowsecurity AND relforcerowsecurity)",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        unprotected.is_empty(),
        "tables without forced RLS: {unprotected:?}"
    );
}

#[tokio::test]
async fn logged_in_as_the_app_role_nothing_is_visible_without_a_tenant() {
    use sqlx::{Connection, Executor};
    let app = spawn_app().await;
    let (a, b) = (tenant(), tenant());
    for (t, name) in [(app.token(&a, "u"), "A"), (app.token(&b, "u"), "B")] {
        app.accounts()
            .create_account(authed(&t, account(name)))
            .await
            .unwrap();
    }
    let mut conn = sqlx::PgConnection::connect(&format!(
        "{}/{}",
        pg_base().replacen("postgres@", &format!("{}@", app.app_role), 1),
        app.db_name
    ))
    .await
    .unwrap();
    let who: String = sqlx::query_scalar("SELECT session_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(who, app.app_role);
    for table in [
        "accounts",
        "contacts",
        "deals",
        "activities",
        "quotes",
        "line_items",
        "idempotency_keys",
        "number_sequences",
    ] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table} without a tenant");
    }
    // It cannot make itself the owner or a superuser again.
    assert!(conn.execute("SET ROLE postgres").await.is_err());
    conn.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT set_config('crm.tenant_id', $1, true)")
        .bind(&a)
        .execute(&mut conn)
        .await
        .unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM accounts")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(names, vec!["A"]);
    let moved = sqlx::query("UPDATE accounts SET tenant_id = $1")
        .bind(&b)
        .execute(&mut conn)
        .await;
    assert!(moved.is_err(), "a row cannot be moved to another tenant");
    conn.execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn ten_thousand_requests_alternating_tenants_never_leak() {
    let app = spawn_app_with(|c| c.db_pool_size = 2).await;
    let tenants: Vec<String> = (0..4).map(|_| tenant()).collect();
    let mut ids = Vec::new();
    for t in &tenants {
        let tok = app.token(t, "u");
        ids.push(
            app.accounts()
                .create_account(authed(&tok, account(t)))
                .await
                .unwrap()
                .into_inner()
                .id,
        );
    }
    let mut tasks = Vec::new();
    for worker in 0..20 {
        let (app_c, tenants, ids) = (app.accounts(), tenants.clone(), ids.clone());
        let tokens: Vec<String> = tenants.iter().map(|t| app.token(t, "u")).collect();
        tasks.push(tokio::spawn(async move {
            let mut c = app_c;
            for i in 0..500 {
                let k = (worker + i) % tenants.len();
                if i % 2 == 0 {
                    let r = c
                        .list_accounts(authed(&tokens[k], ListAccountsRequest::default()))
                        .await
                        .unwrap()
                        .into_inner();
                    assert!(
                        r.accounts.iter().all(|a| a.tenant_id == tenants[k]),
                        "leak in list"
                    );
                    assert_eq!(r.accounts.len(), 1);
                } else {
                    // Someone else's id must stay invisible; one's own is found.
                    let other = (k + 1) % tenants.len();
                    let e = c
                        .get_account(authed(
                            &tokens[k],
                            GetAccountRequest {
                                id: ids[other].clone(),
                            },
                        ))
                        .await
                        .unwrap_err();
                    assert_eq!(e.code(), Code::NotFound);
                    let mine = c
                        .get_account(authed(&tokens[k], GetAccountRequest { id: ids[k].clone() }))
                        .await
                        .unwrap()
                        .into_inner();
                    assert_eq!(mine.tenant_id, tenants[k]);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn bad_tokens_do_no_database_work() {
    let app = spawn_app().await;
    let before = app.metric("crm_db_transactions_total").await;
    let forged = crm::auth::mint(
        b"another-secret-another-secret-another",
        "tenant-a",
        "u1",
        None,
        60,
        None,
        None,
    )
    .unwrap();
    for _ in 0..20 {
        let e = app
            .accounts()
            .create_account(authed(&forged, account("x")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let (status, _, _) = app.rest("GET", "/api/v1/crm/accounts", None, None).await;
        assert_eq!(status, 401);
    }
    let after = app.metric("crm_db_transactions_total").await;
    assert_eq!(before, after);
    // A good token does count.
    let t = app.token("tenant-a", "u1");
    app.accounts()
        .list_accounts(authed(&t, ListAccountsRequest::default()))
        .await
        .unwrap();
    assert!(app.metric("crm_db_transactions_total").await > after);
}

#[tokio::test]
async fn oversized_messages_are_refused_both_ways() {
    let app = spawn_app_with(|c| {
        c.max_request_bytes = 64 * 1024;
        c.max_response_bytes = 256 * 1024;
    })
    .await;
    let t = app.token("tenant-a", "u1");
    let big = CreateAccountRequest {
        account: Some(Account {
            name: "x".into(),
            description: "y".repeat(100 * 1024),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let e = app
        .accounts()
        .create_account(authed(&t, big))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert_status(&e, Code::OutOfRange, "MESSAGE_TOO_LARGE");
    let (status, _, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts",
            Some(&t),
            Some(serde_json::json!({"name": "x", "description": "y".repeat(100 * 1024)})),
        )
        .await;
    assert_eq!(status, 413);
    // Responses too: 8 accounts of ~40 KiB exceed 256 KiB as one page.
    for i in 0..8 {
        let a = CreateAccountRequest {
            account: Some(Account {
                name: format!("a{i}"),
                description: "z".repeat(40 * 1024),
                ..Default::default()
            }),
            request_id: String::new(),
        };
        app.accounts().create_account(authed(&t, a)).await.unwrap();
    }
    let e = app
        .accounts()
        .list_accounts(authed(&t, ListAccountsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    let ok = app
        .accounts()
        .list_accounts(authed(
            &t,
            ListAccountsRequest {
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(ok.into_inner().accounts.len(), 2);
}

#[tokio::test]
async fn slow_requests_end_at_the_deadline_and_release_their_transaction() {
    let app = spawn_app_with(|c| {
        c.request_timeout_secs = 1;
        c.failpoints = "in_transaction=sleep(3000)".into();
    })
    .await;
    let t = app.token("tenant-a", "u1");
    let started = Instant::now();
    let e = app
        .accounts()
        .create_account(authed(&t, account("slow")))
        .await
        .unwrap_err();
    assert_status(&e, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // A shorter client deadline wins.
    let mut r = authed(&t, account("slow"));
    r.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let e = app.accounts().create_account(r).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{e:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    // Nothing was written, and no transaction stays open.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut conn = app.owner_conn().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(open, 0);
}

#[tokio::test]
async fn statements_past_the_timeout_are_cancelled_by_postgres() {
    let app = spawn_app_with(|c| {
        c.db_statement_timeout_ms = 200;
        c.failpoints = "in_transaction=sql_sleep(2000)".into();
    })
    .await;
    let t = app.token("tenant-a", "u1");
    let started = Instant::now();
    let e = app
        .accounts()
        .list_accounts(authed(&t, ListAccountsRequest::default()))
        .await
        .unwrap_err();
    assert_status(&e, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
    assert!(started.elapsed() < Duration::from_millis(1500));
    let (status, _, _) = app
        .rest("GET", "/api/v1/crm/accounts", Some(&t), None)
        .await;
    assert_eq!(status, 504);
}

#[tokio::test]
async fn over_the_concurrency_limit_requests_are_refused_at_once() {
    let app = spawn_app_with(|c| {
        c.max_concurrent_requests = 2;
        c.failpoints = "in_transaction=sleep(1500)".into();
    })
    .await;
    let t = app.token("tenant-a", "u1");
    let mut slow = Vec::new();
    for _ in 0..2 {
        let (mut c, t) = (app.accounts(), t.clone());
        slow.push(tokio::spawn(async move {
            c.list_accounts(authed(&t, ListAccountsRequest::default()))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let e = app
        .accounts()
        .list_accounts(authed(&t, ListAccountsRequest::default()))
        .await
        .unwrap_err();
    assert_status(&e, Code::ResourceExhausted, "SERVER_BUSY");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "shed fast, not queued: {:?}",
        started.elapsed()
    );
    let (status, _, _) = app
        .rest("GET", "/api/v1/crm/accounts", Some(&t), None)
        .await;
    assert_eq!(status, 429);
    for s in slow {
        assert!(s.await.unwrap().is_ok(), "admitted requests complete");
    }
    // Health and reflection are never shed.
    let mut h = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    h.check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn panics_and_database_errors_leak_nothing() {
    let app = spawn_app_with(|c| c.failpoints = "in_transaction=panic".into()).await;
    let t = app.token("tenant-a", "u1");
    let e = app
        .accounts()
        .list_accounts(authed(&t, ListAccountsRequest::default()))
        .await
        .unwrap_err();
    assert_status(&e, Code::Internal, "INTERNAL_ERROR");
    assert!(
        !e.message().contains("failpoint") && !e.message().contains("panic"),
        "{}",
        e.message()
    );
    let info = tonic_types::StatusExt::get_details_error_info(&e).unwrap();
    assert!(info.metadata.contains_key("request_id"));
    // The server is still serving.
    let (status, body, _) = app
        .rest("GET", "/api/v1/crm/accounts", Some(&t), None)
        .await;
    assert_eq!(status, 500);
    assert!(!body.to_string().contains("panic"));
    let mut h = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    h.check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    })
    .await
    .unwrap();

    let app = spawn_app_with(|c| c.failpoints = "in_transaction=sql_error".into()).await;
    let e = app
        .accounts()
        .list_accounts(authed(&t, ListAccountsRequest::default()))
        .await
        .unwrap_err();
    assert_status(&e, Code::Internal, "INTERNAL_ERROR");
    let text = format!("{e:?}");
    assert!(
        !text.contains("failpoint_no_such_table")
            && !text.contains("SELECT")
            && !text.contains("relation"),
        "{text}"
    );
}

#[tokio::test]
async fn huge_pages_and_filters_are_bounded() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    for i in 0..3 {
        app.accounts()
            .create_account(authed(&t, account(&format!("a{i}"))))
            .await
            .unwrap();
    }
    let r = app
        .accounts()
        .list_accounts(authed(
            &t,
            ListAccountsRequest {
                page_size: 1_000_000,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.accounts.len(),
        3,
        "a page_size over 1000 is coerced, not refused"
    );
    // A 10,000-clause filter is refused before any database work.
    let before = app.metric("crm_db_transactions_total").await;
    let huge = vec!["name = \"x\""; 10_000].join(" OR ");
    let e = app
        .accounts()
        .list_accounts(authed(
            &t,
            ListAccountsRequest {
                filter: huge,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["filter"]);
    assert_eq!(before, app.metric("crm_db_transactions_total").await);
    // Within the length limit, the clause limit holds.
    let many = vec!["a = 1"; 41].join(" OR ");
    let e = app
        .accounts()
        .list_accounts(authed(
            &t,
            ListAccountsRequest {
                filter: many,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("more than 40 restrictions"),
        "{}",
        e.message()
    );
    let deep = format!("{}name = \"x\"{}", "(".repeat(13), ")".repeat(13));
    let e = app
        .accounts()
        .list_accounts(authed(
            &t,
            ListAccountsRequest {
                filter: deep,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("nested more than 12"),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn a_cancelled_statement_leaves_nothing_running() {
    let app = spawn_app_with(|c| {
        c.db_statement_timeout_ms = 300;
        c.failpoints = "in_transaction=sql_sleep(5000)".into();
    })
    .await;
    let t = app.token("tenant-a", "u1");
    let e = app
        .accounts()
        .list_accounts(authed(&t, ListAccountsRequest::default()))
        .await
        .unwrap_err();
    assert_status(&e, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
    let mut conn = app.owner_conn().await;
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND query LIKE '%pg_sleep%' AND state = 'active' AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(running, 0, "Postgres cancelled the statement itself");
}
