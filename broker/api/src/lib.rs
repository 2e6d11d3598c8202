//! The `keybroker.v1` API: messages, clients and server traits generated from
//! `proto/keybroker/v1/*.proto`. The broker serves it; the enclave SDK and the CLI call it.
#![forbid(unsafe_code)]
#![allow(missing_debug_implementations, clippy::all)]

/// Generated code for the `keybroker.v1` package.
pub mod v1 {
    tonic::include_proto!("keybroker.v1");
}

/// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/keybroker_descriptor.bin"));
