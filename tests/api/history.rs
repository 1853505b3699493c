//! HistoryService (field history, the record at an instant) and
//! ErasureService (PurgeRecord): entries per changed field, paging, side
//! effects, visibility, the scope, erasure leaving no copy of a value
//! anywhere, children and concurrency.

use std::time::Duration;

use crm::proto::erasure_service_client::ErasureServiceClient;
use crm::proto::history_service_client::HistoryServiceClient;
use crm::proto::*;
use prost_types::value::Kind as V;
use serde_json::{Value as Json, json};
use sqlx::Row;
use tonic::Code;

use crate::helpers::*;

fn history(app: &TestApp) -> HistoryServiceClient<tonic::transport::Channel> {
    HistoryServiceClient::new(app.channel.clone())
}

fn erasure(app: &TestApp) -> ErasureServiceClient<tonic::transport::Channel> {
    ErasureServiceClient::new(app.channel.clone())
}

fn purge_token(app: &TestApp, tenant: &str) -> String {
    app.scoped_token(tenant, "dpo", "crm:read crm:purge")
}

async fn entries(
    app: &TestApp,
    t: &str,
    collection: &str,
    id: &str,
    fields: &[&str],
) -> Vec<HistoryEntry> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = history(app)
            .list_record_history(authed(
                t,
                ListRecordHistoryRequest {
                    collection: collection.into(),
                    id: id.into(),
                    page_size: 3,
                    page_token: token,
                    fields: fields.iter().map(|f| f.to_string()).collect(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 3);
        out.extend(page.entries);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

fn text(v: &Option<prost_types::Value>) -> Option<String> {
    match v.as_ref().and_then(|v| v.kind.as_ref()) {
        Some(V::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

/// `v` with every number as an f64 (a Struct's numbers are doubles: `3.0`
/// and `3` are the same JSON number).
fn numbers_as_f64(v: Json) -> Json {
    match v {
        Json::Number(n) => json!(n.as_f64().unwrap()),
        Json::Array(a) => Json::Array(a.into_iter().map(numbers_as_f64).collect()),
        Json::Object(o) => {
            Json::Object(o.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        other => other,
    }
}

/// The suffix of this week's change_events partition (Monday, UTC).
fn week() -> String {
    use chrono::Datelike;
    let today = chrono::Utc::now().date_naive();
    let monday = today - chrono::Duration::days(i64::from(today.weekday().num_days_from_monday()));
    monday.format("%Y%m%d").to_string()
}

fn is_null(v: &Option<prost_types::Value>) -> bool {
    matches!(
        v.as_ref().and_then(|v| v.kind.as_ref()),
        Some(V::NullValue(_))
    )
}

/// What `crm purge-check` finds of `marker` in the tenant's rows of every
/// table of the test's database: one line per place ("" when none).
pub async fn survivors(app: &TestApp, tenant: &str, marker: &str) -> Vec<String> {
    survivors_in(app, tenant, marker, None)
}

/// [`survivors`], the relay's stream at `nats` included.
pub fn survivors_in(app: &TestApp, tenant: &str, marker: &str, nats: Option<&str>) -> Vec<String> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_crm"));
    cmd.args(["purge-check", "--tenant", tenant, "-"])
        .env("DATABASE_URL", app.owner_url())
        .env("RUST_LOG", "warn")
        .env_remove("CRM_NATS_URL");
    if let Some(url) = nats {
        cmd.args(["--nats-url", url]);
    }
    let out = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(marker.as_bytes())?;
            child.wait_with_output()
        })
        .expect("crm purge-check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        assert!(stdout.contains("none of the 1 value(s)"), "{stdout}");
        assert!(!stdout.contains(marker), "the value was printed: {stdout}");
        return Vec::new();
    }
    let found: Vec<String> = stdout.lines().map(str::to_owned).collect();
    assert!(
        !found.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    found
}

/// Waits until the outbox is sequenced (every event in change_events).
async fn sequenced(app: &TestApp) {
    let mut conn = app.owner_conn().await;
    for _ in 0..500 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM change_outbox")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if n == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the outbox was not sequenced");
}

#[tokio::test]
async fn every_changed_field_is_an_entry_newest_first_and_paged() {
    let app = spawn_app().await;
    let tenant = tenant();
    let t = app.token(&tenant, "ada");
    let bob = app.token(&tenant, "bob");
    let (status, created, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts",
            Some(&t),
            Some(json!({"name": "Acme", "industry": "retail", "custom_fields": {"tier": "gold"}})),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, body, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/accounts/{id}?request_id=6f1c1c1e-1d3a-4c52-9a7e-2f7d4f1b2a10"),
            Some(&bob),
            Some(json!({"name": "Acme Ltd", "custom_fields": {"tier": "platinum", "seats": 9}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let all = entries(&app, &t, "accounts", &id, &[]).await;
    let v2: Vec<&HistoryEntry> = all.iter().filter(|e| e.record_version == 2).collect();
    let v1: Vec<&HistoryEntry> = all.iter().filter(|e| e.record_version == 1).collect();
    assert_eq!(v1.len() + v2.len(), all.len());
    // Newest first; within a version by field.
    assert!(all[..v2.len()].iter().all(|e| e.record_version == 2));
    let fields2: Vec<&str> = v2.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields2,
        vec![
            "custom_fields.seats",
            "custom_fields.tier",
            "name",
            "updated_at",
            "updated_by",
            "version"
        ]
    );
    let name = v2.iter().find(|e| e.field == "name").unwrap();
    assert_eq!(text(&name.old_value).as_deref(), Some("Acme"));
    assert_eq!(text(&name.new_value).as_deref(), Some("Acme Ltd"));
    assert_eq!(name.changed_by, "bob");
    assert_eq!(name.request_id, "6f1c1c1e-1d3a-4c52-9a7e-2f7d4f1b2a10");
    assert_eq!(name.changed_at, {
        let got = app
            .accounts()
            .get_account(authed(&t, GetAccountRequest { id: id.clone() }))
            .await
            .unwrap()
            .into_inner();
        got.updated_at
    });
    let seats = v2
        .iter()
        .find(|e| e.field == "custom_fields.seats")
        .unwrap();
    assert!(is_null(&seats.old_value));
    assert_eq!(
        seats.new_value.as_ref().unwrap().kind,
        Some(V::NumberValue(9.0))
    );
    let version = v2.iter().find(|e| e.field == "version").unwrap();
    assert_eq!(
        version.new_value.as_ref().unwrap().kind,
        Some(V::NumberValue(2.0))
    );
    // The create: every field it set, old values null, by its writer.
    let v1_fields: Vec<&str> = v1.iter().map(|e| e.field.as_str()).collect();
    for f in ["name", "industry", "custom_fields.tier", "created_at", "id"] {
        assert!(v1_fields.contains(&f), "{f} missing from {v1_fields:?}");
    }
    assert!(
        v1.iter()
            .all(|e| is_null(&e.old_value) && e.changed_by == "ada")
    );

    // The fields filter (over REST too), and bad filters name the field.
    let names = entries(&app, &t, "accounts", &id, &["name"]).await;
    assert_eq!(names.len(), 2);
    assert_eq!(names[0].record_version, 2);
    let (status, body, _) = app
        .rest(
            "GET",
            &format!("/api/v1/crm/accounts/{id}/history?fields=custom_fields.tier&page_size=1"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entries"][0]["new_value"], json!("platinum"));
    assert_eq!(body["entries"][0]["old_value"], json!("gold"));
    assert!(!body["next_page_token"].as_str().unwrap().is_empty());
    let err = history(&app)
        .list_record_history(authed(
            &t,
            ListRecordHistoryRequest {
                collection: "accounts".into(),
                id: id.clone(),
                fields: vec!["name".into(), "no_such_field".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["fields[1]"]);
    let err = history(&app)
        .list_record_history(authed(
            &t,
            ListRecordHistoryRequest {
                collection: "accounts".into(),
                id: id.clone(),
                page_size: -1,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["page_size"]);
    let (status, _, _) = app
        .rest(
            "GET",
            &format!("/api/v1/crm/widgets/{id}/history"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 400);
    // A page token is bound to its record and filter.
    let first = history(&app)
        .list_record_history(authed(
            &t,
            ListRecordHistoryRequest {
                collection: "accounts".into(),
                id: id.clone(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let err = history(&app)
        .list_record_history(authed(
            &t,
            ListRecordHistoryRequest {
                collection: "accounts".into(),
                id: id.clone(),
                page_size: 1,
                page_token: first.next_page_token,
                fields: vec!["name".into()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["page_token"]);
}

#[tokio::test]
async fn server_maintained_fields_and_side_effects_are_recorded() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "ada");
    let account = app.account(&t, "Acme").await;
    let quote = app
        .quote(
            &t,
            Quote {
                account_id: account.id.clone(),
                ..Default::default()
            },
        )
        .await;
    let line = app
        .line_item(
            &t,
            LineItem {
                quote_id: quote.id.clone(),
                description: "Widgets".into(),
                quantity: Some(2.0),
                unit_price: Some(5.0),
                ..Default::default()
            },
        )
        .await;
    // The line item's create changed the quote: its summary and totals.
    let q = entries(&app, &t, "quotes", &quote.id, &[]).await;
    let latest: Vec<&str> = q
        .iter()
        .filter(|e| e.record_version == 2)
        .map(|e| e.field.as_str())
        .collect();
    assert!(latest.contains(&"line_items"), "{latest:?}");
    assert!(latest.contains(&"total"), "{latest:?}");
    let summary = q
        .iter()
        .find(|e| e.record_version == 2 && e.field == "line_items")
        .unwrap();
    let Some(V::ListValue(items)) = summary.new_value.as_ref().unwrap().kind.clone() else {
        panic!("line_items is not a list: {summary:?}");
    };
    assert_eq!(items.values.len(), 1);
    // Computed columns of the line item are entries of its create.
    let l = entries(&app, &t, "line-items", &line.id, &["total"]).await;
    assert_eq!(l.len(), 1);
    assert_eq!(
        l[0].new_value.as_ref().unwrap().kind,
        Some(V::NumberValue(10.0))
    );
}

#[tokio::test]
async fn the_record_at_an_instant() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "ada");
    let account = app.account(&t, "First").await;
    let update = |name: &str, version: i32| {
        let (mut c, t, id, name) = (
            app.accounts(),
            t.clone(),
            account.id.clone(),
            name.to_owned(),
        );
        async move {
            c.update_account(authed(
                &t,
                UpdateAccountRequest {
                    account: Some(Account {
                        id,
                        name,
                        version,
                        custom_fields: Some(prost_types::Struct {
                            fields: [(
                                "step".to_owned(),
                                prost_types::Value {
                                    kind: Some(V::NumberValue(f64::from(version))),
                                },
                            )]
                            .into(),
                        }),
                        ..Default::default()
                    }),
                    update_mask: mask(&["name", "custom_fields.step"]),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
        }
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = update("Second", 1).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let third = update("Third", 2).await;

    let at = |time: prost_types::Timestamp| {
        let (mut c, t, id) = (history(&app), t.clone(), account.id.clone());
        async move {
            c.get_record_at(authed(
                &t,
                GetRecordAtRequest {
                    collection: "accounts".into(),
                    id,
                    time: Some(time),
                },
            ))
            .await
            .map(|r| r.into_inner())
        }
    };
    let name_of = |s: &prost_types::Struct| match s.fields.get("name").and_then(|v| v.kind.clone())
    {
        Some(V::StringValue(n)) => n,
        other => panic!("name is {other:?}"),
    };
    let created = account.created_at.unwrap();
    let v1 = at(created).await.unwrap();
    assert_eq!(name_of(&v1), "First");
    assert_eq!(v1.fields["version"].kind, Some(V::NumberValue(1.0)));
    // A key that did not exist yet is absent, as Get would show it.
    let Some(V::StructValue(cf)) = v1.fields["custom_fields"].kind.clone() else {
        panic!("custom_fields missing");
    };
    assert!(cf.fields.is_empty(), "{cf:?}");
    let between = prost_types::Timestamp {
        seconds: second.updated_at.unwrap().seconds,
        nanos: second.updated_at.unwrap().nanos + 1000,
    };
    let v2 = at(between).await.unwrap();
    assert_eq!(name_of(&v2), "Second");
    assert_eq!(v2.fields["version"].kind, Some(V::NumberValue(2.0)));
    let now = at(third.updated_at.unwrap()).await.unwrap();
    assert_eq!(name_of(&now), "Third");
    // Shaped exactly like Get's JSON: the same Struct the REST Get returns.
    let (_, got, _) = app
        .rest(
            "GET",
            &format!("/api/v1/crm/accounts/{}", account.id),
            Some(&t),
            None,
        )
        .await;
    let (status, at_now, _) = app
        .rest(
            "GET",
            &format!(
                "/api/v1/crm/accounts/{}/history:at?time={}",
                account.id,
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200, "{at_now}");
    assert_eq!(numbers_as_f64(at_now), numbers_as_f64(got));
    // Before it existed: NOT_FOUND.
    let before = prost_types::Timestamp {
        seconds: created.seconds - 1,
        nanos: 0,
    };
    let err = at(before).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // An instant no timestamp can be is refused, naming the field.
    let err = at(prost_types::Timestamp {
        seconds: -1_000_000_000_000,
        nanos: 0,
    })
    .await
    .unwrap_err();
    assert_eq!(violations(&err), vec!["time"]);
}

#[tokio::test]
async fn history_and_erasure_are_invisible_across_tenants_and_apps() {
    let app = spawn_app().await;
    let mine = tenant();
    let t = app.token(&mine, "ada");
    let other = app.token(&tenant(), "eve");
    let other_purger = purge_token(&app, &tenant());
    let account = app.account(&t, "Acme").await;
    let integration = app.app_token(&mine, "svc", "billing");
    for token in [&other, &integration] {
        let err = history(&app)
            .list_record_history(authed(
                token,
                ListRecordHistoryRequest {
                    collection: "accounts".into(),
                    id: account.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        let err = history(&app)
            .get_record_at(authed(
                token,
                GetRecordAtRequest {
                    collection: "accounts".into(),
                    id: account.id.clone(),
                    time: Some(prost_types::Timestamp {
                        seconds: 4_000_000_000,
                        nanos: 0,
                    }),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
    }
    // An integration token with the purge scope erases its own records
    // only, and never learns of, nor takes, other apps' records that
    // belong to them.
    let app_purger = crm::auth::mint_scoped(
        SECRET.as_bytes(),
        &mine,
        "svc",
        Some("billing"),
        Some("crm:purge"),
        3600,
        None,
        None,
    )
    .unwrap();
    let theirs = app.account(&integration, "Billing account").await;
    app.contact(
        &t,
        Contact {
            first_name: "Person-made".into(),
            account_id: theirs.id.clone(),
            ..Default::default()
        },
    )
    .await;
    for cascade in [false, true] {
        let err = erasure(&app)
            .purge_record(authed(
                &app_purger,
                PurgeRecordRequest {
                    collection: "accounts".into(),
                    id: theirs.id.clone(),
                    cascade,
                },
            ))
            .await
            .unwrap_err();
        assert_status(&err, Code::FailedPrecondition, "HAS_CHILDREN");
        assert!(!err.message().contains("live"), "{err:?}");
    }
    // Another tenant's purger, and this tenant's app: not theirs to see.
    for purger in [&other_purger, &app_purger] {
        let err = erasure(&app)
            .purge_record(authed(
                purger,
                PurgeRecordRequest {
                    collection: "accounts".into(),
                    id: account.id.clone(),
                    cascade: true,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
    }
    // The record and its history are intact.
    assert!(
        !entries(&app, &t, "accounts", &account.id, &[])
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn erasure_needs_the_purge_scope() {
    let app = spawn_app().await;
    let tenant = tenant();
    let t = app.token(&tenant, "ada");
    let account = app.account(&t, "Acme").await;
    let scoped_without = app.scoped_token(&tenant, "ada", "crm:read crm:write CRM:PURGE");
    for token in [&t, &scoped_without] {
        let err = erasure(&app)
            .purge_record(authed(
                token,
                PurgeRecordRequest {
                    collection: "accounts".into(),
                    id: account.id.clone(),
                    cascade: false,
                },
            ))
            .await
            .unwrap_err();
        assert_status(&err, Code::PermissionDenied, "MISSING_SCOPE");
        let info = tonic_types::StatusExt::get_details_error_info(&err).unwrap();
        assert_eq!(info.metadata["required_scope"], "crm:purge");
    }
    // Before validation too: a bad id without the scope is still 403.
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts/nope:purge",
            Some(&t),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, _) = app
        .rest(
            "GET",
            &format!("/api/v1/crm/accounts/{}", account.id),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn erasure_leaves_no_copy_of_a_value_anywhere() {
    let app = spawn_app().await;
    let tenant = tenant();
    let t = app.token(&tenant, "ada");
    let dpo = purge_token(&app, &tenant);
    let marker = format!("zq{}", ulid::Ulid::generate().to_string().to_lowercase());
    let account = app.account(&t, "Acme").await;
    // The subject: created idempotently (its response is stored), updated,
    // referenced from a deal's lists and its primary contact, the subject
    // of an activity, another contact reporting to it.
    let (status, contact, _) = app
        .rest(
            "POST",
            "/api/v1/crm/contacts?request_id=0b7e7d5e-8a51-4a43-b3a0-3c2b0f6a8d11",
            Some(&t),
            Some(json!({
                "first_name": "Jo", "last_name": format!("Doe {marker}"),
                "email": format!("{marker}@example.com"), "account_id": account.id,
                "custom_fields": {"note": marker}
            })),
        )
        .await;
    assert_eq!(status, 200, "{contact}");
    let cid = contact["id"].as_str().unwrap().to_owned();
    let (status, body, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/contacts/{cid}"),
            Some(&t),
            Some(json!({"job_title": format!("Head of {marker}")})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let colleague = app
        .contact(
            &t,
            Contact {
                first_name: "Al".into(),
                last_name: "Lee".into(),
                account_id: account.id.clone(),
                reports_to_contact_id: cid.clone(),
                ..Default::default()
            },
        )
        .await;
    let deal = app
        .deal(
            &t,
            Deal {
                account_id: account.id.clone(),
                name: "Big".into(),
                primary_contact_id: cid.clone(),
                contact_ids: vec![cid.clone(), colleague.id.clone()],
                ..Default::default()
            },
        )
        .await;
    // A deal that named the contact once and no longer does.
    let former = app
        .deal(
            &t,
            Deal {
                account_id: account.id.clone(),
                name: "Small".into(),
                primary_contact_id: cid.clone(),
                ..Default::default()
            },
        )
        .await;
    app.deals()
        .update_deal(authed(
            &t,
            UpdateDealRequest {
                deal: Some(Deal {
                    id: former.id.clone(),
                    primary_contact_id: colleague.id.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["primary_contact_id"]),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let activity = app
        .activity(
            &t,
            Activity {
                contact_id: cid.clone(),
                r#type: "call".into(),
                subject: format!("Call with {marker}"),
                occurred_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            },
        )
        .await;
    // A meeting on the account (not the contact's child) listing the
    // contact among its participants, with their name.
    let (status, meeting, _) = app
        .rest(
            "POST",
            "/api/v1/crm/activities",
            Some(&t),
            Some(json!({
                "type": "meeting", "subject": "Kick-off", "account_id": account.id,
                "occurred_at": "2026-11-02T10:00:00Z",
                "participants": [
                    {"contact_id": cid, "name": format!("Jo {marker}")},
                    {"user_id": "u-7", "name": "Sam"}
                ]
            })),
        )
        .await;
    assert_eq!(status, 200, "{meeting}");
    let meeting_id = meeting["id"].as_str().unwrap().to_owned();
    sequenced(&app).await;
    assert!(!survivors(&app, &tenant, &marker).await.is_empty());

    // A live child (the activity): refused without cascade, nothing changes.
    let purge = |cascade: bool| {
        let (mut c, dpo, cid) = (erasure(&app), dpo.clone(), cid.clone());
        async move {
            c.purge_record(authed(
                &dpo,
                PurgeRecordRequest {
                    collection: "contacts".into(),
                    id: cid,
                    cascade,
                },
            ))
            .await
        }
    };
    let err = purge(false).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "HAS_CHILDREN");
    let (status, _, _) = app
        .rest(
            "GET",
            &format!("/api/v1/crm/contacts/{cid}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200);

    let erased = purge(true).await.unwrap().into_inner().erased;
    assert_eq!(erased["records"], 2, "{erased:?}");
    // A change each: the contact's create, update and stamp, the activity's create.
    assert_eq!(erased["history"], 4, "{erased:?}");
    assert_eq!(erased["idempotent_responses"], 1, "{erased:?}");
    // The deal, the colleague and the meeting.
    assert_eq!(erased["references"], 3, "{erased:?}");
    sequenced(&app).await;

    assert_eq!(
        survivors(&app, &tenant, &marker).await,
        Vec::<String>::new()
    );
    for (collection, id) in [("contacts", &cid), ("activities", &activity.id)] {
        let (status, _, _) = app
            .rest(
                "GET",
                &format!("/api/v1/crm/{collection}/{id}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(status, 404, "{collection}");
    }
    // References are gone from the records that held them.
    let d = app
        .deals()
        .get_deal(authed(
            &t,
            GetDealRequest {
                id: deal.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.contact_ids, vec![colleague.id.clone()]);
    assert!(d.primary_contact_id.is_empty());
    assert_eq!(d.version, deal.version + 1);
    let c = app
        .contacts()
        .get_contact(authed(
            &t,
            GetContactRequest {
                id: colleague.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(c.reports_to_contact_id.is_empty());
    let (_, m, _) = app
        .rest(
            "GET",
            &format!("/api/v1/crm/activities/{meeting_id}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(
        m["participants"],
        json!([{"user_id": "u-7", "name": "Sam"}])
    );
    // ...and from their history: no entry names the erased id.
    for d in [&deal.id, &former.id] {
        for e in entries(&app, &t, "deals", d, &[]).await {
            assert!(!format!("{e:?}").contains(&cid), "{e:?}");
        }
    }
    assert_eq!(
        survivors(&app, &tenant, &cid).await,
        vec![
            // Kept by design: the erased record's events (record_id) and
            // the audit row name its id, which says nothing of the person.
            format!(
                "{tenant}: public.change_events_{} holds {cid:?} (4 rows)",
                week()
            ),
            format!("{tenant}: public.purge_audit holds {cid:?} (1 rows)"),
        ]
    );
    // The feed keeps its events (gapless), without the record, plus a
    // `purged` event without values.
    let (status, feed, _) = app
        .rest("GET", "/api/v1/crm/changes?page_size=1000", Some(&t), None)
        .await;
    assert_eq!(status, 200, "{feed}");
    let events = feed["changes"].as_array().unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence"], json!((i + 1).to_string()), "{feed}");
    }
    let of_contact: Vec<&Json> = events
        .iter()
        .filter(|e| e["record_id"] == json!(cid))
        .collect();
    // Created, updated, stamped by the activity, purged.
    assert_eq!(of_contact.len(), 4, "{of_contact:?}");
    assert!(
        of_contact.iter().all(|e| e["record"].is_null()),
        "{of_contact:?}"
    );
    assert_eq!(of_contact.last().unwrap()["operation"], "purged");
    assert!(!feed.to_string().contains(&marker));
    // The audit row: who, which record, the counts; no value.
    let mut conn = app.owner_conn().await;
    let row = sqlx::query(
        "SELECT purged_by, resource_type, cascade, erased::text AS erased FROM purge_audit WHERE record_id = $1",
    )
    .bind(&cid)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("purged_by"), "dpo");
    assert_eq!(row.get::<String, _>("resource_type"), "contact");
    assert!(row.get::<bool, _>("cascade"));
    assert!(row.get::<String, _>("erased").contains("\"records\": 2"));
    // A retry of the create that returned it does not write it again.
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/contacts?request_id=0b7e7d5e-8a51-4a43-b3a0-3c2b0f6a8d11",
            Some(&t),
            Some(json!({
                "first_name": "Jo", "last_name": format!("Doe {marker}"),
                "email": format!("{marker}@example.com"), "account_id": account.id,
                "custom_fields": {"note": marker}
            })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["details"][0]["reason"], "RECORD_ERASED", "{body}");
    assert_eq!(
        survivors(&app, &tenant, &marker).await,
        Vec::<String>::new()
    );
    // Purged is purged: a second call is NOT_FOUND.
    assert_eq!(purge(true).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn erasing_a_line_item_recomputes_its_quote_and_cleans_its_copies() {
    let app = spawn_app().await;
    let tenant = tenant();
    let t = app.token(&tenant, "ada");
    let dpo = purge_token(&app, &tenant);
    let marker = format!("zq{}", ulid::Ulid::generate().to_string().to_lowercase());
    let account = app.account(&t, "Acme").await;
    let quote = app
        .quote(
            &t,
            Quote {
                account_id: account.id.clone(),
                ..Default::default()
            },
        )
        .await;
    let keep = app
        .line_item(
            &t,
            LineItem {
                quote_id: quote.id.clone(),
                description: "Kept".into(),
                quantity: Some(1.0),
                unit_price: Some(3.0),
                ..Default::default()
            },
        )
        .await;
    let gone = app
        .line_item(
            &t,
            LineItem {
                quote_id: quote.id.clone(),
                description: format!("Secret {marker}"),
                quantity: Some(2.0),
                unit_price: Some(5.0),
                ..Default::default()
            },
        )
        .await;
    sequenced(&app).await;
    assert!(
        survivors(&app, &tenant, &marker)
            .await
            .iter()
            .any(|s| s.contains("public.record_history"))
    );

    // Erasing the quote would take its live lines: refused without cascade.
    let err = erasure(&app)
        .purge_record(authed(
            &dpo,
            PurgeRecordRequest {
                collection: "quotes".into(),
                id: quote.id.clone(),
                cascade: false,
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "HAS_CHILDREN");

    let (status, body, _) = app
        .rest(
            "POST",
            &format!("/api/v1/crm/line-items/{}:purge", gone.id),
            Some(&dpo),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["erased"]["records"], json!("1"));
    sequenced(&app).await;
    let q = app
        .quotes()
        .get_quote(authed(
            &t,
            GetQuoteRequest {
                id: quote.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.line_items.len(), 1);
    assert_eq!(q.line_items[0].id, keep.id);
    assert_eq!(q.total, Some(3.0));
    assert_eq!(
        survivors(&app, &tenant, &marker).await,
        Vec::<String>::new()
    );

    // Cascade: the quote with its remaining line.
    let erased = erasure(&app)
        .purge_record(authed(
            &dpo,
            PurgeRecordRequest {
                collection: "quotes".into(),
                id: quote.id.clone(),
                cascade: true,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .erased;
    assert_eq!(erased["records"], 2, "{erased:?}");
    let (status, _, _) = app
        .rest(
            "GET",
            &format!("/api/v1/crm/line-items/{}", keep.id),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 404);
    // Its line's erasure changed the quote (a rollup) before the quote went:
    // the quote's purged event still follows its last version.
    sequenced(&app).await;
    let (_, feed, _) = app
        .rest("GET", "/api/v1/crm/changes?page_size=1000", Some(&t), None)
        .await;
    let versions: Vec<(String, i64)> = feed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["record_id"] == json!(quote.id))
        .map(|e| {
            (
                e["operation"].as_str().unwrap().to_owned(),
                e["record_version"].as_i64().unwrap(),
            )
        })
        .collect();
    let (last_op, last_version) = versions.last().unwrap().clone();
    assert_eq!(last_op, "purged", "{versions:?}");
    for (op, v) in &versions[..versions.len() - 1] {
        assert!(
            *v < last_version,
            "{op} v{v} after purged v{last_version}: {versions:?}"
        );
    }
}

#[tokio::test]
async fn concurrent_writes_never_resurrect_an_erased_record() {
    let app = spawn_app().await;
    let tenant = tenant();
    let t = app.token(&tenant, "ada");
    let dpo = purge_token(&app, &tenant);
    for round in 0..3 {
        let account = app.account(&t, &format!("Acme {round}")).await;
        let mut writers = Vec::new();
        for i in 0..8 {
            let (mut c, t, id) = (app.accounts(), t.clone(), account.id.clone());
            writers.push(tokio::spawn(async move {
                c.update_account(authed(
                    &t,
                    UpdateAccountRequest {
                        account: Some(Account {
                            id,
                            description: format!("write {i}"),
                            ..Default::default()
                        }),
                        update_mask: mask(&["description"]),
                        ..Default::default()
                    },
                ))
                .await
            }));
        }
        let purged = erasure(&app)
            .purge_record(authed(
                &dpo,
                PurgeRecordRequest {
                    collection: "accounts".into(),
                    id: account.id.clone(),
                    cascade: false,
                },
            ))
            .await;
        assert!(purged.is_ok(), "{purged:?}");
        for w in writers {
            match w.await.unwrap() {
                Ok(_) => {}
                Err(e) => assert_eq!(e.code(), Code::NotFound, "{e:?}"),
            }
        }
        let mut conn = app.owner_conn().await;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE id = $1")
            .bind(&account.id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows, 0, "round {round}: the account came back");
        let history: i64 =
            sqlx::query_scalar("SELECT count(*) FROM record_history WHERE record_id = $1")
                .bind(&account.id)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(history, 0, "round {round}: history survived");
    }
}

#[tokio::test]
async fn writes_naming_a_record_being_erased_never_keep_a_reference_to_it() {
    let app = spawn_app().await;
    let tenant = tenant();
    let t = app.token(&tenant, "ada");
    let dpo = purge_token(&app, &tenant);
    let account = app.account(&t, "Acme").await;
    for round in 0..3 {
        let contact = app
            .contact(
                &t,
                Contact {
                    first_name: format!("Jo {round}"),
                    ..Default::default()
                },
            )
            .await;
        let mut writers = Vec::new();
        for i in 0..8 {
            let (mut c, t, account, cid) = (
                app.deals(),
                t.clone(),
                account.id.clone(),
                contact.id.clone(),
            );
            writers.push(tokio::spawn(async move {
                c.create_deal(authed(
                    &t,
                    CreateDealRequest {
                        deal: Some(Deal {
                            account_id: account,
                            name: format!("Deal {i}"),
                            contact_ids: vec![cid.clone()],
                            primary_contact_id: if i % 2 == 0 { cid } else { String::new() },
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                ))
                .await
            }));
        }
        erasure(&app)
            .purge_record(authed(
                &dpo,
                PurgeRecordRequest {
                    collection: "contacts".into(),
                    id: contact.id.clone(),
                    cascade: false,
                },
            ))
            .await
            .unwrap();
        for w in writers {
            if let Err(e) = w.await.unwrap() {
                // The contact was gone when the write looked for it.
                assert!(
                    matches!(e.code(), Code::InvalidArgument | Code::Aborted),
                    "{e:?}"
                );
            }
        }
        let mut conn = app.owner_conn().await;
        let dangling: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM deals WHERE $1 = ANY (contact_ids) OR primary_contact_id = $1",
        )
        .bind(&contact.id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            dangling, 0,
            "round {round}: a deal still names the erased contact"
        );
    }
}
