//! The fault scenarios end to end, against the release `crm` binary and the
//! local Postgres (run by `scripts/faults.sh`; it stops and starts the
//! cluster, so nothing else may use it meanwhile):
//!
//! - outage: Postgres stopped (`-m immediate`) under load, then started;
//! - sigkill: the server killed under load, then restarted;
//! - sigterm: the server stopped under load, then restarted;
//! - webhook: a webhook's receiver down for a while and the server killed
//!   meanwhile, then the receiver back (see [`webhook`]).
//!
//! In the first three, clients create line items on one quote with a
//! `request_id` each and retry a failed create with the same id until it is
//! acknowledged. Afterwards: every acknowledged write is stored (lost = 0),
//! nothing is stored twice (duplicates = 0), and the quote's total, version
//! and summaries (its first 100 lines) agree with its lines (no half-written side effect). The
//! change feed is checked too: once the sequencer has caught up, the
//! tenant's events are numbered 1..N with no gap or repeat, every
//! acknowledged write is in it exactly once, and N is exactly the changes
//! stored (each line and its quote rollup). Prints the counts; exits
//! non-zero on any loss or inconsistency.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use crm::proto::account_service_client::AccountServiceClient;
use crm::proto::line_item_service_client::LineItemServiceClient;
use crm::proto::quote_service_client::QuoteServiceClient;
use crm::proto::webhook_service_client::WebhookServiceClient;
use crm::proto::*;
use sqlx::Connection;
use tonic::transport::Channel;

#[path = "../tests/common/mod.rs"]
mod common;

const SECRET: &str = "faults-secret-faults-secret-faults-secret";
const GRPC: &str = "127.0.0.1:50151";
const HTTP: &str = "127.0.0.1:58151";

fn cluster(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("a Debian PostgreSQL cluster in /etc/postgresql");
    let mut args = vec![
        "--skip-systemctl-redirect",
        version.as_str(),
        "main",
        action,
    ];
    if action == "stop" {
        args.extend(["-m", "immediate"]);
    }
    let ok = Command::new("pg_ctlcluster")
        .args(&args)
        .status()
        .expect("pg_ctlcluster");
    assert!(ok.success(), "pg_ctlcluster {action}");
}

fn server(db: &str) -> Child {
    server_with(db, &[])
}

/// The server with `extra` environment on top of the usual.
fn server_with(db: &str, extra: &[(&str, &str)]) -> Child {
    Command::new(std::env::var("CRM_BIN").unwrap_or_else(|_| "target/release/crm".into()))
        .arg("serve")
        .envs(extra.iter().copied())
        .env("DATABASE_URL", format!("{}/{db}", common::pg_base()))
        .env("CRM_GRPC_ADDR", GRPC)
        .env("CRM_HTTP_ADDR", HTTP)
        .env("CRM_JWT_SECRET", SECRET)
        .env("CRM_HEALTH_INTERVAL_SECS", "1")
        .env("CRM_DB_ACQUIRE_TIMEOUT_SECS", "2")
        .env("CRM_REQUEST_TIMEOUT_SECS", "5")
        .env("CRM_SHUTDOWN_GRACE_SECS", "10")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("the crm binary (cargo build --release)")
}

