//! The header parser and the unsealing reader must refuse, never panic, on any bytes;
//! whatever header parses must re-encode to exactly the bytes it was parsed from.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use sealed_format::{DataKey, EncryptionContext, FormatError, Header, UnsealReader};

fuzz_target!(|data: &[u8]| {
    let parsed = Header::parse(data);
    let read = Header::read_from(&mut &data[..]);
    let (header, consumed) = match (parsed, read) {
        (Ok((header, consumed)), Ok((read, raw))) => {
            assert_eq!(read, header);
            assert_eq!(raw, &data[..consumed]);
            assert_eq!(header.encode(), raw);
            (header, consumed)
        }
        (Err(parse_err), Err(read_err)) => {
            assert_eq!(FormatError::from_io(&read_err), Some(&parse_err));
            return;
        }
        (parsed, read) => panic!("parse and read_from disagree: {parsed:?} / {read:?}"),
    };
    let Ok(key) = DataKey::from_slice(&[0x11; 32]) else {
        return;
    };
    let Ok(mut reader) =
        UnsealReader::new(&data[consumed..], &header, &key, &EncryptionContext::new())
    else {
        return;
    };
    // Random bytes never authenticate: the reader must refuse, with a format error.
    let mut plaintext = Vec::new();
    let err = reader.read_to_end(&mut plaintext).unwrap_err();
    assert!(FormatError::from_io(&err).is_some());
    assert!(plaintext.is_empty());
});
