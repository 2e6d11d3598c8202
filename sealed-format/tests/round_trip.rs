//! Round trips through `SealWriter` and `UnsealReader`, at the sizes where chunking can
//! go wrong, with small and odd-sized writes and reads.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{billing, header, key_pair, pattern, seal_with, unseal_with};
use sealed_format::TAG_LEN;

const MIB: usize = 1024 * 1024;

fn sizes(chunk: usize) -> Vec<usize> {
    vec![0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk, 5 * MIB + 17]
}

/// Header, then full chunks, then the final chunk (possibly empty) with its tag.
fn expected_len(header_len: usize, chunk: usize, plaintext: usize) -> usize {
    header_len + (plaintext / chunk) * (chunk + TAG_LEN) + plaintext % chunk + TAG_LEN
}

fn round_trip(chunk_size: u32, len: usize, write_step: usize, read_step: usize) {
    let chunk = chunk_size as usize;
    let header = header(chunk_size);
    let plaintext = pattern(len);
    let (sealing, opening) = key_pair();
    let envelope = seal_with(&header, sealing, &billing(), &plaintext, write_step);
    assert_eq!(
        envelope.len(),
        expected_len(header.encode().len(), chunk, len)
    );
    let unsealed = unseal_with(&envelope, &opening, &billing(), read_step).unwrap();
    assert!(
        unsealed == plaintext,
        "chunk {chunk}, {len} bytes, steps {write_step}/{read_step}"
    );
}

#[test]
fn every_size_with_1_kib_chunks() {
    for len in sizes(1024) {
        let steps: &[(usize, usize)] = if len > MIB {
            &[(4099, 7), (65_537, 1000)]
        } else {
            &[(1, 1), (7, 13), (1000, 65_537)]
        };
        for &(write, read) in steps {
            round_trip(1024, len, write, read);
        }
    }
}

#[test]
fn every_size_with_64_kib_chunks() {
    for len in sizes(65_536) {
        let steps: &[(usize, usize)] = if len > MIB {
            &[(4099, 7), (65_537, 1_000_003)]
        } else {
            &[(7, 13), (1000, 65_537), (65_536, 65_536)]
        };
        for &(write, read) in steps {
            round_trip(65_536, len, write, read);
        }
    }
}

#[test]
fn the_smallest_and_largest_chunk_sizes() {
    round_trip(1024, 2500, 333, 444);
    round_trip(16 * 1024 * 1024, 100_000, 65_536, 50_000);
}

#[test]
fn a_single_write_of_everything() {
    round_trip(1024, 10 * 1024 + 5, usize::MAX, 1 << 20);
}
