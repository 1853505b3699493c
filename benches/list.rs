//! List at scale: seeds 1M accounts in one tenant and 1M in four others (and
//! 200,000 contacts, deals and activities in the tenant and in one other),
//! with realistic skew, then measures through the gRPC API:
//!
//! - page 1 and page 10,000 (reached by tokens), a filter on an indexed
//!   field, a tag filter, a custom_fields filter, two searches, and typed
//!   filters and orders on two defined custom fields (an integer and a date,
//!   defined through FieldDefinitionService, whose indexes the server
//!   builds);
//! - a matrix of skewed queries, each under the default order and under
//!   `order_by=name`, each as page 1 and as page 2 (by page 1's token): a
//!   search for a word in 90 % of the names, in 20 names, in none, and two
//!   typos of the broad word; tags held by 90 %, 1 %, 0.001 % and no accounts, and
//!   a tag rare in the tenant but in half of the other tenants' accounts
//!   (global statistics mislead); an undefined custom field with the same
//!   frequencies; and filter + search together;
//! - combined filter + search + order on the other entities: contacts by
//!   email domain, deals by stage and amount, an account's activities in a
//!   date range;
//!
//! and prints Markdown tables (p50/p99, and whether each query's p99 is
//! within 10× its entity's page-1 p50 and under 50 ms) and the plans Postgres
//! chose (EXPLAIN ANALYZE, run as the application role with the tenant set).
//!
//!   cargo bench --bench list                 # seeds once, reuses the data
//!   CRM_BENCH_RESEED=1 cargo bench --bench list
//!   CRM_BENCH_ROWS=20000 CRM_BENCH_DB=crm_bench_smoke cargo bench --bench list
//!
//! `CRM_BENCH_ROWS` (default 1,000,000) is the tenant's accounts (the other
//! entities have a fifth of it); `CRM_BENCH_DB` (default `crm_bench_list`) the
//! database. Run by scripts/bench-list.sh, which writes the results into
//! BENCHMARKS.md.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use crm::app::Application;
use crm::config::Config;
use crm::proto::account_service_client::AccountServiceClient;
use crm::proto::activity_service_client::ActivityServiceClient;
use crm::proto::contact_service_client::ContactServiceClient;
use crm::proto::deal_service_client::DealServiceClient;
use crm::proto::{
    Account, ListAccountsRequest, ListActivitiesRequest, ListContactsRequest, ListDealsRequest,
};
use crm::records::Entity;
use crm::sql::list::{Plan, Scope, fetch_page};
use sqlx::{Connection, Executor, PgConnection};
use tonic::transport::Channel;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{authed, pg_base};

const SECRET: &str = "bench-secret-bench-secret-bench-secret-0";
const TENANT: &str = "bench-a";
/// The other tenant that holds contacts, deals and activities.
const OTHER: &str = "bench-b";
/// Most measured calls per query (after the warm-up).
const ITERATIONS: usize = 200;
/// Warm-up calls per query.
const WARMUP: usize = 10;
/// A query slower than this in all stops sampling early (with at least
/// `MIN_SAMPLES` samples), so that a pathological plan cannot stall the run.
const BUDGET: Duration = Duration::from_secs(15);
const MIN_SAMPLES: usize = 20;
/// The targets: p99 within this many times page 1's p50, and under LIMIT_MS.
const RATIO: f64 = 10.0;
const LIMIT_MS: f64 = 50.0;

/// The tenant's accounts (`CRM_BENCH_ROWS`, default 1,000,000); the other
/// tenants hold as many, and contacts, deals and activities a fifth of it
/// each, in the tenant and in `OTHER`.
static ROWS: LazyLock<i64> = LazyLock::new(|| {
    std::env::var("CRM_BENCH_ROWS")
        .ok()
        .map(|v| {
            v.replace(['_', ','], "")
                .parse()
                .expect("CRM_BENCH_ROWS: a number")
        })
        .unwrap_or(1_000_000)
});

fn rows() -> i64 {
    *ROWS
}

/// Contacts, deals, activities per tenant.
fn minor_rows() -> i64 {
    rows() / 5
}

fn db_name() -> String {
    std::env::var("CRM_BENCH_DB").unwrap_or_else(|_| "crm_bench_list".into())
}

/// The id of the tenant's `n`th seeded account.
fn account_id(n: i64) -> String {
    format!("acc_{n:026}")
}

/// Written on the accounts table when a seed is complete; a seed without
/// it (older, or interrupted) is redone. Change it when the seed changes.
const SEED_MARK: &str = "crm list bench seed v2: skew, contacts, deals, activities";

/// The tenant's account with many activities, and one with ten.
const HEAVY_ACCOUNT: i64 = 1;
const LIGHT_ACCOUNT: i64 = 6;

