//! Compiles the protos without `protoc` (protox), and keeps the encoded descriptor set
//! for server reflection.
use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/keybroker/v1/keys.proto",
    "proto/keybroker/v1/attestation.proto",
    "proto/keybroker/v1/admin.proto",
];

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
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
