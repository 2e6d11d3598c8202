//! What the broker benchmarks (`broker`, `identity`) share: the CPU clock, the callers'
//! loop, the table, and the signing rows (the direct HSM baseline and `KeyService.Sign`).
//! Each bench uses a subset.
#![allow(dead_code)]

pub mod callers;
pub mod cpu;
pub mod sign;
pub mod table;
