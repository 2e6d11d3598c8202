//! End to end: sealing (docs/sealing.md) through the real broker, under a key-encryption
//! key in its SoftHSM2 token (RFC 5649 inside the token) and one on its swtpm (the data
//! key sealed to a PCR policy): round trips at the sizes that matter, unary and streamed;
//! every refusal an adversary's envelope earns; rewrapping after rotation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod client;
#[path = "../common/mod.rs"]
mod common;
mod flood;
mod hardware;
mod legacy;
mod refusals;
mod rewrap;
mod round_trip;

use std::collections::HashMap;

use common::{BrokerProcess, create};
use keybroker_api::v1 as pb;
use pb::key_service_client::KeyServiceClient;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

type Keys = KeyServiceClient<Channel>;

/// The smallest chunk size, so that small payloads span many chunks.
const SMALL_CHUNK: u32 = 1024;

/// The backends of the fixture broker: an HSM token and a TPM.
const BACKENDS: [&str; 2] = ["softhsm", "swtpm"];

/// Creates an AES-256 wrap-unwrap key `name` on `backend`.
async fn wrap_key(keys: &mut Keys, name: &str, backend: &str) {
    keys.create_key(create(
        name,
        pb::KeyAlgorithm::Aes256,
        pb::KeyPurpose::WrapUnwrap,
        backend,
    ))
    .await
    .unwrap();
}

fn context(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Deterministic bytes that differ at every offset.
fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

async fn seal(
    keys: &mut Keys,
    name: &str,
    plaintext: &[u8],
    ctx: &HashMap<String, String>,
    chunk_size: u32,
) -> Result<Vec<u8>, tonic::Status> {
    let reply = keys
        .seal(pb::SealRequest {
            name: name.into(),
            plaintext: plaintext.to_vec(),
            context: ctx.clone(),
            chunk_size,
        })
        .await?;
    Ok(reply.into_inner().sealed.clone())
}

async fn unseal(
    keys: &mut Keys,
    name: &str,
    sealed: &[u8],
    ctx: &HashMap<String, String>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut reply = keys
        .unseal(pb::UnsealRequest {
            name: name.into(),
            sealed: sealed.to_vec(),
            context: ctx.clone(),
        })
        .await?
        .into_inner();
    Ok(std::mem::take(&mut reply.plaintext))
}

/// Seals `total` bytes of [`data`]-like content, generated in pieces of `piece` bytes, through
/// `SealStream`; returns the envelope and the SHA-256 of the plaintext.
async fn seal_stream(
    keys: &mut Keys,
    name: &str,
    ctx: &HashMap<String, String>,
    total: usize,
    piece: usize,
) -> Result<(Vec<u8>, [u8; 32]), tonic::Status> {
    let mut hash = Sha256::new();
    let mut messages = Vec::new();
    let mut sent = 0;
    let pattern = data(piece.max(1));
    while sent < total || messages.is_empty() {
        let n = piece.min(total - sent);
        let chunk = pattern[..n].to_vec();
        hash.update(&chunk);
        messages.push(pb::SealStreamRequest {
            name: if messages.is_empty() {
                name.into()
            } else {
                String::new()
            },
            context: if messages.is_empty() {
                ctx.clone()
            } else {
                HashMap::new()
            },
            chunk_size: 0,
            data: chunk,
        });
        sent += n;
    }
    let mut responses = keys
        .seal_stream(tokio_stream::iter(messages))
        .await?
        .into_inner();
    let mut sealed = Vec::new();
    while let Some(r) = responses.message().await? {
        sealed.extend_from_slice(&r.sealed);
    }
    Ok((sealed, hash.finalize().into()))
}

/// Opens an envelope through `UnsealStream`, sent in pieces of `piece` bytes; returns the
/// SHA-256 and length of the plaintext.
async fn unseal_stream(
    keys: &mut Keys,
    name: &str,
    ctx: &HashMap<String, String>,
    sealed: &[u8],
    piece: usize,
) -> Result<([u8; 32], usize), tonic::Status> {
    let mut messages = vec![pb::UnsealStreamRequest {
        name: name.into(),
        context: ctx.clone(),
        sealed: Vec::new(),
    }];
    messages.extend(sealed.chunks(piece).map(|c| pb::UnsealStreamRequest {
        name: String::new(),
        context: HashMap::new(),
        sealed: c.to_vec(),
    }));
    let mut responses = keys
        .unseal_stream(tokio_stream::iter(messages))
        .await?
        .into_inner();
    let mut hash = Sha256::new();
    let mut len = 0;
    while let Some(r) = responses.message().await? {
        hash.update(&r.plaintext);
        len += r.plaintext.len();
    }
    Ok((hash.finalize().into(), len))
}

async fn admin(broker: &BrokerProcess) -> Keys {
    broker.keys("admin").await
}
