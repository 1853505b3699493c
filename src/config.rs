//! Configuration, from flags and environment variables (see the README's
//! table). Every setting has a default that works on a development machine,
//! except the JWT keys, which `crm serve` requires unless `--dev`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The default `DATABASE_URL`: the local server, database `crm`.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/crm";

/// What `crm serve` and `crm migrate` share: the database and the log.
#[derive(Args, Clone, Debug)]
pub struct BaseArgs {
    /// Owner connection URL: the database is created if missing and
    /// migrated. It must name a database of crm's own (not `postgres` or a
    /// template).
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Log format.
    #[arg(long, env = "CRM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The token settings `crm serve` checks and `crm token` signs with.
#[derive(Args, Clone, Debug, Default)]
pub struct JwtArgs {
    /// HS256 shared secret for bearer tokens (at least 32 bytes).
    #[arg(long = "jwt-secret", env = "CRM_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Required `iss` claim, when set.
    #[arg(long = "jwt-issuer", env = "CRM_JWT_ISSUER")]
    pub issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long = "jwt-audience", env = "CRM_JWT_AUDIENCE")]
    pub audience: Option<String>,
}

/// The settings of `crm serve`.
#[derive(Args, Clone, Debug)]
pub struct Config {
    #[command(flatten)]
    pub base: BaseArgs,

    #[command(flatten)]
    pub jwt: JwtArgs,

    /// Optional URL logging in directly as this database's request role,
    /// `crm_app_<database>_<hash>` (its exact name: `SELECT crm_app_role()`
    /// in the database, or the `crm migrate` log line), with a password the
    /// operator gave it. Without it, request connections log in as that role
    /// with a password derived from the JWT secret (given to this role alone
    /// at start-up); with no secret, they use DATABASE_URL and `SET ROLE`.
    /// Each database has roles of its own, and only they may connect to it:
    /// another deployment's credentials on the same cluster open nothing
    /// here, and the legacy cluster-wide crm_app keeps no right.
    #[arg(long, env = "CRM_APP_DATABASE_URL")]
    pub app_database_url: Option<String>,

    /// Maximum database connections serving requests.
    #[arg(long, env = "CRM_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,

    /// Seconds a request waits for a database connection before UNAVAILABLE.
    #[arg(long, env = "CRM_DB_ACQUIRE_TIMEOUT_SECS", default_value_t = 3)]
    pub db_acquire_timeout_secs: u64,

    /// gRPC listen address.
    #[arg(long, env = "CRM_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// HTTP listen address: REST/JSON, /openapi.json, /explorer, /healthz, /readyz.
    #[arg(long, env = "CRM_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// JWKS file with RS256 / ES256 / EdDSA public keys.
    #[arg(long, env = "CRM_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// Key for signing page tokens. Defaults to one derived from
    /// CRM_JWT_SECRET (or the development secret); with only a JWKS file and
    /// no key, a random key is used and tokens do not survive a restart.
    #[arg(long, env = "CRM_PAGE_TOKEN_SECRET", hide_env_values = true)]
    pub page_token_secret: Option<String>,

    /// Seconds in-flight calls get to finish after SIGTERM.
    #[arg(long, env = "CRM_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Longest a single SQL statement may run (ms); Postgres cancels it after.
    #[arg(long, env = "CRM_DB_STATEMENT_TIMEOUT_MS", default_value_t = 5_000)]
    pub db_statement_timeout_ms: u64,

    /// Longest a request may take (s), REST or gRPC; a shorter `grpc-timeout`
    /// from the client wins. Then DEADLINE_EXCEEDED (504).
    #[arg(long, env = "CRM_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,

    /// Requests served at once (REST and gRPC together); beyond it requests
    /// are refused at once with RESOURCE_EXHAUSTED (429) rather than queued.
    #[arg(long, env = "CRM_MAX_CONCURRENT_REQUESTS", default_value_t = 256)]
    pub max_concurrent_requests: usize,

    /// Largest request message (gRPC) or body (REST), in bytes.
    #[arg(long, env = "CRM_MAX_REQUEST_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Largest gRPC response message, in bytes.
    #[arg(long, env = "CRM_MAX_RESPONSE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_response_bytes: usize,

    /// HTTP/2 streams per connection.
    #[arg(long, env = "CRM_HTTP2_MAX_STREAMS", default_value_t = 256)]
    pub http2_max_streams: u32,

