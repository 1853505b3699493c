//! REST: the transcoder against the gRPC API. Conformance runs the same
//! scenario over gRPC and over REST for every entity and compares the results
//! field by field; the rest checks grpc-gateway's behaviour and that REST
//! gets every check gRPC gets.

use crm::proto::*;
use prost::Message;
use prost_reflect::{DynamicMessage, ReflectMessage, Value as PValue};
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::*;

/// Decodes proto3 JSON into `T` (the way any client would).
fn from_json<T: Message + Default>(name: &str, json: &Value) -> T {
    let desc = crm::proto::DESCRIPTOR_POOL
        .get_message_by_name(name)
        .unwrap();
    let msg = DynamicMessage::deserialize(desc, json.clone())
        .unwrap_or_else(|e| panic!("{name}: {e}: {json}"));
    msg.transcode_to().unwrap()
}

const VOLATILE: [&str; 11] = [
    "id",
    "created_at",
    "updated_at",
    "deleted_at",
    "changed_at",
    "occurred_at",
    "activity_date",
    "opted_in_at",
    "actual_close_date",
    "deal_number",
    "quote_number",
];

/// `rec` without the fields that differ between two otherwise equal records
/// (ids, times, generated numbers), at any depth.
fn stable<T: Message + Default>(name: &str, rec: &T) -> T {
    fn clear(m: &mut DynamicMessage) {
        let fields: Vec<_> = m.descriptor().fields().collect();
        for f in fields {
            if !m.has_field(&f) {
                continue;
            }
            if VOLATILE.contains(&f.name()) {
                m.clear_field(&f);
                continue;
            }
            match m.get_field_mut(&f) {
                PValue::Message(child) => clear(child),
                PValue::List(items) => items.iter_mut().for_each(|i| {
                    if let PValue::Message(c) = i {
                        clear(c)
                    }
                }),
                _ => {}
            }
        }
    }
    let desc = crm::proto::DESCRIPTOR_POOL
        .get_message_by_name(name)
        .unwrap();
    let mut m = DynamicMessage::decode(desc, rec.encode_to_vec().as_slice()).unwrap();
    clear(&mut m);
    m.transcode_to().unwrap()
}

