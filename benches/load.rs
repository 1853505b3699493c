//! The load harness: N concurrent clients against the release `crm` binary,
//! over gRPC and over REST, for CreateAccount, GetAccount, UpdateAccount
//! (with its version), ListAccounts (a page of 50) and CreateLineItem (with
//! the quote rollup) — and, in the same run, the yardstick: pgbench running
//! per operation the one SQL statement that does the work, as the table
//! owner, at the same concurrency on the same database, and pgbench
//! replaying exactly the statements the service sent for one such request
//! (captured from Postgres' statement log). Prints a Markdown report with
//! throughput, latency percentiles, errors, the server's peak RSS and the
//! service/pgbench ratios.
//!
//!   cargo bench --bench load -- [--clients 32] [--seconds 10] [--smoke]
//!
//! Run by `scripts/bench.sh`, which builds the server and writes the report
//! into BENCHMARKS.md. `--smoke` (CI) runs each measurement for a moment and
//! checks that every part works, without judging the numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use crm::proto::account_service_client::AccountServiceClient;
use crm::proto::line_item_service_client::LineItemServiceClient;
use crm::proto::quote_service_client::QuoteServiceClient;
use crm::proto::*;
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use tonic::transport::Channel;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{authed, pg_base};

const DB: &str = "crm_bench_load";
const SECRET: &str = "bench-load-secret-bench-load-secret-0000";
const TENANT: &str = "bench";
// Below the ephemeral port range (32768-60999), so that no outgoing
// connection can hold them when the servers bind.
const GRPC: &str = "127.0.0.1:30161";
const HTTP: &str = "127.0.0.1:31161";
const CAPTURE_GRPC: &str = "127.0.0.1:30162";
const CAPTURE_HTTP: &str = "127.0.0.1:31162";

#[derive(Parser, Debug)]
struct Args {
    /// Concurrent clients (service) and connections (pgbench).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Clients of the extra GetAccount latency run.
    #[arg(long, default_value_t = 64)]
    latency_clients: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seeded accounts (GetAccount and UpdateAccount pick among them).
    #[arg(long, default_value_t = 20_000)]
    accounts: usize,
    /// A short run checking that every part works (CI).
    #[arg(long)]
    smoke: bool,
    /// Only these operations (create, get, update, list, line_item).
    #[arg(long, value_delimiter = ',')]
    ops: Vec<String>,
    /// The crm binary.
    #[arg(long, env = "CRM_BIN", default_value = "target/release/crm")]
    bin: PathBuf,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn id(prefix: &str, n: usize) -> String {
    format!("{prefix}_{n:026}")
}

/// The operations measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Create,
    Get,
    Update,
    List,
    LineItem,
}

impl Op {
    const ALL: [Op; 5] = [Op::Create, Op::Get, Op::Update, Op::List, Op::LineItem];

    fn key(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Get => "get",
            Op::Update => "update",
            Op::List => "list",
            Op::LineItem => "line_item",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Op::Create => "CreateAccount",
            Op::Get => "GetAccount",
            Op::Update => "UpdateAccount (with version)",
            Op::List => "ListAccounts (page of 50)",
            Op::LineItem => "CreateLineItem (with the quote rollup)",
        }
    }

    /// The one statement that does the work, as a pgbench script.
    fn yardstick(self, accounts: usize, quotes: usize) -> String {
        let insert_cols = "tenant_id, id, created_at, updated_at, created_by, updated_by, source, source_type, schema_version, version";
        match self {
            Op::Create => format!(
                "\\set n random(1000000000, 999999999999999)\n\
                 INSERT INTO accounts ({insert_cols}, name) VALUES ('{TENANT}', 'acc_' || lpad(:n::text, 26, '0'), now(), now(), 'bench', 'bench', 'edm', 'api', 1, 1, 'Bench account ' || :n);\n"
            ),
            Op::Get => format!(
                "\\set n random(1, {accounts})\n\
                 SELECT * FROM accounts WHERE tenant_id = '{TENANT}' AND id = 'acc_' || lpad(:n::text, 26, '0');\n"
            ),
            Op::Update => format!(
                "\\set n random(1, {accounts})\n\
                 UPDATE accounts SET name = 'Renamed ' || :n, version = version + 1, updated_at = now(), updated_by = 'bench' \
                 WHERE tenant_id = '{TENANT}' AND id = 'acc_' || lpad(:n::text, 26, '0') AND version >= 1;\n"
            ),
            Op::List => format!(
                "SELECT * FROM accounts WHERE tenant_id = '{TENANT}' AND NOT is_deleted ORDER BY created_at DESC, id DESC LIMIT 50;\n"
            ),
            Op::LineItem => format!(
                "\\set n random(1000000000, 999999999999999)\n\
                 \\set q random(1, {quotes})\n\
                 INSERT INTO line_items ({insert_cols}, quote_id, quantity, unit_price, total, discount_type) \
                 VALUES ('{TENANT}', 'li_' || lpad(:n::text, 26, '0'), now(), now(), 'bench', 'bench', 'edm', 'api', 1, 1, \
                 'qte_' || lpad(:q::text, 26, '0'), 2, 10.5, 21, 'amount');\n"
            ),
        }
    }
}

/// One measurement.
#[derive(Clone, Debug, Default)]
struct Measured {
    throughput: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    errors: usize,
    calls: usize,
    /// CPU time per call of the server process, µs (user + system).
    server_us: f64,
    /// CPU time per call of every Postgres process, µs (backends and the
    /// background workers together).
    postgres_us: f64,
}

/// The server under test, whose CPU time [`drive`] reads (0: none yet).
static SERVER_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// User + system CPU time of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // After the command name (in parentheses, which may hold spaces):
            // state is field 3, utime 14, stime 15.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// CPU time of (server, every `postgres` process) so far, in µs.
fn cpu_now() -> (f64, f64) {
    // /proc counts in USER_HZ: 100 on Linux's mainstream targets; asked of
    // getconf once.
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let hz = *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    });
    let us = |ticks: u64| ticks as f64 * 1e6 / hz;
    let server = match SERVER_PID.load(Ordering::Relaxed) {
        0 => 0,
        pid => cpu_ticks(pid),
    };
    let mut postgres = 0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == "postgres")
            {
                postgres += cpu_ticks(pid);
            }
        }
    }
    (us(server), us(postgres))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// What every client shares.
struct World {
    token: String,
    accounts: usize,
    quotes: usize,
    clients: usize,
    /// The version of each seeded account (clients update disjoint ones).
    versions: Vec<AtomicI32>,
    next: AtomicUsize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Grpc,
    Rest,
}

/// A client's connection.
enum Conn {
    Grpc(Channel),
    Rest(reqwest::Client),
}

