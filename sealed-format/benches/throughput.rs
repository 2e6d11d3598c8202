//! `make bench`: sealing and unsealing 1 GiB locally (this crate, no broker), beside raw
//! AES-256-GCM on the same machine in the same run, which is the limit; and this
//! process's peak RSS, which must stay flat whatever the size.
//!
//! The raw row seals and opens 64 KiB buffers in place with aws-lc-rs, the same chunk
//! size and cipher as the envelope, with nothing else. The envelope rows stream the
//! plaintext from a generator through `SealWriter` into a sink that keeps the sealed
//! bytes for the unseal row only as one 64 KiB window at a time: a `Read` that seals on
//! the fly feeds an `UnsealReader`, so neither side ever holds the whole.
//! `SEAL_BENCH_MIB` sets the size (default 1024).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::time::Instant;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sealed_format::{
    DataKey, EncryptionContext, Header, KekKind, NoncePrefix, SealWriter, UnsealReader,
};

const CHUNK: usize = 64 * 1024;

/// A writer that counts and forgets.
struct Sink(u64);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// This process's peak resident set, from /proc (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn header() -> Header {
    Header::new(
        KekKind::HsmAesKeyWrap,
        "bench",
        1,
        CHUNK as u32,
        NoncePrefix::random().unwrap(),
        vec![0xAA; 40],
    )
    .unwrap()
}

fn context() -> EncryptionContext {
    let mut context = EncryptionContext::new();
    context.insert("bench", "throughput").unwrap();
    context
}

fn key_bytes() -> [u8; 32] {
    [0x42; 32]
}

/// Raw AES-256-GCM over `total` bytes in 64 KiB buffers: seal, then open.
fn raw(total: usize) -> (f64, f64) {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key_bytes()).unwrap());
    let mut buf = vec![0x5a_u8; CHUNK];
    let chunks = total / CHUNK;
    let start = Instant::now();
    // Kept, so that the tags are used.
    let mut tags = Vec::with_capacity(16);
    for i in 0..chunks {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from([0u8; 32]),
                &mut buf,
            )
            .unwrap();
        tags.clear();
        tags.extend_from_slice(tag.as_ref());
    }
    let seal = start.elapsed().as_secs_f64();
    // Open: one sealed chunk, copied into the work buffer and opened in place each time
    // (the copy is what a reader of a stream pays too).
    let mut template = vec![0x5a_u8; CHUNK];
    let nonce = || Nonce::assume_unique_for_key([0u8; 12]);
    let tag = key
        .seal_in_place_separate_tag(nonce(), Aad::from([0u8; 32]), &mut template)
        .unwrap();
    template.extend_from_slice(tag.as_ref());
    let mut work = template.clone();
    let start = Instant::now();
    for _ in 0..chunks {
        work.copy_from_slice(&template);
        key.open_in_place(nonce(), Aad::from([0u8; 32]), &mut work)
            .unwrap();
    }
    let open = start.elapsed().as_secs_f64();
    (total as f64 / seal, total as f64 / open)
}

/// Seals `total` bytes through `SealWriter` into a sink.
fn seal(total: usize) -> f64 {
    let plain = vec![0x5a_u8; CHUNK];
    let start = Instant::now();
    let mut writer = SealWriter::new(
        Sink(0),
        &header(),
        DataKey::from_slice(&key_bytes()).unwrap(),
        &context(),
    )
    .unwrap();
    for _ in 0..total / CHUNK {
        writer.write_all(&plain).unwrap();
    }
    let sink = writer.finish().unwrap();
    assert!(sink.0 > total as u64);
    total as f64 / start.elapsed().as_secs_f64()
}

/// A reader of sealed bytes made on the fly: a `SealWriter` fed from a generator, its
/// output handed out as it comes.
struct SealingReader {
    writer: Option<SealWriter<Vec<u8>>>,
    pending: Vec<u8>,
    offset: usize,
    left: usize,
}

impl Read for SealingReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.offset == self.pending.len() {
            let Some(mut writer) = self.writer.take() else {
                return Ok(0);
            };
            if self.left == 0 {
                self.pending = writer.finish()?;
            } else {
                writer.write_all(&[0x5a; CHUNK])?;
                self.left -= CHUNK;
                self.pending = std::mem::take(writer.get_mut());
                self.writer = Some(writer);
            }
            self.offset = 0;
        }
        let n = out.len().min(self.pending.len() - self.offset);
        out[..n].copy_from_slice(&self.pending[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

/// Unseals `total` bytes that a `SealingReader` makes as they are read; the sealing time,
/// measured alone by [`seal`], is taken out.
fn unseal(total: usize, seal_rate: f64) -> f64 {
    let header = header();
    let mut sealed = SealingReader {
        writer: Some(
            SealWriter::new(
                Vec::new(),
                &header,
                DataKey::from_slice(&key_bytes()).unwrap(),
                &context(),
            )
            .unwrap(),
        ),
        pending: Vec::new(),
        offset: 0,
        left: total,
    };
    let (parsed, _) = Header::read_from(&mut sealed).unwrap();
    let start = Instant::now();
    let mut reader = UnsealReader::new(
        sealed,
        &parsed,
        &DataKey::from_slice(&key_bytes()).unwrap(),
        &context(),
    )
    .unwrap();
    let mut buf = vec![0u8; CHUNK];
    let mut read = 0usize;
    loop {
        match reader.read(&mut buf).unwrap() {
            0 => break,
            n => read += n,
        }
    }
    assert_eq!(read, total);
    let both = start.elapsed().as_secs_f64();
    total as f64 / (both - total as f64 / seal_rate).max(1e-9)
}

fn main() {
    let mib: usize = std::env::var("SEAL_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let total = mib * 1024 * 1024;
    let gib = |rate: f64| rate / f64::from(1u32 << 30);
    println!(
        "local sealing of {mib} MiB in 64 KiB chunks, beside raw AES-256-GCM (aws-lc-rs) in the same run"
    );
    let (raw_seal, raw_open) = raw(total);
    let sealed = seal(total);
    let unsealed = unseal(total, sealed);
    println!("{:<34} {:>10} {:>10}", "row", "GiB/s", "vs raw");
    println!(
        "{:<34} {:>10.2} {:>10}",
        "raw AES-256-GCM seal (the limit)",
        gib(raw_seal),
        "1"
    );
    println!(
        "{:<34} {:>10.2} {:>10.2}x",
        "SealWriter",
        gib(sealed),
        sealed / raw_seal
    );
    println!(
        "{:<34} {:>10.2} {:>10}",
        "raw AES-256-GCM open (the limit)",
        gib(raw_open),
        "1"
    );
    println!(
        "{:<34} {:>10.2} {:>10.2}x",
        "UnsealReader",
        gib(unsealed),
        unsealed / raw_open
    );
    println!(
        "summary: seal {:.2}x and unseal {:.2}x raw AES-256-GCM (goal 0.8x locally); peak RSS {:.1} MiB for {mib} MiB",
        sealed / raw_seal,
        unsealed / raw_open,
        peak_rss_mib()
    );
}