    /// HTTP/2 keepalive ping interval (s); a peer silent for 20 s more is dropped.
    #[arg(long, env = "CRM_HTTP2_KEEPALIVE_SECS", default_value_t = 30)]
    pub http2_keepalive_secs: u64,

    /// Connections open at once (gRPC and HTTP together); beyond, a new
    /// connection is closed at once.
    #[arg(long, env = "CRM_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Seconds an HTTP/1 client has to send a request's whole header (also
    /// how long an idle keep-alive connection stays open).
    #[arg(long, env = "CRM_HTTP1_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub http1_header_timeout_secs: u64,

    /// How long change events are kept, at least (`30d`, `72h`, ...).
    /// Retention drops whole weekly partitions, so events stay up to a week
    /// longer.
    #[arg(
        long,
        env = "CRM_CHANGES_RETENTION",
        default_value = "30d",
        value_parser = parse_duration
    )]
    pub changes_retention: Duration,

    /// How change sequences are assigned: `relay` (one PostgreSQL node:
    /// writes never wait for each other) or `counter` (Citus: each tenant's
    /// writes commit one at a time). Every replica must use the same.
    #[arg(
        long,
        env = "CRM_CHANGES_SEQUENCING",
        value_enum,
        default_value_t = crate::changes::Sequencing::Relay
    )]
    pub changes_sequencing: crate::changes::Sequencing,

    /// Seconds without an event after which a watch sends a heartbeat.
    #[arg(long, env = "CRM_CHANGES_HEARTBEAT_SECS", default_value_t = 15)]
    pub changes_heartbeat_secs: u64,

    /// Connections that ListChanges and the watches read through: a pool of
    /// their own, so that a burst of writes never delays the feed and
    /// watches never take the connections writes need.
    #[arg(long, env = "CRM_CHANGES_POOL_SIZE", default_value_t = 4)]
    pub changes_pool_size: u32,

    /// NATS server of the JetStream relay (e.g. nats://127.0.0.1:4222);
    /// without it nothing about NATS runs.
    #[arg(long, env = "CRM_NATS_URL")]
    pub nats_url: Option<String>,

    /// Let webhooks point at loopback, private and link-local addresses
    /// (`true`/`false`). Off by default: such URLs are refused when a
    /// webhook is created or changed, and again before each delivery.
    #[arg(
        long,
        env = "CRM_WEBHOOKS_ALLOW_PRIVATE",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub webhooks_allow_private: bool,

    /// Delays before each retry of a failed webhook delivery, comma
    /// separated; the last one repeats. Each is varied ±20 % at random.
    #[arg(
        long,
        env = "CRM_WEBHOOKS_RETRY_SCHEDULE",
        default_value = crate::webhooks::delivery::DEFAULT_SCHEDULE
    )]
    pub webhooks_retry_schedule: String,

    /// How long an event is retried (from its first attempt) before it is
    /// given up and delivery goes on with the next.
    #[arg(
        long,
        env = "CRM_WEBHOOKS_RETRY_FOR",
        default_value = "72h",
        value_parser = parse_duration
    )]
    pub webhooks_retry_for: Duration,

    /// Webhook deliveries this process makes at once.
    #[arg(long, env = "CRM_WEBHOOKS_MAX_IN_FLIGHT", default_value_t = 32)]
    pub webhooks_max_in_flight: usize,

    /// Webhooks of one tenant being delivered to at once, across all
    /// processes: one tenant's slow receivers cannot take every slot.
    #[arg(long, env = "CRM_WEBHOOKS_TENANT_IN_FLIGHT", default_value_t = 4)]
    pub webhooks_tenant_in_flight: i64,

    /// Test-only failpoints (see `crm::failpoint`). Never in production.
    #[arg(long, env = "CRM_FAILPOINTS", default_value = "", hide = true)]
    pub failpoints: String,

    /// Seconds between database health probes.
    #[arg(long, env = "CRM_HEALTH_INTERVAL_SECS", default_value_t = 2)]
    pub health_interval_secs: u64,
}

impl Config {
    /// How long a request waits for a connection.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.db_acquire_timeout_secs)
    }
}

/// Parses a duration such as `250ms`, `90`, `90s`, `15m`, `1h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 1h or 7d"))?;
    if unit == "ms" {
        return Ok(Duration::from_millis(n));
    }
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unit must be ms, s, m, h or d")),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("999999999999999999d").is_err());
    }
}
