//! Tenancy and app scope for every entity: another tenant's record is
//! NOT_FOUND exactly like a random id on every method; an integration token
//! sees only its own app's records.

use crm::proto::*;
use tonic::Code;

use crate::helpers::*;

/// One record of every kind, made by `token`.
struct Records {
    account: Account,
    contact: Contact,
    deal: Deal,
    activity: Activity,
    quote: Quote,
    line_item: LineItem,
}

async fn records(app: &TestApp, token: &str) -> Records {
    let account = app.account(token, "Acme").await;
    let contact = app
        .contact(
            token,
            Contact {
                account_id: account.id.clone(),
                first_name: "Ada".into(),
                ..Default::default()
            },
        )
        .await;
    let deal = app
        .deal(
            token,
            Deal {
                account_id: account.id.clone(),
                name: "Deal".into(),
                ..Default::default()
            },
        )
        .await;
    let activity = app
        .activity(
            token,
            Activity {
                account_id: account.id.clone(),
                r#type: "call".into(),
                ..Default::default()
            },
        )
        .await;
    let quote = app
        .quote(
            token,
            Quote {
                account_id: account.id.clone(),
                deal_id: deal.id.clone(),
                ..Default::default()
            },
        )
        .await;
    let line_item = app
        .line_item(
            token,
            LineItem {
                quote_id: quote.id.clone(),
                quantity: Some(1.0),
                unit_price: Some(10.0),
                ..Default::default()
            },
        )
        .await;
    Records {
        account,
        contact,
        deal,
        activity,
        quote,
        line_item,
    }
}

fn not_found(r: Result<impl std::fmt::Debug, tonic::Status>, id: &str) {
    let e = r.expect_err("must not succeed");
    assert_status(&e, Code::NotFound, "RESOURCE_NOT_FOUND");
    assert!(
        e.message().ends_with(&format!("{id} not found")),
        "{}",
        e.message()
    );
}

/// Asserts that `token` cannot see or touch the record `$id` through the
/// service, and that the answer is the one a random id of the kind gets.
macro_rules! invisible {
    ($app:expr, $token:expr, $client:ident, $id:expr, $random:expr,
     $get:ident($GetReq:ident), $list:ident($ListReq:ident) -> $items:ident
     $(, $update:ident($UpdReq:ident, $field:ident: $T:ident), $delete:ident($DelReq:ident), $undelete:ident($UndReq:ident))?) => {{
        let id: String = $id.clone();
        for probe in [id.clone(), $random.to_string()] {
            let mut c = $app.$client();
            not_found(c.$get(authed($token, $GetReq { id: probe.clone() })).await, &probe);
            $(
            not_found(
                c.$update(authed($token, $UpdReq { $field: Some($T { id: probe.clone(), ..Default::default() }), update_mask: mask(&["source"]), request_id: String::new() })).await,
                &probe,
            );
            not_found(c.$delete(authed($token, $DelReq { id: probe.clone(), version: 0, request_id: String::new() })).await, &probe);
            not_found(c.$undelete(authed($token, $UndReq { id: probe.clone(), version: 0 })).await, &probe);
            )?
        }
        let listed = $app.$client().$list(authed($token, $ListReq { show_deleted: true, ..Default::default() })).await.unwrap().into_inner().$items;
        assert!(listed.iter().all(|r| r.id != id), "listed another scope's record");
    }};
}

async fn assert_invisible(app: &TestApp, token: &str, r: &Records) {
    invisible!(app, token, accounts, r.account.id, "acc_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D",
        get_account(GetAccountRequest), list_accounts(ListAccountsRequest) -> accounts,
        update_account(UpdateAccountRequest, account: Account), delete_account(DeleteAccountRequest), undelete_account(UndeleteAccountRequest));
    invisible!(app, token, contacts, r.contact.id, "con_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D",
        get_contact(GetContactRequest), list_contacts(ListContactsRequest) -> contacts,
        update_contact(UpdateContactRequest, contact: Contact), delete_contact(DeleteContactRequest), undelete_contact(UndeleteContactRequest));
    invisible!(app, token, deals, r.deal.id, "deal_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D",
        get_deal(GetDealRequest), list_deals(ListDealsRequest) -> deals,
        update_deal(UpdateDealRequest, deal: Deal), delete_deal(DeleteDealRequest), undelete_deal(UndeleteDealRequest));
    invisible!(app, token, activities, r.activity.id, "act_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D",
        get_activity(GetActivityRequest), list_activities(ListActivitiesRequest) -> activities);
    invisible!(app, token, quotes, r.quote.id, "qte_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D",
        get_quote(GetQuoteRequest), list_quotes(ListQuotesRequest) -> quotes,
        update_quote(UpdateQuoteRequest, quote: Quote), delete_quote(DeleteQuoteRequest), undelete_quote(UndeleteQuoteRequest));
    invisible!(app, token, line_items, r.line_item.id, "li_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D",
        get_line_item(GetLineItemRequest), list_line_items(ListLineItemsRequest) -> line_items,
        update_line_item(UpdateLineItemRequest, line_item: LineItem), delete_line_item(DeleteLineItemRequest), undelete_line_item(UndeleteLineItemRequest));
}

#[tokio::test]
async fn another_tenant_sees_nothing_of_any_entity() {
    let app = spawn_app().await;
    let a = app.token("tenant-a", "u1");
    let b = app.token("tenant-b", "u2");
    let r = records(&app, &a).await;
    assert_invisible(&app, &b, &r).await;
    // And B cannot reference A's records from its own.
    let err = app
        .line_items()
        .create_line_item(authed(
            &b,
            CreateLineItemRequest {
                line_item: Some(LineItem {
                    quote_id: r.quote.id.clone(),
                    quantity: Some(1.0),
                    unit_price: Some(1.0),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["line_item.quote_id"]);
    // A's records are untouched.
    let q = app
        .quotes()
        .get_quote(authed(
            &a,
            GetQuoteRequest {
                id: r.quote.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.total, Some(10.0));
}

#[tokio::test]
async fn integration_tokens_are_confined_to_their_app_for_every_entity() {
    let app = spawn_app().await;
    let person = app.token("tenant-a", "u1");
    let app_x = app.app_token("tenant-a", "svc", "app-x");
    let app_y = app.app_token("tenant-a", "svc", "app-y");
    let by_person = records(&app, &person).await;
    let by_x = records(&app, &app_x).await;
    assert_eq!(by_x.line_item.app_id.as_deref(), Some("app-x"));
    assert_eq!(by_x.activity.app_id.as_deref(), Some("app-x"));
    assert_invisible(&app, &app_y, &by_x).await;
    assert_invisible(&app, &app_x, &by_person).await;
    // The person sees both.
    let all = app
        .line_items()
        .list_line_items(authed(&person, ListLineItemsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.line_items.len(), 2);
    // A person's line item on app X's quote counts in the quote's total, even
    // though app X cannot see that line.
    app.line_item(
        &person,
        LineItem {
            quote_id: by_x.quote.id.clone(),
            quantity: Some(2.0),
            unit_price: Some(5.0),
            ..Default::default()
        },
    )
    .await;
    let q = app
        .quotes()
        .get_quote(authed(
            &app_x,
            GetQuoteRequest {
                id: by_x.quote.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.total, Some(20.0));
    assert_eq!(q.line_items.len(), 2);
}
