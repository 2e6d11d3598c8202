//! The parser and the reader refuse garbage, never panic on it: random bytes, random
//! changes to valid data, and every truncation of a valid header.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Read;

use common::{billing, key_pair, unseal};
use sealed_format::{FormatError, Header, KekKind, NoncePrefix, UnsealReader};

const SEED: u64 = 0x6b62_7365;

fn valid_header(rng: &mut fastrand::Rng) -> Header {
    let name: String = (0..rng.usize(1..=40)).map(|_| rng.alphanumeric()).collect();
    Header::new(
        if rng.bool() {
            KekKind::HsmAesKeyWrap
        } else {
            KekKind::TpmSealed
        },
        name,
        rng.u32(1..),
        1024 << rng.u32(0..=14),
        NoncePrefix::from_bytes(std::array::from_fn(|_| rng.u8(..))),
        (0..rng.usize(1..300)).map(|_| rng.u8(..)).collect(),
    )
    .unwrap()
}

/// Parses `bytes` both ways; whatever is accepted re-encodes to exactly its bytes.
fn check(bytes: &[u8]) -> Result<Header, FormatError> {
    let parsed = Header::parse(bytes);
    let read = Header::read_from(&mut &bytes[..]).map_err(common::format_error);
    match (&parsed, read) {
        (Ok((header, consumed)), Ok((read, raw))) => {
            assert_eq!(&read, header);
            assert_eq!(header.encode(), bytes[..*consumed]);
            assert_eq!(raw, bytes[..*consumed]);
        }
        (Err(parse_err), Err(read_err)) => assert_eq!(parse_err, &read_err),
        (parsed, read) => panic!("parse and read_from disagree: {parsed:?} / {read:?}"),
    }
    parsed.map(|(header, _)| header)
}

#[test]
fn random_garbage() {
    let mut rng = fastrand::Rng::with_seed(SEED);
    for _ in 0..10_000 {
        let len = rng.usize(0..600);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        // Past the magic and version half the time, so the fields get parsed too.
        if rng.bool() && len >= 9 {
            bytes[..5].copy_from_slice(b"KBSE\x01");
            let body = rng.u32(0..len as u32);
            bytes[5..9].copy_from_slice(&body.to_be_bytes());
        }
        let _ = check(&bytes);
        let (_, key) = key_pair();
        let _ = unseal(&bytes, &key);
    }
}

#[test]
fn random_changes_to_valid_envelopes() {
    let mut rng = fastrand::Rng::with_seed(SEED + 1);
    for _ in 0..2_000 {
        let (envelope, key) = common::seal(1024, &common::pattern(rng.usize(0..3000)));
        let mut changed = envelope.clone();
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..changed.len());
            changed[at] = rng.u8(..);
        }
        if rng.bool() {
            changed.truncate(rng.usize(..=changed.len()));
        }
        let result = unseal(&changed, &key);
        // A change to the wrapping alone (KEK kind, key version, wrapped key) is for the
        // key-encryption key to refuse, when the data key is unwrapped: with the same data
        // key, the chunks still open.
        let only_wrapping = match (
            sealed_format::Header::parse(&changed),
            sealed_format::Header::parse(&envelope),
        ) {
            (Ok((now, n)), Ok((was, m))) => {
                now.bound_bytes() == was.bound_bytes() && changed[n..] == envelope[m..]
            }
            _ => false,
        };
        if changed != envelope && !only_wrapping {
            assert!(result.is_err());
        }
    }
}

#[test]
fn every_truncation_of_a_valid_header() {
    let mut rng = fastrand::Rng::with_seed(SEED + 2);
    for _ in 0..50 {
        let bytes = valid_header(&mut rng).encode();
        assert!(check(&bytes).is_ok());
        for cut in 0..bytes.len() {
            assert_eq!(
                check(&bytes[..cut]),
                Err(FormatError::Truncated),
                "cut at {cut}"
            );
        }
    }
}

#[test]
fn random_changes_to_valid_headers() {
    let mut rng = fastrand::Rng::with_seed(SEED + 3);
    for _ in 0..10_000 {
        let mut bytes = valid_header(&mut rng).encode();
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..bytes.len());
            bytes[at] = rng.u8(..);
        }
        bytes.extend((0..rng.usize(0..64)).map(|_| rng.u8(..)));
        let _ = check(&bytes);
    }
}

#[test]
fn garbage_payloads_after_a_valid_header() {
    let mut rng = fastrand::Rng::with_seed(SEED + 4);
    let header = valid_header(&mut rng);
    for _ in 0..1_000 {
        let payload: Vec<u8> = (0..rng.usize(0..5000)).map(|_| rng.u8(..)).collect();
        let (_, key) = key_pair();
        let mut reader = UnsealReader::new(&payload[..], &header, &key, &billing()).unwrap();
        let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(FormatError::from_io(&err).is_some());
        // A refused reader stays refused.
        assert_eq!(
            FormatError::from_io(&reader.read(&mut [0; 10]).unwrap_err()),
            FormatError::from_io(&err)
        );
    }
}
