//! The platform around the API: health, reflection, request ids, the schema
//! matching the protos, and row-level security underneath the application.

use crm::proto::*;
use sqlx::{Executor, Row};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::helpers::*;

#[tokio::test]
async fn health_reports_every_service_without_a_token() {
    let app = spawn_app().await;
    let mut h = HealthClient::new(app.channel.clone());
    for name in std::iter::once("").chain(crm::app::SERVICES) {
        let r = h
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{name}");
    }
    let e = h
        .check(HealthCheckRequest {
            service: "crm.v1.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_the_services_without_a_token() {
    let app = spawn_app().await;
    let mut r = ServerReflectionClient::new(app.channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = r
        .server_reflection_info(tokio_stream_once(req))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    let mut expected: Vec<String> = crm::app::SERVICES.iter().map(|s| s.to_string()).collect();
    expected.extend([
        "grpc.health.v1.Health".to_string(),
        "grpc.reflection.v1.ServerReflection".to_string(),
    ]);
    expected.sort();
    assert_eq!(names, expected);

    // The descriptor of a service resolves with its imports.
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "crm.v1.AccountService".into(),
        )),
    };
    let mut stream = r
        .server_reflection_info(tokio_stream_once(req))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        resp.message_response,
        Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()
    ));
}

fn tokio_stream_once<T: Send + 'static>(item: T) -> impl tonic::IntoStreamingRequest<Message = T> {
    tokio_stream::once(item)
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;
    let t = app.token("tenant-a", "user-1");
    let mut req = authed(&t, ListAccountsRequest::default());
    req.metadata_mut()
        .insert("x-request-id", "my-trace-123".parse().unwrap());
    let resp = app.accounts().list_accounts(req).await.unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap(), "my-trace-123");
    let resp = app
        .accounts()
        .list_accounts(authed(&t, ListAccountsRequest::default()))
        .await
        .unwrap();
    let generated = resp
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(generated.len(), 26);
}

#[tokio::test]
async fn every_proto_field_has_a_column_of_its_type() {
    let app = spawn_app().await;
    let mut conn = app.owner_conn().await;
    let kinds = [
        &crm::entities::account::KIND,
        &crm::entities::contact::KIND,
        &crm::entities::deal::KIND,
        &crm::entities::activity::KIND,
        &crm::entities::quote::KIND,
        &crm::entities::line_item::KIND,
    ];
    for kind in kinds {
        let rows = sqlx::query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 AND is_generated = 'NEVER' \
             ORDER BY ordinal_position",
        )
        .bind(kind.table)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut columns: Vec<(String, String)> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        columns.sort();
        let mut expected: Vec<(String, String)> = kind
            .meta()
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.ty.pg_type().to_string()))
            .collect();
        expected.sort();
        assert_eq!(columns, expected, "table {}", kind.table);
    }
}

#[tokio::test]
async fn row_level_security_holds_underneath_the_application() {
    let app = spawn_app().await;
    let (ta, tb) = (tenant(), tenant());
    let a = app.token(&ta, "user-1");
    let b = app.token(&tb, "user-2");
    let mut c = app.accounts();
    for (t, name) in [(&a, "A1"), (&a, "A2"), (&b, "B1")] {
        c.create_account(authed(
            t,
            CreateAccountRequest {
                account: Some(Account {
                    name: name.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    }
    let mut conn = app.owner_conn().await;
    conn.execute(sqlx::AssertSqlSafe(format!("SET ROLE {}", app.app_role)))
        .await
        .unwrap();
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(!superuser && !bypass);

    // No tenant set: nothing visible, nothing writable.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let denied = sqlx::query(
        "INSERT INTO accounts (tenant_id, id, created_at, updated_at, created_by, updated_by, source, source_type, schema_version, version, name) \
         VALUES ($1, 'acc_X', now(), now(), 'u', 'u', 'edm', 'api', 1, 1, 'sneaky')",
    )
    .bind(&ta)
    .execute(&mut conn)
    .await;
    assert!(denied.is_err());

    // Tenant A set: only A's rows; writing B's tenant is refused.
    conn.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT set_config('crm.tenant_id', $1, true)")
        .bind(&ta)
        .execute(&mut conn)
        .await
        .unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM accounts ORDER BY name")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(names, vec!["A1", "A2"]);
    let updated = sqlx::query("UPDATE accounts SET name = 'x' WHERE tenant_id = $1")
        .bind(&tb)
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(updated, 0);
    let cross = sqlx::query("UPDATE accounts SET tenant_id = $1")
        .bind(&tb)
        .execute(&mut conn)
        .await;
    assert!(cross.is_err());
    conn.execute("ROLLBACK").await.unwrap();
    // The setting ended with the transaction.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn stopping_drains_and_closes_the_port() {
    let app = spawn_app().await;
    let addr = app.addr;
    let t = app.token("tenant-a", "user-1");
    app.accounts()
        .list_accounts(authed(&t, ListAccountsRequest::default()))
        .await
        .unwrap();
    let db_name = app.db_name.clone();
    app.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // The database was dropped with the app.
    let mut conn = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&format!("{}/postgres", pg_base()))
            .await
            .unwrap()
    };
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&db_name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
