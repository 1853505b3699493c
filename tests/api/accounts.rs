//! AccountService end to end: stamps, validation, updates and masks,
//! versions, soft delete, idempotency, tenancy, app scope, paging.

use std::collections::BTreeMap;

use crm::proto::*;
use prost_types::{FieldMask, Struct, Timestamp, Value, value::Kind as V};
use tonic::Code;

use crate::helpers::*;

fn account(name: &str) -> Account {
    Account {
        name: name.into(),
        ..Default::default()
    }
}

fn create(a: Account) -> CreateAccountRequest {
    CreateAccountRequest {
        account: Some(a),
        request_id: String::new(),
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(V::StringValue(s.into())),
    }
}

fn custom(pairs: &[(&str, Value)]) -> Struct {
    Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[tokio::test]
async fn create_stamps_and_get_round_trips() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "user-1");
    let mut c = app.accounts();
    let input = Account {
        name: "  Acme Corp  ".into(),
        legal_name: "Acme Corporation Ltd".into(),
        website: "https://acme.example".into(),
        domain: "Acme.EXAMPLE".into(),
        annual_revenue: Some(1234.56),
        employee_count: Some(42),
        tags: vec!["b2b".into(), " eu ".into(), "b2b".into()],
        custom_fields: Some(custom(&[("tier", string("gold"))])),
        addresses: Some(Value {
            kind: Some(V::ListValue(prost_types::ListValue {
                values: vec![Value {
                    kind: Some(V::StructValue(custom(&[("city", string("Paris"))]))),
                }],
            })),
        }),
        first_contacted_at: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_000,
        }),
        ..Default::default()
    };
    let created = c
        .create_account(authed(&t, create(input)))
        .await
        .unwrap()
        .into_inner();
    assert!(
        created.id.starts_with("acc_") && created.id.len() == 30,
        "{}",
        created.id
    );
    assert_eq!(created.tenant_id, "tenant-a");
    assert_eq!(created.app_id, None);
    assert_eq!(created.created_by, "user-1");
    assert_eq!(created.updated_by, "user-1");
    assert_eq!(created.version, 1);
    assert_eq!(created.schema_version, 1);
    assert_eq!(created.source, "edm");
    assert_eq!(created.source_type, "api");
    assert!(!created.is_deleted);
    assert!(created.created_at.is_some());
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(created.name, "Acme Corp");
    assert_eq!(created.domain, "acme.example");
    assert_eq!(created.annual_revenue, Some(1234.56));
    assert_eq!(created.employee_count, Some(42));
    assert_eq!(created.tags, vec!["b2b", "eu"]);
    assert_eq!(
        created.custom_fields,
        Some(custom(&[("tier", string("gold"))]))
    );
    assert!(created.addresses.is_some());
    assert_eq!(
        created.first_contacted_at,
        Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_000
        })
    );

    let got = c
        .get_account(authed(
            &t,
            GetAccountRequest {
                id: created.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);
}

#[tokio::test]
async fn client_sent_server_stamps_are_ignored() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "user-1");
    let mut c = app.accounts();
    let forged = Account {
        id: "acc_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D".into(),
        tenant_id: "tenant-b".into(),
        app_id: Some("evil-app".into()),
        created_at: Some(Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        updated_at: Some(Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        created_by: "someone-else".into(),
        updated_by: "someone-else".into(),
        is_deleted: true,
        deleted_at: Some(Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        deleted_by: Some("x".into()),
        schema_version: 7,
        version: 999,
        last_activity_at: Some(Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        ..account("Forged")
    };
    let a = c
        .create_account(authed(&t, create(forged)))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(a.id, "acc_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D");
    assert_eq!(a.tenant_id, "tenant-a");
    assert_eq!(a.app_id, None);
    assert_eq!(a.created_by, "user-1");
    assert!(a.created_at.unwrap().seconds > 1);
    assert!(!a.is_deleted);
    assert_eq!(a.deleted_at, None);
    assert_eq!(a.deleted_by, None);
    assert_eq!(a.schema_version, 1);
    assert_eq!(a.version, 1);
    assert_eq!(a.last_activity_at, None);

    // On update too: stamps in the body or the mask change nothing.
    let u = c
        .update_account(authed(
            &t,
            UpdateAccountRequest {
                account: Some(Account {
                    id: a.id.clone(),
                    tenant_id: "tenant-b".into(),
                    created_by: "mallory".into(),
                    is_deleted: true,
                    last_activity_at: Some(Timestamp {
                        seconds: 5,
                        nanos: 0,
                    }),
                    ..account("Renamed")
                }),
                update_mask: mask(&[
                    "name",
                    "tenant_id",
                    "created_by",
                    "is_deleted",
                    "last_activity_at",
                    "id",
                ]),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.name, "Renamed");
    assert_eq!(u.tenant_id, "tenant-a");
    assert_eq!(u.created_by, "user-1");
    assert!(!u.is_deleted);
    assert_eq!(u.last_activity_at, None);
    assert_eq!(u.version, 2);
}

#[tokio::test]
async fn validation_reports_every_field_at_once() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "user-1");
    let mut c = app.accounts();
    let bad = Account {
        name: "   ".into(),
        website: "not a url".into(),
        domain: "no spaces.com".into(),
        annual_revenue: Some(-1.0),
        employee_count: Some(-5),
        source_type: "carrier-pigeon".into(),
        parent_account_id: "con_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D".into(),
        tags: vec!["ok".into(), "  ".into()],
        ..Default::default()
    };
    let err = c.create_account(authed(&t, create(bad))).await.unwrap_err();
    let mut fields = violations(&err);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "account.annual_revenue",
            "account.domain",
            "account.employee_count",
            "account.name",
            "account.parent_account_id",
            "account.source_type",
            "account.tags[1]",
            "account.website",
        ]
    );
    assert!(
        err.message().contains("account.website"),
        "{}",
        err.message()
    );

    let missing = c
        .create_account(authed(&t, CreateAccountRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(violations(&missing), vec!["account"]);

    let nan = c
        .create_account(authed(
            &t,
            create(Account {
                annual_revenue: Some(f64::NAN),
                ..account("x")
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&nan), vec!["account.annual_revenue"]);

    let nul = c
        .create_account(authed(&t, create(account("bad\0name"))))
        .await
        .unwrap_err();
    assert_eq!(violations(&nul), vec!["account.name"]);

    let long = c
        .create_account(authed(&t, create(account(&"x".repeat(1025)))))
        .await
        .unwrap_err();
    assert_eq!(violations(&long), vec!["account.name"]);

    // Nothing was written.
    let list = c
        .list_accounts(authed(&t, ListAccountsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(list.accounts.is_empty());
}

#[tokio::test]
async fn money_is_exact_decimal() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "user-1");
    let mut c = app.accounts();
    // The wire double 0.30000000000000004 has 17 significant digits: more
    // than a double carries exactly, so it is refused (SPEC §4), never
    // stored as something else.
    let e = c
        .create_account(authed(
            &t,
            create(Account {
                annual_revenue: Some(0.1 + 0.2),
                ..account("Decimal")
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["account.annual_revenue"]);
    // 15 significant digits come back bit for bit.
    let a = c
        .create_account(authed(
            &t,
            create(Account {
                annual_revenue: Some(123_456_789_012.345),
                ..account("Fifteen")
            }),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.annual_revenue, Some(123_456_789_012.345));
    let mut conn = app.owner_conn().await;
    let a = c
        .create_account(authed(
            &t,
            create(Account {
                annual_revenue: Some(0.1),
                ..account("Dime")
            }),
        ))
        .await
        .unwrap()
        .into_inner();
    let tripled: String =
        sqlx::query_scalar("SELECT (annual_revenue * 3)::text FROM accounts WHERE id = $1")
            .bind(&a.id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(tripled, "0.3");
}

#[tokio::test]
async fn update_with_and_without_masks() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "user-1");
    let mut c = app.accounts();
    let a = c
        .create_account(authed(
            &t,
            create(Account {
                industry: "software".into(),
                phone: "+1 555".into(),
                tags: vec!["a".into()],
                custom_fields: Some(custom(&[
                    ("tier", string("gold")),
                    ("region", string("eu")),
                ])),
                source: "import".into(),
                ..account("Acme")
            }),
        ))
        .await
        .unwrap()
        .into_inner();
    let upd = |acc: Account, m: Option<FieldMask>| UpdateAccountRequest {
        account: Some(acc),
        update_mask: m,
        request_id: String::new(),
    };
    let user2 = app.token("tenant-a", "user-2");

    // No mask: the populated fields only.
    let u = c
        .update_account(authed(
            &user2,
            upd(
                Account {
                    id: a.id.clone(),
                    legal_name: "Acme Inc".into(),
                    ..Default::default()
                },
                None,
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.legal_name, "Acme Inc");
    assert_eq!(u.name, "Acme");
    assert_eq!(u.industry, "software");
    assert_eq!(u.version, 2);
    assert_eq!(u.updated_by, "user-2");
    assert_eq!(u.created_by, "user-1");
    assert!(u.updated_at.unwrap().seconds >= a.updated_at.unwrap().seconds);

    // A mask names what to write; a named field absent in the body is cleared.
    let u = c
        .update_account(authed(
            &t,
            upd(
                Account {
                    id: a.id.clone(),
                    industry: "ignored: not in the mask".into(),
                    ..Default::default()
                },
                mask(&["phone", "tags"]),
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.phone, "");
    assert!(u.tags.is_empty());
    assert_eq!(u.industry, "software");
    assert_eq!(u.version, 3);

    // camelCase paths are accepted; one Struct key can be set or removed.
    let u = c
        .update_account(authed(
            &t,
            upd(
                Account {
                    id: a.id.clone(),
                    legal_name: "Acme Holdings".into(),
                    custom_fields: Some(custom(&[("tier", string("platinum"))])),
                    ..Default::default()
                },
                mask(&["legalName", "custom_fields.tier", "custom_fields.region"]),
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.legal_name, "Acme Holdings");
    assert_eq!(
        u.custom_fields,
        Some(custom(&[("tier", string("platinum"))]))
    );

    // Unknown paths are rejected, naming the path.
    let err = c
        .update_account(authed(
            &t,
            upd(
                Account {
                    id: a.id.clone(),
                    ..Default::default()
                },
                mask(&["name", "nonsense"]),
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["update_mask"]);
    assert!(err.message().contains("nonsense"));

    // "*" replaces every writable field: absent ones go back to defaults.
    let u = c
        .update_account(authed(
            &t,
            upd(
                Account {
                    id: a.id.clone(),
                    name: "Fresh".into(),
                    ..Default::default()
                },
                mask(&["*"]),
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.name, "Fresh");
    assert_eq!(u.industry, "");
    assert_eq!(u.legal_name, "");
    assert_eq!(u.custom_fields, None);
    assert_eq!(u.source, "edm");
    assert_eq!(u.created_by, "user-1");

    // An update that changes nothing writes nothing.
    let same = c
        .update_account(authed(
            &t,
            upd(
                Account {
                    id: a.id.clone(),
                    name: "Fresh".into(),
                    ..Default::default()
                },
                None,
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same, u);

    // The merged record is validated.
    let err = c
        .update_account(authed(
            &t,
            upd(
                Account {
                    id: a.id.clone(),
                    ..Default::default()
                },
                mask(&["name"]),
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["account.name"]);

    // The id must name an account.
    let err = c
        .update_account(authed(&t, upd(account("x"), None)))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["account.id"]);
}

#[tokio::test]
async fn versions_guard_every_write() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "user-1");
    let mut c = app.accounts();
    let a = c
        .create_account(authed(&t, create(account("V"))))
        .await
        .unwrap()
        .into_inner();
    let upd = |version: i32, name: &str| UpdateAccountRequest {
        account: Some(Account {
            id: a.id.clone(),
            version,
            ..account(name)
        }),
        update_mask: None,
        request_id: String::new(),
    };
    let u = c
        .update_account(authed(&t, upd(1, "V2")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.version, 2);
    let stale = c
        .update_account(authed(&t, upd(1, "V3")))
        .await
        .unwrap_err();
    assert_status(&stale, Code::Aborted, "VERSION_MISMATCH");
    let info = tonic_types::StatusExt::get_details_error_info(&stale).unwrap();
    assert_eq!(
        info.metadata.get("current_version").map(String::as_str),
        Some("2")
    );
    assert_eq!(
        info.metadata.get("expected_version").map(String::as_str),
        Some("1")
    );
    // No version: applies unconditionally.
    let u = c
        .update_account(authed(&t, upd(0, "V3")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((u.version, u.name.as_str()), (3, "V3"));

    let del = |version| DeleteAccountRequest {
        id: a.id.clone(),
        version,
        request_id: String::new(),
    };
    let err = c.delete_account(authed(&t, del(2))).await.unwrap_err();
    assert_status(&err, Code::Aborted, "VERSION_MISMATCH");
    let d = c
        .delete_account(authed(&t, del(3)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.version, 4);
    let err = c
        .undelete_account(authed(
            &t,
            UndeleteAccountRequest {
                id: a.id.clone(),
                version: 3,
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::Aborted, "VERSION_MISMATCH");
    let u = c
        .undelete_account(authed(
            &t,
            UndeleteAccountRequest {
                id: a.id.clone(),
                version: 4,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.version, 5);
}

#[tokio::test]
async fn concurrent_versioned_increments_lose_nothing() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "user-1");
    let a = app
        .accounts()
        .create_account(authed(
            &t,
            create(Account {
                employee_count: Some(0),
                ..account("Counter")
            }),
        ))
        .await
        .unwrap()
        .into_inner();
    let workers = 8;
    let per_worker = 10;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let mut c = app.accounts();
        let (t, id) = (t.clone(), a.id.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < per_worker {
                let cur = c
                    .get_account(authed(&t, GetAccountRequest { id: id.clone() }))
                    .await
                    .unwrap()
                    .into_inner();
                let next = Account {
                    id: id.clone(),
                    version: cur.version,
                    employee_count: Some(cur.employee_count.unwrap() + 1),
                    ..Default::default()
                };
                match c
                    .update_account(authed(
                        &t,
                        UpdateAccountRequest {
                            account: Some(next),
                            update_mask: None,
                            request_id: String::new(),
                        },
                    ))
                    .await
                {
                    Ok(_) => done += 1,
                    Err(s) => assert_eq!(s.code(), Code::Aborted, "{s:?}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let end = app
        .accounts()
        .get_account(authed(&t, GetAccountRequest { id: a.id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(end.employee_count, Some(workers * per_worker));
    assert_eq!(end.version, workers * per_worker + 1);
}

#[tokio::test]
async fn soft_delete_and_undelete() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "user-1");
    let mut c = app.accounts();
    let a = c
        .create_account(authed(&t, create(account("Del"))))
        .await
        .unwrap()
        .into_inner();
    let keep = c
        .create_account(authed(&t, create(account("Keep"))))
        .await
        .unwrap()
        .into_inner();
    let del = DeleteAccountRequest {
        id: a.id.clone(),
        version: 0,
        request_id: String::new(),
    };
    let t2 = app.token("tenant-a", "user-2");
    let d = c
        .delete_account(authed(&t2, del.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(d.is_deleted);
    assert!(d.deleted_at.is_some());
    assert_eq!(d.deleted_by.as_deref(), Some("user-2"));
    assert_eq!(d.version, 2);

    // Get still returns it; List leaves it out unless show_deleted.
    let got = c
        .get_account(authed(&t, GetAccountRequest { id: a.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, d);
    let ids = |r: ListAccountsResponse| r.accounts.into_iter().map(|a| a.id).collect::<Vec<_>>();
    let live = c
        .list_accounts(authed(&t, ListAccountsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(live), vec![keep.id.clone()]);
    let all = c
        .list_accounts(authed(
            &t,
            ListAccountsRequest {
                show_deleted: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(all), vec![keep.id.clone(), a.id.clone()]);

    // Updating or deleting a deleted record: NOT_FOUND.
    let err = c.delete_account(authed(&t, del.clone())).await.unwrap_err();
    assert_status(&err, Code::NotFound, "RESOURCE_DELETED");
    let err = c
        .update_account(authed(
            &t,
            UpdateAccountRequest {
                account: Some(Account {
                    id: a.id.clone(),
                    ..account("x")
                }),
                update_mask: None,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, "RESOURCE_DELETED");

    let u = c
        .undelete_account(authed(
            &t,
            UndeleteAccountRequest {
                id: a.id.clone(),
                version: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!u.is_deleted);
    assert_eq!(u.deleted_at, None);
    assert_eq!(u.deleted_by, None);
    assert_eq!(u.version, 3);
    let err = c
        .undelete_account(authed(
            &t,
            UndeleteAccountRequest {
                id: a.id.clone(),
                version: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::AlreadyExists, "RESOURCE_ALREADY_EXISTS");
}

#[tokio::test]
async fn request_id_makes_writes_idempotent() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "user-1");
    let mut c = app.accounts();
    let rid = "0b7f8a52-9d53-4c6e-9a55-1c1f7f0a0d11".to_string();
    let req = CreateAccountRequest {
        account: Some(account("Once")),
        request_id: rid.clone(),
    };
    let first = c
        .create_account(authed(&t, req.clone()))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .create_account(authed(&t, req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    let list = c
        .list_accounts(authed(&t, ListAccountsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.accounts.len(), 1);

    // Same id, different request.
    let err = c
        .create_account(authed(
            &t,
            CreateAccountRequest {
                account: Some(account("Twice")),
                request_id: rid.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::AlreadyExists, "REQUEST_ID_REUSED");
    // Same id from another tenant: independent.
    let other = app.token("tenant-b", "user-9");
    let b = c
        .create_account(authed(&other, req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(b.id, first.id);
    assert_eq!(b.tenant_id, "tenant-b");
    // Not a UUID.
    let err = c
        .create_account(authed(
            &t,
            CreateAccountRequest {
                account: Some(account("x")),
                request_id: "nope".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["request_id"]);

    // Update and delete take request_id too.
    let upd = UpdateAccountRequest {
        account: Some(Account {
            id: first.id.clone(),
            version: 1,
            ..account("Once more")
        }),
        update_mask: None,
        request_id: "6b1c1b8e-0f58-4a39-8c59-0f3b8d0f5a21".into(),
    };
    let u1 = c
        .update_account(authed(&t, upd.clone()))
        .await
        .unwrap()
        .into_inner();
    let u2 = c
        .update_account(authed(&t, upd.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u1, u2);
    assert_eq!(u1.version, 2);
    let del = DeleteAccountRequest {
        id: first.id.clone(),
        version: 2,
        request_id: "e2c5b0a4-43a4-4f4e-b2f7-8f1e3b7c9d55".into(),
    };
    let d1 = c
        .delete_account(authed(&t, del.clone()))
        .await
        .unwrap()
        .into_inner();
    let d2 = c
        .delete_account(authed(&t, del.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d1, d2);
    assert_eq!(d1.version, 3);
}

#[tokio::test]
async fn concurrent_retries_create_one_record() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "user-1");
    let req = CreateAccountRequest {
        account: Some(account("Concurrent")),
        request_id: "3f2a6f0e-5d7b-4a8e-9d61-2b8c4f1e7a90".into(),
    };
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut c = app.accounts();
        let (t, req) = (t.clone(), req.clone());
        tasks.push(tokio::spawn(async move {
            c.create_account(authed(&t, req))
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert!(results.iter().all(|r| r == &results[0]));
    let list = app
        .accounts()
        .list_accounts(authed(&t, ListAccountsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.accounts.len(), 1);
}

#[tokio::test]
async fn other_tenants_records_are_indistinguishable_from_missing_ones() {
    let app = spawn_app().await;
    let a_tok = app.token("tenant-a", "user-1");
    let b_tok = app.token("tenant-b", "user-2");
    let mut c = app.accounts();
    let a = c
        .create_account(authed(&a_tok, create(account("Secret"))))
        .await
        .unwrap()
        .into_inner();
    let random = "acc_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D".to_string();

    for id in [a.id.clone(), random.clone()] {
        let e = c
            .get_account(authed(&b_tok, GetAccountRequest { id: id.clone() }))
            .await
            .unwrap_err();
        assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
        assert_eq!(e.message(), format!("account {id} not found"));
        let e = c
            .update_account(authed(
                &b_tok,
                UpdateAccountRequest {
                    account: Some(Account {
                        id: id.clone(),
                        ..account("Pwned")
                    }),
                    update_mask: None,
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
        let e = c
            .delete_account(authed(
                &b_tok,
                DeleteAccountRequest {
                    id: id.clone(),
                    version: 0,
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
        let e = c
            .undelete_account(authed(
                &b_tok,
                UndeleteAccountRequest {
                    id: id.clone(),
                    version: 0,
                },
            ))
            .await
            .unwrap_err();
        assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    }
    let list = c
        .list_accounts(authed(
            &b_tok,
            ListAccountsRequest {
                show_deleted: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(list.accounts.is_empty());
    // B cannot point at A's account either.
    let e = c
        .create_account(authed(
            &b_tok,
            create(Account {
                parent_account_id: a.id.clone(),
                ..account("Child")
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["account.parent_account_id"]);
    // And A's record is untouched.
    let still = c
        .get_account(authed(&a_tok, GetAccountRequest { id: a.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still, a);
}

#[tokio::test]
async fn integration_tokens_see_only_their_apps_records() {
    let app = spawn_app().await;
    let person = app.token("tenant-a", "user-1");
    let app_x = app.app_token("tenant-a", "svc-x", "app-x");
    let app_y = app.app_token("tenant-a", "svc-y", "app-y");
    let mut c = app.accounts();
    let p = c
        .create_account(authed(&person, create(account("By person"))))
        .await
        .unwrap()
        .into_inner();
    let x = c
        .create_account(authed(&app_x, create(account("By X"))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(x.app_id.as_deref(), Some("app-x"));
    assert_eq!(p.app_id, None);

    let names = |r: ListAccountsResponse| {
        let mut v: Vec<String> = r.accounts.into_iter().map(|a| a.name).collect();
        v.sort();
        v
    };
    let seen_by_person = c
        .list_accounts(authed(&person, ListAccountsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(seen_by_person), vec!["By X", "By person"]);
    let seen_by_x = c
        .list_accounts(authed(&app_x, ListAccountsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(seen_by_x), vec!["By X"]);
    let seen_by_y = c
        .list_accounts(authed(&app_y, ListAccountsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(seen_by_y.accounts.is_empty());

    let e = c
        .get_account(authed(&app_y, GetAccountRequest { id: x.id.clone() }))
        .await
        .unwrap_err();
    assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    let e = c
        .get_account(authed(&app_x, GetAccountRequest { id: p.id.clone() }))
        .await
        .unwrap_err();
    assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    let e = c
        .update_account(authed(
            &app_y,
            UpdateAccountRequest {
                account: Some(Account {
                    id: x.id.clone(),
                    ..account("Y was here")
                }),
                update_mask: None,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    // The person's token can change app X's record; app_id stays.
    let u = c
        .update_account(authed(
            &person,
            UpdateAccountRequest {
                account: Some(Account {
                    id: x.id.clone(),
                    ..account("Edited")
                }),
                update_mask: None,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.app_id.as_deref(), Some("app-x"));
}

#[tokio::test]
async fn list_pages_are_keyset_and_bound_to_their_request() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "user-1");
    let mut c = app.accounts();
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            c.create_account(authed(&t, create(account(&format!("A{i}")))))
                .await
                .unwrap()
                .into_inner()
                .id,
        );
    }
    created.reverse(); // newest first
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let r = c
            .list_accounts(authed(
                &t,
                ListAccountsRequest {
                    page_size: 3,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(r.accounts.into_iter().map(|a| a.id));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);

    let first = c
        .list_accounts(authed(
            &t,
            ListAccountsRequest {
                page_size: 3,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // A different page size is fine; other parameters are not.
    let ok = c
        .list_accounts(authed(
            &t,
            ListAccountsRequest {
                page_size: 10,
                page_token: first.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.accounts.len(), 4);
    let e = c
        .list_accounts(authed(
            &t,
            ListAccountsRequest {
                page_size: 3,
                page_token: first.next_page_token.clone(),
                show_deleted: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["page_token"]);
    let other = app.token("tenant-b", "user-1");
    let e = c
        .list_accounts(authed(
            &other,
            ListAccountsRequest {
                page_size: 3,
                page_token: first.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["page_token"]);
    let mut tampered = first.next_page_token.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let e = c
        .list_accounts(authed(
            &t,
            ListAccountsRequest {
                page_token: String::from_utf8(tampered).unwrap(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["page_token"]);

    let e = c
        .list_accounts(authed(
            &t,
            ListAccountsRequest {
                page_size: -1,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["page_size"]);
    let big = c
        .list_accounts(authed(
            &t,
            ListAccountsRequest {
                page_size: 100_000,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(big.accounts.len(), 7);
    assert!(big.next_page_token.is_empty());
    // A token made for one filter is refused with another.
    let filtered = c
        .list_accounts(authed(
            &t,
            ListAccountsRequest {
                page_size: 3,
                page_token: first.next_page_token.clone(),
                filter: "name = \"A1\"".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&filtered), vec!["page_token"]);
}

#[tokio::test]
async fn parent_accounts_exist_and_never_cycle() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "user-1");
    let mut c = app.accounts();
    let top = c
        .create_account(authed(&t, create(account("Top"))))
        .await
        .unwrap()
        .into_inner();
    let mid = c
        .create_account(authed(
            &t,
            create(Account {
                parent_account_id: top.id.clone(),
                ..account("Mid")
            }),
        ))
        .await
        .unwrap()
        .into_inner();
    let leaf = c
        .create_account(authed(
            &t,
            create(Account {
                parent_account_id: mid.id.clone(),
                ..account("Leaf")
            }),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leaf.parent_account_id, mid.id);

    let missing = c
        .create_account(authed(
            &t,
            create(Account {
                parent_account_id: "acc_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D".into(),
                ..account("Orphan")
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&missing), vec!["account.parent_account_id"]);

    let reparent = |id: &str, parent: &str| UpdateAccountRequest {
        account: Some(Account {
            id: id.into(),
            parent_account_id: parent.into(),
            ..Default::default()
        }),
        update_mask: mask(&["parent_account_id"]),
        request_id: String::new(),
    };
    let cycle = c
        .update_account(authed(&t, reparent(&top.id, &leaf.id)))
        .await
        .unwrap_err();
    assert_eq!(violations(&cycle), vec!["account.parent_account_id"]);
    let own = c
        .update_account(authed(&t, reparent(&top.id, &top.id)))
        .await
        .unwrap_err();
    assert_eq!(violations(&own), vec!["account.parent_account_id"]);
    // Moving a subtree elsewhere is fine, and clearing the parent too.
    let other = c
        .create_account(authed(&t, create(account("Other"))))
        .await
        .unwrap()
        .into_inner();
    let moved = c
        .update_account(authed(&t, reparent(&mid.id, &other.id)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.parent_account_id, other.id);
    let cleared = c
        .update_account(authed(&t, reparent(&mid.id, "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cleared.parent_account_id, "");

    // A deleted parent cannot be named.
    c.delete_account(authed(
        &t,
        DeleteAccountRequest {
            id: other.id.clone(),
            version: 0,
            request_id: String::new(),
        },
    ))
    .await
    .unwrap();
    let e = c
        .update_account(authed(&t, reparent(&mid.id, &other.id)))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["account.parent_account_id"]);
}

#[tokio::test]
async fn malformed_ids_are_invalid_arguments() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "user-1");
    let mut c = app.accounts();
    for id in [
        "",
        "123",
        "con_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D",
        "acc_short",
        "acc_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D'--",
    ] {
        let e = c
            .get_account(authed(&t, GetAccountRequest { id: id.into() }))
            .await
            .unwrap_err();
        assert_eq!(violations(&e), vec!["id"], "{id}");
    }
    // Lowercase ULIDs name the same record.
    let a = c
        .create_account(authed(&t, create(account("Case"))))
        .await
        .unwrap()
        .into_inner();
    let lower = format!("acc_{}", a.id[4..].to_lowercase());
    let got = c
        .get_account(authed(&t, GetAccountRequest { id: lower }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.id, a.id);
}
