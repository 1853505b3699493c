//! Test harness: every test gets its own database (created and migrated by
//! the real start-up path) and its own server on 127.0.0.1:0, reached through
//! the generated gRPC clients.

use std::str::FromStr;
use std::time::Duration;

use crm::app::Application;
use crm::config::Config;
use crm::proto::account_service_client::AccountServiceClient;
use crm::proto::activity_service_client::ActivityServiceClient;
use crm::proto::contact_service_client::ContactServiceClient;
use crm::proto::deal_service_client::DealServiceClient;
use crm::proto::line_item_service_client::LineItemServiceClient;
use crm::proto::quote_service_client::QuoteServiceClient;
use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

#[path = "../common/mod.rs"]
mod common;
pub use common::{authed, free_port, pg_base};

/// The HS256 secret test servers trust.
pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// A running server with its own database; dropping it stops the server and
/// drops the database and its roles.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    pub http: reqwest::Client,
    pub db_name: String,
    /// The database's request role (`crm_app_role()`).
    pub app_role: String,
    /// The database's integration role (`crm_integration_role()`).
    pub integration_role: String,
    /// The database's background role (`crm_background_role()`).
    pub background_role: String,
    pub channel: Channel,
    /// The owner URL of the database (its cluster may be a private one).
    owner_url: String,
    /// The proxy the server reaches Postgres through, which checks that
    /// every request statement carries its tenant (`statements`).
    pub capture: Option<crate::statements::Capture>,
    /// The HS256 secret the server trusts.
    secret: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The configuration of a test server on the database `db_name`.
pub fn config(db_name: &str) -> Config {
    common::config(format!("{}/{db_name}", pg_base()), SECRET)
}

/// Starts a server on a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server on a fresh database, with `tweak` applied to its config.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_in(false, tweak).await
}