/// Runs one entity's scenario over both transports.
macro_rules! conformance {
    ($test:ident, $T:ident, $name:literal, $collection:literal, $client:ident,
     $Create:ident { $field:ident }, $create:ident, $Get:ident, $get:ident, $List:ident => $ListResp:ident, $list:ident -> $items:ident,
     input: $input:expr, invalid: $invalid:expr
     $(, patch: $patch:expr, $Update:ident, $update:ident, $Delete:ident, $delete:ident, $Undelete:ident, $undelete:ident)?) => {
        #[tokio::test]
        async fn $test() {
            let app = spawn_app().await;
            let t = app.token("tenant-a", "u1");
            let deps = deps(&app, &t).await;
            let input: Value = ($input)(&deps);
            let path = concat!("/api/v1/crm/", $collection);
            let mut c = app.$client();

            // Create.
            let g = c.$create(authed(&t, $Create { $field: Some(from_json($name, &input)), request_id: String::new() })).await.unwrap().into_inner();
            let (status, body, _) = app.rest("POST", path, Some(&t), Some(input.clone())).await;
            assert_eq!(status, 200, "{body}");
            assert!(body["created_at"].as_str().unwrap().ends_with('Z'), "{body}");
            assert!(body.get("tenant_id").is_some() && body.get("tenantId").is_none(), "snake_case output: {body}");
            let r: $T = from_json($name, &body);
            assert_eq!(stable($name, &g), stable($name, &r));

            // Get.
            let gg = c.$get(authed(&t, $Get { id: g.id.clone() })).await.unwrap().into_inner();
            let (status, body, _) = app.rest("GET", &format!("{path}/{}", g.id), Some(&t), None).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(gg, from_json::<$T>($name, &body), "GET returns the very same record");
            let (_, body, _) = app.rest("GET", &format!("{path}/{}", r.id), Some(&t), None).await;
            let rr: $T = from_json($name, &body);
            assert_eq!(stable($name, &gg), stable($name, &rr));

            $(
            // A PATCH without update_mask writes the body's keys (Struct keys
            // one by one): over gRPC that is the mask naming those paths.
            let (patch, paths): (Value, Vec<&str>) = $patch;
            let mut upd: $T = from_json($name, &patch);
            upd.id = gg.id.clone();
            let g2 = c.$update(authed(&t, $Update { $field: Some(upd), update_mask: mask(&paths), request_id: String::new() })).await.unwrap().into_inner();
            let (status, body, _) = app.rest("PATCH", &format!("{path}/{}", rr.id), Some(&t), Some(patch.clone())).await;
            assert_eq!(status, 200, "{body}");
            let r2: $T = from_json($name, &body);
            assert_eq!(stable($name, &g2), stable($name, &r2));
            assert_eq!(r2.version, 2);

            // Delete with a version, and undelete.
            let g3 = c.$delete(authed(&t, $Delete { id: g2.id.clone(), version: 2, request_id: String::new() })).await.unwrap().into_inner();
            let (status, body, _) = app.rest("DELETE", &format!("{path}/{}?version=2", r2.id), Some(&t), None).await;
            assert_eq!(status, 200, "{body}");
            let r3: $T = from_json($name, &body);
            assert!(r3.is_deleted);
            assert_eq!(stable($name, &g3), stable($name, &r3));
            let (status, body, _) = app.rest("DELETE", &format!("{path}/{}", r2.id), Some(&t), None).await;
            assert_eq!((status, body["code"].as_i64()), (404, Some(5)), "{body}");
            let g4 = c.$undelete(authed(&t, $Undelete { id: g3.id.clone(), version: 0 })).await.unwrap().into_inner();
            let (status, body, _) = app.rest("POST", &format!("{path}/{}:undelete", r3.id), Some(&t), Some(json!({"version": 3}))).await;
            assert_eq!(status, 200, "{body}");
            let r4: $T = from_json($name, &body);
            assert_eq!(stable($name, &g4), stable($name, &r4));
            let (status, body, _) = app.rest("POST", &format!("{path}/{}:undelete", r3.id), Some(&t), None).await;
            assert_eq!((status, body["code"].as_i64()), (409, Some(6)), "{body}");
            )?

            // List: the same page, byte for byte as data.
            let gl = c.$list(authed(&t, $List { page_size: 50, ..Default::default() })).await.unwrap().into_inner();
            let (status, body, _) = app.rest("GET", &format!("{path}?page_size=50"), Some(&t), None).await;
            assert_eq!(status, 200, "{body}");
            let rl: $ListResp = from_json(concat!("crm.v1.", stringify!($ListResp)), &body);
            assert!(gl.$items.iter().any(|x| x.id == g.id) && gl.$items.iter().any(|x| x.id == r.id));
            assert_eq!(gl.$items, rl.$items);

            // The same invalid input fails the same way.
            let bad: Value = ($invalid)(&deps);
            let ge = c.$create(authed(&t, $Create { $field: Some(from_json($name, &bad)), request_id: String::new() })).await.unwrap_err();
            let (status, body, _) = app.rest("POST", path, Some(&t), Some(bad)).await;
            assert_eq!(status, 400);
            assert_eq!(body["code"].as_i64(), Some(ge.code() as i64));
            assert_eq!(body["message"].as_str(), Some(ge.message()));
            let rest_fields: Vec<String> = body["details"][1]["field_violations"].as_array().unwrap().iter().map(|v| v["field"].as_str().unwrap().to_owned()).collect();
            assert_eq!(rest_fields, violations(&ge));
            assert_eq!(body["details"][0]["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
        }
    };
}

/// Records the scenarios refer to.
struct Deps {
    account: String,
    deal: String,
    quote: String,
}

async fn deps(app: &TestApp, t: &str) -> Deps {
    let account = app.account(t, "Dep").await.id;
    let deal = app
        .deal(
            t,
            Deal {
                account_id: account.clone(),
                name: "Dep deal".into(),
                ..Default::default()
            },
        )
        .await
        .id;
    let quote = app
        .quote(
            t,
            Quote {
                account_id: account.clone(),
                currency: "EUR".into(),
                ..Default::default()
            },
        )
        .await
        .id;
    Deps {
        account,
        deal,
        quote,
    }
}

conformance!(accounts_conform, Account, "crm.v1.Account", "accounts", accounts,
    CreateAccountRequest { account }, create_account, GetAccountRequest, get_account, ListAccountsRequest => ListAccountsResponse, list_accounts -> accounts,
    input: |_: &Deps| json!({"name": "Acme", "website": "https://acme.example", "annual_revenue": 1234.5, "employee_count": 12,
        "tags": ["b2b"], "custom_fields": {"tier": "gold", "n": 1.5}, "addresses": [{"city": "Paris"}],
        "first_contacted_at": "2026-01-02T03:04:05.123Z"}),
    invalid: |_: &Deps| json!({"website": "nope", "annual_revenue": -1}),
    patch: (json!({"legal_name": "Acme Ltd", "custom_fields": {"region": "eu"}, "tags": []}), vec!["legal_name", "custom_fields.region", "tags"]),
    UpdateAccountRequest, update_account, DeleteAccountRequest, delete_account, UndeleteAccountRequest, undelete_account);

conformance!(contacts_conform, Contact, "crm.v1.Contact", "contacts", contacts,
    CreateContactRequest { contact }, create_contact, GetContactRequest, get_contact, ListContactsRequest => ListContactsResponse, list_contacts -> contacts,
    input: |d: &Deps| json!({"account_id": d.account, "first_name": "Ada", "last_name": "Lovelace", "phone": "+14155550100",
        "opted_in": true, "gdpr_consent": {"basis": "consent"}}),
    invalid: |d: &Deps| json!({"account_id": d.deal, "phone": "555"}),
    patch: (json!({"job_title": "CTO", "opted_in": false}), vec!["job_title", "opted_in"]),
    UpdateContactRequest, update_contact, DeleteContactRequest, delete_contact, UndeleteContactRequest, undelete_contact);

conformance!(deals_conform, Deal, "crm.v1.Deal", "deals", deals,
    CreateDealRequest { deal }, create_deal, GetDealRequest, get_deal, ListDealsRequest => ListDealsResponse, list_deals -> deals,
    input: |d: &Deps| json!({"account_id": d.account, "name": "Big", "stage": "proposal", "value": 59.97, "currency": "USD",
        "probability": 40, "competitors": ["Initech"]}),
    invalid: |d: &Deps| json!({"account_id": d.account, "name": "x", "stage": "closed_lost", "probability": 120}),
    patch: (json!({"stage": "closed_won", "closure_notes": "signed"}), vec!["stage", "closure_notes"]),
    UpdateDealRequest, update_deal, DeleteDealRequest, delete_deal, UndeleteDealRequest, undelete_deal);

conformance!(activities_conform, Activity, "crm.v1.Activity", "activities", activities,
    CreateActivityRequest { activity }, create_activity, GetActivityRequest, get_activity, ListActivitiesRequest => ListActivitiesResponse, list_activities -> activities,
    input: |d: &Deps| json!({"account_id": d.account, "deal_id": d.deal, "type": "meeting", "subject": "Kickoff",
        "participants": [{"name": "Ada"}], "recurrence": {"freq": "weekly"}}),
    invalid: |_: &Deps| json!({"type": "fax"}));

conformance!(quotes_conform, Quote, "crm.v1.Quote", "quotes", quotes,
    CreateQuoteRequest { quote }, create_quote, GetQuoteRequest, get_quote, ListQuotesRequest => ListQuotesResponse, list_quotes -> quotes,
    input: |d: &Deps| json!({"account_id": d.account, "name": "Year one", "valid_until": "2027-01-01T00:00:00Z"}),
    invalid: |d: &Deps| json!({"account_id": d.account, "status": "signed"}),
    patch: (json!({"status": "sent", "notes": "net 30"}), vec!["status", "notes"]),
    UpdateQuoteRequest, update_quote, DeleteQuoteRequest, delete_quote, UndeleteQuoteRequest, undelete_quote);

conformance!(line_items_conform, LineItem, "crm.v1.LineItem", "line-items", line_items,
    CreateLineItemRequest { line_item }, create_line_item, GetLineItemRequest, get_line_item, ListLineItemsRequest => ListLineItemsResponse, list_line_items -> line_items,
    input: |d: &Deps| json!({"quote_id": d.quote, "description": "Seats", "quantity": 3, "unit_price": 19.99}),
    invalid: |d: &Deps| json!({"quote_id": d.quote, "quantity": 0, "unit_price": -1}),
    patch: (json!({"discount": 1.5}), vec!["discount"]),
    UpdateLineItemRequest, update_line_item, DeleteLineItemRequest, delete_line_item, UndeleteLineItemRequest, undelete_line_item);

#[tokio::test]
async fn rest_gets_every_check_grpc_gets() {
    let app = spawn_app().await;
    let a = app.token("tenant-a", "u1");
    let b = app.token("tenant-b", "u2");
    let x = app.app_token("tenant-a", "svc", "app-x");

    // No token, a bad token: 401 with the gRPC code and reason, no data.
    let (status, body, headers) = app.rest("GET", "/api/v1/crm/accounts", None, None).await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(16)), "{body}");
    assert_eq!(body["details"][0]["reason"], "MISSING_CREDENTIALS");
    assert!(headers.get("www-authenticate").is_some());
    let forged = crm::auth::mint(
        b"another-secret-another-secret-another",
        "tenant-a",
        "u1",
        None,
        60,
        None,
        None,
    )
    .unwrap();
    let (status, body, _) = app
        .rest("GET", "/api/v1/crm/accounts", Some(&forged), None)
        .await;
    assert_eq!(
        (status, body["details"][0]["reason"].as_str()),
        (401, Some("INVALID_CREDENTIALS"))
    );
    let (status, _, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts",
            Some(&forged),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, 401);

    // Tenants and apps are isolated exactly as over gRPC.
    let (_, acc, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts",
            Some(&a),
            Some(json!({"name": "A"})),
        )
        .await;
    let id = acc["id"].as_str().unwrap();
    let (status, other, _) = app
        .rest("GET", &format!("/api/v1/crm/accounts/{id}"), Some(&b), None)
        .await;
    let (status2, random, _) = app
        .rest(
            "GET",
            "/api/v1/crm/accounts/acc_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D",
            Some(&b),
            None,
        )
        .await;
    assert_eq!((status, status2), (404, 404));
    assert_eq!(
        other["details"],
        random["details"]
            .as_array()
            .map(|_| other["details"].clone())
            .unwrap()
    );
    assert_eq!(
        other["details"][0]["reason"],
        random["details"][0]["reason"]
    );
    let (status, _, _) = app
        .rest("GET", &format!("/api/v1/crm/accounts/{id}"), Some(&x), None)
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/accounts/{id}"),
            Some(&b),
            Some(json!({"name": "pwned"})),
        )
        .await;
    assert_eq!(status, 404);
    let (_, list, _) = app
        .rest("GET", "/api/v1/crm/accounts", Some(&b), None)
        .await;
    assert_eq!(list["accounts"], json!([]));
    let (_, mine, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts",
            Some(&x),
            Some(json!({"name": "By X", "app_id": "spoofed"})),
        )
        .await;
    assert_eq!(mine["app_id"], "app-x");
}

