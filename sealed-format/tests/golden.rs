//! The worked example of the crate docs, byte for byte: the format cannot drift silently.
//! It is also checked against the specification directly (SHA-256 and AES-256-GCM called
//! here, not through the crate), as another implementation would compute it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sealed_format::{
    DataKey, EncryptionContext, FormatError, Header, KekKind, NoncePrefix, SealWriter, UnsealReader,
};
use sha2::{Digest, Sha256};

const PREFIX: [u8; 7] = [0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6];
const PLAINTEXT: &[u8] = b"hello, sealed world";

/// Magic, version, header length, kek kind, key name, key version, chunk size, nonce
/// scheme, nonce prefix, wrapped key.
const GOLDEN_HEADER: &str = concat!(
    "4b425345",
    "01",
    "00000041",
    "01",
    "0004",
    "6469736b",
    "00000003",
    "00000400",
    "01",
    "a0a1a2a3a4a5a6",
    "0028",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
);
/// What every chunk authenticates of the header: magic, version, key name, chunk size,
/// nonce scheme, nonce prefix (not the wrapping: KEK kind, key version, wrapped key).
const GOLDEN_BOUND: &str = concat!(
    "4b425345",
    "01",
    "0004",
    "6469736b",
    "00000400",
    "01",
    "a0a1a2a3a4a5a6",
);
/// One entry: "app" → "billing".
const GOLDEN_CONTEXT: &str = "00010003617070000762696c6c696e67";
/// SHA-256 of the label, the bound header's length and bytes, and the context.
const GOLDEN_AAD: &str = "a4aa2a91b4f4d3042edad13878c7f34a8c3ad03a8638edc1b2d6ba944d122586";
/// Chunk 0, the final one: 19 bytes of ciphertext, then the 16-byte tag.
const GOLDEN_CHUNK: &str = concat!(
    "1f042572d72ac0b36604b44aabaecc3775674f",
    "55170667ec5f18799d33b3ddd401e940",
);

fn key() -> DataKey {
    let bytes: Vec<u8> = (0x00..=0x1f).collect();
    DataKey::from_slice(&bytes).unwrap()
}

fn example_header() -> Header {
    Header::new(
        KekKind::HsmAesKeyWrap,
        "disk",
        3,
        1024,
        NoncePrefix::from_bytes(PREFIX),
        vec![0xAA; 40],
    )
    .unwrap()
}

fn example_context() -> EncryptionContext {
    let mut context = EncryptionContext::new();
    context.insert("app", "billing").unwrap();
    context
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn sealed() -> Vec<u8> {
    let mut writer =
        SealWriter::new(Vec::new(), &example_header(), key(), &example_context()).unwrap();
    writer.write_all(PLAINTEXT).unwrap();
    writer.finish().unwrap()
}

#[test]
fn the_worked_example_is_byte_for_byte_stable() {
    let envelope = sealed();
    println!("header  {}", hex(&example_header().encode()));
    println!("context {}", hex(&example_context().encode()));
    println!("whole   {}", hex(&envelope));
    let golden = format!("{GOLDEN_HEADER}{GOLDEN_CHUNK}");
    assert_eq!(hex(&envelope), golden);
}

#[test]
fn the_worked_example_follows_the_specification() {
    let header = unhex(GOLDEN_HEADER);
    assert_eq!(header, example_header().encode());
    assert_eq!(hex(&example_context().encode()), GOLDEN_CONTEXT);

    let bound = unhex(GOLDEN_BOUND);
    assert_eq!(bound, example_header().bound_bytes());
    let mut hash = Sha256::new();
    hash.update(b"keybroker sealed v1");
    hash.update((bound.len() as u32).to_be_bytes());
    hash.update(&bound);
    hash.update(unhex(GOLDEN_CONTEXT));
    let aad: [u8; 32] = hash.finalize().into();
    assert_eq!(hex(&aad), GOLDEN_AAD);

    // One chunk, the final one: index 0, last = 0x01.
    let mut nonce = [0u8; 12];
    nonce[..7].copy_from_slice(&PREFIX);
    nonce[11] = 0x01;
    let key_bytes: Vec<u8> = (0x00..=0x1f).collect();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key_bytes).unwrap());
    let mut chunk = unhex(GOLDEN_CHUNK);
    let plaintext = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut chunk,
        )
        .unwrap();
    assert_eq!(plaintext, PLAINTEXT);
}

#[test]
fn the_worked_example_unseals() {
    let envelope = unhex(&format!("{GOLDEN_HEADER}{GOLDEN_CHUNK}"));
    let (header, consumed) = Header::parse(&envelope).unwrap();
    assert_eq!(header, example_header());
    let payload = &envelope[consumed..];
    let mut reader = UnsealReader::new(payload, &header, &key(), &example_context()).unwrap();
    let mut plaintext = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut plaintext).unwrap();
    assert_eq!(plaintext, PLAINTEXT);

    let mut other = example_context();
    other.insert("app", "payroll").unwrap();
    let mut reader = UnsealReader::new(payload, &header, &key(), &other).unwrap();
    let err = std::io::Read::read_to_end(&mut reader, &mut Vec::new()).unwrap_err();
    assert_eq!(
        FormatError::from_io(&err),
        Some(&FormatError::ChunkAuthentication {
            index: 0,
            last: true
        })
    );
}
