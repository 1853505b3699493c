//! The generated `crm.v1` protobuf types and gRPC stubs, plus the encoded
//! descriptor set they were built from (used by reflection and by the record
//! mechanism, which reads field names, types and `google.api.field_behavior`
//! from it at run time).

use std::sync::LazyLock;

use prost_reflect::DescriptorPool;

/// Generated messages and services of package `crm.v1`.
#[allow(clippy::all, missing_docs)]
pub mod crm_v1 {
    tonic::include_proto!("crm.v1");
}

pub use crm_v1::*;

/// The `google.rpc` status and error-detail messages (maps ordered, so
/// encoded details are deterministic).
#[allow(clippy::all, missing_docs)]
pub mod google {
    /// `google.rpc`.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// The encoded `FileDescriptorSet` of `proto/crm/v1` with all imports and
/// source info (what `crm descriptor` writes and reflection serves).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("crm_descriptor");

/// The decoded descriptor pool, including the `google.api` extensions.
pub static DESCRIPTOR_POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("the build wrote a valid descriptor set")
});