async fn ready() -> Channel {
    for _ in 0..300 {
        if let Ok(r) = reqwest::get(format!("http://{HTTP}/readyz")).await
            && r.status().is_success()
            && let Ok(ch) = Channel::from_shared(format!("http://{GRPC}"))
                .unwrap()
                .connect()
                .await
        {
            return ch;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("crm did not become ready");
}

fn authed<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = common::authed(token, msg);
    r.set_timeout(Duration::from_secs(6));
    r
}

#[derive(Default)]
struct Tally {
    acked: Vec<String>,
    failures: usize,
    slowest_failure: Duration,
}

/// Makes one write (`call`, on a fresh connection) until it is acknowledged,
/// counting the failures; records the acknowledged id.
async fn until_acked<F, Fut>(tally: &Mutex<Tally>, mut call: F)
where
    F: FnMut(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<String, tonic::Status>>,
{
    loop {
        let started = Instant::now();
        let result = match Channel::from_shared(format!("http://{GRPC}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(ch) => call(ch).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(id) => {
                tally.lock().unwrap().acked.push(id);
                return;
            }
            Err(_) => {
                {
                    let mut t = tally.lock().unwrap();
                    t.failures += 1;
                    t.slowest_failure = t.slowest_failure.max(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Clients creating line items until `stop`; each write is retried with its
/// request_id until acknowledged.
fn load(
    token: String,
    quote: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..8)
        .map(|_| {
            let (token, quote, stop, tally) =
                (token.clone(), quote.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // A fresh ULID's 128 bits make a unique request id.
                    let request_id = uuid::Uuid::from_u128(ulid::Ulid::generate().0).to_string();
                    let req = CreateLineItemRequest {
                        line_item: Some(LineItem {
                            quote_id: quote.clone(),
                            quantity: Some(1.0),
                            unit_price: Some(0.1),
                            ..Default::default()
                        }),
                        request_id,
                    };
                    until_acked(&tally, |ch| {
                        let (token, req) = (token.clone(), req.clone());
                        async move {
                            LineItemServiceClient::new(ch)
                                .create_line_item(authed(&token, req))
                                .await
                                .map(|r| r.into_inner().id)
                        }
                    })
                    .await;
                }
            })
        })
        .collect()
}

async fn check(db: &str, quote: &str, tally: &Tally) -> bool {
    let mut conn = sqlx::PgConnection::connect(&format!("{}/{db}", common::pg_base()))
        .await
        .unwrap();
    let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM line_items")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let mut acked = tally.acked.clone();
    acked.sort();
    acked.dedup();
    let lost = acked.iter().filter(|id| !stored.contains(id)).count();
    let duplicates = stored.len().saturating_sub(acked.len());
    // The summaries are the first 100 live lines by creation, in order.
    let (total, sum, version, summaries, first): (String, String, i32, i64, bool) = sqlx::query_as(
        "SELECT q.total::text, (SELECT COALESCE(sum(total), 0) FROM line_items WHERE quote_id = q.id AND NOT is_deleted)::text, \
         q.version, jsonb_array_length(q.line_items)::bigint, \
         (SELECT array_agg(e.v->>'id' ORDER BY e.n) FROM jsonb_array_elements(q.line_items) WITH ORDINALITY AS e(v, n)) \
           IS NOT DISTINCT FROM \
         (SELECT array_agg(l.id ORDER BY l.created_at, l.id) FROM (SELECT id, created_at FROM line_items \
            WHERE quote_id = q.id AND NOT is_deleted ORDER BY created_at, id LIMIT 100) l) \
         FROM quotes q WHERE q.id = $1",
    )
    .bind(quote)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let consistent = total == sum
        && version as usize == 1 + stored.len()
        && summaries as usize == stored.len().min(100)
        && first;
    println!(
        "  writes acknowledged: {}, writes found: {}, duplicates: {duplicates}, lost: {lost}, failed attempts retried: {}, slowest failure: {:.0?}",
        acked.len(),
        stored.len(),
        tally.failures,
        tally.slowest_failure
    );
    println!(
        "  quote total {total} = sum of lines {sum}; version {version} = 1 + {} lines; {summaries} summaries, the first lines: {}",
        stored.len(),
        if consistent {
            "consistent"
        } else {
            "INCONSISTENT"
        }
    );
    let feed = check_feed(&mut conn, &acked, stored.len()).await;
    lost == 0 && duplicates == 0 && consistent && !acked.is_empty() && feed
}

/// The change feed after the scenario: gapless, every acknowledged line's
/// creation once, one event per stored change.
async fn check_feed(conn: &mut sqlx::PgConnection, acked: &[String], lines: usize) -> bool {
    // Let the sequencer drain the outbox (it may just have been restarted).
    for _ in 0..150 {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM change_outbox")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (events, highest, distinct): (i64, Option<i64>, i64) = sqlx::query_as(
        "SELECT count(*), max(sequence), count(DISTINCT sequence) FROM change_events \
         WHERE tenant_id = 'tenant-faults'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let created: Vec<(String, i64)> = sqlx::query_as(
        "SELECT record_id, count(*) FROM change_events WHERE tenant_id = 'tenant-faults' \
         AND resource_type = 'line_item' AND operation = 'created' GROUP BY record_id",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let created: std::collections::HashMap<String, i64> = created.into_iter().collect();
    let missing = acked.iter().filter(|id| !created.contains_key(*id)).count();
    let repeated = created.values().filter(|n| **n > 1).count();
    let gapless = highest == Some(events) && distinct == events;
    // The account, the quote, and per line its creation and its quote rollup.
    let expected = 2 + 2 * lines as i64;
    println!(
        "  change feed: {events} events (expected {expected}), 1..{events} gapless: {}, acknowledged writes missing from the feed: {missing}, repeated: {repeated}",
        if gapless { "yes" } else { "NO" }
    );
    gapless && missing == 0 && repeated == 0 && events == expected
}

/// Drops the scenario's database (the server creates it afresh) and
/// returns its name.
async fn fresh(name: &str) -> String {
    let db = format!("crm_faults_{name}");
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", common::pg_base()))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.ok();
    println!("{name}:");
    db
}

/// A token of the scenarios' tenant.
fn token() -> String {
    crm::auth::mint(
        SECRET.as_bytes(),
        "tenant-faults",
        "faults",
        None,
        3600,
        None,
        None,
    )
    .unwrap()
}

async fn scenario(name: &str) -> bool {
    if name == "webhook" {
        return webhook().await;
    }
    let db = fresh(name).await;
    let mut child = server(&db);
    let ch = ready().await;
    let token = token();
    let account = AccountServiceClient::new(ch.clone())
        .create_account(authed(
            &token,
            CreateAccountRequest {
                account: Some(Account {
                    name: "Faults".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let quote = QuoteServiceClient::new(ch)
        .create_quote(authed(
            &token,
            CreateQuoteRequest {
                quote: Some(Quote {
                    account_id: account.id,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let clients = load(token.clone(), quote.clone(), stop.clone(), tally.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ok = true;
    match name {
        "outage" => {
            cluster("stop");
            let down = Instant::now();
            tokio::time::sleep(Duration::from_secs(3)).await;
            let health = reqwest::get(format!("http://{HTTP}/readyz"))
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            println!("  during the outage: /readyz {health}");
            ok &= health == 503;
            cluster("start");
            let up = Instant::now();
            let before = tally.lock().unwrap().acked.len();
            while tally.lock().unwrap().acked.len() == before {
                if up.elapsed() > Duration::from_secs(30) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let recovery = up.elapsed();
            println!(
                "  outage {:.1?}; first acknowledged write {:.2?} after Postgres was back (no restart)",
                up - down,
                recovery
            );
            ok &= recovery < Duration::from_secs(5);
        }
        "sigkill" => {
            child.kill().unwrap();
            child.wait().unwrap();
            println!("  killed (SIGKILL) under load; restarting");
            tokio::time::sleep(Duration::from_millis(500)).await;
            child = server(&db);
            ready().await;
        }
        "sigterm" => {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            let sent = Instant::now();
            let status = child.wait().unwrap();
            println!(
                "  SIGTERM under load: exited {status} after {:.2?}; restarting",
                sent.elapsed()
            );
            ok &= status.success() && sent.elapsed() < Duration::from_secs(10);
            child = server(&db);
            ready().await;
        }
        _ => unreachable!(),
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    ok &= check(&db, &quote, &tally).await;
    let _ = child.kill();
    let _ = child.wait();
    ok
}

/// Accounts the webhook scenario writes, between its clients.
const WEBHOOK_WRITES: usize = 600;
/// How long the receiver may take to see every event once it is back (a
/// killed server's lease on the webhook lapses within 30 s).
const WEBHOOK_DRAIN: Duration = Duration::from_secs(90);

/// One POST the receiver accepted (while up), in the order they arrived.
struct Delivery {
    /// `webhook-id`.
    id: String,
    /// The event's `sequence`.
    sequence: i64,
    /// The event's `record_id`.
    record_id: String,
}

/// The webhook scenario's HTTP receiver: answers 503 while down; while up
/// verifies the signature with the `standardwebhooks` crate (not the
/// server's code), records the delivery and answers 200.
#[derive(Default)]
struct Receiver {
    up: AtomicBool,
    /// Set from CreateWebhook's answer (the receiver must listen first: the
    /// webhook needs its address).
    verifier: OnceLock<standardwebhooks::Webhook>,
    deliveries: Mutex<Vec<Delivery>>,
    refused: AtomicUsize,
    bad_signatures: AtomicUsize,
}

async fn receive(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if !rx.up.load(Ordering::Relaxed) {
        rx.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    // A bad signature is counted but the event accepted all the same, so it
    // shows as such rather than as a stalled delivery.
    if rx
        .verifier
        .get()
        .is_none_or(|v| v.verify(&body, &headers).is_err())
    {
        rx.bad_signatures.fetch_add(1, Ordering::Relaxed);
    }
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let delivery = Delivery {
        id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        // int64 is a JSON string.
        sequence: event["sequence"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1),
        record_id: event["record_id"].as_str().unwrap_or_default().to_owned(),
    };
    rx.deliveries.lock().unwrap().push(delivery);
    StatusCode::OK
}

/// Clients creating accounts until `total` are acknowledged between them,
/// each write retried with its request_id until acknowledged; a client
/// takes the next write only while it is below `allowed`.
fn account_writers(
    token: String,
    total: usize,
    allowed: Arc<AtomicUsize>,
    tally: Arc<Mutex<Tally>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next = Arc::new(AtomicUsize::new(0));
    (0..4)
        .map(|_| {
            let (token, allowed, tally, next) =
                (token.clone(), allowed.clone(), tally.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    while n >= allowed.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let request_id = uuid::Uuid::from_u128(ulid::Ulid::generate().0).to_string();
                    let req = CreateAccountRequest {
                        account: Some(Account {
                            name: format!("Faults {n}"),
                            ..Default::default()
                        }),
                        request_id,
                    };
                    until_acked(&tally, |ch| {
                        let (token, req) = (token.clone(), req.clone());
                        async move {
                            AccountServiceClient::new(ch)
                                .create_account(authed(&token, req))
                                .await
                                .map(|r| r.into_inner().id)
                        }
                    })
                    .await;
                    // Paced, so the server is killed with writes under way.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect()
}

/// Waits (at most 60 s) until `n` writes are acknowledged.
async fn acked_at_least(tally: &Mutex<Tally>, n: usize) {
    let since = Instant::now();
    while tally.lock().unwrap().acked.len() < n && since.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The webhook scenario: one webhook on an in-process receiver; accounts
/// written by a few clients; after a third of them the receiver goes down
/// (503), writes go on, the server is killed (SIGKILL) with deliveries
/// pending and restarted, the rest are written, and the receiver comes back.
/// Then every acknowledged account's creation must reach the receiver
/// (lost = 0), with a valid signature, first deliveries in strictly
/// increasing sequence (repeats are allowed: delivery is at least once, and
/// counted).
async fn webhook() -> bool {
    let db = fresh("webhook").await;
    let env = [
        ("CRM_WEBHOOKS_ALLOW_PRIVATE", "true"),
        ("CRM_WEBHOOKS_RETRY_SCHEDULE", "300ms"),
    ];
    let mut child = server_with(&db, &env);
    let ch = ready().await;
    let token = token();
    let rx = Arc::new(Receiver::default());
    rx.up.store(true, Ordering::Relaxed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(rx.clone());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });
    let hook = WebhookServiceClient::new(ch)
        .create_webhook(authed(
            &token,
            CreateWebhookRequest {
                webhook: Some(Webhook {
                    url: format!("http://127.0.0.1:{port}/hook"),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let _ = rx
        .verifier
        .set(standardwebhooks::Webhook::new(&hook.secret).unwrap());

    let allowed = Arc::new(AtomicUsize::new(WEBHOOK_WRITES / 3));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let clients = account_writers(token, WEBHOOK_WRITES, allowed.clone(), tally.clone());
    acked_at_least(&tally, WEBHOOK_WRITES / 3).await;
    rx.up.store(false, Ordering::Relaxed);
    let delivered_before = rx.deliveries.lock().unwrap().len();
    println!(
        "  receiver down (503) after {} writes, {delivered_before} delivered",
        WEBHOOK_WRITES / 3
    );
    // Events pile up while the receiver refuses them; then the server dies
    // with writes under way.
    allowed.store(WEBHOOK_WRITES / 2, Ordering::Relaxed);
    acked_at_least(&tally, WEBHOOK_WRITES / 2).await;
    allowed.store(WEBHOOK_WRITES, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    println!(
        "  killed (SIGKILL) after {} writes with deliveries pending; restarting",
        tally.lock().unwrap().acked.len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    child = server_with(&db, &env);
    ready().await;
    for c in clients {
        c.await.unwrap();
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    rx.up.store(true, Ordering::Relaxed);
    let back = Instant::now();
    println!(
        "  all writes acknowledged; receiver up again ({} attempts refused while down)",
        rx.refused.load(Ordering::Relaxed)
    );

    // Every acknowledged account's creation must arrive.
    let mut acked = tally.acked.clone();
    acked.sort();
    acked.dedup();
    let lost = loop {
        let lost = {
            let deliveries = rx.deliveries.lock().unwrap();
            let seen: HashSet<&str> = deliveries.iter().map(|d| d.record_id.as_str()).collect();
            acked
                .iter()
                .filter(|id| !seen.contains(id.as_str()))
                .count()
        };
        if lost == 0 || back.elapsed() > WEBHOOK_DRAIN {
            break lost;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let drained = back.elapsed();
    let deliveries = std::mem::take(&mut *rx.deliveries.lock().unwrap());
    let mut first = HashSet::new();
    let (mut duplicates, mut out_of_order, mut last) = (0, 0, 0);
    for d in &deliveries {
        if !first.insert(d.id.as_str()) {
            duplicates += 1;
        } else if d.sequence <= last {
            out_of_order += 1;
        } else {
            last = d.sequence;
        }
    }
    let bad_signatures = rx.bad_signatures.load(Ordering::Relaxed);
    println!(
        "  events acknowledged: {}, delivered: {} distinct ({} POSTs accepted), duplicates: {duplicates}, lost: {lost}, out of order: {out_of_order}, bad signatures: {bad_signatures}",
        acked.len(),
        first.len(),
        deliveries.len()
    );
    println!(
        "  failed write attempts retried: {}, slowest failure: {:.0?}; {} {:.1?} after the receiver was back",
        tally.failures,
        tally.slowest_failure,
        if lost == 0 {
            "everything delivered"
        } else {
            "GAVE UP waiting"
        },
        drained
    );
    receiver.abort();
    let _ = child.kill();
    let _ = child.wait();
    acked.len() == WEBHOOK_WRITES && lost == 0 && out_of_order == 0 && bad_signatures == 0
}

#[tokio::main]
async fn main() {
    crm::net::install_tls_provider();
    let which: Vec<String> = std::env::args().skip(1).collect();
    let all = ["outage", "sigkill", "sigterm", "webhook"];
    let run: Vec<&str> = if which.is_empty() {
        all.to_vec()
    } else {
        which.iter().map(String::as_str).collect()
    };
    let mut failed = Vec::new();
    for name in run {
        if !scenario(name).await {
            failed.push(name.to_owned());
        }
    }
    if failed.is_empty() {
        println!("faults: all scenarios passed");
    } else {
        println!("faults: FAILED: {failed:?}");
        std::process::exit(1);
    }
}
