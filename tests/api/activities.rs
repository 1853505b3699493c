//! ActivityService: the append-only log, its type and time mirrors, and the
//! rollups onto accounts and contacts.

use crm::proto::*;
use prost_types::Timestamp;

use crate::helpers::*;

fn create(a: Activity) -> CreateActivityRequest {
    CreateActivityRequest {
        activity: Some(a),
        request_id: String::new(),
    }
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

#[tokio::test]
async fn activities_need_a_subject_and_a_valid_type() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let acc = app.account(&t, "Acme").await;
    let err = app
        .activities()
        .create_activity(authed(
            &t,
            create(Activity {
                r#type: "fax".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    let mut f = violations(&err);
    f.sort();
    assert_eq!(f, vec!["activity.account_id", "activity.type"]);
    let err = app
        .activities()
        .create_activity(authed(
            &t,
            create(Activity {
                account_id: acc.id.clone(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["activity.type"]);

    // The allowed values are exact (as the proto and OpenAPI list them).
    let err = app
        .activities()
        .create_activity(authed(
            &t,
            create(Activity {
                account_id: acc.id.clone(),
                r#type: "Call".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["activity.type"]);
    let a = app
        .activity(
            &t,
            Activity {
                account_id: acc.id.clone(),
                r#type: "call".into(),
                ..Default::default()
            },
        )
        .await;
    assert!(a.id.starts_with("act_"));
    assert_eq!(a.r#type, "call");
    assert_eq!(a.activity_type, "call");
    // Both times are set and equal (now, when neither was given).
    assert!(a.occurred_at.is_some());
    assert_eq!(a.occurred_at, a.activity_date);
    // activity_type alone provides the type.
    let b = app
        .activity(
            &t,
            Activity {
                account_id: acc.id.clone(),
                activity_type: "meeting".into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(b.r#type, "meeting");
    // A free-form activity_type stays as given.
    let c = app
        .activity(
            &t,
            Activity {
                account_id: acc.id.clone(),
                r#type: "email".into(),
                activity_type: "newsletter".into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        (c.r#type.as_str(), c.activity_type.as_str()),
        ("email", "newsletter")
    );
}

#[tokio::test]
async fn occurred_at_and_activity_date_mirror_each_other() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let acc = app.account(&t, "Acme").await;
    let a = app
        .activity(
            &t,
            Activity {
                account_id: acc.id.clone(),
                r#type: "note".into(),
                occurred_at: ts(1_700_000_000),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(a.activity_date, ts(1_700_000_000));
    let b = app
        .activity(
            &t,
            Activity {
                account_id: acc.id.clone(),
                r#type: "note".into(),
                activity_date: ts(1_700_000_500),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(b.occurred_at, ts(1_700_000_500));
    let err = app
        .activities()
        .create_activity(authed(
            &t,
            create(Activity {
                account_id: acc.id.clone(),
                r#type: "note".into(),
                occurred_at: ts(1),
                activity_date: ts(2),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["activity.activity_date"]);
}

#[tokio::test]
async fn logging_moves_last_activity_and_last_interaction() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let direct = app.account(&t, "Direct").await;
    let via_deal = app.account(&t, "Via deal").await;
    let via_contact = app.account(&t, "Via contact").await;
    let untouched = app.account(&t, "Untouched").await;
    let deal = app
        .deal(
            &t,
            Deal {
                account_id: via_deal.id.clone(),
                name: "D".into(),
                ..Default::default()
            },
        )
        .await;
    let contact = app
        .contact(
            &t,
            Contact {
                account_id: via_contact.id.clone(),
                first_name: "C".into(),
                ..Default::default()
            },
        )
        .await;
    let guest = app
        .contact(
            &t,
            Contact {
                first_name: "Guest".into(),
                ..Default::default()
            },
        )
        .await;

    let at = 1_790_000_000;
    app.activity(
        &t,
        Activity {
            account_id: direct.id.clone(),
            r#type: "call".into(),
            occurred_at: ts(at),
            ..Default::default()
        },
    )
    .await;
    app.activity(
        &t,
        Activity {
            deal_id: deal.id.clone(),
            r#type: "email".into(),
            occurred_at: ts(at + 1),
            ..Default::default()
        },
    )
    .await;
    app.activity(
        &t,
        Activity {
            contact_id: contact.id.clone(),
            contact_ids: vec![guest.id.clone()],
            r#type: "meeting".into(),
            occurred_at: ts(at + 2),
            ..Default::default()
        },
    )
    .await;

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
    let d = get(direct.id.clone()).await;
    assert_eq!(d.last_activity_at, ts(at));
    assert_eq!(d.version, 2, "a rollup is a change");
    assert_eq!(get(via_deal.id.clone()).await.last_activity_at, ts(at + 1));
    assert_eq!(
        get(via_contact.id.clone()).await.last_activity_at,
        ts(at + 2)
    );
    assert_eq!(get(untouched.id.clone()).await.last_activity_at, None);
    for id in [contact.id.clone(), guest.id.clone()] {
        let c = app
            .contacts()
            .get_contact(authed(&t, GetContactRequest { id }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(c.last_interaction_at, ts(at + 2));
    }

    // A backdated activity does not move the time back.
    app.activity(
        &t,
        Activity {
            account_id: direct.id.clone(),
            r#type: "note".into(),
            occurred_at: ts(at - 1000),
            ..Default::default()
        },
    )
    .await;
    let d2 = get(direct.id.clone()).await;
    assert_eq!(d2.last_activity_at, ts(at));
    assert_eq!(d2.version, 2);
}

#[tokio::test]
async fn activity_references_are_checked() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let other = app.token("tenant-b", "u2");
    let their_deal = {
        let acc = app.account(&other, "B").await;
        app.deal(
            &other,
            Deal {
                account_id: acc.id,
                name: "BD".into(),
                ..Default::default()
            },
        )
        .await
    };
    let acc = app.account(&t, "A").await;
    let err = app
        .activities()
        .create_activity(authed(
            &t,
            create(Activity {
                deal_id: their_deal.id.clone(),
                contact_id: acc.id.clone(),
                contact_ids: vec!["con_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D".into()],
                r#type: "call".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    let mut f = violations(&err);
    f.sort();
    assert_eq!(
        f,
        vec![
            "activity.contact_id",
            "activity.contact_ids[0]",
            "activity.deal_id"
        ]
    );
}
