//! Webhook delivery (SPEC §12) against real receivers: every attempt
//! verified by the independent `standardwebhooks` verifier; order; retries
//! with the same `webhook-id`; 410; Retry-After; filters; tenant and app
//! isolation; the delivery log and redelivery; the delivery-time address
//! check; and, with `crm serve` processes, SIGKILL and two replicas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crm::proto::account_service_client::AccountServiceClient;
use crm::proto::webhook_service_client::WebhookServiceClient;
use crm::proto::*;
use tonic::Code;
use tonic::transport::Channel;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use crate::reliability::{Process, ScratchDb};

fn hooks(app: &TestApp) -> WebhookServiceClient<Channel> {
    WebhookServiceClient::new(app.channel.clone())
}

/// A server whose webhooks may point at loopback receivers, retrying fast.
async fn delivering() -> TestApp {
    spawn_app_with(|c| {
        c.webhooks_allow_private = true;
        c.webhooks_retry_schedule = "200ms".into();
    })
    .await
}

async fn create_hook(app: &TestApp, token: &str, w: Webhook) -> Webhook {
    hooks(app)
        .create_webhook(authed(token, CreateWebhookRequest { webhook: Some(w) }))
        .await
        .unwrap()
        .into_inner()
}

fn at(url: String) -> Webhook {
    Webhook {
        url,
        ..Default::default()
    }
}

/// One received request, checked by the independent verifier.
#[derive(Clone, Debug)]
struct Received {
    id: String,
    timestamp: i64,
    body: serde_json::Value,
}

/// The requests `server` received for `path` (all when empty), each
/// verified against `secret` (a failing signature fails the test).
async fn received(server: &MockServer, path: &str, secret: &str) -> Vec<Received> {
    let verifier = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
    let mut out = Vec::new();
    for r in server.received_requests().await.unwrap_or_default() {
        if !path.is_empty() && r.url.path() != path {
            continue;
        }
        verifier
            .verify(&r.body, &r.headers)
            .unwrap_or_else(|e| panic!("signature does not verify ({e:?}): {r:?}"));
        let header = |n: &str| r.headers.get(n).unwrap().to_str().unwrap().to_owned();
        assert_eq!(header("content-type"), "application/json");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let id = header("webhook-id");
        assert_eq!(body["id"], id.as_str(), "webhook-id is the event id");
        out.push(Received {
            id,
            timestamp: header("webhook-timestamp").parse().unwrap(),
            body,
        });
    }
    out
}

