//! Helpers shared by the API tests, the benchmarks and the fault-injection
//! example (each includes this file with `#[path]`).

#![allow(dead_code)]

/// `msg` with `authorization: Bearer <token>`.
pub fn authed<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// A TCP port free on 127.0.0.1 at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Base URL of the test Postgres (without a database name): `CRM_TEST_PG`,
/// else the server at 127.0.0.1:5432 when it answers, else a private,
/// throwaway cluster started from the installed PostgreSQL binaries for
/// this process (`CRM_TEST_PG=private` asks for one always).
pub fn pg_base() -> String {
    static BASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        use crm::db::embedded;
        let given = std::env::var("CRM_TEST_PG").ok();
        match given.as_deref() {
            Some("private") => {}
            Some(url) => return url.to_owned(),
            None if embedded::answers(embedded::LOCAL_SERVER) => {
                return "postgres://postgres@127.0.0.1:5432".into();
            }
            None => {}
        }
        let dir = std::env::temp_dir().join(format!("crm-test-postgres-{}", std::process::id()));
        let cluster = embedded::start(&dir, false, embedded::LOCAL_SERVER)
            .unwrap_or_else(|e| panic!("the tests need PostgreSQL: {e:#}"));
        eprintln!("tests: a private PostgreSQL cluster in {}", dir.display());
        cluster.base_url
    })
    .clone()
}

/// The configuration of an in-process test or benchmark server: the
/// owner URL `database_url`, HS256 tokens signed with `secret`, both
/// listeners on 127.0.0.1 with ports of the system's choosing, and the
/// production defaults otherwise.
pub fn config(database_url: String, secret: &str) -> crm::config::Config {
    use crm::config::{BaseArgs, Config, JwtArgs, LogFormat};
    Config {
        base: BaseArgs {
            database_url,
            log_format: LogFormat::Text,
        },
        app_database_url: None,
        db_pool_size: 8,
        db_acquire_timeout_secs: 3,
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        jwt: JwtArgs {
            secret: Some(secret.into()),
            issuer: None,
            audience: None,
        },
        jwt_jwks_file: None,
        page_token_secret: None,
        shutdown_grace_secs: 5,
        health_interval_secs: 1,
        db_statement_timeout_ms: 5_000,
        request_timeout_secs: 10,
        max_concurrent_requests: 256,
        max_request_bytes: 4 * 1024 * 1024,
        max_response_bytes: 32 * 1024 * 1024,
        http2_max_streams: 256,
        http2_keepalive_secs: 30,
        max_connections: 4096,
        http1_header_timeout_secs: 10,
        changes_retention: std::time::Duration::from_secs(30 * 86_400),
        changes_sequencing: crm::changes::Sequencing::Relay,
        changes_heartbeat_secs: 15,
        changes_pool_size: 4,
        nats_url: None,
        webhooks_allow_private: false,
        webhooks_retry_schedule: crm::webhooks::delivery::DEFAULT_SCHEDULE.into(),
        webhooks_retry_for: std::time::Duration::from_secs(72 * 3600),
        webhooks_max_in_flight: 32,
        webhooks_tenant_in_flight: 4,
        failpoints: String::new(),
    }
}
