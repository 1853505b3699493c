//! WebhookService (SPEC §12), the definitions: create (the secret once),
//! get, list, update, delete; URL safety; limits; tenant and app isolation;
//! REST.

use crm::proto::webhook_service_client::WebhookServiceClient;
use crm::proto::*;
use serde_json::json;
use tonic::Code;

use crate::helpers::*;

fn hooks(app: &TestApp) -> WebhookServiceClient<tonic::transport::Channel> {
    WebhookServiceClient::new(app.channel.clone())
}

fn hook(url: &str) -> Webhook {
    Webhook {
        url: url.into(),
        ..Default::default()
    }
}

async fn create(app: &TestApp, t: &str, w: Webhook) -> Result<Webhook, tonic::Status> {
    hooks(app)
        .create_webhook(authed(t, CreateWebhookRequest { webhook: Some(w) }))
        .await
        .map(|r| r.into_inner())
}

/// Test servers may point webhooks at this machine (the receivers of the
/// delivery tests listen on loopback).
async fn permissive() -> TestApp {
    spawn_app_with(|c| c.webhooks_allow_private = true).await
}

#[tokio::test]
async fn the_secret_is_shown_once_and_the_rest_round_trips() {
    let app = permissive().await;
    let t = app.token(&tenant(), "u1");
    let made = create(
        &app,
        &t,
        Webhook {
            url: " http://127.0.0.1:9/hook ".into(),
            resource_types: vec!["deal".into(), "account".into(), "deal".into()],
            operations: vec!["created".into()],
            description: "billing".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(made.id.starts_with("whk_"), "{}", made.id);
    let secret = made.secret.strip_prefix("whsec_").expect("whsec_ prefix");
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret)
        .unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(made.url, "http://127.0.0.1:9/hook");
    assert_eq!(made.resource_types, ["account", "deal"]);
    assert_eq!(made.enabled, Some(true));
    assert_eq!(made.version, 1);
    assert_eq!(made.created_by, "u1");
    // Never again.
    let got = hooks(&app)
        .get_webhook(authed(
            &t,
            GetWebhookRequest {
                id: made.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.secret, "");
    assert_eq!(
        Webhook {
            secret: made.secret.clone(),
            ..got.clone()
        },
        made
    );
    let listed = hooks(&app)
        .list_webhooks(authed(&t, ListWebhooksRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.webhooks, std::slice::from_ref(&got));
    // Two webhooks never share a secret.
    let other = create(&app, &t, hook("http://127.0.0.1:9/other"))
        .await
        .unwrap();
    assert_ne!(other.secret, made.secret);
    // Update: the masked fields only; a stale version is ABORTED.
    let updated = hooks(&app)
        .update_webhook(authed(
            &t,
            UpdateWebhookRequest {
                webhook: Some(Webhook {
                    id: made.id.clone(),
                    enabled: Some(false),
                    description: "ignored: not in the mask".into(),
                    version: 1,
                    ..Default::default()
                }),
                update_mask: mask(&["enabled"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.enabled, Some(false));
    assert_eq!(updated.description, "billing");
    assert_eq!(updated.version, 2);
    let err = hooks(&app)
        .update_webhook(authed(
            &t,
            UpdateWebhookRequest {
                webhook: Some(Webhook {
                    id: made.id.clone(),
                    description: "x".into(),
                    version: 1,
                    ..Default::default()
                }),
                update_mask: None,
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::Aborted, "VERSION_MISMATCH");
    let err = hooks(&app)
        .update_webhook(authed(
            &t,
            UpdateWebhookRequest {
                webhook: Some(Webhook {
                    id: made.id.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["secret"]),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["update_mask.paths[0]"]);
    // Delete: gone for good.
    hooks(&app)
        .delete_webhook(authed(
            &t,
            DeleteWebhookRequest {
                id: made.id.clone(),
            },
        ))
        .await
        .unwrap();
    for e in [
        hooks(&app)
            .get_webhook(authed(
                &t,
                GetWebhookRequest {
                    id: made.id.clone(),
                },
            ))
            .await
            .unwrap_err(),
        hooks(&app)
            .delete_webhook(authed(
                &t,
                DeleteWebhookRequest {
                    id: made.id.clone(),
                },
            ))
            .await
            .unwrap_err(),
    ] {
        assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    }
}

#[tokio::test]
async fn unsafe_or_malformed_urls_are_refused() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    for url in [
        "http://127.0.0.1/hook",
        "http://10.0.0.8/hook",
        "http://172.16.3.4/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[fd00:ec2::254]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://localhost:8080/hook",
        "ftp://example.com/hook",
        "not a url",
        "https://user:password@example.com/hook",
        "",
    ] {
        let err = create(&app, &t, hook(url)).await.unwrap_err();
        assert_eq!(violations(&err), ["webhook.url"], "{url}: {err:?}");
    }
    // Bad filters, every one named.
    let err = create(
        &app,
        &t,
        Webhook {
            url: "http://127.0.0.1/".into(),
            resource_types: vec!["account".into(), "invoice".into()],
            operations: vec!["exploded".into()],
            description: "d".repeat(1025),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        violations(&err),
        [
            "webhook.url",
            "webhook.resource_types[1]",
            "webhook.operations[0]",
            "webhook.description"
        ]
    );
    let list = hooks(&app)
        .list_webhooks(authed(&t, ListWebhooksRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(list.webhooks.is_empty());
    // A public address passes; changing it to an unsafe one is refused and
    // changes nothing.
    let made = create(&app, &t, hook("https://93.184.216.34/hook"))
        .await
        .unwrap();
    let err = hooks(&app)
        .update_webhook(authed(
            &t,
            UpdateWebhookRequest {
                webhook: Some(Webhook {
                    id: made.id.clone(),
                    url: "http://[::1]:8080/".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["url"]),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["webhook.url"]);
    let got = hooks(&app)
        .get_webhook(authed(
            &t,
            GetWebhookRequest {
                id: made.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.url, "https://93.184.216.34/hook");
    assert_eq!(got.version, 1);
}

#[tokio::test]
async fn webhooks_are_per_tenant_and_per_app_and_capped() {
    let app = permissive().await;
    let tenant_a = tenant();
    let a = app.token(&tenant_a, "u1");
    let b = app.token(&tenant(), "u1");
    let a_app = app.app_token(&tenant_a, "svc", "billing");
    let a_other_app = app.app_token(&tenant_a, "svc", "support");
    let mine = create(&app, &a, hook("http://127.0.0.1/a")).await.unwrap();
    let apps = create(&app, &a_app, hook("http://127.0.0.1/billing"))
        .await
        .unwrap();
    assert_eq!(apps.app_id.as_deref(), Some("billing"));
    // Another tenant: not found, not listed, not changed, not deleted.
    for id in [&mine.id, &apps.id] {
        let e = hooks(&app)
            .get_webhook(authed(&b, GetWebhookRequest { id: id.clone() }))
            .await
            .unwrap_err();
        assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
        let e = hooks(&app)
            .update_webhook(authed(
                &b,
                UpdateWebhookRequest {
                    webhook: Some(Webhook {
                        id: id.clone(),
                        description: "mine now".into(),
                        ..Default::default()
                    }),
                    update_mask: None,
                },
            ))
            .await
            .unwrap_err();
        assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
        let e = hooks(&app)
            .delete_webhook(authed(&b, DeleteWebhookRequest { id: id.clone() }))
            .await
            .unwrap_err();
        assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    }
    let list = |t: String| {
        let app = &app;
        async move {
            hooks(app)
                .list_webhooks(authed(&t, ListWebhooksRequest::default()))
                .await
                .unwrap()
                .into_inner()
                .webhooks
                .into_iter()
                .map(|w| w.id)
                .collect::<Vec<_>>()
        }
    };
    assert!(list(b.clone()).await.is_empty());
    // The app sees its own only; another app sees none; the person both.
    assert_eq!(list(a_app.clone()).await, std::slice::from_ref(&apps.id));
    assert!(list(a_other_app.clone()).await.is_empty());
    assert_eq!(list(a.clone()).await, [apps.id.clone(), mine.id.clone()]);
    let e = hooks(&app)
        .get_webhook(authed(
            &a_other_app,
            GetWebhookRequest {
                id: apps.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    // At most 100 per tenant, whoever creates them; pages of any size.
    for i in 2..100 {
        create(&app, &a, hook(&format!("http://127.0.0.1/{i}")))
            .await
            .unwrap();
    }
    let e = create(&app, &a_other_app, hook("http://127.0.0.1/101"))
        .await
        .unwrap_err();
    assert_status(&e, Code::FailedPrecondition, "WEBHOOK_LIMIT");
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = hooks(&app)
            .list_webhooks(authed(
                &a,
                ListWebhooksRequest {
                    page_size: 30,
                    page_token: token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.webhooks.len() <= 30);
        seen.extend(page.webhooks.into_iter().map(|w| w.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 100);
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|x, y| y.cmp(x));
    assert_eq!(seen, sorted, "newest first");
    let e = hooks(&app)
        .list_webhooks(authed(
            &a,
            ListWebhooksRequest {
                page_size: -1,
                page_token: "garbage".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), ["page_size"]);
}

#[tokio::test]
async fn webhooks_over_rest() {
    let app = permissive().await;
    let t = app.token(&tenant(), "u1");
    let (status, made, _) = app
        .rest(
            "POST",
            "/api/v1/crm/webhooks",
            Some(&t),
            Some(json!({"url": "http://127.0.0.1:9/rest", "operations": ["deleted"]})),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    assert!(made["secret"].as_str().unwrap().starts_with("whsec_"));
    let id = made["id"].as_str().unwrap();
    let (status, got, _) = app
        .rest("GET", &format!("/api/v1/crm/webhooks/{id}"), Some(&t), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(got["secret"], "");
    assert_eq!(got["operations"], json!(["deleted"]));
    let (status, patched, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/webhooks/{id}?update_mask=description"),
            Some(&t),
            Some(json!({"description": "from REST"})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["description"], "from REST");
    let (status, err, _) = app
        .rest(
            "POST",
            "/api/v1/crm/webhooks",
            Some(&t),
            Some(json!({"url": "gopher://x"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    let (status, _, _) = app
        .rest(
            "DELETE",
            &format!("/api/v1/crm/webhooks/{id}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = app
        .rest("GET", &format!("/api/v1/crm/webhooks/{id}"), Some(&t), None)
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = app.rest("GET", "/api/v1/crm/webhooks", None, None).await;
    assert_eq!(status, 401);
}
