//! The delivery worker: POSTs each webhook's matching change events, one
//! at a time and in sequence order, signed with the Standard Webhooks
//! scheme, retrying on the [`Schedule`].
//!
//! It reads the change feed itself (no second outbox): a webhook's state is
//! its `position` in its tenant's feed and the retry state of the next
//! matching event (migration 0009). Every crm process runs a worker; they
//! share the work through leases. A worker claims due webhooks with
//! `FOR UPDATE SKIP LOCKED` and stamps a lease on them, so no two workers
//! ever try one webhook at once; it records each attempt (the log and the
//! new state, in one transaction) before it makes the next. A process that
//! dies mid-attempt leaves a lease that lapses after [`LEASE`]; the attempt
//! is then made again, with the same `webhook-id` (delivery is at least
//! once: receivers dedupe on it).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sqlx::PgPool;
use tokio::task::JoinSet;

use super::target;
use crate::changes::Hub;
use crate::changes::feed::{Query, Scope, scoped_events};
use crate::proto::ChangeEvent;

/// How long a claim lasts without a recorded attempt: longer than an
/// attempt can take ([`TIMEOUT`]) plus the database's part.
pub const LEASE: Duration = Duration::from_secs(30);
/// The longest an attempt may take, answer included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a response body that is read (the rest is dropped).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Events delivered to one webhook per claim, before others get a turn.
const EVENTS_PER_CLAIM: usize = 100;
/// Events read from the feed at a time.
const READ_AHEAD: i64 = 20;
/// The longest the worker sleeps without a wake-up (retries come due).
const POLL: Duration = Duration::from_secs(1);
/// How long the delivery log is kept.
const LOG_RETENTION_DAYS: i32 = 30;

/// When failed attempts are tried again: after the `n`th failure of an
/// event, `delays[n-1]` (the last one repeating), each ±20 % at random,
/// until `window` has passed since the event's first attempt; then it is
/// given up.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    delays: Vec<Duration>,
    window: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self::parse(DEFAULT_SCHEDULE, Duration::from_secs(72 * 3600)).expect("default schedule")
    }
}

/// The default delays (`CRM_WEBHOOKS_RETRY_SCHEDULE`).
pub const DEFAULT_SCHEDULE: &str = "5s,30s,2m,15m,1h,3h,6h";

impl Schedule {
    /// A schedule from comma-separated durations (`5s,30s,2m,...`; the last
    /// repeats) and the window after which an event is given up.
    pub fn parse(delays: &str, window: Duration) -> Result<Self, String> {
        let delays = delays
            .split(',')
            .map(|d| crate::config::parse_duration(d.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() || delays.len() > 100 {
            return Err("must list 1 to 100 delays".into());
        }
        if delays.iter().any(|d| d.is_zero()) {
            return Err("delays must be positive".into());
        }
        Ok(Self { delays, window })
    }

    /// The delay after the `failures`th failed attempt (1-based), with
    /// `jitter` in [-1, 1] scaling it by up to ±20 %.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let i = (failures.max(1) as usize - 1).min(self.delays.len() - 1);
        self.delays[i].mul_f64(1.0 + 0.2 * jitter.clamp(-1.0, 1.0))
    }

    /// How long an event is tried for.
    pub fn window(&self) -> Duration {
        self.window
    }
}

/// The worker's settings.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// `CRM_WEBHOOKS_ALLOW_PRIVATE`.
    pub allow_private: bool,
    /// Retries.
    pub schedule: Schedule,
    /// Failing this long without a success disables a webhook.
    pub disable_after: Duration,
    /// Attempts this process makes at once.
    pub max_in_flight: usize,
    /// Webhooks of one tenant being tried at once (across processes).
    pub tenant_in_flight: i64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            schedule: Schedule::default(),
            disable_after: Duration::from_secs(5 * 86_400),
            max_in_flight: 32,
            tenant_in_flight: 4,
        }
    }
}

/// What an attempt came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A 2xx answer in time.
    Delivered,
    /// 410 Gone: the receiver wants no more.
    Gone,
    /// Anything else; `retry_after` from a 429 or 503 answer.
    Failed { retry_after: Option<Duration> },
}

