//! Start-up shared by the binary and the tests: [`Application::build`] loads
//! the keys, creates and migrates the database, opens the pool and binds the
//! listener; [`Application::run`] serves until the shutdown future resolves,
//! then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::Layer;

use crate::auth::{Authenticator, DEV_SECRET, JWKS_FILE_POLL, KeyConfig, Keys};
use crate::changes::feed::Feed;
use crate::changes::{self, Hub, leader, maintenance, relay, sequencer};
use crate::config::Config;
use crate::db::{self, Db, DbConfig};
use crate::failpoint::Failpoints;
use crate::grpc::Api;
use crate::grpc::layer::{CallLayer, Limits};
use crate::metrics::Metrics;
use crate::net::{self, ConnectionCap};
use crate::proto::{
    FILE_DESCRIPTOR_SET, account_service_server::AccountServiceServer,
    activity_service_server::ActivityServiceServer, change_service_server::ChangeServiceServer,
    contact_service_server::ContactServiceServer, deal_service_server::DealServiceServer,
    erasure_service_server::ErasureServiceServer,
    field_definition_service_server::FieldDefinitionServiceServer,
    history_service_server::HistoryServiceServer, line_item_service_server::LineItemServiceServer,
    quote_service_server::QuoteServiceServer, webhook_service_server::WebhookServiceServer,
};
use crate::records::Store;
use crate::records::page::PageKey;
use crate::rest::{self, GrpcService, Transcoder};

/// Full names of the crm services (health is reported for each and for "").
pub const SERVICES: [&str; 11] = [
    <AccountServiceServer<Api> as NamedService>::NAME,
    <ContactServiceServer<Api> as NamedService>::NAME,
    <DealServiceServer<Api> as NamedService>::NAME,
    <ActivityServiceServer<Api> as NamedService>::NAME,
    <QuoteServiceServer<Api> as NamedService>::NAME,
    <LineItemServiceServer<Api> as NamedService>::NAME,
    <ChangeServiceServer<Api> as NamedService>::NAME,
    <WebhookServiceServer<Api> as NamedService>::NAME,
    <FieldDefinitionServiceServer<Api> as NamedService>::NAME,
    <HistoryServiceServer<Api> as NamedService>::NAME,
    <ErasureServiceServer<Api> as NamedService>::NAME,
];

/// A built, not yet running, server.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    http_listener: TcpListener,
    http_addr: SocketAddr,
    db: Db,
    store: Store,
    auth: Arc<Authenticator>,
    /// Where the keys come from (a JWKS file is re-read when it changes).
    key_config: KeyConfig,
    health_interval: Duration,
    grace: Duration,
    limits: Limits,
    metrics: Arc<Metrics>,
    max_request_bytes: usize,
    max_response_bytes: usize,
    http2_max_streams: u32,
    http2_keepalive: Duration,
    connections: ConnectionCap,
    http1_header_timeout: Duration,
    feed: FeedParts,
    webhooks_allow_private: bool,
    delivery: crate::webhooks::delivery::DeliveryConfig,
    /// The delivery worker's connections (background role).
    delivery_pool: sqlx::PgPool,
    /// Token minting for the explorer: only `--dev` on the development secret.
    dev_tokens: Option<rest::DevTokens>,
    /// The owner's URL: the definitions' change listener and index builds.
    owner_url: String,
}

/// What the change feed needs at run time.
struct FeedParts {
    hub: Arc<Hub>,
    /// The readers' pool (`CRM_CHANGES_POOL_SIZE`).
    db: Db,
    background: sqlx::PgPool,
    background_role: String,
    retention: Duration,
    heartbeat: Duration,
    nats_url: Option<String>,
}

