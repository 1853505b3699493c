//! The change feed (SPEC §11): one event per committed change (side effects
//! included, nothing for rejected or no-op writes), gapless per-tenant
//! sequences under concurrency in both sequencing modes, isolation, the
//! watch's replay→follow switch-over, heartbeats, expired positions, REST.

use std::collections::HashSet;
use std::time::Duration;

use crm::proto::change_service_client::ChangeServiceClient;
use crm::proto::*;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::*;

fn changes(app: &TestApp) -> ChangeServiceClient<tonic::transport::Channel> {
    ChangeServiceClient::new(app.channel.clone())
}

/// Every event of the caller after `after`, paging through ListChanges until
/// the events up to `until` are all there (or 10 s pass).
async fn all_changes(app: &TestApp, token: &str, after: i64, until: i64) -> Vec<ChangeEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut out: Vec<ChangeEvent> = Vec::new();
    let mut position = after;
    loop {
        let page = changes(app)
            .list_changes(authed(
                token,
                ListChangesRequest {
                    after_sequence: position,
                    page_size: 1000,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        if let Some(last) = page.changes.last() {
            position = last.sequence;
        }
        let done = page.changes.is_empty();
        out.extend(page.changes);
        if position >= until || (done && tokio::time::Instant::now() > deadline) {
            return out;
        }
        if done {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The latest sequence of the caller's tenant.
async fn last_sequence(app: &TestApp, token: &str) -> i64 {
    changes(app)
        .list_changes(authed(
            token,
            ListChangesRequest {
                after_sequence: i64::MAX - 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .last_sequence
}

/// Waits until the tenant's feed has `n` events; returns them.
async fn feed_of(app: &TestApp, token: &str, n: i64) -> Vec<ChangeEvent> {
    let events = all_changes(app, token, 0, n).await;
    assert_eq!(events.len() as i64, n, "{:#?}", summary(&events));
    events
}

fn summary(events: &[ChangeEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {} {} v{} {} {:?}",
                e.sequence,
                e.resource_type,
                e.operation,
                e.record_version,
                e.record_id,
                e.changed_fields
            )
        })
        .collect()
}

fn assert_gapless(events: &[ChangeEvent]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.sequence, i as i64 + 1, "{:#?}", summary(events));
    }
}

#[tokio::test]
async fn every_change_and_side_effect_is_one_event() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "user-1");
    let acc = app.account(&t, "Acme").await; // 1 created
    app.accounts()
        .update_account(authed(
            &t,
            UpdateAccountRequest {
                account: Some(Account {
                    id: acc.id.clone(),
                    legal_name: "Acme Ltd".into(),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: "5f0c8b4e-1d2a-4c3b-9e8f-7a6b5c4d3e2f".into(),
            },
        ))
        .await
        .unwrap(); // 2 updated
    let c1 = app
        .contact(
            &t,
            Contact {
                account_id: acc.id.clone(),
                first_name: "Ada".into(),
                is_primary: Some(true),
                ..Default::default()
            },
        )
        .await; // 3 created
    let c2 = app
        .contact(
            &t,
            Contact {
                account_id: acc.id.clone(),
                first_name: "Bob".into(),
                is_primary: Some(true),
                ..Default::default()
            },
        )
        .await; // 4 c1 loses primary (side effect), 5 c2 created
    let deal = app
        .deal(
            &t,
            Deal {
                account_id: acc.id.clone(),
                name: "Big".into(),
                ..Default::default()
            },
        )
        .await; // 6 created
    let quote = app
        .quote(
            &t,
            Quote {
                account_id: acc.id.clone(),
                deal_id: deal.id.clone(),
                ..Default::default()
            },
        )
        .await; // 7 quote created, 8 deal.quote_ids
    let line = app
        .line_item(
            &t,
            LineItem {
                quote_id: quote.id.clone(),
                quantity: Some(2.0),
                unit_price: Some(5.0),
                ..Default::default()
            },
        )
        .await; // 9 line created, 10 quote rollup
    app.activity(
        &t,
        Activity {
            account_id: acc.id.clone(),
            contact_id: c2.id.clone(),
            r#type: "call".into(),
            ..Default::default()
        },
    )
    .await; // 11 activity created, 12 account last_activity_at, 13 contact last_interaction_at
    app.accounts()
        .delete_account(authed(
            &t,
            DeleteAccountRequest {
                id: acc.id.clone(),
                version: 0,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap(); // 14 deleted
    app.accounts()
        .undelete_account(authed(
            &t,
            UndeleteAccountRequest {
                id: acc.id.clone(),
                version: 0,
            },
        ))
        .await
        .unwrap(); // 15 undeleted

    let events = feed_of(&app, &t, 15).await;
    assert_gapless(&events);
    let got: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.resource_type.as_str(),
                e.operation.as_str(),
                e.record_id.as_str(),
            )
        })
        .collect();
    let want = vec![
        ("account", "created", acc.id.as_str()),
        ("account", "updated", acc.id.as_str()),
        ("contact", "created", c1.id.as_str()),
        ("contact", "updated", c1.id.as_str()),
        ("contact", "created", c2.id.as_str()),
        ("deal", "created", deal.id.as_str()),
        ("quote", "created", quote.id.as_str()),
        ("deal", "updated", deal.id.as_str()),
        ("line_item", "created", line.id.as_str()),
        ("quote", "updated", quote.id.as_str()),
        ("activity", "created", ""),
        ("account", "updated", acc.id.as_str()),
        ("contact", "updated", c2.id.as_str()),
        ("account", "deleted", acc.id.as_str()),
        ("account", "undeleted", acc.id.as_str()),
    ];
    // Within one transaction the side effects' order is the trigger's; an
    // activity's two rollups may come in either order.
    let norm = |v: &[(&str, &str, &str)]| {
        let mut v: Vec<(String, String, String)> = v
            .iter()
            .map(|(a, b, c)| {
                let c = if *a == "activity" {
                    String::new()
                } else {
                    c.to_string()
                };
                (a.to_string(), b.to_string(), c)
            })
            .collect();
        v[11..13].sort();
        v
    };
    assert_eq!(norm(&got), norm(&want), "{:#?}", summary(&events));

    let e = &events[1];
    assert_eq!(
        e.changed_fields,
        vec!["legal_name", "updated_at", "version"]
    );
    assert_eq!(e.record_version, 2);
    assert_eq!(e.request_id, "5f0c8b4e-1d2a-4c3b-9e8f-7a6b5c4d3e2f");
    assert_eq!(e.actor, "user-1");
    assert!(e.id.starts_with("evt_") && e.id.len() == 30, "{}", e.id);
    // The record is exactly what Get returns, as JSON.
    let record = e.record.as_ref().unwrap();
    let s = |k: &str| match record.fields.get(k).and_then(|v| v.kind.as_ref()) {
        Some(prost_types::value::Kind::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    };
    assert_eq!(s("legal_name"), "Acme Ltd");
    assert_eq!(s("id"), acc.id);
    assert!(s("created_at").ends_with('Z'), "{}", s("created_at"));
    let created = &events[0];
    assert!(created.changed_fields.contains(&"name".to_owned()));
    assert!(!created.changed_fields.contains(&"legal_name".to_owned()));
    // A write and its side effects share a transaction id; others do not.
    assert_eq!(events[3].transaction_id, events[4].transaction_id);
    assert_eq!(events[8].transaction_id, events[9].transaction_id);
    assert_ne!(events[8].transaction_id, events[7].transaction_id);
    assert_eq!(
        events[9].changed_fields,
        vec!["line_items", "total", "updated_at", "value", "version"]
    );
    // Ids are stable: read again, the same.
    let again = feed_of(&app, &t, 15).await;
    assert_eq!(
        events.iter().map(|e| &e.id).collect::<Vec<_>>(),
        again.iter().map(|e| &e.id).collect::<Vec<_>>()
    );
    assert_eq!(
        events.iter().map(|e| &e.id).collect::<HashSet<_>>().len(),
        15
    );
}

#[tokio::test]
async fn rejected_and_unchanged_writes_leave_no_event() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    let acc = app.account(&t, "Acme").await;
    // Invalid, stale, missing, and a write that changes nothing.
    assert!(
        app.accounts()
            .create_account(authed(
                &t,
                CreateAccountRequest {
                    account: Some(Account {
                        website: "nope".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .is_err()
    );
    for version in [7, 0] {
        let r = app
            .accounts()
            .update_account(authed(
                &t,
                UpdateAccountRequest {
                    account: Some(Account {
                        id: acc.id.clone(),
                        name: "Acme".into(),
                        version,
                        ..Default::default()
                    }),
                    update_mask: mask(&["name"]),
                    request_id: String::new(),
                },
            ))
            .await;
        if version == 7 {
            assert_status(&r.unwrap_err(), Code::Aborted, "VERSION_MISMATCH");
        } else {
            assert_eq!(r.unwrap().into_inner().version, 1, "unchanged");
        }
    }
    // A line item refused by the quote's total rule leaves neither event.
    let quote = app
        .quote(
            &t,
            Quote {
                account_id: acc.id.clone(),
                ..Default::default()
            },
        )
        .await;
    assert!(
        app.line_items()
            .create_line_item(authed(
                &t,
                CreateLineItemRequest {
                    line_item: Some(LineItem {
                        quote_id: quote.id.clone(),
                        quantity: Some(1e14),
                        unit_price: Some(1e14),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = all_changes(&app, &t, 0, 2).await;
    assert_eq!(summary(&events).len(), 2, "{:#?}", summary(&events));
    assert_eq!(last_sequence(&app, &t).await, 2);
}

/// 16 writers × 200 writes: exactly N events, 1..N, none twice.
async fn gapless_under_concurrency(app: TestApp) {
    let t = app.token(&tenant(), "u");
    let base = app.account(&t, "Base").await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (t, channel, base) = (t.clone(), app.channel.clone(), base.id.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = crm::proto::account_service_client::AccountServiceClient::new(channel);
            for i in 0..200 {
                if i % 4 == 3 {
                    c.update_account(authed(
                        &t,
                        UpdateAccountRequest {
                            account: Some(Account {
                                id: base.clone(),
                                description: format!("{w}-{i}"),
                                ..Default::default()
                            }),
                            update_mask: mask(&["description"]),
                            request_id: String::new(),
                        },
                    ))
                    .await
                    .unwrap();
                } else {
                    c.create_account(authed(
                        &t,
                        CreateAccountRequest {
                            account: Some(Account {
                                name: format!("w{w}-{i}"),
                                ..Default::default()
                            }),
                            request_id: String::new(),
                        },
                    ))
                    .await
                    .unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let n = 1 + 16 * 200;
    let events = feed_of(&app, &t, n).await;
    assert_gapless(&events);
    assert_eq!(
        events.iter().map(|e| &e.id).collect::<HashSet<_>>().len() as i64,
        n
    );
    // The base account's versions appear in order, each once.
    let versions: Vec<i32> = events
        .iter()
        .filter(|e| e.record_id == base.id)
        .map(|e| e.record_version)
        .collect();
    assert_eq!(versions, (1..=801).collect::<Vec<_>>());
    assert_eq!(last_sequence(&app, &t).await, n);
}

#[tokio::test]
async fn sequences_are_gapless_under_concurrency() {
    gapless_under_concurrency(spawn_app().await).await;
}

#[tokio::test]
async fn sequences_are_gapless_under_concurrency_with_the_counter() {
    gapless_under_concurrency(
        spawn_app_with(|c| c.changes_sequencing = crm::changes::Sequencing::Counter).await,
    )
    .await;
}

#[tokio::test]
async fn tenants_and_apps_see_only_their_own_events() {
    let app = spawn_app().await;
    let (ta, tb) = (tenant(), tenant());
    let a = app.token(&ta, "u");
    let b = app.token(&tb, "u");
    let app1 = app.app_token(&ta, "u", "app-1");
    let app2 = app.app_token(&ta, "u", "app-2");
    let acc = app.account(&a, "A").await;
    app.account(&app1, "By app 1").await;
    app.account(&app2, "By app 2").await;
    app.account(&b, "B").await;
    feed_of(&app, &a, 3).await;
    let of_b = feed_of(&app, &b, 1).await;
    assert_eq!(of_b[0].sequence, 1, "each tenant counts from 1");
    let only1 = all_changes(&app, &app1, 0, 2).await;
    assert_eq!(only1.len(), 1, "{:#?}", summary(&only1));
    assert_eq!(only1[0].app_id.as_deref(), Some("app-1"));
    assert_eq!(only1[0].sequence, 2);
    // An integration token's write and its side effect (the account's
    // last_activity_at) are its app's events.
    let own = all_changes(&app, &app1, 0, 2).await[0].record_id.clone();
    app.activity(
        &app1,
        Activity {
            account_id: own.clone(),
            r#type: "note".into(),
            ..Default::default()
        },
    )
    .await;
    let all = feed_of(&app, &a, 5).await;
    assert!(
        all.iter()
            .any(|e| e.record_id == own && e.operation == "updated")
    );
    assert!(
        !all.iter()
            .any(|e| e.record_id == acc.id && e.operation == "updated")
    );
    let only1 = all_changes(&app, &app1, 0, 5).await;
    let mut kinds: Vec<(&str, &str)> = only1
        .iter()
        .map(|e| (e.resource_type.as_str(), e.operation.as_str()))
        .collect();
    kinds[1..].sort();
    assert_eq!(
        kinds,
        vec![
            ("account", "created"),
            ("account", "updated"),
            ("activity", "created")
        ]
    );
    // Watching shows the same.
    let mut stream = changes(&app)
        .watch_changes(authed(&app2, WatchChangesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    let Some(watch_changes_response::Kind::Change(c)) = first.kind else {
        panic!("{first:?}")
    };
    assert_eq!(c.app_id.as_deref(), Some("app-2"));
}

#[tokio::test]
async fn a_watch_replays_then_follows_without_gap_or_duplicate() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    for i in 0..50 {
        app.account(&t, &format!("before {i}")).await;
    }
    // Writers keep going while the watch starts and switches from replay to
    // following.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (t, channel) = (t.clone(), app.channel.clone());
            tokio::spawn(async move {
                let mut c = crm::proto::account_service_client::AccountServiceClient::new(channel);
                for i in 0..50 {
                    c.create_account(authed(
                        &t,
                        CreateAccountRequest {
                            account: Some(Account {
                                name: format!("during {w}-{i}"),
                                ..Default::default()
                            }),
                            request_id: String::new(),
                        },
                    ))
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    let mut stream = changes(&app)
        .watch_changes(authed(
            &t,
            WatchChangesRequest {
                after_sequence: 10,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let mut latencies = Vec::new();
    while seen.len() < 240 {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        if let Some(watch_changes_response::Kind::Change(c)) = msg.kind {
            let at = c.committed_at.unwrap();
            let at = chrono::DateTime::from_timestamp(at.seconds, at.nanos as u32).unwrap();
            latencies.push((chrono::Utc::now() - at).num_milliseconds());
            seen.push(c.sequence);
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(seen, (11..=250).collect::<Vec<_>>());
    // Then it follows live writes, promptly.
    let started = std::time::Instant::now();
    app.account(&t, "after").await;
    let msg = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(watch_changes_response::Kind::Change(c)) = msg.kind else {
        panic!("{msg:?}")
    };
    assert_eq!(c.sequence, 251);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_idle_watch_sends_heartbeats_with_its_position() {
    let app = spawn_app_with(|c| c.changes_heartbeat_secs = 1).await;
    let t = app.token(&tenant(), "u");
    app.account(&t, "A").await;
    app.account(&t, "B").await;
    let mut stream = changes(&app)
        .watch_changes(authed(
            &t,
            WatchChangesRequest {
                after_sequence: 0,
                resource_types: vec!["deal".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let msg = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a heartbeat within seconds")
        .unwrap()
        .unwrap();
    let Some(watch_changes_response::Kind::Heartbeat(h)) = msg.kind else {
        panic!("{msg:?}")
    };
    // Filtered out, but passed: the position is the tenant's latest.
    assert_eq!(h.sequence, 2);
    assert!(h.time.is_some());
}

#[tokio::test]
async fn an_expired_position_is_an_error_never_a_skip() {
    let app = spawn_app().await;
    let tenant_id = tenant();
    let t = app.token(&tenant_id, "u");
    for i in 0..8 {
        app.account(&t, &format!("A{i}")).await;
    }
    feed_of(&app, &t, 8).await;
    // Age the first five events into a partition of long ago, and let
    // retention drop it.
    let mut owner = app.owner_conn().await;
    sqlx::query(
        "CREATE TABLE change_events_20000103 PARTITION OF change_events \
         FOR VALUES FROM ('2000-01-03 00:00:00+00') TO ('2000-01-10 00:00:00+00')",
    )
    .execute(&mut owner)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE change_events SET committed_at = '2000-01-05 00:00:00+00' \
         WHERE tenant_id = $1 AND sequence <= 5",
    )
    .bind(&tenant_id)
    .execute(&mut owner)
    .await
    .unwrap();
    let mut bg = crm::changes::background_pool(&format!("{}/{}", pg_base(), app.db_name), 1)
        .await
        .unwrap()
        .acquire()
        .await
        .unwrap()
        .detach();
    let dropped = crm::changes::maintenance::prune(&mut bg, Duration::from_secs(30 * 86_400))
        .await
        .unwrap();
    assert_eq!(dropped, 1);
    for after in [1, 3] {
        let e = changes(&app)
            .list_changes(authed(
                &t,
                ListChangesRequest {
                    after_sequence: after,
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_status(&e, Code::FailedPrecondition, "CHANGES_EXPIRED");
        let info = tonic_types::StatusExt::get_details_error_info(&e).unwrap();
        assert_eq!(info.metadata["oldest_sequence"], "6");
        let e = changes(&app)
            .watch_changes(authed(
                &t,
                WatchChangesRequest {
                    after_sequence: after,
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_status(&e, Code::FailedPrecondition, "CHANGES_EXPIRED");
    }
    // At the edge, and from the oldest: fine.
    let at_edge = all_changes(&app, &t, 5, 8).await;
    assert_eq!(
        at_edge.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
    let from_oldest = all_changes(&app, &t, 0, 8).await;
    assert_eq!(from_oldest.first().unwrap().sequence, 6);
    let (status, body, _) = app
        .rest(
            "GET",
            "/api/v1/crm/changes?after_sequence=2",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["details"][0]["reason"], "CHANGES_EXPIRED");
}

#[tokio::test]
async fn rest_lists_and_streams_changes() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    let acc = app.account(&t, "A").await;
    app.deal(
        &t,
        Deal {
            account_id: acc.id.clone(),
            name: "D".into(),
            ..Default::default()
        },
    )
    .await;
    feed_of(&app, &t, 2).await;
    let (status, body, _) = app
        .rest(
            "GET",
            "/api/v1/crm/changes?after_sequence=0&resource_types=deal",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["last_sequence"], "2");
    assert_eq!(body["changes"].as_array().unwrap().len(), 1);
    let deal = &body["changes"][0];
    assert_eq!(deal["sequence"], "2");
    assert_eq!(deal["record"]["account_id"], acc.id.as_str());
    assert_eq!(deal["record"]["name"], "D");
    let (status, body, _) = app
        .rest(
            "GET",
            "/api/v1/crm/changes?resource_types=deals",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["details"][1]["field_violations"][0]["field"],
        "resource_types[0]"
    );

    // The watch, as newline-delimited JSON, line by line as events commit.
    let mut resp = app
        .http
        .get(format!(
            "http://{}/api/v1/crm/changes:watch?after_sequence=1",
            app.http_addr
        ))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut buf = String::new();
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let mut wrote = false;
    while lines.len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
            .await
            .expect("a line within seconds")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(i) = buf.find('\n') {
            lines.push(serde_json::from_str(&buf[..i]).unwrap());
            buf.drain(..=i);
        }
        if lines.len() == 1 && !wrote {
            app.account(&t, "Live").await;
            wrote = true;
        }
    }
    assert_eq!(lines[0]["result"]["change"]["sequence"], "2");
    assert_eq!(lines[1]["result"]["change"]["sequence"], "3");
    assert_eq!(lines[1]["result"]["change"]["record"]["name"], "Live");
    // An expired or bad position is an HTTP error, not a stream.
    let (status, _, _) = app
        .rest(
            "GET",
            "/api/v1/crm/changes:watch?after_sequence=-1",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_watch_that_is_not_read_is_held_back_by_flow_control() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    // A client with HTTP/2's smallest usual windows (64 KiB).
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut stream = ChangeServiceClient::new(channel)
        .watch_changes(authed(&t, WatchChangesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    // 5000 events while the client reads nothing.
    for b in 0..5 {
        app.accounts()
            .batch_create_accounts(authed(
                &t,
                BatchCreateAccountsRequest {
                    requests: (0..1000)
                        .map(|i| CreateAccountRequest {
                            account: Some(Account {
                                name: format!("unread {b}-{i}"),
                                description: "x".repeat(1500),
                                ..Default::default()
                            }),
                            request_id: String::new(),
                        })
                        .collect(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled = app.metric("crm_changes_watch_messages_total").await;
    // What the client's window (64 KiB) and the server transport's send
    // buffer (400 KiB) hold, plus the watch's queue: a few hundred events
    // of about 2 KB, far from all 5000.
    assert!(
        stalled > 0.0 && stalled < 600.0,
        "{stalled} messages left the server"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        app.metric("crm_changes_watch_messages_total").await,
        stalled,
        "the server waits"
    );
    // Reading resumes the stream: everything arrives, in order, once.
    let mut seen = Vec::new();
    while seen.len() < 5000 {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        if let Some(watch_changes_response::Kind::Change(c)) = msg.kind {
            seen.push(c.sequence);
        }
    }
    assert_eq!(seen, (1..=5000).collect::<Vec<_>>());
}
