//! Hardening, round 2: inputs a hostile (or merely unlucky) caller sends that
//! once made the service answer 500, stall a worker, or alias records. Each
//! test names the class it guards; REST and gRPC alike.

use std::time::Duration;

use crm::proto::*;
use prost_types::{Struct, Timestamp, Value, value::Kind as V};
use serde_json::json;
use tonic::Code;

use crate::helpers::*;

fn create_account(account: Account) -> CreateAccountRequest {
    CreateAccountRequest {
        account: Some(account),
        request_id: String::new(),
    }
}

fn named(name: &str) -> Account {
    Account {
        name: name.into(),
        ..Default::default()
    }
}

/// `{"a": {"a": … {"a": 1}}}` with `depth` objects.
fn nested_struct(depth: usize) -> Struct {
    let mut v = Value {
        kind: Some(V::NumberValue(1.0)),
    };
    for _ in 1..depth {
        v = Value {
            kind: Some(V::StructValue(Struct {
                fields: [("a".to_owned(), v)].into(),
            })),
        };
    }
    Struct {
        fields: [("a".to_owned(), v)].into(),
    }
}

fn nested_json(depth: usize) -> serde_json::Value {
    (0..depth).fold(json!(1), |acc, _| json!({ "a": acc }))
}

/// The code a gRPC call failed with (panics on success).
fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.expect_err("the call must fail").code()
}

