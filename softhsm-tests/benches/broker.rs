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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{BrokerOptions, BrokerProcess, TOKEN_LABEL, USER_PIN, create};
use hdrhistogram::Histogram;
use hsm_backend::secrecy::SecretString;
use hsm_backend::{
    Digest, HashAlgorithm, HsmBackend, KeyId, Pin, Pkcs11Module, PoolConfig, SignatureAlgorithm,
    TokenSelector,
};
use keybroker_api::v1 as pb;
use pb::key_service_client::KeyServiceClient;
use softhsm_tests::throughput;
use tonic::transport::Channel;

/// Concurrent callers (threads for direct rows, tokio tasks for broker rows).
const CONCURRENCY: [usize; 4] = [1, 2, 8, 64];
/// Broker rows spread their callers over `min(callers, MAX_CHANNELS)` mTLS connections.
const MAX_CHANNELS: usize = 8;
/// Digests per `SignBatch` call.
const BATCH: usize = 64;
/// PKCS#11 sessions for the broker (`hsm[].sessions`) and for the direct pool.
const SESSIONS: usize = 2;
const KEY: &str = "bench-p256";
const WARM_UP: Duration = Duration::from_millis(300);

/// One line of the table.
struct Row {
    name: &'static str,
    callers: usize,
    ops_per_second: f64,
    /// Per call, in µs: `None` where not measured.
    latency: Option<(u64, u64)>,
    broker_cpu_us: Option<f64>,
    bench_cpu_us: f64,
}

/// utime+stime of a process, in seconds.
struct CpuClock {
    ticks_per_second: f64,
}

impl CpuClock {
    fn new() -> Self {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap();
        let ticks_per_second = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        CpuClock { ticks_per_second }
    }

    fn seconds(&self, pid: u32) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command name, which is in parentheses: state is field 3,
        // utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / self.ticks_per_second
    }
}

/// CPU seconds per completed sign, in µs, of `pid` between two readings.
fn cpu_us_per_sign(before: f64, after: f64, signs: u64) -> f64 {
    (after - before) * 1e6 / signs.max(1) as f64
}

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
    runtime.block_on(async {
        let mut admin = broker.keys("admin").await;
        admin
            .create_key(create(
                KEY,
                pb::KeyAlgorithm::EcP256,
                pb::KeyPurpose::SignVerify,
                "softhsm",
            ))
            .await
            .unwrap();
    });
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

    let direct = direct_rows(&clock, seconds);
    print_header();
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
            let row = runtime.block_on(broker_row(
                &channels, mode, *callers, seconds, &clock, broker_pid,
            ));
            print_row(&row, Some(baseline.ops_per_second));
        }
    }
    let (callers, baseline) = (*CONCURRENCY.last().unwrap(), direct.last().unwrap());
    let (row, created) = runtime.block_on(async {
        let admin = KeyServiceClient::new(broker.channel("admin").await.unwrap());
        broker_row_while_creating(&channels, admin, callers, seconds, &clock, broker_pid).await
    });
    print_row(&row, Some(baseline.ops_per_second));
    println!(
        "{:<26} the admin created {} keys meanwhile ({:.1}/s)",
        "", created.keys, created.per_second
    );
}

/// Signs with the broker's key from this process, on the broker's token.
fn direct_rows(clock: &CpuClock, seconds: f64) -> Vec<Row> {
    let broker_pin = Pin::new(SecretString::from(USER_PIN)).unwrap();
    let module =
        Pkcs11Module::load(&softhsm_tests::SoftHsm::module_path_or_missing().unwrap()).unwrap();
    let pool = PoolConfig {
        size: SESSIONS,
        ..PoolConfig::default()
    };
    let selector = TokenSelector::Label(TOKEN_LABEL.into());
    let hsm = HsmBackend::open_with(module, &selector, broker_pin, pool).unwrap();
    let label = format!("kb:{KEY}:v1");
    let id: KeyId = hsm
        .list_keys()
        .unwrap()
        .into_iter()
        .find(|k| k.label == label)
        .unwrap_or_else(|| panic!("no object labelled {label} on the token"))
        .id;
    let digest = Digest::of(HashAlgorithm::Sha256, b"benchmark");
    let signs = AtomicU64::new(0);
    let op = || {
        hsm.sign(&id, SignatureAlgorithm::EcdsaP256Sha256, &digest)
            .unwrap();
        signs.fetch_add(1, Ordering::Relaxed);
    };
    let me = std::process::id();
    CONCURRENCY
        .iter()
        .map(|&threads| {
            signs.store(0, Ordering::Relaxed);
            let cpu = clock.seconds(me);
            // The shared loop, so the figure compares with hsm-backend's own bench; the
            // counter also sees its warm-up, so CPU per sign covers the same calls.
            let ops_per_second = throughput::ops_per_second(&op, threads, seconds);
            let bench_cpu_us =
                cpu_us_per_sign(cpu, clock.seconds(me), signs.load(Ordering::Relaxed));
            Row {
                name: "direct hsm-backend sign",
                callers: threads,
                ops_per_second,
                latency: None,
                broker_cpu_us: None,
                bench_cpu_us,
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Unary,
    Batch,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Unary => "broker Sign (unary)",
            Mode::Batch => "broker SignBatch",
        }
    }
}

/// What one caller task measured.
struct CallerResult {
    signs: u64,
    latency_us: Histogram<u64>,
}

/// Calls the broker from one task until `stop`; counts signatures and call latency.
async fn caller(
    mut client: KeyServiceClient<Channel>,
    mode: Mode,
    stop: Arc<AtomicBool>,
) -> CallerResult {
    let digest = Digest::of(HashAlgorithm::Sha256, b"benchmark")
        .as_bytes()
        .to_vec();
    let mut latency_us = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut signs = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        signs += match mode {
            Mode::Unary => {
                let reply = client
                    .sign(pb::SignRequest {
                        name: KEY.into(),
                        input: Some(pb::sign_request::Input::Digest(digest.clone())),
                        scheme: pb::SignatureScheme::Default as i32,
                    })
                    .await
                    .unwrap();
                assert!(!reply.get_ref().signature.is_empty());
                1
            }
            Mode::Batch => {
                let reply = client
                    .sign_batch(pb::SignBatchRequest {
                        name: KEY.into(),
                        digests: vec![digest.clone(); BATCH],
                        scheme: pb::SignatureScheme::Default as i32,
                    })
                    .await
                    .unwrap();
                assert_eq!(reply.get_ref().signatures.len(), BATCH);
                BATCH as u64
            }
        };
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        latency_us.saturating_record(micros.max(1));
    }
    CallerResult { signs, latency_us }
}