/// The retry state of the event being tried.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pending {
    /// Failed attempts at it so far.
    pub failures: i32,
    /// When it was first tried.
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// The first failure since the webhook's last success.
    pub failing_since: Option<DateTime<Utc>>,
}

/// What to do after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Go on with the next event.
    Advance,
    /// Try this event again at the time given.
    Retry { at: DateTime<Utc>, pending: Pending },
    /// Give this event up (its window has passed) and go on, still failing.
    GiveUp { failing_since: DateTime<Utc> },
    /// Disable the webhook, saying why.
    Disable { reason: String },
}

/// The decision after an attempt made at `now` with `outcome`, from the
/// state before it. `jitter` in [-1, 1]. Pure: the retry tests drive it
/// with a clock of their own.
pub fn decide(
    cfg: &DeliveryConfig,
    before: Pending,
    now: DateTime<Utc>,
    outcome: &Outcome,
    error: &str,
    jitter: f64,
) -> Next {
    let retry_after = match outcome {
        Outcome::Delivered => return Next::Advance,
        Outcome::Gone => {
            return Next::Disable {
                reason: format!(
                    "the receiver answered 410 Gone at {}",
                    now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            };
        }
        Outcome::Failed { retry_after } => *retry_after,
    };
    let failing_since = before.failing_since.unwrap_or(now);
    if now - failing_since >= chrono_duration(cfg.disable_after) {
        return Next::Disable {
            reason: format!(
                "failing since {} without a success (last: {error})",
                failing_since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        };
    }
    let first = before.first_attempt_at.unwrap_or(now);
    let failures = before.failures.max(0) as u32 + 1;
    let mut delay = cfg.schedule.delay(failures, jitter);
    if let Some(ra) = retry_after {
        delay = delay.max(ra.min(MAX_RETRY_AFTER));
    }
    let at = now
        .checked_add_signed(chrono_duration(delay))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if at - first > chrono_duration(cfg.schedule.window()) {
        return Next::GiveUp { failing_since };
    }
    Next::Retry {
        at,
        pending: Pending {
            failures: failures as i32,
            first_attempt_at: Some(first),
            failing_since: Some(failing_since),
        },
    }
}

fn chrono_duration(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// A random number in [-1, 1].
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.0;
    }
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX) * 2.0 - 1.0
}

/// The `webhook-signature` of a message: `v1,` + base64 HMAC-SHA256 of
/// `id.timestamp.body` keyed with the secret's bytes (base64 after
/// `whsec_`).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|e| format!("the stored secret is not base64 ({e})"))?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
        .map_err(|e| format!("the stored secret is unusable ({e})"))?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - now).to_std().ok()
}

