//! Batch methods and upserts by external id (SPEC §13): atomic batches that
//! report every violation with its item, limits, order, versions,
//! duplicates, concurrent upserts, app namespaces, rollups once per batch,
//! idempotent retries, the change feed, REST, and tenant isolation.

use std::collections::HashSet;
use std::time::Duration;

use crm::proto::change_service_client::ChangeServiceClient;
use crm::proto::*;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

fn acc(name: &str, external_id: &str) -> Account {
    Account {
        name: name.into(),
        external_id: external_id.into(),
        ..Default::default()
    }
}

fn creates(accounts: Vec<Account>) -> Vec<CreateAccountRequest> {
    accounts
        .into_iter()
        .map(|a| CreateAccountRequest {
            account: Some(a),
            request_id: String::new(),
        })
        .collect()
}

fn upserts(accounts: Vec<Account>) -> Vec<UpsertAccountRequest> {
    accounts
        .into_iter()
        .map(|a| UpsertAccountRequest {
            account: Some(a),
            update_mask: None,
            request_id: String::new(),
        })
        .collect()
}

async fn batch_create(
    app: &TestApp,
    t: &str,
    accounts: Vec<Account>,
) -> Result<Vec<Account>, tonic::Status> {
    app.accounts()
        .batch_create_accounts(authed(
            t,
            BatchCreateAccountsRequest {
                requests: creates(accounts),
                request_id: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner().accounts)
}

async fn batch_upsert(
    app: &TestApp,
    t: &str,
    accounts: Vec<Account>,
) -> Result<BatchUpsertAccountsResponse, tonic::Status> {
    app.accounts()
        .batch_upsert_accounts(authed(
            t,
            BatchUpsertAccountsRequest {
                requests: upserts(accounts),
                request_id: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn count_accounts(app: &TestApp, tenant: &str) -> i64 {
    let mut c = app.owner_conn().await;
    sqlx::query_scalar("SELECT count(*) FROM accounts WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

async fn last_sequence(app: &TestApp, t: &str) -> i64 {
    // The feed is sequenced just after commit: wait for it to settle.
    let mut last = -1;
    loop {
        let now = ChangeServiceClient::new(app.channel.clone())
            .list_changes(authed(
                t,
                ListChangesRequest {
                    after_sequence: i64::MAX - 1,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .last_sequence;
        if now == last {
            return now;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

#[tokio::test]
async fn a_bad_item_writes_nothing_and_every_violation_is_listed() {
    let app = spawn_app().await;
    let tenant = tenant();
    let t = app.token(&tenant, "u1");
    let mut items: Vec<Account> = (0..50).map(|i| acc(&format!("A{i}"), "")).collect();
    items[3].website = "not a url".into();
    items[3].annual_revenue = Some(-1.0);
    items[17].name = String::new();
    items[42].parent_account_id = "acc_01J0000000000000000000000Z".into();
    let err = batch_create(&app, &t, items).await.unwrap_err();
    let mut fields = violations(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "requests[17].account.name",
            "requests[3].account.annual_revenue",
            "requests[3].account.website",
            "requests[42].account.parent_account_id",
        ]
    );
    assert_eq!(count_accounts(&app, &tenant).await, 0);

    // The same batch, fixed, is written whole, in order.
    let items: Vec<Account> = (0..50).map(|i| acc(&format!("A{i}"), "")).collect();
    let made = batch_create(&app, &t, items).await.unwrap();
    let names: Vec<&str> = made.iter().map(|a| a.name.as_str()).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("A{i}")).collect();
    assert_eq!(names, expected);
    assert!(
        made.iter()
            .all(|a| a.version == 1 && a.id.starts_with("acc_"))
    );
    assert_eq!(count_accounts(&app, &tenant).await, 50);
}

#[tokio::test]
async fn batches_hold_at_most_a_thousand_items() {
    let app = spawn_app().await;
    let tenant = tenant();
    let t = app.token(&tenant, "u1");
    let items: Vec<Account> = (0..1001).map(|i| acc(&format!("A{i}"), "")).collect();
    let err = batch_create(&app, &t, items).await.unwrap_err();
    assert_eq!(violations(&err), ["requests"]);
    assert!(err.message().contains("1001"), "{err:?}");
    let ids: Vec<String> = (0..1001)
        .map(|_| format!("acc_{}", ulid::Ulid::generate()))
        .collect();
    let err = app
        .accounts()
        .batch_get_accounts(authed(&t, BatchGetAccountsRequest { ids: ids.clone() }))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["ids"]);
    let err = app
        .accounts()
        .batch_delete_accounts(authed(
            &t,
            BatchDeleteAccountsRequest {
                ids,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["ids"]);
    // A thousand is fine, and an empty batch is an empty answer.
    let items: Vec<Account> = (0..1000)
        .map(|i| acc(&format!("A{i}"), &format!("x-{i}")))
        .collect();
    assert_eq!(batch_create(&app, &t, items).await.unwrap().len(), 1000);
    assert!(batch_create(&app, &t, vec![]).await.unwrap().is_empty());
    // Items carry no request_id of their own, and need their record.
    let err = app
        .accounts()
        .batch_create_accounts(authed(
            &t,
            BatchCreateAccountsRequest {
                requests: vec![
                    CreateAccountRequest {
                        account: Some(acc("A", "")),
                        request_id: "5f0c8b4e-1d2a-4c3b-9e8f-7a6b5c4d3e2f".into(),
                    },
                    CreateAccountRequest {
                        account: None,
                        request_id: String::new(),
                    },
                ],
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violations(&err),
        ["requests[0].request_id", "requests[1].account"]
    );
}

#[tokio::test]
async fn batch_get_keeps_the_order_and_names_the_missing_id() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    let made = batch_create(&app, &t, vec![acc("A", ""), acc("B", ""), acc("C", "")])
        .await
        .unwrap();
    app.accounts()
        .delete_account(authed(
            &t,
            DeleteAccountRequest {
                id: made[1].id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let ids = vec![
        made[2].id.clone(),
        made[0].id.clone(),
        made[1].id.clone(),
        made[2].id.clone(),
    ];
    let got = app
        .accounts()
        .batch_get_accounts(authed(&t, BatchGetAccountsRequest { ids }))
        .await
        .unwrap()
        .into_inner()
        .accounts;
    let names: Vec<&str> = got.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["C", "A", "B", "C"]);
    assert!(
        got[2].is_deleted,
        "deleted records are returned, as Get does"
    );

    let missing = format!("acc_{}", ulid::Ulid::generate());
    let err = app
        .accounts()
        .batch_get_accounts(authed(
            &t,
            BatchGetAccountsRequest {
                ids: vec![made[0].id.clone(), missing.clone()],
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, "RESOURCE_NOT_FOUND");
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["id"],
        missing
    );
    let err = app
        .accounts()
        .batch_get_accounts(authed(
            &t,
            BatchGetAccountsRequest {
                ids: vec![made[0].id.clone(), "nope".into()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["ids[1]"]);
}

#[tokio::test]
async fn a_stale_version_aborts_the_whole_batch_update() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    let made = batch_create(&app, &t, vec![acc("A", ""), acc("B", ""), acc("C", "")])
        .await
        .unwrap();
    let update = |a: &Account, name: &str, version: i32| UpdateAccountRequest {
        account: Some(Account {
            id: a.id.clone(),
            name: name.into(),
            version,
            ..Default::default()
        }),
        update_mask: mask(&["name"]),
        request_id: String::new(),
    };
    let err = app
        .accounts()
        .batch_update_accounts(authed(
            &t,
            BatchUpdateAccountsRequest {
                requests: vec![
                    update(&made[0], "A2", 1),
                    update(&made[1], "B2", 7),
                    update(&made[2], "C2", 1),
                ],
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::Aborted, "VERSION_MISMATCH");
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["id"],
        made[1].id
    );
    for a in &made {
        let now = app
            .accounts()
            .get_account(authed(&t, GetAccountRequest { id: a.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((now.name.as_str(), now.version), (a.name.as_str(), 1));
    }
    // The same id twice is refused before anything is read.
    let err = app
        .accounts()
        .batch_update_accounts(authed(
            &t,
            BatchUpdateAccountsRequest {
                requests: vec![update(&made[0], "X", 0), update(&made[0], "Y", 0)],
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["requests[1].account.id"]);
    // Fixed: every item applied, each with its own mask; an item that
    // changes nothing keeps its version.
    let out = app
        .accounts()
        .batch_update_accounts(authed(
            &t,
            BatchUpdateAccountsRequest {
                requests: vec![
                    update(&made[0], "A2", 1),
                    update(&made[1], "B", 1),
                    update(&made[2], "C2", 1),
                ],
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .accounts;
    let got: Vec<(&str, i32)> = out.iter().map(|a| (a.name.as_str(), a.version)).collect();
    assert_eq!(got, [("A2", 2), ("B", 1), ("C2", 2)]);
    // Batch delete: all or none, in order.
    let gone = format!("acc_{}", ulid::Ulid::generate());
    let err = app
        .accounts()
        .batch_delete_accounts(authed(
            &t,
            BatchDeleteAccountsRequest {
                ids: vec![made[0].id.clone(), gone],
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, "RESOURCE_NOT_FOUND");
    let deleted = app
        .accounts()
        .batch_delete_accounts(authed(
            &t,
            BatchDeleteAccountsRequest {
                ids: vec![made[2].id.clone(), made[0].id.clone()],
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .accounts;
    assert_eq!(deleted[0].id, made[2].id);
    assert!(deleted.iter().all(|a| a.is_deleted && a.version == 3));
}

#[tokio::test]
async fn upsert_creates_then_updates_and_a_no_op_changes_nothing() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    let upsert = |a: Account, mask: Option<prost_types::FieldMask>| UpsertAccountRequest {
        account: Some(a),
        update_mask: mask,
        request_id: String::new(),
    };
    let first = app
        .accounts()
        .upsert_account(authed(&t, upsert(acc("Acme", "erp-1"), None)))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let a = first.account.unwrap();
    assert_eq!((a.external_id.as_str(), a.version), ("erp-1", 1));
    let before = last_sequence(&app, &t).await;

    // The same values: found, unchanged, no new version, no event.
    let again = app
        .accounts()
        .upsert_account(authed(&t, upsert(acc("Acme", " erp-1 "), None)))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.account.as_ref().unwrap(), &a);
    assert_eq!(last_sequence(&app, &t).await, before);

    // A change: the same record, a new version, one event.
    let mut changed = acc("Acme", "erp-1");
    changed.industry = "software".into();
    let updated = app
        .accounts()
        .upsert_account(authed(&t, upsert(changed, mask(&["industry"]))))
        .await
        .unwrap()
        .into_inner();
    assert!(!updated.created);
    let u = updated.account.unwrap();
    assert_eq!(
        (u.id.as_str(), u.version, u.industry.as_str()),
        (a.id.as_str(), 2, "software")
    );
    assert_eq!(last_sequence(&app, &t).await, before + 1);

    // external_id is required; a stale version is ABORTED; an id that is
    // not the found record's is refused.
    let err = app
        .accounts()
        .upsert_account(authed(&t, upsert(acc("X", ""), None)))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["account.external_id"]);
    let mut stale = acc("Acme", "erp-1");
    stale.version = 1;
    let err = app
        .accounts()
        .upsert_account(authed(&t, upsert(stale, None)))
        .await
        .unwrap_err();
    assert_status(&err, Code::Aborted, "VERSION_MISMATCH");
    let mut other = acc("Acme", "erp-1");
    other.id = format!("acc_{}", ulid::Ulid::generate());
    let err = app
        .accounts()
        .upsert_account(authed(&t, upsert(other, None)))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["account.id"]);

    // Batch: creates and updates in one call, `created` parallel.
    let out = batch_upsert(
        &app,
        &t,
        vec![acc("New", "erp-2"), acc("Acme Inc", "erp-1")],
    )
    .await
    .unwrap();
    assert_eq!(out.created, [true, false]);
    assert_eq!(out.accounts[1].id, a.id);
    assert_eq!(out.accounts[1].name, "Acme Inc");
}

#[tokio::test]
async fn the_same_external_id_twice_in_a_batch_is_refused() {
    let app = spawn_app().await;
    let tenant = tenant();
    let t = app.token(&tenant, "u1");
    for call in 0..2 {
        let items = vec![
            acc("A", "k1"),
            acc("B", "k2"),
            acc("C", "k1"),
            acc("D", "k2"),
        ];
        let err = if call == 0 {
            batch_create(&app, &t, items).await.unwrap_err()
        } else {
            batch_upsert(&app, &t, items).await.unwrap_err()
        };
        assert_eq!(
            violations(&err),
            [
                "requests[2].account.external_id",
                "requests[3].account.external_id"
            ]
        );
    }
    assert_eq!(count_accounts(&app, &tenant).await, 0);
    // Held by a live record: ALREADY_EXISTS naming the item.
    batch_create(&app, &t, vec![acc("A", "k1")]).await.unwrap();
    let err = batch_create(&app, &t, vec![acc("B", "k9"), acc("C", "k1")])
        .await
        .unwrap_err();
    assert_status(&err, Code::AlreadyExists, "DUPLICATE_VALUE");
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["field"],
        "requests[1].account.external_id"
    );
    assert_eq!(count_accounts(&app, &tenant).await, 1);
    // Every clashing item is named, not only the first.
    batch_create(&app, &t, vec![acc("B", "k2")]).await.unwrap();
    let err = batch_create(
        &app,
        &t,
        vec![acc("C", "k2"), acc("D", "k8"), acc("E", "k1")],
    )
    .await
    .unwrap_err();
    assert_status(&err, Code::AlreadyExists, "DUPLICATE_VALUE");
    let info = err.get_details_error_info().unwrap();
    assert_eq!(info.metadata["field"], "requests[0].account.external_id");
    assert_eq!(
        info.metadata["fields"],
        "requests[0].account.external_id,requests[2].account.external_id"
    );
    assert!(
        err.message().contains("requests[2].account.external_id"),
        "{err:?}"
    );
    assert_eq!(count_accounts(&app, &tenant).await, 2);
    // 256 characters is too long.
    let err = batch_create(&app, &t, vec![acc("L", &"x".repeat(256))])
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["requests[0].account.external_id"]);
}

#[tokio::test]
async fn concurrent_upserts_of_the_same_keys_make_each_record_once() {
    let app = spawn_app().await;
    let tenant = tenant();
    let t = app.token(&tenant, "u1");
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (app_channel, t) = (app.channel.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let mut client =
                crm::proto::account_service_client::AccountServiceClient::new(app_channel);
            let mut keys: Vec<usize> = (0..100).collect();
            // Each writer in its own order.
            keys.rotate_left(w * 7 % 100);
            let requests = upserts(
                keys.iter()
                    .map(|k| acc(&format!("Company {k}"), &format!("ext-{k}")))
                    .collect(),
            );
            client
                .batch_upsert_accounts(authed(
                    &t,
                    BatchUpsertAccountsRequest {
                        requests,
                        request_id: String::new(),
                    },
                ))
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(out) => created += out.created.iter().filter(|c| **c).count(),
            // A loser may be told to retry; never anything else.
            Err(e) => assert_eq!(e.code(), Code::Aborted, "{e:?}"),
        }
    }
    assert_eq!(created, 100, "each external id created exactly once");
    assert_eq!(count_accounts(&app, &tenant).await, 100);
    // And single upserts racing on one key.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (app_channel, t) = (app.channel.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            crm::proto::account_service_client::AccountServiceClient::new(app_channel)
                .upsert_account(authed(
                    &t,
                    UpsertAccountRequest {
                        account: Some(acc("Solo", "solo")),
                        update_mask: None,
                        request_id: String::new(),
                    },
                ))
                .await
                .map(|r| r.into_inner().created)
        }));
    }
    let mut made = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(c) => made += usize::from(c),
            Err(e) => assert_eq!(e.code(), Code::Aborted, "{e:?}"),
        }
    }
    assert_eq!(made, 1);
    assert_eq!(count_accounts(&app, &tenant).await, 101);
}

#[tokio::test]
async fn external_ids_are_unique_per_app_and_free_again_after_delete() {
    let app = spawn_app().await;
    let tenant = tenant();
    let person = app.token(&tenant, "u1");
    let erp = app.app_token(&tenant, "svc", "erp");
    let billing = app.app_token(&tenant, "svc", "billing");
    let a = batch_upsert(&app, &erp, vec![acc("From ERP", "X-1")])
        .await
        .unwrap();
    let b = batch_upsert(&app, &billing, vec![acc("From billing", "X-1")])
        .await
        .unwrap();
    let p = batch_upsert(&app, &person, vec![acc("By hand", "X-1")])
        .await
        .unwrap();
    assert_eq!(
        (a.created[0], b.created[0], p.created[0]),
        (true, true, true)
    );
    let ids: HashSet<&str> = [&a, &b, &p]
        .iter()
        .map(|o| o.accounts[0].id.as_str())
        .collect();
    assert_eq!(ids.len(), 3, "one record per namespace");
    // Within a namespace: ALREADY_EXISTS on create, and on update.
    let err = batch_create(&app, &erp, vec![acc("Again", "X-1")])
        .await
        .unwrap_err();
    assert_status(&err, Code::AlreadyExists, "DUPLICATE_VALUE");
    let other = batch_create(&app, &erp, vec![acc("Other", "X-2")])
        .await
        .unwrap();
    let err = app
        .accounts()
        .update_account(authed(
            &erp,
            UpdateAccountRequest {
                account: Some(Account {
                    id: other[0].id.clone(),
                    external_id: "X-1".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["external_id"]),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::AlreadyExists, "DUPLICATE_VALUE");
    // Filterable and sortable.
    let listed = app
        .accounts()
        .list_accounts(authed(
            &person,
            ListAccountsRequest {
                filter: "external_id = \"X-1\"".into(),
                order_by: "external_id desc".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .accounts;
    assert_eq!(listed.len(), 3, "a person sees every app's records");
    // Deleting frees the key; undeleting while another holds it clashes.
    let erp_id = a.accounts[0].id.clone();
    app.accounts()
        .delete_account(authed(
            &erp,
            DeleteAccountRequest {
                id: erp_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let again = batch_upsert(&app, &erp, vec![acc("Reborn", "X-1")])
        .await
        .unwrap();
    assert!(again.created[0]);
    assert_ne!(again.accounts[0].id, erp_id);
    let err = app
        .accounts()
        .undelete_account(authed(
            &erp,
            UndeleteAccountRequest {
                id: erp_id,
                version: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::AlreadyExists, "DUPLICATE_VALUE");
}

#[tokio::test]
async fn a_line_item_batch_rolls_its_quote_up_once() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    let account = app.account(&t, "Acme").await;
    let quote = app
        .quote(
            &t,
            Quote {
                account_id: account.id.clone(),
                name: "Q".into(),
                ..Default::default()
            },
        )
        .await;
    let lines: Vec<CreateLineItemRequest> = (0..1000)
        .map(|i| CreateLineItemRequest {
            line_item: Some(LineItem {
                quote_id: quote.id.clone(),
                quantity: Some(3.0),
                unit_price: Some(0.1),
                discount: Some(if i == 0 { 0.3 } else { 0.0 }),
                discount_type: "amount".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .collect();
    let mut bad = lines.clone();
    bad[5].line_item.as_mut().unwrap().discount = Some(0.31);
    bad[9].line_item.as_mut().unwrap().currency = "EUR".into();
    let err = app
        .line_items()
        .batch_create_line_items(authed(
            &t,
            BatchCreateLineItemsRequest {
                requests: bad,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    let mut fields = violations(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "requests[5].line_item.discount",
            "requests[9].line_item.currency"
        ]
    );
    let made = app
        .line_items()
        .batch_create_line_items(authed(
            &t,
            BatchCreateLineItemsRequest {
                requests: lines,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .line_items;
    assert_eq!(made.len(), 1000);
    assert_eq!(made[0].total, Some(0.0));
    assert_eq!(made[1].total, Some(0.3));
    assert!(made.iter().all(|l| l.currency == "USD"));
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
    // 999 × 0.3, exactly; one rollup, so one new version.
    assert_eq!(q.total, Some(299.7));
    // The quote embeds its first 100 lines; the rest are listed.
    assert_eq!(q.line_items.len(), 100);
    assert_eq!(q.version, quote.version + 1);
    // A batch delete of lines rolls up once too.
    let ids: Vec<String> = q.line_items.iter().take(10).map(|l| l.id.clone()).collect();
    app.line_items()
        .batch_delete_line_items(authed(
            &t,
            BatchDeleteLineItemsRequest {
                ids: ids.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
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
    // The first ten embedded lines are gone: 0.3 each but the free one.
    let gone = made
        .iter()
        .filter(|l| ids.contains(&l.id) && l.total != Some(0.0))
        .count();
    let want: f64 = format!("{:.1}", (999 - gone) as f64 * 0.3).parse().unwrap();
    assert_eq!((q.total, q.version), (Some(want), quote.version + 2));
    // The deleted lines were embedded: the next ten take their places.
    let embedded: Vec<&str> = q.line_items.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(embedded.len(), 100);
    assert!(ids.iter().all(|id| !embedded.contains(&id.as_str())));
}

#[tokio::test]
async fn deals_of_a_batch_get_distinct_numbers() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    let account = app.account(&t, "Acme").await;
    let deal = |n: &str| CreateDealRequest {
        deal: Some(Deal {
            account_id: account.id.clone(),
            name: "D".into(),
            stage: "qualification".into(),
            deal_number: n.into(),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    // A client's own number in the middle of generated ones is skipped.
    let year = chrono::Datelike::year(&chrono::Utc::now());
    let made = app
        .deals()
        .batch_create_deals(authed(
            &t,
            BatchCreateDealsRequest {
                requests: vec![
                    deal(""),
                    deal(&format!("DEAL-{year}-00002")),
                    deal(""),
                    deal(""),
                ],
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .deals;
    let numbers: Vec<String> = made.iter().map(|d| d.deal_number.clone()).collect();
    assert_eq!(
        numbers,
        [1, 2, 3, 4].map(|n| format!("DEAL-{year}-{n:05}")),
        "{numbers:?}"
    );
    // Each deal's own stage history, stamped by the batch's caller.
    assert!(
        made.iter()
            .all(|d| d.audit_log.len() == 1 && d.audit_log[0].changed_by == "u1"),
        "{made:?}"
    );
}

#[tokio::test]
async fn a_retried_batch_is_answered_once() {
    let app = spawn_app().await;
    let tenant = tenant();
    let t = app.token(&tenant, "u1");
    let request = BatchCreateAccountsRequest {
        requests: creates(vec![acc("A", "r1"), acc("B", "r2")]),
        request_id: "0e4f6c1a-4b5d-4c6e-8f70-81a2b3c4d5e6".into(),
    };
    let first = app
        .accounts()
        .batch_create_accounts(authed(&t, request.clone()))
        .await
        .unwrap()
        .into_inner();
    let second = app
        .accounts()
        .batch_create_accounts(authed(&t, request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, second);
    assert_eq!(count_accounts(&app, &tenant).await, 2);
    let mut different = request;
    different.requests.pop();
    let err = app
        .accounts()
        .batch_create_accounts(authed(&t, different))
        .await
        .unwrap_err();
    assert_status(&err, Code::AlreadyExists, "REQUEST_ID_REUSED");
}

#[tokio::test]
async fn one_event_per_record_sharing_the_batch_transaction() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    let before = last_sequence(&app, &t).await;
    batch_create(
        &app,
        &t,
        (0..20).map(|i| acc(&format!("A{i}"), "")).collect(),
    )
    .await
    .unwrap();
    let after = last_sequence(&app, &t).await;
    assert_eq!(after, before + 20);
    let events = ChangeServiceClient::new(app.channel.clone())
        .list_changes(authed(
            &t,
            ListChangesRequest {
                after_sequence: before,
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert_eq!(events.len(), 20);
    let txns: HashSet<&str> = events.iter().map(|e| e.transaction_id.as_str()).collect();
    assert_eq!(txns.len(), 1);
    assert!(events.iter().all(|e| e.operation == "created"));
}

#[tokio::test]
async fn batches_never_reach_another_tenant() {
    let app = spawn_app().await;
    let (ta, tb) = (tenant(), tenant());
    let a = app.token(&ta, "u1");
    let b = app.token(&tb, "u1");
    let theirs = batch_create(&app, &b, vec![acc("B's", "shared")])
        .await
        .unwrap();
    let id = theirs[0].id.clone();
    // Not found, exactly like a missing id.
    let err = app
        .accounts()
        .batch_get_accounts(authed(
            &a,
            BatchGetAccountsRequest {
                ids: vec![id.clone()],
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, "RESOURCE_NOT_FOUND");
    let err = app
        .accounts()
        .batch_update_accounts(authed(
            &a,
            BatchUpdateAccountsRequest {
                requests: vec![UpdateAccountRequest {
                    account: Some(Account {
                        id: id.clone(),
                        name: "mine".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["name"]),
                    request_id: String::new(),
                }],
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, "RESOURCE_NOT_FOUND");
    let err = app
        .accounts()
        .batch_delete_accounts(authed(
            &a,
            BatchDeleteAccountsRequest {
                ids: vec![id.clone()],
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, "RESOURCE_NOT_FOUND");
    // The same external id in another tenant is another record.
    let mine = batch_upsert(&app, &a, vec![acc("A's", "shared")])
        .await
        .unwrap();
    assert!(mine.created[0]);
    assert_ne!(mine.accounts[0].id, id);
    // A reference to the other tenant's record is not found.
    let mut child = acc("Child", "");
    child.parent_account_id = id.clone();
    let err = batch_create(&app, &a, vec![child]).await.unwrap_err();
    assert_eq!(violations(&err), ["requests[0].account.parent_account_id"]);
    // B's record is untouched.
    let still = app
        .accounts()
        .get_account(authed(&b, GetAccountRequest { id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((still.name.as_str(), still.version), ("B's", 1));
    assert_eq!(count_accounts(&app, &ta).await, 1);
}

#[tokio::test]
async fn batches_over_rest() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts:batchUpsert",
            Some(&t),
            Some(json!({
                "requests": [
                    {"account": {"name": "Acme", "externalId": "erp-1"}},
                    {"account": {"name": "Globex", "external_id": "erp-2"}}
                ],
                "request_id": "8a7b6c5d-4e3f-4a1b-9c8d-7e6f5a4b3c2d"
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], json!([true, true]));
    let ids: Vec<String> = body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    let (status, body, _) = app
        .rest(
            "GET",
            &format!(
                "/api/v1/crm/accounts:batchGet?ids={}&ids={}",
                ids[1], ids[0]
            ),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accounts"][0]["name"], "Globex");
    assert_eq!(body["accounts"][1]["external_id"], "erp-1");
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts:upsert",
            Some(&t),
            Some(json!({"account": {"name": "Acme Inc", "external_id": "erp-1"}, "update_mask": "name"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], json!(false));
    assert_eq!(body["account"]["version"], 2);
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts:batchCreate",
            Some(&t),
            Some(
                json!({"requests": [{"account": {"name": "ok"}}, {"account": {"website": "bad"}}]}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let mut fields: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["field_violations"].as_array())
        .flatten()
        .map(|v| v["field"].as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        ["requests[1].account.name", "requests[1].account.website"]
    );
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/line-items:batchDelete",
            Some(&t),
            Some(json!({"ids": []})),
        )
        .await;
    assert_eq!((status, body["line_items"].clone()), (200, json!([])));
}

fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

async fn get_account(app: &TestApp, t: &str, id: &str) -> Account {
    app.accounts()
        .get_account(authed(t, GetAccountRequest { id: id.into() }))
        .await
        .unwrap()
        .into_inner()
}

async fn get_contact(app: &TestApp, t: &str, id: &str) -> Contact {
    app.contacts()
        .get_contact(authed(t, GetContactRequest { id: id.into() }))
        .await
        .unwrap()
        .into_inner()
}

async fn get_deal(app: &TestApp, t: &str, id: &str) -> Deal {
    app.deals()
        .get_deal(authed(t, GetDealRequest { id: id.into() }))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn an_activity_batch_moves_each_record_it_touches_once() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    let a = app.account(&t, "Acme").await;
    let b = app.account(&t, "Beta").await;
    let contact = |account: &str, name: &str| Contact {
        account_id: account.into(),
        first_name: name.into(),
        ..Default::default()
    };
    let c1 = app.contact(&t, contact(&a.id, "Ada")).await;
    let c2 = app.contact(&t, contact(&b.id, "Bob")).await;
    let deal = app
        .deal(
            &t,
            Deal {
                account_id: b.id.clone(),
                name: "D".into(),
                ..Default::default()
            },
        )
        .await;
    let (a, b) = (
        get_account(&app, &t, &a.id).await,
        get_account(&app, &t, &b.id).await,
    );
    // 300 activities: on account a, on the deal (account b), and with both
    // contacts; the latest of each target is known.
    let requests: Vec<CreateActivityRequest> = (0..300)
        .map(|i| {
            let mut act = Activity {
                subject: format!("call {i}"),
                r#type: "call".into(),
                occurred_at: at(1_700_000_000 + (i * 7919 % 300) * 60),
                ..Default::default()
            };
            match i % 3 {
                0 => act.account_id = a.id.clone(),
                1 => act.deal_id = deal.id.clone(),
                _ => {
                    act.contact_id = c1.id.clone();
                    act.contact_ids = vec![c2.id.clone()];
                }
            }
            CreateActivityRequest {
                activity: Some(act),
                request_id: String::new(),
            }
        })
        .collect();
    let latest = |k: i64| -> i64 {
        (0..300)
            .filter(|i| k < 0 || i % 3 == k)
            .map(|i| 1_700_000_000 + (i * 7919 % 300) * 60)
            .max()
            .unwrap()
    };
    let created = app
        .activities()
        .batch_create_activities(authed(
            &t,
            BatchCreateActivitiesRequest {
                requests,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .activities;
    assert_eq!(created.len(), 300);
    let (a2, b2) = (
        get_account(&app, &t, &a.id).await,
        get_account(&app, &t, &b.id).await,
    );
    // a: its own activities and those of contact c1; b: the deal's and c2's.
    let a_latest = latest(0).max(latest(2));
    let b_latest = latest(1).max(latest(2));
    assert_eq!(a2.last_activity_at.unwrap().seconds, a_latest);
    assert_eq!(b2.last_activity_at.unwrap().seconds, b_latest);
    assert_eq!(a2.version, a.version + 1, "one update of account a");
    assert_eq!(b2.version, b.version + 1, "one update of account b");
    for c in [&c1, &c2] {
        let now = get_contact(&app, &t, &c.id).await;
        assert_eq!(now.last_interaction_at.unwrap().seconds, latest(2));
        assert_eq!(now.version, c.version + 1, "one update of {}", c.id);
    }
    // An older batch moves nothing back.
    app.activities()
        .batch_create_activities(authed(
            &t,
            BatchCreateActivitiesRequest {
                requests: vec![CreateActivityRequest {
                    activity: Some(Activity {
                        subject: "old".into(),
                        r#type: "note".into(),
                        account_id: a.id.clone(),
                        occurred_at: at(1_600_000_000),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                }],
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let a3 = get_account(&app, &t, &a.id).await;
    assert_eq!(a3.last_activity_at, a2.last_activity_at);
    assert_eq!(a3.version, a2.version);
}

#[tokio::test]
async fn primary_flags_stay_one_per_scope_across_a_batch() {
    let app = spawn_app().await;
    let tenant = tenant();
    let t = app.token(&tenant, "u1");
    let a = app.account(&t, "Acme").await;
    let person = |name: &str, primary: bool| Contact {
        account_id: a.id.clone(),
        first_name: name.into(),
        is_primary: Some(primary),
        ..Default::default()
    };
    let p0 = app.contact(&t, person("Zero", true)).await;
    let create = |contacts: Vec<Contact>| BatchCreateContactsRequest {
        requests: contacts
            .into_iter()
            .map(|c| CreateContactRequest {
                contact: Some(c),
                request_id: String::new(),
            })
            .collect(),
        request_id: String::new(),
    };
    // Two items claiming the account's primary flag: refused, naming the
    // later one.
    let err = app
        .contacts()
        .batch_create_contacts(authed(
            &t,
            create(vec![
                person("One", true),
                person("Two", false),
                person("Three", true),
            ]),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["requests[2].contact.is_primary"]);
    assert!(get_contact(&app, &t, &p0.id).await.is_primary == Some(true));
    // One claim: the stored primary loses the flag.
    let made = app
        .contacts()
        .batch_create_contacts(authed(
            &t,
            create(vec![person("One", true), person("Two", false)]),
        ))
        .await
        .unwrap()
        .into_inner()
        .contacts;
    assert_eq!(get_contact(&app, &t, &p0.id).await.is_primary, Some(false));
    let (one, two) = (&made[0], &made[1]);
    // An update batch renaming the primary while another item takes the
    // flag over: the renamed one keeps its name change and loses the flag.
    let updated = app
        .contacts()
        .batch_update_contacts(authed(
            &t,
            BatchUpdateContactsRequest {
                requests: vec![
                    UpdateContactRequest {
                        contact: Some(Contact {
                            id: one.id.clone(),
                            first_name: "Uno".into(),
                            ..Default::default()
                        }),
                        update_mask: mask(&["first_name"]),
                        request_id: String::new(),
                    },
                    UpdateContactRequest {
                        contact: Some(Contact {
                            id: two.id.clone(),
                            is_primary: Some(true),
                            ..Default::default()
                        }),
                        update_mask: mask(&["is_primary"]),
                        request_id: String::new(),
                    },
                ],
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .contacts;
    assert_eq!(updated[0].first_name, "Uno");
    assert_eq!(updated[0].is_primary, Some(false));
    assert_eq!(updated[1].is_primary, Some(true));
    let mut conn = app.owner_conn().await;
    let primaries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM contacts WHERE tenant_id = $1 AND account_id = $2 AND is_primary AND NOT is_deleted",
    )
    .bind(&tenant)
    .bind(&a.id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(primaries, 1);
}

#[tokio::test]
async fn quotes_of_a_batch_join_and_leave_their_deals_in_one_update_each() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u1");
    let a = app.account(&t, "Acme").await;
    let other = app.account(&t, "Other").await;
    let deal = |account: &str, name: &str, currency: &str| Deal {
        account_id: account.into(),
        name: name.into(),
        currency: currency.into(),
        ..Default::default()
    };
    let d1 = app.deal(&t, deal(&a.id, "D1", "EUR")).await;
    let d2 = app.deal(&t, deal(&a.id, "D2", "GBP")).await;
    let foreign = app.deal(&t, deal(&other.id, "F", "USD")).await;
    let quote = |deal: &str, name: String| CreateQuoteRequest {
        quote: Some(Quote {
            account_id: a.id.clone(),
            deal_id: deal.into(),
            name,
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let batch = |requests| BatchCreateQuotesRequest {
        requests,
        request_id: String::new(),
    };
    // A deal of another account, twice: both items named.
    let mut requests: Vec<CreateQuoteRequest> =
        (0..20).map(|i| quote(&d1.id, format!("Q{i}"))).collect();
    requests[4] = quote(&foreign.id, "bad".into());
    requests[11] = quote(&foreign.id, "bad".into());
    let err = app
        .quotes()
        .batch_create_quotes(authed(&t, batch(requests)))
        .await
        .unwrap_err();
    assert_eq!(
        violations(&err),
        ["requests[4].quote.deal_id", "requests[11].quote.deal_id"]
    );
    let requests: Vec<CreateQuoteRequest> =
        (0..20).map(|i| quote(&d1.id, format!("Q{i}"))).collect();
    let quotes = app
        .quotes()
        .batch_create_quotes(authed(&t, batch(requests)))
        .await
        .unwrap()
        .into_inner()
        .quotes;
    assert!(
        quotes.iter().all(|q| q.currency == "EUR"),
        "the deal's currency"
    );
    let d1_now = get_deal(&app, &t, &d1.id).await;
    let ids: Vec<String> = quotes.iter().map(|q| q.id.clone()).collect();
    assert_eq!(d1_now.quote_ids, ids, "in batch order");
    assert_eq!(d1_now.version, d1.version + 1, "one update of the deal");
    // Five move to d2 (currency stays: no lines, but given explicitly).
    let moves: Vec<UpdateQuoteRequest> = [3, 7, 8, 15, 19]
        .iter()
        .map(|&i| UpdateQuoteRequest {
            quote: Some(Quote {
                id: ids[i].clone(),
                deal_id: d2.id.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["deal_id"]),
            request_id: String::new(),
        })
        .collect();
    app.quotes()
        .batch_update_quotes(authed(
            &t,
            BatchUpdateQuotesRequest {
                requests: moves,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let d1_after = get_deal(&app, &t, &d1.id).await;
    let d2_after = get_deal(&app, &t, &d2.id).await;
    let moved: Vec<String> = [3, 7, 8, 15, 19].iter().map(|&i| ids[i].clone()).collect();
    let kept: Vec<String> = ids.iter().filter(|i| !moved.contains(i)).cloned().collect();
    assert_eq!(d1_after.quote_ids, kept);
    assert_eq!(d2_after.quote_ids, moved);
    assert_eq!(d1_after.version, d1_now.version + 1);
    assert_eq!(d2_after.version, d2.version + 1);
}

#[tokio::test]
async fn a_thousand_violations_fit_the_transport() {
    let app = spawn_app().await;
    let tenant = tenant();
    let t = app.token(&tenant, "u1");
    let bad: Vec<Account> = (0..1000)
        .map(|i| Account {
            name: format!("A{i}"),
            website: "not a url".into(),
            ..Default::default()
        })
        .collect();
    // gRPC: a complete status (no transport error), the first violations in
    // item order, and the count of all.
    let err = batch_create(&app, &t, bad.clone()).await.unwrap_err();
    let fields = violations(&err);
    assert!(
        fields.len() >= 50 && fields.len() < 1000,
        "{}",
        fields.len()
    );
    for (i, f) in fields.iter().enumerate() {
        assert_eq!(f, &format!("requests[{i}].account.website"));
    }
    let info = err.get_details_error_info().unwrap();
    assert_eq!(info.metadata["violations"], "1000");
    assert_eq!(info.metadata["violations_listed"], fields.len().to_string());
    assert!(err.message().len() < 2048, "{}", err.message().len());
    // REST: every violation.
    let body = json!({
        "requests": bad.iter().map(|a| json!({"account": {"name": a.name, "website": a.website}})).collect::<Vec<_>>()
    });
    let (status, json, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts:batchCreate",
            Some(&t),
            Some(body),
        )
        .await;
    assert_eq!(status, 400, "{json}");
    let listed = json["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .unwrap()["field_violations"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(listed, 1000);
    assert_eq!(count_accounts(&app, &tenant).await, 0);
}
