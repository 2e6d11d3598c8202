//! The limits of every length: what is just inside is accepted, what is just outside is
//! refused, by the constructors and by the parser alike.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use sealed_format::{
    DataKey, EncryptionContext, FormatError, Header, KekKind, KeyNameProblem, MAX_BODY_LEN,
    NoncePrefix,
};

fn header(name: &str, version: u32, chunk: u32, wrapped: usize) -> Result<Header, FormatError> {
    Header::new(
        KekKind::TpmSealed,
        name,
        version,
        chunk,
        NoncePrefix::from_bytes([7; 7]),
        vec![0x5A; wrapped],
    )
}

#[test]
fn key_names() {
    assert!(header("k", 1, 1024, 1).is_ok());
    assert!(header(&"n".repeat(256), 1, 1024, 1).is_ok());
    assert!(header(&"é".repeat(128), 1, 1024, 1).is_ok());
    assert_eq!(
        header("", 1, 1024, 1),
        Err(FormatError::InvalidKeyName(KeyNameProblem::Empty))
    );
    assert_eq!(
        header(&"n".repeat(257), 1, 1024, 1),
        Err(FormatError::InvalidKeyName(KeyNameProblem::TooLong))
    );
}

#[test]
fn key_versions() {
    assert_eq!(header("k", 0, 1024, 1), Err(FormatError::InvalidKeyVersion));
    assert_eq!(
        header("k", u32::MAX, 1024, 1).unwrap().key_version(),
        u32::MAX
    );
}

#[test]
fn chunk_sizes() {
    for shift in 10..=24 {
        assert!(header("k", 1, 1 << shift, 1).is_ok(), "2^{shift}");
    }
    for bad in [0, 1, 512, 1023, 1025, 3000, 1 << 25, u32::MAX] {
        assert_eq!(
            header("k", 1, bad, 1),
            Err(FormatError::InvalidChunkSize(bad))
        );
    }
}

#[test]
fn wrapped_keys() {
    assert_eq!(
        header("k", 1, 1024, 0),
        Err(FormatError::WrappedKeyLength(0))
    );
    assert_eq!(
        header("k", 1, 1024, 65_536),
        Err(FormatError::WrappedKeyLength(65_536))
    );
}

#[test]
fn the_largest_header_parses_back() {
    let largest = header(&"n".repeat(256), u32::MAX, 1 << 24, 65_535).unwrap();
    let bytes = largest.encode();
    let body = bytes.len() - 9;
    assert_eq!(body, 65_812);
    assert!(body <= MAX_BODY_LEN as usize);
    assert_eq!(
        Header::parse(&bytes).unwrap(),
        (largest.clone(), bytes.len())
    );
    let (read, raw) = Header::read_from(&mut &bytes[..]).unwrap();
    assert_eq!((read, raw), (largest, bytes));
}

#[test]
fn context_entries() {
    let mut context = EncryptionContext::new();
    for i in 0..64 {
        context
            .insert(format!("{i:0>128}"), "v".repeat(1024))
            .unwrap();
    }
    assert_eq!(context.len(), 64);
    // Replacing a value is not a 65th entry.
    context.insert(format!("{:0>128}", 0), "w").unwrap();
    assert_eq!(context.get(&format!("{:0>128}", 0)), Some("w"));
    let full = context.clone();
    assert_eq!(
        context.insert("one more", ""),
        Err(FormatError::ContextTooManyEntries(65))
    );
    assert_eq!(context, full, "a refused insert changes nothing");

    let map: BTreeMap<String, String> = (0..65).map(|i| (i.to_string(), String::new())).collect();
    assert_eq!(
        EncryptionContext::try_from(map),
        Err(FormatError::ContextTooManyEntries(65))
    );
}

#[test]
fn context_keys_and_values() {
    let mut context = EncryptionContext::new();
    assert_eq!(
        context.insert("", "v"),
        Err(FormatError::ContextKeyLength(0))
    );
    assert_eq!(
        context.insert("k".repeat(129), "v"),
        Err(FormatError::ContextKeyLength(129))
    );
    assert_eq!(
        context.insert("k", "v".repeat(1025)),
        Err(FormatError::ContextValueLength {
            key: "k".into(),
            len: 1025
        })
    );
    context.insert("k".repeat(128), "").unwrap();
    let map = BTreeMap::from([("k".to_string(), "v".repeat(1025))]);
    assert!(matches!(
        EncryptionContext::try_from(map),
        Err(FormatError::ContextValueLength { len: 1025, .. })
    ));
}

#[test]
fn context_encoding_is_canonical() {
    let mut forwards = EncryptionContext::new();
    let mut backwards = EncryptionContext::new();
    for (k, v) in [("b", "2"), ("a", "1"), ("B", ""), ("é", "x")] {
        forwards.insert(k, v).unwrap();
    }
    for (k, v) in [("é", "x"), ("B", ""), ("a", "1"), ("b", "2")] {
        backwards.insert(k, v).unwrap();
    }
    let expected = [
        &[0, 4][..],
        &[0, 1, b'B', 0, 0],
        &[0, 1, b'a', 0, 1, b'1'],
        &[0, 1, b'b', 0, 1, b'2'],
        &[0, 2, 0xc3, 0xa9, 0, 1, b'x'],
    ]
    .concat();
    assert_eq!(forwards.encode(), expected);
    assert_eq!(backwards.encode(), expected);
    assert_eq!(EncryptionContext::new().encode(), [0, 0]);
}

#[test]
fn data_keys() {
    assert!(DataKey::from_slice(&[1; 32]).is_ok());
    assert_eq!(
        DataKey::from_slice(&[1; 31]).unwrap_err(),
        FormatError::DataKeyLength(31)
    );
    assert_eq!(
        DataKey::from_slice(&[]).unwrap_err(),
        FormatError::DataKeyLength(0)
    );
    assert_eq!(
        DataKey::from_slice(&[1; 40]).unwrap_err(),
        FormatError::DataKeyLength(40)
    );
}

#[test]
fn debug_never_shows_a_key() {
    let key = DataKey::from_slice(&[0x42; 32]).unwrap();
    let shown = format!("{key:?} {key:#?}");
    assert!(shown.contains("REDACTED"));
    assert!(!shown.contains("42") && !shown.contains("66"), "{shown}");
}