/// Resolves names for the HTTP client, refusing (unless private targets
/// are allowed) a name with any non-public address: the check happens on
/// the very addresses the connection uses, so a name cannot resolve to a
/// public address when checked and to a private one when connected.
struct CheckedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private && let Some(a) = addrs.iter().find(|a| !target::is_public(a.ip())) {
                return Err(format!(
                    "refused: {host} resolves to {}, a non-public address",
                    a.ip()
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client of deliveries: rustls (ring), no proxy, no redirects,
/// names resolved through [`CheckedResolver`].
pub fn client(allow_private: bool) -> anyhow::Result<reqwest::Client> {
    crate::net::install_tls_provider();
    Ok(reqwest::Client::builder()
        .user_agent(concat!("crm-webhooks/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4)
        .dns_resolver(Arc::new(CheckedResolver { allow_private }))
        .build()?)
}

/// One attempt's result.
#[derive(Debug)]
struct Attempt {
    status: i32,
    error: String,
    outcome: Outcome,
    started: DateTime<Utc>,
    took: Duration,
}

/// POSTs `body` (the event `id`) to `url`, signed with `secret`.
async fn attempt(
    client: &reqwest::Client,
    allow_private: bool,
    url: &str,
    secret: &str,
    id: &str,
    body: &[u8],
) -> Attempt {
    let started = Utc::now();
    let clock = Instant::now();
    let failed = |status: i32, error: String, retry_after: Option<Duration>| Attempt {
        status,
        error,
        outcome: Outcome::Failed { retry_after },
        started,
        took: clock.elapsed(),
    };
    // The form again, and literal addresses (names are checked as they
    // resolve, by the client).
    let parsed = match target::check_form(url) {
        Ok(p) => p,
        Err(e) => return failed(0, format!("refused: the URL {e}"), None),
    };
    let literal: Option<IpAddr> = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => Some(ip.into()),
        Some(url::Host::Ipv6(ip)) => Some(ip.into()),
        _ => None,
    };
    if let Some(ip) = literal
        && !allow_private
        && !target::is_public(ip)
    {
        return failed(0, format!("refused: {ip} is not a public address"), None);
    }
    let timestamp = started.timestamp();
    let signature = match sign(secret, id, timestamp, body) {
        Ok(s) => s,
        Err(e) => return failed(0, e, None),
    };
    let request = client
        .post(parsed)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_vec());
    let exchange = async {
        let mut response = request.send().await?;
        let status = response.status();
        let retry = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, Utc::now()));
        // The body, bounded, so the connection can be reused.
        let mut read = 0usize;
        while read < MAX_RESPONSE_BYTES {
            match response.chunk().await? {
                Some(c) => read += c.len(),
                None => break,
            }
        }
        Ok::<_, reqwest::Error>((status, retry))
    };
    match tokio::time::timeout(TIMEOUT, exchange).await {
        Err(_) => failed(0, format!("no answer within {} s", TIMEOUT.as_secs()), None),
        Ok(Err(e)) => failed(0, describe(&e), None),
        Ok(Ok((status, retry))) => {
            let code = i32::from(status.as_u16());
            if status.is_success() {
                Attempt {
                    status: code,
                    error: String::new(),
                    outcome: Outcome::Delivered,
                    started,
                    took: clock.elapsed(),
                }
            } else if status == http::StatusCode::GONE {
                Attempt {
                    status: code,
                    error: "410 Gone".into(),
                    outcome: Outcome::Gone,
                    started,
                    took: clock.elapsed(),
                }
            } else {
                let honoured = matches!(code, 429 | 503).then_some(retry).flatten();
                failed(code, format!("HTTP {status}"), honoured)
            }
        }
    }
}

/// An error with its causes, in one line.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out.chars().take(500).collect()
}

/// A claimed webhook, with what delivering to it needs.
#[derive(sqlx::FromRow, Clone, Debug)]
struct Claim {
    tenant_id: String,
    id: String,
    app_id: Option<String>,
    url: String,
    resource_types: Vec<String>,
    operations: Vec<String>,
    /// What the tokens that made it could read (`None`: everything).
    readable_types: Option<Vec<String>>,
    secret: String,
    position: i64,
    attempt: i32,
    first_attempt_at: Option<DateTime<Utc>>,
    failing_since: Option<DateTime<Utc>>,
    generation: i64,
    version: i32,
    lease_token: String,
}

