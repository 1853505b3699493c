//! `crm descriptor`: runs the real binary (with an unreachable database and no
//! keys, which it must not need) and checks that what it writes is the full
//! descriptor set Envoy's grpc_json_transcoder and `grpcurl -protoset` need,
//! and that every service `deploy/envoy/envoy.yaml` names is in it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use prost_reflect::{DescriptorPool, Value};

const SERVICES: [&str; 11] = [
    "crm.v1.AccountService",
    "crm.v1.ContactService",
    "crm.v1.DealService",
    "crm.v1.ActivityService",
    "crm.v1.QuoteService",
    "crm.v1.LineItemService",
    "crm.v1.ChangeService",
    "crm.v1.WebhookService",
    "crm.v1.FieldDefinitionService",
    "crm.v1.HistoryService",
    "crm.v1.ErasureService",
];

/// The binary, with an environment that would fail any database or key use.
fn crm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(args)
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nowhere")
        .env_remove("CRM_APP_DATABASE_URL")
        .env_remove("CRM_JWT_SECRET")
        .env_remove("CRM_JWT_JWKS_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("running crm")
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("crm-descriptor-test-{}-{name}", std::process::id()))
}

fn written_set() -> Vec<u8> {
    // A file per call: the tests that call this run in parallel.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = scratch(&format!("out-{n}.pb"));
    let out = crm(&["descriptor", "--out", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "crm descriptor --out failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "--out must leave stdout empty");
    let bytes = std::fs::read(&path).expect("reading the written descriptor set");
    std::fs::remove_file(&path).ok();
    bytes
}

#[test]
fn writes_a_complete_descriptor_set() {
    let bytes = written_set();
    let pool = DescriptorPool::decode(bytes.as_slice()).expect("the set decodes");

    // The six entity services and the change feed, nothing else in crm.v1.
    let services: BTreeSet<String> = pool
        .services()
        .filter(|s| s.package_name() == "crm.v1")
        .map(|s| s.full_name().to_owned())
        .collect();
    let expected: BTreeSet<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    assert_eq!(services, expected);

    // Every method has a google.api.http rule with a path.
    let http = pool
        .get_extension_by_name("google.api.http")
        .expect("google.api.http is in the set");
    for name in SERVICES {
        let service = pool.get_service_by_name(name).unwrap();
        let methods: BTreeSet<String> = service.methods().map(|m| m.name().to_owned()).collect();
        if name == "crm.v1.ChangeService" {
            let expected = BTreeSet::from(["ListChanges".to_owned(), "WatchChanges".to_owned()]);
            assert_eq!(methods, expected, "{name}: methods");
            let watch = service
                .methods()
                .find(|m| m.name() == "WatchChanges")
                .unwrap();
            assert!(watch.is_server_streaming(), "WatchChanges must stream");
        } else if name == "crm.v1.HistoryService" {
            let expected =
                BTreeSet::from(["GetRecordAt".to_owned(), "ListRecordHistory".to_owned()]);
            assert_eq!(methods, expected, "{name}: methods");
        } else if name == "crm.v1.ErasureService" {
            let expected = BTreeSet::from(["PurgeRecord".to_owned()]);
            assert_eq!(methods, expected, "{name}: methods");
        } else {
            assert!(methods.len() >= 3, "{name}: too few methods: {methods:?}");
        }
        for method in service.methods() {
            let options = method.options();
            assert!(
                options.has_extension(&http),
                "{} has no google.api.http rule",
                method.full_name()
            );
            let rule = options.get_extension(&http);
            let Value::Message(rule) = rule.as_ref() else {
                panic!("{}: google.api.http is not a message", method.full_name());
            };
            let verbs = ["get", "put", "post", "delete", "patch"];
            assert!(
                verbs.iter().any(|v| rule.has_field_by_name(v)),
                "{}: the http rule has no verb",
                method.full_name()
            );
        }
    }

    // Source info (comments) of every crm.v1 file.
    for file in pool.files().filter(|f| f.package_name() == "crm.v1") {
        let info = file
            .file_descriptor_proto()
            .source_code_info
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no source info", file.name()));
        assert!(
            info.location.iter().any(|l| l
                .leading_comments
                .as_deref()
                .is_some_and(|c| !c.trim().is_empty())),
            "{} has no comments",
            file.name()
        );
    }

    // The imports, and the google.rpc detail types for convert_grpc_status.
    let files: BTreeSet<String> = pool.files().map(|f| f.name().to_owned()).collect();
    for file in [
        "google/protobuf/descriptor.proto",
        "google/protobuf/timestamp.proto",
        "google/protobuf/field_mask.proto",
        "google/protobuf/struct.proto",
        "google/api/annotations.proto",
        "google/api/http.proto",
        "google/api/field_behavior.proto",
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
    ] {
        assert!(
            files.contains(file),
            "{file} is missing; the set has {files:?}"
        );
    }
    for message in [
        "google.rpc.Status",
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
    ] {
        assert!(
            pool.get_message_by_name(message).is_some(),
            "{message} is missing"
        );
    }
}

#[test]
fn stdout_gets_the_same_bytes() {
    let file = written_set();
    for args in [&["descriptor"][..], &["descriptor", "--out", "-"][..]] {
        let out = crm(args);
        assert!(
            out.status.success(),
            "crm {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.stdout, file,
            "crm {args:?} wrote other bytes than --out"
        );
    }
}

#[test]
fn malformed_settings_do_not_matter() {
    let file = written_set();
    let out = Command::new(env!("CARGO_BIN_EXE_crm"))
        .arg("descriptor")
        .env("CRM_GRPC_ADDR", "not an address")
        .env("CRM_DB_POOL_SIZE", "many")
        .env("CRM_LOG_FORMAT", "xml")
        .stdin(Stdio::null())
        .output()
        .expect("running crm");
    assert!(
        out.status.success(),
        "crm descriptor read the environment: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, file);
    // The other commands still validate them.
    let out = Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(["token", "--tenant", "t", "--sub", "s"])
        .env("CRM_GRPC_ADDR", "not an address")
        .output()
        .expect("running crm");
    assert!(!out.status.success());
}

#[test]
fn help_lists_the_subcommand() {
    let out = crm(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("descriptor"), "crm --help:\n{help}");
}

#[test]
fn an_unwritable_path_is_a_clear_error() {
    let out = crm(&["descriptor", "--out", "/nonexistent-dir/crm.pb"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent-dir/crm.pb"), "stderr: {err}");
}

/// Every service `deploy/envoy/envoy.yaml` transcodes is in the set, and the
/// config names all seven (the structural half of `scripts/envoy-check.sh`,
/// which validates and runs the config with a real Envoy).
#[test]
fn envoy_config_names_exactly_the_services() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/envoy/envoy.yaml"
    ))
    .expect("reading deploy/envoy/envoy.yaml");
    let named: BTreeSet<String> = yaml
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
        .filter(|w| w.starts_with("crm.v1.") && w.ends_with("Service"))
        .map(str::to_owned)
        .collect();
    let pool = DescriptorPool::decode(written_set().as_slice()).unwrap();
    for name in &named {
        assert!(
            pool.get_service_by_name(name).is_some(),
            "envoy.yaml names {name}, which the descriptor lacks"
        );
    }
    let expected: BTreeSet<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        named, expected,
        "envoy.yaml must transcode every crm.v1 service"
    );
    assert!(yaml.contains("proto_descriptor: /etc/crm/crm.pb"));
}
