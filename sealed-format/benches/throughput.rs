//! `make bench`: sealing and unsealing 1 GiB locally (this crate, no broker), beside raw
//! AES-256-GCM on the same machine in the same run, which is the limit; and this
//! process's peak RSS, which must stay flat whatever the size.
//!
//! `SEAL_BENCH_MIB` sets the size (default 1024). Every row runs `SEAL_BENCH_ROUNDS`
//! times (default 3), the rows taking turns, raw included, and each row reports its best
//! round. Each round is timed twice over: by the thread's own CPU time (from
//! `/proc/thread-self/schedstat`, after a `sched_yield` so that it is up to date), which
//! time spent waiting for a CPU that other processes hold does not count against, and
//! by the wall clock. The rates are by CPU time; the last column gives the ratio by the
//! wall clock too, which on a busy machine measures the neighbours as well.
//! `SEAL_BENCH_ROWS=seal_from,next_chunk` runs only the rows whose names contain one of
//! these (and the raw rows), to profile them alone.
//!
//! What each row includes, and what it does not:
//!
//! - **raw AES-256-GCM seal**: one 64 KiB buffer sealed in place with aws-lc-rs, over and
//!   over, with the chunk size and cipher of the envelope: no copy, no framing, no
//!   output. The limit.
//! - **`write_all`, 64 KiB slices**: the plaintext is one 64 KiB buffer in memory,
//!   written whole, at chunk boundaries: each is sealed in one pass from the caller's
//!   slice into the writer's buffer, which is written to a sink that counts and forgets.
//! - **`write_all`, 8 KiB slices**: the same in 8 KiB pieces, each copied into the
//!   chunk buffer, then sealed in place: the copying path.
//! - **`read` 64 KiB + `write_all`**: as the CLI seals a file: a `Read` fills the
//!   caller's 64 KiB buffer (a copy, as a file's `read` is), which is written whole.
//! - **`seal_from`**: the same `Read`, filling the writer's chunk buffer directly (the
//!   one copy), sealed in place.
//! - **`chunk_buffer` + `commit`, data already in the buffer**: nothing fills the
//!   buffer: each chunk seals what the buffer holds (the ciphertext of the one before),
//!   as the raw row does. The framing's own cost, for a caller that produces its data
//!   in the chunk buffer; not a way to read anything.
//!
//! The `Read` of the two rows that read is a 64 KiB pattern that `read` copies out of,
//! as a file's `read` copies out of the page cache: it does no more than fill the
//! caller's buffer.
//!
//! - **raw AES-256-GCM open**: one sealed 64 KiB chunk copied into a work buffer and
//!   opened in place there, over and over: the copy is what a reader of a stream pays
//!   too.
//! - The unseal rows read sealed data made as they read it, never held whole: a source
//!   seals each chunk when the reader asks for it and copies it into the reader's buffer
//!   as a file's `read` would. The copy stays in the row's time, as in raw; the sealing
//!   does not: the same source, run alone to make every chunk without anyone reading
//!   them, is timed just before, and its time taken out. Then:
//! - **`read`, 64 KiB buffer**: each chunk opened in one pass from the reader's buffer
//!   into the caller's;
//! - **`read`, 8 KiB buffer**: each chunk opened in place, then copied out and wiped in
//!   8 KiB pieces: the copying path;
//! - **`next_chunk`**: each chunk opened in place and lent; the caller only counts it,
//!   as raw does nothing with its plaintext;
//! - **`copy_to`**: the same, written to a sink that counts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{self, Read, Write};
use std::time::Instant;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sealed_format::{
    ChunkSealer, DataKey, EncryptionContext, Header, KekKind, NoncePrefix, SealWriter, TAG_LEN,
    UnsealReader,
};

const CHUNK: usize = 64 * 1024;
const SMALL: usize = 8 * 1024;

/// A writer that counts and forgets.
struct Sink(u64);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `left` bytes of plaintext, copied out of a 64 KiB pattern: the analogue of reading a
/// file that is in the page cache.
struct Pattern {
    pattern: Vec<u8>,
    offset: usize,
    left: usize,
}

