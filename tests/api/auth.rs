//! Identity: every way a token can be wrong is UNAUTHENTICATED; JWKS keys
//! verify EdDSA tokens; health and reflection need no token.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crm::proto::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tonic::Code;

use crate::helpers::*;

/// A test Ed25519 key pair (private PEM, public `x`).
const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIIpqyKYujIwPre0HcfE9hpoAlV37iFXBW6Kn8vBM7s5f\n-----END PRIVATE KEY-----\n";
const ED_PUBLIC_X: &str = "lpYOkCaeNX2j2TP3m_-qVdSjkjwsAF7Is-dpIlfgA6U";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn hs256(claims: serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn good_claims() -> serde_json::Value {
    json!({"tenant_id": "tenant-a", "sub": "user-1", "exp": now() + 600, "iat": now()})
}

fn with(mut claims: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    claims[key] = value;
    claims
}

fn without(mut claims: serde_json::Value, key: &str) -> serde_json::Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

async fn call(app: &TestApp, authorization: Option<String>) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(ListAccountsRequest::default());
    if let Some(a) = authorization {
        req.metadata_mut()
            .insert("authorization", a.parse().unwrap());
    }
    app.accounts().list_accounts(req).await.map(|_| ())
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    assert!(
        call(
            &app,
            Some(format!("Bearer {}", hs256(good_claims(), SECRET)))
        )
        .await
        .is_ok()
    );
    // Within the 30 s leeway.
    let recent = with(good_claims(), "exp", json!(now() - 10));
    assert!(
        call(&app, Some(format!("Bearer {}", hs256(recent, SECRET))))
            .await
            .is_ok()
    );

    let e = call(&app, None).await.unwrap_err();
    assert_status(&e, Code::Unauthenticated, "MISSING_CREDENTIALS");

    let none_alg = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good_claims().to_string())
    );
    let cases: Vec<(&str, String)> = vec![
        (
            "not bearer",
            format!("Basic {}", hs256(good_claims(), SECRET)),
        ),
        ("garbage", "Bearer not.a.jwt".into()),
        ("alg none", format!("Bearer {none_alg}")),
        (
            "wrong key",
            format!(
                "Bearer {}",
                hs256(good_claims(), "another-secret-another-secret-0123456")
            ),
        ),
        (
            "expired",
            format!(
                "Bearer {}",
                hs256(with(good_claims(), "exp", json!(now() - 120)), SECRET)
            ),
        ),
        (
            "exp as string",
            format!(
                "Bearer {}",
                hs256(
                    with(good_claims(), "exp", json!((now() + 600).to_string())),
                    SECRET
                )
            ),
        ),
        (
            "no exp",
            format!("Bearer {}", hs256(without(good_claims(), "exp"), SECRET)),
        ),
        (
            "no sub",
            format!("Bearer {}", hs256(without(good_claims(), "sub"), SECRET)),
        ),
        (
            "no tenant",
            format!(
                "Bearer {}",
                hs256(without(good_claims(), "tenant_id"), SECRET)
            ),
        ),
        (
            "empty tenant",
            format!(
                "Bearer {}",
                hs256(with(good_claims(), "tenant_id", json!("")), SECRET)
            ),
        ),
        (
            "nbf in the future",
            format!(
                "Bearer {}",
                hs256(with(good_claims(), "nbf", json!(now() + 600)), SECRET)
            ),
        ),
        (
            "iat in the future",
            format!(
                "Bearer {}",
                hs256(with(good_claims(), "iat", json!(now() + 600)), SECRET)
            ),
        ),
        (
            "oversized",
            format!(
                "Bearer {}",
                hs256(with(good_claims(), "pad", json!("x".repeat(9000))), SECRET)
            ),
        ),
        (
            "empty app",
            format!(
                "Bearer {}",
                hs256(with(good_claims(), "app_id", json!("")), SECRET)
            ),
        ),
    ];
    for (name, header) in cases {
        let e = call(&app, Some(header)).await.expect_err(name);
        assert_status(&e, Code::Unauthenticated, "INVALID_CREDENTIALS");
        // Never echoes the token back.
        assert!(!e.message().contains("eyJ"), "{name}: {}", e.message());
    }
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let app = spawn_app_with(|c| {
        c.jwt.issuer = Some("https://idp.example".into());
        c.jwt.audience = Some("crm".into());
    })
    .await;
    let claims = with(
        with(good_claims(), "iss", json!("https://idp.example")),
        "aud",
        json!("crm"),
    );
    assert!(
        call(
            &app,
            Some(format!("Bearer {}", hs256(claims.clone(), SECRET)))
        )
        .await
        .is_ok()
    );
    for bad in [
        without(claims.clone(), "iss"),
        without(claims.clone(), "aud"),
        with(claims.clone(), "iss", json!("https://evil.example")),
        with(claims.clone(), "aud", json!("other")),
    ] {
        let e = call(&app, Some(format!("Bearer {}", hs256(bad, SECRET))))
            .await
            .unwrap_err();
        assert_status(&e, Code::Unauthenticated, "INVALID_CREDENTIALS");
    }
}