/// Claims up to `room` due webhooks, each tenant's up to its cap (counting
/// those leased anywhere), most overdue first.
async fn claim(pool: &PgPool, cfg: &DeliveryConfig, room: usize) -> anyhow::Result<Vec<Claim>> {
    let mut tx = pool.begin().await?;
    // Candidates: the cap is applied before the limit, so one tenant's
    // queue cannot crowd out the others.
    let candidates: Vec<(String, String)> = sqlx::query_as(
        "SELECT tenant_id, id FROM ( \
             SELECT w.tenant_id, w.id, w.next_attempt_at, \
                    row_number() OVER (PARTITION BY w.tenant_id ORDER BY w.next_attempt_at, w.id) \
                    + (SELECT count(*) FROM webhooks b \
                        WHERE b.tenant_id = w.tenant_id AND b.lease_until > now()) AS load \
             FROM webhooks w JOIN change_heads h ON h.tenant_id = w.tenant_id \
             WHERE w.enabled AND w.next_attempt_at <= now() AND h.last_sequence > w.position \
               AND (w.lease_until IS NULL OR w.lease_until <= now()) \
         ) c WHERE load <= $1 ORDER BY next_attempt_at, id LIMIT $2",
    )
    .bind(cfg.tenant_in_flight)
    .bind(room as i64)
    .fetch_all(&mut *tx)
    .await?;
    if candidates.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let (tenants, ids): (Vec<String>, Vec<String>) = candidates.into_iter().unzip();
    let token = ulid::Ulid::generate().to_string();
    // Locked and checked again: another worker may have claimed some since.
    let claims: Vec<Claim> = sqlx::query_as(
        "UPDATE webhooks w SET lease_until = now() + make_interval(secs => $4), lease_token = $3 \
         FROM (SELECT tenant_id, id FROM webhooks \
               WHERE (tenant_id, id) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
                 AND enabled AND (lease_until IS NULL OR lease_until <= now()) \
               FOR UPDATE SKIP LOCKED) c \
         WHERE w.tenant_id = c.tenant_id AND w.id = c.id \
         RETURNING w.tenant_id, w.id, w.app_id, w.url, w.resource_types, w.operations, \
                   w.readable_types, w.secret, \
                   w.position, w.attempt, w.first_attempt_at, w.failing_since, w.generation, \
                   w.version, w.lease_token",
    )
    .bind(&tenants)
    .bind(&ids)
    .bind(&token)
    .bind(LEASE.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claims)
}

/// Records an attempt and the webhook's state after it, in one
/// transaction. Returns whether this worker may go on with the webhook
/// (still its lease, same generation and version, enabled).
async fn record(
    pool: &PgPool,
    c: &mut Claim,
    event: &ChangeEvent,
    a: &Attempt,
    next: &Next,
) -> anyhow::Result<bool> {
    let mut tx = pool.begin().await?;
    let next_at = match next {
        Next::Retry { at, .. } => Some(*at),
        _ => None,
    };
    let mut error = a.error.clone();
    match next {
        Next::GiveUp { .. } => error.push_str(&format!(
            "; given up after {} h of attempts",
            (c.first_attempt_at
                .map_or(0, |f| (a.started - f).num_hours()))
        )),
        Next::Disable { reason } => {
            error.push_str("; webhook disabled: ");
            error.push_str(reason);
        }
        _ => {}
    }
    // The log first: a webhook deleted meanwhile takes its log with it
    // (the foreign key refuses the row, and there is nothing to update).
    let logged = sqlx::query(
        "INSERT INTO webhook_deliveries (tenant_id, webhook_id, app_id, event_id, sequence, attempt, \
                                         status_code, error, attempted_at, duration_ms, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&c.tenant_id)
    .bind(&c.id)
    .bind(&c.app_id)
    .bind(&event.id)
    .bind(event.sequence)
    .bind(c.attempt + 1)
    .bind(a.status)
    .bind(&error)
    .bind(a.started)
    .bind(a.took.as_millis().min(i64::MAX as u128) as i64)
    .bind(next_at)
    .execute(&mut *tx)
    .await;
    if let Err(sqlx::Error::Database(e)) = &logged
        && e.is_foreign_key_violation()
    {
        return Ok(false);
    }
    logged?;
    let (position, attempt, first, failing, next_attempt, enabled, reason) = match next {
        Next::Advance => (event.sequence, 0, None, None, None, true, String::new()),
        Next::Retry { at, pending } => (
            c.position,
            pending.failures,
            pending.first_attempt_at,
            pending.failing_since,
            Some(*at),
            true,
            String::new(),
        ),
        Next::GiveUp { failing_since } => (
            event.sequence,
            0,
            None,
            Some(*failing_since),
            None,
            true,
            String::new(),
        ),
        Next::Disable { reason } => (
            c.position,
            c.attempt,
            c.first_attempt_at,
            c.failing_since,
            None,
            false,
            reason.clone(),
        ),
    };
    let row: Option<(bool, i32)> = sqlx::query_as(
        "UPDATE webhooks SET position = $5, attempt = $6, first_attempt_at = $7, failing_since = $8, \
             next_attempt_at = COALESCE($9, '-infinity'), \
             enabled = enabled AND $10, \
             disabled_reason = CASE WHEN $10 THEN disabled_reason ELSE $11 END, \
             lease_until = now() + make_interval(secs => $12) \
         WHERE tenant_id = $1 AND id = $2 AND lease_token = $3 AND generation = $4 \
         RETURNING enabled, version",
    )
    .bind(&c.tenant_id)
    .bind(&c.id)
    .bind(&c.lease_token)
    .bind(c.generation)
    .bind(position)
    .bind(attempt)
    .bind(first)
    .bind(failing)
    .bind(next_attempt)
    .bind(enabled)
    .bind(&reason)
    .bind(LEASE.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let Some((still_enabled, version)) = row else {
        return Ok(false);
    };
    c.position = position;
    c.attempt = attempt;
    c.first_attempt_at = first;
    c.failing_since = failing;
    Ok(
        still_enabled
            && version == c.version
            && matches!(next, Next::Advance | Next::GiveUp { .. }),
    )
}

/// Ends a claim: the lease goes (when still this worker's), and a webhook
/// with no matching event up to `head` moves there.
async fn release(pool: &PgPool, c: &Claim, skip_to: Option<i64>) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE webhooks SET lease_until = NULL, lease_token = NULL, \
             position = CASE WHEN $4::bigint IS NOT NULL AND generation = $5 \
                             THEN GREATEST(position, $4) ELSE position END \
         WHERE tenant_id = $1 AND id = $2 AND lease_token = $3",
    )
    .bind(&c.tenant_id)
    .bind(&c.id)
    .bind(&c.lease_token)
    .bind(skip_to)
    .bind(c.generation)
    .execute(pool)
    .await?;
    Ok(())
}