/// Runs `callers` tasks for `duration`; returns signs, elapsed seconds and latencies.
async fn run_callers(
    channels: &[KeyServiceClient<Channel>],
    mode: Mode,
    callers: usize,
    duration: Duration,
) -> (u64, f64, Histogram<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let used = callers.min(channels.len());
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|i| tokio::spawn(caller(channels[i % used].clone(), mode, stop.clone())))
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut signs = 0;
    let mut latency = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
    for task in tasks {
        let result = task.await.unwrap();
        signs += result.signs;
        latency.add(&result.latency_us).unwrap();
    }
    (signs, start.elapsed().as_secs_f64(), latency)
}

async fn broker_row(
    channels: &[KeyServiceClient<Channel>],
    mode: Mode,
    callers: usize,
    seconds: f64,
    clock: &CpuClock,
    broker_pid: u32,
) -> Row {
    run_callers(channels, mode, callers, WARM_UP).await;
    let me = std::process::id();
    let (broker_cpu, bench_cpu) = (clock.seconds(broker_pid), clock.seconds(me));
    let (signs, elapsed, latency) =
        run_callers(channels, mode, callers, Duration::from_secs_f64(seconds)).await;
    Row {
        name: mode.name(),
        callers,
        ops_per_second: signs as f64 / elapsed,
        latency: Some((
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99),
        )),
        broker_cpu_us: Some(cpu_us_per_sign(
            broker_cpu,
            clock.seconds(broker_pid),
            signs,
        )),
        bench_cpu_us: cpu_us_per_sign(bench_cpu, clock.seconds(me), signs),
    }
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
async fn broker_row_while_creating(
    channels: &[KeyServiceClient<Channel>],
    admin: KeyServiceClient<Channel>,
    callers: usize,
    seconds: f64,
    clock: &CpuClock,
    broker_pid: u32,
) -> (Row, Creations) {
    let stop = Arc::new(AtomicBool::new(false));
    let creator = tokio::spawn(create_keys(admin, stop.clone()));
    let mut row = broker_row(channels, Mode::Unary, callers, seconds, clock, broker_pid).await;
    stop.store(true, Ordering::Relaxed);
    row.name = "Sign, admin creating keys";
    (row, creator.await.unwrap())
}

fn print_header() {
    println!(
        "{:<26} {:>7} {:>9} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "row", "callers", "ops/s", "vs direct", "p50 µs", "p99 µs", "broker CPU", "bench CPU"
    );
    println!(
        "{:<26} {:>7} {:>9} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "", "", "(signs)", "", "(call)", "(call)", "µs/sign", "µs/sign"
    );
}

fn print_row(row: &Row, direct: Option<f64>) {
    let dash = || "-".to_string();
    let ratio = direct.map_or_else(dash, |d| format!("{:.2}x", row.ops_per_second / d));
    let (p50, p99) = row
        .latency
        .map_or_else(|| (dash(), dash()), |(a, b)| (a.to_string(), b.to_string()));
    let broker_cpu = row.broker_cpu_us.map_or_else(dash, |c| format!("{c:.1}"));
    println!(
        "{:<26} {:>7} {:>9.0} {:>9} {:>9} {:>9} {:>12} {:>12.1}",
        row.name, row.callers, row.ops_per_second, ratio, p50, p99, broker_cpu, row.bench_cpu_us
    );
}
