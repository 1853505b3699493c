//! Prometheus metrics, served at `/metrics`: requests by method and gRPC
//! code (count and latency), requests refused by the concurrency limit, the
//! database pool, transactions begun, and build information.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Labels of a request metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Full gRPC method (`/crm.v1.AccountService/GetAccount`); REST calls
    /// count under the method they are transcoded to.
    pub method: String,
    /// gRPC status code name (`OK`, `NOT_FOUND`, …).
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    /// Requests refused because the server was at its concurrency limit.
    pub shed: Counter,
    pool: Family<PoolLabels, Gauge>,
    /// Database transactions begun (shared with the pool).
    pub transactions: Counter<u64, AtomicU64>,
    /// Connections closed at once because the connection cap was reached.
    pub connections_refused: Counter,
    connections_open: Gauge,
    /// Messages change-feed watches handed to the transport (taken from
    /// their bounded queues as HTTP/2 flow control allows).
    pub watch_messages: Counter,
    /// Webhook attempts answered with a 2xx.
    pub webhook_deliveries: Counter,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("crm");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by method and gRPC code",
            requests.clone(),
        );
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "Request latency by method and gRPC code",
            latency.clone(),
        );
        let shed = Counter::default();
        registry.register(
            "requests_shed",
            "Requests refused at the concurrency limit",
            shed.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database pool connections by state",
            pool.clone(),
        );
        let transactions = Counter::<u64, AtomicU64>::default();
        registry.register(
            "db_transactions",
            "Database transactions begun",
            transactions.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed at once at the connection cap",
            connections_refused.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Open client connections (gRPC and HTTP)",
            connections_open.clone(),
        );
        let watch_messages = Counter::default();
        registry.register(
            "changes_watch_messages",
            "Messages change-feed watches handed to the transport",
            watch_messages.clone(),
        );
        let webhook_deliveries = Counter::default();
        registry.register(
            "webhook_deliveries",
            "Webhook attempts answered with a 2xx",
            webhook_deliveries.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Arc::new(Self {
            registry,
            requests,
            latency,
            shed,
            pool,
            transactions,
            connections_refused,
            connections_open,
            watch_messages,
            webhook_deliveries,
        })
    }

    /// Records one finished request.
    pub fn request(&self, method: &str, code: tonic::Code, seconds: f64) {
        let labels = RequestLabels {
            method: method.to_owned(),
            code: code_name(code).to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }

    /// The exposition text, with the pool and connection gauges as of now.
    pub fn render(
        &self,
        pool_size: u32,
        pool_idle: usize,
        pool_max: u32,
        connections: usize,
    ) -> String {
        self.connections_open.set(connections as i64);
        self.pool
            .get_or_create(&PoolLabels { state: "idle" })
            .set(pool_idle as i64);
        self.pool
            .get_or_create(&PoolLabels { state: "in_use" })
            .set(i64::from(pool_size) - pool_idle as i64);
        self.pool
            .get_or_create(&PoolLabels { state: "max" })
            .set(i64::from(pool_max));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The canonical upper-snake name of a gRPC code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
