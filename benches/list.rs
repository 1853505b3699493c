//! List at scale: seeds 1M accounts in one tenant and 1M in four others, then
//! measures, through the gRPC API, page 1 and page 10,000 (reached by
//! tokens), a filter on an indexed field, a tag filter, a custom_fields
//! filter, two searches, and typed filters and orders on two defined custom
//! fields (an integer and a date, defined through FieldDefinitionService,
//! whose indexes the server builds); prints a Markdown table and the plans
//! Postgres chose (EXPLAIN ANALYZE, run as the application role with the
//! tenant set).
//!
//!   cargo bench --bench list                 # seeds once, reuses the data
//!   CRM_BENCH_RESEED=1 cargo bench --bench list
//!
//! Run by scripts/bench-list.sh, which writes the results into BENCHMARKS.md.

use std::time::{Duration, Instant};

use crm::app::Application;
use crm::config::Config;
use crm::proto::account_service_client::AccountServiceClient;
use crm::proto::{Account, ListAccountsRequest};
use crm::records::Entity;
use crm::sql::list::{Plan, select_page};
use sqlx::{Connection, Execute, Executor, PgConnection};
use tonic::transport::Channel;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{authed, pg_base};

const DB: &str = "crm_bench_list";
const SECRET: &str = "bench-secret-bench-secret-bench-secret-0";
const TENANT: &str = "bench-a";
const ROWS: i64 = 1_000_000;
const ITERATIONS: usize = 200;

async fn seed(conn: &mut PgConnection) -> anyhow::Result<()> {
    seed_accounts(conn).await?;
    // The seed's inserts went through the change-capture trigger: without
    // this, the sequencer would number 2M events while the lists are
    // measured.
    conn.execute("TRUNCATE change_outbox").await?;
    Ok(())
}

async fn seed_accounts(conn: &mut PgConnection) -> anyhow::Result<()> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&mut *conn)
        .await?;
    // Seeds of before the date key are redone.
    let current: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM accounts WHERE custom_fields ? 'renewal')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if n >= 2 * ROWS && current && std::env::var("CRM_BENCH_RESEED").is_err() {
        eprintln!("reusing {n} seeded accounts");
        return Ok(());
    }
    eprintln!(
        "seeding {} accounts (1M in {TENANT}, 1M in four others)…",
        2 * ROWS
    );
    let started = Instant::now();
    conn.execute("TRUNCATE accounts CASCADE").await?;
    // One statement per million rows; the others' tenants interleave in time.
    for (tenant_expr, offset) in [
        (format!("'{TENANT}'"), 0),
        (
            "'bench-' || (ARRAY['b','c','d','e'])[1 + g % 4]".to_owned(),
            ROWS,
        ),
    ] {
        let sql = format!(
            "INSERT INTO accounts (tenant_id, id, created_at, updated_at, created_by, updated_by, source, source_type, \
                 schema_version, version, name, domain, owner_id, industry, tags, custom_fields, annual_revenue) \
             SELECT {tenant_expr}, 'acc_' || lpad((g + {offset})::text, 26, '0'), \
                 timestamptz '2025-01-01' + (g + {offset}) * interval '10 seconds', now(), 'seed', 'seed', 'edm', 'api', 1, 1, \
                 'Company ' || g || ' ' || (ARRAY['Acme','Globex','Initech','Umbrella','Hooli','Stark','Wayne','Wonka'])[1 + g % 8], \
                 'company' || g || '.example', 'usr-' || (g % 200), \
                 (ARRAY['software','retail','energy','health'])[1 + g % 4], \
                 CASE WHEN g % 100 = 0 THEN ARRAY['vip', 'eu'] WHEN g % 2 = 0 THEN ARRAY['eu'] ELSE ARRAY['us'] END, \
                 jsonb_build_object('tier', CASE WHEN g % 200 = 0 THEN 'platinum' ELSE (ARRAY['gold','silver','bronze'])[1 + g % 3] END, \
                                    'seats', g % 500, \
                                    'renewal', to_char(date '2025-01-01' + ((g::bigint * 7919) % 1461)::int, 'YYYY-MM-DD')), \
                 (g % 100000) * 10.5 \
             FROM generate_series(1, {ROWS}) g"
        );
        conn.execute(sqlx::AssertSqlSafe(sql)).await?;
    }
    conn.execute("VACUUM ANALYZE accounts").await?;
    eprintln!("seeded in {:.0?}", started.elapsed());
    Ok(())
}