// 1. Counts and sizes are checked before work proportional to them: these
// requests once ran for seconds (quadratic de-duplication, per-path copies)
// and ended in DEADLINE_EXCEEDED; with a 3 s deadline they must be refused
// as invalid, never time out.
#[tokio::test]
async fn oversized_collections_are_refused_before_any_work() {
    let app = spawn_app_with(|c| c.request_timeout_secs = 3).await;
    let t = app.token(&tenant(), "u");
    let tags: Vec<String> = (0..100_000)
        .map(|i| format!("tag-{}", i % 50_000))
        .collect();
    let e = app
        .accounts()
        .create_account(authed(
            &t,
            create_account(Account {
                tags,
                ..named("many tags")
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["account.tags"]);

    let owner = app.account(&t, "Owner").await;
    let contact_ids: Vec<String> = (0..100_000)
        .map(|i| format!("con_01HZZZZZZZZZZZZZZZZZ{:05}", i % 99_999))
        .collect();
    let e = app
        .deals()
        .create_deal(authed(
            &t,
            CreateDealRequest {
                deal: Some(Deal {
                    name: "many contacts".into(),
                    account_id: owner.id.clone(),
                    contact_ids,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["deal.contact_ids"]);

    // A mask of 20 000 paths.
    let e = app
        .accounts()
        .update_account(authed(
            &t,
            UpdateAccountRequest {
                account: Some(Account {
                    id: owner.id.clone(),
                    ..named("x")
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".to_owned(); 20_000],
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["update_mask"]);

    // REST: 1.7 MB of custom_fields keys, as a create and as a PATCH (whose
    // derived mask would have one path per key).
    let keys: serde_json::Map<String, serde_json::Value> =
        (0..120_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let body = json!({"name": "wide", "custom_fields": keys});
    let (status, e, _) = app
        .rest("POST", "/api/v1/crm/accounts", Some(&t), Some(body.clone()))
        .await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(
        e["details"][1]["field_violations"][0]["field"],
        "account.custom_fields"
    );
    let (status, e, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/accounts/{}", owner.id),
            Some(&t),
            Some(body),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    // Nothing was written.
    let got = app
        .accounts()
        .get_account(authed(&t, GetAccountRequest { id: owner.id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.name.as_str(), got.version), ("Owner", 1));
}

// 2. Money and quantities: finite, below 10^15, at most 15 significant
// digits, given or computed; nothing stored fails to read back.
#[tokio::test]
async fn money_beyond_an_exact_double_is_refused_given_or_computed() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    for bad in [1e300, 1e15, -2e15, 0.1 + 0.2, 1.000_000_000_000_000_2] {
        let e = app
            .accounts()
            .create_account(authed(
                &t,
                create_account(Account {
                    annual_revenue: Some(bad),
                    ..named("rich")
                }),
            ))
            .await
            .unwrap_err();
        assert_eq!(violations(&e), vec!["account.annual_revenue"], "{bad}");
    }
    let max = app
        .accounts()
        .create_account(authed(
            &t,
            create_account(Account {
                annual_revenue: Some(999_999_999_999_999.0),
                ..named("just fits")
            }),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(max.annual_revenue, Some(999_999_999_999_999.0));
    let (status, _, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts",
            Some(&t),
            Some(json!({"name": "x", "annual_revenue": 1e308})),
        )
        .await;
    assert_eq!(status, 400);

    // Computed: a line total beyond the range, or with too many digits.
    let acc = app.account(&t, "Buyer").await;
    let quote = app
        .quote(
            &t,
            Quote {
                account_id: acc.id.clone(),
                ..Default::default()
            },
        )
        .await;
    let line = |q: f64, p: f64| LineItem {
        quote_id: quote.id.clone(),
        quantity: Some(q),
        unit_price: Some(p),
        ..Default::default()
    };
    for (q, p) in [(1e14, 1e14), (1.234_567_89, 9.876_543_21)] {
        let e = app
            .line_items()
            .create_line_item(authed(
                &t,
                CreateLineItemRequest {
                    line_item: Some(line(q, p)),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(violations(&e), vec!["line_item.total"], "{q} × {p}");
    }
    // The quote's total is a sum: the second line would push it past 10^15.
    app.line_item(&t, line(1.0, 900_000_000_000_000.0)).await;
    let e = app
        .line_items()
        .create_line_item(authed(
            &t,
            CreateLineItemRequest {
                line_item: Some(line(1.0, 900_000_000_000_000.0)),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["line_item.total"]);
    // Everything stored reads back, one by one and in lists.
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
    assert_eq!(q.total, Some(900_000_000_000_000.0));
    assert_eq!(q.line_items.len(), 1);
    for status in [
        app.rest("GET", "/api/v1/crm/quotes", Some(&t), None)
            .await
            .0,
        app.rest("GET", "/api/v1/crm/line-items", Some(&t), None)
            .await
            .0,
        app.rest("GET", "/api/v1/crm/accounts", Some(&t), None)
            .await
            .0,
    ] {
        assert_eq!(status, 200);
    }
}

// 3. Text within the character limit but too many bytes for an index entry.
#[tokio::test]
async fn long_multibyte_text_is_refused_by_name_not_by_the_index() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    let euros = "€".repeat(1024); // 1024 characters, 3072 bytes
    let e = app
        .accounts()
        .create_account(authed(
            &t,
            create_account(Account {
                owner_id: euros.clone(),
                tags: vec![euros.clone()],
                ..named(&euros)
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violations(&e),
        vec!["account.owner_id", "account.name", "account.tags[0]"]
    );
    let (status, e, _) = app
        .rest(
            "POST",
            "/api/v1/crm/deals",
            Some(&t),
            Some(json!({"name": "d", "stage": euros})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        e["details"][1]["field_violations"][0]["field"], "deal.stage",
        "{e}"
    );
    // 600 of them (1800 bytes) are stored, indexed and sorted.
    let fits = "€".repeat(600);
    app.accounts()
        .create_account(authed(
            &t,
            create_account(Account {
                tags: vec![fits.clone()],
                ..named(&fits)
            }),
        ))
        .await
        .unwrap();
    let (status, body, _) = app
        .rest("GET", "/api/v1/crm/accounts?order_by=name", Some(&t), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["accounts"][0]["name"], fits.as_str());
}

// 4. Filter values Postgres cannot represent; NUL anywhere in a body.
#[tokio::test]
async fn nul_and_unrepresentable_filter_values_are_invalid_with_a_position() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    app.account(&t, "Acme").await;
    for filter in [
        "name%20%3D%20%22a%00b%22",
        "annual_revenue%20%3E%201e999999",
        "annual_revenue%20%3E%201e-999999",
        "custom_fields.n%20%3E%201e999999",
    ] {
        let (status, e, _) = app
            .rest(
                "GET",
                &format!("/api/v1/crm/accounts?filter={filter}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(status, 400, "{filter}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains("position"),
            "{filter}: {e}"
        );
    }
    let e = app
        .accounts()
        .list_accounts(authed(
            &t,
            ListAccountsRequest {
                filter: "name = \"a\0b\"".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["filter"]);
    assert!(e.message().contains("position 9"), "{}", e.message());
    for body in [
        json!({"name": "a\u{0}b"}),
        json!({"name": "x", "custom_fields": {"k\u{0}": 1}}),
        json!({"name": "x", "custom_fields": {"k": ["v\u{0}"]}}),
        json!({"name": "x", "tags": ["a\u{0}"]}),
    ] {
        let (status, e, _) = app
            .rest("POST", "/api/v1/crm/accounts", Some(&t), Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {e}");
    }
}

// 5. Constraint and lock failures that leaked as 500.
#[tokio::test]
async fn generated_numbers_cannot_be_cleared() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    let acc = app.account(&t, "A").await;
    let deal = app
        .deal(
            &t,
            Deal {
                name: "D".into(),
                account_id: acc.id.clone(),
                ..Default::default()
            },
        )
        .await;
    let (status, e, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/deals/{}?update_mask=deal_number", deal.id),
            Some(&t),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(
        e["details"][1]["field_violations"][0]["field"],
        "deal.deal_number"
    );
    let quote = app
        .quote(
            &t,
            Quote {
                account_id: acc.id.clone(),
                ..Default::default()
            },
        )
        .await;
    let e = app
        .quotes()
        .update_quote(authed(
            &t,
            UpdateQuoteRequest {
                quote: Some(Quote {
                    id: quote.id,
                    ..Default::default()
                }),
                update_mask: mask(&["quote_number"]),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["quote.quote_number"]);
}

#[tokio::test]
async fn accounts_reparented_onto_each_other_at_once_never_fail_internally() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    let reparent = |id: String, parent: String| {
        let mut c = app.accounts();
        let t = t.clone();
        async move {
            c.update_account(authed(
                &t,
                UpdateAccountRequest {
                    account: Some(Account {
                        id,
                        parent_account_id: parent,
                        ..Default::default()
                    }),
                    update_mask: mask(&["parent_account_id"]),
                    request_id: String::new(),
                },
            ))
            .await
        }
    };
    for round in 0..15 {
        let a = app.account(&t, &format!("A{round}")).await;
        let b = app.account(&t, &format!("B{round}")).await;
        let (ra, rb) = tokio::join!(
            reparent(a.id.clone(), b.id.clone()),
            reparent(b.id.clone(), a.id.clone())
        );
        let oks = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert!(oks <= 1, "round {round}: both re-parentings succeeded");
        for r in [&ra, &rb] {
            if let Err(e) = r {
                assert!(
                    matches!(e.code(), Code::InvalidArgument | Code::Aborted),
                    "round {round}: {e:?}"
                );
            }
        }
        let get = |id: String| {
            let mut c = app.accounts();
            let t = t.clone();
            async move {
                c.get_account(authed(&t, GetAccountRequest { id }))
                    .await
                    .unwrap()
                    .into_inner()
            }
        };
        let (a, b) = (get(a.id).await, get(b.id).await);
        assert!(
            !(a.parent_account_id == b.id && b.parent_account_id == a.id),
            "round {round}: a cycle was stored"
        );
    }
}

#[tokio::test]
async fn generated_numbers_skip_numbers_chosen_at_the_same_moment() {
    // Every write holds its transaction open a while before committing, so
    // the two creates overlap: one's number is inserted, not yet committed,
    // while the other checks it.
    let app = spawn_app_with(|c| c.failpoints = "before_commit=sleep(150)".into()).await;
    let t = app.token(&tenant(), "u");
    let acc = app.account(&t, "A").await;
    let create = |number: String| {
        let mut c = app.deals();
        let (t, account_id) = (t.clone(), acc.id.clone());
        async move {
            c.create_deal(authed(
                &t,
                CreateDealRequest {
                    deal: Some(Deal {
                        name: "D".into(),
                        account_id,
                        deal_number: number,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
        }
    };
    let mut last = create(String::new())
        .await
        .unwrap()
        .into_inner()
        .deal_number;
    for round in 0..12 {
        // The number the generator will try next, chosen by a client at the
        // same moment. The generator must never fail; the client may lose
        // the number to it (ALREADY_EXISTS), never to a 500.
        let (head, n) = last.rsplit_once('-').unwrap();
        let next = format!("{head}-{:05}", n.parse::<u32>().unwrap() + 1);
        let (chosen, generated) = tokio::join!(create(next.clone()), create(String::new()));
        let generated = generated
            .unwrap_or_else(|e| panic!("round {round}: generated {e:?}"))
            .into_inner()
            .deal_number;
        match chosen {
            Ok(d) => {
                assert_eq!(d.into_inner().deal_number, next);
                assert_ne!(generated, next, "round {round}");
            }
            Err(e) => {
                assert_status(&e, Code::AlreadyExists, "DUPLICATE_VALUE");
                assert_eq!(generated, next, "round {round}");
            }
        }
        last = generated.max(next);
    }
}

// 6. Structure depth and size; server-maintained fields are not held to the
// client's limits; times that would round past year 9999.
#[tokio::test]
async fn deep_json_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    for depth in [21, 34, 40, 50] {
        let (status, e, _) = app
            .rest(
                "POST",
                "/api/v1/crm/accounts",
                Some(&t),
                Some(json!({"name": "deep", "custom_fields": nested_json(depth)})),
            )
            .await;
        assert_eq!(status, 400, "{depth}: {e}");
        assert_eq!(
            e["details"][1]["field_violations"][0]["field"], "account.custom_fields",
            "{depth}"
        );
    }
    let ok = app
        .accounts()
        .create_account(authed(
            &t,
            create_account(Account {
                custom_fields: Some(nested_struct(20)),
                ..named("twenty deep")
            }),
        ))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    let e = app
        .accounts()
        .create_account(authed(
            &t,
            create_account(Account {
                custom_fields: Some(nested_struct(21)),
                ..named("too deep")
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["account.custom_fields"]);
    // Deeper than a protobuf decoder goes: the message itself is refused as
    // malformed, not as an internal error.
    let e = app
        .accounts()
        .create_account(authed(
            &t,
            create_account(Account {
                custom_fields: Some(nested_struct(60)),
                ..named("abyss")
            }),
        ))
        .await
        .unwrap_err();
    assert_status(&e, Code::InvalidArgument, "MALFORMED_MESSAGE");
}

#[tokio::test]
async fn the_last_microsecond_of_9999_reads_back() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    let acc = app.account(&t, "A").await;
    let last = Timestamp {
        seconds: 253_402_300_799,
        nanos: 999_999_999,
    };
    let deal = app
        .deal(
            &t,
            Deal {
                name: "D".into(),
                account_id: acc.id,
                expected_close_date: Some(last),
                ..Default::default()
            },
        )
        .await;
    let got = app
        .deals()
        .get_deal(authed(&t, GetDealRequest { id: deal.id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.expected_close_date,
        Some(Timestamp {
            seconds: 253_402_300_799,
            nanos: 999_999_000
        })
    );
    let (status, body, _) = app.rest("GET", "/api/v1/crm/deals", Some(&t), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["deals"][0]["expected_close_date"],
        "9999-12-31T23:59:59.999999Z"
    );
}

#[tokio::test]
async fn server_maintained_fields_are_not_held_to_the_clients_limits() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    let acc = app.account(&t, "A").await;
    let deal = app
        .deal(
            &t,
            Deal {
                name: "D".into(),
                account_id: acc.id.clone(),
                ..Default::default()
            },
        )
        .await;
    // 40 stage changes with long stage names: the audit log passes 64 KiB.
    for i in 0..40 {
        app.deals()
            .update_deal(authed(
                &t,
                UpdateDealRequest {
                    deal: Some(Deal {
                        id: deal.id.clone(),
                        stage: format!("{i}{}", "s".repeat(1000)),
                        ..Default::default()
                    }),
                    update_mask: mask(&["stage"]),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("stage change {i}: {e:?}"));
    }
    let renamed = app
        .deals()
        .update_deal(authed(
            &t,
            UpdateDealRequest {
                deal: Some(Deal {
                    id: deal.id.clone(),
                    name: "Renamed".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["name"]),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.audit_log.len(), 40);
    assert_eq!(renamed.name, "Renamed");

    // Long line descriptions: the quote's embedded summaries pass 64 KiB.
    let quote = app
        .quote(
            &t,
            Quote {
                account_id: acc.id,
                ..Default::default()
            },
        )
        .await;
    for _ in 0..2 {
        app.line_item(
            &t,
            LineItem {
                quote_id: quote.id.clone(),
                description: "d".repeat(40_000),
                quantity: Some(1.0),
                unit_price: Some(1.0),
                ..Default::default()
            },
        )
        .await;
    }
    let renamed = app
        .quotes()
        .update_quote(authed(
            &t,
            UpdateQuoteRequest {
                quote: Some(Quote {
                    id: quote.id,
                    name: "Renamed".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["name"]),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.line_items.len(), 2);
}

// 7. Identity edge cases: refused, never altered, never widened.
#[tokio::test]
async fn odd_identities_are_refused() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let app = spawn_app().await;
    let tenant_id = tenant();
    let exp = chrono::Utc::now().timestamp() + 600;
    let sign = |claims: serde_json::Value, header: &Header| {
        encode(
            header,
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let plain = Header::new(Algorithm::HS256);
    let mut crit = Header::new(Algorithm::HS256);
    crit.crit = Some(vec!["urn:example:extension".into()]);
    let bad = [
        sign(
            json!({"tenant_id": tenant_id, "sub": "", "exp": exp}),
            &plain,
        ),
        sign(
            json!({"tenant_id": tenant_id, "sub": "   ", "exp": exp}),
            &plain,
        ),
        sign(
            json!({"tenant_id": tenant_id, "sub": " padded ", "exp": exp}),
            &plain,
        ),
        sign(
            json!({"tenant_id": tenant_id, "sub": "a\u{0}b", "exp": exp}),
            &plain,
        ),
        sign(
            json!({"tenant_id": tenant_id, "sub": "u", "app_id": null, "exp": exp}),
            &plain,
        ),
        sign(
            json!({"tenant_id": tenant_id, "sub": "u", "exp": exp}),
            &crit,
        ),
    ];
    for token in &bad {
        let e = app
            .accounts()
            .create_account(authed(token, create_account(named("x"))))
            .await
            .unwrap_err();
        assert_status(&e, Code::Unauthenticated, "INVALID_CREDENTIALS");
        let (status, _, _) = app
            .rest(
                "POST",
                "/api/v1/crm/accounts",
                Some(token),
                Some(json!({"name": "x"})),
            )
            .await;
        assert_eq!(status, 401);
    }
    // The same claims done right work, and the sub is stored exactly.
    let good = sign(
        json!({"tenant_id": tenant_id, "sub": "Ada Lovelace", "exp": exp}),
        &plain,
    );
    let a = app
        .accounts()
        .create_account(authed(&good, create_account(named("x"))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.created_by, "Ada Lovelace");
    let all = app
        .accounts()
        .list_accounts(authed(&good, ListAccountsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.accounts.len(), 1, "nothing written by refused tokens");
}

// 8. Ids: no aliasing above 2^128; lowercase accepted and canonicalized
// everywhere an id is.
#[tokio::test]
async fn ids_never_alias_and_are_canonical_everywhere() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    let acc = app.account(&t, "A").await;
    let ulid = &acc.id["acc_".len()..];
    assert!(ulid.starts_with('0'));
    let alias = format!("acc_8{}", &ulid[1..]);
    let e = app
        .accounts()
        .get_account(authed(&t, GetAccountRequest { id: alias.clone() }))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["id"]);
    let (status, _, _) = app
        .rest(
            "GET",
            &format!("/api/v1/crm/accounts/{alias}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 400);
    let e = app
        .contacts()
        .create_contact(authed(
            &t,
            CreateContactRequest {
                contact: Some(Contact {
                    first_name: "x".into(),
                    account_id: alias,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["contact.account_id"]);

    let lower = acc.id.to_lowercase();
    let contact = app
        .contact(
            &t,
            Contact {
                first_name: "Low".into(),
                account_id: lower.clone(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(contact.account_id, acc.id);
    let deal = app
        .deal(
            &t,
            Deal {
                name: "D".into(),
                account_id: lower.clone(),
                contact_ids: vec![contact.id.to_lowercase(), contact.id.clone()],
                ..Default::default()
            },
        )
        .await;
    assert_eq!(deal.account_id, acc.id);
    assert_eq!(deal.contact_ids, vec![contact.id.clone()]);
    for filter in [
        format!("account_id = \"{lower}\""),
        format!("contact_ids:{}", contact.id.to_lowercase()),
    ] {
        let found = app
            .deals()
            .list_deals(authed(
                &t,
                ListDealsRequest {
                    filter: filter.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.deals.len(), 1, "{filter}");
    }
}

// 9. REST parity with grpc-gateway.
#[tokio::test]
async fn rest_behaves_like_grpc_gateway_at_the_edges() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    let (_, created, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts",
            Some(&t),
            Some(json!({"name": "Echo", "tags": ["a"]})),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/crm/accounts/{id}");
    // PATCH back what GET returned, id and all: the path wins.
    let (_, got, _) = app.rest("GET", &path, Some(&t), None).await;
    let (status, patched, _) = app.rest("PATCH", &path, Some(&t), Some(got)).await;
    assert_eq!(status, 200, "{patched}");
    // Struct keys with dots, commas and backticks are stored, not dropped.
    let (status, patched, _) = app
        .rest(
            "PATCH",
            &path,
            Some(&t),
            Some(json!({"custom_fields": {"a.b": 1, "c,d": 2, "e`f": {"g.h": 3}}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let cf = &patched["custom_fields"];
    assert_eq!(cf["a.b"].as_f64(), Some(1.0), "{patched}");
    assert_eq!(cf["c,d"].as_f64(), Some(2.0), "{patched}");
    assert_eq!(cf["e`f"]["g.h"].as_f64(), Some(3.0), "{patched}");
    // The same key named in a gRPC mask, backticked (AIP-161).
    let updated = app
        .accounts()
        .update_account(authed(
            &t,
            UpdateAccountRequest {
                account: Some(Account {
                    id: id.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["custom_fields.`a.b`"]),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<&String> = updated
        .custom_fields
        .as_ref()
        .unwrap()
        .fields
        .keys()
        .collect();
    assert_eq!(keys, vec!["c,d", "e`f"]);
    // HEAD is GET without the body.
    for p in [path.as_str(), "/api/v1/crm/accounts"] {
        let resp = app
            .http
            .head(format!("http://{}{p}", app.http_addr))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{p}");
        let len: usize = resp.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(len > 0);
        assert!(resp.bytes().await.unwrap().is_empty());
    }
    // 413 carries OUT_OF_RANGE, as the README says.
    let big = json!({"name": "x", "description": "y".repeat(5 * 1024 * 1024)});
    let (status, e, _) = app
        .rest("POST", "/api/v1/crm/accounts", Some(&t), Some(big))
        .await;
    assert_eq!((status, e["code"].as_i64()), (413, Some(11)));
}

// 10. LIKE wildcards that appear only after accent/width folding.
#[tokio::test]
async fn fullwidth_wildcards_in_search_match_themselves() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    for name in ["100% organic", "under_score", "plain"] {
        app.account(&t, name).await;
    }
    for (q, want) in [
        ("％", vec!["100% organic"]),
        ("﹪", vec!["100% organic"]),
        ("＿", vec!["under_score"]),
        ("%", vec!["100% organic"]),
    ] {
        let page = app
            .accounts()
            .list_accounts(authed(
                &t,
                ListAccountsRequest {
                    search: q.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let names: Vec<&str> = page.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, want, "search={q}");
    }
}

// 11. Metrics are labelled by known method only.
#[tokio::test]
async fn invented_methods_share_one_metric_series() {
    let app = spawn_app().await;
    for path in [
        "/crm.v1.Invented/Method1",
        "/crm.v1.AccountService/Invented2",
        "/crm.v1.Invented3",
    ] {
        let mut grpc = tonic::client::Grpc::new(app.channel.clone());
        grpc.ready().await.unwrap();
        let r: Result<tonic::Response<()>, _> = grpc
            .unary(
                tonic::Request::new(()),
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await;
        assert_eq!(code(r), Code::Unauthenticated, "{path}");
    }
    let metrics = app
        .http
        .get(format!("http://{}/metrics", app.http_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("Invented"), "{metrics}");
    assert!(
        metrics.contains("crm_requests_total{method=\"unknown\",code=\"UNAUTHENTICATED\"} 3"),
        "{metrics}"
    );
}

// 12. A client sending half a header is disconnected; connections are capped.
#[tokio::test]
async fn half_a_header_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| c.http1_header_timeout_secs = 1).await;
    let mut s = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the server closes the connection");
    // Closed (perhaps after a 408), never left open.
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => {
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"));
            let rest = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("closed after the 408");
            assert!(matches!(rest, Ok(0) | Err(_)));
        }
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The test's gRPC channel holds one connection; two more fill the cap.
    let app = spawn_app_with(|c| c.max_connections = 3).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut over = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
    let _ = over.write_all(request).await;
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(5), over.read(&mut buf))
        .await
        .expect("closed at once, not left waiting");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // A freed place is taken again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = app
        .http
        .get(format!("http://{}/metrics", app.http_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("crm_connections_refused_total 1"),
        "{metrics}"
    );
}

// 13. Identical requests give identical bytes (ordered maps in errors).
#[tokio::test]
async fn identical_errors_are_identical_bytes() {
    let app = spawn_app().await;
    let t = app.token(&tenant(), "u");
    let acc = app.account(&t, "A").await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..12 {
        let e = app
            .accounts()
            .update_account(authed(
                &t,
                UpdateAccountRequest {
                    account: Some(Account {
                        id: acc.id.clone(),
                        version: 7,
                        ..named("x")
                    }),
                    update_mask: None,
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_status(&e, Code::Aborted, "VERSION_MISMATCH");
        seen.insert(e.details().to_vec());
    }
    assert_eq!(seen.len(), 1, "gRPC error details differ between calls");
    let mut bodies = std::collections::HashSet::new();
    for _ in 0..12 {
        let resp = app
            .http
            .patch(format!(
                "http://{}/api/v1/crm/accounts/{}",
                app.http_addr, acc.id
            ))
            .bearer_auth(&t)
            .json(&json!({"name": "x", "version": 7}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 409);
        bodies.insert(resp.bytes().await.unwrap());
    }
    assert_eq!(bodies.len(), 1, "REST error bodies differ between calls");
}
