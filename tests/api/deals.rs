//! DealService: numbers, closing rules, stage history, bounds, references.

use std::collections::HashSet;

use chrono::Datelike;
use crm::proto::*;
use tonic::Code;

use crate::helpers::*;

fn create(d: Deal) -> CreateDealRequest {
    CreateDealRequest {
        deal: Some(d),
        request_id: String::new(),
    }
}

fn upd(d: Deal) -> UpdateDealRequest {
    UpdateDealRequest {
        deal: Some(d),
        update_mask: None,
        request_id: String::new(),
    }
}

fn deal(account: &str, name: &str) -> Deal {
    Deal {
        account_id: account.into(),
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn deal_numbers_are_generated_per_tenant_and_unique() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let acc = app.account(&t, "Acme").await;
    let year = chrono::Utc::now().year();
    let d1 = app.deal(&t, deal(&acc.id, "First")).await;
    assert!(d1.id.starts_with("deal_"));
    assert_eq!(d1.deal_number, format!("DEAL-{year}-00001"));
    let d2 = app.deal(&t, deal(&acc.id, "Second")).await;
    assert_eq!(d2.deal_number, format!("DEAL-{year}-00002"));
    // Another tenant has its own counter.
    let other = app.token("tenant-b", "u2");
    let b_acc = app.account(&other, "B").await;
    assert_eq!(
        app.deal(&other, deal(&b_acc.id, "B1")).await.deal_number,
        format!("DEAL-{year}-00001")
    );
    // A client-chosen number is kept, must be unique, and is skipped by the counter.
    let mine = app
        .deal(
            &t,
            Deal {
                deal_number: format!("DEAL-{year}-00003"),
                ..deal(&acc.id, "Chosen")
            },
        )
        .await;
    assert_eq!(mine.deal_number, format!("DEAL-{year}-00003"));
    let dup = app
        .deals()
        .create_deal(authed(
            &t,
            create(Deal {
                deal_number: format!("DEAL-{year}-00003"),
                ..deal(&acc.id, "Dup")
            }),
        ))
        .await
        .unwrap_err();
    assert_status(&dup, Code::AlreadyExists, "DUPLICATE_VALUE");
    assert_eq!(
        app.deal(&t, deal(&acc.id, "Next")).await.deal_number,
        format!("DEAL-{year}-00004")
    );
}

#[tokio::test]
async fn fifty_concurrent_creates_get_fifty_numbers() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let acc = app.account(&t, "Acme").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (mut c, t, acc) = (app.deals(), t.clone(), acc.id.clone());
        tasks.push(tokio::spawn(async move {
            c.create_deal(authed(&t, create(deal(&acc, &format!("D{i}")))))
                .await
                .unwrap()
                .into_inner()
                .deal_number
        }));
    }
    let mut numbers = HashSet::new();
    for task in tasks {
        numbers.insert(task.await.unwrap());
    }
    assert_eq!(numbers.len(), 50);
    let year = chrono::Utc::now().year();
    let expected: HashSet<String> = (1..=50).map(|n| format!("DEAL-{year}-{n:05}")).collect();
    assert_eq!(numbers, expected);
}

