//! FieldDefinitionService (custom-field definitions): the definitions
//! themselves; their checks on every kind of write (create, update, batch,
//! upsert, undelete); typed filters and orders; conflicts and the dry run;
//! tenant isolation; the cap; indexes; a second server applying a change.

use std::time::{Duration, Instant};

use crm::proto::field_definition_service_client::FieldDefinitionServiceClient;
use crm::proto::*;
use serde_json::{Value as Json, json};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

fn defs(app: &TestApp) -> FieldDefinitionServiceClient<tonic::transport::Channel> {
    FieldDefinitionServiceClient::new(app.channel.clone())
}

fn field(resource: &str, key: &str, ty: &str) -> FieldDefinition {
    FieldDefinition {
        resource_type: resource.into(),
        key: key.into(),
        r#type: ty.into(),
        ..Default::default()
    }
}

async fn define(
    app: &TestApp,
    t: &str,
    d: FieldDefinition,
) -> Result<FieldDefinition, tonic::Status> {
    defs(app)
        .create_field_definition(authed(
            t,
            CreateFieldDefinitionRequest {
                field_definition: Some(d),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// POSTs an account over REST: (status, body).
async fn post_account(app: &TestApp, t: &str, body: Json) -> (u16, Json) {
    let (status, body, _) = app
        .rest("POST", "/api/v1/crm/accounts", Some(t), Some(body))
        .await;
    (status, body)
}

/// The violated fields of a REST error body, sorted.
fn rest_fields(body: &Json) -> Vec<String> {
    let mut out: Vec<String> = body["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["field_violations"].as_array())
        .flatten()
        .map(|v| v["field"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

/// The ErrorInfo of a REST error body.
fn info(body: &Json) -> &Json {
    body["details"]
        .as_array()
        .and_then(|d| {
            d.iter()
                .find(|x| x["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
        })
        .unwrap_or_else(|| panic!("no ErrorInfo in {body}"))
}

/// The names of the accounts a REST list returns.
async fn names(app: &TestApp, t: &str, query: &str) -> Vec<String> {
    let (status, body, _) = app
        .rest(
            "GET",
            &format!("/api/v1/crm/accounts?{query}"),
            Some(t),
            None,
        )
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}

fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn definitions_round_trip_over_grpc_and_rest() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    let mut d = field("account", "tier", "enum");
    d.label = "Tier".into();
    d.options = vec!["gold".into(), "silver".into()];
    let made = define(&app, &t, d).await.unwrap();
    assert!(made.id.starts_with("fld_"), "{}", made.id);
    assert_eq!(made.version, 1);
    assert_eq!(made.created_by, "u1");
    assert_eq!(made.index_state, "building");
    let got = defs(&app)
        .get_field_definition(authed(
            &t,
            GetFieldDefinitionRequest {
                id: made.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.key, "tier");
    assert_eq!(got.options, ["gold", "silver"]);

    // REST: create, list (filtered, paged), update, delete.
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/field-definitions",
            Some(&t),
            Some(json!({"resource_type": "deal", "key": "risk", "type": "integer", "minimum": 0, "maximum": 10})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["maximum"], json!(10.0));
    let risk = body["id"].as_str().unwrap().to_owned();
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/field-definitions",
            Some(&t),
            Some(json!({"resource_type": "account", "key": "seats", "type": "integer"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, page1, _) = app
        .rest(
            "GET",
            "/api/v1/crm/field-definitions?resource_type=account&page_size=1",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(page1["field_definitions"][0]["key"], "seats");
    let token = page1["next_page_token"].as_str().unwrap();
    assert!(!token.is_empty());
    let (_, page2, _) = app
        .rest(
            "GET",
            &format!(
                "/api/v1/crm/field-definitions?resource_type=account&page_size=1&page_token={token}"
            ),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(page2["field_definitions"][0]["key"], "tier");
    assert_eq!(page2["next_page_token"], "");
    // A token is bound to its resource_type.
    let (status, _, _) = app
        .rest(
            "GET",
            &format!("/api/v1/crm/field-definitions?resource_type=deal&page_token={token}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 400);
    let (_, all, _) = app
        .rest("GET", "/api/v1/crm/field-definitions", Some(&t), None)
        .await;
    let keys: Vec<&str> = all["field_definitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["seats", "tier", "risk"]);

    let (status, body, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/field-definitions/{risk}?update_mask=label,maximum"),
            Some(&t),
            Some(json!({"label": "Risk", "maximum": 20, "version": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
    assert_eq!(body["label"], "Risk");
    // Stale version; immutable and unknown paths.
    let (status, body, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/field-definitions/{risk}"),
            Some(&t),
            Some(json!({"label": "x", "version": 1})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/field-definitions/{risk}?update_mask=type,key,created_by"),
            Some(&t),
            Some(json!({"type": "string", "key": "risk"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        rest_fields(&body),
        ["update_mask.paths[2]"],
        "immutable fields may be named, unknown ones not"
    );
    let (status, body, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/field-definitions/{risk}"),
            Some(&t),
            Some(json!({"type": "string", "key": "risk", "resource_type": "deal", "label": "R"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(rest_fields(&body), ["field_definition.type"]);
    // With their stored values they change nothing.
    let (status, body, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/field-definitions/{risk}"),
            Some(&t),
            Some(json!({"type": "integer", "key": "risk", "resource_type": "deal", "label": "R"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["label"], "R");

    // The key is unique per tenant and resource type.
    let again = define(&app, &t, field("account", "seats", "number"))
        .await
        .unwrap_err();
    assert_status(&again, Code::AlreadyExists, "DUPLICATE_VALUE");
    define(&app, &t, field("contact", "seats", "number"))
        .await
        .unwrap();

    let (status, _, _) = app
        .rest(
            "DELETE",
            &format!("/api/v1/crm/field-definitions/{risk}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let gone = defs(&app)
        .get_field_definition(authed(&t, GetFieldDefinitionRequest { id: risk.clone() }))
        .await
        .unwrap_err();
    assert_status(&gone, Code::NotFound, "RESOURCE_NOT_FOUND");

    // Bad definitions: every problem at once.
    let mut bad = field("line_item", "Bad Key", "enum");
    bad.max_length = Some(5);
    let e = define(&app, &t, bad).await.unwrap_err();
    assert_eq!(
        violations(&e),
        [
            "field_definition.resource_type",
            "field_definition.key",
            "field_definition.options",
            "field_definition.max_length"
        ]
    );
}

#[tokio::test]
async fn every_type_is_checked_on_every_write_and_every_violation_reported() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    let mut seats = field("account", "seats", "integer");
    seats.minimum = Some(1.0);
    seats.maximum = Some(1000.0);
    let mut tier = field("account", "tier", "enum");
    tier.options = vec!["gold".into(), "silver".into()];
    let mut regions = field("account", "regions", "multi_enum");
    regions.options = vec!["emea".into(), "apac".into()];
    let mut code = field("account", "code", "string");
    code.max_length = Some(4);
    for d in [
        seats,
        tier,
        regions,
        code,
        field("account", "renewal", "date"),
        field("account", "signed_at", "datetime"),
        field("account", "vip", "boolean"),
        field("account", "score", "number"),
    ] {
        define(&app, &t, d).await.unwrap();
    }
    let bad = json!({
        "seats": "7", "tier": "platinum", "regions": ["emea", "mars"], "code": "TOO LONG",
        "renewal": "2026-02-30", "signed_at": "tomorrow", "vip": "yes", "score": "high",
        "free": {"anything": [1, "x"]}
    });
    let (status, body) = post_account(&app, &t, json!({"name": "A", "custom_fields": bad})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        rest_fields(&body),
        [
            "account.custom_fields.code",
            "account.custom_fields.regions[1]",
            "account.custom_fields.renewal",
            "account.custom_fields.score",
            "account.custom_fields.seats",
            "account.custom_fields.signed_at",
            "account.custom_fields.tier",
            "account.custom_fields.vip",
        ]
    );
    // Within bounds and types; an undefined key untouched; the datetime
    // stored in UTC.
    let good = json!({
        "seats": 12, "tier": "gold", "regions": ["apac"], "code": "AB",
        "renewal": "2028-02-29", "signed_at": "2026-03-31T23:30:00-02:00", "vip": true,
        "score": 2.5, "free": {"anything": [1, "x"]}
    });
    let (status, body) = post_account(&app, &t, json!({"name": "A", "custom_fields": good})).await;
    assert_eq!(status, 200, "{body}");
    let cf = &body["custom_fields"];
    assert_eq!(cf["signed_at"], "2026-04-01T01:30:00.000000Z");
    assert_eq!(cf["free"], json!({"anything": [1.0, "x"]}));
    assert_eq!(cf["seats"], json!(12.0));
    let id = body["id"].as_str().unwrap().to_owned();

    // Update: only what changes is checked; a bad change is refused.
    let (status, body, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/accounts/{id}?update_mask=custom_fields.seats"),
            Some(&t),
            Some(json!({"custom_fields": {"seats": 0}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(rest_fields(&body), ["account.custom_fields.seats"]);
    // gRPC: the same rule, the same path.
    let mut cf = prost_types::Struct::default();
    cf.fields.insert(
        "tier".into(),
        crm::records::convert::json_to_value(json!("bronze")),
    );
    let e = app
        .accounts()
        .update_account(authed(
            &t,
            UpdateAccountRequest {
                account: Some(Account {
                    id: id.clone(),
                    custom_fields: Some(cf),
                    ..Default::default()
                }),
                update_mask: mask(&["custom_fields.tier"]),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), ["account.custom_fields.tier"]);

    // Batch create: each item's violations under its own path.
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts:batchCreate",
            Some(&t),
            Some(json!({"requests": [
                {"account": {"name": "ok", "custom_fields": {"seats": 3}}},
                {"account": {"name": "bad", "custom_fields": {"seats": 3.5, "vip": 1}}}
            ]})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        rest_fields(&body),
        [
            "requests[1].account.custom_fields.seats",
            "requests[1].account.custom_fields.vip"
        ]
    );
    // Upsert: the same checks.
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts:upsert",
            Some(&t),
            Some(json!({"account": {"name": "U", "external_id": "u-1", "custom_fields": {"renewal": "31/12/2026"}}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(rest_fields(&body), ["account.custom_fields.renewal"]);
    // Other resource types are not affected by account definitions.
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/contacts",
            Some(&t),
            Some(json!({"first_name": "C", "custom_fields": {"seats": "many"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn required_keys_are_needed_on_create_and_never_removed() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    let mut d = field("account", "tier", "string");
    d.required = true;
    define(&app, &t, d).await.unwrap();
    for cf in [
        json!(null),
        json!({}),
        json!({"tier": null}),
        json!({"tier": ""}),
    ] {
        let (status, body) =
            post_account(&app, &t, json!({"name": "A", "custom_fields": cf})).await;
        assert_eq!(status, 400, "{cf}: {body}");
        assert_eq!(rest_fields(&body), ["account.custom_fields.tier"]);
    }
    let (status, body) = post_account(
        &app,
        &t,
        json!({"name": "A", "custom_fields": {"tier": "gold"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap();
    for (mask, patch) in [
        ("custom_fields.tier", json!({})),
        ("custom_fields", json!({"custom_fields": {"other": 1}})),
    ] {
        let (status, body, _) = app
            .rest(
                "PATCH",
                &format!("/api/v1/crm/accounts/{id}?update_mask={mask}"),
                Some(&t),
                Some(patch),
            )
            .await;
        assert_eq!(status, 400, "{mask}: {body}");
        assert_eq!(
            body["details"][1]["field_violations"][0]["description"],
            "is required and cannot be removed"
        );
    }
    // Other changes are fine.
    let (status, body, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/accounts/{id}"),
            Some(&t),
            Some(json!({"industry": "retail"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn unique_keys_hold_among_live_records_even_under_concurrency() {
    let app = spawn_app().await;
    let tn = tenant();
    let t = app.token(&tn, "u1");
    let mut d = field("account", "code", "string");
    d.unique = true;
    define(&app, &t, d).await.unwrap();
    let (status, first) = post_account(
        &app,
        &t,
        json!({"name": "A", "custom_fields": {"code": "X1"}}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let first_id = first["id"].as_str().unwrap().to_owned();
    let (status, body) = post_account(
        &app,
        &t,
        json!({"name": "B", "custom_fields": {"code": "X1"}}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(info(&body)["reason"], "DUPLICATE_VALUE");
    assert_eq!(
        info(&body)["metadata"]["field"],
        "account.custom_fields.code"
    );
    // An integration token's write clashes with a person's record too.
    let app_token = app.app_token(&tn, "bot", "app-1");
    let (status, body) = post_account(
        &app,
        &app_token,
        json!({"name": "C", "custom_fields": {"code": "X1"}}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    // Within one batch.
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts:batchCreate",
            Some(&t),
            Some(json!({"requests": [
                {"account": {"name": "D", "custom_fields": {"code": "Y"}}},
                {"account": {"name": "E", "custom_fields": {"code": "Y"}}}
            ]})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        info(&body)["metadata"]["fields"],
        "requests[0].account.custom_fields.code,requests[1].account.custom_fields.code"
    );
    // Swapping values within a batch is fine (the stored ones are replaced).
    let (_, second) = post_account(
        &app,
        &t,
        json!({"name": "F", "custom_fields": {"code": "X2"}}),
    )
    .await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts:batchUpdate",
            Some(&t),
            Some(json!({"requests": [
                {"account": {"id": first_id, "custom_fields": {"code": "X2"}}, "update_mask": "customFields.code"},
                {"account": {"id": second_id, "custom_fields": {"code": "X1"}}, "update_mask": "customFields.code"}
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Concurrent writes of one value: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (url, t) = (
            format!("http://{}/api/v1/crm/accounts", app.http_addr),
            t.clone(),
        );
        let http = app.http.clone();
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(t)
                .json(&json!({"name": format!("R{i}"), "custom_fields": {"code": "RACE"}}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.unwrap());
    }
    codes.sort();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 200 || *c == 409), "{codes:?}");

    // A deleted record frees its value; undeleting it takes it back only if free.
    let (status, _, _) = app
        .rest(
            "DELETE",
            &format!("/api/v1/crm/accounts/{first_id}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = post_account(
        &app,
        &t,
        json!({"name": "G", "custom_fields": {"code": "X2"}}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body, _) = app
        .rest(
            "POST",
            &format!("/api/v1/crm/accounts/{first_id}:undelete"),
            Some(&t),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(info(&body)["reason"], "DUPLICATE_VALUE");
}

#[tokio::test]
async fn typed_filters_and_orders_compare_by_type() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    define(&app, &t, field("account", "seats", "integer"))
        .await
        .unwrap();
    define(&app, &t, field("account", "renewal", "date"))
        .await
        .unwrap();
    define(&app, &t, field("account", "signed_at", "datetime"))
        .await
        .unwrap();
    let mut tier = field("account", "regions", "multi_enum");
    tier.options = vec!["emea".into(), "apac".into()];
    define(&app, &t, tier).await.unwrap();
    for (name, cf) in [
        (
            "nine",
            json!({"seats": 9, "renewal": "2025-12-31", "signed_at": "2026-01-01T00:30:00+01:00", "regions": ["emea"]}),
        ),
        (
            "ten",
            json!({"seats": 10, "renewal": "2026-01-01", "signed_at": "2025-12-31T23:45:00Z", "regions": ["apac", "emea"]}),
        ),
        (
            "hundred",
            json!({"seats": 100, "renewal": "2026-06-30", "signed_at": "2026-01-01T00:00:00Z"}),
        ),
        ("none", json!({})),
    ] {
        let (status, body) =
            post_account(&app, &t, json!({"name": name, "custom_fields": cf})).await;
        assert_eq!(status, 200, "{body}");
    }
    let by = |filter: &str, order: &str| format!("filter={}&order_by={}", q(filter), q(order));
    // As text, "9" > "10" > "100"; as numbers, 9 < 10 < 100.
    assert_eq!(
        names(
            &app,
            &t,
            &by("custom_fields.seats > 9", "custom_fields.seats")
        )
        .await,
        ["ten", "hundred"]
    );
    assert_eq!(
        names(&app, &t, &by("custom_fields.seats < 10", "")).await,
        ["nine"]
    );
    assert_eq!(
        names(&app, &t, &by("custom_fields.seats = 10", "")).await,
        ["ten"]
    );
    assert_eq!(
        names(
            &app,
            &t,
            &by(
                "custom_fields.seats >= 10 AND custom_fields.seats <= 99",
                ""
            )
        )
        .await,
        ["ten"]
    );
    assert_eq!(
        names(&app, &t, &by("", "custom_fields.seats")).await,
        ["none", "nine", "ten", "hundred"]
    );
    assert_eq!(
        names(&app, &t, &by("", "custom_fields.seats desc")).await,
        ["hundred", "ten", "nine", "none"]
    );
    // Dates across years; times by instant, whatever offset they were written with.
    assert_eq!(
        names(
            &app,
            &t,
            &by(
                r#"custom_fields.renewal >= "2026-01-01""#,
                "custom_fields.renewal"
            )
        )
        .await,
        ["ten", "hundred"]
    );
    assert_eq!(
        names(&app, &t, &by("", "custom_fields.renewal desc")).await,
        ["hundred", "ten", "nine", "none"]
    );
    assert_eq!(
        names(&app, &t, &by("", "custom_fields.signed_at")).await,
        ["none", "nine", "ten", "hundred"]
    );
    assert_eq!(
        names(
            &app,
            &t,
            &by(
                r#"custom_fields.signed_at < "2026-01-01T01:00:00+01:00""#,
                "custom_fields.signed_at"
            )
        )
        .await,
        ["nine", "ten"]
    );
    assert_eq!(
        names(
            &app,
            &t,
            &by(r#"custom_fields.regions:"emea""#, "custom_fields.seats")
        )
        .await,
        ["nine", "ten"]
    );
    // Paging through a custom order, both ways.
    for (order, want) in [
        ("custom_fields.seats", ["none", "nine", "ten", "hundred"]),
        (
            "custom_fields.seats desc",
            ["hundred", "ten", "nine", "none"],
        ),
    ] {
        let mut got = Vec::new();
        let mut token = String::new();
        loop {
            let (status, body, _) = app
                .rest(
                    "GET",
                    &format!(
                        "/api/v1/crm/accounts?page_size=1&order_by={}&page_token={token}",
                        q(order)
                    ),
                    Some(&t),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            got.extend(
                body["accounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["name"].as_str().unwrap().to_owned()),
            );
            token = body["next_page_token"].as_str().unwrap().to_owned();
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(got, want, "{order}");
    }
    // Type errors name the position; undefined keys cannot be sorted on.
    for bad in [
        by(r#"custom_fields.seats > "9""#, ""),
        by(r#"custom_fields.renewal > "tomorrow""#, ""),
        by("", "custom_fields.nope"),
        by(r#"custom_fields.regions = "emea""#, ""),
    ] {
        let (status, body, _) = app
            .rest(
                "GET",
                &format!("/api/v1/crm/accounts?{bad}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn conflicting_definitions_are_refused_and_checked_beforehand() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    let mut ids = Vec::new();
    for (name, cf) in [
        ("a", json!({"seats": 5, "code": "A"})),
        ("b", json!({"seats": 50, "code": "A"})),
        ("c", json!({"seats": "many"})),
        ("d", json!({})),
    ] {
        let (_, body) = post_account(&app, &t, json!({"name": name, "custom_fields": cf})).await;
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // A deleted record does not count.
    app.rest(
        "DELETE",
        &format!("/api/v1/crm/accounts/{}", ids[2]),
        Some(&t),
        None,
    )
    .await;
    let mut seats = field("account", "seats", "integer");
    seats.maximum = Some(10.0);
    // The dry run: count and ids, nothing changes.
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/field-definitions:check",
            Some(&t),
            Some(json!({"field_definition": {"resource_type": "account", "key": "seats", "type": "integer", "maximum": 10}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["violating_records"], json!("1"));
    assert_eq!(body["sample_record_ids"], json!([ids[1]]));
    let e = define(&app, &t, seats.clone()).await.unwrap_err();
    assert_status(&e, Code::FailedPrecondition, "FIELD_DEFINITION_CONFLICT");
    let meta = e.get_details_error_info().unwrap().metadata;
    assert_eq!(meta["violating_records"], "1");
    let (_, list, _) = app
        .rest("GET", "/api/v1/crm/field-definitions", Some(&t), None)
        .await;
    assert_eq!(list["field_definitions"], json!([]));
    // Looser, it is made; tightening it again conflicts; loosening is free.
    seats.maximum = Some(100.0);
    let made = define(&app, &t, seats).await.unwrap();
    let tighten = |max: f64| UpdateFieldDefinitionRequest {
        field_definition: Some(FieldDefinition {
            id: made.id.clone(),
            maximum: Some(max),
            ..Default::default()
        }),
        update_mask: mask(&["maximum"]),
    };
    let e = defs(&app)
        .update_field_definition(authed(&t, tighten(10.0)))
        .await
        .unwrap_err();
    assert_status(&e, Code::FailedPrecondition, "FIELD_DEFINITION_CONFLICT");
    let got = defs(&app)
        .get_field_definition(authed(
            &t,
            GetFieldDefinitionRequest {
                id: made.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.maximum, Some(100.0));
    assert_eq!(got.version, 1);
    defs(&app)
        .update_field_definition(authed(&t, tighten(60.0)))
        .await
        .unwrap();
    // Required: the record without the key violates it.
    let check = defs(&app)
        .check_field_definition(authed(
            &t,
            CheckFieldDefinitionRequest {
                field_definition: Some(FieldDefinition {
                    id: made.id.clone(),
                    required: true,
                    ..Default::default()
                }),
                update_mask: mask(&["required"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(check.violating_records, 1);
    assert_eq!(check.sample_record_ids, [ids[3].clone()]);
    // Unique: both records sharing a value.
    let mut code = field("account", "code", "string");
    code.unique = true;
    let e = define(&app, &t, code).await.unwrap_err();
    assert_eq!(
        e.get_details_error_info().unwrap().metadata["violating_records"],
        "2"
    );
}

#[tokio::test]
async fn definitions_and_their_checks_stay_within_the_tenant() {
    let app = spawn_app().await;
    let (ta, tb) = (app.token(&tenant(), "a"), app.token(&tenant(), "b"));
    let mut d = field("account", "seats", "integer");
    d.required = true;
    let made = define(&app, &ta, d).await.unwrap();
    let id = made.id.clone();
    // B sees none of A's definitions, by any method.
    let e = defs(&app)
        .get_field_definition(authed(&tb, GetFieldDefinitionRequest { id: id.clone() }))
        .await
        .unwrap_err();
    assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    let listed = defs(&app)
        .list_field_definitions(authed(&tb, ListFieldDefinitionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.field_definitions.is_empty());
    let e = defs(&app)
        .update_field_definition(authed(
            &tb,
            UpdateFieldDefinitionRequest {
                field_definition: Some(FieldDefinition {
                    id: id.clone(),
                    label: "x".into(),
                    ..Default::default()
                }),
                update_mask: None,
            },
        ))
        .await
        .unwrap_err();
    assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    let e = defs(&app)
        .check_field_definition(authed(
            &tb,
            CheckFieldDefinitionRequest {
                field_definition: Some(FieldDefinition {
                    id: id.clone(),
                    required: true,
                    ..Default::default()
                }),
                update_mask: mask(&["required"]),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    let e = defs(&app)
        .delete_field_definition(authed(&tb, DeleteFieldDefinitionRequest { id: id.clone() }))
        .await
        .unwrap_err();
    assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    // B's records are not checked against A's definitions; B may define
    // the same key its own way, and A's records do not conflict with it.
    let (status, body) = post_account(
        &app,
        &tb,
        json!({"name": "B", "custom_fields": {"seats": "lots"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = post_account(&app, &ta, json!({"name": "A"})).await;
    assert_eq!(status, 400);
    let (status, _) = post_account(
        &app,
        &ta,
        json!({"name": "A", "custom_fields": {"seats": 3}}),
    )
    .await;
    assert_eq!(status, 200);
    let mut unique = field("account", "seats", "string");
    unique.unique = true;
    // A's records (seats 3, a number) are not B's: no conflict.
    define(&app, &tb, unique.clone()).await.unwrap();
    app.rest(
        "POST",
        "/api/v1/crm/accounts",
        Some(&tb),
        Some(json!({"name": "B2"})),
    )
    .await;
    // A's record with seats 3 does not clash with B's unique definition.
    let (_, list, _) = app
        .rest(
            "GET",
            "/api/v1/crm/accounts?filter=custom_fields.seats%20%3E%201",
            Some(&ta),
            None,
        )
        .await;
    assert_eq!(list["accounts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_tenant_has_at_most_1000_definitions_per_resource_type() {
    let app = spawn_app().await;
    let tn = tenant();
    let t = app.token(&tn, "u1");
    // 999 made directly, the 1000th and 1001st through the API.
    let mut owner = app.owner_conn().await;
    sqlx::query(
        "INSERT INTO field_definitions (tenant_id, id, resource_type, key, type, created_at, updated_at, created_by, updated_by) \
         SELECT $1, 'fld_' || lpad(i::text, 26, '0'), 'account', 'k' || i, 'boolean', now(), now(), 'u1', 'u1' \
         FROM generate_series(1, 999) i",
    )
    .bind(&tn)
    .execute(&mut owner)
    .await
    .unwrap();
    define(&app, &t, field("account", "last", "boolean"))
        .await
        .unwrap();
    let e = define(&app, &t, field("account", "one_more", "boolean"))
        .await
        .unwrap_err();
    assert_status(&e, Code::ResourceExhausted, "FIELD_DEFINITION_LIMIT");
    // Per resource type.
    define(&app, &t, field("deal", "one_more", "boolean"))
        .await
        .unwrap();
    // And the writes check all of them.
    let (status, body) = post_account(
        &app,
        &t,
        json!({"name": "A", "custom_fields": {"k500": "yes", "k999": true}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(rest_fields(&body), ["account.custom_fields.k500"]);
}

#[tokio::test]
async fn each_definition_gets_its_index_and_loses_it_with_the_definition() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    let made = define(&app, &t, field("account", "seats", "integer"))
        .await
        .unwrap();
    let flag = define(&app, &t, field("account", "vip", "boolean"))
        .await
        .unwrap();
    assert_eq!(flag.index_state, "none");
    let name = format!("cf_{}", made.id.to_lowercase());
    // (the index exists, its statistics object exists)
    let exists = |name: String| {
        let url = app.owner_url().to_owned();
        async move {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query_as::<_, (bool, bool)>(
                "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = $1), \
                        EXISTS (SELECT 1 FROM pg_statistic_ext WHERE stxname = $1 || '_st')",
            )
            .bind(name)
            .fetch_one(&mut c)
            .await
            .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = defs(&app)
            .get_field_definition(authed(
                &t,
                GetFieldDefinitionRequest {
                    id: made.id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        if got.index_state == "ready" {
            break;
        }
        assert!(Instant::now() < deadline, "index not built: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(exists(name.clone()).await, (true, true));
    defs(&app)
        .delete_field_definition(authed(
            &t,
            DeleteFieldDefinitionRequest {
                id: made.id.clone(),
            },
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while exists(name.clone()).await != (false, false) {
        assert!(Instant::now() < deadline, "index {name} not dropped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POSTs an account to a `crm serve` process: the status.
async fn post_to(p: &crate::reliability::Process, t: &str, body: Json) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/api/v1/crm/accounts", p.http))
        .bearer_auth(t)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_second_server_process_enforces_a_change_within_a_second() {
    use crate::reliability::{Process, ScratchDb};
    let db = ScratchDb::new();
    let a = Process::start(&db.0, &[]);
    a.ready().await;
    let b = Process::start(&db.0, &[]);
    b.ready().await;
    let tn = tenant();
    let t = crm::auth::mint(SECRET.as_bytes(), &tn, "u1", None, 3600, None, None).unwrap();
    // B has the tenant's (empty) definitions cached.
    assert_eq!(post_to(&b, &t, json!({"name": "before"})).await, 200);
    let created = reqwest::Client::new()
        .post(format!("{}/api/v1/crm/field-definitions", a.http))
        .bearer_auth(&t)
        .json(&json!({"resource_type": "account", "key": "seats", "type": "integer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 200);
    let start = Instant::now();
    let id = created.json::<Json>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // B refuses a value the definition rejects within a second...
    until_within_a_second(&b, &t, start, 400).await;
    // ... and accepts it again within a second of the deletion.
    let deleted = reqwest::Client::new()
        .delete(format!("{}/api/v1/crm/field-definitions/{id}", a.http))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    until_within_a_second(&b, &t, Instant::now(), 200).await;
}

/// Posts an account whose `seats` is a string to `p` until the answer is
/// `want`, failing once a second has passed since `start`.
async fn until_within_a_second(
    p: &crate::reliability::Process,
    t: &str,
    start: Instant,
    want: u16,
) {
    while post_to(
        p,
        t,
        json!({"name": "probe", "custom_fields": {"seats": "many"}}),
    )
    .await
        != want
    {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "still not {want} after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// EXPLAIN of a list of accounts of `tenant`, as the request role with the
/// tenant set (row-level security applies, as in the service).
async fn explain(
    app: &TestApp,
    tenant: &str,
    schema: std::sync::Arc<crm::custom::ResourceSchema>,
    filter: &str,
    order_by: &str,
    after: Option<Vec<Option<String>>>,
) -> String {
    use crm::records::Entity;
    use crm::sql::list::{Plan, select_page};
    use sqlx::{Connection, Execute, Executor};
    let meta = Account::kind().meta();
    let p = Plan::new(meta, schema, filter, order_by, "", false).unwrap();
    let mut qb = select_page(
        meta,
        "accounts",
        &p,
        tenant,
        None,
        false,
        after.as_deref(),
        51,
    )
    .unwrap();
    let sql = qb.sql().as_str().to_owned();
    let args = qb.build().take_arguments().unwrap().unwrap();
    let mut conn = app.owner_conn().await;
    let mut tx = conn.begin().await.unwrap();
    tx.execute(sqlx::AssertSqlSafe(format!(
        "SET LOCAL ROLE {}",
        app.app_role
    )))
    .await
    .unwrap();
    sqlx::query("SELECT set_config('crm.tenant_id', $1, true)")
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .unwrap();
    let rows: Vec<(String,)> =
        sqlx::query_as_with(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")), args)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn typed_filters_and_orders_have_an_index_path_at_scale() {
    use sqlx::Executor;
    let app = spawn_app().await;
    let tn = tenant();
    let t = app.token(&tn, "u1");
    // Enough rows for the planner's statistics to mean something, most in
    // the tenant queried.
    let mut owner = app.owner_conn().await;
    owner
        .execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO accounts (tenant_id, id, created_at, updated_at, created_by, updated_by, source, source_type, \
                 schema_version, version, name, custom_fields) \
             SELECT CASE WHEN g % 5 = 0 THEN 'other' ELSE '{tn}' END, 'acc_' || lpad(g::text, 26, '0'), \
                 now() - g * interval '1 second', now(), 'u', 'u', 'edm', 'api', 1, 1, 'Company ' || g, \
                 jsonb_build_object('seats', g % 5000, 'renewal', to_char(date '2025-01-01' + (g * 7919) % 1461, 'YYYY-MM-DD')) \
             FROM generate_series(1, 60000) g"
        )))
        .await
        .unwrap();
    owner.execute("VACUUM ANALYZE accounts").await.unwrap();
    let seats = define(&app, &t, field("account", "seats", "integer"))
        .await
        .unwrap();
    let renewal = define(&app, &t, field("account", "renewal", "date"))
        .await
        .unwrap();
    for d in [&seats, &renewal] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = defs(&app)
                .get_field_definition(authed(&t, GetFieldDefinitionRequest { id: d.id.clone() }))
                .await
                .unwrap()
                .into_inner();
            if got.index_state == "ready" {
                break;
            }
            assert!(Instant::now() < deadline, "index not built: {got:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    owner.execute("ANALYZE accounts").await.unwrap();
    let def = |d: &FieldDefinition, ty| crm::custom::Definition {
        id: d.id.clone(),
        key: d.key.clone(),
        ty,
        options: vec![],
        required: false,
        unique: false,
        max_length: None,
        minimum: None,
        maximum: None,
    };
    let schema = std::sync::Arc::new(crm::custom::ResourceSchema::new([
        def(&seats, crm::custom::FieldType::Integer),
        def(&renewal, crm::custom::FieldType::Date),
    ]));
    let (seats_idx, renewal_idx) = (
        format!("cf_{}", seats.id.to_lowercase()),
        format!("cf_{}", renewal.id.to_lowercase()),
    );
    let page2 = |v: &str| {
        Some(vec![
            Some(v.to_owned()),
            Some("acc_00000000000000000000000001".into()),
        ])
    };
    for (what, filter, order, after, index) in [
        ("range", "custom_fields.seats >= 4990", "", None, &seats_idx),
        (
            "range below",
            "custom_fields.seats < 3",
            "",
            None,
            &seats_idx,
        ),
        (
            "equality",
            "custom_fields.seats = 2500",
            "",
            None,
            &seats_idx,
        ),
        ("order", "", "custom_fields.seats", None, &seats_idx),
        (
            "order desc, page 2",
            "",
            "custom_fields.seats desc",
            page2("4000"),
            &seats_idx,
        ),
        (
            "order, page 2 past records without a value",
            "",
            "custom_fields.seats",
            page2("-Infinity"),
            &seats_idx,
        ),
        (
            "range and order",
            "custom_fields.seats > 100 AND custom_fields.seats < 110",
            "custom_fields.seats",
            None,
            &seats_idx,
        ),
        (
            "date range across a year",
            r#"custom_fields.renewal >= "2028-12-25""#,
            "",
            None,
            &renewal_idx,
        ),
        (
            "date order",
            "",
            "custom_fields.renewal desc",
            None,
            &renewal_idx,
        ),
    ] {
        let p = explain(&app, &tn, schema.clone(), filter, order, after).await;
        assert!(p.contains(index.as_str()), "{what}: expected {index}\n{p}");
        assert!(!p.contains("Seq Scan"), "{what}: a sequential scan\n{p}");
    }
}

#[tokio::test]
async fn known_definitions_cost_writes_and_lists_no_extra_transaction() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    define(&app, &t, field("account", "seats", "integer"))
        .await
        .unwrap();
    // The first write and list of the tenant read its definitions...
    let (status, _) = post_account(
        &app,
        &t,
        json!({"name": "A", "custom_fields": {"seats": 1}}),
    )
    .await;
    assert_eq!(status, 200);
    names(&app, &t, "filter=custom_fields.seats%20%3E%200").await;
    // ... the next ones find them cached: one transaction each.
    let before = app.metric("crm_db_transactions_total").await;
    for i in 0..5 {
        let (status, _) = post_account(
            &app,
            &t,
            json!({"name": format!("B{i}"), "custom_fields": {"seats": 2}}),
        )
        .await;
        assert_eq!(status, 200);
        names(&app, &t, "order_by=custom_fields.seats").await;
    }
    assert_eq!(app.metric("crm_db_transactions_total").await - before, 10.0);
}