/// HMAC-SHA256 of `label` under `secret`, hex: a value of its own for each
/// use, so the secret itself never leaves the process.
fn derive_hex(secret: &str, label: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(label);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The password of this deployment's request role, derived from `secret`
/// (the JWT secret, else the page-token secret): the server gives it to its
/// database's request role at start-up, and logs in with it.
pub fn app_password(secret: &str) -> String {
    derive_hex(secret, b"crm_app database login v1")
}

fn page_key(config: &Config, jwt_secret: Option<&str>) -> PageKey {
    if let Some(s) = &config.page_token_secret {
        return PageKey::new(s.as_bytes());
    }
    match jwt_secret {
        // A key of its own, derived so that the JWT secret itself never signs
        // page tokens.
        Some(secret) => {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
                .expect("HMAC accepts keys of any length");
            mac.update(b"crm page tokens v1");
            PageKey::new(&mac.finalize().into_bytes())
        }
        None => {
            tracing::warn!(
                "no CRM_PAGE_TOKEN_SECRET: page tokens use a random key and do not survive a restart"
            );
            PageKey::new(ulid::Ulid::generate().to_string().as_bytes())
        }
    }
}

impl Application {
    /// Prepares everything `crm serve` needs. With `dev`, a missing JWT key
    /// falls back to the development secret (loudly).
    pub async fn build(config: &Config, dev: bool) -> anyhow::Result<Self> {
        crate::net::install_tls_provider();
        // Every declared validation rule is one the server enforces, and every
        // entity's metadata holds together: checked now, not at first use.
        crate::records::rules::check_all();
        for kind in crate::entities::kinds() {
            kind.meta();
        }
        let mut secret = config.jwt.secret.clone();
        let mut dev_tokens = None;
        if secret.is_none() && config.jwt_jwks_file.is_none() && dev {
            tracing::warn!(
                "DEVELOPMENT MODE: accepting tokens signed with the built-in development secret. \
                 Anyone can mint them (`crm token`). Never use --dev in production."
            );
            secret = Some(DEV_SECRET.to_owned());
            dev_tokens = Some(rest::DevTokens {
                issuer: config.jwt.issuer.clone(),
                audience: config.jwt.audience.clone(),
            });
        }
        let key_config = KeyConfig {
            secret: secret.clone(),
            jwks_file: config.jwt_jwks_file.clone(),
        };
        let keys = Keys::load(&key_config)?;
        let auth = Arc::new(Authenticator::new(
            keys,
            config.jwt.issuer.clone(),
            config.jwt.audience.clone(),
        ));

        db::create_database_if_missing(&config.base.database_url).await?;
        let roles = db::migrate(&config.base.database_url).await?;
        // Before any request connection opens: sessions take up the
        // database's sequencing setting when they start.
        changes::prepare(&config.base.database_url, config.changes_sequencing).await?;
        tracing::info!(
            app_role = roles.app(),
            integration_role = roles.integration(),
            "migrations applied"
        );
        let failpoints =
            Failpoints::from_spec(&config.failpoints).map_err(|e| anyhow::anyhow!(e))?;
        let metrics = Metrics::new();
        let db_config = DbConfig {
            url: config.base.database_url.clone(),
            app_url: config.app_database_url.clone(),
            pool_size: config.db_pool_size,
            acquire_timeout: config.acquire_timeout(),
            statement_timeout: Duration::from_millis(config.db_statement_timeout_ms),
            app_password: secret
                .as_deref()
                .or(config.page_token_secret.as_deref())
                .map(app_password),
            failpoints,
            transactions: metrics.transactions.clone(),
            prepare: crate::entities::kinds()
                .map(|k| k.meta().sql.prepare_get.clone())
                .collect(),
        };
        let db = Db::connect(&db_config).await?;
        // The feed's readers: the same role and rules, their own connections.
        let feed_db = Db::connect(&DbConfig {
            pool_size: config.changes_pool_size.max(1),
            ..db_config
        })
        .await?;
        let hub = Hub::new(config.changes_sequencing);
        let background = changes::background_pool(&config.base.database_url, 4).await?;
        let delivery_pool = changes::background_pool(&config.base.database_url, 4).await?;
        let delivery = crate::webhooks::delivery::DeliveryConfig {
            allow_private: config.webhooks_allow_private,
            schedule: crate::webhooks::delivery::Schedule::parse(
                &config.webhooks_retry_schedule,
                config.webhooks_retry_for,
            )
            .map_err(|e| anyhow::anyhow!("CRM_WEBHOOKS_RETRY_SCHEDULE {e}"))?,
            max_in_flight: config.webhooks_max_in_flight.max(1),
            tenant_in_flight: config.webhooks_tenant_in_flight.max(1),
            ..Default::default()
        };
        let background_role: String = sqlx::query_scalar("SELECT crm_background_role()")
            .fetch_one(&background)
            .await
            .context("reading the background role")?;
        let store =
            Store::new(db.clone(), page_key(config, secret.as_deref())).with_changes(hub.clone());

        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("binding {}", config.grpc_addr))?;
        let addr = listener.local_addr()?;
        let http_listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding {}", config.http_addr))?;
        let http_addr = http_listener.local_addr()?;
        Ok(Self {
            listener,
            addr,
            http_listener,
            http_addr,
            db,
            store,
            auth,
            key_config,
            health_interval: Duration::from_secs(config.health_interval_secs.max(1)),
            grace: Duration::from_secs(config.shutdown_grace_secs),
            limits: Limits {
                request_timeout: Duration::from_secs(config.request_timeout_secs.max(1)),
                max_concurrent: config.max_concurrent_requests,
            },
            max_request_bytes: config.max_request_bytes,
            max_response_bytes: config.max_response_bytes,
            http2_max_streams: config.http2_max_streams,
            http2_keepalive: Duration::from_secs(config.http2_keepalive_secs.max(1)),
            connections: ConnectionCap::new(
                config.max_connections,
                metrics.connections_refused.clone(),
            ),
            http1_header_timeout: Duration::from_secs(config.http1_header_timeout_secs.max(1)),
            metrics,
            feed: FeedParts {
                hub,
                db: feed_db,
                background,
                background_role,
                retention: config.changes_retention,
                heartbeat: Duration::from_secs(config.changes_heartbeat_secs.max(1)),
                nats_url: config.nats_url.clone(),
            },
            webhooks_allow_private: config.webhooks_allow_private,
            delivery,
            delivery_pool,
            dev_tokens,
            owner_url: config.base.database_url.clone(),
        })
    }

    /// The bound gRPC address (useful with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves until `shutdown` resolves; then reports NOT_SERVING, stops
    /// accepting, and gives in-flight calls the grace period to finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (reporter, health) = tonic_health::server::health_reporter();
        set_health(&reporter, self.db.ping(self.health_interval).await).await;
        let watcher = tokio::spawn(watch_database(
            self.db.clone(),
            reporter.clone(),
            self.health_interval,
        ));

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        // The feed's readers end when shutdown begins; its background work
        // (each role held by one process at a time) ends with the process.
        let (feed_stop, feed_stopped) = tokio::sync::watch::channel(false);
        let feed = Feed::new(
            self.feed.db.clone(),
            self.feed.hub.clone(),
            self.feed.heartbeat,
            feed_stopped.clone(),
        )
        .counting(self.metrics.watch_messages.clone());
        let mut workers = self.spawn_feed_workers();
        // A JWKS file is re-read when it changes (keys rotate without a
        // restart).
        if self.key_config.jwks_file.is_some() {
            workers.push(tokio::spawn(crate::auth::watch_jwks_file(
                self.auth.clone(),
                self.key_config.clone(),
                JWKS_FILE_POLL,
            )));
        }
        // Custom-field definitions: changes heard from every replica, and
        // the definitions' indexes built by one of them.
        workers.push(tokio::spawn(
            self.store.schemas().clone().listen(self.owner_url.clone()),
        ));
        let (schemas, owner_url) = (self.store.schemas().clone(), self.owner_url.clone());
        workers.push(tokio::spawn(leader::hold(
            self.feed.background.clone(),
            "field_indexes",
            move |conn| crate::custom::index::work(conn, owner_url.clone(), schemas.clone()),
        )));
        let delivery = tokio::spawn(crate::webhooks::delivery::run(
            self.delivery_pool.clone(),
            self.feed.hub.clone(),
            self.delivery.clone(),
            self.metrics.webhook_deliveries.clone(),
            feed_stopped,
        ));
        let webhooks =
            crate::webhooks::Webhooks::new(self.store.db().clone(), self.webhooks_allow_private);
        let fields = crate::custom::FieldDefinitions::new(
            self.store.db().clone(),
            self.store.schemas().clone(),
            self.store.pages().clone(),
        );
        let api = Api::new(self.store.clone(), feed, webhooks, fields);
        // Message size limits, both ways, on every crm service.
        let (max_in, max_out) = (self.max_request_bytes, self.max_response_bytes);
        macro_rules! limit {
            ($server:expr) => {
                $server
                    .max_decoding_message_size(max_in)
                    .max_encoding_message_size(max_out)
            };
        }
        let routes = Routes::new(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(limit!(AccountServiceServer::new(api.clone())))
            .add_service(limit!(ContactServiceServer::new(api.clone())))
            .add_service(limit!(DealServiceServer::new(api.clone())))
            .add_service(limit!(ActivityServiceServer::new(api.clone())))
            .add_service(limit!(QuoteServiceServer::new(api.clone())))
            .add_service(limit!(LineItemServiceServer::new(api.clone())))
            .add_service(limit!(ChangeServiceServer::new(api.clone())))
            .add_service(limit!(WebhookServiceServer::new(api.clone())))
            .add_service(limit!(FieldDefinitionServiceServer::new(api.clone())))
            .add_service(limit!(HistoryServiceServer::new(api.clone())))
            .add_service(limit!(ErasureServiceServer::new(api)))
            .prepare();
        let call_layer = CallLayer::new(self.auth.clone(), self.metrics.clone(), self.limits);
        // REST calls go through the very same stack as gRPC calls.
        let grpc_stack = GrpcService::new(call_layer.layer(routes.clone()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            rx.wait_for(|s| *s).await.ok();
        };
        let grpc = Server::builder()
            .max_concurrent_streams(self.http2_max_streams)
            .http2_keepalive_interval(Some(self.http2_keepalive))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .tcp_keepalive(Some(Duration::from_secs(60)))
            .layer(call_layer)
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                net::incoming(self.listener, self.connections.clone()),
                stopped(stop_rx.clone()),
            );
        let http = net::serve_http(
            self.http_listener,
            rest::router(
                Transcoder::new(grpc_stack, self.max_request_bytes),
                self.db.clone(),
                self.metrics.clone(),
                self.connections.clone(),
                self.dev_tokens.clone(),
            ),
            self.connections.clone(),
            self.http1_header_timeout,
            stopped(stop_rx),
        );
        let server = async move {
            let (grpc, ()) = tokio::join!(grpc, http);
            grpc.context("gRPC server failed")
        };
        tracing::info!(grpc = %self.addr, http = %self.http_addr, "crm serving");
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => {
                watcher.abort();
                workers.iter().for_each(|w| w.abort());
                delivery.abort();
                return result;
            }
            () = shutdown => {}
        }
        tracing::info!(grace_secs = self.grace.as_secs(), "shutting down");
        watcher.abort();
        feed_stop.send(true).ok();
        // Health first: load balancers and meshes stop sending new calls.
        set_health(&reporter, false).await;
        // Stop accepting; calls in flight finish.
        stop_tx.send(true).ok();
        // End the health Watch streams (once they have seen NOT_SERVING), or
        // their connections would hold the drain open until the grace ends.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut reporter = reporter;
        for name in std::iter::once("").chain(SERVICES) {
            reporter.clear_service_status(name).await;
        }
        match tokio::time::timeout(self.grace, &mut server).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!("grace period over; closing remaining calls"),
        }
        workers.iter().for_each(|w| w.abort());
        // Webhook attempts under way finish (each within 10 s) and give
        // their claims back, so another replica goes on at once.
        let delivery_abort = delivery.abort_handle();
        if tokio::time::timeout(self.grace, delivery).await.is_err() {
            delivery_abort.abort();
        }
        self.db.close().await;
        self.feed.background.close().await;
        self.delivery_pool.close().await;
        Ok(())
    }

    /// Starts the feed's background work: wake-ups, and the single-writer
    /// roles (sequencer, maintenance, JetStream relay when configured).
    fn spawn_feed_workers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let f = &self.feed;
        let mut workers = vec![
            tokio::spawn(f.hub.clone().listen(f.background.clone())),
            tokio::spawn(f.hub.clone().announce(f.background.clone())),
        ];
        let hub = f.hub.clone();
        workers.push(tokio::spawn(leader::hold(
            f.background.clone(),
            "sequencer",
            move |conn| sequencer::run(conn, hub.clone()),
        )));
        let (role, retention) = (f.background_role.clone(), f.retention);
        workers.push(tokio::spawn(leader::hold(
            f.background.clone(),
            "maintenance",
            move |conn| maintenance::run(conn, role.clone(), retention),
        )));
        if let Some(url) = f.nats_url.clone() {
            let hub = f.hub.clone();
            workers.push(tokio::spawn(leader::hold(
                f.background.clone(),
                "relay",
                move |conn| relay::run(conn, hub.clone(), url.clone()),
            )));
        }
        workers
    }
}

async fn set_health(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    for name in SERVICES {
        reporter.set_service_status(name, status).await;
    }
}

/// Keeps health in step with the database: SERVING only while it answers.
async fn watch_database(db: Db, reporter: HealthReporter, interval: Duration) {
    let mut last = None;
    loop {
        tokio::time::sleep(interval).await;
        let up = db.ping(interval).await;
        if last != Some(up) {
            if !up {
                tracing::warn!("database not answering: health NOT_SERVING");
            } else if last.is_some() {
                tracing::info!("database answering again: health SERVING");
            }
            set_health(&reporter, up).await;
            last = Some(up);
        }
    }
}