/// Waits (up to 20 s) until `server` has `n` requests for `path`.
async fn wait_for(server: &MockServer, path: &str, secret: &str, n: usize) -> Vec<Received> {
    for _ in 0..200 {
        let got = received(server, path, secret).await;
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = received(server, path, secret).await;
    panic!("{} requests at {path:?}, wanted {n}: {got:?}", got.len());
}

fn sequence(r: &Received) -> i64 {
    r.body["sequence"].as_str().unwrap().parse().unwrap()
}

async fn deliveries(app: &TestApp, token: &str, id: &str) -> Vec<WebhookDelivery> {
    hooks(app)
        .list_webhook_deliveries(authed(
            token,
            ListWebhookDeliveriesRequest {
                id: id.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

/// The log once it has (at least) `n` entries: an attempt is logged just
/// after the receiver answers it.
async fn logged(app: &TestApp, token: &str, id: &str, n: usize) -> Vec<WebhookDelivery> {
    for _ in 0..100 {
        let log = deliveries(app, token, id).await;
        if log.len() >= n {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    deliveries(app, token, id).await
}

fn seconds(t: &Option<prost_types::Timestamp>) -> f64 {
    let t = t.as_ref().unwrap();
    t.seconds as f64 + f64::from(t.nanos) / 1e9
}

#[tokio::test]
async fn events_arrive_signed_in_order_and_are_logged() {
    let app = delivering().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let t = app.token(&tenant(), "u1");
    // Written (and in the feed) before the webhook: not delivered.
    app.account(&t, "Before").await;
    let mut feed = crm::proto::change_service_client::ChangeServiceClient::new(app.channel.clone());
    for _ in 0..100 {
        let page = feed
            .list_changes(authed(&t, ListChangesRequest::default()))
            .await
            .unwrap()
            .into_inner();
        if !page.changes.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hook = create_hook(&app, &t, at(format!("{}/hook", server.uri()))).await;
    let a = app.account(&t, "Acme").await;
    app.account(&t, "Globex").await;
    app.contact(
        &t,
        Contact {
            account_id: a.id.clone(),
            first_name: "Ada".into(),
            last_name: "L".into(),
            ..Default::default()
        },
    )
    .await;
    let got = wait_for(&server, "/hook", &hook.secret, 3).await;
    // The contact's create also touches nothing else: three events.
    assert_eq!(got.len(), 3, "{got:?}");
    let seqs: Vec<i64> = got.iter().map(sequence).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(got[0].body["resource_type"], "account");
    assert_eq!(got[0].body["record"]["name"], "Acme");
    assert_eq!(got[2].body["resource_type"], "contact");
    let now = chrono::Utc::now().timestamp();
    assert!(got.iter().all(|r| (now - r.timestamp).abs() < 60));
    // The log: newest first, one attempt each, all 204.
    let log = logged(&app, &t, &hook.id, 3).await;
    assert_eq!(log.len(), 3, "{log:?}");
    let logged: Vec<&str> = log.iter().map(|d| d.event_id.as_str()).collect();
    let sent: Vec<&str> = got.iter().rev().map(|r| r.id.as_str()).collect();
    assert_eq!(logged, sent);
    for d in &log {
        assert_eq!((d.attempt, d.status_code, d.error.as_str()), (1, 204, ""));
        assert!(d.next_attempt_at.is_none());
        assert!(d.duration_ms >= 0);
    }
    // Pages, over REST too.
    let first = hooks(&app)
        .list_webhook_deliveries(authed(
            &t,
            ListWebhookDeliveriesRequest {
                id: hook.id.clone(),
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.deliveries, log[..2]);
    let path = format!(
        "/api/v1/crm/webhooks/{}/deliveries?page_size=2&page_token={}",
        hook.id, first.next_page_token
    );
    let (status, body, _) = app.rest("GET", &path, Some(&t), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(body["deliveries"][0]["event_id"], log[2].event_id.as_str());
    assert_eq!(body["deliveries"][0]["status_code"], 204);
    assert_eq!(body["next_page_token"], "");
    let (status, body, _) = app
        .rest(
            "GET",
            &format!("/api/v1/crm/webhooks/{}/deliveries?page_token=x", hook.id),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("page_token"), "{body}");
}

#[tokio::test]
async fn failures_are_retried_with_the_same_id_and_hold_back_later_events() {
    let app = delivering().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&server)
        .await;
    let t = app.token(&tenant(), "u1");
    let hook = create_hook(&app, &t, at(format!("{}/h", server.uri()))).await;
    app.account(&t, "First").await;
    app.account(&t, "Second").await;
    let got = wait_for(&server, "/h", &hook.secret, 5).await;
    assert_eq!(got.len(), 5, "{got:?}");
    // Four attempts at the first event (three 500s, then 200), every one
    // with the same id and its own valid signature; then the second.
    assert!(got[..4].iter().all(|r| r.id == got[0].id));
    assert_eq!(got[0].body["record"]["name"], "First");
    assert_ne!(got[4].id, got[0].id);
    assert_eq!(got[4].body["record"]["name"], "Second");
    let log = logged(&app, &t, &hook.id, 5).await;
    let rows: Vec<(i32, i32)> = log.iter().map(|d| (d.attempt, d.status_code)).collect();
    assert_eq!(rows, [(1, 200), (4, 200), (3, 500), (2, 500), (1, 500)]);
    for d in &log[2..] {
        assert!(d.error.contains("500"), "{d:?}");
        let wait = seconds(&d.next_attempt_at) - seconds(&d.attempted_at);
        // 200 ms ± 20 %.
        assert!((0.15..=0.25).contains(&wait), "{wait}");
    }
    let got_hook = hooks(&app)
        .get_webhook(authed(
            &t,
            GetWebhookRequest {
                id: hook.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got_hook.enabled, Some(true));
}

#[tokio::test]
async fn gone_disables_the_webhook_and_says_why() {
    let app = delivering().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(410))
        .mount(&server)
        .await;
    let t = app.token(&tenant(), "u1");
    let hook = create_hook(&app, &t, at(format!("{}/gone", server.uri()))).await;
    app.account(&t, "A").await;
    wait_for(&server, "/gone", &hook.secret, 1).await;
    let mut got = Webhook::default();
    for _ in 0..50 {
        got = hooks(&app)
            .get_webhook(authed(
                &t,
                GetWebhookRequest {
                    id: hook.id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        if got.enabled == Some(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got.enabled, Some(false));
    assert!(got.disabled_reason.contains("410 Gone"), "{got:?}");
    app.account(&t, "B").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(received(&server, "/gone", &hook.secret).await.len(), 1);
    let log = deliveries(&app, &t, &hook.id).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status_code, 410);
    assert!(log[0].error.contains("disabled"), "{:?}", log[0]);
    // Enabled again: it resumes where it stopped (the first event again,
    // then the second), and the reason is cleared.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let on = hooks(&app)
        .update_webhook(authed(
            &t,
            UpdateWebhookRequest {
                webhook: Some(Webhook {
                    id: hook.id.clone(),
                    enabled: Some(true),
                    ..Default::default()
                }),
                update_mask: mask(&["enabled"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(on.disabled_reason, "");
    let again = wait_for(&server, "/gone", &hook.secret, 2).await;
    assert_eq!(again[0].body["record"]["name"], "A");
    assert_eq!(again[1].body["record"]["name"], "B");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let app = delivering().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "120"))
        .mount(&server)
        .await;
    let t = app.token(&tenant(), "u1");
    let hook = create_hook(&app, &t, at(format!("{}/busy", server.uri()))).await;
    app.account(&t, "A").await;
    wait_for(&server, "/busy", &hook.secret, 1).await;
    // The schedule says 200 ms; the receiver asked for 120 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(received(&server, "/busy", &hook.secret).await.len(), 1);
    let log = deliveries(&app, &t, &hook.id).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status_code, 429);
    let wait = seconds(&log[0].next_attempt_at) - seconds(&log[0].attempted_at);
    assert!((119.0..=121.0).contains(&wait), "{wait}");
}

#[tokio::test]
async fn filters_tenants_and_apps_each_get_only_their_events() {
    let app = delivering().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let (ta, tb) = (tenant(), tenant());
    let person = app.token(&ta, "u1");
    let app_x = app.app_token(&ta, "svc", "app-x");
    let app_y = app.app_token(&ta, "svc", "app-y");
    let other = app.token(&tb, "u2");
    let deals_created = create_hook(
        &app,
        &person,
        Webhook {
            url: format!("{}/deals", server.uri()),
            resource_types: vec!["deal".into()],
            operations: vec!["created".into()],
            ..Default::default()
        },
    )
    .await;
    let deleted = create_hook(
        &app,
        &person,
        Webhook {
            url: format!("{}/deleted", server.uri()),
            operations: vec!["deleted".into()],
            ..Default::default()
        },
    )
    .await;
    let x_hook = create_hook(&app, &app_x, at(format!("{}/x", server.uri()))).await;
    let b_hook = create_hook(&app, &other, at(format!("{}/b", server.uri()))).await;

    let acct = app.account(&person, "A person's").await;
    app.deal(
        &person,
        Deal {
            name: "Big".into(),
            account_id: acct.id.clone(),
            ..Default::default()
        },
    )
    .await;
    app.account(&app_x, "X's").await;
    app.account(&app_y, "Y's").await;
    app.account(&other, "B's").await;
    AccountServiceClient::new(app.channel.clone())
        .delete_account(authed(
            &person,
            DeleteAccountRequest {
                id: acct.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();

    let deals = wait_for(&server, "/deals", &deals_created.secret, 1).await;
    let gone = wait_for(&server, "/deleted", &deleted.secret, 1).await;
    let xs = wait_for(&server, "/x", &x_hook.secret, 1).await;
    let bs = wait_for(&server, "/b", &b_hook.secret, 1).await;
    // Give anything that should not come the time to come.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let deals_now = received(&server, "/deals", &deals_created.secret).await;
    assert_eq!(deals_now.len(), 1, "{deals_now:?}");
    assert_eq!(deals[0].body["resource_type"], "deal");
    assert_eq!(deals[0].body["operation"], "created");
    let gone_now = received(&server, "/deleted", &deleted.secret).await;
    assert_eq!(gone_now.len(), 1, "{gone_now:?}");
    assert_eq!(gone[0].body["operation"], "deleted");
    assert_eq!(gone[0].body["record_id"], acct.id.as_str());
    let xs_now = received(&server, "/x", &x_hook.secret).await;
    assert_eq!(xs_now.len(), 1, "app x sees only its own: {xs_now:?}");
    assert_eq!(xs[0].body["record"]["name"], "X's");
    let bs_now = received(&server, "/b", &b_hook.secret).await;
    assert_eq!(bs_now.len(), 1, "tenant b sees only its own: {bs_now:?}");
    assert_eq!(bs[0].body["record"]["name"], "B's");
}

/// A webhook delivers only the collections that every token which created
/// or changed it could read (README "Authorization").
#[tokio::test]
async fn scoped_webhooks_deliver_only_what_their_tokens_could_read() {
    let app = delivering().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let t = tenant();
    let person = app.token(&t, "u1");
    let deals_reader = app.scoped_token(&t, "svc", "crm:webhooks:write crm:deals:read");
    let accounts_reader = app.scoped_token(&t, "svc", "crm:webhooks:write crm:accounts:read");
    let blind = app.scoped_token(&t, "svc", "crm:webhooks:write");
    let narrow = create_hook(&app, &deals_reader, at(format!("{}/deals", server.uri()))).await;
    let none = create_hook(&app, &blind, at(format!("{}/none", server.uri()))).await;
    // Made by a person's token (everything), then changed by one that reads
    // accounts only: accounts only from then on.
    let full = create_hook(&app, &person, at(format!("{}/full", server.uri()))).await;
    hooks(&app)
        .update_webhook(authed(
            &accounts_reader,
            UpdateWebhookRequest {
                webhook: Some(Webhook {
                    id: full.id.clone(),
                    description: "narrowed".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["description"]),
            },
        ))
        .await
        .unwrap();
    let acct = app.account(&person, "Acme").await;
    app.deal(
        &person,
        Deal {
            name: "Renewal".into(),
            account_id: acct.id.clone(),
            ..Default::default()
        },
    )
    .await;
    wait_for(&server, "/deals", &narrow.secret, 1).await;
    let accounts = wait_for(&server, "/full", &full.secret, 1).await;
    // Give anything that should not come the time to come.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let deals = received(&server, "/deals", &narrow.secret).await;
    assert!(
        deals.iter().all(|r| r.body["resource_type"] == "deal"),
        "{deals:?}"
    );
    let accounts_now = received(&server, "/full", &full.secret).await;
    assert!(
        accounts_now
            .iter()
            .all(|r| r.body["resource_type"] == "account"),
        "{accounts_now:?}"
    );
    assert!(!accounts.is_empty());
    let nothing = received(&server, "/none", &none.secret).await;
    assert!(nothing.is_empty(), "{nothing:?}");
}

#[tokio::test]
async fn logs_and_redelivery_are_confined_to_their_tenant_and_app() {
    let app = delivering().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let ta = tenant();
    let owner = app.token(&ta, "u1");
    let app_x = app.app_token(&ta, "svc", "app-x");
    let app_y = app.app_token(&ta, "svc", "app-y");
    let stranger = app.token(&tenant(), "u9");
    let x_hook = create_hook(&app, &app_x, at(format!("{}/x", server.uri()))).await;
    app.account(&app_x, "X's").await;
    wait_for(&server, "/x", &x_hook.secret, 1).await;
    // Its tenant's person sees it; another app and another tenant do not.
    assert_eq!(logged(&app, &owner, &x_hook.id, 1).await.len(), 1);
    assert_eq!(deliveries(&app, &app_x, &x_hook.id).await.len(), 1);
    for t in [&app_y, &stranger] {
        let e = hooks(&app)
            .list_webhook_deliveries(authed(
                t,
                ListWebhookDeliveriesRequest {
                    id: x_hook.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
        let e = hooks(&app)
            .redeliver_webhook(authed(
                t,
                RedeliverWebhookRequest {
                    id: x_hook.id.clone(),
                    after_sequence: 0,
                },
            ))
            .await
            .unwrap_err();
        assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    }
    // The log rows themselves are behind row-level security too.
    let mut conn = app.owner_conn().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1);
    use sqlx::Connection;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL ROLE {}",
        app.app_role
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 0, "no tenant set: no rows");
}

#[tokio::test]
async fn redelivery_sends_the_events_after_a_sequence_again() {
    let app = delivering().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let t = app.token(&tenant(), "u1");
    let hook = create_hook(&app, &t, at(format!("{}/r", server.uri()))).await;
    for name in ["one", "two", "three"] {
        app.account(&t, name).await;
    }
    let first = wait_for(&server, "/r", &hook.secret, 3).await;
    let after = sequence(&first[0]);
    let answer = hooks(&app)
        .redeliver_webhook(authed(
            &t,
            RedeliverWebhookRequest {
                id: hook.id.clone(),
                after_sequence: after,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.after_sequence, after);
    assert_eq!(answer.latest_sequence, sequence(&first[2]));
    let all = wait_for(&server, "/r", &hook.secret, 5).await;
    assert_eq!(all.len(), 5);
    assert_eq!(all[3].id, first[1].id);
    assert_eq!(all[4].id, first[2].id);
    // Over REST, with bad positions named.
    let path = format!("/api/v1/crm/webhooks/{}:redeliver", hook.id);
    let (status, body, _) = app
        .rest(
            "POST",
            &path,
            Some(&t),
            Some(serde_json::json!({"after_sequence": "999"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("after_sequence"), "{body}");
    let (status, body, _) = app
        .rest(
            "POST",
            &path,
            Some(&t),
            Some(serde_json::json!({"after_sequence": -1})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body, _) = app
        .rest(
            "POST",
            &path,
            Some(&t),
            Some(serde_json::json!({"after_sequence": "0"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["latest_sequence"], answer.latest_sequence.to_string());
    wait_for(&server, "/r", &hook.secret, 8).await;
}

#[tokio::test]
async fn private_addresses_are_refused_again_at_delivery() {
    // This server refuses private targets; the webhook gets one anyway
    // (as if its name had resolved elsewhere when it was created).
    let app = spawn_app_with(|c| c.webhooks_retry_schedule = "1h".into()).await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let t = app.token(&tenant(), "u1");
    let made = hooks(&app)
        .create_webhook(authed(
            &t,
            CreateWebhookRequest {
                webhook: Some(at("https://93.184.216.34/hook".into())),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut conn = app.owner_conn().await;
    // Through a name too: localhost resolves to loopback.
    let port = server.address().port();
    sqlx::query("UPDATE webhooks SET url = $1 WHERE id = $2")
        .bind(format!("http://localhost:{port}/private"))
        .bind(&made.id)
        .execute(&mut conn)
        .await
        .unwrap();
    app.account(&t, "A").await;
    let mut log = Vec::new();
    for _ in 0..100 {
        log = deliveries(&app, &t, &made.id).await;
        if !log.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].status_code, 0);
    assert!(log[0].error.contains("non-public"), "{:?}", log[0]);
    assert!(log[0].next_attempt_at.is_some());
    // Literal addresses as well.
    sqlx::query("UPDATE webhooks SET url = $1, next_attempt_at = '-infinity' WHERE id = $2")
        .bind(format!("http://127.0.0.1:{port}/private"))
        .bind(&made.id)
        .execute(&mut conn)
        .await
        .unwrap();
    for _ in 0..100 {
        log = deliveries(&app, &t, &made.id).await;
        if log.len() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(log[0].error.contains("not a public address"), "{log:?}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

/// A receiver of its own for the process tests: records every request's
/// path, id and sequence, notes any overlap of two requests for one
/// webhook, and answers `status` (shared, so a test can bring it "up").
struct Receiver {
    url: String,
    log: Arc<Mutex<Vec<(String, String, i64)>>>,
    overlaps: Arc<Mutex<usize>>,
    status: Arc<Mutex<u16>>,
}

async fn receiver(delay: Duration) -> Receiver {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    type Shared = (
        Arc<Mutex<Vec<(String, String, i64)>>>,
        Arc<Mutex<usize>>,
        Arc<Mutex<u16>>,
        Arc<Mutex<HashMap<String, usize>>>,
        Duration,
    );
    async fn handle(
        State((log, overlaps, status, busy, delay)): State<Shared>,
        uri: Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let path = uri.path().to_owned();
        {
            let mut b = busy.lock().unwrap();
            let n = b.entry(path.clone()).or_default();
            *n += 1;
            if *n > 1 {
                *overlaps.lock().unwrap() += 1;
            }
        }
        tokio::time::sleep(delay).await;
        busy.lock()
            .unwrap()
            .entry(path.clone())
            .and_modify(|n| *n -= 1);
        let code = *status.lock().unwrap();
        if code == 200 {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let id = headers["webhook-id"].to_str().unwrap().to_owned();
            let seq = v["sequence"].as_str().unwrap().parse().unwrap();
            log.lock().unwrap().push((path, id, seq));
        }
        StatusCode::from_u16(code).unwrap()
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let overlaps = Arc::new(Mutex::new(0));
    let status = Arc::new(Mutex::new(200));
    let state: Shared = (
        log.clone(),
        overlaps.clone(),
        status.clone(),
        Arc::new(Mutex::new(HashMap::new())),
        delay,
    );
    let router = axum::Router::new()
        .fallback(axum::routing::post(handle))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    Receiver {
        url,
        log,
        overlaps,
        status,
    }
}

async fn grpc(url: &str) -> Channel {
    for _ in 0..100 {
        if let Ok(c) = Channel::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no gRPC at {url}");
}

/// Creates a webhook at `url` through `ch`, then `n` accounts (acknowledged
/// one after another).
async fn hook_then_accounts(ch: &Channel, token: &str, url: String, n: usize) {
    WebhookServiceClient::new(ch.clone())
        .create_webhook(authed(
            token,
            CreateWebhookRequest {
                webhook: Some(at(url)),
            },
        ))
        .await
        .unwrap();
    for i in 0..n {
        AccountServiceClient::new(ch.clone())
            .create_account(authed(
                token,
                CreateAccountRequest {
                    account: Some(Account {
                        name: format!("n{i}"),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
    }
}

fn mint(tenant: &str, sub: &str) -> String {
    crm::auth::mint(SECRET.as_bytes(), tenant, sub, None, 3600, None, None).unwrap()
}

const PROCESS_ENV: [(&str, &str); 2] = [
    ("CRM_WEBHOOKS_ALLOW_PRIVATE", "true"),
    ("CRM_WEBHOOKS_RETRY_SCHEDULE", "300ms"),
];

/// Every event delivered exactly once per webhook, in sequence order.
fn assert_complete(log: &[(String, String, i64)], paths: &[String], events: usize) {
    for p in paths {
        let seqs: Vec<i64> = log.iter().filter(|e| &e.0 == p).map(|e| e.2).collect();
        let mut first_seen = seqs.clone();
        first_seen.dedup();
        let mut sorted = first_seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), events, "{p}: {seqs:?}");
        assert_eq!(first_seen, sorted, "{p}: out of order: {seqs:?}");
    }
}

#[tokio::test]
async fn two_replicas_share_the_work_without_sending_an_attempt_twice_at_once() {
    let db = ScratchDb::new();
    let a = Process::start(&db.0, &PROCESS_ENV);
    a.ready().await;
    let b = Process::start(&db.0, &PROCESS_ENV);
    b.ready().await;
    let rx = receiver(Duration::from_millis(20)).await;
    let t = mint(&tenant(), "u1");
    let (ca, cb) = (grpc(&a.grpc).await, grpc(&b.grpc).await);
    let mut paths = Vec::new();
    for i in 0..4 {
        let path = format!("/w{i}");
        WebhookServiceClient::new(if i % 2 == 0 { ca.clone() } else { cb.clone() })
            .create_webhook(authed(
                &t,
                CreateWebhookRequest {
                    webhook: Some(at(format!("{}{path}", rx.url))),
                },
            ))
            .await
            .unwrap();
        paths.push(path);
    }
    let events = 40;
    for i in 0..events {
        let ch = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        AccountServiceClient::new(ch)
            .create_account(authed(
                &t,
                CreateAccountRequest {
                    account: Some(Account {
                        name: format!("n{i}"),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
    }
    for _ in 0..300 {
        if rx.log.lock().unwrap().len() >= events * paths.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = rx.log.lock().unwrap().clone();
    assert_eq!(
        log.len(),
        events * paths.len(),
        "every event once per webhook"
    );
    assert_complete(&log, &paths, events);
    assert_eq!(
        *rx.overlaps.lock().unwrap(),
        0,
        "one webhook tried twice at once"
    );
}

#[tokio::test]
async fn a_sigkilled_server_loses_no_pending_delivery() {
    let db = ScratchDb::new();
    let rx = receiver(Duration::ZERO).await;
    *rx.status.lock().unwrap() = 503;
    let a = Process::start(&db.0, &PROCESS_ENV);
    a.ready().await;
    let t = mint(&tenant(), "u1");
    let ca = grpc(&a.grpc).await;
    let events = 20;
    hook_then_accounts(&ca, &t, format!("{}/k", rx.url), events).await;
    // The receiver is down and being retried; the server dies.
    tokio::time::sleep(Duration::from_millis(800)).await;
    a.signal("-KILL");
    drop(a);
    *rx.status.lock().unwrap() = 200;
    let b = Process::start(&db.0, &PROCESS_ENV);
    b.ready().await;
    // A lease of the dead server lapses within 30 s.
    for _ in 0..600 {
        if rx.log.lock().unwrap().len() >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = rx.log.lock().unwrap().clone();
    assert_complete(&log, &["/k".to_owned()], events);
    drop(b);
}

#[tokio::test]
async fn one_tenants_slow_receivers_cannot_take_every_slot() {
    // Three attempts at once in this process, two per tenant.
    let app = spawn_app_with(|c| {
        c.webhooks_allow_private = true;
        c.webhooks_max_in_flight = 3;
        c.webhooks_tenant_in_flight = 2;
    })
    .await;
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::path_regex("^/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(4)))
        .mount(&server)
        .await;
    Mock::given(wiremock::matchers::path("/quick"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let (ta, tb) = (tenant(), tenant());
    let (slow, quick) = (app.token(&ta, "u1"), app.token(&tb, "u2"));
    for i in 0..6 {
        create_hook(&app, &slow, at(format!("{}/slow{i}", server.uri()))).await;
    }
    let b_hook = create_hook(&app, &quick, at(format!("{}/quick", server.uri()))).await;
    app.account(&slow, "A").await;
    // A's six receivers are now being waited on (two at a time).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    app.account(&quick, "B").await;
    wait_for(&server, "/quick", &b_hook.secret, 1).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "tenant b waited {took:?} behind tenant a's slow receivers"
    );
    // Tenant a never had more than two attempts under way.
    let slow_started = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().starts_with("/slow"))
        .count();
    assert!(slow_started <= 2, "{slow_started} slow attempts at once");
}

#[tokio::test]
async fn a_stopping_server_finishes_its_attempts_and_hands_its_webhooks_over() {
    let db = ScratchDb::new();
    let rx = receiver(Duration::from_millis(700)).await;
    let a = Process::start(&db.0, &PROCESS_ENV);
    a.ready().await;
    let t = mint(&tenant(), "u1");
    let ca = grpc(&a.grpc).await;
    let events = 12;
    hook_then_accounts(&ca, &t, format!("{}/t", rx.url), events).await;
    // Deliveries are under way (0.7 s each) when the server is told to stop.
    for _ in 0..100 {
        if !rx.log.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.signal("-TERM");
    let b = Process::start(&db.0, &PROCESS_ENV);
    b.ready().await;
    let handed_over = std::time::Instant::now();
    for _ in 0..600 {
        if rx.log.lock().unwrap().len() >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = rx.log.lock().unwrap().clone();
    assert_complete(&log, &["/t".to_owned()], events);
    // The rest took about their 0.7 s each, not a lapsed lease's 30 s.
    let took = handed_over.elapsed();
    assert!(took < Duration::from_secs(20), "{took:?}");
    drop((a, b));
}
