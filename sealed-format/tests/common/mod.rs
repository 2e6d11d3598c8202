//! Helpers shared by the integration tests: envelopes sealed and unsealed in memory.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Cursor, Read, Write};

use sealed_format::{
    DataKey, EncryptionContext, FormatError, Header, KekKind, NoncePrefix, SealWriter, UnsealReader,
};
use secrecy::ExposeSecret;

/// A data key for sealing and a copy of it for opening.
pub fn key_pair() -> (DataKey, DataKey) {
    let sealing = DataKey::generate().unwrap();
    let opening = DataKey::from_slice(sealing.expose_secret()).unwrap();
    (sealing, opening)
}

pub fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
    let mut context = EncryptionContext::new();
    for (key, value) in pairs {
        context.insert(*key, *value).unwrap();
    }
    context
}

pub fn billing() -> EncryptionContext {
    context(&[("app", "billing"), ("tenant", "acme")])
}

pub fn header(chunk_size: u32) -> Header {
    Header::new(
        KekKind::HsmAesKeyWrap,
        "disk",
        3,
        chunk_size,
        NoncePrefix::random().unwrap(),
        vec![0xAA; 40],
    )
    .unwrap()
}

/// Plaintext of `len` bytes with a pattern that shows misplaced bytes.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| pattern_byte(i as u64)).collect()
}

pub fn pattern_byte(pos: u64) -> u8 {
    (pos % 251) as u8 ^ (pos >> 16) as u8
}

/// Seals `plaintext` through a `SealWriter`, `write_step` bytes per `write` call.
pub fn seal_with(
    header: &Header,
    key: DataKey,
    context: &EncryptionContext,
    plaintext: &[u8],
    write_step: usize,
) -> Vec<u8> {
    let mut writer = SealWriter::new(Vec::new(), header, key, context).unwrap();
    for piece in plaintext.chunks(write_step) {
        writer.write_all(piece).unwrap();
    }
    writer.finish().unwrap()
}

/// An envelope of `plaintext` under a fresh key; returns it with the opening key.
pub fn seal(chunk_size: u32, plaintext: &[u8]) -> (Vec<u8>, DataKey) {
    let (sealing, opening) = key_pair();
    let envelope = seal_with(&header(chunk_size), sealing, &billing(), plaintext, 4099);
    (envelope, opening)
}

/// Unseals through `Header::read_from` and an `UnsealReader`, `read_step` bytes per
/// `read` call; a refusal is returned as the `FormatError` inside the `io::Error`.
pub fn unseal_with(
    envelope: &[u8],
    key: &DataKey,
    context: &EncryptionContext,
    read_step: usize,
) -> Result<Vec<u8>, FormatError> {
    let mut input = Cursor::new(envelope);
    let (header, raw) = Header::read_from(&mut input).map_err(format_error)?;
    assert_eq!(
        raw,
        header.encode(),
        "a parsed header re-encodes to its bytes"
    );
    let mut reader = UnsealReader::new(input, &header, key, context)?;
    let mut plaintext = Vec::new();
    let mut buf = vec![0u8; read_step];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(plaintext),
            Ok(n) => plaintext.extend_from_slice(&buf[..n]),
            Err(err) => return Err(format_error(err)),
        }
    }
}

pub fn unseal(envelope: &[u8], key: &DataKey) -> Result<Vec<u8>, FormatError> {
    unseal_with(envelope, key, &billing(), 8191)
}

pub fn format_error(err: std::io::Error) -> FormatError {
    match FormatError::from_io(&err) {
        Some(format) => format.clone(),
        None => panic!("an I/O error without a FormatError: {err}"),
    }
}

/// The length of the header at the start of `envelope`.
pub fn header_len(envelope: &[u8]) -> usize {
    Header::parse(envelope).unwrap().1
}