/// "1M", "200k", or the number.
fn count_label(n: i64) -> String {
    if n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// `n` with thousands separators.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn seed(conn: &mut PgConnection) -> anyhow::Result<()> {
    let (rows, minor) = (rows(), minor_rows());
    // The current seed: its counts, and values only it has.
    let current: bool = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM accounts) = $1 \
            AND (SELECT count(*) FROM contacts) = $2 \
            AND (SELECT count(*) FROM deals) = $2 \
            AND (SELECT count(*) FROM activities) = $2 \
            AND EXISTS (SELECT 1 FROM accounts WHERE tenant_id = $3 AND tags @> ARRAY['common']) \
            AND EXISTS (SELECT 1 FROM accounts WHERE tenant_id = $3 AND tags @> ARRAY['skewed']) \
            AND EXISTS (SELECT 1 FROM accounts WHERE custom_fields @> '{\"tier\": \"diamond\"}') \
            AND obj_description('accounts'::regclass, 'pg_class') IS NOT DISTINCT FROM $4",
    )
    .bind(2 * rows)
    .bind(2 * minor)
    .bind(TENANT)
    .bind(SEED_MARK)
    .fetch_one(&mut *conn)
    .await?;
    if current && std::env::var("CRM_BENCH_RESEED").is_err() {
        eprintln!(
            "reusing the seed ({} accounts; {} contacts, deals and activities)",
            2 * rows,
            2 * minor
        );
    } else {
        eprintln!(
            "seeding {} accounts ({} in {TENANT}, {} in four others) and {} contacts, deals and activities ({} each in {TENANT} and {OTHER})…",
            2 * rows,
            count_label(rows),
            count_label(rows),
            2 * minor,
            count_label(minor)
        );
        let started = Instant::now();
        // Triggers off: no change events or history for the seed, and no
        // per-row foreign-key checks (the seed references only its own
        // rows). The owner connection is a superuser.
        conn.execute("SET session_replication_role = replica")
            .await?;
        conn.execute("TRUNCATE accounts, contacts, deals, activities, quotes, line_items CASCADE")
            .await?;
        for sql in seed_statements() {
            conn.execute(sqlx::AssertSqlSafe(sql)).await?;
        }
        conn.execute("SET session_replication_role = DEFAULT")
            .await?;
        for t in ["accounts", "contacts", "deals", "activities"] {
            conn.execute(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {t}")))
                .await?;
        }
        // Marks the seed complete (and of this version) for the next run.
        conn.execute(sqlx::AssertSqlSafe(format!(
            "COMMENT ON TABLE accounts IS '{SEED_MARK}'"
        )))
        .await?;
        eprintln!("seeded in {:.0?}", started.elapsed());
    }
    // Nothing for the sequencer or the history to work on while lists are
    // measured (the seed fired no trigger; this is for older seeds).
    conn.execute("TRUNCATE change_outbox").await?;
    conn.execute("TRUNCATE record_history").await?;
    Ok(())
}