/// Delivers to one claimed webhook until an attempt fails, it runs out of
/// events, it has had its turn, or the process is stopping (then the claim
/// is given back after the attempt under way, so another process takes the
/// webhook over at once rather than when the lease lapses).
async fn serve_claim(
    pool: PgPool,
    client: reqwest::Client,
    cfg: Arc<DeliveryConfig>,
    mut c: Claim,
    delivered: prometheus_client::metrics::counter::Counter,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Never what the tokens that made it could not read (none: nothing).
    let query = Query::filters(&c.resource_types, &c.operations);
    let query = match &c.readable_types {
        None => Some(query),
        Some(readable) => query.readable_by(|t| readable.iter().any(|r| r == t)),
    };
    let mut done = 0usize;
    let mut skip_to = None;
    'claim: while done < EVENTS_PER_CLAIM {
        let events = {
            let mut conn = pool.acquire().await?;
            let head: Option<i64> =
                sqlx::query_scalar("SELECT last_sequence FROM change_heads WHERE tenant_id = $1")
                    .bind(&c.tenant_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            let head = head.unwrap_or(0);
            let scope = Scope {
                tenant: &c.tenant_id,
                app: c.app_id.as_deref(),
            };
            let events = match &query {
                Some(query) => {
                    scoped_events(&mut conn, scope, query, c.position, Some(head), READ_AHEAD)
                        .await
                        .map_err(|e| anyhow::anyhow!("reading the feed: {e:?}"))?
                }
                None => Vec::new(),
            };
            if events.is_empty() {
                // Nothing for this webhook up to the head: skip there.
                skip_to = Some(head);
                break;
            }
            events
        };
        for event in &events {
            if *stopping.borrow() {
                break 'claim;
            }
            let body = crate::changes::relay::event_json(event)?;
            let a = attempt(
                &client,
                cfg.allow_private,
                &c.url,
                &c.secret,
                &event.id,
                &body,
            )
            .await;
            let before = Pending {
                failures: c.attempt,
                first_attempt_at: c.first_attempt_at,
                failing_since: c.failing_since,
            };
            let next = decide(&cfg, before, a.started, &a.outcome, &a.error, jitter());
            if a.outcome == Outcome::Delivered {
                delivered.inc();
            } else {
                tracing::debug!(webhook = %c.id, sequence = event.sequence, error = %a.error, "webhook attempt failed");
            }
            if let Next::Disable { reason } = &next {
                tracing::warn!(webhook = %c.id, tenant = %c.tenant_id, %reason, "webhook disabled");
            }
            if !record(&pool, &mut c, event, &a, &next).await? {
                break 'claim;
            }
            done += 1;
        }
    }
    release(&pool, &c, skip_to).await
}

