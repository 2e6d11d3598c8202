//! The `keybroker.v1` API: messages, clients and server traits generated from
//! `proto/keybroker/v1/*.proto`. The broker serves it; the enclave SDK and the CLI call it.
//! Also the Kubernetes KMS v2 plugin API ([`kms_v2`]), for `keybroker kms-plugin`.
#![forbid(unsafe_code)]
#![allow(missing_debug_implementations, clippy::all)]

/// Generated code for the `keybroker.v1` package.
pub mod v1 {
    tonic::include_proto!("keybroker.v1");
}

/// Generated code for the Kubernetes KMS v2 plugin API (package `v2`,
/// `proto/k8s/kms/v2/api.proto`, Apache-2.0, The Kubernetes Authors), which
/// `keybroker kms-plugin` serves to kube-apiserver.
pub mod kms_v2 {
    tonic::include_proto!("v2");
}

/// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/keybroker_descriptor.bin"));
