//! The explorer's development-mode token minting, `POST /explorer/token`:
//! served only by `serve --dev` on the development secret, its tokens are
//! the ones `crm token` makes (and the API takes); everywhere else the path
//! does not exist.

use serde_json::{Value, json};

use crate::helpers::*;

/// `POST /explorer/token` with `body` as JSON.
async fn mint(app: &TestApp, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
    app.rest("POST", "/explorer/token", None, Some(body)).await
}

/// The fields a 400 answer's BadRequest names.
fn violated(e: &Value) -> Vec<String> {
    assert_eq!(e["code"], 3, "{e}");
    assert_eq!(e["details"][0]["reason"], "VALIDATION_FAILED", "{e}");
    e["details"][1]["field_violations"]
        .as_array()
        .unwrap_or_else(|| panic!("a BadRequest detail: {e}"))
        .iter()
        .map(|v| v["field"].as_str().unwrap().to_owned())
        .collect()
}

/// A development server: `--dev` with no key configured, so it trusts the
/// built-in development secret.
async fn dev_app() -> TestApp {
    spawn_app_in(true, |c| c.jwt.secret = None).await
}

#[tokio::test]
async fn dev_mode_mints_tokens_that_the_api_accepts() {
    let app = dev_app().await;
    let (status, body, headers) = mint(&app, json!({"tenant": "acme-inc", "sub": "user-42"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["tenant_id"], "acme-inc");
    assert_eq!(body["sub"], "user-42");
    assert_eq!(body["expires_in"], crm::rest::DEV_TOKEN_TTL_SECS);
    assert!(
        body["expires_at"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );
    let token = body["token"].as_str().unwrap().to_owned();

    // Signed with the development secret, as `crm token` signs: short-lived.
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<crm::auth::Claims>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(crm::auth::DEV_SECRET.as_bytes()),
        &validation,
    )
    .expect("signed with the development secret")
    .claims;
    assert_eq!(
        (claims.tenant_id.as_str(), claims.sub.as_str()),
        ("acme-inc", "user-42")
    );
    assert_eq!(claims.app_id, None, "a person's token");
    assert_eq!(claims.exp - claims.iat.unwrap(), 3600);

    // The API takes it: the record is the tenant's and the person's.
    let (status, account, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts",
            Some(&token),
            Some(json!({"name": "Minted Co"})),
        )
        .await;
    assert_eq!(status, 200, "{account}");
    assert_eq!(account["tenant_id"], "acme-inc");
    assert_eq!(account["created_by"], "user-42");
    // The same tenant as a token from `crm token` (the same secret).
    let cli = app.token("acme-inc", "someone-else");
    let id = account["id"].as_str().unwrap();
    let (status, got, _) = app
        .rest(
            "GET",
            &format!("/api/v1/crm/accounts/{id}"),
            Some(&cli),
            None,
        )
        .await;
    assert_eq!((status, &got["name"]), (200, &json!("Minted Co")));

    // The longest values the authenticator takes are taken.
    let (tenant, sub) = ("t".repeat(128), "s".repeat(256));
    let (status, body, _) = mint(&app, json!({"tenant": tenant, "sub": sub})).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = app
        .rest("GET", "/api/v1/crm/accounts", body["token"].as_str(), None)
        .await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn dev_tokens_carry_the_configured_issuer_and_audience() {
    let app = spawn_app_in(true, |c| {
        c.jwt.secret = None;
        c.jwt.issuer = Some("https://id.example".into());
        c.jwt.audience = Some("crm".into());
    })
    .await;
    let (status, body, _) = mint(&app, json!({"tenant": "t1", "sub": "u1"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, e, _) = app
        .rest("GET", "/api/v1/crm/accounts", body["token"].as_str(), None)
        .await;
    assert_eq!(status, 200, "{e}");
    app.stop().await;
}

#[tokio::test]
async fn dev_token_requests_are_checked_field_by_field() {
    let app = dev_app().await;
    let long_tenant = "t".repeat(129);
    let long_sub = "s".repeat(257);
    for (body, fields) in [
        (json!({}), vec!["tenant", "sub"]),
        (json!({"tenant": "", "sub": ""}), vec!["tenant", "sub"]),
        (json!({"tenant": null, "sub": "u"}), vec!["tenant"]),
        (json!({"tenant": 7, "sub": "u"}), vec!["tenant"]),
        (json!({"tenant": "acme inc", "sub": "u"}), vec!["tenant"]),
        (json!({"tenant": "acme/inc", "sub": "u"}), vec!["tenant"]),
        (json!({"tenant": long_tenant, "sub": "u"}), vec!["tenant"]),
        (json!({"tenant": "t", "sub": " u"}), vec!["sub"]),
        (json!({"tenant": "t", "sub": "u\n"}), vec!["sub"]),
        (json!({"tenant": "t", "sub": "u\u{7}v"}), vec!["sub"]),
        (json!({"tenant": "t", "sub": long_sub}), vec!["sub"]),
        (json!({"tenant": "t", "sub": ["u"]}), vec!["sub"]),
        (json!({"tenant": "t", "sub": "u", "app": "a"}), vec!["app"]),
        (json!(["t", "u"]), vec!["body"]),
    ] {
        let (status, e, _) = mint(&app, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {e}");
        assert_eq!(violated(&e), fields, "{body} -> {e}");
        for f in fields {
            assert!(e["message"].as_str().unwrap().contains(f), "{e}");
        }
    }

    // Not JSON at all.
    let url = format!("http://{}/explorer/token", app.http_addr);
    let resp = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"tenant\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(violated(&e), ["body"]);
    // A form post (what another site could make a browser send) is refused.
    let resp = app
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body(r#"{"tenant": "t", "sub": "u"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["code"], 3, "{e}");
    // Only POST.
    let (status, _, _) = app.rest("GET", "/explorer/token", None, None).await;
    assert_eq!(status, 405);
    app.stop().await;
}

#[tokio::test]
async fn no_token_endpoint_outside_dev_mode() {
    // In production mode the path is unknown: the API's 404.
    let app = spawn_app().await;
    let (status, e, _) = mint(&app, json!({"tenant": "t", "sub": "u"})).await;
    assert_eq!((status, &e["code"]), (404, &json!(5)), "{e}");
    assert_eq!(e["details"][0]["reason"], "ROUTE_NOT_FOUND");
    // The explorer itself is still there.
    let (status, _, _) = app.rest("GET", "/explorer", None, None).await;
    assert_eq!(status, 200);
    app.stop().await;

    // `--dev` with a key of its own does not mint with it either.
    let app = spawn_app_in(true, |_| {}).await;
    let (status, e, _) = mint(&app, json!({"tenant": "t", "sub": "u"})).await;
    assert_eq!(status, 404, "{e}");
    app.stop().await;
}