struct Stats {
    p50: Duration,
    p99: Duration,
    rows: usize,
}

async fn measure(
    c: &mut AccountServiceClient<Channel>,
    token: &str,
    req: ListAccountsRequest,
) -> anyhow::Result<Stats> {
    let mut samples = Vec::with_capacity(ITERATIONS);
    let mut rows = 0;
    for i in 0..ITERATIONS + 10 {
        let started = Instant::now();
        let r = c
            .list_accounts(authed(token, req.clone()))
            .await?
            .into_inner();
        if i >= 10 {
            samples.push(started.elapsed());
        }
        rows = r.accounts.len();
    }
    samples.sort();
    Ok(Stats {
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
        rows,
    })
}

/// The tenant's custom-field definitions, as the server holds them.
fn schema() -> std::sync::Arc<crm::custom::ResourceSchema> {
    use crm::custom::{Definition, FieldType, ResourceSchema};
    let d = |key: &str, ty| Definition {
        id: String::new(),
        key: key.into(),
        ty,
        options: vec![],
        required: false,
        unique: false,
        max_length: None,
        minimum: None,
        maximum: None,
    };
    std::sync::Arc::new(ResourceSchema::new([
        d("seats", FieldType::Integer),
        d("renewal", FieldType::Date),
    ]))
}

