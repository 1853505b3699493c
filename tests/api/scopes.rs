//! Scopes (README "Authorization"): every method against a token that
//! holds exactly its scope and one that holds every scope but those that
//! grant it; what a read-only integration can and cannot do over gRPC and
//! REST; the change feed shows only readable collections.

use crm::auth::scope::{COLLECTIONS, PURGE, grants, table};
use crm::proto::change_service_client::ChangeServiceClient;
use crm::proto::history_service_client::HistoryServiceClient;
use crm::proto::*;
use tonic::Code;

use crate::helpers::*;

/// Every scope there is.
fn all_scopes() -> Vec<String> {
    let mut all: Vec<String> = [
        "crm:read",
        "crm:write",
        "crm:changes:read",
        "crm:webhooks:write",
        "crm:fields:write",
        PURGE,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for c in COLLECTIONS {
        all.push(format!("crm:{c}:read"));
        all.push(format!("crm:{c}:write"));
    }
    all
}

/// Calls `method` with an empty request message (its defaults) and `token`.
async fn call(app: &TestApp, method: &str, token: &str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    let path: http::uri::PathAndQuery = method.parse().unwrap();
    let request = authed(token, ());
    let r = if method.ends_with("/WatchChanges") {
        // A stream: its first answer is enough.
        grpc.server_streaming(request, path, tonic_prost::ProstCodec::<(), ()>::default())
            .await
            .map(|_| ())
    } else {
        grpc.unary(request, path, tonic_prost::ProstCodec::<(), ()>::default())
            .await
            .map(|_| ())
    };
    r.err().unwrap_or_else(|| tonic::Status::ok(""))
}

fn required_scope(status: &tonic::Status) -> String {
    assert_status(status, Code::PermissionDenied, "MISSING_SCOPE");
    let info = tonic_types::StatusExt::get_details_error_info(status).unwrap();
    info.metadata["required_scope"].clone()
}

#[tokio::test]
async fn every_method_needs_its_scope_before_any_database_work() {
    // Every request transaction fails as it begins: a call that reached the
    // database would be INTERNAL, not PERMISSION_DENIED.
    let app = spawn_app_with(|c| c.failpoints = "in_transaction=sql_error".into()).await;
    let t = tenant();
    let methods = table();
    assert!(methods.len() > 70);
    for (method, required) in methods {
        // A request naming no collection needs crm:read (then fails
        // validation); the history test below names one.
        let required = required.replace("crm:{collection}:read", "crm:read");
        // Every other scope there is: none of them grants the call.
        let others: Vec<String> = all_scopes()
            .into_iter()
            .filter(|s| !grants(Some(std::slice::from_ref(s)), &required))
            .collect();
        let denied = app.scoped_token(&t, "u", &others.join(" "));
        let status = call(&app, method, &denied).await;
        assert_eq!(required_scope(&status), required, "{method}");
        // Exactly the scope: past the check (the empty request may then
        // be invalid, or reach the failing transaction).
        let allowed = app.scoped_token(&t, "u", &required);
        let status = call(&app, method, &allowed).await;
        assert_ne!(
            status.code(),
            Code::PermissionDenied,
            "{method}: {status:?}"
        );
        // No claim: everything but erasure.
        let status = call(&app, method, &app.token(&t, "u")).await;
        if required == PURGE {
            assert_eq!(required_scope(&status), PURGE);
        } else {
            assert_ne!(
                status.code(),
                Code::PermissionDenied,
                "{method}: {status:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_integration_that_reads_deals_reads_deals_only() {
    let app = spawn_app().await;
    let t = tenant();
    let full = app.token(&t, "u");
    let acct = app.account(&full, "Acme").await;
    let deal = app
        .deal(
            &full,
            Deal {
                name: "Renewal".into(),
                account_id: acct.id.clone(),
                ..Default::default()
            },
        )
        .await;
    let reader = app.scoped_token(&t, "svc", "crm:deals:read");
    // gRPC: reads deals, writes nothing, reads nothing else.
    let got = app
        .deals()
        .get_deal(authed(
            &reader,
            GetDealRequest {
                id: deal.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.name, "Renewal");
    let listed = app
        .deals()
        .list_deals(authed(&reader, ListDealsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.deals.len(), 1);
    let err = app
        .deals()
        .create_deal(authed(
            &reader,
            CreateDealRequest {
                deal: Some(Deal {
                    name: "No".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(required_scope(&err), "crm:deals:write");
    let err = app
        .accounts()
        .get_account(authed(
            &reader,
            GetAccountRequest {
                id: acct.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(required_scope(&err), "crm:accounts:read");
    // History: of a deal yes, of an account no (the collection is the
    // request's).
    let history = HistoryServiceClient::new(app.channel.clone());
    history
        .clone()
        .list_record_history(authed(
            &reader,
            ListRecordHistoryRequest {
                collection: "deals".into(),
                id: deal.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let err = history
        .clone()
        .get_record_at(authed(
            &reader,
            GetRecordAtRequest {
                collection: "accounts".into(),
                id: acct.id.clone(),
                time: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(required_scope(&err), "crm:accounts:read");
    // REST alike: 200 for the deal, 403 with the scope for the rest.
    let (status, body, _) = app
        .rest(
            "GET",
            &format!("/api/v1/crm/deals/{}", deal.id),
            Some(&reader),
            None,
        )
        .await;
    assert_eq!((status, body["name"].as_str()), (200, Some("Renewal")));
    for (method, path, body, scope) in [
        (
            "POST",
            "/api/v1/crm/deals".to_owned(),
            Some(serde_json::json!({"name": "x"})),
            "crm:deals:write",
        ),
        (
            "GET",
            format!("/api/v1/crm/accounts/{}", acct.id),
            None,
            "crm:accounts:read",
        ),
        (
            "GET",
            "/api/v1/crm/changes".to_owned(),
            None,
            "crm:changes:read",
        ),
        (
            "GET",
            format!("/api/v1/crm/accounts/{}/history", acct.id),
            None,
            "crm:accounts:read",
        ),
        (
            "DELETE",
            format!("/api/v1/crm/deals/{}", deal.id),
            None,
            "crm:deals:write",
        ),
    ] {
        let (status, e, _) = app.rest(method, &path, Some(&reader), body).await;
        assert_eq!(status, 403, "{method} {path}: {e}");
        assert_eq!(e["details"][0]["reason"], "MISSING_SCOPE", "{e}");
        assert_eq!(e["details"][0]["metadata"]["required_scope"], scope, "{e}");
    }
    // crm:deals:write reads too; crm:read reads everything, writes nothing.
    let writer = app.scoped_token(&t, "svc", "crm:deals:write");
    app.deals()
        .get_deal(authed(
            &writer,
            GetDealRequest {
                id: deal.id.clone(),
            },
        ))
        .await
        .unwrap();
    let all_reader = app.scoped_token(&t, "svc", "crm:read");
    app.accounts()
        .get_account(authed(&all_reader, GetAccountRequest { id: acct.id }))
        .await
        .unwrap();
    let err = app
        .deals()
        .delete_deal(authed(
            &all_reader,
            DeleteDealRequest {
                id: deal.id,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(required_scope(&err), "crm:deals:write");
}

#[tokio::test]
async fn the_feed_shows_only_the_collections_a_token_can_read() {
    let app = spawn_app().await;
    let t = tenant();
    let full = app.token(&t, "u");
    let acct = app.account(&full, "Acme").await;
    app.deal(
        &full,
        Deal {
            name: "Renewal".into(),
            account_id: acct.id,
            ..Default::default()
        },
    )
    .await;
    let feed = |token: String, resource_types: Vec<String>| {
        let mut client = ChangeServiceClient::new(app.channel.clone());
        async move {
            client
                .list_changes(authed(
                    &token,
                    ListChangesRequest {
                        resource_types,
                        ..Default::default()
                    },
                ))
                .await
        }
    };
    let types = |r: &ListChangesResponse| -> Vec<String> {
        r.changes.iter().map(|c| c.resource_type.clone()).collect()
    };
    // The feed is written as the writes commit; wait until it is still.
    let mut everything = feed(full.clone(), vec![]).await.unwrap().into_inner();
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let again = feed(full.clone(), vec![]).await.unwrap().into_inner();
        let settled = again.last_sequence == everything.last_sequence
            && again.changes.iter().any(|c| c.resource_type == "deal");
        everything = again;
        if settled {
            break;
        }
    }
    let all_types = types(&everything);
    assert!(all_types.contains(&"account".to_owned()), "{all_types:?}");
    let deal_events: Vec<String> = all_types.into_iter().filter(|t| t == "deal").collect();
    assert!(!deal_events.is_empty());
    let deals = feed(
        app.scoped_token(&t, "svc", "crm:changes:read crm:deals:read"),
        vec![],
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(types(&deals), deal_events);
    // Asking for accounts it cannot read: an empty page, not an error.
    let none = feed(
        app.scoped_token(&t, "svc", "crm:changes:read crm:deals:read"),
        vec!["account".into()],
    )
    .await
    .unwrap()
    .into_inner();
    assert!(none.changes.is_empty());
    assert_eq!(none.last_sequence, everything.last_sequence);
    let nothing = feed(app.scoped_token(&t, "svc", "crm:changes:read"), vec![])
        .await
        .unwrap()
        .into_inner();
    assert!(nothing.changes.is_empty());
    assert_eq!(nothing.last_sequence, everything.last_sequence);
    // Reading deals does not read the feed.
    let err = feed(app.scoped_token(&t, "svc", "crm:deals:read"), vec![])
        .await
        .unwrap_err();
    assert_eq!(required_scope(&err), "crm:changes:read");
}