impl Pattern {
    fn new(total: usize) -> Self {
        Self {
            pattern: (0..CHUNK).map(|i| (i % 251) as u8).collect(),
            offset: 0,
            left: total,
        }
    }
}

impl Read for Pattern {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = out
            .len()
            .min(self.left)
            .min(self.pattern.len() - self.offset);
        out[..n].copy_from_slice(&self.pattern[self.offset..self.offset + n]);
        self.offset = (self.offset + n) % self.pattern.len();
        self.left -= n;
        Ok(n)
    }
}

/// A row's time, in seconds: the thread's CPU time and the wall clock.
#[derive(Clone, Copy)]
struct Time {
    cpu: f64,
    wall: f64,
}

impl Time {
    const NEVER: Time = Time {
        cpu: f64::INFINITY,
        wall: f64::INFINITY,
    };

    fn minus(self, other: Time) -> Time {
        Time {
            cpu: (self.cpu - other.cpu).max(1e-9),
            wall: (self.wall - other.wall).max(1e-9),
        }
    }

    fn best(self, other: Time) -> Time {
        Time {
            cpu: self.cpu.min(other.cpu),
            wall: self.wall.min(other.wall),
        }
    }
}

/// This thread's CPU time so far, in nanoseconds. The kernel brings it up to date when
/// the thread enters the scheduler, hence the yield.
fn cpu_ns() -> u64 {
    std::thread::yield_now();
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat")
}

/// Times `f`, which must not start its own threads.
fn time(f: impl FnOnce()) -> Time {
    let (wall, cpu) = (Instant::now(), cpu_ns());
    f();
    let cpu = cpu_ns() - cpu;
    Time {
        cpu: cpu as f64 / 1e9,
        wall: wall.elapsed().as_secs_f64(),
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

fn key() -> DataKey {
    DataKey::from_slice(&[0x42; 32]).unwrap()
}

fn raw_key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x42; 32]).unwrap())
}