/// The SQL of the seed: accounts, then contacts, deals and activities
/// referencing them, one statement per tenant (group) and table.
fn seed_statements() -> Vec<String> {
    let (rows, minor) = (rows(), minor_rows());
    // Every tenant's distribution is the tenant's (so that global statistics
    // look like it), except the tag `skewed`: 10 of the tenant's accounts,
    // half of the others'.
    let rare = rows / 10; // g % rare = k: 10 rows per 1M-row statement
    let zebra = rows / 20; // 20 rows
    let mut out = Vec::new();
    for (tenant_expr, offset, skewed) in [
        (format!("'{TENANT}'"), 0, format!("g % {rare} = 5")),
        (
            "'bench-' || (ARRAY['b','c','d','e'])[1 + g % 4]".to_owned(),
            rows,
            "(g / 4) % 2 = 0".to_owned(),
        ),
    ] {
        out.push(format!(
            "INSERT INTO accounts (tenant_id, id, created_at, updated_at, created_by, updated_by, source, source_type, \
                 schema_version, version, name, domain, owner_id, industry, tags, custom_fields, annual_revenue) \
             SELECT {tenant_expr}, 'acc_' || lpad((g + {offset})::text, 26, '0'), \
                 timestamptz '2025-01-01' + (g + {offset}) * interval '10 seconds', now(), 'seed', 'seed', 'edm', 'api', 1, 1, \
                 CASE WHEN g % 10 <> 0 THEN 'Company ' ELSE 'Firm ' END || g || ' ' || \
                     CASE WHEN g % {zebra} = 7 THEN 'Zebra' \
                          ELSE (ARRAY['Acme','Globex','Initech','Umbrella','Hooli','Stark','Wayne','Wonka'])[1 + g % 8] END, \
                 CASE WHEN g % 10 <> 0 THEN 'company' ELSE 'firm' END || g || '.example', 'usr-' || (g % 200), \
                 (ARRAY['software','retail','energy','health'])[1 + g % 4], \
                 array_remove(ARRAY[CASE WHEN g % 10 <> 0 THEN 'common' END, \
                                    CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, \
                                    CASE WHEN g % 100 = 1 THEN 'vip' END, \
                                    CASE WHEN g % {rare} = 3 THEN 'rare' END, \
                                    CASE WHEN {skewed} THEN 'skewed' END], NULL), \
                 jsonb_build_object('tier', CASE WHEN g % {rare} = 7 THEN 'diamond' \
                                                 WHEN g % 100 = 0 THEN 'platinum' \
                                                 WHEN g % 10 <> 0 THEN 'gold' \
                                                 ELSE (ARRAY['silver','bronze'])[1 + (g / 10) % 2] END, \
                                    'seats', g % 500, \
                                    'renewal', to_char(date '2025-01-01' + ((g::bigint * 7919) % 1461)::int, 'YYYY-MM-DD')), \
                 (g % 100000) * 10.5 \
             FROM generate_series(1, {rows}) g"
        ));
    }
    // The `n`th account (an SQL expression, 1-based) of the tenant, or of
    // OTHER (whose accounts are the others' g = 4, 8, …, offset by rows).
    let acc = |tenant: &str, n: &str| {
        if tenant == TENANT {
            format!("'acc_' || lpad(({n})::text, 26, '0')")
        } else {
            format!(
                "'acc_' || lpad(({rows} + 4 * (1 + (({n}) - 1) % ({rows} / 4)))::text, 26, '0')"
            )
        }
    };
    let stamps = "now(), 'seed', 'seed', 'edm', 'api', 1, 1";
    // Pseudo-random non-negative integers of g, independent of g's residues
    // (names and subjects drawn by g % k would correlate with the stages,
    // domains and accounts, which are).
    let h1 = "(hashint8(g::bigint * 1000 + 1) & 2147483647)";
    let h2 = "(hashint8(g::bigint * 1000 + 2) & 2147483647)";
    let rare_domain = minor / 20; // 20 contacts: 0.01 % at 200k
    let light = minor / 10; // 10 activities
    for (tenant, offset) in [(TENANT, 0), (OTHER, minor)] {
        // Contacts: one email domain for half of them, one for 20, 48 others.
        out.push(format!(
            "INSERT INTO contacts (tenant_id, id, created_at, updated_at, created_by, updated_by, source, source_type, \
                 schema_version, version, account_id, first_name, last_name, display_name, email, job_title, tags) \
             SELECT '{tenant}', 'con_' || lpad((g + {offset})::text, 26, '0'), \
                 timestamptz '2025-01-01' + (g + {offset}) * interval '50 seconds', {stamps}, {}, \
                 n.first, n.last, n.first || ' ' || n.last, \
                 lower(n.first || '.' || n.last || '.' || g) || '@' || \
                     CASE WHEN g % {rare_domain} = 11 THEN 'tinyshop.example' \
                          WHEN g % 2 = 0 THEN 'northwind.example' \
                          ELSE 'mail' || lpad(((g / 2) % 48)::text, 2, '0') || '.example' END, \
                 (ARRAY['CEO','CTO','Buyer','Engineer','Analyst','VP Sales'])[1 + g % 6], \
                 CASE WHEN g % 50 = 0 THEN ARRAY['champion'] ELSE ARRAY[]::text[] END \
             FROM generate_series(1, {minor}) g \
             CROSS JOIN LATERAL (SELECT \
                 (ARRAY['Ada','Ben','Chloe','David','Emma','Felix','Grace','Hugo','Iris','Jonas', \
                        'Karin','Liam','Maria','Nils','Olga','Pablo','Rosa','Sven','Tara','Yusuf'])[1 + {h1} % 20] AS first, \
                 (ARRAY['Smith','Garcia','Muller','Rossi','Dubois','Kowalski','Jensen','Silva','Novak','Tanaka', \
                        'Kim','Larsen','Meyer','Moreau','Nagy','Olsen','Petrov','Quinn','Romero','Santos', \
                        'Schmidt','Torres','Ulrich','Vargas','Weber','Xu','Young','Zimmer','Berg','Costa'])[1 + {h2} % 30] AS last) n",
            acc(tenant, &format!("1 + (g::bigint * 7919) % {rows}")),
        ));
        // Deals: a pipeline's stages (closed_lost with its reasons), amounts
        // from 1,000 to about 1.1M, log-uniform.
        out.push(format!(
            "INSERT INTO deals (tenant_id, id, created_at, updated_at, created_by, updated_by, source, source_type, \
                 schema_version, version, account_id, owner_id, name, deal_number, stage, value, currency, probability, \
                 expected_close_date, actual_close_date, loss_reason, loss_category, tags) \
             SELECT '{tenant}', 'deal_' || lpad((g + {offset})::text, 26, '0'), \
                 timestamptz '2025-01-01' + (g + {offset}) * interval '50 seconds', {stamps}, {}, 'usr-' || (g % 200), \
                 (ARRAY['Renewal','Expansion','New business','Upsell','Pilot'])[1 + {h1} % 5] || ' ' || g, \
                 'DEAL-' || (2024 + g % 3) || '-' || lpad(g::text, 6, '0'), s.stage, \
                 round(1000 * exp(((g::bigint * 7919) % 1000) / 1000.0 * 7), 2), 'USD', \
                 CASE s.stage WHEN 'lead' THEN 10 WHEN 'qualified' THEN 25 WHEN 'proposal' THEN 50 \
                              WHEN 'negotiation' THEN 75 WHEN 'closed_won' THEN 100 ELSE 0 END, \
                 timestamptz '2025-01-01' + (g % 730) * interval '1 day', \
                 CASE WHEN s.stage LIKE 'closed%' THEN timestamptz '2025-01-01' + (g % 730) * interval '1 day' END, \
                 CASE WHEN s.stage = 'closed_lost' THEN 'Chose a competitor' END, \
                 CASE WHEN s.stage = 'closed_lost' THEN 'competition' END, \
                 CASE WHEN g % 20 = 0 THEN ARRAY['strategic'] ELSE ARRAY[]::text[] END \
             FROM generate_series(1, {minor}) g \
             CROSS JOIN LATERAL (SELECT (ARRAY['lead','lead','lead','lead','lead','lead', \
                 'qualified','qualified','qualified','qualified','qualified', \
                 'proposal','proposal','proposal','proposal','negotiation','negotiation', \
                 'closed_won','closed_won','closed_lost'])[1 + g % 20] AS stage) s",
            acc(tenant, &format!("1 + (g::bigint * 104729) % {rows}")),
        ));
        // Activities over two years: a fifth on five accounts (the heavy
        // one among them), ten on the light one, the rest spread.
        out.push(format!(
            "INSERT INTO activities (tenant_id, id, created_at, updated_at, created_by, updated_by, source, source_type, \
                 schema_version, version, account_id, type, activity_type, subject, occurred_at, activity_date, status, \
                 owner_id, tags) \
             SELECT '{tenant}', 'act_' || lpad((g + {offset})::text, 26, '0'), \
                 o.at + interval '1 hour', {stamps}, {}, o.kind, o.kind, \
                 (ARRAY['Pricing call','Product demo','Follow-up','Contract review','Kickoff'])[1 + {h1} % 5] || ' ' || g, \
                 o.at, o.at, 'completed', 'usr-' || (g % 200), ARRAY[]::text[] \
             FROM generate_series(1, {minor}) g \
             CROSS JOIN LATERAL (SELECT \
                 timestamptz '2024-06-01' + ((g::bigint * 7919) % (730 * 86400)) * interval '1 second' AS at, \
                 (ARRAY['call','email','meeting','note','task'])[1 + (g / 7) % 5] AS kind) o",
            acc(
                tenant,
                &format!(
                    "CASE WHEN g % 5 = 0 THEN {HEAVY_ACCOUNT} + (g / 5) % 5 \
                          WHEN g % {light} = 1 THEN {LIGHT_ACCOUNT} \
                          ELSE {} + (g::bigint * 7919) % ({rows} - {LIGHT_ACCOUNT}) END",
                    LIGHT_ACCOUNT + 1
                )
            ),
        ));
    }
    out
}