async fn explain(
    conn: &mut PgConnection,
    req: &ListAccountsRequest,
    after: Option<Vec<Option<String>>>,
) -> anyhow::Result<String> {
    let meta = Account::kind().meta();
    let plan = Plan::new(
        meta,
        schema(),
        &req.filter,
        &req.order_by,
        &req.search,
        false,
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut qb = select_page(
        meta,
        "accounts",
        &plan,
        TENANT,
        None,
        false,
        after.as_deref(),
        51,
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let sql = qb.sql().as_str().to_owned();
    let args = qb
        .build()
        .take_arguments()
        .map_err(|e| anyhow::anyhow!(e))?
        .expect("arguments");
    // This database's request role (migration 0004), as the service runs.
    let role: String = sqlx::query_scalar("SELECT crm_app_role()")
        .fetch_one(&mut *conn)
        .await?;
    let mut tx = conn.begin().await?;
    // Inlined: role names are [a-z0-9_].
    tx.execute(sqlx::AssertSqlSafe(format!("SET LOCAL ROLE {role}")))
        .await?;
    sqlx::query("SELECT set_config('crm.tenant_id', $1, true)")
        .bind(TENANT)
        .execute(&mut *tx)
        .await?;
    let rows: Vec<(String,)> = sqlx::query_as_with(
        sqlx::AssertSqlSafe(format!("EXPLAIN (ANALYZE, COSTS OFF) {sql}")),
        args,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.rollback().await?;
    Ok(rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config {
        db_acquire_timeout_secs: 5,
        health_interval_secs: 5,
        db_statement_timeout_ms: 30_000,
        request_timeout_secs: 60,
        ..common::config(format!("{}/{DB}", pg_base()), SECRET)
    };
    let app = Application::build(&cfg, false).await?;
    let addr = app.grpc_addr();
    let mut owner = PgConnection::connect(&cfg.base.database_url).await?;
    seed(&mut owner).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        stopped.await.ok();
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut c = AccountServiceClient::new(channel.clone());
    let token = crm::auth::mint(SECRET.as_bytes(), TENANT, "bench", None, 3600, None, None)?;
    let define = define_fields(channel.clone(), &token).await?;

    // Walk to page 10,000 by tokens (page_size 50: 500,000 rows in).
    eprintln!("walking to page 10,000…");
    let walk = Instant::now();
    let mut token_10k = String::new();
    let mut last_keys = None;
    for page in 1..10_000 {
        let r = c
            .list_accounts(authed(
                &token,
                ListAccountsRequest {
                    page_size: 50,
                    page_token: token_10k.clone(),
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        token_10k = r.next_page_token;
        if page == 9_999 {
            let last = r.accounts.last().expect("a full page");
            last_keys = Some(vec![
                Some(
                    chrono::DateTime::from_timestamp(
                        last.created_at.unwrap().seconds,
                        last.created_at.unwrap().nanos as u32,
                    )
                    .unwrap()
                    .format("%Y-%m-%d %H:%M:%S%.6f+00")
                    .to_string(),
                ),
                Some(last.id.clone()),
            ]);
        }
    }
    let walk = walk.elapsed();

    let cases: Vec<(&str, ListAccountsRequest)> = vec![
        (
            "page 1 (default order)",
            ListAccountsRequest {
                page_size: 50,
                ..Default::default()
            },
        ),
        (
            "page 10,000 (by token)",
            ListAccountsRequest {
                page_size: 50,
                page_token: token_10k.clone(),
                ..Default::default()
            },
        ),
        (
            "filter on an indexed field: owner_id = \"usr-42\"",
            ListAccountsRequest {
                page_size: 50,
                filter: "owner_id = \"usr-42\"".into(),
                ..Default::default()
            },
        ),
        (
            "tag filter: tags:vip",
            ListAccountsRequest {
                page_size: 50,
                filter: "tags:vip".into(),
                ..Default::default()
            },
        ),
        (
            "custom_fields filter: custom_fields.tier = \"platinum\"",
            ListAccountsRequest {
                page_size: 50,
                filter: "custom_fields.tier = \"platinum\"".into(),
                ..Default::default()
            },
        ),
        (
            "defined integer, equality: custom_fields.seats = 250",
            ListAccountsRequest {
                page_size: 50,
                filter: "custom_fields.seats = 250".into(),
                ..Default::default()
            },
        ),
        (
            "defined integer, range: custom_fields.seats > 490",
            ListAccountsRequest {
                page_size: 50,
                filter: "custom_fields.seats > 490".into(),
                ..Default::default()
            },
        ),
        (
            "defined integer, order_by=custom_fields.seats desc",
            ListAccountsRequest {
                page_size: 50,
                order_by: "custom_fields.seats desc".into(),
                ..Default::default()
            },
        ),
        (
            "defined integer, range and order: seats >= 100 AND seats < 110, order_by=custom_fields.seats",
            ListAccountsRequest {
                page_size: 50,
                filter: "custom_fields.seats >= 100 AND custom_fields.seats < 110".into(),
                order_by: "custom_fields.seats".into(),
                ..Default::default()
            },
        ),
        (
            "defined date, equality: custom_fields.renewal = \"2026-02-28\"",
            ListAccountsRequest {
                page_size: 50,
                filter: "custom_fields.renewal = \"2026-02-28\"".into(),
                ..Default::default()
            },
        ),
        (
            "defined date, range across a year: renewal >= \"2027-12-25\"",
            ListAccountsRequest {
                page_size: 50,
                filter: "custom_fields.renewal >= \"2027-12-25\"".into(),
                ..Default::default()
            },
        ),
        (
            "defined date, order_by=custom_fields.renewal",
            ListAccountsRequest {
                page_size: 50,
                order_by: "custom_fields.renewal".into(),
                ..Default::default()
            },
        ),
        (
            "search: \"company 4242\"",
            ListAccountsRequest {
                page_size: 50,
                search: "company 4242".into(),
                ..Default::default()
            },
        ),
        (
            "search with a typo: \"umbrela 777779\"",
            ListAccountsRequest {
                page_size: 50,
                search: "umbrela 777779".into(),
                ..Default::default()
            },
        ),
    ];
    let mut table = String::from(
        "| query (1M accounts in the tenant, 1M in others) | rows | p50 | p99 |\n|---|---:|---:|---:|\n",
    );
    let mut plans = String::new();
    let mut results = Vec::new();
    for (name, req) in &cases {
        let s = measure(&mut c, &token, req.clone()).await?;
        table.push_str(&format!(
            "| {name} | {} | {:.2} ms | {:.2} ms |\n",
            s.rows,
            ms(s.p50),
            ms(s.p99)
        ));
        results.push((*name, s));
        let after = name
            .starts_with("page 10,000")
            .then(|| last_keys.clone())
            .flatten();
        let mut req = req.clone();
        req.page_token.clear();
        plans.push_str(&format!(
            "\n#### {name}\n\n```\n{}\n```\n",
            explain(&mut owner, &req, after).await?
        ));
    }
    let p1 = results[0].1.p50;
    let p10k = results[1].1.p50;
    println!("## List at scale\n");
    println!(
        "{ITERATIONS} sequential calls per query through the gRPC API (one client, release build), after 10 warm-up calls. Page 10,000 was reached by following 9,999 page tokens ({:.1} s).\n",
        walk.as_secs_f64()
    );
    println!("{table}");
    println!(
        "Page 10,000 / page 1 (p50): **{:.2}×** (target ≤ 1.2×). Worst p99: **{:.2} ms** (target < 50 ms).\n",
        ms(p10k) / ms(p1),
        results.iter().map(|r| ms(r.1.p99)).fold(0.0, f64::max)
    );
    println!("{define}");
    println!("### Plans (EXPLAIN ANALYZE as the request role, tenant set)\n{plans}");
    stop.send(()).ok();
    server.await??;
    Ok(())
}

/// Defines `seats` (integer) and `renewal` (date) for the tenant, unless
/// they are, and waits for their indexes; says how long that took.
async fn define_fields(channel: Channel, token: &str) -> anyhow::Result<String> {
    use crm::proto::field_definition_service_client::FieldDefinitionServiceClient;
    use crm::proto::{
        CreateFieldDefinitionRequest, FieldDefinition, GetFieldDefinitionRequest,
        ListFieldDefinitionsRequest,
    };
    let mut c = FieldDefinitionServiceClient::new(channel);
    let mut out = String::new();
    let listed = c
        .list_field_definitions(authed(token, ListFieldDefinitionsRequest::default()))
        .await?
        .into_inner()
        .field_definitions;
    let mut ids = Vec::new();
    for (key, ty) in [("seats", "integer"), ("renewal", "date")] {
        if let Some(d) = listed.iter().find(|d| d.key == key) {
            ids.push(d.id.clone());
            continue;
        }
        let started = Instant::now();
        let d = c
            .create_field_definition(authed(
                token,
                CreateFieldDefinitionRequest {
                    field_definition: Some(FieldDefinition {
                        resource_type: "account".into(),
                        key: key.into(),
                        r#type: ty.into(),
                        ..Default::default()
                    }),
                },
            ))
            .await?
            .into_inner();
        out.push_str(&format!(
            "Defining `{key}` ({ty}) over the tenant's 1M live accounts (every value checked first): {:.2} s. ",
            started.elapsed().as_secs_f64()
        ));
        let started = Instant::now();
        loop {
            let got = c
                .get_field_definition(authed(
                    token,
                    GetFieldDefinitionRequest { id: d.id.clone() },
                ))
                .await?
                .into_inner();
            match got.index_state.as_str() {
                "ready" => break,
                "failed" => anyhow::bail!("the index of {key} failed: {}", got.index_error),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        out.push_str(&format!(
            "Its index built in the background (`CREATE INDEX CONCURRENTLY`): {:.1} s.\n",
            started.elapsed().as_secs_f64()
        ));
        ids.push(d.id);
    }
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