/// Raw AES-256-GCM seal over `total` bytes in one 64 KiB buffer.
fn raw_seal(total: usize) -> Time {
    let key = raw_key();
    let mut buf = vec![0x5a_u8; CHUNK];
    // Kept, so that the tags are used.
    let mut tags = Vec::with_capacity(16);
    time(|| {
        for i in 0..total / CHUNK {
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
    })
}

/// Raw AES-256-GCM open: one sealed chunk, copied into the work buffer and opened in
/// place each time.
fn raw_open(total: usize) -> Time {
    let key = raw_key();
    let mut template = vec![0x5a_u8; CHUNK];
    let nonce = || Nonce::assume_unique_for_key([0u8; 12]);
    let tag = key
        .seal_in_place_separate_tag(nonce(), Aad::from([0u8; 32]), &mut template)
        .unwrap();
    template.extend_from_slice(tag.as_ref());
    let mut work = template.clone();
    time(|| {
        for _ in 0..total / CHUNK {
            work.copy_from_slice(&template);
            key.open_in_place(nonce(), Aad::from([0u8; 32]), &mut work)
                .unwrap();
        }
    })
}

/// A writer into a sink; made before the clock starts, as are all headers (the first
/// random nonce prefix of a process seeds aws-lc's entropy, which takes milliseconds).
fn seal_writer() -> SealWriter<Sink> {
    SealWriter::new(Sink(0), &header(), key(), &context()).unwrap()
}

fn finished(writer: SealWriter<Sink>, total: usize) {
    let sink = writer.finish().unwrap();
    assert!(sink.0 > (total + total / CHUNK * TAG_LEN) as u64);
}

/// `write_all` of `total` bytes from one `slice`-byte buffer in memory.
fn write_all(total: usize, slice: usize) -> Time {
    let plain = vec![0x5a_u8; slice];
    let mut writer = seal_writer();
    time(|| {
        for _ in 0..total / slice {
            writer.write_all(&plain).unwrap();
        }
        finished(writer, total);
    })
}

/// A `Read` into a 64 KiB buffer, then `write_all` of what it gave.
fn read_then_write_all(total: usize) -> Time {
    let mut source = Pattern::new(total);
    let mut buf = vec![0u8; CHUNK];
    let mut writer = seal_writer();
    time(|| {
        loop {
            let n = source.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            writer.write_all(&buf[..n]).unwrap();
        }
        finished(writer, total);
    })
}

/// `seal_from` the same `Read`.
fn seal_from(total: usize) -> Time {
    let mut source = Pattern::new(total);
    let mut writer = seal_writer();
    time(|| {
        assert_eq!(writer.seal_from(&mut source).unwrap(), total as u64);
        finished(writer, total);
    })
}

/// `chunk_buffer` + `commit` with nothing filling the buffer: it seals what it holds.
fn commit_in_place(total: usize) -> Time {
    let mut writer = seal_writer();
    time(|| {
        for _ in 0..total / CHUNK {
            let room = writer.chunk_buffer().len();
            writer.commit(room).unwrap();
        }
        finished(writer, total);
    })
}

/// Sealed data made as it is read: each chunk sealed when the reader asks for more,
/// then copied out as a file's `read` would.
struct Sealed {
    sealer: ChunkSealer,
    /// The plaintext to seal, 64 KiB.
    plain: Vec<u8>,
    /// The sealed chunk being handed out.
    chunk: Vec<u8>,
    offset: usize,
    left: usize,
}

impl Sealed {
    fn new(header: &Header, total: usize) -> Self {
        Self {
            sealer: ChunkSealer::new(header, key(), &context()).unwrap(),
            plain: vec![0x5a; CHUNK],
            chunk: vec![0; CHUNK + TAG_LEN],
            offset: CHUNK + TAG_LEN,
            left: total,
        }
    }

    fn make_next(&mut self) {
        let len = self.left.min(CHUNK);
        let last = len < CHUNK;
        self.chunk.resize(len + TAG_LEN, 0);
        let (plaintext, tag) = self.chunk.split_at_mut(len);
        plaintext.copy_from_slice(&self.plain[..len]);
        tag.copy_from_slice(
            &self
                .sealer
                .seal_in_place_separate_tag(plaintext, last)
                .unwrap(),
        );
        self.left -= len;
        self.offset = 0;
    }
}

impl Read for Sealed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.offset == self.chunk.len() {
            if self.sealer.is_finished() {
                return Ok(0);
            }
            self.make_next();
        }
        let n = out.len().min(self.chunk.len() - self.offset);
        out[..n].copy_from_slice(&self.chunk[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

#[derive(Clone, Copy)]
enum Unseal {
    Read(usize),
    NextChunk,
    CopyTo,
}

/// Unseals `total` bytes made by a `Sealed` as they are read, less the time the same
/// source takes to make them alone.
fn unseal(total: usize, how: Unseal) -> Time {
    let header = header();
    let mut alone = Sealed::new(&header, total);
    let making = time(|| {
        while !alone.sealer.is_finished() {
            alone.make_next();
        }
    });
    let mut source = Sealed::new(&header, total);
    let (key, context) = (key(), context());
    let mut opened = 0usize;
    let both = time(|| {
        let mut reader = UnsealReader::new(&mut source, &header, &key, &context).unwrap();
        match how {
            Unseal::Read(len) => {
                let mut buf = vec![0u8; len];
                loop {
                    match reader.read(&mut buf).unwrap() {
                        0 => break,
                        n => opened += n,
                    }
                }
            }
            Unseal::NextChunk => {
                while let Some(plaintext) = reader.next_chunk().unwrap() {
                    opened += plaintext.len();
                }
            }
            Unseal::CopyTo => {
                let mut sink = Sink(0);
                opened = reader.copy_to(&mut sink).unwrap() as usize;
                assert_eq!(sink.0 as usize, opened);
            }
        }
    });
    assert_eq!(opened, total);
    both.minus(making)
}

struct Row {
    name: &'static str,
    run: Box<dyn Fn(usize) -> Time>,
    /// The name of the raw row it is compared with, or `None` for a raw row.
    raw: Option<&'static str>,
    best: Time,
}

fn row(
    name: &'static str,
    raw: Option<&'static str>,
    run: impl Fn(usize) -> Time + 'static,
) -> Row {
    Row {
        name,
        run: Box::new(run),
        raw,
        best: Time::NEVER,
    }
}

fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mib = env("SEAL_BENCH_MIB", 1024);
    let rounds = env("SEAL_BENCH_ROUNDS", 3).max(1);
    let total = mib * 1024 * 1024;
    // Seeds aws-lc's entropy before anything is timed.
    NoncePrefix::random().unwrap();
    println!(
        "local sealing of {mib} MiB in 64 KiB chunks, beside raw AES-256-GCM (aws-lc-rs) in the same run; best of {rounds} rounds"
    );
    const RAW_SEAL: &str = "raw AES-256-GCM seal (the limit)";
    const RAW_OPEN: &str = "raw AES-256-GCM open (the limit)";
    let mut rows = vec![
        row(RAW_SEAL, None, raw_seal),
        row("write_all, 64 KiB slices", Some(RAW_SEAL), |t| {
            write_all(t, CHUNK)
        }),
        row("write_all, 8 KiB slices (copies)", Some(RAW_SEAL), |t| {
            write_all(t, SMALL)
        }),
        row(
            "read 64 KiB + write_all",
            Some(RAW_SEAL),
            read_then_write_all,
        ),
        row("seal_from(Read) (in place)", Some(RAW_SEAL), seal_from),
        row(
            "commit, data already in buffer",
            Some(RAW_SEAL),
            commit_in_place,
        ),
        row(RAW_OPEN, None, raw_open),
        row("read, 64 KiB buffer", Some(RAW_OPEN), |t| {
            unseal(t, Unseal::Read(CHUNK))
        }),
        row("read, 8 KiB buffer (copies)", Some(RAW_OPEN), |t| {
            unseal(t, Unseal::Read(SMALL))
        }),
        row("next_chunk (in place)", Some(RAW_OPEN), |t| {
            unseal(t, Unseal::NextChunk)
        }),
        row("copy_to (in place)", Some(RAW_OPEN), |t| {
            unseal(t, Unseal::CopyTo)
        }),
    ];
    let only = std::env::var("SEAL_BENCH_ROWS").unwrap_or_default();
    let only: Vec<&str> = only.split(',').filter(|s| !s.is_empty()).collect();
    rows.retain(|row| {
        row.raw.is_none() || only.is_empty() || only.iter().any(|o| row.name.contains(o))
    });
    for _ in 0..rounds {
        for row in &mut rows {
            row.best = row.best.best((row.run)(total));
        }
    }
    let gib = |seconds: f64| total as f64 / seconds / f64::from(1u32 << 30);
    // A row's rate over its raw row's: the raw row's time over the row's.
    let ratio = |row: &Row| {
        let raw = &rows
            .iter()
            .find(|r| r.raw.is_none() && Some(r.name) == row.raw)
            .unwrap()
            .best;
        (raw.cpu / row.best.cpu, raw.wall / row.best.wall)
    };
    println!(
        "{:<34} {:>10} {:>10} {:>12}",
        "row", "GiB/s", "vs raw", "(wall clock)"
    );
    for row in &rows {
        if row.raw.is_none() {
            println!(
                "{:<34} {:>10.2} {:>10} {:>12}",
                row.name,
                gib(row.best.cpu),
                "1",
                format!("{:.2} GiB/s", gib(row.best.wall))
            );
        } else {
            let (cpu, wall) = ratio(row);
            println!(
                "{:<34} {:>10.2} {:>9.2}x {:>11.2}x",
                row.name,
                gib(row.best.cpu),
                cpu,
                wall
            );
        }
    }
    let ratio_of = |name: &str| rows.iter().find(|r| r.name == name).map(|r| ratio(r).0);
    if let (Some(write_all), Some(seal_from), Some(read), Some(next_chunk)) = (
        ratio_of("write_all, 64 KiB slices"),
        ratio_of("seal_from(Read) (in place)"),
        ratio_of("read, 64 KiB buffer"),
        ratio_of("next_chunk (in place)"),
    ) {
        println!(
            "summary: seal {write_all:.2}x (write_all, 64 KiB) / {seal_from:.2}x (seal_from a Read) and unseal {read:.2}x (read, 64 KiB) / {next_chunk:.2}x (next_chunk) raw AES-256-GCM by CPU time (goal 0.8x locally)"
        );
    }
    println!("peak RSS {:.1} MiB for {mib} MiB", peak_rss_mib());
}
