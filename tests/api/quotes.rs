//! QuoteService and LineItemService: numbers, statuses, deal links, primary
//! quotes, exact line totals and the quote rollup, under concurrency too.

use chrono::Datelike;
use crm::proto::*;
use tonic::Code;

use crate::helpers::*;

struct Fixture {
    app: TestApp,
    t: String,
    account: Account,
    deal: Deal,
}

async fn fixture() -> Fixture {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let account = app.account(&t, "Acme").await;
    let deal = app
        .deal(
            &t,
            Deal {
                account_id: account.id.clone(),
                name: "Big".into(),
                currency: "EUR".into(),
                ..Default::default()
            },
        )
        .await;
    Fixture {
        app,
        t,
        account,
        deal,
    }
}

fn line(quote: &str, q: f64, p: f64) -> LineItem {
    LineItem {
        quote_id: quote.into(),
        quantity: Some(q),
        unit_price: Some(p),
        ..Default::default()
    }
}

#[tokio::test]
async fn quotes_get_numbers_statuses_and_join_their_deal() {
    let f = fixture().await;
    let year = chrono::Utc::now().year();
    let q = f
        .app
        .quote(
            &f.t,
            Quote {
                account_id: f.account.id.clone(),
                deal_id: f.deal.id.clone(),
                ..Default::default()
            },
        )
        .await;
    assert!(q.id.starts_with("qte_"));
    assert_eq!(q.quote_number, format!("Q-{year}-00001"));
    assert_eq!(q.status, "draft");
    assert_eq!(q.currency, "EUR", "inherited from the deal");
    assert_eq!((q.value, q.total), (Some(0.0), Some(0.0)));
    let deal = f
        .app
        .deals()
        .get_deal(authed(
            &f.t,
            GetDealRequest {
                id: f.deal.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deal.quote_ids, vec![q.id.clone()]);
    assert_eq!(deal.version, f.deal.version + 1);

    let plain = f
        .app
        .quote(
            &f.t,
            Quote {
                account_id: f.account.id.clone(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(plain.currency, "USD");
    assert_eq!(plain.quote_number, format!("Q-{year}-00002"));

    let err = f
        .app
        .quotes()
        .create_quote(authed(
            &f.t,
            CreateQuoteRequest {
                quote: Some(Quote {
                    account_id: f.account.id.clone(),
                    status: "signed".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["quote.status"]);
    let err = f
        .app
        .quotes()
        .create_quote(authed(
            &f.t,
            CreateQuoteRequest {
                quote: Some(Quote::default()),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["quote.account_id"]);

    // The deal must belong to the quote's account.
    let other_acc = f.app.account(&f.t, "Other").await;
    let err = f
        .app
        .quotes()
        .create_quote(authed(
            &f.t,
            CreateQuoteRequest {
                quote: Some(Quote {
                    account_id: other_acc.id.clone(),
                    deal_id: f.deal.id.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["quote.deal_id"]);

    // Status moves; validity dates mirror.
    let until = prost_types::Timestamp {
        seconds: 1_800_000_000,
        nanos: 0,
    };
    let u = f
        .app
        .quotes()
        .update_quote(authed(
            &f.t,
            UpdateQuoteRequest {
                quote: Some(Quote {
                    id: q.id.clone(),
                    status: "sent".into(),
                    valid_until: Some(until),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.status, "sent");
    assert_eq!(u.validity_date, Some(until));
    let later = prost_types::Timestamp {
        seconds: 1_900_000_000,
        nanos: 0,
    };
    let u = f
        .app
        .quotes()
        .update_quote(authed(
            &f.t,
            UpdateQuoteRequest {
                quote: Some(Quote {
                    id: q.id.clone(),
                    validity_date: Some(later),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((u.validity_date, u.valid_until), (Some(later), Some(later)));
}

#[tokio::test]
async fn one_primary_quote_per_deal() {
    let f = fixture().await;
    let a = f
        .app
        .quote(
            &f.t,
            Quote {
                account_id: f.account.id.clone(),
                deal_id: f.deal.id.clone(),
                is_primary: Some(true),
                ..Default::default()
            },
        )
        .await;
    let b = f
        .app
        .quote(
            &f.t,
            Quote {
                account_id: f.account.id.clone(),
                deal_id: f.deal.id.clone(),
                is_primary: Some(true),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(b.is_primary, Some(true));
    let a2 = f
        .app
        .quotes()
        .get_quote(authed(&f.t, GetQuoteRequest { id: a.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a2.is_primary, Some(false));
    let err = f
        .app
        .quotes()
        .create_quote(authed(
            &f.t,
            CreateQuoteRequest {
                quote: Some(Quote {
                    account_id: f.account.id.clone(),
                    is_primary: Some(true),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["quote.is_primary"]);
}

#[tokio::test]
async fn line_totals_are_exact_and_roll_up_into_the_quote() {
    let f = fixture().await;
    let q = f
        .app
        .quote(
            &f.t,
            Quote {
                account_id: f.account.id.clone(),
                deal_id: f.deal.id.clone(),
                ..Default::default()
            },
        )
        .await;
    let l1 = f
        .app
        .line_item(
            &f.t,
            LineItem {
                description: "Seats".into(),
                ..line(&q.id, 3.0, 19.99)
            },
        )
        .await;
    assert!(l1.id.starts_with("li_"));
    assert_eq!(l1.total, Some(59.97));
    assert_eq!(l1.currency, "EUR");
    assert_eq!(l1.discount_type, "amount");
    let l2 = f
        .app
        .line_item(
            &f.t,
            LineItem {
                discount: Some(0.3),
                ..line(&q.id, 3.0, 0.1)
            },
        )
        .await;
    assert_eq!(l2.total, Some(0.0), "3 × 0.1 − 0.3 is exactly 0");
    let l3 = f
        .app
        .line_item(
            &f.t,
            LineItem {
                discount: Some(10.0),
                discount_type: "percent".into(),
                ..line(&q.id, 2.0, 50.0)
            },
        )
        .await;
    assert_eq!(l3.total, Some(90.0));

    let quote = f
        .app
        .quotes()
        .get_quote(authed(&f.t, GetQuoteRequest { id: q.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quote.total, Some(149.97));
    assert_eq!(quote.value, Some(149.97));
    assert_eq!(
        quote.version,
        q.version + 3,
        "each line write bumps the quote"
    );
    let ids: Vec<&str> = quote.line_items.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, vec![l1.id.as_str(), l2.id.as_str(), l3.id.as_str()]);
    assert_eq!(quote.line_items[0].description, "Seats");
    assert_eq!(quote.line_items[0].total, 59.97);
    assert_eq!(quote.line_items[2].discount_type, "percent");

    // Update, delete and undelete of a line roll up too.
    let u = f
        .app
        .line_items()
        .update_line_item(authed(
            &f.t,
            UpdateLineItemRequest {
                line_item: Some(LineItem {
                    id: l1.id.clone(),
                    quantity: Some(4.0),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.total, Some(79.96));
    let total = |app: &TestApp, t: String, id: String| {
        let mut c = app.quotes();
        async move {
            c.get_quote(authed(&t, GetQuoteRequest { id }))
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(
        total(&f.app, f.t.clone(), q.id.clone()).await.total,
        Some(169.96)
    );
    f.app
        .line_items()
        .delete_line_item(authed(
            &f.t,
            DeleteLineItemRequest {
                id: l3.id.clone(),
                version: 0,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let after_delete = total(&f.app, f.t.clone(), q.id.clone()).await;
    assert_eq!(after_delete.total, Some(79.96));
    assert_eq!(after_delete.line_items.len(), 2);
    f.app
        .line_items()
        .undelete_line_item(authed(
            &f.t,
            UndeleteLineItemRequest {
                id: l3.id.clone(),
                version: 0,
            },
        ))
        .await
        .unwrap();
    let back = total(&f.app, f.t.clone(), q.id.clone()).await;
    assert_eq!(back.total, Some(169.96));
    assert_eq!(back.version, q.version + 6);
}

#[tokio::test]
async fn line_item_rules() {
    let f = fixture().await;
    let q = f
        .app
        .quote(
            &f.t,
            Quote {
                account_id: f.account.id.clone(),
                deal_id: f.deal.id.clone(),
                ..Default::default()
            },
        )
        .await;
    let other_q = f
        .app
        .quote(
            &f.t,
            Quote {
                account_id: f.account.id.clone(),
                ..Default::default()
            },
        )
        .await;
    let mut c = f.app.line_items();
    let bad = |l: LineItem| CreateLineItemRequest {
        line_item: Some(l),
        request_id: String::new(),
    };
    let err = c
        .create_line_item(authed(
            &f.t,
            bad(LineItem {
                quote_id: q.id.clone(),
                quantity: Some(0.0),
                unit_price: Some(-1.0),
                discount: Some(-2.0),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    let mut v = violations(&err);
    v.sort();
    assert_eq!(
        v,
        vec![
            "line_item.discount",
            "line_item.quantity",
            "line_item.unit_price"
        ]
    );
    let err = c
        .create_line_item(authed(&f.t, bad(LineItem::default())))
        .await
        .unwrap_err();
    let mut v = violations(&err);
    v.sort();
    assert_eq!(
        v,
        vec![
            "line_item.quantity",
            "line_item.quote_id",
            "line_item.unit_price"
        ]
    );
    let err = c
        .create_line_item(authed(
            &f.t,
            bad(LineItem {
                discount: Some(101.0),
                discount_type: "percent".into(),
                ..line(&q.id, 1.0, 1.0)
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["line_item.discount"]);
    let err = c
        .create_line_item(authed(
            &f.t,
            bad(LineItem {
                discount: Some(5.0),
                ..line(&q.id, 2.0, 2.0)
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["line_item.discount"]);
    let err = c
        .create_line_item(authed(
            &f.t,
            bad(LineItem {
                discount_type: "bogo".into(),
                ..line(&q.id, 2.0, 2.0)
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["line_item.discount_type"]);
    let err = c
        .create_line_item(authed(
            &f.t,
            bad(LineItem {
                currency: "USD".into(),
                ..line(&q.id, 1.0, 1.0)
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["line_item.currency"]);
    let err = c
        .create_line_item(authed(&f.t, bad(line(&f.account.id, 1.0, 1.0))))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["line_item.quote_id"]);

    // quote_id cannot change.
    let l = f.app.line_item(&f.t, line(&q.id, 1.0, 1.0)).await;
    let err = c
        .update_line_item(authed(
            &f.t,
            UpdateLineItemRequest {
                line_item: Some(LineItem {
                    id: l.id.clone(),
                    quote_id: other_q.id.clone(),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["line_item.quote_id"]);
    // The quote's currency is fixed while it has lines.
    let err = f
        .app
        .quotes()
        .update_quote(authed(
            &f.t,
            UpdateQuoteRequest {
                quote: Some(Quote {
                    id: q.id.clone(),
                    currency: "GBP".into(),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["quote.currency"]);
    // Output-only totals cannot be written.
    let u = f
        .app
        .quotes()
        .update_quote(authed(
            &f.t,
            UpdateQuoteRequest {
                quote: Some(Quote {
                    id: q.id.clone(),
                    total: Some(1e9),
                    value: Some(1e9),
                    notes: "n".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["total", "value", "notes"]),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.total, Some(1.0));
    assert_eq!(u.value, Some(1.0));
    assert_status(
        &f.app
            .quotes()
            .get_quote(authed(
                &f.t,
                GetQuoteRequest {
                    id: "qte_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D".into(),
                },
            ))
            .await
            .unwrap_err(),
        Code::NotFound,
        "RESOURCE_NOT_FOUND",
    );
}

#[tokio::test]
async fn concurrent_line_items_never_drift_the_total() {
    let f = fixture().await;
    let q = f
        .app
        .quote(
            &f.t,
            Quote {
                account_id: f.account.id.clone(),
                ..Default::default()
            },
        )
        .await;
    let mut tasks = Vec::new();
    for i in 1..=20 {
        let (mut c, t, qid) = (f.app.line_items(), f.t.clone(), q.id.clone());
        tasks.push(tokio::spawn(async move {
            c.create_line_item(authed(
                &t,
                CreateLineItemRequest {
                    line_item: Some(LineItem {
                        quote_id: qid,
                        quantity: Some(i as f64),
                        unit_price: Some(19.99),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
        }));
    }
    let mut lines = Vec::new();
    for task in tasks {
        lines.push(task.await.unwrap());
    }
    let quote = f
        .app
        .quotes()
        .get_quote(authed(&f.t, GetQuoteRequest { id: q.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    // 19.99 × (1 + … + 20) = 19.99 × 210 = 4197.9, exactly.
    assert_eq!(quote.total, Some(4197.9));
    assert_eq!(quote.line_items.len(), 20);
    assert_eq!(quote.version, q.version + 20);
    let mut conn = f.app.owner_conn().await;
    let (stored, sum): (String, String) = sqlx::query_as(
        "SELECT q.total::text, (SELECT sum(total) FROM line_items WHERE quote_id = q.id)::text FROM quotes q WHERE id = $1",
    )
    .bind(&q.id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(stored, "4197.90");
    assert_eq!(stored, sum);
}

#[tokio::test]
async fn moving_a_quote_moves_it_between_deals() {
    let f = fixture().await;
    let second = f
        .app
        .deal(
            &f.t,
            Deal {
                account_id: f.account.id.clone(),
                name: "Second".into(),
                ..Default::default()
            },
        )
        .await;
    let q = f
        .app
        .quote(
            &f.t,
            Quote {
                account_id: f.account.id.clone(),
                deal_id: f.deal.id.clone(),
                ..Default::default()
            },
        )
        .await;
    f.app
        .quotes()
        .update_quote(authed(
            &f.t,
            UpdateQuoteRequest {
                quote: Some(Quote {
                    id: q.id.clone(),
                    deal_id: second.id.clone(),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let quote_ids = |id: String| {
        let mut c = f.app.deals();
        let t = f.t.clone();
        async move {
            c.get_deal(authed(&t, GetDealRequest { id }))
                .await
                .unwrap()
                .into_inner()
                .quote_ids
        }
    };
    assert!(quote_ids(f.deal.id.clone()).await.is_empty());
    assert_eq!(quote_ids(second.id.clone()).await, vec![q.id.clone()]);
}

/// The quote as the lines say it should be: the exact sum of the live lines'
/// totals, and the ids and totals of its first 100 live lines by creation.
async fn expected(app: &TestApp, quote: &str) -> (String, Vec<(String, f64)>) {
    let mut conn = app.owner_conn().await;
    let sum: String = sqlx::query_scalar(
        "SELECT COALESCE(sum(total), 0)::text FROM line_items WHERE quote_id = $1 AND NOT is_deleted",
    )
    .bind(quote)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let first: Vec<(String, f64)> = sqlx::query_as(
        "SELECT id, total::float8 FROM line_items WHERE quote_id = $1 AND NOT is_deleted \
         ORDER BY created_at, id LIMIT 100",
    )
    .bind(quote)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    (sum, first)
}

/// Checks the stored quote against [`expected`], and returns it.
async fn agrees(f: &Fixture, quote: &str) -> Quote {
    let got = f
        .app
        .quotes()
        .get_quote(authed(&f.t, GetQuoteRequest { id: quote.into() }))
        .await
        .unwrap()
        .into_inner();
    let (sum, first) = expected(&f.app, quote).await;
    let mut conn = f.app.owner_conn().await;
    let stored: String = sqlx::query_scalar("SELECT total::text FROM quotes WHERE id = $1")
        .bind(quote)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        stored.parse::<f64>().unwrap(),
        sum.parse::<f64>().unwrap(),
        "stored {stored}, lines sum to {sum}"
    );
    assert_eq!(got.total, Some(sum.parse().unwrap()));
    assert_eq!(got.value, got.total);
    let embedded: Vec<(String, f64)> = got
        .line_items
        .iter()
        .map(|l| (l.id.clone(), l.total))
        .collect();
    assert_eq!(embedded, first, "the first 100 live lines, in order");
    got
}

#[tokio::test]
async fn a_long_quote_embeds_its_first_hundred_lines_and_moves_its_total_exactly() {
    let f = fixture().await;
    let q = f
        .app
        .quote(
            &f.t,
            Quote {
                account_id: f.account.id.clone(),
                ..Default::default()
            },
        )
        .await;
    // 150 lines in one batch (one transaction: one created_at, ordered by id).
    let made = f
        .app
        .line_items()
        .batch_create_line_items(authed(
            &f.t,
            BatchCreateLineItemsRequest {
                requests: (1..=150)
                    .map(|i| CreateLineItemRequest {
                        line_item: Some(line(&q.id, i as f64, 0.1)),
                        request_id: String::new(),
                    })
                    .collect(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .line_items;
    let quote = agrees(&f, &q.id).await;
    assert_eq!(quote.line_items.len(), 100);
    // 0.1 × (1 + … + 150) = 1132.5, exactly.
    assert_eq!(quote.total, Some(1132.5));

    // Appending past the hundredth leaves the summaries, moves the total.
    let extra = f.app.line_item(&f.t, line(&q.id, 3.0, 0.1)).await;
    let after = agrees(&f, &q.id).await;
    assert_eq!(after.total, Some(1132.8));
    assert_eq!(after.line_items, quote.line_items);
    assert!(!after.line_items.iter().any(|l| l.id == extra.id));

    let update = |id: &str, quantity: f64| {
        let (mut c, t, id) = (f.app.line_items(), f.t.clone(), id.to_string());
        async move {
            c.update_line_item(authed(
                &t,
                UpdateLineItemRequest {
                    line_item: Some(LineItem {
                        id,
                        quantity: Some(quantity),
                        ..Default::default()
                    }),
                    update_mask: None,
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
        }
    };
    // A line beyond the summaries: the total moves, the list does not.
    update(&extra.id, 7.0).await;
    let after = agrees(&f, &q.id).await;
    assert_eq!(after.total, Some(1133.2));
    assert_eq!(after.line_items, quote.line_items);
    // A summarized line: its summary changes in place.
    let first = &quote.line_items[0].id;
    let changed = update(first, 1000.0).await;
    let after = agrees(&f, &q.id).await;
    assert_eq!(after.line_items[0].total, changed.total.unwrap());

    // Deleting a summarized line pulls the 101st in; undeleting puts it back.
    let c = f.app.line_items();
    c.clone()
        .delete_line_item(authed(
            &f.t,
            DeleteLineItemRequest {
                id: first.clone(),
                version: 0,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let after = agrees(&f, &q.id).await;
    assert_eq!(after.line_items.len(), 100);
    assert!(!after.line_items.iter().any(|l| &l.id == first));
    c.clone()
        .undelete_line_item(authed(
            &f.t,
            UndeleteLineItemRequest {
                id: first.clone(),
                version: 0,
            },
        ))
        .await
        .unwrap();
    let after = agrees(&f, &q.id).await;
    assert_eq!(&after.line_items[0].id, first);
    // Deleting a line beyond the summaries only moves the total.
    let before = after;
    let last = made
        .iter()
        .find(|l| !before.line_items.iter().any(|s| s.id == l.id))
        .unwrap();
    c.clone()
        .delete_line_item(authed(
            &f.t,
            DeleteLineItemRequest {
                id: last.id.clone(),
                version: 0,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let after = agrees(&f, &q.id).await;
    assert_eq!(after.line_items, before.line_items);
    assert_eq!(after.version, before.version + 1);
}

#[tokio::test]
async fn a_quote_grows_past_its_summaries_by_batches() {
    let f = fixture().await;
    let q = f
        .app
        .quote(
            &f.t,
            Quote {
                account_id: f.account.id.clone(),
                ..Default::default()
            },
        )
        .await;
    for _ in 0..50 {
        f.app.line_item(&f.t, line(&q.id, 2.0, 0.1)).await;
    }
    for _ in 0..3 {
        f.app
            .line_items()
            .batch_create_line_items(authed(
                &f.t,
                BatchCreateLineItemsRequest {
                    requests: (0..1000)
                        .map(|_| CreateLineItemRequest {
                            line_item: Some(line(&q.id, 2.0, 0.1)),
                            request_id: String::new(),
                        })
                        .collect(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap();
    }
    f.app.line_item(&f.t, line(&q.id, 2.0, 0.1)).await;
    let got = agrees(&f, &q.id).await;
    assert_eq!(got.total, Some(610.2));
}