async fn channel(addr: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

/// One call of `op` by client `c` (its `i`-th); true when it succeeded.
async fn call(op: Op, conn: &Conn, w: &World, c: usize, i: usize, http: &str) -> bool {
    let n = w.next.fetch_add(1, Ordering::Relaxed);
    // Client c updates the accounts ≡ c (mod clients), so versions never race.
    let own = |i: usize| {
        let per = (w.accounts / w.clients).max(1);
        (c + (i % per) * w.clients) % w.accounts + 1
    };
    let random_account = (n.wrapping_mul(2_654_435_761) % w.accounts) + 1;
    match conn {
        Conn::Grpc(ch) => match op {
            Op::Create => AccountServiceClient::new(ch.clone())
                .create_account(authed(
                    &w.token,
                    CreateAccountRequest {
                        account: Some(Account {
                            name: format!("Bench account {n}"),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                ))
                .await
                .is_ok(),
            Op::Get => AccountServiceClient::new(ch.clone())
                .get_account(authed(
                    &w.token,
                    GetAccountRequest {
                        id: id("acc", random_account),
                    },
                ))
                .await
                .is_ok(),
            Op::Update => {
                let a = own(i);
                let version = &w.versions[a - 1];
                match AccountServiceClient::new(ch.clone())
                    .update_account(authed(
                        &w.token,
                        UpdateAccountRequest {
                            account: Some(Account {
                                id: id("acc", a),
                                name: format!("Renamed {n}"),
                                version: version.load(Ordering::Relaxed),
                                ..Default::default()
                            }),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["name".into()],
                            }),
                            request_id: String::new(),
                        },
                    ))
                    .await
                {
                    Ok(r) => {
                        version.store(r.into_inner().version, Ordering::Relaxed);
                        true
                    }
                    Err(_) => false,
                }
            }
            Op::List => AccountServiceClient::new(ch.clone())
                .list_accounts(authed(
                    &w.token,
                    ListAccountsRequest {
                        page_size: 50,
                        ..Default::default()
                    },
                ))
                .await
                .is_ok_and(|r| r.into_inner().accounts.len() == 50),
            Op::LineItem => LineItemServiceClient::new(ch.clone())
                .create_line_item(authed(
                    &w.token,
                    CreateLineItemRequest {
                        line_item: Some(LineItem {
                            quote_id: id("qte", quote_of(w, c, i)),
                            quantity: Some(2.0),
                            unit_price: Some(10.5),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                ))
                .await
                .is_ok(),
        },
        Conn::Rest(client) => {
            let base = format!("http://{http}/api/v1/crm");
            let req = match op {
                Op::Create => client
                    .post(format!("{base}/accounts"))
                    .json(&json!({ "name": format!("Bench account {n}") })),
                Op::Get => client.get(format!("{base}/accounts/{}", id("acc", random_account))),
                Op::Update => {
                    let a = own(i);
                    let version = w.versions[a - 1].load(Ordering::Relaxed);
                    client
                        .patch(format!("{base}/accounts/{}?updateMask=name", id("acc", a)))
                        .json(&json!({ "name": format!("Renamed {n}"), "version": version }))
                }
                Op::List => client.get(format!("{base}/accounts?pageSize=50")),
                Op::LineItem => client.post(format!("{base}/line-items")).json(&json!({
                    "quoteId": id("qte", quote_of(w, c, i)),
                    "quantity": 2,
                    "unitPrice": 10.5,
                })),
            };
            let Ok(resp) = req.bearer_auth(&w.token).send().await else {
                return false;
            };
            if !resp.status().is_success() {
                return false;
            }
            let Ok(body) = resp.bytes().await else {
                return false;
            };
            // Read as a typed client would (the gRPC client decodes typed
            // messages): only the fields it uses, the rest skipped unparsed.
            match op {
                Op::Update => match serde_json::from_slice::<Versioned>(&body) {
                    Ok(r) => {
                        w.versions[own(i) - 1].store(r.version, Ordering::Relaxed);
                        true
                    }
                    Err(_) => false,
                },
                Op::List => {
                    serde_json::from_slice::<Listed>(&body).is_ok_and(|r| r.accounts.len() == 50)
                }
                _ => serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok(),
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct Versioned {
    version: i32,
}

#[derive(serde::Deserialize)]
struct Listed {
    accounts: Vec<serde::de::IgnoredAny>,
}

/// Client c's quotes: its own, in turn, so that line items on one quote
/// (which lock it) come from one client at a time, as in real use.
fn quote_of(w: &World, c: usize, i: usize) -> usize {
    let per = (w.quotes / w.clients).max(1);
    (c + (i % per) * w.clients) % w.quotes + 1
}

/// Runs `op` with `clients` clients for `warmup`, then for `duration`.
async fn drive(
    op: Op,
    transport: Transport,
    world: &Arc<World>,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(match transport {
            Transport::Grpc => Conn::Grpc(channel(GRPC).await?),
            Transport::Rest => Conn::Rest(
                reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()?,
            ),
        });
    }
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let cpu_at_start = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        cpu_now()
    });
    let mut tasks = Vec::new();
    for (c, conn) in conns.into_iter().enumerate() {
        let world = world.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut errors = 0usize;
            let mut i = 0usize;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let ok = call(op, &conn, &world, c, i, HTTP).await;
                i += 1;
                if t0 >= measure_from {
                    latencies.push(t0.elapsed());
                    if !ok {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    // The measured calls are those begun after the warm-up; the last end
    // just now.
    let (server_1, postgres_1) = cpu_now();
    let (server_0, postgres_0) = cpu_at_start.await?;
    let calls = all.len().max(1) as f64;
    let per_call = |us: f64| us / calls;
    all.sort_unstable();
    Ok(Measured {
        server_us: per_call(server_1 - server_0),
        postgres_us: per_call(postgres_1 - postgres_0),
        throughput: (all.len() - errors) as f64 / duration.as_secs_f64(),
        p50: percentile(&all, 0.50),
        p90: percentile(&all, 0.90),
        p99: percentile(&all, 0.99),
        errors,
        calls: all.len(),
    })
}

/// A new quote on account 1 named `name`.
async fn new_quote(
    quotes: &mut QuoteServiceClient<Channel>,
    token: &str,
    name: &str,
) -> anyhow::Result<Quote> {
    Ok(quotes
        .create_quote(authed(
            token,
            CreateQuoteRequest {
                quote: Some(Quote {
                    account_id: format!("acc_{:0>26}", 1),
                    name: name.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner())
}

/// CreateLineItem's latency against the size of its quote: `samples`
/// sequential calls on a new quote (p50 of lines 1..), then the quote filled
/// to `lines` with batches, then `samples` more (p50 of the last lines).
/// Returns (p50 first, p50 at `lines`), and checks the quote's total.
async fn long_quote(
    world: &World,
    lines: usize,
    samples: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let mut quotes = QuoteServiceClient::new(channel(GRPC).await?);
    let mut client = LineItemServiceClient::new(channel(GRPC).await?);
    let quote = new_quote(&mut quotes, &world.token, "Long").await?;
    let line = || LineItem {
        quote_id: quote.id.clone(),
        description: "Seat".into(),
        quantity: Some(2.0),
        unit_price: Some(0.1),
        ..Default::default()
    };
    let timed = async |client: &mut LineItemServiceClient<Channel>| {
        let mut latencies = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t0 = Instant::now();
            client
                .create_line_item(authed(
                    &world.token,
                    CreateLineItemRequest {
                        line_item: Some(line()),
                        request_id: String::new(),
                    },
                ))
                .await?;
            latencies.push(t0.elapsed());
        }
        latencies.sort_unstable();
        anyhow::Ok(percentile(&latencies, 0.5))
    };
    let first = timed(&mut client).await?;
    let mut made = samples;
    while made + samples < lines {
        let n = (lines - samples - made).min(1000);
        client
            .batch_create_line_items(authed(
                &world.token,
                BatchCreateLineItemsRequest {
                    requests: (0..n)
                        .map(|_| CreateLineItemRequest {
                            line_item: Some(line()),
                            request_id: String::new(),
                        })
                        .collect(),
                    request_id: String::new(),
                },
            ))
            .await?;
        made += n;
    }
    let last = timed(&mut client).await?;
    made += samples;
    let got = quotes
        .get_quote(authed(&world.token, GetQuoteRequest { id: quote.id }))
        .await?
        .into_inner();
    // 0.2 a line, exactly.
    let want = format!("{:.1}", made as f64 * 0.2);
    ensure!(
        got.total.map(|t| format!("{t:.1}")) == Some(want.clone()),
        "the long quote's total is {:?}, not {want}",
        got.total
    );
    Ok((first, last))
}

/// Records per second of the bulk paths, each measured the same way: the
/// time of `rounds` calls over one connection.
struct Bulk {
    singles: f64,
    batch_create: f64,
    batch_upsert_new: f64,
    batch_upsert_existing: f64,
    line_items: f64,
    pgbench: f64,
    rounds: usize,
}

/// Bulk writes of 1000 records: 1000 single Creates over one connection,
/// then BatchCreate, BatchUpsert (new keys, then the same keys with a
/// change), and 1000 line items on one quote, against pgbench inserting the
/// same 1000 rows with one multi-row INSERT per transaction, one connection.
async fn bulk(world: &Arc<World>, rounds: usize, seconds: f64) -> anyhow::Result<Bulk> {
    const N: usize = 1000;
    let mut client = AccountServiceClient::new(channel(GRPC).await?);
    let account = |i: usize, tag: &str| Account {
        name: format!("Bulk {tag} {i}"),
        external_id: format!("{tag}-{i}"),
        ..Default::default()
    };
    let start = Instant::now();
    for i in 0..N {
        client
            .create_account(authed(
                &world.token,
                CreateAccountRequest {
                    account: Some(account(i, &format!("single-{}", ulid::Ulid::generate()))),
                    request_id: String::new(),
                },
            ))
            .await?;
    }
    let singles = N as f64 / start.elapsed().as_secs_f64();
    let per_second = |elapsed: Duration| (rounds * N) as f64 / elapsed.as_secs_f64();
    let start = Instant::now();
    for _ in 0..rounds {
        let tag = ulid::Ulid::generate().to_string();
        let requests = (0..N)
            .map(|i| CreateAccountRequest {
                account: Some(account(i, &tag)),
                request_id: String::new(),
            })
            .collect();
        client
            .batch_create_accounts(authed(
                &world.token,
                BatchCreateAccountsRequest {
                    requests,
                    request_id: String::new(),
                },
            ))
            .await?;
    }
    let batch_create = per_second(start.elapsed());
    let upserts = |tag: &str, industry: &str| -> Vec<UpsertAccountRequest> {
        (0..N)
            .map(|i| UpsertAccountRequest {
                account: Some(Account {
                    industry: industry.into(),
                    ..account(i, tag)
                }),
                update_mask: None,
                request_id: String::new(),
            })
            .collect()
    };
    let tags: Vec<String> = (0..rounds)
        .map(|_| ulid::Ulid::generate().to_string())
        .collect();
    let timed = |label: &'static str| {
        let (tags, token) = (tags.clone(), world.token.clone());
        let mut client = client.clone();
        async move {
            let start = Instant::now();
            for tag in &tags {
                let out = client
                    .batch_upsert_accounts(authed(
                        &token,
                        BatchUpsertAccountsRequest {
                            requests: upserts(tag, label),
                            request_id: String::new(),
                        },
                    ))
                    .await?
                    .into_inner();
                ensure!(
                    out.accounts.len() == N,
                    "a batch upsert answered {} records",
                    out.accounts.len()
                );
            }
            anyhow::Ok(start.elapsed())
        }
    };
    let batch_upsert_new = per_second(timed("software").await?);
    let batch_upsert_existing = per_second(timed("hardware").await?);
    // 1000 line items on one quote per call (the quote rolled up once).
    let mut quotes = QuoteServiceClient::new(channel(GRPC).await?);
    let mut lines = LineItemServiceClient::new(channel(GRPC).await?);
    let mut elapsed = Duration::ZERO;
    for _ in 0..rounds {
        let quote = new_quote(&mut quotes, &world.token, "Bulk").await?;
        let requests = (0..N)
            .map(|i| CreateLineItemRequest {
                line_item: Some(LineItem {
                    quote_id: quote.id.clone(),
                    quantity: Some(2.0),
                    unit_price: Some(10.5 + i as f64),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .collect();
        let start = Instant::now();
        lines
            .batch_create_line_items(authed(
                &world.token,
                BatchCreateLineItemsRequest {
                    requests,
                    request_id: String::new(),
                },
            ))
            .await?;
        elapsed += start.elapsed();
    }
    let line_items = per_second(elapsed);
    let insert_cols = "tenant_id, id, created_at, updated_at, created_by, updated_by, source, source_type, schema_version, version";
    let script = format!(
        "\\set n random(1, 999999999999)\n\
         INSERT INTO accounts ({insert_cols}, name, external_id) \
         SELECT '{TENANT}', 'acc_' || lpad((:n::bigint * 1000 + g)::text, 26, '0'), now(), now(), 'bench', 'bench', 'edm', 'api', 1, 1, \
         'Bulk ' || g, 'pg-' || :n || '-' || g FROM generate_series(1, {N}) g;\n"
    );
    let pg = pgbench(&script, "prepared", 1, seconds)?;
    Ok(Bulk {
        singles,
        batch_create,
        batch_upsert_new,
        batch_upsert_existing,
        line_items,
        pgbench: pg.throughput * N as f64,
        rounds,
    })
}

/// Runs a pgbench script at `clients` connections for `seconds`, as the
/// owner; returns transactions per second.
fn pgbench(script: &str, mode: &str, clients: usize, seconds: f64) -> anyhow::Result<Measured> {
    let dir = std::env::temp_dir().join(format!("crm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("script.sql");
    std::fs::write(&path, script)?;
    let url = url::Url::parse(&pg_base())?;
    let out = Command::new("pgbench")
        // `prepared`: 0 until a client has prepared what the service's
        // connections prepare as they open (see `capture`).
        .args(["-n", "-M", mode, "-j", "2", "-D", "prepared=0"])
        .arg("-c")
        .arg(clients.to_string())
        .arg("-T")
        .arg(format!("{}", seconds.ceil() as u64))
        .arg("-h")
        .arg(url.host_str().unwrap_or("127.0.0.1"))
        .arg("-p")
        .arg(url.port().unwrap_or(5432).to_string())
        .arg("-U")
        .arg(if url.username().is_empty() {
            "postgres"
        } else {
            url.username()
        })
        .arg("-f")
        .arg(&path)
        .arg(DB)
        .output()
        .context("running pgbench (it ships with the PostgreSQL server packages)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "pgbench failed:\n{stdout}\n{stderr}\nscript:\n{script}"
    );
    // The `word`-th word of the report line starting with `prefix`.
    let number = |prefix: &str, word: usize| -> Option<f64> {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(word))
            .and_then(|v| v.parse().ok())
    };
    let tps =
        number("tps = ", 2).with_context(|| format!("no tps in pgbench's output:\n{stdout}"))?;
    let failed = number("number of failed transactions:", 4).unwrap_or(0.0) as usize;
    let latency = number("latency average = ", 3).unwrap_or(0.0);
    ensure!(
        !stderr.contains("aborted"),
        "pgbench clients aborted:\n{stderr}\nscript:\n{script}"
    );
    Ok(Measured {
        throughput: tps,
        p50: Duration::from_secs_f64(latency / 1000.0),
        errors: failed,
        ..Default::default()
    })
}

/// A server process, killed when dropped (also on an error's way out).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Starts the server; `pool` overrides the pool size.
fn server(bin: &PathBuf, grpc: &str, http: &str, pool: Option<u32>) -> anyhow::Result<Server> {
    server_with(bin, grpc, http, pool, &[])
}

/// Starts the server with `env` on top.
fn server_with(
    bin: &PathBuf,
    grpc: &str,
    http: &str,
    pool: Option<u32>,
    env: &[(&str, &str)],
) -> anyhow::Result<Server> {
    let mut cmd = Command::new(bin);
    cmd.envs(env.iter().copied());
    cmd.arg("serve")
        .env("DATABASE_URL", format!("{}/{DB}", pg_base()))
        .env("CRM_GRPC_ADDR", grpc)
        .env("CRM_HTTP_ADDR", http)
        .env("CRM_JWT_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(p) = pool {
        cmd.env("CRM_DB_POOL_SIZE", p.to_string());
    }
    Ok(Server(cmd.spawn().with_context(|| {
        format!("starting {} (cargo build --release)", bin.display())
    })?))
}

async fn ready(server: &mut Server, http: &str) -> anyhow::Result<()> {
    for _ in 0..600 {
        if let Some(status) = server.0.try_wait()? {
            bail!("the server for {http} exited: {status} (port in use?)");
        }
        if let Ok(r) = reqwest::get(format!("http://{http}/readyz")).await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the server at {http} did not become ready")
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The change feed's commit-to-delivery latency: `clients` writers create
/// accounts for `duration` while one watch follows the feed; for each
/// account, the time from its Create being acknowledged to its event
/// arriving on the watch (0 when the event beat the acknowledgement).
async fn watch_latency(
    world: &Arc<World>,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<(Duration, Duration, Duration, usize)> {
    use crm::proto::change_service_client::ChangeServiceClient;
    use std::collections::HashMap;
    use std::sync::Mutex;
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let last: i64 = ChangeServiceClient::new(channel(GRPC).await?)
        .list_changes(authed(
            &world.token,
            ListChangesRequest {
                after_sequence: i64::MAX - 1,
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .last_sequence;
    let mut stream = ChangeServiceClient::new(channel(GRPC).await?)
        .watch_changes(authed(
            &world.token,
            WatchChangesRequest {
                after_sequence: last,
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    let received: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watcher = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = stream.message().await {
                if let Some(watch_changes_response::Kind::Change(c)) = msg.kind {
                    received.lock().unwrap().insert(c.record_id, Instant::now());
                }
            }
        })
    };
    let end = Instant::now() + duration;
    let mut writers = Vec::new();
    for c in 0..clients {
        let (acked, world) = (acked.clone(), world.clone());
        let ch = channel(GRPC).await?;
        writers.push(tokio::spawn(async move {
            let mut client = AccountServiceClient::new(ch);
            let mut i = 0;
            while Instant::now() < end {
                i += 1;
                if let Ok(r) = client
                    .create_account(authed(
                        &world.token,
                        CreateAccountRequest {
                            account: Some(Account {
                                name: format!("Watched {c}-{i}"),
                                ..Default::default()
                            }),
                            request_id: String::new(),
                        },
                    ))
                    .await
                {
                    acked
                        .lock()
                        .unwrap()
                        .insert(r.into_inner().id, Instant::now());
                }
            }
        }));
    }
    for w in writers {
        w.await?;
    }
    // Let the last events arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    watcher.abort();
    let acked = acked.lock().unwrap();
    let received = received.lock().unwrap();
    let mut latencies: Vec<Duration> = acked
        .iter()
        .map(|(id, at)| {
            received
                .get(id)
                .map_or(Duration::MAX, |r| r.saturating_duration_since(*at))
        })
        .collect();
    latencies.sort_unstable();
    let missing = latencies.iter().filter(|l| **l == Duration::MAX).count();
    ensure!(
        missing == 0,
        "{missing} acknowledged writes never reached the watch"
    );
    Ok((
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        *latencies.last().unwrap_or(&Duration::ZERO),
        latencies.len(),
    ))
}

/// Makes the clients' idea of the seeded accounts' versions the stored one
/// (after something else — the capture, pgbench — updated them).
async fn sync_versions(conn: &mut PgConnection, world: &World) -> anyhow::Result<()> {
    let versions: Vec<(String, i32)> = sqlx::query_as(
        "SELECT id, version FROM accounts WHERE tenant_id = $1 AND id LIKE 'acc\\_0%'",
    )
    .bind(TENANT)
    .fetch_all(conn)
    .await?;
    for (id, v) in versions {
        if let Ok(n) = id["acc_".len()..].parse::<usize>()
            && (1..=world.accounts).contains(&n)
        {
            world.versions[n - 1].store(v, Ordering::Relaxed);
        }
    }
    Ok(())
}

async fn owner() -> anyhow::Result<PgConnection> {
    Ok(PgConnection::connect(&format!("{}/{DB}", pg_base())).await?)
}

/// Seeds `accounts` accounts in the bench tenant (and as many in another),
/// with ids acc_<n zero-padded>.
async fn seed_accounts(conn: &mut PgConnection, accounts: usize) -> anyhow::Result<()> {
    for (tenant, offset) in [(TENANT, 0), ("bench-other", accounts)] {
        let sql = format!(
            "INSERT INTO accounts (tenant_id, id, created_at, updated_at, created_by, updated_by, source, source_type, \
                 schema_version, version, name, domain, industry, tags) \
             SELECT '{tenant}', 'acc_' || lpad((g + {offset})::text, 26, '0'), \
                 timestamptz '2026-01-01' + g * interval '1 second', now(), 'seed', 'seed', 'edm', 'api', 1, 1, \
                 'Company ' || g, 'company' || g || '.example', 'software', ARRAY['seed'] \
             FROM generate_series(1, {accounts}) g"
        );
        conn.execute(sqlx::AssertSqlSafe(sql)).await?;
    }
    Ok(())
}

/// Creates `quotes` quotes through the API, then gives them the ids
/// qte_<n zero-padded> (so that pgbench scripts can name them).
async fn seed_quotes(token: &str, quotes: usize) -> anyhow::Result<()> {
    let ch = channel(CAPTURE_GRPC).await?;
    let mut q = QuoteServiceClient::new(ch);
    for _ in 0..quotes {
        q.create_quote(authed(
            token,
            CreateQuoteRequest {
                quote: Some(Quote {
                    account_id: id("acc", 1),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await?;
    }
    let mut conn = owner().await?;
    conn.execute(
        "UPDATE quotes q SET id = 'qte_' || lpad(s.n::text, 26, '0') \
         FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM quotes) s WHERE q.id = s.id",
    )
    .await?;
    Ok(())
}

/// The file Postgres writes its log to (stderr of the postmaster, or the
/// logging collector's current file).
async fn log_file(conn: &mut PgConnection) -> anyhow::Result<PathBuf> {
    let collector: Option<String> = sqlx::query_scalar("SELECT pg_current_logfile()")
        .fetch_one(&mut *conn)
        .await
        .ok()
        .flatten();
    let data: String = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&mut *conn)
        .await?;
    if let Some(f) = collector {
        let p = PathBuf::from(&f);
        return Ok(if p.is_absolute() {
            p
        } else {
            PathBuf::from(data).join(p)
        });
    }
    let pid = std::fs::read_to_string(PathBuf::from(&data).join("postmaster.pid"))
        .context("reading postmaster.pid")?
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    std::fs::read_link(format!("/proc/{pid}/fd/2")).context("finding the postmaster's log")
}

/// A statement one request sent: its text, the parameter list logged for it
/// (extended protocol), and whether it came as simple-query text (which may
/// hold several statements in one message).
type Logged = (String, Option<String>, bool);

/// The statements one request sent, from the log lines it produced.
fn statements_from_log(log: &str, user: &str) -> Vec<Logged> {
    // Join continuation lines (they start with a tab) to their entry.
    let mut entries: Vec<String> = Vec::new();
    for line in log.lines() {
        if let Some(cont) = line.strip_prefix('\t') {
            if let Some(last) = entries.last_mut() {
                last.push('\n');
                last.push_str(cont);
            }
        } else {
            entries.push(line.to_owned());
        }
    }
    let mut out: Vec<Logged> = Vec::new();
    for e in entries.iter().filter(|e| e.contains(user)) {
        if let Some(i) = e.find("LOG:  statement: ") {
            out.push((e[i + "LOG:  statement: ".len()..].to_owned(), None, true));
        } else if let Some(i) = e.find("LOG:  execute ") {
            let rest = &e[i + "LOG:  execute ".len()..];
            let sql = rest.split_once(": ").map_or(rest, |(_, s)| s);
            out.push((sql.to_owned(), None, false));
        } else if let Some(i) = e.find("DETAIL:  parameters: ")
            && let Some(last) = out.last_mut()
        {
            last.1 = Some(e[i + "DETAIL:  parameters: ".len()..].to_owned());
        }
    }
    out.retain(|(s, _, _)| s.trim() != "SELECT 1");
    out
}

/// The types of `sql`'s parameters, as Postgres infers them.
async fn parameter_types(conn: &mut PgConnection, sql: &str) -> anyhow::Result<Vec<String>> {
    conn.execute(sqlx::AssertSqlSafe(format!(
        "PREPARE crm_bench_probe AS {sql}"
    )))
    .await
    .with_context(|| format!("preparing {sql}"))?;
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT t::text FROM pg_prepared_statements, unnest(parameter_types) WITH ORDINALITY AS p(t, i) \
         WHERE name = 'crm_bench_probe' ORDER BY i",
    )
    .fetch_all(&mut *conn)
    .await?;
    conn.execute("DEALLOCATE crm_bench_probe").await?;
    Ok(types)
}

/// Replaces `$n` in `sql` with the values of a logged parameter list
/// (`$1 = 'a', $2 = NULL, ...`), cast to the parameters' `types`.
fn inline_parameters(sql: &str, params: &str, types: &[String]) -> String {
    let mut values: BTreeMap<usize, String> = BTreeMap::new();
    let b = params.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut j = start;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let n: usize = params[start..j].parse().unwrap_or(0);
        j += " = ".len();
        let value = if params[j..].starts_with("NULL") {
            j += 4;
            "NULL".to_owned()
        } else {
            // A quoted literal with '' escapes.
            let mut k = j + 1;
            loop {
                if k >= b.len() {
                    break;
                }
                if b[k] == b'\'' {
                    if k + 1 < b.len() && b[k + 1] == b'\'' {
                        k += 2;
                        continue;
                    }
                    break;
                }
                k += 1;
            }
            let v = params[j..(k + 1).min(params.len())].to_owned();
            j = k + 1;
            v
        };
        values.insert(n, value);
        i = j;
    }
    let mut out: Vec<u8> = Vec::with_capacity(sql.len());
    let s = sql.as_bytes();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'$' {
            let mut j = i + 1;
            while j < s.len() && s[j].is_ascii_digit() {
                j += 1;
            }
            if j > i + 1
                && let Some(v) = sql[i + 1..j]
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| values.get(&n))
            {
                let n: usize = sql[i + 1..j].parse().unwrap_or(0);
                out.push(b'(');
                out.extend_from_slice(v.as_bytes());
                out.push(b')');
                if let Some(t) = types.get(n.wrapping_sub(1)) {
                    out.extend_from_slice(b"::");
                    out.extend_from_slice(t.as_bytes());
                }
                i = j;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    String::from_utf8(out).expect("split at ASCII bytes only")
}

/// Captures the statements of one request per operation from a server whose
/// connections log every statement, as pgbench scripts in which the ids
/// vary per transaction like the harness's.
async fn capture(
    world: &World,
    log: &PathBuf,
    conn: &mut PgConnection,
    app_role: &str,
) -> anyhow::Result<BTreeMap<Op, (String, &'static str)>> {
    let ch = channel(CAPTURE_GRPC).await?;
    let mut scripts = BTreeMap::new();
    for op in Op::ALL {
        // The first call warms the connection's statement cache; the second
        // is the steady state, and is captured.
        let conn = Conn::Grpc(ch.clone());
        let probe = World {
            token: world.token.clone(),
            accounts: world.accounts,
            quotes: world.quotes,
            clients: 1,
            versions: (0..world.accounts).map(|_| AtomicI32::new(1)).collect(),
            next: AtomicUsize::new(7),
        };
        ensure!(
            call(op, &conn, &probe, 0, 0, CAPTURE_HTTP).await,
            "{op:?} failed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = std::fs::metadata(log)?.len();
        // Account 1 is not updated by the bench's clients; version 2 now.
        let update_target = id("acc", 1);
        let (created, sent) = match op {
            Op::Create => {
                let r = AccountServiceClient::new(ch.clone())
                    .create_account(authed(
                        &world.token,
                        CreateAccountRequest {
                            account: Some(Account {
                                name: "Bench account 1".into(),
                                ..Default::default()
                            }),
                            request_id: String::new(),
                        },
                    ))
                    .await?
                    .into_inner();
                (Some(r.id), String::new())
            }
            Op::Get => {
                AccountServiceClient::new(ch.clone())
                    .get_account(authed(&world.token, GetAccountRequest { id: id("acc", 2) }))
                    .await?;
                (None, id("acc", 2))
            }
            Op::Update => {
                let current = AccountServiceClient::new(ch.clone())
                    .get_account(authed(
                        &world.token,
                        GetAccountRequest {
                            id: update_target.clone(),
                        },
                    ))
                    .await?
                    .into_inner();
                tokio::time::sleep(Duration::from_millis(100)).await;
                let before2 = std::fs::metadata(log)?.len();
                AccountServiceClient::new(ch.clone())
                    .update_account(authed(
                        &world.token,
                        UpdateAccountRequest {
                            account: Some(Account {
                                id: update_target.clone(),
                                name: "Renamed 1".into(),
                                version: current.version,
                                ..Default::default()
                            }),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["name".into()],
                            }),
                            request_id: String::new(),
                        },
                    ))
                    .await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let after = std::fs::metadata(log)?.len();
                scripts.insert(op, (before2, after, update_target.clone(), None));
                continue;
            }
            Op::List => {
                AccountServiceClient::new(ch.clone())
                    .list_accounts(authed(
                        &world.token,
                        ListAccountsRequest {
                            page_size: 50,
                            ..Default::default()
                        },
                    ))
                    .await?;
                (None, String::new())
            }
            Op::LineItem => {
                let r = LineItemServiceClient::new(ch.clone())
                    .create_line_item(authed(
                        &world.token,
                        CreateLineItemRequest {
                            line_item: Some(LineItem {
                                quote_id: id("qte", 1),
                                quantity: Some(2.0),
                                unit_price: Some(10.5),
                                ..Default::default()
                            }),
                            request_id: String::new(),
                        },
                    ))
                    .await?
                    .into_inner();
                (Some(r.id), id("qte", 1))
            }
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after = std::fs::metadata(log)?.len();
        scripts.insert(op, (before, after, sent, created));
    }
    // Turn the captured windows into scripts.
    let text = std::fs::read(log)?;
    // What the service's connections prepared as they opened, read once.
    let prepared: Vec<String> =
        statements_from_log(&String::from_utf8_lossy(&text), &format!("{app_role}@"))
            .into_iter()
            .flat_map(|(sql, ..)| {
                sql.split(';')
                    .map(str::trim)
                    .filter(|s| s.starts_with("PREPARE "))
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
    let mut out = BTreeMap::new();
    for (op, (from, to, sent, created)) in &scripts {
        let window = String::from_utf8_lossy(&text[*from as usize..*to as usize]);
        let statements = statements_from_log(&window, &format!("{app_role}@"));
        ensure!(
            !statements.is_empty(),
            "no statements captured for {op:?} (is log_statement honoured?)"
        );
        let mut script = String::new();
        let mut vars = Vec::new();
        // pgbench reads `:word` as a variable, even inside a literal (a
        // logged timestamp's 16:56:52): split such colons out of literals.
        let mut body = Vec::new();
        // A request that sent only simple-query messages is replayed as
        // such (pgbench -M simple, a message's statements joined by `\;`
        // into one message); otherwise -M prepared, where a message of
        // several statements has to go as one round trip per statement.
        let simple = statements.iter().all(|(_, _, simple)| *simple);
        for (sql, params, _) in &statements {
            let sql = match params {
                Some(p) => inline_parameters(sql, p, &parameter_types(conn, sql).await?),
                None => sql.clone(),
            };
            let sql = escape_colons(&sql);
            body.push(if simple { compound(&sql) } else { sql });
        }
        let subst = |body: &mut Vec<String>, from: &str, expr: &str| {
            for s in body.iter_mut() {
                *s = s.replace(from, &format!("' || {expr} || '"));
            }
        };
        match op {
            Op::Get | Op::Update => {
                vars.push(format!("\\set n random(2, {})", world.accounts));
                subst(&mut body, sent, "'acc_' || lpad(:n::text, 26, '0')");
            }
            Op::LineItem => {
                vars.push(format!("\\set q random(1, {})", world.quotes));
                subst(&mut body, sent, "'qte_' || lpad(:q::text, 26, '0')");
            }
            _ => {}
        }
        if let Some(created) = created {
            vars.push("\\set r random(1000000000, 999999999999999)".into());
            let prefix = created.split('_').next().unwrap_or_default();
            subst(
                &mut body,
                created,
                &format!("'{prefix}_' || lpad(:r::text, 26, '0')"),
            );
        }
        for v in vars {
            script.push_str(&v);
            script.push('\n');
        }
        // A statement the service's connections prepare as they open
        // (EXECUTE name(...)): each pgbench client prepares it once, as the
        // first thing it runs (-D prepared=0, see `pgbench`).
        for name in body.iter().flat_map(|s| executed(s)) {
            let prepare = prepared
                .iter()
                .find(|s| s.starts_with(&format!("PREPARE {name}(")))
                .with_context(|| format!("no PREPARE {name} in the log"))?;
            script.push_str(&format!(
                "\\if :prepared = 0\n{};\n\\set prepared 1\n\\endif\n",
                escape_colons(prepare).replace('\n', " ")
            ));
        }
        for s in body {
            // pgbench wants one statement per line (continuations end in \).
            script.push_str(&s.replace('\n', " "));
            script.push_str(";\n");
        }
        out.insert(*op, (script, if simple { "simple" } else { "prepared" }));
    }
    Ok(out)
}

/// The names of the prepared statements `sql` runs (`EXECUTE name(`).
fn executed(sql: &str) -> Vec<String> {
    sql.match_indices("EXECUTE ")
        .filter_map(|(i, m)| {
            let rest = &sql[i + m.len()..];
            let end = rest.find('(')?;
            Some(rest[..end].trim().to_string())
        })
        .collect()
}

/// `sql`'s statements (`;` outside literals) joined with pgbench's `\;`, so
/// that they go out as one simple-query message.
fn compound(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quoted = false;
    let mut chars = sql.trim_end().trim_end_matches(';').chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == ';' && !quoted {
            out.push_str(" \\;");
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            out.push(' ');
            continue;
        }
        out.push(c);
    }
    out
}

/// Rewrites each lone `:` followed by a word character (only found inside
/// literals: casts are `::`) as `' || ':' || '`.
fn escape_colons(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    for (i, ch) in sql.char_indices() {
        let lone = ch == ':'
            && (i == 0 || b[i - 1] != b':')
            && b.get(i + 1)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if lone {
            out.push_str("' || ':' || '");
        } else {
            out.push(ch);
        }
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm::net::install_tls_provider();
    let mut args = Args::parse();
    if args.smoke {
        args.seconds = args.seconds.min(1.0);
        args.clients = args.clients.min(4);
        args.latency_clients = args.latency_clients.min(8);
        args.accounts = args.accounts.min(500);
    }
    let ops: Vec<Op> = if args.ops.is_empty() {
        Op::ALL.to_vec()
    } else {
        Op::ALL
            .into_iter()
            .filter(|o| args.ops.iter().any(|k| k == o.key()))
            .collect()
    };
    let warmup = Duration::from_secs_f64(if args.smoke { 0.2 } else { 1.0 });
    let duration = Duration::from_secs_f64(args.seconds);

    // A fresh database, migrated and seeded as the owner.
    let mut admin = PgConnection::connect(&format!("{}/postgres", pg_base())).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {DB} WITH (FORCE)"
        )))
        .await?;
    admin.close().await?;
    let status = Command::new(&args.bin)
        .arg("migrate")
        .env("DATABASE_URL", format!("{}/{DB}", pg_base()))
        .env("CRM_JWT_SECRET", SECRET)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {} migrate", args.bin.display()))?;
    ensure!(status.success(), "crm migrate failed");
    let mut conn = owner().await?;
    seed_accounts(&mut conn, args.accounts).await?;
    let quotes = args.clients.max(args.latency_clients) * 8;
    let token = crm::auth::mint(
        SECRET.as_bytes(),
        TENANT,
        "bench",
        None,
        24 * 3600,
        None,
        None,
    )?;
    let world = Arc::new(World {
        token: token.clone(),
        accounts: args.accounts,
        quotes,
        clients: args.clients,
        versions: (0..args.accounts).map(|_| AtomicI32::new(1)).collect(),
        next: AtomicUsize::new(1_000_000),
    });

    // Capture what the service sends per request: a server whose connections
    // log every statement.
    let log = log_file(&mut conn).await?;
    // The service's connections log in as this database's request role
    // (migration 0004); its name is [a-z0-9_], inlined unquoted.
    let app_role: String = sqlx::query_scalar("SELECT crm_app_role()")
        .fetch_one(&mut conn)
        .await?;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "ALTER ROLE {app_role} IN DATABASE {DB} SET log_statement = 'all'"
    )))
    .await?;
    let mut capturer = server(&args.bin, CAPTURE_GRPC, CAPTURE_HTTP, Some(1))?;
    ready(&mut capturer, CAPTURE_HTTP).await?;
    seed_quotes(&token, quotes).await?;
    let replays = capture(&world, &log, &mut conn, &app_role).await;
    drop(capturer);
    conn.execute(sqlx::AssertSqlSafe(format!(
        "ALTER ROLE {app_role} IN DATABASE {DB} RESET log_statement"
    )))
    .await?;
    let replays = replays?;
    // The capture updated some accounts: start from the stored versions.
    sync_versions(&mut conn, &world).await?;
    conn.execute("VACUUM ANALYZE").await?;

    // The server under test.
    let mut srv = server(&args.bin, GRPC, HTTP, None)?;
    ready(&mut srv, HTTP).await?;
    let pid = srv.0.id();
    SERVER_PID.store(pid, Ordering::Relaxed);

    let mut report = String::new();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for &op in &ops {
        eprintln!("{}…", op.name());
        let grpc = drive(op, Transport::Grpc, &world, args.clients, warmup, duration).await?;
        let rest = drive(op, Transport::Rest, &world, args.clients, warmup, duration).await?;
        let one = pgbench(
            &op.yardstick(args.accounts, quotes),
            "prepared",
            args.clients,
            args.seconds,
        )?;
        let (replay_script, replay_mode) = &replays[&op];
        let replay = pgbench(replay_script, replay_mode, args.clients, args.seconds)?;
        for (what, m) in [("gRPC", &grpc), ("REST", &rest)] {
            if m.errors > 0 || m.calls == 0 {
                failures.push(format!(
                    "{} over {what}: {} errors in {} calls",
                    op.name(),
                    m.errors,
                    m.calls
                ));
            }
        }
        rows.push((op, grpc, rest, one, replay));
    }
    let latency = if ops.contains(&Op::Get) {
        eprintln!("GetAccount at {} clients…", args.latency_clients);
        let m = drive(
            Op::Get,
            Transport::Grpc,
            &world,
            args.latency_clients,
            warmup,
            duration,
        )
        .await?;
        if m.errors > 0 {
            failures.push(format!(
                "GetAccount at {} clients: {} errors",
                args.latency_clients, m.errors
            ));
        }
        Some(m)
    } else {
        None
    };
    // The change feed: what it costs a write (the same server, trigger off
    // then on), how fast a watch sees a commit, and the counter mode.
    let feed_ops: Vec<Op> = [Op::Create, Op::Update]
        .into_iter()
        .filter(|o| ops.contains(o))
        .collect();
    let mut feed_rows = Vec::new();
    for &op in &feed_ops {
        eprintln!("{} with the change feed off, then on…", op.name());
        // pgbench updated the seeded accounts since the clients last did.
        sync_versions(&mut conn, &world).await?;
        conn.execute("ALTER TABLE accounts DISABLE TRIGGER accounts_changed")
            .await?;
        let off = drive(op, Transport::Grpc, &world, args.clients, warmup, duration).await?;
        conn.execute("ALTER TABLE accounts ENABLE TRIGGER accounts_changed")
            .await?;
        let on = drive(op, Transport::Grpc, &world, args.clients, warmup, duration).await?;
        for (what, m) in [("feed off", &off), ("feed on", &on)] {
            if m.errors > 0 || m.calls == 0 {
                failures.push(format!("{} ({what}): {} errors", op.name(), m.errors));
            }
        }
        feed_rows.push((op, off, on));
    }
    eprintln!("watch commit-to-delivery…");
    let watch = watch_latency(&world, args.clients / 2, duration).await?;
    eprintln!("bulk: single creates, batches, upserts, line items, pgbench's multi-row INSERT…");
    let bulk = bulk(&world, if args.smoke { 1 } else { 5 }, args.seconds).await?;
    let long_lines = if args.smoke { 300 } else { 3000 };
    eprintln!("CreateLineItem on a quote of {long_lines} lines…");
    let long = long_quote(&world, long_lines, 50).await?;
    let rss = peak_rss_mib(pid);
    drop(srv);
    let mut counter_rows = Vec::new();
    if !feed_ops.is_empty() {
        eprintln!("counter sequencing…");
        let mut counter = server_with(
            &args.bin,
            GRPC,
            HTTP,
            None,
            &[("CRM_CHANGES_SEQUENCING", "counter")],
        )?;
        ready(&mut counter, HTTP).await?;
        for &op in &feed_ops {
            sync_versions(&mut conn, &world).await?;
            let m = drive(op, Transport::Grpc, &world, args.clients, warmup, duration).await?;
            if m.errors > 0 || m.calls == 0 {
                failures.push(format!("{} (counter): {} errors", op.name(), m.errors));
            }
            counter_rows.push((op, m));
        }
        drop(counter);
    }

    writeln!(
        report,
        "{} clients, {:.0} s per measurement after {:.0} s of warm-up; {} seeded accounts, {} quotes. \
         Service: the release binary with its defaults (pool of 16, request logs on, to /dev/null); \
         clients: one connection each (gRPC: HTTP/2, REST: HTTP/1.1 keep-alive). \
         pgbench: `-j 2`, as the table owner, same database; the one statement with `-M prepared`, \
         the service's statements as the service sent them (`-M simple` when a request sent only \
         simple-query messages, which the service uses to set the tenant together with `BEGIN` \
         or with a Get's read; otherwise `-M prepared`, each statement of such a message then \
         costing pgbench a round trip the service does not pay). \
         The harness's clients run on the same cores as the server and Postgres.\n",
        args.clients,
        args.seconds,
        warmup.as_secs_f64(),
        args.accounts,
        quotes
    )?;
    writeln!(
        report,
        "| operation | gRPC calls/s | p50 | p90 | p99 | REST calls/s | p50 | p90 | p99 | errors | pgbench: the one statement, tps | pgbench: the service's statements, tps | gRPC / one statement | gRPC / service's statements | REST / gRPC | CPU µs/call, gRPC: server | Postgres | CPU µs/call, REST: server | Postgres |"
    )?;
    writeln!(
        report,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for (op, g, r, one, replay) in &rows {
        writeln!(
            report,
            "| {} | {:.0} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.0} | {:.0} | **{:.2}×** | {:.2}× | **{:.2}×** | {:.0} | {:.0} | {:.0} | {:.0} |",
            op.name(),
            g.throughput,
            ms(g.p50),
            ms(g.p90),
            ms(g.p99),
            r.throughput,
            ms(r.p50),
            ms(r.p90),
            ms(r.p99),
            g.errors + r.errors,
            one.throughput,
            replay.throughput,
            g.throughput / one.throughput,
            g.throughput / replay.throughput,
            r.throughput / g.throughput,
            g.server_us,
            g.postgres_us,
            r.server_us,
            r.postgres_us
        )?;
    }
    writeln!(
        report,
        "\nLatencies in ms. Server peak RSS (VmHWM) over the whole run: **{rss:.1} MiB**."
    )?;
    if let Some(m) = &latency {
        writeln!(
            report,
            "GetAccount over gRPC at {} clients: {:.0} calls/s, p50 {} ms, p90 {} ms, **p99 {} ms**, {} errors.",
            args.latency_clients,
            m.throughput,
            ms(m.p50),
            ms(m.p90),
            ms(m.p99),
            m.errors
        )?;
    }
    if !feed_rows.is_empty() {
        writeln!(
            report,
            "\n#### The change feed\n\nWrites over gRPC at {} clients on one tenant, the same server: the \
             capture trigger disabled (`feed off`, what a write cost before the feed), then enabled \
             (`relay` sequencing, the default); then a server with `CRM_CHANGES_SEQUENCING=counter` \
             (the Citus mode: a tenant's writes commit one at a time).\n",
            args.clients
        )?;
        writeln!(
            report,
            "| operation | feed off, calls/s | p99 | feed on (relay), calls/s | p99 | on / off | counter, calls/s | p99 | counter / off |"
        )?;
        writeln!(report, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for (op, off, on) in &feed_rows {
            let counter = counter_rows.iter().find(|(o, _)| o == op).map(|(_, m)| m);
            writeln!(
                report,
                "| {} | {:.0} | {} | {:.0} | {} | **{:.2}×** | {} | {} | {} |",
                op.name(),
                off.throughput,
                ms(off.p99),
                on.throughput,
                ms(on.p99),
                on.throughput / off.throughput,
                counter.map_or("—".into(), |m| format!("{:.0}", m.throughput)),
                counter.map_or("—".into(), |m| ms(m.p99)),
                counter.map_or("—".into(), |m| format!(
                    "{:.2}×",
                    m.throughput / off.throughput
                )),
            )?;
        }
    }
    writeln!(
        report,
        "\nWatch, commit to delivery ({} writers creating accounts for {:.0} s, one WatchChanges stream; \
         from each Create's acknowledgement to its event on the stream): {} events, \
         p50 **{} ms**, p99 **{} ms**, max {} ms.",
        args.clients / 2,
        args.seconds,
        watch.3,
        ms(watch.0),
        ms(watch.1),
        ms(watch.2)
    )?;
    writeln!(
        report,
        "\n#### Bulk writes\n\nOne connection, 1000 records per call, {} calls each (records/s over all of them); \
         the single Creates are 1000 calls of one record. pgbench: one connection, one multi-row \
         `INSERT … SELECT … FROM generate_series(1, 1000)` per transaction into the same table \
         (its trigger included), `-M prepared`.\n",
        bulk.rounds
    )?;
    writeln!(
        report,
        "| path | records/s | ÷ single Creates | ÷ pgbench's multi-row INSERT |\n|---|---:|---:|---:|"
    )?;
    for (label, value) in [
        ("1000 single CreateAccount calls", bulk.singles),
        ("BatchCreateAccounts (1000)", bulk.batch_create),
        ("BatchUpsertAccounts (1000 new keys)", bulk.batch_upsert_new),
        (
            "BatchUpsertAccounts (the same 1000 keys, each changed)",
            bulk.batch_upsert_existing,
        ),
        (
            "BatchCreateLineItems (1000 on one quote, one rollup)",
            bulk.line_items,
        ),
        ("pgbench: one INSERT of 1000 rows", bulk.pgbench),
    ] {
        writeln!(
            report,
            "| {label} | {value:.0} | **{:.1}×** | **{:.2}×** |",
            value / bulk.singles,
            value / bulk.pgbench
        )?;
    }
    writeln!(
        report,
        "\n#### CreateLineItem against the quote's size\n\nOne client, one quote: p50 of 50 \
         sequential CreateLineItem calls on the new quote, then the quote filled by batches, then \
         p50 of 50 more ending at line {long_lines}: {} ms, then {} ms: **{:.2}×**.",
        ms(long.0),
        ms(long.1),
        long.1.as_secs_f64() / long.0.as_secs_f64()
    )?;
    writeln!(
        report,
        "\n<details><summary>The pgbench scripts</summary>\n"
    )?;
    for (op, ..) in &rows {
        writeln!(
            report,
            "{}, the one statement:\n\n```sql\n{}```\n\nthe service's statements (captured from one request; `-M {}`):\n\n```sql\n{}```\n",
            op.name(),
            op.yardstick(args.accounts, quotes),
            replays[op].1,
            replays[op].0
        )?;
    }
    writeln!(report, "</details>")?;
    println!("{report}");
    if !failures.is_empty() {
        bail!("errors during the run:\n{}", failures.join("\n"));
    }
    Ok(())
}
