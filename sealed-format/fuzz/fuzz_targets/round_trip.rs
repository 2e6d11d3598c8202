//! Whatever is sealed, with any chunk size and any sizes of writes and reads, unseals to
//! itself; and any single changed byte of the sealed data is refused, but for the
//! wrapping (KEK kind, key version, wrapped key), which the key-encryption key
//! authenticates when the data key is unwrapped, outside this crate.
#![no_main]

use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use sealed_format::{
    DataKey, EncryptionContext, Header, KekKind, NoncePrefix, SealWriter, UnsealReader,
};

fuzz_target!(|data: &[u8]| {
    let [
        shift,
        write_step,
        read_step,
        flip_hi,
        flip_lo,
        flip_bit,
        plaintext @ ..,
    ] = data
    else {
        return;
    };
    let chunk_size = 1024u32 << (shift % 3);
    let header = Header::new(
        KekKind::HsmAesKeyWrap,
        "fuzz",
        1,
        chunk_size,
        NoncePrefix::from_bytes([*shift; 7]),
        vec![0xAA; 40],
    )
    .unwrap();
    let mut context = EncryptionContext::new();
    context.insert("target", "round_trip").unwrap();
    let key = || DataKey::from_slice(&[0x22; 32]).unwrap();

    let mut writer = SealWriter::new(Vec::new(), &header, key(), &context).unwrap();
    for piece in plaintext.chunks(usize::from(*write_step).max(1)) {
        writer.write_all(piece).unwrap();
    }
    let sealed = writer.finish().unwrap();

    let unseal = |sealed: &[u8]| -> std::io::Result<Vec<u8>> {
        let mut input = sealed;
        let (header, _) = Header::read_from(&mut input)?;
        let mut reader = UnsealReader::new(input, &header, &key(), &context)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; usize::from(*read_step).max(1)];
        loop {
            match reader.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    assert_eq!(unseal(&sealed).unwrap(), plaintext);

    let mut changed = sealed.clone();
    let at = usize::from(u16::from_be_bytes([*flip_hi, *flip_lo])) % changed.len();
    changed[at] ^= 1 << (flip_bit % 8);
    // Offsets of the wrapping in this header (key name "fuzz"): kek kind 9, key version
    // 16..20, wrapped key length and bytes 32..74.
    let wrapping = at == 9 || (16..20).contains(&at) || (32..74).contains(&at);
    let result = unseal(&changed);
    if !wrapping {
        assert!(result.is_err());
    }
});