#[tokio::test]
async fn closing_rules_and_stage_history() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let acc = app.account(&t, "Acme").await;
    let d = app
        .deal(
            &t,
            Deal {
                stage: "qualification".into(),
                ..deal(&acc.id, "Big")
            },
        )
        .await;
    assert_eq!(d.audit_log.len(), 1);
    assert_eq!(
        (
            d.audit_log[0].from_stage.as_str(),
            d.audit_log[0].to_stage.as_str()
        ),
        ("", "qualification")
    );
    assert_eq!(d.audit_log[0].changed_by, "u1");
    assert!(d.audit_log[0].changed_at.is_some());
    assert_eq!(d.actual_close_date, None);

    // closed_lost needs both reasons.
    let err = app
        .deals()
        .update_deal(authed(
            &t,
            upd(Deal {
                id: d.id.clone(),
                stage: "closed_lost".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    let mut f = violations(&err);
    f.sort();
    assert_eq!(f, vec!["deal.loss_category", "deal.loss_reason"]);

    let u2 = app.token("tenant-a", "u2");
    let lost = app
        .deals()
        .update_deal(authed(
            &u2,
            upd(Deal {
                id: d.id.clone(),
                stage: "closed_lost".into(),
                loss_reason: "Went with a competitor".into(),
                loss_category: "competition".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(lost.actual_close_date.is_some());
    assert_eq!(lost.audit_log.len(), 2);
    assert_eq!(lost.audit_log[1].from_stage, "qualification");
    assert_eq!(lost.audit_log[1].to_stage, "closed_lost");
    assert_eq!(lost.audit_log[1].changed_by, "u2");

    // A change that is not a stage change adds no history; the audit log
    // cannot be written by clients.
    let same = app
        .deals()
        .update_deal(authed(
            &t,
            UpdateDealRequest {
                deal: Some(Deal {
                    id: d.id.clone(),
                    closure_notes: "postmortem".into(),
                    audit_log: vec![],
                    ..Default::default()
                }),
                update_mask: mask(&["closure_notes", "audit_log"]),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.audit_log, lost.audit_log);

    // closed_won with a client-given close date keeps it.
    let when = prost_types::Timestamp {
        seconds: 1_750_000_000,
        nanos: 0,
    };
    let won = app
        .deal(
            &t,
            Deal {
                stage: "closed_won".into(),
                actual_close_date: Some(when),
                ..deal(&acc.id, "Won")
            },
        )
        .await;
    assert_eq!(won.actual_close_date, Some(when));
}

#[tokio::test]
async fn bounds_and_formats() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let acc = app.account(&t, "Acme").await;
    let err = app
        .deals()
        .create_deal(authed(
            &t,
            create(Deal {
                probability: Some(101.0),
                currency: "DOLLARS".into(),
                value: Some(-5.0),
                ..deal(&acc.id, "Bad")
            }),
        ))
        .await
        .unwrap_err();
    let mut f = violations(&err);
    f.sort();
    assert_eq!(f, vec!["deal.currency", "deal.probability", "deal.value"]);
    let err = app
        .deals()
        .create_deal(authed(&t, create(Deal::default())))
        .await
        .unwrap_err();
    let mut f = violations(&err);
    f.sort();
    assert_eq!(f, vec!["deal.account_id", "deal.name"]);
    // Currency codes are the ISO 4217 codes as written: uppercase.
    let err = app
        .deals()
        .create_deal(authed(
            &t,
            create(Deal {
                currency: "eur".into(),
                ..deal(&acc.id, "Lower")
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["deal.currency"]);
    let ok = app
        .deal(
            &t,
            Deal {
                probability: Some(100.0),
                currency: "EUR".into(),
                value: Some(59.97),
                ..deal(&acc.id, "Ok")
            },
        )
        .await;
    assert_eq!(ok.currency, "EUR");
    assert_eq!(ok.value, Some(59.97));
}

#[tokio::test]
async fn deal_references() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let other = app.token("tenant-b", "u2");
    let acc = app.account(&t, "Acme").await;
    let theirs = app
        .contact(
            &other,
            Contact {
                first_name: "T".into(),
                ..Default::default()
            },
        )
        .await;
    let mine = app
        .contact(
            &t,
            Contact {
                first_name: "M".into(),
                ..Default::default()
            },
        )
        .await;
    let err = app
        .deals()
        .create_deal(authed(
            &t,
            create(Deal {
                primary_contact_id: theirs.id.clone(),
                contact_ids: vec![mine.id.clone(), theirs.id.clone()],
                quote_ids: vec!["qte_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D".into()],
                ..deal(&acc.id, "Refs")
            }),
        ))
        .await
        .unwrap_err();
    let mut f = violations(&err);
    f.sort();
    assert_eq!(
        f,
        vec![
            "deal.contact_ids[1]",
            "deal.primary_contact_id",
            "deal.quote_ids[0]"
        ]
    );
    let err = app
        .deals()
        .create_deal(authed(&t, create(deal(&mine.id, "Wrong type"))))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["deal.account_id"]);
    let d = app
        .deal(
            &t,
            Deal {
                primary_contact_id: mine.id.clone(),
                contact_ids: vec![mine.id.clone()],
                ..deal(&acc.id, "Good")
            },
        )
        .await;
    assert_eq!(d.contact_ids, vec![mine.id.clone()]);
}
