//! What the zero-copy paths leave in the writer's and the reader's chunk buffers: no
//! plaintext once it has been sealed, handed out and passed, and nothing at all after a
//! refusal.

use std::io::{self, Read, Write};

use crate::{
    DataKey, EncryptionContext, FormatError, Header, KekKind, NoncePrefix, SealWriter, TAG_LEN,
    UnsealReader,
};

const CHUNK: usize = 1024;
/// Every plaintext byte; ciphertext holds a run of 8 of them with odds of about 2^-64.
const PLAIN: u8 = 0xA5;

fn header() -> Header {
    Header::new(
        KekKind::HsmAesKeyWrap,
        "disk",
        1,
        CHUNK as u32,
        NoncePrefix::from_bytes([1; 7]),
        vec![0xAA; 40],
    )
    .unwrap()
}

fn key() -> DataKey {
    DataKey::from_slice(&[0x33; 32]).unwrap()
}

fn seal(len: usize) -> Vec<u8> {
    let mut writer =
        SealWriter::new(Vec::new(), &header(), key(), &EncryptionContext::new()).unwrap();
    writer.write_all(&vec![PLAIN; len]).unwrap();
    writer.finish().unwrap()
}

/// Whether `buf` holds a run of 8 plaintext bytes.
fn holds_plaintext(buf: &[u8]) -> bool {
    buf.windows(8).any(|w| w.iter().all(|&b| b == PLAIN))
}

fn reader<R: Read>(input: R) -> UnsealReader<R> {
    UnsealReader::new(input, &header(), &key(), &EncryptionContext::new()).unwrap()
}

fn payload(envelope: &[u8]) -> &[u8] {
    &envelope[Header::parse(envelope).unwrap().1..]
}

#[test]
fn next_chunk_leaves_no_plaintext_behind() {
    let envelope = seal(2 * CHUNK + 10);
    let mut reader = reader(payload(&envelope));
    for _ in 0..2 {
        let plaintext = reader.next_chunk().unwrap().unwrap();
        assert_eq!(plaintext, [PLAIN; CHUNK]);
    }
    // The final chunk, 10 bytes, is lent from the front of the buffer; the rest of the
    // chunk before it, which the final chunk did not overwrite, has been wiped.
    assert_eq!(reader.next_chunk().unwrap().unwrap(), [PLAIN; 10]);
    assert!(!holds_plaintext(&reader.buffer()[10..]));
    assert!(reader.next_chunk().unwrap().is_none());
    assert!(!holds_plaintext(reader.buffer()));
}

#[test]
fn copy_to_leaves_no_plaintext_behind() {
    let envelope = seal(3 * CHUNK + 500);
    let mut reader = reader(payload(&envelope));
    let mut out = Vec::new();
    assert_eq!(reader.copy_to(&mut out).unwrap(), 3 * CHUNK as u64 + 500);
    assert!(out.iter().all(|&b| b == PLAIN));
    assert!(!holds_plaintext(reader.buffer()));
}

/// Gives `data`, pausing (`WouldBlock`) once at `pause`.
struct Pausing<'a> {
    data: &'a [u8],
    position: usize,
    pause: Option<usize>,
}

impl Read for Pausing<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pause == Some(self.position) {
            self.pause = None;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let stop = self.pause.unwrap_or(self.data.len());
        let n = out.len().min(stop - self.position);
        out[..n].copy_from_slice(&self.data[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[test]
fn a_pause_inside_a_chunk_leaves_no_plaintext_of_the_one_before() {
    let envelope = seal(3 * CHUNK);
    let payload = payload(&envelope);
    let mut reader = reader(Pausing {
        data: payload,
        position: 0,
        pause: Some(CHUNK + TAG_LEN + 100),
    });
    assert_eq!(reader.next_chunk().unwrap().unwrap(), [PLAIN; CHUNK]);
    let err = reader.next_chunk().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    // 100 bytes of chunk 1 arrived over chunk 0's plaintext; the rest of it is wiped.
    assert!(!holds_plaintext(reader.buffer()));
    let mut rest = 0;
    while let Some(plaintext) = reader.next_chunk().unwrap() {
        assert!(plaintext.iter().all(|&b| b == PLAIN));
        rest += plaintext.len();
    }
    assert_eq!(rest, 2 * CHUNK);
}

#[test]
fn a_refused_chunk_wipes_the_whole_buffer() {
    let mut envelope = seal(3 * CHUNK);
    let at = envelope.len() - TAG_LEN - 5;
    envelope[at] ^= 1;
    let mut reader = reader(payload(&envelope));
    assert_eq!(reader.next_chunk().unwrap().unwrap(), [PLAIN; CHUNK]);
    assert_eq!(reader.next_chunk().unwrap().unwrap(), [PLAIN; CHUNK]);
    let err = reader.next_chunk().unwrap_err();
    assert_eq!(
        FormatError::from_io(&err),
        Some(&FormatError::ChunkAuthentication {
            index: 2,
            last: false
        })
    );
    assert!(reader.buffer().iter().all(|&b| b == 0));
}

#[test]
fn a_whole_chunk_read_leaves_no_plaintext_in_the_reader() {
    let envelope = seal(2 * CHUNK + 3);
    let mut reader = reader(payload(&envelope));
    let mut out = vec![0; CHUNK];
    assert_eq!(reader.read(&mut out).unwrap(), CHUNK);
    assert!(out.iter().all(|&b| b == PLAIN));
    // Opened straight into `out`: the reader's buffer held only ciphertext.
    assert!(!holds_plaintext(reader.buffer()));
}

#[test]
fn the_writer_keeps_no_plaintext_once_a_chunk_is_sealed() {
    let mut writer =
        SealWriter::new(Vec::new(), &header(), key(), &EncryptionContext::new()).unwrap();
    writer.chunk_buffer().fill(PLAIN);
    writer.commit(CHUNK).unwrap();
    assert!(!holds_plaintext(writer.buffer()));
    // A whole chunk written at a boundary is sealed from the caller's slice.
    let plaintext = [PLAIN; CHUNK];
    assert_eq!(writer.write(&plaintext).unwrap(), CHUNK);
    assert!(!holds_plaintext(writer.buffer()));
    writer.seal_from(&mut &[PLAIN; 2 * CHUNK + 1][..]).unwrap();
    // One byte waits for the final chunk.
    assert!(!holds_plaintext(writer.buffer()));
    assert_eq!(writer.chunk_buffer().len(), CHUNK - 1);
    writer.finish().unwrap();
}
