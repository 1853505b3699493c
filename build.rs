//! Compiles `proto/crm/v1/*.proto` with the pure-Rust `protox` (no system
//! `protoc`), generates the tonic/prost code, and writes the encoded
//! descriptor set (imports and source info included) that server reflection,
//! the runtime record mechanism and `crm descriptor` read, and the OpenAPI
//! document of the REST surface (`build/openapi.rs`).

use std::{env, fs, path::PathBuf};

#[path = "build/openapi.rs"]
mod openapi;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files: Vec<PathBuf> = fs::read_dir("proto/crm/v1")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "proto"));
    files.sort();
    // The error-detail types ride along so that descriptor consumers (Envoy's
    // convert_grpc_status, grpcurl) can render google.rpc details.
    files.push("google/rpc/status.proto".into());
    files.push("google/rpc/error_details.proto".into());

    let mut compiler = protox::Compiler::new(["proto", "third_party"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;

    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor = compiler.encode_file_descriptor_set();
    fs::write(out.join("crm_descriptor.bin"), &descriptor)?;
    let pool = prost_reflect::DescriptorPool::decode(descriptor.as_slice())?;
    // Every method says which scope it needs (src/auth/scope.rs enforces
    // exactly that): a method without one does not build.
    let scope = pool
        .get_extension_by_name("crm.v1.required_scope")
        .ok_or("common.proto must define crm.v1.required_scope")?;
    for service in pool.services().filter(|s| s.package_name() == "crm.v1") {
        for method in service.methods() {
            let options = method.options();
            let value = options.get_extension(&scope);
            if value.as_str().is_none_or(str::is_empty) {
                return Err(format!(
                    "{}: every crm.v1 method needs option (crm.v1.required_scope)",
                    method.full_name()
                )
                .into());
            }
        }
    }
    fs::write(
        out.join("openapi.json"),
        serde_json::to_string_pretty(&openapi::generate(&pool))?,
    )?;
    tonic_prost_build::configure()
        // Ordered maps: the same message always encodes to the same bytes
        // (as grpc-gateway's protojson output is ordered).
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;

    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=third_party");
    println!("cargo:rerun-if-changed=build");
    // sqlx::migrate! embeds migrations/ at compile time: a new migration
    // must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}
