//! Reliability: no lost updates, idempotent retries (also across a crash),
//! database outages, graceful shutdown, and what the service tells operators.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crm::proto::account_service_client::AccountServiceClient;
use crm::proto::*;
use tonic::Code;
use tonic::transport::Channel;

use crate::cluster::PrivatePg;
use crate::helpers::*;

#[tokio::test]
async fn fifty_clients_times_two_hundred_increments_lose_nothing() {
    let app = spawn_app_with(|c| c.db_pool_size = 16).await;
    let t = app.token("tenant-a", "u1");
    let a = app
        .accounts()
        .create_account(authed(
            &t,
            CreateAccountRequest {
                account: Some(Account {
                    name: "Counter".into(),
                    employee_count: Some(0),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut tasks = Vec::new();
    for worker in 0..50u64 {
        let (mut c, t, id) = (app.accounts(), t.clone(), a.id.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut streak) = (0u32, 0u32);
            let mut rng =
                0x9e37_79b9_7f4a_7c15u64 ^ (worker + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            while ok < 200 {
                let cur = c
                    .get_account(authed(&t, GetAccountRequest { id: id.clone() }))
                    .await
                    .unwrap()
                    .into_inner();
                let next = Account {
                    id: id.clone(),
                    version: cur.version,
                    employee_count: Some(cur.employee_count.unwrap() + 1),
                    ..Default::default()
                };
                let update = UpdateAccountRequest {
                    account: Some(next),
                    update_mask: None,
                    request_id: String::new(),
                };
                match c.update_account(authed(&t, update)).await {
                    Ok(_) => {
                        ok += 1;
                        streak = 0;
                    }
                    Err(s) => {
                        assert_eq!(
                            s.code(),
                            Code::Aborted,
                            "only version conflicts, never 5xx: {s:?}"
                        );
                        // Exponential backoff with full jitter, as a
                        // well-behaved client retries a conflict.
                        streak += 1;
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let cap_ms = 1u64 << streak.min(9);
                        tokio::time::sleep(Duration::from_micros(rng % (cap_ms * 1000))).await;
                    }
                }
            }
            ok
        }));
    }
    let mut succeeded = 0;
    for task in tasks {
        succeeded += task.await.unwrap();
    }
    let end = app
        .accounts()
        .get_account(authed(&t, GetAccountRequest { id: a.id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(succeeded, 10_000);
    assert_eq!(
        end.employee_count,
        Some(10_000),
        "final value = successful writes"
    );
    assert_eq!(end.version, 10_001, "version - 1 = successful writes");
}

#[tokio::test]
async fn request_id_is_idempotent_on_every_entity_and_write() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let acc = app.account(&t, "Acme").await;
    let rid = || uuid::Uuid::from_u128(ulid::Ulid::generate().0).to_string();
    let (r1, r2, r3) = (rid(), rid(), rid());

    // Create, update and delete of contacts, deals, quotes, line items; create of activities.
    macro_rules! twice {
        ($client:expr, $method:ident, $req:expr) => {{
            let req = $req;
            let a = $client
                .$method(authed(&t, req.clone()))
                .await
                .unwrap()
                .into_inner();
            let b = $client
                .$method(authed(&t, req.clone()))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(a, b, "a retry returns the first response");
            a
        }};
    }
    let mut contacts = app.contacts();
    let c = twice!(
        contacts,
        create_contact,
        CreateContactRequest {
            contact: Some(Contact {
                account_id: acc.id.clone(),
                first_name: "Ada".into(),
                ..Default::default()
            }),
            request_id: r1.clone()
        }
    );
    twice!(
        contacts,
        update_contact,
        UpdateContactRequest {
            contact: Some(Contact {
                id: c.id.clone(),
                job_title: "CTO".into(),
                ..Default::default()
            }),
            update_mask: None,
            request_id: r2.clone()
        }
    );
    let d = twice!(
        contacts,
        delete_contact,
        DeleteContactRequest {
            id: c.id.clone(),
            version: 0,
            request_id: r3.clone()
        }
    );
    assert_eq!(d.version, 3, "one update and one delete, not two of each");

    let mut deals = app.deals();
    let deal = twice!(
        deals,
        create_deal,
        CreateDealRequest {
            deal: Some(Deal {
                account_id: acc.id.clone(),
                name: "D".into(),
                ..Default::default()
            }),
            request_id: rid()
        }
    );
    assert!(deal.deal_number.ends_with("00001"), "one number consumed");
    twice!(
        deals,
        update_deal,
        UpdateDealRequest {
            deal: Some(Deal {
                id: deal.id.clone(),
                stage: "proposal".into(),
                ..Default::default()
            }),
            update_mask: None,
            request_id: rid()
        }
    );
    let mut quotes = app.quotes();
    let q = twice!(
        quotes,
        create_quote,
        CreateQuoteRequest {
            quote: Some(Quote {
                account_id: acc.id.clone(),
                deal_id: deal.id.clone(),
                ..Default::default()
            }),
            request_id: rid()
        }
    );
    let mut lines = app.line_items();
    let l = twice!(
        lines,
        create_line_item,
        CreateLineItemRequest {
            line_item: Some(LineItem {
                quote_id: q.id.clone(),
                quantity: Some(2.0),
                unit_price: Some(5.0),
                ..Default::default()
            }),
            request_id: rid()
        }
    );
    twice!(
        lines,
        update_line_item,
        UpdateLineItemRequest {
            line_item: Some(LineItem {
                id: l.id.clone(),
                quantity: Some(3.0),
                ..Default::default()
            }),
            update_mask: None,
            request_id: rid()
        }
    );
    twice!(
        lines,
        delete_line_item,
        DeleteLineItemRequest {
            id: l.id.clone(),
            version: 0,
            request_id: rid()
        }
    );
    let quote = quotes
        .get_quote(authed(&t, GetQuoteRequest { id: q.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        quote.version,
        q.version + 3,
        "three line item writes, each rolled up once"
    );
    let mut acts = app.activities();
    twice!(
        acts,
        create_activity,
        CreateActivityRequest {
            activity: Some(Activity {
                account_id: acc.id.clone(),
                r#type: "note".into(),
                ..Default::default()
            }),
            request_id: rid()
        }
    );
    let all = acts
        .list_activities(authed(&t, ListActivitiesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.activities.len(), 1);
    let deal_now = deals
        .get_deal(authed(
            &t,
            GetDealRequest {
                id: deal.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deal_now.audit_log.len(), 1);
}

/// A `crm serve` process on the shared Postgres, with its own database.
pub struct Process {
    child: Child,
    pub grpc: String,
    pub http: String,
}

impl Process {
    pub fn start(db: &str, extra: &[(&str, &str)]) -> Self {
        crm::net::install_tls_provider();
        let (gp, hp) = (free_port(), free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crm"));
        cmd.arg("serve")
            .env("DATABASE_URL", format!("{}/{db}", pg_base()))
            .env("CRM_GRPC_ADDR", format!("127.0.0.1:{gp}"))
            .env("CRM_HTTP_ADDR", format!("127.0.0.1:{hp}"))
            .env("CRM_JWT_SECRET", SECRET)
            .env("CRM_HEALTH_INTERVAL_SECS", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("crm binary");
        Self {
            child,
            grpc: format!("http://127.0.0.1:{gp}"),
            http: format!("http://127.0.0.1:{hp}"),
        }
    }

    pub async fn ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client
                .get(format!("{}/readyz", self.http))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("crm did not become ready");
    }

    async fn accounts(&self) -> AccountServiceClient<Channel> {
        AccountServiceClient::new(
            Channel::from_shared(self.grpc.clone())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        )
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct ScratchDb(pub String);
impl ScratchDb {
    pub fn new() -> Self {
        Self(format!(
            "crm_test_{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        ))
    }
}
impl Drop for ScratchDb {
    fn drop(&mut self) {
        let name = self.0.clone();
        std::thread::spawn(move || {
            // The database's roles (migration 0004), if it got that far:
            // roles are cluster-wide and would outlive it.
            let roles = Command::new("psql")
                .arg(format!("{}/{name}", pg_base()))
                .args(["-tAc", "SELECT array_to_string(crm_roles(), ',')"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            let _ = Command::new("psql")
                .arg(format!("{}/postgres", pg_base()))
                .args([
                    "-qc",
                    &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                ])
                .output();
            // Inlined: the names are [a-z0-9_] (checked again here).
            if !roles.is_empty()
                && roles
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_,".contains(&b))
            {
                let _ = Command::new("psql")
                    .arg(format!("{}/postgres", pg_base()))
                    .args(["-qc", &format!("DROP ROLE IF EXISTS {roles}")])
                    .output();
            }
        })
        .join()
        .ok();
    }
}

async fn count(db: &str, sql: &str) -> i64 {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&format!("{}/{db}", pg_base()))
        .await
        .unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_after_a_crash_mid_write_writes_exactly_once() {
    let db = ScratchDb::new();
    let token =
        crm::auth::mint(SECRET.as_bytes(), "tenant-k", "u1", None, 3600, None, None).unwrap();
    // Set up a quote with a normal server.
    let quote_id = {
        let p = Process::start(&db.0, &[]);
        p.ready().await;
        let ch = Channel::from_shared(p.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let acc = AccountServiceClient::new(ch.clone())
            .create_account(authed(
                &token,
                CreateAccountRequest {
                    account: Some(Account {
                        name: "K".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        crm::proto::quote_service_client::QuoteServiceClient::new(ch)
            .create_quote(authed(
                &token,
                CreateQuoteRequest {
                    quote: Some(Quote {
                        account_id: acc.id,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .id
    };
    let line = CreateLineItemRequest {
        line_item: Some(LineItem {
            quote_id: quote_id.clone(),
            quantity: Some(3.0),
            unit_price: Some(19.99),
            ..Default::default()
        }),
        request_id: "5d2c6a3e-8f7b-4c1d-9e0a-1b2c3d4e5f60".into(),
    };
    for (failpoint, committed) in [
        ("before_commit=sleep(5000)", false),
        ("after_commit=sleep(5000)", true),
    ] {
        let p = Process::start(&db.0, &[("CRM_FAILPOINTS", failpoint)]);
        p.ready().await;
        let ch = Channel::from_shared(p.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut lines = crm::proto::line_item_service_client::LineItemServiceClient::new(ch);
        let (req, tok) = (line.clone(), token.clone());
        let inflight = tokio::spawn(async move { lines.create_line_item(authed(&tok, req)).await });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        p.signal("-KILL");
        assert!(inflight.await.unwrap().is_err(), "the client saw no answer");
        drop(p);
        let lines_now = count(&db.0, "SELECT count(*) FROM line_items").await;
        let keys = count(&db.0, "SELECT count(*) FROM idempotency_keys").await;
        let quote_version = count(
            &db.0,
            &format!("SELECT version::bigint FROM quotes WHERE id = '{quote_id}'"),
        )
        .await;
        if committed {
            assert_eq!(
                (lines_now, keys, quote_version),
                (1, 1, 2),
                "record, key and rollup all present"
            );
        } else {
            assert_eq!(
                (lines_now, keys, quote_version),
                (0, 0, 1),
                "record, key and rollup all absent"
            );
        }
    }
    // The retry on a healthy server: exactly one line, and the rollup once.
    let p = Process::start(&db.0, &[]);
    p.ready().await;
    let ch = Channel::from_shared(p.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut lines = crm::proto::line_item_service_client::LineItemServiceClient::new(ch.clone());
    let first = lines
        .create_line_item(authed(&token, line.clone()))
        .await
        .unwrap()
        .into_inner();
    let again = lines
        .create_line_item(authed(&token, line.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    assert_eq!(count(&db.0, "SELECT count(*) FROM line_items").await, 1);
    let q = crm::proto::quote_service_client::QuoteServiceClient::new(ch)
        .get_quote(authed(&token, GetQuoteRequest { id: quote_id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((q.total, q.version), (Some(59.97), 2));
}

#[tokio::test]
async fn database_outage_fails_fast_and_recovers_without_a_restart() {
    let pg = PrivatePg::start();
    let app = spawn_app_with(|c| {
        c.base.database_url = pg.url("crm");
        c.health_interval_secs = 1;
        c.db_acquire_timeout_secs = 2;
        c.request_timeout_secs = 5;
    })
    .await;
    let t = app.token("tenant-o", "u1");
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for w in 0..4 {
        let (mut c, t, acked, stop) = (app.accounts(), t.clone(), acked.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut slowest_failure = Duration::ZERO;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let started = Instant::now();
                match c
                    .create_account(authed(
                        &t,
                        CreateAccountRequest {
                            account: Some(Account {
                                name: format!("w{w}-{i}"),
                                ..Default::default()
                            }),
                            request_id: String::new(),
                        },
                    ))
                    .await
                {
                    Ok(r) => acked.lock().unwrap().push(r.into_inner().id),
                    Err(s) => {
                        assert!(
                            matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded),
                            "{s:?}"
                        );
                        slowest_failure = slowest_failure.max(started.elapsed());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            slowest_failure
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    pg.down_immediately();
    // Calls fail fast with UNAVAILABLE; health turns NOT_SERVING.
    let mut h = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    let mut not_serving = false;
    for _ in 0..50 {
        let s = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: "crm.v1.AccountService".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if s.status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32 {
            not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(not_serving, "health went NOT_SERVING");
    let started = Instant::now();
    let e = app
        .accounts()
        .get_account(authed(
            &t,
            GetAccountRequest {
                id: "acc_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&e, Code::Unavailable, "DATABASE_UNAVAILABLE");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fast: {:?}",
        started.elapsed()
    );
    let (status, _, _) = app
        .rest("GET", "/api/v1/crm/accounts", Some(&t), None)
        .await;
    assert_eq!(status, 503);
    let (status, _, _) = app.rest("GET", "/readyz", None, None).await;
    assert_eq!(status, 503);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Back up: the service recovers by itself within 5 s.
    pg.up();
    let up_at = Instant::now();
    loop {
        let r = app
            .accounts()
            .list_accounts(authed(
                &t,
                ListAccountsRequest {
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await;
        if r.is_ok() {
            break;
        }
        assert!(
            up_at.elapsed() < Duration::from_secs(5),
            "not recovered within 5 s: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        let slowest = l.await.unwrap();
        assert!(
            slowest < Duration::from_secs(5),
            "no call hung beyond the request timeout: {slowest:?}"
        );
    }
    // Every acknowledged create is there.
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&pg.url("crm")).await.unwrap();
    let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM accounts")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    for id in &acked {
        assert!(stored.contains(id), "acknowledged {id} lost");
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_calls_and_exits() {
    let db = ScratchDb::new();
    let p = Process::start(
        &db.0,
        &[
            ("CRM_FAILPOINTS", "before_db=sleep(1500)"),
            ("CRM_SHUTDOWN_GRACE_SECS", "10"),
        ],
    );
    p.ready().await;
    let token =
        crm::auth::mint(SECRET.as_bytes(), "tenant-s", "u1", None, 3600, None, None).unwrap();
    let ch = Channel::from_shared(p.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // A health watcher on its own connection.
    let watch_ch = Channel::from_shared(p.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = tonic_health::pb::health_client::HealthClient::new(watch_ch)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(
        first.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let mut calls = Vec::new();
    for i in 0..100 {
        let (mut c, t) = (AccountServiceClient::new(ch.clone()), token.clone());
        calls.push(tokio::spawn(async move {
            c.create_account(authed(
                &t,
                CreateAccountRequest {
                    account: Some(Account {
                        name: format!("s{i}"),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    p.signal("-TERM");
    let next = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .expect("health changes first");
    let next = next.unwrap().unwrap();
    assert_eq!(
        next.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    for c in calls {
        c.await.unwrap().expect("in-flight calls complete");
    }
    // The open Watch stream does not hold the process: it exits well before
    // the 10 s grace.
    let mut p = p;
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(8),
            "exit within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(count(&db.0, "SELECT count(*) FROM accounts").await, 100);
    let open = count(&db.0, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'").await;
    assert_eq!(open, 0);
}

#[tokio::test]
async fn logs_metrics_and_request_ids_tell_operators_what_happens() {
    use std::io::{BufRead, BufReader};
    let db = ScratchDb::new();
    let mut p = Process::start(&db.0, &[("CRM_LOG_FORMAT", "json")]);
    p.ready().await;
    let token = crm::auth::mint(
        SECRET.as_bytes(),
        "tenant-l",
        "u1",
        Some("app-7"),
        3600,
        None,
        None,
    )
    .unwrap();
    let mut c = p.accounts().await;
    let mut req = authed(&token, ListAccountsRequest::default());
    req.metadata_mut()
        .insert("x-request-id", "grpc-trace-1".parse().unwrap());
    let resp = c.list_accounts(req).await.unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap(), "grpc-trace-1");
    let e = c
        .get_account(authed(
            &token,
            GetAccountRequest {
                id: "acc_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/crm/accounts", p.http))
        .bearer_auth(&token)
        .header("x-request-id", "rest-trace-2")
        .json(&serde_json::json!({"name": "Logged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "rest-trace-2");
    let generated = http
        .get(format!("{}/api/v1/crm/nowhere", p.http))
        .send()
        .await
        .unwrap();
    assert!(
        generated.headers().contains_key("x-request-id"),
        "generated when absent"
    );

    let metrics = http
        .get(format!("{}/metrics", p.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "crm_requests_total{method=\"/crm.v1.AccountService/ListAccounts\",code=\"OK\"} 1",
        "crm_requests_total{method=\"/crm.v1.AccountService/GetAccount\",code=\"NOT_FOUND\"} 1",
        "crm_requests_total{method=\"/crm.v1.AccountService/CreateAccount\",code=\"OK\"} 1",
        "crm_request_duration_seconds_bucket{",
        "crm_db_pool_connections{state=\"max\"}",
        "crm_build_info{version=",
    ] {
        assert!(metrics.contains(needle), "missing {needle}\n{metrics}");
    }

    p.signal("-TERM");
    p.child.wait().unwrap();
    let lines: Vec<serde_json::Value> = BufReader::new(p.child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    let find = |id: &str| {
        let hits: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["fields"]["request_id"] == id)
            .collect();
        assert_eq!(hits.len(), 1, "exactly one line for {id}: {hits:?}");
        hits[0].clone()
    };
    let g = find("grpc-trace-1");
    assert_eq!(g["fields"]["method"], "/crm.v1.AccountService/ListAccounts");
    assert_eq!(g["fields"]["code"], "OK");
    assert_eq!(g["fields"]["tenant"], "tenant-l");
    assert_eq!(g["fields"]["app"], "app-7");
    assert!(g["fields"]["latency_ms"].as_f64().is_some());
    let r = find("rest-trace-2");
    assert_eq!(r["fields"]["status"], 200);
    assert_eq!(r["fields"]["code"], "OK");
    assert_eq!(r["fields"]["path"], "/api/v1/crm/accounts");
    assert_eq!(r["fields"]["tenant"], "tenant-l");
}