/// Starts a server as [`spawn_app_with`] does, in development mode (as
/// `crm serve --dev`) when `dev`.
pub async fn spawn_app_in(dev: bool, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let db_name = format!(
        "crm_test_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let mut cfg = config(&db_name);
    tweak(&mut cfg);
    // The database actually used (`tweak` may point elsewhere).
    let db_name = PgConnectOptions::from_str(&cfg.base.database_url)
        .expect("DATABASE_URL parses")
        .get_database()
        .expect("DATABASE_URL names a database")
        .to_owned();
    // The server reaches Postgres through the statement capture (unless the
    // test gives the request role a login of its own).
    let owner_url = cfg.base.database_url.clone();
    let capture = if cfg.app_database_url.is_none() {
        let options = PgConnectOptions::from_str(&cfg.base.database_url).unwrap();
        let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
            .await
            .ok()
            .and_then(|mut a| a.next());
        match upstream {
            Some(upstream) => {
                let capture = crate::statements::Capture::start(upstream).await;
                let mut url = url::Url::parse(&cfg.base.database_url).unwrap();
                url.set_host(Some("127.0.0.1")).unwrap();
                url.set_port(Some(capture.addr.port())).unwrap();
                cfg.base.database_url = url.to_string();
                Some(capture)
            }
            None => None,
        }
    } else {
        None
    };
    let app = Application::build(&cfg, dev).await.expect("server builds");
    let (app_role, integration_role, background_role): (String, String, String) = {
        let mut owner = sqlx::PgConnection::connect(&owner_url)
            .await
            .expect("owner connects");
        let roles =
            sqlx::query_as("SELECT crm_app_role(), crm_integration_role(), crm_background_role()")
                .fetch_one(&mut owner)
                .await
                .expect("the database's roles");
        owner.close().await.ok();
        roles
    };
    let addr = app.grpc_addr();
    let http_addr = app.http_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run(async {
        stopped.await.ok();
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connects");
    TestApp {
        addr,
        http_addr,
        http: reqwest::Client::new(),
        db_name,
        app_role,
        integration_role,
        background_role,
        channel,
        owner_url,
        capture,
        // Without one (JWKS tests), tokens are minted as before with SECRET;
        // in development mode the server then trusts the development secret.
        secret: cfg.jwt.secret.clone().unwrap_or_else(|| {
            if dev && cfg.jwt_jwks_file.is_none() {
                crm::auth::DEV_SECRET.into()
            } else {
                SECRET.into()
            }
        }),
        stop: Some(stop),
        handle: Some(handle),
    }
}

impl TestApp {
    /// A person's token for `tenant`.
    pub fn token(&self, tenant: &str, sub: &str) -> String {
        crm::auth::mint(self.secret.as_bytes(), tenant, sub, None, 3600, None, None).unwrap()
    }

    /// A person's token for `tenant` whose `scope` claim is `scope`.
    pub fn scoped_token(&self, tenant: &str, sub: &str, scope: &str) -> String {
        crm::auth::mint_scoped(
            self.secret.as_bytes(),
            tenant,
            sub,
            None,
            Some(scope),
            3600,
            None,
            None,
        )
        .unwrap()
    }

    /// An integration token for `tenant` and `app`.
    pub fn app_token(&self, tenant: &str, sub: &str, app: &str) -> String {
        crm::auth::mint(
            self.secret.as_bytes(),
            tenant,
            sub,
            Some(app),
            3600,
            None,
            None,
        )
        .unwrap()
    }

    pub fn accounts(&self) -> AccountServiceClient<Channel> {
        AccountServiceClient::new(self.channel.clone())
    }

    pub fn contacts(&self) -> ContactServiceClient<Channel> {
        ContactServiceClient::new(self.channel.clone())
    }

    pub fn deals(&self) -> DealServiceClient<Channel> {
        DealServiceClient::new(self.channel.clone())
    }

    pub fn activities(&self) -> ActivityServiceClient<Channel> {
        ActivityServiceClient::new(self.channel.clone())
    }

    pub fn quotes(&self) -> QuoteServiceClient<Channel> {
        QuoteServiceClient::new(self.channel.clone())
    }

    pub fn line_items(&self) -> LineItemServiceClient<Channel> {
        LineItemServiceClient::new(self.channel.clone())
    }

    /// Creates an account named `name` and returns it.
    pub async fn account(&self, token: &str, name: &str) -> crm::proto::Account {
        self.accounts()
            .create_account(authed(
                token,
                crm::proto::CreateAccountRequest {
                    account: Some(crm::proto::Account {
                        name: name.into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("account created")
            .into_inner()
    }

    /// Creates `contact` and returns it.
    pub async fn contact(&self, token: &str, contact: crm::proto::Contact) -> crm::proto::Contact {
        self.contacts()
            .create_contact(authed(
                token,
                crm::proto::CreateContactRequest {
                    contact: Some(contact),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("contact created")
            .into_inner()
    }

    /// Creates `deal` and returns it.
    pub async fn deal(&self, token: &str, deal: crm::proto::Deal) -> crm::proto::Deal {
        self.deals()
            .create_deal(authed(
                token,
                crm::proto::CreateDealRequest {
                    deal: Some(deal),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("deal created")
            .into_inner()
    }

    /// Creates `quote` and returns it.
    pub async fn quote(&self, token: &str, quote: crm::proto::Quote) -> crm::proto::Quote {
        self.quotes()
            .create_quote(authed(
                token,
                crm::proto::CreateQuoteRequest {
                    quote: Some(quote),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("quote created")
            .into_inner()
    }

    /// Creates `line` and returns it.
    pub async fn line_item(&self, token: &str, line: crm::proto::LineItem) -> crm::proto::LineItem {
        self.line_items()
            .create_line_item(authed(
                token,
                crm::proto::CreateLineItemRequest {
                    line_item: Some(line),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("line item created")
            .into_inner()
    }

    /// Creates `activity` and returns it.
    pub async fn activity(
        &self,
        token: &str,
        activity: crm::proto::Activity,
    ) -> crm::proto::Activity {
        self.activities()
            .create_activity(authed(
                token,
                crm::proto::CreateActivityRequest {
                    activity: Some(activity),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("activity created")
            .into_inner()
    }

    /// Calls the REST API: `method path` with an optional bearer token and
    /// JSON body; returns the status, the JSON body and the headers.
    pub async fn rest(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
        let url = format!("http://{}{path}", self.http_addr);
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, json, headers)
    }

    /// The value of the metric sample `name` (a whole series, e.g.
    /// `crm_db_transactions_total`) on `/metrics`. Panics if the server does
    /// not export it, so that a renamed metric fails the test using it.
    pub async fn metric(&self, name: &str) -> f64 {
        let (status, body, _) = self.rest("GET", "/metrics", None, None).await;
        assert_eq!(status, 200);
        let text = body.as_str().expect("metrics are text");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("the server exports no metric {name}:\n{text}"))
    }

    /// The owner URL of this test's database.
    pub fn owner_url(&self) -> &str {
        &self.owner_url
    }

    /// A connection to this test's database as the owner.
    pub async fn owner_conn(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.owner_url).await.unwrap()
    }

    /// Stops the server, waiting for it to drain, then drops the database
    /// and its roles.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            s.send(()).ok();
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
        tokio::task::spawn_blocking(move || drop(self))
            .await
            .unwrap();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(capture) = &self.capture {
            let flagged = capture.flagged();
            if !flagged.is_empty() && !std::thread::panicking() {
                panic!(
                    "the server sent statements on tenant tables without tenant_id = $n:\n{}",
                    flagged.join("\n")
                );
            }
        }
        if let Some(s) = self.stop.take() {
            s.send(()).ok();
        }
        if let Some(h) = self.handle.take() {
            h.abort();
        }
        let name = self.db_name.clone();
        let roles = [
            self.integration_role.clone(),
            self.app_role.clone(),
            self.background_role.clone(),
        ];
        let maintenance = PgConnectOptions::from_str(&self.owner_url)
            .unwrap()
            .database("postgres");
        // Drop may run inside the test's runtime: use a thread with its own.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use sqlx::{ConnectOptions, Executor};
                if let Ok(mut c) = maintenance.connect().await {
                    let _ = c
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        )))
                        .await;
                    // Roles are cluster-wide: without this, every test run
                    // would leave three behind. Their names are [a-z0-9_].
                    for role in roles {
                        let _ = c
                            .execute(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
                            .await;
                    }
                }
            });
        })
        .join()
        .ok();
    }
}

/// The password test servers give their request role (derived from
/// [`SECRET`]).
pub fn app_password() -> String {
    crm::app::app_password(SECRET)
}

/// Asserts `status` has `code` and an ErrorInfo with `reason` in domain crm.v1.
pub fn assert_status(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo detail");
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "crm.v1");
}

/// The fields named by the BadRequest detail of `status`.
pub fn violations(status: &Status) -> Vec<String> {
    assert_status(status, Code::InvalidArgument, "VALIDATION_FAILED");
    status
        .get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

/// A field mask of `paths`.
pub fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

/// A fresh tenant id.
pub fn tenant() -> String {
    format!("t-{}", ulid::Ulid::generate())
}
