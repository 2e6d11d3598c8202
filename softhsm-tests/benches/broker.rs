//! `make bench`: ECDSA P-256 signing through the broker, beside the same key used
//! directly, in one run on one SoftHSM2 token.
//!
//! The broker is the real `keybroker` process (release build) from the end-to-end
//! fixture, called over gRPC and mutual TLS as the `workload` identity. The direct rows
//! open the broker's own token in this process with `hsm_backend::HsmBackend` and the same
//! PIN, and sign with the broker's key (found by its label `kb:<name>:v1`). Both sides
//! get the same number of PKCS#11 sessions.
//!
//! CPU per sign is utime+stime from `/proc/<pid>/stat` over a row, divided by the signs
//! completed in it: the broker process's for broker rows, this process's for every row
//! (for broker rows that is the client's cost). Both share the machine's cores, so the
//! CPU columns show overhead even when throughput is bound by the cores.
//!
//! The last row is unary Sign at the highest concurrency while an `admin` creates EC P-256
//! keys in a loop on the same broker: the store's writes (and the key-record cache each
//! one clears) against the signing hot path. Its broker CPU includes the creations.
//!
//! `BENCH_SECONDS` sets how long each row runs (default 3).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "measure/mod.rs"]
mod measure;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use common::{BrokerOptions, BrokerProcess, TOKEN_LABEL, create};
use keybroker_api::v1 as pb;
use measure::callers::broker_row;
use measure::cpu::CpuClock;
use measure::sign::{BATCH, Mode, SignCall, create_bench_key, direct_rows};
use measure::table::{Row, print_header, print_row};
use pb::key_service_client::KeyServiceClient;
use softhsm_tests::throughput;
use tonic::transport::Channel;

/// Concurrent callers (threads for direct rows, tokio tasks for broker rows).
const CONCURRENCY: [usize; 4] = [1, 2, 8, 64];
/// Broker rows spread their callers over `min(callers, MAX_CHANNELS)` mTLS connections.
const MAX_CHANNELS: usize = 8;
/// PKCS#11 sessions for the broker (`hsm[].sessions`) and for the direct pool.
const SESSIONS: usize = 2;

fn main() {
    let seconds = throughput::seconds_per_row();
    let broker = BrokerProcess::start_with(BrokerOptions {
        release: true,
        hsm_sessions: SESSIONS,
        ..BrokerOptions::default()
    });
    let broker_pid = broker.pid().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(create_bench_key(&broker));
    let clock = CpuClock::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "broker vs direct, ECDSA P-256 sign, SoftHSM2 token {TOKEN_LABEL:?}, {seconds} s per row, \
         {SESSIONS} PKCS#11 sessions each, {cores} CPUs"
    );
    println!(
        "broker: release build, pid {broker_pid}, gRPC over mTLS as `workload`; callers are \
         tokio tasks over min(callers, {MAX_CHANNELS}) connections; SignBatch of {BATCH} digests"
    );
    println!(
        "CPU µs/sign: utime+stime over the row / signs completed (bench = this process: the \
         signer for direct rows, the gRPC client for broker rows)"
    );

    let direct = direct_rows(&clock, SESSIONS, &CONCURRENCY, seconds);
    print_header("sign");
    for row in &direct {
        print_row(row, None);
    }
    let channels = runtime.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..MAX_CHANNELS {
            channels.push(KeyServiceClient::new(
                broker.channel("workload").await.unwrap(),
            ));
        }
        channels
    });
    for mode in [Mode::Unary, Mode::Batch] {
        for (callers, baseline) in CONCURRENCY.iter().zip(&direct) {
            let row = runtime.block_on(sign_row(
                &channels, mode, *callers, seconds, &clock, broker_pid,
            ));
            print_row(&row, Some(baseline.ops_per_second));
        }
    }
    let (callers, baseline) = (*CONCURRENCY.last().unwrap(), direct.last().unwrap());
    let (row, created) = runtime.block_on(async {
        let admin = KeyServiceClient::new(broker.channel("admin").await.unwrap());
        sign_row_while_creating(&channels, admin, callers, seconds, &clock, broker_pid).await
    });
    print_row(&row, Some(baseline.ops_per_second));
    println!(
        "{:<26} the admin created {} keys meanwhile ({:.1}/s)",
        "", created.keys, created.per_second
    );
}

/// `Sign` or `SignBatch` from `callers` tasks.
async fn sign_row(
    channels: &[KeyServiceClient<Channel>],
    mode: Mode,
    callers: usize,
    seconds: f64,
    clock: &CpuClock,
    broker_pid: u32,
) -> Row {
    let make = |client| SignCall::new(client, mode);
    broker_row(
        mode.name(),
        channels,
        &make,
        callers,
        seconds,
        clock,
        broker_pid,
    )
    .await
}

/// Keys the admin created during a row.
struct Creations {
    keys: u64,
    per_second: f64,
}

/// Creates EC P-256 keys one after another until `stop`.
async fn create_keys(mut admin: KeyServiceClient<Channel>, stop: Arc<AtomicBool>) -> Creations {
    let start = Instant::now();
    let mut keys = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("bench-churn-{keys}");
        admin
            .create_key(create(
                &name,
                pb::KeyAlgorithm::EcP256,
                pb::KeyPurpose::SignVerify,
                "softhsm",
            ))
            .await
            .unwrap();
        keys += 1;
    }
    Creations {
        keys,
        per_second: keys as f64 / start.elapsed().as_secs_f64(),
    }
}

/// The unary Sign row while an admin creates keys in a loop (warm-up included).
async fn sign_row_while_creating(
    channels: &[KeyServiceClient<Channel>],
    admin: KeyServiceClient<Channel>,
    callers: usize,
    seconds: f64,
    clock: &CpuClock,
    broker_pid: u32,
) -> (Row, Creations) {
    let stop = Arc::new(AtomicBool::new(false));
    let creator = tokio::spawn(create_keys(admin, stop.clone()));
    let mut row = sign_row(channels, Mode::Unary, callers, seconds, clock, broker_pid).await;
    stop.store(true, Ordering::Relaxed);
    row.name = "Sign, admin creating keys";
    (row, creator.await.unwrap())
}