/// Deletes log entries past their retention.
async fn prune(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "DELETE FROM webhook_deliveries WHERE attempted_at < now() - make_interval(days => $1)",
    )
    .bind(LOG_RETENTION_DAYS)
    .execute(pool)
    .await?;
    Ok(())
}

/// The worker: claims due webhooks as room frees up and delivers to each
/// in a task of its own, until `shutdown` turns true; then it lets the
/// attempts under way finish (each ends within [`TIMEOUT`]) and gives their
/// claims back.
pub async fn run(
    pool: PgPool,
    hub: Arc<Hub>,
    cfg: DeliveryConfig,
    delivered: prometheus_client::metrics::counter::Counter,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let client = match client(cfg.allow_private) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook delivery cannot start: no HTTP client");
            return;
        }
    };
    let cfg = Arc::new(cfg);
    let mut wake = hub.subscribe();
    let mut tasks = JoinSet::new();
    let mut last_prune = Instant::now() - Duration::from_secs(3600);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let room = cfg.max_in_flight.saturating_sub(tasks.len());
        let mut claimed = 0;
        if room > 0 {
            match claim(&pool, &cfg, room).await {
                Ok(claims) => {
                    claimed = claims.len();
                    for c in claims {
                        tasks.spawn(serve_claim(
                            pool.clone(),
                            client.clone(),
                            cfg.clone(),
                            c,
                            delivered.clone(),
                            shutdown.clone(),
                        ));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming webhooks"),
            }
        }
        if last_prune.elapsed() > Duration::from_secs(3600) {
            last_prune = Instant::now();
            if let Err(e) = prune(&pool).await {
                tracing::warn!(error = %e, "pruning the webhook delivery log");
            }
        }
        if claimed > 0 && claimed == room {
            // Possibly more due: look again once a slot frees.
            if let Some(r) = tasks.join_next().await {
                report(r);
            }
            continue;
        }
        tokio::select! {
            Some(r) = tasks.join_next(), if !tasks.is_empty() => report(r),
            r = wake.recv() => {
                if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    break;
                }
            }
            () = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => {}
        }
    }
    let deadline = tokio::time::Instant::now() + TIMEOUT + Duration::from_secs(5);
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        report(r);
    }
}

