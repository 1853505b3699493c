//! ContactService: names and display_name, email rules and uniqueness, phone,
//! primary contacts, opt-in stamps, references.

use crm::proto::*;
use tonic::Code;

use crate::helpers::*;

fn upd(c: Contact, m: Option<prost_types::FieldMask>) -> UpdateContactRequest {
    UpdateContactRequest {
        contact: Some(c),
        update_mask: m,
        request_id: String::new(),
    }
}

fn create(c: Contact) -> CreateContactRequest {
    CreateContactRequest {
        contact: Some(c),
        request_id: String::new(),
    }
}

#[tokio::test]
async fn display_name_is_computed_and_follows_the_names() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let c = app
        .contact(
            &t,
            Contact {
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
                ..Default::default()
            },
        )
        .await;
    assert!(c.id.starts_with("con_"));
    assert_eq!(c.display_name, "Ada Lovelace");
    let u = app
        .contacts()
        .update_contact(authed(
            &t,
            upd(
                Contact {
                    id: c.id.clone(),
                    last_name: "King".into(),
                    ..Default::default()
                },
                None,
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.display_name, "Ada King");
    // An explicit display name stays.
    let u = app
        .contacts()
        .update_contact(authed(
            &t,
            upd(
                Contact {
                    id: c.id.clone(),
                    display_name: "Countess".into(),
                    ..Default::default()
                },
                None,
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.display_name, "Countess");
    let u = app
        .contacts()
        .update_contact(authed(
            &t,
            upd(
                Contact {
                    id: c.id.clone(),
                    first_name: "Augusta".into(),
                    ..Default::default()
                },
                None,
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.display_name, "Countess");
    // Email only: the email is the display name.
    let e = app
        .contact(
            &t,
            Contact {
                email: "ops@example.com".into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(e.display_name, "ops@example.com");
    // Nothing to name the contact by.
    let err = app
        .contacts()
        .create_contact(authed(
            &t,
            create(Contact {
                job_title: "CTO".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["contact.first_name"]);
}

#[tokio::test]
async fn email_phone_and_urls_are_validated() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let err = app
        .contacts()
        .create_contact(authed(
            &t,
            create(Contact {
                first_name: "X".into(),
                email: "not-an-email".into(),
                phone: "555-0100".into(),
                linkedin_url: "linkedin.com/in/x".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    let mut f = violations(&err);
    f.sort();
    assert_eq!(
        f,
        vec!["contact.email", "contact.linkedin_url", "contact.phone"]
    );
    let c = app
        .contact(
            &t,
            Contact {
                email: "Ada@Example.COM".into(),
                phone: "+14155550100".into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(c.email, "ada@example.com");
    assert_eq!(c.phone, "+14155550100");
}

#[tokio::test]
async fn email_is_unique_per_account_among_live_contacts() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let acme = app.account(&t, "Acme").await;
    let globex = app.account(&t, "Globex").await;
    let first = app
        .contact(
            &t,
            Contact {
                account_id: acme.id.clone(),
                email: "ada@example.com".into(),
                ..Default::default()
            },
        )
        .await;
    let dup = app
        .contacts()
        .create_contact(authed(
            &t,
            create(Contact {
                account_id: acme.id.clone(),
                email: "ADA@example.com".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_status(&dup, Code::AlreadyExists, "DUPLICATE_VALUE");
    let info = tonic_types::StatusExt::get_details_error_info(&dup).unwrap();
    assert_eq!(
        info.metadata.get("field").map(String::as_str),
        Some("contact.email")
    );
    // Another account, or no account: fine.
    app.contact(
        &t,
        Contact {
            account_id: globex.id.clone(),
            email: "ada@example.com".into(),
            ..Default::default()
        },
    )
    .await;
    app.contact(
        &t,
        Contact {
            email: "ada@example.com".into(),
            ..Default::default()
        },
    )
    .await;
    // Another tenant: fine, and nothing about tenant A leaks.
    let other = app.token("tenant-b", "u2");
    let b_acc = app.account(&other, "Acme B").await;
    app.contact(
        &other,
        Contact {
            account_id: b_acc.id.clone(),
            email: "ada@example.com".into(),
            ..Default::default()
        },
    )
    .await;
    // Once the first is deleted, the address is free; undeleting it then collides.
    app.contacts()
        .delete_contact(authed(
            &t,
            DeleteContactRequest {
                id: first.id.clone(),
                version: 0,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let second = app
        .contact(
            &t,
            Contact {
                account_id: acme.id.clone(),
                email: "ada@example.com".into(),
                ..Default::default()
            },
        )
        .await;
    let err = app
        .contacts()
        .undelete_contact(authed(
            &t,
            UndeleteContactRequest {
                id: first.id.clone(),
                version: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::AlreadyExists, "DUPLICATE_VALUE");
    // Moving a contact onto a taken address: same error, on update.
    let other_contact = app
        .contact(
            &t,
            Contact {
                account_id: acme.id.clone(),
                email: "bob@example.com".into(),
                ..Default::default()
            },
        )
        .await;
    let err = app
        .contacts()
        .update_contact(authed(
            &t,
            upd(
                Contact {
                    id: other_contact.id.clone(),
                    email: second.email.clone(),
                    ..Default::default()
                },
                None,
            ),
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::AlreadyExists, "DUPLICATE_VALUE");
}

#[tokio::test]
async fn one_primary_contact_per_account() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let acme = app.account(&t, "Acme").await;
    let a = app
        .contact(
            &t,
            Contact {
                account_id: acme.id.clone(),
                first_name: "A".into(),
                is_primary: Some(true),
                ..Default::default()
            },
        )
        .await;
    let b = app
        .contact(
            &t,
            Contact {
                account_id: acme.id.clone(),
                first_name: "B".into(),
                is_primary: Some(true),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(b.is_primary, Some(true));
    let a2 = app
        .contacts()
        .get_contact(authed(&t, GetContactRequest { id: a.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a2.is_primary, Some(false));
    assert_eq!(a2.version, 2);
    // Setting A primary again clears B.
    app.contacts()
        .update_contact(authed(
            &t,
            upd(
                Contact {
                    id: a.id.clone(),
                    is_primary: Some(true),
                    ..Default::default()
                },
                None,
            ),
        ))
        .await
        .unwrap();
    let b2 = app
        .contacts()
        .get_contact(authed(&t, GetContactRequest { id: b.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b2.is_primary, Some(false));
    // Concurrent attempts still leave exactly one.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (app_c, t, acc) = (app.contacts(), t.clone(), acme.id.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = app_c;
            c.create_contact(authed(
                &t,
                create(Contact {
                    account_id: acc,
                    first_name: format!("P{i}"),
                    is_primary: Some(true),
                    ..Default::default()
                }),
            ))
            .await
            .unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let all = app
        .contacts()
        .list_contacts(authed(&t, ListContactsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .contacts;
    assert_eq!(all.iter().filter(|c| c.is_primary == Some(true)).count(), 1);
    // Without an account there is nothing to be primary at.
    let err = app
        .contacts()
        .create_contact(authed(
            &t,
            create(Contact {
                first_name: "Z".into(),
                is_primary: Some(true),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["contact.is_primary"]);
}

#[tokio::test]
async fn opting_in_stamps_the_time() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let c = app
        .contact(
            &t,
            Contact {
                first_name: "O".into(),
                opted_in: Some(true),
                ..Default::default()
            },
        )
        .await;
    let stamped = c.opted_in_at.expect("stamped");
    let given = prost_types::Timestamp {
        seconds: 1_600_000_000,
        nanos: 0,
    };
    let d = app
        .contact(
            &t,
            Contact {
                first_name: "P".into(),
                opted_in: Some(true),
                opted_in_at: Some(given),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(d.opted_in_at, Some(given));
    // Updating something else keeps the stamp; opting out clears it.
    let u = app
        .contacts()
        .update_contact(authed(
            &t,
            upd(
                Contact {
                    id: c.id.clone(),
                    job_title: "CEO".into(),
                    ..Default::default()
                },
                None,
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.opted_in_at, Some(stamped));
    let u = app
        .contacts()
        .update_contact(authed(
            &t,
            upd(
                Contact {
                    id: c.id.clone(),
                    opted_in: Some(false),
                    ..Default::default()
                },
                None,
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.opted_in, Some(false));
    assert_eq!(u.opted_in_at, None);
}

#[tokio::test]
async fn references_must_name_records_of_the_tenant_and_type() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let other = app.token("tenant-b", "u2");
    let theirs = app.account(&other, "Theirs").await;
    let their_contact = app
        .contact(
            &other,
            Contact {
                first_name: "T".into(),
                ..Default::default()
            },
        )
        .await;
    let mine = app.account(&t, "Mine").await;
    let cases = [
        Contact {
            account_id: theirs.id.clone(),
            ..Default::default()
        },
        Contact {
            account_id: "acc_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D".into(),
            ..Default::default()
        },
        Contact {
            account_id: their_contact.id.clone(),
            ..Default::default()
        },
        Contact {
            reports_to_contact_id: their_contact.id.clone(),
            ..Default::default()
        },
        Contact {
            reports_to_contact_id: mine.id.clone(),
            ..Default::default()
        },
    ];
    let fields = [
        "contact.account_id",
        "contact.account_id",
        "contact.account_id",
        "contact.reports_to_contact_id",
        "contact.reports_to_contact_id",
    ];
    for (c, field) in cases.into_iter().zip(fields) {
        let err = app
            .contacts()
            .create_contact(authed(
                &t,
                create(Contact {
                    first_name: "N".into(),
                    ..c
                }),
            ))
            .await
            .unwrap_err();
        assert_eq!(violations(&err), vec![field]);
    }
    let boss = app
        .contact(
            &t,
            Contact {
                account_id: mine.id.clone(),
                first_name: "Boss".into(),
                ..Default::default()
            },
        )
        .await;
    let c = app
        .contact(
            &t,
            Contact {
                account_id: mine.id.clone(),
                reports_to_contact_id: boss.id.clone(),
                first_name: "Emp".into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(c.reports_to_contact_id, boss.id);
}

// An integration token's write keeps the tenant's invariants over the
// records of every app, though it sees only its own: its side writes run
// across apps, stamped as its own writes.
#[tokio::test]
async fn an_apps_write_keeps_the_tenants_invariants_across_apps() {
    let app = spawn_app().await;
    let person = app.token("tenant-a", "u1");
    let x = app.app_token("tenant-a", "svc-x", "app-x");
    let y = app.app_token("tenant-a", "svc-y", "app-y");
    let acme = app.account(&x, "Acme").await;
    let by_person = app
        .contact(
            &person,
            Contact {
                account_id: acme.id.clone(),
                first_name: "P".into(),
                is_primary: Some(true),
                ..Default::default()
            },
        )
        .await;
    // App X cannot see the person's contact, yet its new primary demotes it.
    let by_x = app
        .contact(
            &x,
            Contact {
                account_id: acme.id.clone(),
                first_name: "X".into(),
                is_primary: Some(true),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(by_x.is_primary, Some(true));
    let p = app
        .contacts()
        .get_contact(authed(
            &person,
            GetContactRequest {
                id: by_person.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.is_primary, Some(false));
    assert_eq!(p.version, 2);
    assert_eq!(p.updated_by, "svc-x");
    let e = app
        .contacts()
        .get_contact(authed(
            &x,
            GetContactRequest {
                id: by_person.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    // Numbers are the tenant's, whichever app takes one.
    let d1 = app
        .deal(
            &x,
            Deal {
                name: "X's".into(),
                account_id: acme.id.clone(),
                ..Default::default()
            },
        )
        .await;
    let own = app.account(&y, "Own").await;
    let d2 = app
        .deal(
            &y,
            Deal {
                name: "Y's".into(),
                account_id: own.id.clone(),
                ..Default::default()
            },
        )
        .await;
    assert_ne!(d1.deal_number, d2.deal_number);
}