/// One List request, of any of the measured entities.
#[derive(Clone)]
enum Req {
    Accounts(ListAccountsRequest),
    Contacts(ListContactsRequest),
    Deals(ListDealsRequest),
    Activities(ListActivitiesRequest),
}

impl Req {
    /// The same request for the page after `page_token`.
    fn page(&self, page_token: &str) -> Req {
        let mut r = self.clone();
        match &mut r {
            Req::Accounts(r) => r.page_token = page_token.into(),
            Req::Contacts(r) => r.page_token = page_token.into(),
            Req::Deals(r) => r.page_token = page_token.into(),
            Req::Activities(r) => r.page_token = page_token.into(),
        }
        r
    }
}

/// The List clients, over one channel.
struct Lists {
    accounts: AccountServiceClient<Channel>,
    contacts: ContactServiceClient<Channel>,
    deals: DealServiceClient<Channel>,
    activities: ActivityServiceClient<Channel>,
}

impl Lists {
    fn new(channel: Channel) -> Self {
        Self {
            accounts: AccountServiceClient::new(channel.clone()),
            contacts: ContactServiceClient::new(channel.clone()),
            deals: DealServiceClient::new(channel.clone()),
            activities: ActivityServiceClient::new(channel),
        }
    }

    /// One call: the page's rows and its next_page_token.
    async fn list(&mut self, token: &str, req: &Req) -> Result<(usize, String), tonic::Status> {
        Ok(match req.clone() {
            Req::Accounts(r) => {
                let r = self
                    .accounts
                    .list_accounts(authed(token, r))
                    .await?
                    .into_inner();
                (r.accounts.len(), r.next_page_token)
            }
            Req::Contacts(r) => {
                let r = self
                    .contacts
                    .list_contacts(authed(token, r))
                    .await?
                    .into_inner();
                (r.contacts.len(), r.next_page_token)
            }
            Req::Deals(r) => {
                let r = self.deals.list_deals(authed(token, r)).await?.into_inner();
                (r.deals.len(), r.next_page_token)
            }
            Req::Activities(r) => {
                let r = self
                    .activities
                    .list_activities(authed(token, r))
                    .await?
                    .into_inner();
                (r.activities.len(), r.next_page_token)
            }
        })
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    rows: usize,
    /// The page's next_page_token.
    next: String,
    samples: usize,
}

/// Sequential calls: `WARMUP` first, then up to `ITERATIONS` measured (fewer,
/// at least `MIN_SAMPLES`, once they took `BUDGET`).
async fn measure(c: &mut Lists, token: &str, req: &Req) -> Result<Stats, tonic::Status> {
    let mut samples = Vec::with_capacity(ITERATIONS);
    let (mut rows, mut next) = (0, String::new());
    let warm = Instant::now();
    for _ in 0..WARMUP {
        (rows, next) = c.list(token, req).await?;
        if warm.elapsed() > BUDGET / 5 {
            break;
        }
    }
    let all = Instant::now();
    while samples.len() < ITERATIONS && (samples.len() < MIN_SAMPLES || all.elapsed() < BUDGET) {
        let started = Instant::now();
        (rows, next) = c.list(token, req).await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok(Stats {
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
        rows,
        next,
        samples: samples.len(),
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
    explain_page(
        conn,
        Account::kind(),
        schema(),
        (&req.filter, &req.order_by, &req.search),
        After::Keys(after),
    )
    .await
}

/// Where the explained page starts.
enum After {
    /// After these sort keys (None: page 1).
    Keys(Option<Vec<Option<String>>>),
    /// Page 2: after page 1's last row (read first, not explained).
    SecondPage,
}

/// EXPLAIN ANALYZE of every statement List runs for one page of `kind`
/// (filter, order_by, search), as the request role with the tenant set.
async fn explain_page(
    conn: &mut PgConnection,
    kind: &'static crm::records::Kind,
    schema: std::sync::Arc<crm::custom::ResourceSchema>,
    (filter, order_by, search): (&str, &str, &str),
    after: After,
) -> anyhow::Result<String> {
    let meta = kind.meta();
    let plan = Plan::new(meta, schema, filter, order_by, search, false)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
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
    // Every statement List runs for the page (walk, gather, tiers).
    let scope = Scope {
        meta,
        table: kind.table,
        tenant: TENANT,
        app: None,
        show_deleted: false,
    };
    let after = match after {
        After::Keys(keys) => keys,
        After::SecondPage => {
            // The page token holds the 50th row's keys.
            let first = fetch_page(&mut tx, &scope, &plan, None, 51, None)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            match first.get(49) {
                Some(row) => Some(row.keys.clone()),
                None => anyhow::bail!("page 1 was the last page"),
            }
        }
    };
    let mut out = String::new();
    fetch_page(&mut tx, &scope, &plan, after.as_deref(), 51, Some(&mut out))
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    tx.rollback().await?;
    Ok(out.trim_end().to_owned())
}

/// The entities of the matrix.
#[derive(Clone, Copy, PartialEq)]
enum Ent {
    Accounts,
    Contacts,
    Deals,
    Activities,
}

impl Ent {
    fn kind(self) -> &'static crm::records::Kind {
        match self {
            Ent::Accounts => Account::kind(),
            Ent::Contacts => crm::proto::Contact::kind(),
            Ent::Deals => crm::proto::Deal::kind(),
            Ent::Activities => crm::proto::Activity::kind(),
        }
    }

    /// The custom-field definitions of the entity (the bench defines
    /// accounts' only).
    fn schema(self) -> std::sync::Arc<crm::custom::ResourceSchema> {
        match self {
            Ent::Accounts => schema(),
            _ => crm::custom::values::empty(),
        }
    }

    fn title(self) -> &'static str {
        match self {
            Ent::Accounts => "Accounts",
            Ent::Contacts => "Contacts",
            Ent::Deals => "Deals",
            Ent::Activities => "Activities",
        }
    }

    /// The order measured besides the default one.
    fn other_order(self) -> &'static str {
        match self {
            Ent::Accounts => "name",
            Ent::Contacts => "last_name",
            Ent::Deals => "value desc",
            Ent::Activities => "occurred_at desc",
        }
    }

    /// Page 1 of `q` under `order_by`.
    fn request(self, q: &Query, order_by: &str) -> Req {
        let (page_size, filter, search) = (50, q.filter.clone(), q.search.clone());
        let order_by = order_by.to_owned();
        match self {
            Ent::Accounts => Req::Accounts(ListAccountsRequest {
                page_size,
                filter,
                order_by,
                search,
                ..Default::default()
            }),
            Ent::Contacts => Req::Contacts(ListContactsRequest {
                page_size,
                filter,
                order_by,
                search,
                ..Default::default()
            }),
            Ent::Deals => Req::Deals(ListDealsRequest {
                page_size,
                filter,
                order_by,
                search,
                ..Default::default()
            }),
            Ent::Activities => Req::Activities(ListActivitiesRequest {
                page_size,
                filter,
                order_by,
                search,
                ..Default::default()
            }),
        }
    }
}

/// A query of the matrix: its filter and search, and what it matches.
struct Query {
    filter: String,
    search: String,
    note: String,
}

impl Query {
    fn label(&self) -> String {
        match (self.filter.as_str(), self.search.as_str()) {
            ("", "") => "no filter".into(),
            (f, "") => format!("`{f}`"),
            ("", s) => format!("`search={s}`"),
            (f, s) => format!("`{f}`, `search={s}`"),
        }
    }
}

fn q(filter: &str, search: &str, note: &str) -> Query {
    Query {
        filter: filter.into(),
        search: search.into(),
        note: note.into(),
    }
}

/// The matrix: per entity, its queries (the first one is the baseline, no
/// filter).
fn matrix() -> Vec<(Ent, Vec<Query>)> {
    let minor = minor_rows();
    let heavy = account_id(HEAVY_ACCOUNT);
    let light = account_id(LIGHT_ACCOUNT);
    let range =
        "occurred_at >= \"2025-01-01T00:00:00Z\" AND occurred_at < \"2025-07-01T00:00:00Z\"";
    vec![
        (
            Ent::Accounts,
            vec![
                q("", "", "all"),
                q("", "company", "90 %"),
                q("", "zebra", "20 rows"),
                q("", "nosuchword", "none"),
                q("", "compnay", "typo of the word of 90 %"),
                q("", "compamy", "closer typo of the word of 90 %"),
                q("tags:common", "", "90 %"),
                q("tags:vip", "", "1 %"),
                q("tags:rare", "", "10 rows"),
                q("tags:nosuchtag", "", "none"),
                q(
                    "tags:skewed",
                    "",
                    "10 rows here, 50 % of the other tenants'",
                ),
                q("custom_fields.tier = \"gold\"", "", "90 %"),
                q("custom_fields.tier = \"platinum\"", "", "1 %"),
                q("custom_fields.tier = \"diamond\"", "", "10 rows"),
                q("custom_fields.tier = \"unobtanium\"", "", "none"),
                q(
                    "tags:vip AND custom_fields.tier = \"gold\"",
                    "company",
                    "1 % × 90 % × 90 %",
                ),
            ],
        ),
        (
            Ent::Contacts,
            vec![
                q("", "", "all"),
                q("", "northwind.example", "email domain of 50 %"),
                q("", "tinyshop.example", "email domain of 20 rows"),
                q("first_name = \"Maria\"", "northwind.example", "5 % × 50 %"),
            ],
        ),
        (
            Ent::Deals,
            vec![
                q("", "", "all"),
                q(
                    "stage = \"negotiation\" AND value > 100000",
                    "",
                    "10 % × 34 %",
                ),
                q(
                    "stage = \"closed_won\" AND value > 900000",
                    "",
                    "10 % × 3 %",
                ),
                q(
                    "stage = \"proposal\" AND value > 100000",
                    "renewal",
                    "20 % × 34 % × 20 %",
                ),
            ],
        ),
        (
            Ent::Activities,
            vec![
                q("", "", "all"),
                q(
                    &format!("account_id = \"{heavy}\" AND {range}"),
                    "",
                    &format!(
                        "heavy account ({} activities), a quarter of them",
                        thousands(usize::try_from(minor / 25).unwrap_or_default())
                    ),
                ),
                q(
                    &format!("account_id = \"{light}\" AND {range}"),
                    "",
                    "light account (10 activities), a quarter of them",
                ),
                q(
                    &format!("account_id = \"{heavy}\" AND {range}"),
                    "pricing",
                    "heavy account, a quarter, a fifth of those",
                ),
            ],
        ),
    ]
}

/// One measured page of the matrix.
struct Measured {
    ent: Ent,
    query: String,
    order: String,
    page: u8,
    /// None: page 1 was the last page.
    result: Option<Result<Stats, String>>,
}

/// Measures the matrix; EXPLAIN ANALYZE of each accounts query's page 1, and
/// of every page that misses its target, is appended to `plans`.
async fn run_matrix(
    lists: &mut Lists,
    token: &str,
    owner: &mut PgConnection,
    plans: &mut String,
) -> anyhow::Result<Vec<Measured>> {
    let mut out = Vec::new();
    // The current entity's limit for p99 (set by its first query).
    let mut limit = f64::NAN;
    for (ent, queries) in matrix() {
        for query in &queries {
            for order_by in ["", ent.other_order()] {
                let order = match (order_by, query.search.is_empty()) {
                    ("", true) => "default".to_owned(),
                    ("", false) => "default (relevance)".to_owned(),
                    (o, _) => format!("`{o}`"),
                };
                let label = format!("{} ({})", query.label(), query.note);
                eprintln!("{}: {label}, {order}…", ent.title());
                let req = ent.request(query, order_by);
                let p1 = measure(lists, token, &req)
                    .await
                    .map_err(|e| format!("{:?}: {}", e.code(), e.message()));
                let next = p1.as_ref().map(|s| s.next.clone()).unwrap_or_default();
                // The entity's first page (no filter, default order) sets
                // its target (report()).
                if query.filter.is_empty() && query.search.is_empty() && order_by.is_empty() {
                    limit = p1
                        .as_ref()
                        .map_or(f64::NAN, |s| (RATIO * ms(s.p50)).min(LIMIT_MS));
                }
                let missed =
                    |r: &Result<Stats, String>| !r.as_ref().is_ok_and(|s| ms(s.p99) <= limit);
                // The plans of every accounts page 1, and of every page that
                // misses its target, so that each distance has its plan.
                if ent == Ent::Accounts || missed(&p1) {
                    let plan = explain_page(
                        owner,
                        ent.kind(),
                        ent.schema(),
                        (&query.filter, order_by, &query.search),
                        After::Keys(None),
                    )
                    .await
                    .unwrap_or_else(|e| format!("EXPLAIN failed: {e:#}"));
                    plans.push_str(&format!(
                        "\n#### {} {label}, order {order}, page 1\n\n```\n{plan}\n```\n",
                        ent.title()
                    ));
                }
                out.push(Measured {
                    ent,
                    query: label.clone(),
                    order: order.clone(),
                    page: 1,
                    result: Some(p1),
                });
                let p2 = if next.is_empty() {
                    None
                } else {
                    Some(
                        measure(lists, token, &req.page(&next))
                            .await
                            .map_err(|e| format!("{:?}: {}", e.code(), e.message())),
                    )
                };
                if let Some(p2) = &p2
                    && missed(p2)
                {
                    let plan = explain_page(
                        owner,
                        ent.kind(),
                        ent.schema(),
                        (&query.filter, order_by, &query.search),
                        After::SecondPage,
                    )
                    .await
                    .unwrap_or_else(|e| format!("EXPLAIN failed: {e:#}"));
                    plans.push_str(&format!(
                        "\n#### {} {label}, order {order}, page 2\n\n```\n{plan}\n```\n",
                        ent.title()
                    ));
                }
                out.push(Measured {
                    ent,
                    query: label,
                    order,
                    page: 2,
                    result: p2,
                });
            }
        }
    }
    Ok(out)
}

/// The tables of the matrix, one per entity, and the summary line.
fn report(measured: &[Measured]) -> String {
    let mut out = String::new();
    let (mut within, mut total, mut skipped) = (0, 0, 0);
    // (p99 / limit, description)
    let mut worst: Option<(f64, String)> = None;
    let mut errors = Vec::new();
    for ent in [Ent::Accounts, Ent::Contacts, Ent::Deals, Ent::Activities] {
        let entries: Vec<&Measured> = measured.iter().filter(|m| m.ent == ent).collect();
        let Some(first) = entries.first() else {
            continue;
        };
        // The baseline: page 1, no filter, default order (the first row).
        let base = match &first.result {
            Some(Ok(s)) => ms(s.p50),
            _ => f64::NAN,
        };
        let limit = (RATIO * base).min(LIMIT_MS);
        let size = match ent {
            Ent::Accounts => format!(
                "{} in the tenant, {} in four others",
                count_label(rows()),
                count_label(rows())
            ),
            _ => format!(
                "{} in the tenant, {} in another",
                count_label(minor_rows()),
                count_label(minor_rows())
            ),
        };
        out.push_str(&format!(
            "#### {} ({size})\n\nPage 1 p50 (no filter, default order): {base:.2} ms; limit for p99: {limit:.2} ms.\n\n\
             | query | order | page | rows | p50 | p99 | within target |\n|---|---|---:|---:|---:|---:|---|\n",
            ent.title()
        ));
        for m in entries {
            let head = format!("| {} | {} | {} ", m.query, m.order, m.page);
            match &m.result {
                None => {
                    skipped += 1;
                    out.push_str(&format!("{head}| — | — | — | — |\n"));
                }
                Some(Err(e)) => {
                    total += 1;
                    errors.push(format!(
                        "{} {} ({}, page {})",
                        ent.title(),
                        m.query,
                        m.order,
                        m.page
                    ));
                    out.push_str(&format!(
                        "{head}| error: {} | — | — | **no** |\n",
                        e.replace('|', "\\|")
                    ));
                }
                Some(Ok(s)) => {
                    total += 1;
                    let p99 = ms(s.p99);
                    let ok = p99 <= RATIO * base && p99 < LIMIT_MS;
                    within += usize::from(ok);
                    let few = if s.samples < ITERATIONS { "*" } else { "" };
                    out.push_str(&format!(
                        "{head}| {} | {:.2} ms | {p99:.2} ms{few} | {} |\n",
                        s.rows,
                        ms(s.p50),
                        if ok { "yes" } else { "**no**" }
                    ));
                    let score = p99 / limit;
                    if worst.as_ref().is_none_or(|w| score > w.0) {
                        worst = Some((
                            score,
                            format!(
                                "{} {} ({}, page {}): p99 {p99:.2} ms, {:.1}× page 1's p50",
                                ent.title(),
                                m.query,
                                m.order,
                                m.page,
                                p99 / base
                            ),
                        ));
                    }
                }
            }
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "**{within} of {total}** measured pages within target (p99 ≤ {RATIO}× the entity's page-1 p50 and < {LIMIT_MS} ms); \
         {skipped} page 2s not measured (page 1 was the last page, marked —). Worst: {}.",
        worst.map(|w| w.1).unwrap_or_else(|| "none measured".into())
    ));
    if !errors.is_empty() {
        out.push_str(&format!(" Failed: {}.", errors.join("; ")));
    }
    out.push_str(&format!(
        " (* fewer than {ITERATIONS} samples, at least {MIN_SAMPLES}: the query took over {} s in all.)\n",
        BUDGET.as_secs()
    ));
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (rows, minor) = (rows(), minor_rows());
    anyhow::ensure!(rows >= 10_000, "CRM_BENCH_ROWS must be at least 10000");
    let cfg = Config {
        db_acquire_timeout_secs: 5,
        health_interval_secs: 5,
        db_statement_timeout_ms: 30_000,
        request_timeout_secs: 60,
        ..common::config(format!("{}/{}", pg_base(), db_name()), SECRET)
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
    let mut lists = Lists::new(channel.clone());
    // Long enough for a slow full run.
    let token = crm::auth::mint(SECRET.as_bytes(), TENANT, "bench", None, 86_400, None, None)?;
    let define = define_fields(channel.clone(), &token).await?;

    // Walk to page 10,000 by tokens (page_size 50: 500,000 rows in; half the
    // tenant when it is smaller).
    let walk_pages = usize::try_from(rows / 100)?.clamp(2, 10_000);
    eprintln!("walking to page {}…", thousands(walk_pages));
    let walk = Instant::now();
    let mut token_far = String::new();
    let mut last_keys = None;
    for page in 1..walk_pages {
        let r = lists
            .accounts
            .list_accounts(authed(
                &token,
                ListAccountsRequest {
                    page_size: 50,
                    page_token: token_far.clone(),
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        token_far = r.next_page_token;
        if page == walk_pages - 1 {
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

    let cases: Vec<(String, ListAccountsRequest)> = vec![
        (
            "page 1 (default order)".into(),
            ListAccountsRequest {
                page_size: 50,
                ..Default::default()
            },
        ),
        (
            format!("page {} (by token)", thousands(walk_pages)),
            ListAccountsRequest {
                page_size: 50,
                page_token: token_far.clone(),
                ..Default::default()
            },
        ),
        (
            "filter on an indexed field: owner_id = \"usr-42\"".into(),
            ListAccountsRequest {
                page_size: 50,
                filter: "owner_id = \"usr-42\"".into(),
                ..Default::default()
            },
        ),
        (
            "tag filter: tags:vip".into(),
            ListAccountsRequest {
                page_size: 50,
                filter: "tags:vip".into(),
                ..Default::default()
            },
        ),
        (
            "custom_fields filter: custom_fields.tier = \"platinum\"".into(),
            ListAccountsRequest {
                page_size: 50,
                filter: "custom_fields.tier = \"platinum\"".into(),
                ..Default::default()
            },
        ),
        (
            "defined integer, equality: custom_fields.seats = 250".into(),
            ListAccountsRequest {
                page_size: 50,
                filter: "custom_fields.seats = 250".into(),
                ..Default::default()
            },
        ),
        (
            "defined integer, range: custom_fields.seats > 490".into(),
            ListAccountsRequest {
                page_size: 50,
                filter: "custom_fields.seats > 490".into(),
                ..Default::default()
            },
        ),
        (
            "defined integer, order_by=custom_fields.seats desc".into(),
            ListAccountsRequest {
                page_size: 50,
                order_by: "custom_fields.seats desc".into(),
                ..Default::default()
            },
        ),
        (
            "defined integer, range and order: seats >= 100 AND seats < 110, order_by=custom_fields.seats".into(),
            ListAccountsRequest {
                page_size: 50,
                filter: "custom_fields.seats >= 100 AND custom_fields.seats < 110".into(),
                order_by: "custom_fields.seats".into(),
                ..Default::default()
            },
        ),
        (
            "defined date, equality: custom_fields.renewal = \"2026-02-28\"".into(),
            ListAccountsRequest {
                page_size: 50,
                filter: "custom_fields.renewal = \"2026-02-28\"".into(),
                ..Default::default()
            },
        ),
        (
            "defined date, range across a year: renewal >= \"2027-12-25\"".into(),
            ListAccountsRequest {
                page_size: 50,
                filter: "custom_fields.renewal >= \"2027-12-25\"".into(),
                ..Default::default()
            },
        ),
        (
            "defined date, order_by=custom_fields.renewal".into(),
            ListAccountsRequest {
                page_size: 50,
                order_by: "custom_fields.renewal".into(),
                ..Default::default()
            },
        ),
        (
            "search: \"company 4242\"".into(),
            ListAccountsRequest {
                page_size: 50,
                search: "company 4242".into(),
                ..Default::default()
            },
        ),
        (
            "search with a typo: \"umbrela 777779\"".into(),
            ListAccountsRequest {
                page_size: 50,
                search: "umbrela 777779".into(),
                ..Default::default()
            },
        ),
    ];
    let mut table = format!(
        "| query ({} accounts in the tenant, {} in others) | rows | p50 | p99 |\n|---|---:|---:|---:|\n",
        count_label(rows),
        count_label(rows)
    );
    let mut plans = String::new();
    let mut results = Vec::new();
    for (i, (name, req)) in cases.iter().enumerate() {
        eprintln!("{name}…");
        let s = measure(&mut lists, &token, &Req::Accounts(req.clone())).await?;
        table.push_str(&format!(
            "| {name} | {} | {:.2} ms | {:.2} ms |\n",
            s.rows,
            ms(s.p50),
            ms(s.p99)
        ));
        results.push(s);
        // The walked page is explained after the walk's last row.
        let after = (i == 1).then(|| last_keys.clone()).flatten();
        let mut req = req.clone();
        req.page_token.clear();
        plans.push_str(&format!(
            "\n#### {name}\n\n```\n{}\n```\n",
            explain(&mut owner, &req, after).await?
        ));
    }
    let p1 = results[0].p50;
    let pfar = results[1].p50;

    plans.push_str(
        "\n### Plans of the skewed queries (accounts page 1, and every page that misses its target)\n",
    );
    let measured = run_matrix(&mut lists, &token, &mut owner, &mut plans).await?;

    println!("## List at scale\n");
    println!(
        "Up to {ITERATIONS} sequential calls per query through the gRPC API (one client, release build), after up to {WARMUP} warm-up calls. Page {} was reached by following {} page tokens ({:.1} s).\n",
        thousands(walk_pages),
        thousands(walk_pages - 1),
        walk.as_secs_f64()
    );
    println!("{table}");
    println!(
        "Page {} / page 1 (p50): **{:.2}×** (target ≤ 1.2×). Worst p99: **{:.2} ms** (target < 50 ms).\n",
        thousands(walk_pages),
        ms(pfar) / ms(p1),
        results.iter().map(|r| ms(r.p99)).fold(0.0, f64::max)
    );
    println!("{define}");
    println!("### Skewed data: page 1 and page 2 under two orders\n");
    println!(
        "Accounts ({r} in the tenant, {r} over four others, seeded with the same distributions): \
         \"Company\" in 90 % of the names (the others \"Firm\"), \"Zebra\" in 20; tags `common` 90 %, `vip` 1 %, \
         `rare` 10 rows, `nosuchtag` none, and `skewed` on 10 of the tenant's accounts but half of the other \
         tenants' (global statistics mislead); `custom_fields.tier` (not a defined field: jsonb containment) \
         `gold` 90 %, `platinum` 1 %, `diamond` 10 rows, `unobtanium` none. Contacts, deals and activities \
         ({m} each in the tenant and in {OTHER}): contacts' email domains `northwind.example` 50 %, \
         `tinyshop.example` 20 rows, 48 others; deals over six stages with amounts (`value`) from 1,000 to \
         1.1M, log-uniform; activities over two years, a fifth on five accounts ({h} each), ten on one. \
         Each query as page 1 and as page 2 (by page 1's token), under the default order (relevance with a \
         search) and under one other order. Within target: p99 ≤ {RATIO}× the entity's page-1 p50 (no filter, \
         default order) and < {LIMIT_MS} ms.\n",
        r = count_label(rows),
        m = count_label(minor),
        h = thousands(usize::try_from(minor / 25)?),
    );
    println!("{}", report(&measured));
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
            "Defining `{key}` ({ty}) over the tenant's {} live accounts (every value checked first): {:.2} s. ",
            count_label(rows()),
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