fn report(r: Result<anyhow::Result<()>, tokio::task::JoinError>) {
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "webhook delivery"),
        Err(e) => tracing::error!(error = %e, "webhook delivery task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn schedules_parse_and_repeat_their_last_delay() {
        let s = Schedule::default();
        let mins = |m: u64| Duration::from_secs(60 * m);
        assert_eq!(s.delay(1, 0.0), Duration::from_secs(5));
        assert_eq!(s.delay(2, 0.0), Duration::from_secs(30));
        assert_eq!(s.delay(3, 0.0), mins(2));
        assert_eq!(s.delay(4, 0.0), mins(15));
        assert_eq!(s.delay(5, 0.0), mins(60));
        assert_eq!(s.delay(6, 0.0), mins(180));
        assert_eq!(s.delay(7, 0.0), mins(360));
        assert_eq!(s.delay(70, 0.0), mins(360));
        assert_eq!(s.delay(1, 1.0), Duration::from_secs(6));
        assert_eq!(s.delay(1, -1.0), Duration::from_secs(4));
        assert!(Schedule::parse("", Duration::from_secs(1)).is_err());
        assert!(Schedule::parse("5s,0s", Duration::from_secs(1)).is_err());
        assert!(Schedule::parse("5s,x", Duration::from_secs(1)).is_err());
    }

    /// The retry schedule on a clock of the test's own (paused: it moves
    /// only by the delays decided), against a receiver that always fails.
    #[test]
    fn a_failing_event_is_tried_for_72_hours_then_given_up() {
        let cfg = DeliveryConfig::default();
        for j in [-1.0, 0.0, 1.0] {
            let start = at("2026-01-01T00:00:00Z");
            let mut now = start;
            let mut state = Pending::default();
            let mut times = vec![now];
            let failing_since = loop {
                let fail = Outcome::Failed { retry_after: None };
                match decide(&cfg, state, now, &fail, "HTTP 500", j) {
                    Next::Retry { at, pending } => {
                        assert!(at > now);
                        state = pending;
                        now = at;
                        times.push(now);
                    }
                    Next::GiveUp { failing_since } => break failing_since,
                    other => panic!("{other:?}"),
                }
            };
            assert_eq!(failing_since, start);
            let span = (*times.last().unwrap() - start).num_minutes();
            // The last attempt is within 72 h, and within one (jittered)
            // 6 h step of it.
            assert!(span <= 72 * 60, "{span}");
            assert!(span > (72 - 8) * 60, "{span}");
            let gaps: Vec<i64> = times
                .windows(2)
                .map(|w| (w[1] - w[0]).num_seconds())
                .collect();
            let want = [5, 30, 120, 900, 3600, 10800, 21600];
            for (i, g) in gaps.iter().enumerate() {
                let base = want[i.min(want.len() - 1)] as f64;
                let expect = base * (1.0 + 0.2 * j);
                assert!(
                    (*g as f64 - expect).abs() <= 1.0,
                    "gap {i}: {g} vs {expect}"
                );
            }
            assert!(gaps.len() >= 15, "{} attempts", gaps.len() + 1);
        }
    }

    #[test]
    fn success_advances_gone_disables_and_five_failing_days_disable() {
        let cfg = DeliveryConfig::default();
        let now = at("2026-01-10T00:00:00Z");
        assert_eq!(
            decide(&cfg, Pending::default(), now, &Outcome::Delivered, "", 0.0),
            Next::Advance
        );
        match decide(&cfg, Pending::default(), now, &Outcome::Gone, "410", 0.0) {
            Next::Disable { reason } => assert!(reason.contains("410 Gone"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let state = Pending {
            failures: 3,
            first_attempt_at: Some(now - chrono::TimeDelta::hours(1)),
            failing_since: Some(now - chrono::TimeDelta::days(5)),
        };
        let fail = Outcome::Failed { retry_after: None };
        match decide(&cfg, state, now, &fail, "HTTP 502", 0.0) {
            Next::Disable { reason } => {
                assert!(reason.contains("failing since 2026-01-05"), "{reason}");
                assert!(reason.contains("HTTP 502"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Just under 5 days: still retried.
        let state = Pending {
            failing_since: Some(now - chrono::TimeDelta::days(5) + chrono::TimeDelta::minutes(1)),
            ..state
        };
        assert!(matches!(
            decide(&cfg, state, now, &fail, "HTTP 502", 0.0),
            Next::Retry { .. }
        ));
    }

    #[test]
    fn retry_after_is_honoured_when_longer_and_bounded() {
        let cfg = DeliveryConfig::default();
        let now = at("2026-01-10T00:00:00Z");
        let later = |ra: u64| match decide(
            &cfg,
            Pending::default(),
            now,
            &Outcome::Failed {
                retry_after: Some(Duration::from_secs(ra)),
            },
            "HTTP 429",
            0.0,
        ) {
            Next::Retry { at, .. } => (at - now).num_seconds(),
            other => panic!("{other:?}"),
        };
        assert_eq!(later(1), 5);
        assert_eq!(later(120), 120);
        assert_eq!(later(10 * 86_400), 86_400);
        assert_eq!(retry_after("17", now), Some(Duration::from_secs(17)));
        assert_eq!(
            retry_after("Sat, 10 Jan 2026 00:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
