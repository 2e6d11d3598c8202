//! Whatever is sealed, with any chunk size and any sizes of writes and reads, unseals to
//! itself; and any single changed byte of the sealed data is refused, but for the
//! wrapping (KEK kind, key version, wrapped key), which the key-encryption key
//! authenticates when the data key is unwrapped, outside this crate.
//!
//! Every way in gives the same bytes (`write` in any steps, whole chunks included;
//! `seal_from` a reader that gives any steps; `chunk_buffer` and `commit`), and every way
//! out the same outcome (`read` in any steps, whole chunks included; `next_chunk`;
//! `copy_to`), the same plaintext or the same refusal.
#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::fuzz_target;
use sealed_format::{
    DataKey, EncryptionContext, FormatError, Header, KekKind, NoncePrefix, SealWriter, UnsealReader,
};

/// A step from a byte: 1 to 127 bytes, or, with the top bit set, up to 12,320 bytes, so
/// that whole chunks (1 to 4 KiB) are written and read too.
fn step(byte: u8) -> usize {
    if byte & 0x80 == 0 {
        usize::from(byte).max(1)
    } else {
        usize::from(byte & 0x7f) * 97 + 1
    }
}

/// Gives at most `step` bytes per `read`.
struct Steps<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Steps<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = out.len().min(self.step).min(self.data.len());
        let (given, rest) = self.data.split_at(n);
        out[..n].copy_from_slice(given);
        self.data = rest;
        Ok(n)
    }
}

/// The plaintext, or the refusal.
type Outcome = Result<Vec<u8>, FormatError>;

fn outcome(result: io::Result<Vec<u8>>) -> Outcome {
    result.map_err(|err| {
        FormatError::from_io(&err)
            .cloned()
            .expect("a refusal holds a FormatError")
    })
}

/// The payload reader of `sealed`.
fn reader<'a>(
    sealed: &'a [u8],
    key: &DataKey,
    context: &EncryptionContext,
) -> io::Result<UnsealReader<&'a [u8]>> {
    let mut input = sealed;
    let (header, _) = Header::read_from(&mut input)?;
    Ok(UnsealReader::new(input, &header, key, context)?)
}

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
    let (write_step, read_step) = (step(*write_step), step(*read_step));
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
    let writer = || SealWriter::new(Vec::new(), &header, key(), &context).unwrap();

    let mut by_write = writer();
    for piece in plaintext.chunks(write_step) {
        by_write.write_all(piece).unwrap();
    }
    let sealed = by_write.finish().unwrap();

    let mut by_seal_from = writer();
    let read = by_seal_from
        .seal_from(&mut Steps {
            data: plaintext,
            step: write_step,
        })
        .unwrap();
    assert_eq!(read, plaintext.len() as u64);
    assert!(by_seal_from.finish().unwrap() == sealed);

    let mut by_commit = writer();
    let mut rest = plaintext;
    while !rest.is_empty() {
        let room = by_commit.chunk_buffer();
        let n = room.len().min(write_step).min(rest.len());
        room[..n].copy_from_slice(&rest[..n]);
        by_commit.commit(n).unwrap();
        rest = &rest[n..];
    }
    assert!(by_commit.finish().unwrap() == sealed);

    let unseal = |sealed: &[u8]| -> Outcome {
        let by_read = outcome((|| {
            let mut reader = reader(sealed, &key(), &context)?;
            let mut out = Vec::new();
            let mut buf = vec![0u8; read_step];
            loop {
                match reader.read(&mut buf)? {
                    0 => return Ok(out),
                    n => out.extend_from_slice(&buf[..n]),
                }
            }
        })());
        let by_next_chunk = outcome((|| {
            let mut reader = reader(sealed, &key(), &context)?;
            let mut out = Vec::new();
            while let Some(plaintext) = reader.next_chunk()? {
                assert!(!plaintext.is_empty());
                out.extend_from_slice(plaintext);
            }
            Ok(out)
        })());
        let by_copy_to = outcome((|| {
            let mut out = Vec::new();
            reader(sealed, &key(), &context)?.copy_to(&mut out)?;
            Ok(out)
        })());
        assert_eq!(by_read, by_next_chunk);
        assert_eq!(by_read, by_copy_to);
        by_read
    };
    assert!(unseal(&sealed).unwrap() == plaintext);

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