#[tokio::test]
async fn grpc_gateway_behaviour() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let (_, acc, _) = app
        .rest("POST", "/api/v1/crm/accounts?request_id=8c1f1c1e-3a4b-4d5e-9f60-718293a4b5c6", Some(&t),
            Some(json!({"name": "Acme", "legalName": "Acme Corp", "customFields": {"tier": "gold", "region": "eu"}, "tags": ["a", "b"]})))
        .await;
    // camelCase input accepted, snake_case output, all proto3 scalars emitted.
    assert_eq!(acc["legal_name"], "Acme Corp");
    assert_eq!(acc["phone"], "");
    assert_eq!(acc["is_deleted"], false);
    let id = acc["id"].as_str().unwrap().to_owned();
    // request_id from the query makes the POST idempotent.
    let (_, again, _) = app
        .rest("POST", "/api/v1/crm/accounts?request_id=8c1f1c1e-3a4b-4d5e-9f60-718293a4b5c6", Some(&t),
            Some(json!({"name": "Acme", "legalName": "Acme Corp", "customFields": {"tier": "gold", "region": "eu"}, "tags": ["a", "b"]})))
        .await;
    assert_eq!(again, acc);

    // PATCH without update_mask: exactly the keys present, Struct keys one by one.
    let (status, p, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/accounts/{id}"),
            Some(&t),
            Some(json!({"customFields": {"tier": "platinum"}, "phone": "+1 555"})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        p["custom_fields"],
        json!({"tier": "platinum", "region": "eu"})
    );
    assert_eq!(p["tags"], json!(["a", "b"]));
    assert_eq!(p["phone"], "+1 555");
    // An empty value clears a field; ?update_mask= overrides the body's keys.
    let (_, p, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/accounts/{id}"),
            Some(&t),
            Some(json!({"phone": ""})),
        )
        .await;
    assert_eq!(p["phone"], "");
    let (_, p, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/accounts/{id}?update_mask=legal_name"),
            Some(&t),
            Some(json!({"legal_name": "New", "name": "Ignored"})),
        )
        .await;
    assert_eq!(
        (p["legal_name"].as_str(), p["name"].as_str()),
        (Some("New"), Some("Acme"))
    );
    // An unknown key in a PATCH body is an error (it would silently do nothing).
    let (status, e, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/accounts/{id}"),
            Some(&t),
            Some(json!({"nmae": "typo"})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(e["message"].as_str().unwrap().contains("nmae"));
    // Version conflicts are 409 with the gRPC code 10 (ABORTED).
    let (status, e, _) = app
        .rest(
            "PATCH",
            &format!("/api/v1/crm/accounts/{id}"),
            Some(&t),
            Some(json!({"name": "x", "version": 1})),
        )
        .await;
    assert_eq!((status, e["code"].as_i64()), (409, Some(10)));
    assert_eq!(e["details"][0]["reason"], "VERSION_MISMATCH");

    // Query parameters: both spellings, unknown ones ignored, bad ones named.
    let (status, l, _) = app
        .rest(
            "GET",
            "/api/v1/crm/accounts?pageSize=1&utm_source=x&showDeleted=true",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200, "{l}");
    assert_eq!(l["accounts"].as_array().unwrap().len(), 1);
    let (status, e, _) = app
        .rest("GET", "/api/v1/crm/accounts?page_size=ten", Some(&t), None)
        .await;
    assert_eq!(status, 400);
    assert_eq!(e["details"][1]["field_violations"][0]["field"], "page_size");
    let (status, e, _) = app
        .rest("GET", "/api/v1/crm/accounts?page_size=-1", Some(&t), None)
        .await;
    assert_eq!((status, e["code"].as_i64()), (400, Some(3)));
    // A wrongly typed body field is named.
    let (status, e, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts",
            Some(&t),
            Some(json!({"name": 5})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        e["details"][1]["field_violations"][0]["field"],
        "account.name"
    );

    // Routing: unknown path 404, known path with another method 405 + Allow.
    let (status, e, _) = app.rest("GET", "/api/v1/crm/nothing", Some(&t), None).await;
    assert_eq!((status, e["code"].as_i64()), (404, Some(5)));
    assert_eq!(e["details"][0]["reason"], "ROUTE_NOT_FOUND");
    let (status, e, headers) = app
        .rest(
            "PUT",
            &format!("/api/v1/crm/accounts/{id}"),
            Some(&t),
            Some(json!({})),
        )
        .await;
    assert_eq!((status, e["code"].as_i64()), (405, Some(12)));
    assert_eq!(headers["allow"], "GET, HEAD, PATCH, DELETE");
    // A custom verb's path allows what the schema says it does, not the
    // methods of `{id}` (which does not take `…:undelete` as an id).
    for method in ["GET", "PATCH", "DELETE"] {
        let (status, _, headers) = app
            .rest(
                method,
                &format!("/api/v1/crm/accounts/{id}:undelete"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!((status, headers["allow"].to_str().unwrap()), (405, "POST"));
    }
    let openapi: Value = app
        .http
        .get(format!("http://{}/openapi.json", app.http_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ops: Vec<&String> = openapi["paths"]["/api/v1/crm/accounts/{id}:undelete"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.as_str() != "parameters")
        .collect();
    assert_eq!(ops, ["post"]);
    // Oversized bodies: 413.
    let big = json!({"name": "x", "description": "y".repeat(5 * 1024 * 1024)});
    let (status, _, _) = app
        .rest("POST", "/api/v1/crm/accounts", Some(&t), Some(big))
        .await;
    assert_eq!(status, 413);

    // x-request-id is echoed.
    let resp = app
        .http
        .get(format!("http://{}/api/v1/crm/accounts", app.http_addr))
        .bearer_auth(&t)
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-42");
}

#[tokio::test]
async fn health_openapi_and_explorer_are_served() {
    let app = spawn_app().await;
    let (status, _, _) = app.rest("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let (status, _, _) = app.rest("GET", "/readyz", None, None).await;
    assert_eq!(status, 200);
    let (status, doc, _) = app.rest("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    // Every SPEC §3 path is documented.
    for (path, verbs) in [
        ("/api/v1/crm/accounts", vec!["get", "post"]),
        ("/api/v1/crm/accounts/{id}", vec!["get", "patch", "delete"]),
        ("/api/v1/crm/accounts/{id}:undelete", vec!["post"]),
        ("/api/v1/crm/activities", vec!["get", "post"]),
        ("/api/v1/crm/line-items/{id}", vec!["patch"]),
    ] {
        for v in verbs {
            assert!(doc["paths"][path][v].is_object(), "{path} {v}");
        }
    }
    assert!(doc["paths"]["/api/v1/crm/activities/{id}"]["patch"].is_null());
    let account = &doc["components"]["schemas"]["Account"];
    assert_eq!(account["required"], json!(["name"]));
    assert_eq!(account["properties"]["created_at"]["format"], "date-time");
    assert_eq!(account["properties"]["tenant_id"]["readOnly"], true);
    assert_eq!(
        account["properties"]["source_type"]["enum"],
        json!(["frontend", "backend", "server", "system", "api", "", null]),
        "empty or null (not set) takes the default"
    );
    assert_eq!(account["properties"]["source_type"]["default"], "api");
    assert_eq!(
        doc["components"]["schemas"]["Activity"]["properties"]["type"]["enum"],
        json!(["call", "email", "meeting", "note", "task"])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    let html = app
        .http
        .get(format!("http://{}/explorer", app.http_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("crm API explorer"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the explorer loads nothing from elsewhere"
    );
}

/// The HTTP status grpc-gateway gives a gRPC code (runtime/errors.go).
fn http_of(code: Code) -> u16 {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        _ => 500,
    }
}

/// Asserts that one failure looks the same both ways: the REST status is
/// grpc-gateway's for the code, the body's `code` is the gRPC code, and the
/// message and ErrorInfo reason are the gRPC ones (`same_message`: false
/// where a request id makes each message unique). Returns the code.
fn agree(
    what: &str,
    g: &tonic::Status,
    (status, body, _): &(u16, Value, reqwest::header::HeaderMap),
    same_message: bool,
) -> Code {
    use tonic_types::StatusExt;
    assert_eq!(*status, http_of(g.code()), "{what}: {body}");
    assert_eq!(body["code"], g.code() as i32, "{what}: {body}");
    if same_message {
        assert_eq!(body["message"].as_str(), Some(g.message()), "{what}");
    }
    let reason = g
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default();
    assert!(
        !reason.is_empty(),
        "{what}: the gRPC status has an ErrorInfo"
    );
    assert_eq!(
        body["details"][0]["reason"],
        reason.as_str(),
        "{what}: {body}"
    );
    g.code()
}

#[tokio::test]
async fn grpc_and_rest_agree_on_errors_for_every_code_we_return() {
    let mut codes = std::collections::HashSet::new();
    let app = spawn_app().await;
    let tenant = tenant();
    let t = app.token(&tenant, "u1");
    let missing = "acc_01JD7Z3K8Q9W2X4Y6Z8A0B1C2D";
    let acc = app.account(&t, "Acme").await;
    let path = format!("/api/v1/crm/accounts/{}", acc.id);

    // INVALID_ARGUMENT: a required field missing.
    let g = app
        .accounts()
        .create_account(authed(
            &t,
            CreateAccountRequest {
                account: Some(Account::default()),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    let r = app
        .rest("POST", "/api/v1/crm/accounts", Some(&t), Some(json!({})))
        .await;
    codes.insert(agree("invalid", &g, &r, true));

    // NOT_FOUND.
    let g = app
        .accounts()
        .get_account(authed(&t, GetAccountRequest { id: missing.into() }))
        .await
        .unwrap_err();
    let r = app
        .rest(
            "GET",
            &format!("/api/v1/crm/accounts/{missing}"),
            Some(&t),
            None,
        )
        .await;
    codes.insert(agree("not found", &g, &r, true));
    assert_eq!(r.1["details"][0]["metadata"]["resource_type"], "account");

    // ALREADY_EXISTS: undeleting a live record.
    let g = app
        .accounts()
        .undelete_account(authed(
            &t,
            UndeleteAccountRequest {
                id: acc.id.clone(),
                version: 0,
            },
        ))
        .await
        .unwrap_err();
    let r = app
        .rest(
            "POST",
            &format!("{path}:undelete"),
            Some(&t),
            Some(json!({})),
        )
        .await;
    codes.insert(agree("already exists", &g, &r, true));

    // ABORTED: a stale version.
    let g = app
        .accounts()
        .delete_account(authed(
            &t,
            DeleteAccountRequest {
                id: acc.id.clone(),
                version: 99,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    let r = app
        .rest("DELETE", &format!("{path}?version=99"), Some(&t), None)
        .await;
    codes.insert(agree("aborted", &g, &r, true));

    // FAILED_PRECONDITION: a feed position older than what is kept.
    let mut owner = app.owner_conn().await;
    // (The head as retention would leave it after pruning events 1 to 3.)
    let moved = sqlx::query(
        "INSERT INTO change_heads (tenant_id, last_sequence, oldest_sequence) VALUES ($1, 5, 4) \
         ON CONFLICT (tenant_id) DO UPDATE SET last_sequence = 5, oldest_sequence = 4",
    )
    .bind(&tenant)
    .execute(&mut owner)
    .await
    .unwrap();
    assert_eq!(moved.rows_affected(), 1);
    let mut changes =
        crm::proto::change_service_client::ChangeServiceClient::new(app.channel.clone());
    let mut ask = ListChangesRequest {
        after_sequence: 1,
        ..Default::default()
    };
    ask.page_size = 10;
    let g = changes.list_changes(authed(&t, ask)).await.unwrap_err();
    let r = app
        .rest(
            "GET",
            "/api/v1/crm/changes?after_sequence=1&page_size=10",
            Some(&t),
            None,
        )
        .await;
    codes.insert(agree("failed precondition", &g, &r, true));

    // UNAUTHENTICATED: no token.
    let g = app
        .accounts()
        .get_account(GetAccountRequest { id: missing.into() })
        .await
        .unwrap_err();
    let r = app
        .rest(
            "GET",
            &format!("/api/v1/crm/accounts/{missing}"),
            None,
            None,
        )
        .await;
    codes.insert(agree("unauthenticated", &g, &r, true));
    app.stop().await;

    // OUT_OF_RANGE: a request over the size limit (REST answers 413, as
    // the README says, with the same code in the body).
    let small = spawn_app_with(|c| c.max_request_bytes = 2048).await;
    let t = small.token(&tenant, "u1");
    let big = "x".repeat(4096);
    let g = small
        .accounts()
        .create_account(authed(
            &t,
            CreateAccountRequest {
                account: Some(Account {
                    name: big.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(g.code(), Code::OutOfRange, "{g:?}");
    let (status, body, _) = small
        .rest(
            "POST",
            "/api/v1/crm/accounts",
            Some(&t),
            Some(json!({"name": big})),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], Code::OutOfRange as i32, "{body}");
    assert_eq!(body["details"][0]["reason"], "MESSAGE_TOO_LARGE", "{body}");
    codes.insert(Code::OutOfRange);
    small.stop().await;

    // INTERNAL: a database error inside the server (the message carries
    // the request id, so each is unique).
    let broken = spawn_app_with(|c| c.failpoints = "in_transaction=sql_error".into()).await;
    let t = broken.token(&tenant, "u1");
    let g = broken
        .accounts()
        .create_account(authed(
            &t,
            CreateAccountRequest {
                account: Some(Account {
                    name: "n".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    let r = broken
        .rest(
            "POST",
            "/api/v1/crm/accounts",
            Some(&t),
            Some(json!({"name": "n"})),
        )
        .await;
    codes.insert(agree("internal", &g, &r, false));
    broken.stop().await;

    // DEADLINE_EXCEEDED: a statement Postgres cancels at the timeout.
    let slow = spawn_app_with(|c| {
        c.failpoints = "in_transaction=sql_sleep(3000)".into();
        c.db_statement_timeout_ms = 300;
    })
    .await;
    let t = slow.token(&tenant, "u1");
    let g = slow
        .accounts()
        .create_account(authed(
            &t,
            CreateAccountRequest {
                account: Some(Account {
                    name: "n".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    let r = slow
        .rest(
            "POST",
            "/api/v1/crm/accounts",
            Some(&t),
            Some(json!({"name": "n"})),
        )
        .await;
    codes.insert(agree("deadline", &g, &r, false));
    slow.stop().await;

    // UNAVAILABLE and RESOURCE_EXHAUSTED: one connection, held by a slow
    // request, for which the next waits in vain; one request at a time, so
    // a third is turned away at once.
    for (limit, expect) in [(256, Code::Unavailable), (1, Code::ResourceExhausted)] {
        let held = spawn_app_with(|c| {
            c.failpoints = "in_transaction=sleep(2500)".into();
            c.db_pool_size = 1;
            c.db_acquire_timeout_secs = 1;
            c.max_concurrent_requests = limit;
        })
        .await;
        let t = held.token(&tenant, "u1");
        let create = |app: &TestApp| {
            let mut client = app.accounts();
            let req = authed(
                &t,
                CreateAccountRequest {
                    account: Some(Account {
                        name: "n".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
            async move { client.create_account(req).await }
        };
        let holder = tokio::spawn(create(&held));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let g = create(&held).await.unwrap_err();
        let r = held
            .rest(
                "POST",
                "/api/v1/crm/accounts",
                Some(&t),
                Some(json!({"name": "n"})),
            )
            .await;
        assert_eq!(g.code(), expect, "{g:?}");
        codes.insert(agree("busy", &g, &r, false));
        holder.await.unwrap().unwrap();
        held.stop().await;
    }

    // Every code the server's error mapping produces, but UNIMPLEMENTED
    // (which no served method returns).
    use Code::*;
    let expected = [
        InvalidArgument,
        NotFound,
        AlreadyExists,
        Aborted,
        FailedPrecondition,
        Unauthenticated,
        OutOfRange,
        Internal,
        DeadlineExceeded,
        Unavailable,
        ResourceExhausted,
    ];
    for code in expected {
        assert!(codes.contains(&code), "{code:?} was not compared");
    }
}

/// A gRPC-Web call (binary, as browser clients send it) to `method` on the
/// HTTP port: the response's message frame and its trailer frame's
/// `grpc-status` (or the header's, for a trailers-only answer).
async fn grpc_web(
    app: &TestApp,
    token: &str,
    method: &str,
    msg: &impl Message,
) -> (Option<Vec<u8>>, String) {
    let body = msg.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    let r = app
        .http
        .post(format!("http://{}/{method}", app.http_addr))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {token}"))
        .body(framed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{method}");
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/grpc-web+proto"
    );
    let header_status = r
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = r.bytes().await.unwrap();
    let (mut message, mut status) = (None, header_status);
    let mut rest = &bytes[..];
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let (flag, payload) = (rest[0], &rest[5..5 + len]);
        if flag & 0x80 == 0 {
            message = Some(payload.to_vec());
        } else {
            let trailers = String::from_utf8_lossy(payload).to_lowercase();
            status = trailers
                .lines()
                .find_map(|l| l.strip_prefix("grpc-status:"))
                .map(|s| s.trim().to_owned());
        }
        rest = &rest[5 + len..];
    }
    (
        message,
        status.expect("a gRPC-Web answer carries grpc-status"),
    )
}

#[tokio::test]
async fn browsers_call_the_services_over_grpc_web_on_the_http_port() {
    let app = spawn_app().await;
    let (acme, globex) = (app.token("acme", "ada"), app.token("globex", "bob"));
    let create = CreateAccountRequest {
        account: Some(Account {
            name: "Web".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (msg, status) = grpc_web(&app, &acme, "crm.v1.AccountService/CreateAccount", &create).await;
    assert_eq!(status, "0");
    let created = Account::decode(msg.unwrap().as_slice()).unwrap();
    assert_eq!(created.name, "Web");
    let get = GetAccountRequest {
        id: created.id.clone(),
    };
    let (msg, status) = grpc_web(&app, &acme, "crm.v1.AccountService/GetAccount", &get).await;
    assert_eq!(status, "0");
    assert_eq!(Account::decode(msg.unwrap().as_slice()).unwrap(), created);
    // The same checks as any call: another tenant sees nothing, and no
    // token is no answer.
    let (msg, status) = grpc_web(&app, &globex, "crm.v1.AccountService/GetAccount", &get).await;
    assert_eq!((msg, status.as_str()), (None, "5"));
    let (_, status) = grpc_web(&app, "", "crm.v1.AccountService/GetAccount", &get).await;
    assert_eq!(status, (Code::Unauthenticated as i32).to_string());
    app.stop().await;
}

/// The value a schema property accepts per its `enum`, `pattern`,
/// `maxLength` and `minimum`/`maximum` (what the OpenAPI document says).
fn schema_accepts(prop: &Value, v: &Value) -> bool {
    if let Some(values) = prop["enum"].as_array() {
        return values.contains(v);
    }
    match v {
        Value::String(s) => {
            let long = prop["maxLength"]
                .as_u64()
                .is_some_and(|m| s.chars().count() as u64 > m);
            let matches = prop["pattern"]
                .as_str()
                .is_none_or(|p| regex::Regex::new(p).unwrap().is_match(s));
            !long && matches
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap();
            prop["minimum"].as_f64().is_none_or(|m| x >= m)
                && prop["maximum"].as_f64().is_none_or(|m| x <= m)
                && prop["exclusiveMinimum"].as_f64().is_none_or(|m| x > m)
                && prop["exclusiveMaximum"].as_f64().is_none_or(|m| x < m)
        }
        _ => true,
    }
}

#[tokio::test]
async fn the_openapi_document_and_the_server_agree_on_what_is_valid() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let (_, doc, _) = app.rest("GET", "/openapi.json", None, None).await;
    let schemas = &doc["components"]["schemas"];
    let acc = app.account(&t, "Parent").await;

    // The proto's buf.validate rules, published as JSON Schema.
    let contact = &schemas["Contact"]["properties"];
    assert!(contact["email"]["pattern"].is_string());
    assert_eq!(contact["email"]["maxLength"], 254);
    assert!(
        contact["phone"]["pattern"]
            .as_str()
            .unwrap()
            .contains("[1-9][0-9]{6,14}")
    );
    let account = &schemas["Account"]["properties"];
    assert_eq!(account["name"]["maxLength"], 1024);
    assert_eq!(account["name"]["x-max-bytes"], 2048);
    assert_eq!(account["annual_revenue"]["minimum"], 0.0);
    assert_eq!(account["annual_revenue"]["exclusiveMaximum"], 1e15);
    assert_eq!(account["tags"]["maxItems"], 1000);
    assert_eq!(account["description"]["maxLength"], 65536);
    assert!(
        account["parent_account_id"]["pattern"]
            .as_str()
            .unwrap()
            .contains("acc_")
    );
    assert_eq!(
        schemas["Deal"]["properties"]["probability"]["maximum"],
        100.0
    );
    assert_eq!(
        schemas["LineItem"]["properties"]["quantity"]["exclusiveMinimum"],
        0.0
    );
    assert_eq!(
        doc["paths"]["/api/v1/crm/accounts/{id}"]["get"]["parameters"][0]["schema"]["pattern"],
        "^acc_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$"
    );
    // Links chain a create to the operations on the created record.
    let links = &doc["paths"]["/api/v1/crm/accounts"]["post"]["responses"]["200"]["links"];
    for op in [
        "GetAccount",
        "UpdateAccount",
        "DeleteAccount",
        "UndeleteAccount",
    ] {
        assert_eq!(links[op]["operationId"], op);
        assert_eq!(links[op]["parameters"]["id"], "$response.body#/id");
    }
    let upsert = &doc["paths"]["/api/v1/crm/accounts:upsert"]["post"]["responses"]["200"]["links"];
    assert_eq!(
        upsert["GetAccount"]["parameters"]["id"],
        "$response.body#/account/id"
    );
    // Rules between fields, from the protos' crm.v1 options.
    let any = schemas["Contact"]["anyOf"].as_array().unwrap();
    assert_eq!(any.len(), 3, "first_name, last_name or email");
    assert_eq!(
        schemas["Contact"]["allOf"][0]["then"]["required"],
        json!(["account_id"])
    );
    assert!(
        schemas["ContactPatch"]["anyOf"].is_null(),
        "a patch needs none of them"
    );
    assert_eq!(schemas["ContactPatch"]["additionalProperties"], false);
    assert_eq!(
        schemas["DealPatch"]["properties"]["deal_number"]["minLength"],
        1
    );
    assert_eq!(
        schemas["UpsertAccountRequest"]["properties"]["account"]["allOf"][1]["required"],
        json!(["external_id"])
    );
    // proto3 JSON: null is "not set" for an optional field, never for a required one.
    assert_eq!(account["legal_name"]["type"], json!(["string", "null"]));
    assert_eq!(account["name"]["type"], "string");
    // Update masks name the resource's writable fields.
    let mask = doc["paths"]["/api/v1/crm/accounts/{id}"]["patch"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "update_mask")
        .unwrap()["schema"]["pattern"]
        .as_str()
        .unwrap()
        .to_owned();
    let mask = regex::Regex::new(&mask).unwrap();
    for ok in [
        "name",
        "legal_name,legalName",
        "custom_fields.tier",
        "*",
        "",
    ] {
        assert!(mask.is_match(ok), "{ok}");
    }
    for bad in ["nmae", "name,", "tenant_id", "name.x"] {
        assert!(!mask.is_match(bad), "{bad}");
    }

    // Values on both sides of each rule: the server accepts exactly what
    // the document says it accepts.
    let cases: Vec<(&str, &str, Value, Value)> = vec![
        (
            "contacts",
            "email",
            json!({"first_name": "Ada"}),
            json!("ada@example.com"),
        ),
        (
            "contacts",
            "email",
            json!({"first_name": "Ada"}),
            json!("Ada.Lovelace+crm@Mail.Example.org"),
        ),
        (
            "contacts",
            "email",
            json!({"first_name": "Ada"}),
            json!("ada@example"),
        ),
        (
            "contacts",
            "email",
            json!({"first_name": "Ada"}),
            json!(" ada@example.com"),
        ),
        (
            "contacts",
            "email",
            json!({"first_name": "Ada"}),
            json!("a..b@example.com"),
        ),
        (
            "contacts",
            "phone",
            json!({"first_name": "Ada"}),
            json!("+14155550100"),
        ),
        (
            "contacts",
            "phone",
            json!({"first_name": "Ada"}),
            json!("+1 415 555 0100"),
        ),
        (
            "contacts",
            "phone",
            json!({"first_name": "Ada"}),
            json!("+0123456"),
        ),
        (
            "contacts",
            "linkedin_url",
            json!({"first_name": "Ada"}),
            json!("https://www.linkedin.com/in/ada"),
        ),
        (
            "contacts",
            "linkedin_url",
            json!({"first_name": "Ada"}),
            json!("linkedin.com/in/ada"),
        ),
        (
            "contacts",
            "account_id",
            json!({"first_name": "Ada"}),
            json!(acc.id.to_lowercase()),
        ),
        (
            "contacts",
            "account_id",
            json!({"first_name": "Ada"}),
            json!(format!("{}X", acc.id)),
        ),
        (
            "accounts",
            "website",
            json!({"name": "W"}),
            json!("HTTPS://EXAMPLE.COM/a?b#c"),
        ),
        (
            "accounts",
            "website",
            json!({"name": "W"}),
            json!("ftp://example.com"),
        ),
        (
            "accounts",
            "domain",
            json!({"name": "W"}),
            json!("Example.COM"),
        ),
        ("accounts", "domain", json!({"name": "W"}), json!("1.2.3.4")),
        (
            "accounts",
            "domain",
            json!({"name": "W"}),
            json!("-a.example.com"),
        ),
        (
            "accounts",
            "source_type",
            json!({"name": "W"}),
            json!("api"),
        ),
        (
            "accounts",
            "source_type",
            json!({"name": "W"}),
            json!("API"),
        ),
        (
            "accounts",
            "source_type",
            json!({"name": "W"}),
            json!(" api"),
        ),
        ("accounts", "source_type", json!({"name": "W"}), json!("")),
        ("accounts", "source_type", json!({"name": "W"}), json!(null)),
        ("accounts", "annual_revenue", json!({"name": "W"}), json!(0)),
        (
            "accounts",
            "annual_revenue",
            json!({"name": "W"}),
            json!(-0.01),
        ),
        (
            "accounts",
            "annual_revenue",
            json!({"name": "W"}),
            json!(1e15),
        ),
        (
            "accounts",
            "employee_count",
            json!({"name": "W"}),
            json!(-1),
        ),
        // 15 digits whose nearest double a fast JSON number parser misses by
        // one unit (which would then have 17): parsed exactly, accepted.
        (
            "accounts",
            "annual_revenue",
            json!({"name": "W"}),
            json!(8.82676149137624e-272),
        ),
        ("accounts", "name", json!({}), json!("x".repeat(1024))),
        ("accounts", "name", json!({}), json!("x".repeat(1025))),
        ("accounts", "name", json!({}), json!(" \t ")),
        ("accounts", "name", json!({}), json!("\u{a0}")),
        (
            "deals",
            "probability",
            json!({"name": "D", "account_id": acc.id}),
            json!(100),
        ),
        (
            "deals",
            "probability",
            json!({"name": "D", "account_id": acc.id}),
            json!(100.5),
        ),
        (
            "deals",
            "currency",
            json!({"name": "D", "account_id": acc.id}),
            json!("EUR"),
        ),
        (
            "deals",
            "currency",
            json!({"name": "D", "account_id": acc.id}),
            json!("eur"),
        ),
        (
            "deals",
            "currency",
            json!({"name": "D", "account_id": acc.id}),
            json!("XYZ"),
        ),
    ];
    let singular = |c: &str| match c {
        "accounts" => "Account",
        "contacts" => "Contact",
        _ => "Deal",
    };
    for (collection, field, base, value) in cases {
        let prop = &schemas[singular(collection)]["properties"][field];
        let mut body = base.clone();
        body[field] = value.clone();
        let valid = schema_accepts(prop, &value);
        let (status, answer, _) = app
            .rest(
                "POST",
                &format!("/api/v1/crm/{collection}"),
                Some(&t),
                Some(body),
            )
            .await;
        assert_eq!(
            status == 200,
            valid,
            "{collection}.{field} = {value}: the document says {}, the server answered {status} {answer}",
            if valid { "valid" } else { "invalid" }
        );
        if !valid {
            let named = answer["details"][1]["field_violations"][0]["field"].as_str();
            assert_eq!(named.map(|f| f.ends_with(field)), Some(true), "{answer}");
        }
    }
}

#[tokio::test]
async fn credentials_come_before_the_body_and_a_body_operation_needs_one() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    // No token: 401, however broken the body (nothing about it is judged).
    let url = format!("http://{}/api/v1/crm/accounts", app.http_addr);
    let resp = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["details"][0]["reason"], "MISSING_CREDENTIALS");
    // A create or an update without a body is refused, naming the body field;
    // `{}` is an empty update.
    let acc = app.account(&t, "Acme").await;
    let (status, body, _) = app
        .rest("POST", "/api/v1/crm/accounts", Some(&t), None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["details"][1]["field_violations"][0]["field"],
        "account"
    );
    let path = format!("/api/v1/crm/accounts/{}", acc.id);
    let (status, body, _) = app.rest("PATCH", &path, Some(&t), None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body, _) = app.rest("PATCH", &path, Some(&t), Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1, "nothing changed");
    // request_id: the hyphenated UUID form only, as the proto's pattern says.
    for (request_id, ok) in [
        ("0b6f1f3e-8d3a-4c52-9f3e-2a1c5d7e9b10", true),
        ("0B6F1F3E-8D3A-4C52-9F3E-2A1C5D7E9B11", true),
        ("0b6f1f3e8d3a4c529f3e2a1c5d7e9b12", false),
        ("{0b6f1f3e-8d3a-4c52-9f3e-2a1c5d7e9b13}", false),
    ] {
        let (status, body, _) = app
            .rest(
                "POST",
                &format!(
                    "/api/v1/crm/accounts?request_id={}",
                    request_id.replace('{', "%7B").replace('}', "%7D")
                ),
                Some(&t),
                Some(json!({"name": "Keyed"})),
            )
            .await;
        assert_eq!(status == 200, ok, "{request_id}: {status} {body}");
    }
    // Empty batches are empty answers.
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts:batchCreate",
            Some(&t),
            Some(json!({})),
        )
        .await;
    assert_eq!((status, body), (200, json!({"accounts": []})));
}

#[tokio::test]
async fn patch_bodies_name_what_they_write() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "u1");
    let acc = app.account(&t, "Acme").await;
    let path = format!("/api/v1/crm/accounts/{}", acc.id);
    // An empty ?update_mask= is no mask: the body's keys make it, so a
    // blank required field in the body is refused rather than ignored.
    let (status, body, _) = app
        .rest(
            "PATCH",
            &format!("{path}?update_mask="),
            Some(&t),
            Some(json!({"name": ""})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["details"][1]["field_violations"][0]["field"],
        "account.name"
    );
    // A body of whitespace is not an empty body: it is not JSON.
    let resp = app
        .http
        .patch(format!("http://{}{path}", app.http_addr))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body(" \n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // A JSON object may have an empty key; a PATCH writes it like any other.
    let (status, body, _) = app
        .rest(
            "PATCH",
            &path,
            Some(&t),
            Some(json!({"custom_fields": {"": 1, "a": {"": 2}}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["custom_fields"], json!({"": 1.0, "a": {"": 2.0}}));
    let (status, body, _) = app
        .rest(
            "PATCH",
            &path,
            Some(&t),
            Some(json!({"custom_fields": {"": 3}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["custom_fields"], json!({"": 3.0, "a": {"": 2.0}}));
    // An unquoted empty segment is still an error.
    let (status, _, _) = app
        .rest(
            "PATCH",
            &format!("{path}?update_mask=custom_fields."),
            Some(&t),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 400);
    // The verb of an empty id names nothing.
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/accounts/:undelete",
            Some(&t),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    // Two names at their bounds make a display name cut to its own bound,
    // not a refusal of a field the client did not send.
    let (status, body, _) = app
        .rest(
            "POST",
            "/api/v1/crm/contacts",
            Some(&t),
            Some(json!({"first_name": "é".repeat(1000), "last_name": "ö".repeat(1000)})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let display = body["display_name"].as_str().unwrap();
    assert!(
        display.chars().count() <= 1024 && display.len() <= 2048,
        "{}",
        display.len()
    );
    assert!(display.starts_with(&"é".repeat(1000)));
}
