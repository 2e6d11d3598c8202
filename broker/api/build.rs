//! Compiles the protos without `protoc` (protox), and keeps the encoded descriptor set
//! for server reflection.
use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/keybroker/v1/keys.proto",
    "proto/keybroker/v1/attestation.proto",
    "proto/keybroker/v1/admin.proto",
    "proto/keybroker/v1/identity.proto",
    "proto/keybroker/v1/secrets.proto",
    "proto/keybroker/v1/sealing.proto",
];

/// Messages with secret fields (see `docs/design.md`, "Secrets in memory").
const WIPED_ON_DROP: &[&str] = &[
    "keybroker.v1.DecryptResponse",
    "keybroker.v1.GenerateDataKeyResponse",
    "keybroker.v1.EncryptRequest",
    "keybroker.v1.PutSecretRequest",
    "keybroker.v1.RotateSecretRequest",
    "keybroker.v1.SealRequest",
    "keybroker.v1.UnsealResponse",
    "keybroker.v1.SealStreamRequest",
    "keybroker.v1.UnsealStreamResponse",
];

/// Fields of those messages that hold nothing secret and no type `zeroize` can wipe.
const NOT_WIPED: &[&str] = &[
    "keybroker.v1.SealRequest.context",
    "keybroker.v1.SealStreamRequest.context",
];

/// The Kubernetes KMS v2 plugin API (`proto/k8s/kms/v2/ORIGIN.md`), served by
/// `keybroker kms-plugin` and not by the broker: compiled apart, outside the reflection
/// descriptor set.
const KMS_V2_PROTO: &str = "proto/k8s/kms/v2/api.proto";

/// Its messages that carry a plaintext (the API server's data-key seeds).
const KMS_V2_WIPED_ON_DROP: &[&str] = &["v2.EncryptRequest", "v2.DecryptResponse"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("keybroker_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    let mut config = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true);
    // Messages that carry plaintexts or data keys wipe them when dropped: on the server
    // right after the response is encoded, in clients when the caller is done.
    for message in WIPED_ON_DROP {
        config = config.type_attribute(
            message,
            "#[derive(zeroize::Zeroize, zeroize::ZeroizeOnDrop)]",
        );
    }
    for field in NOT_WIPED {
        config = config.field_attribute(field, "#[zeroize(skip)]");
    }
    config.compile_fds(descriptors)?;

    println!("cargo:rerun-if-changed={KMS_V2_PROTO}");
    let kms = protox::compile([KMS_V2_PROTO], ["proto"])?;
    let mut config = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true);
    for message in KMS_V2_WIPED_ON_DROP {
        config = config.type_attribute(
            message,
            "#[derive(zeroize::Zeroize, zeroize::ZeroizeOnDrop)]",
        );
    }
    config.compile_fds(kms)?;
    Ok(())
}