#[tokio::test]
async fn jwks_keys_verify_eddsa_tokens() {
    let dir = std::env::temp_dir().join(format!("crm-jwks-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED_PUBLIC_X, "kid": "k1", "alg": "EdDSA"}]}).to_string(),
    )
    .unwrap();
    let app = spawn_app_with(|c| {
        c.jwt.secret = None;
        c.jwt_jwks_file = Some(jwks.clone());
    })
    .await;
    let key = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let token = jsonwebtoken::encode(&header, &good_claims(), &key).unwrap();
    assert!(call(&app, Some(format!("Bearer {token}"))).await.is_ok());

    let mut unknown = Header::new(Algorithm::EdDSA);
    unknown.kid = Some("k2".into());
    let token = jsonwebtoken::encode(&unknown, &good_claims(), &key).unwrap();
    let e = call(&app, Some(format!("Bearer {token}")))
        .await
        .unwrap_err();
    assert_status(&e, Code::Unauthenticated, "INVALID_CREDENTIALS");
    // No HS256 key is configured: an HMAC token is refused outright.
    let e = call(
        &app,
        Some(format!("Bearer {}", hs256(good_claims(), SECRET))),
    )
    .await
    .unwrap_err();
    assert_status(&e, Code::Unauthenticated, "INVALID_CREDENTIALS");
    std::fs::remove_dir_all(dir).ok();
}

/// Keys rotate by rewriting the JWKS file: the server takes the new set up
/// within seconds, without a restart; a file it cannot use leaves the keys
/// in use as they were.
#[tokio::test]
async fn a_changed_jwks_file_is_taken_up_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("crm-jwks-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    let ed_only = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED_PUBLIC_X, "kid": "ed-1", "alg": "EdDSA"}]});
    std::fs::write(&jwks, ed_only.to_string()).unwrap();
    let app = spawn_app_with(|c| {
        c.jwt.secret = None;
        c.jwt_jwks_file = Some(jwks.clone());
    })
    .await;
    let ed = {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some("ed-1".into());
        let key = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&h, &good_claims(), &key).unwrap()
        )
    };
    let rsa = {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("rsa-1".into());
        let private = std::fs::read(fixture("rsa_private.pem")).unwrap();
        let key = EncodingKey::from_rsa_pem(&private).unwrap();
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&h, &good_claims(), &key).unwrap()
        )
    };
    // Waits (up to 10 s) until `token` is accepted (or refused).
    let until = |token: String, accepted: bool| {
        let app = &app;
        async move {
            for _ in 0..100 {
                if call(app, Some(token.clone())).await.is_ok() == accepted {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!(
                "the token is still {}",
                if accepted { "refused" } else { "accepted" }
            );
        }
    };
    assert!(call(&app, Some(ed.clone())).await.is_ok());
    let e = call(&app, Some(rsa.clone())).await.unwrap_err();
    assert_status(&e, Code::Unauthenticated, "INVALID_CREDENTIALS");
    // A new key published beside the old one.
    std::fs::copy(fixture("jwks.json"), &jwks).unwrap();
    until(rsa.clone(), true).await;
    assert!(call(&app, Some(ed.clone())).await.is_ok());
    // A broken file: the keys in use stay.
    std::fs::write(&jwks, "{\"keys\": [{\"kty\": \"RSA\"").unwrap();
    tokio::time::sleep(crm::auth::JWKS_FILE_POLL * 2).await;
    assert!(call(&app, Some(rsa.clone())).await.is_ok());
    assert!(call(&app, Some(ed.clone())).await.is_ok());
    // The old key withdrawn: its tokens stop working.
    let rsa_only = json!({"keys": [serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(fixture("jwks.json")).unwrap()
    )
    .unwrap()["keys"][0]
    .clone()]});
    std::fs::write(&jwks, rsa_only.to_string()).unwrap();
    until(ed, false).await;
    assert!(call(&app, Some(rsa)).await.is_ok());
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn the_server_refuses_to_start_without_a_key() {
    let db = format!(
        "crm_test_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let mut cfg = config(&db);
    cfg.jwt.secret = None;
    let err = crm::app::Application::build(&cfg, false)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("no JWT key configured"), "{err}");
    cfg.jwt.secret = Some("short".into());
    let err = crm::app::Application::build(&cfg, false)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("at least 32 bytes"), "{err}");
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn jwks_attack_matrix() {
    let app = spawn_app_with(|c| {
        c.jwt.secret = None;
        c.jwt_jwks_file = Some(fixture("jwks.json"));
        c.jwt.issuer = Some("https://idp.example".into());
        c.jwt.audience = Some("crm".into());
    })
    .await;
    let private = std::fs::read(fixture("rsa_private.pem")).unwrap();
    let public = std::fs::read(fixture("rsa_public.pem")).unwrap();
    let claims = with(
        with(good_claims(), "iss", json!("https://idp.example")),
        "aud",
        json!("crm"),
    );
    let rs256 = |claims: &serde_json::Value, kid: Option<&str>| {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, &EncodingKey::from_rsa_pem(&private).unwrap()).unwrap()
    };
    assert!(
        call(
            &app,
            Some(format!("Bearer {}", rs256(&claims, Some("rsa-1"))))
        )
        .await
        .is_ok()
    );

    let mut hs_with_public_key = Header::new(Algorithm::HS256);
    hs_with_public_key.kid = Some("rsa-1".into());
    let confused = jsonwebtoken::encode(
        &hs_with_public_key,
        &claims,
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    let mut ps256 = Header::new(Algorithm::PS256);
    ps256.kid = Some("rsa-1".into());
    let wrong_alg_for_key = jsonwebtoken::encode(
        &ps256,
        &claims,
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let mut eddsa_as_rsa = Header::new(Algorithm::EdDSA);
    eddsa_as_rsa.kid = Some("rsa-1".into());
    let ed_key = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
    let kid_of_another_key = jsonwebtoken::encode(&eddsa_as_rsa, &claims, &ed_key).unwrap();
    let cases = [
        ("HS256 signed with the RSA public key", confused),
        ("unknown kid", rs256(&claims, Some("rsa-2"))),
        ("alg the key is not pinned to", wrong_alg_for_key),
        ("kid of a key of another type", kid_of_another_key),
        (
            "wrong issuer",
            rs256(
                &with(claims.clone(), "iss", json!("https://evil.example")),
                Some("rsa-1"),
            ),
        ),
        (
            "wrong audience",
            rs256(
                &with(claims.clone(), "aud", json!("billing")),
                Some("rsa-1"),
            ),
        ),
        (
            "no issuer",
            rs256(&without(claims.clone(), "iss"), Some("rsa-1")),
        ),
        (
            "no audience",
            rs256(&without(claims.clone(), "aud"), Some("rsa-1")),
        ),
        (
            "expired beyond the leeway",
            rs256(
                &with(claims.clone(), "exp", json!(now() - 31 - 5)),
                Some("rsa-1"),
            ),
        ),
        (
            "not yet valid",
            rs256(
                &with(claims.clone(), "nbf", json!(now() + 120)),
                Some("rsa-1"),
            ),
        ),
    ];
    for (name, token) in cases {
        let e = call(&app, Some(format!("Bearer {token}")))
            .await
            .expect_err(name);
        assert_status(&e, Code::Unauthenticated, "INVALID_CREDENTIALS");
    }
    // A different RSA key presenting the right kid: the signature fails.
    let other = {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl");
        out.stdout
    };
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-1".into());
    let forged =
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_rsa_pem(&other).unwrap()).unwrap();
    let e = call(&app, Some(format!("Bearer {forged}")))
        .await
        .unwrap_err();
    assert_status(&e, Code::Unauthenticated, "INVALID_CREDENTIALS");
}
