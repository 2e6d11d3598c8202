//! `make bench`: attested certificate issuance through the broker, beside the HSM's own
//! ECDSA P-256 sign rate measured in the same run on the same SoftHSM2 token.
//!
//! The broker is the real `keybroker` process (release build) from the end-to-end
//! fixture; callers are the `workload` identity on its bootstrap mTLS connections. Rows:
//! - the direct HSM sign rate (as in the `broker` bench): the baseline of every ratio, and
//!   `KeyService.Sign`, one HSM signature per RPC;
//! - attested issuances with development evidence, the client included: `GetChallenge`, a
//!   fresh P-256 key, its CSR, and `Attest` with the CSR, which returns the token and the
//!   certificate (the agent's flow); then the same with `Attest` and `IssueCertificate`
//!   presenting the token. Each needs two HSM signatures (the token, the certificate), so
//!   half the sign rate is a ceiling;
//! - `IssueCertificate` alone, with one token and its key's CSR for every call;
//! - SEV-SNP evidence (the real Genoa report and VCEK in attest/tests/data/snp/): not an
//!   issuance rate, as no valid SNP evidence can be made here. Each op is `GetChallenge` and
//!   an `Attest` that the broker refuses on the binding, its last check. The VCEK chain is
//!   verified once and then cached by the VCEK's digest; the report's signature is checked
//!   on every call. The VCEK is sent with the evidence, or taken from the broker's
//!   `certificate_cache`.
//!
//! The broker's challenges live the default 60 s (`challenge_ttl_seconds`): only
//! outstanding ones count against the store's 10,000, so the TTL does not cap the rate.
//!
//! CPU per op is utime+stime over a row divided by the ops completed in it (the broker's,
//! and this process's: the client's). `BENCH_SECONDS` sets how long each row runs (3).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "identity/flows.rs"]
mod flows;
#[path = "measure/mod.rs"]
mod measure;

use std::sync::Arc;

use common::{APPRAISAL_POLICY, BrokerOptions, BrokerProcess, TOKEN_LABEL, TRUST_DOMAIN};
use enclave::key::EphemeralKey;
use flows::{Flow, IssuanceCall, IssueCall, STEPS, SnpCall, Steps, Workload};
use keybroker_api::v1 as pb;
use measure::callers::{Call, broker_row};
use measure::cpu::CpuClock;
use measure::sign::{Mode, SignCall, create_bench_key, direct_rows};
use measure::table::{Row, print_header, print_row};
use pb::key_service_client::KeyServiceClient;
use softhsm_tests::throughput;
use tonic::transport::Channel;

/// Concurrent callers (tokio tasks) of the broker rows.
const CALLERS: [usize; 3] = [4, 8, 16];
/// Callers spread over `min(callers, MAX_CHANNELS)` mTLS connections.
const MAX_CHANNELS: usize = 8;
/// PKCS#11 sessions for the broker (`hsm[].sessions`), and threads and sessions of the
/// direct baseline.
const SESSIONS: usize = 2;
/// `attestation.challenge_ttl_seconds`, the default.
const CHALLENGE_TTL_SECONDS: u64 = 60;
/// The issue's goal, issuances per second.
const GOAL: f64 = 2_000.0;

/// The recorded Genoa evidence.
struct Genoa {
    report: Vec<u8>,
    vcek: Vec<u8>,
}

impl Genoa {
    fn read() -> Genoa {
        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../attest/tests/data/snp/");
        Genoa {
            report: std::fs::read(format!("{data}genoa_report.bin")).unwrap(),
            vcek: std::fs::read(format!("{data}genoa_vcek.der")).unwrap(),
        }
    }
}

/// The running broker and what every row needs.
struct Bench {
    runtime: tokio::runtime::Runtime,
    broker: BrokerProcess,
    channels: Vec<Channel>,
    clock: CpuClock,
    seconds: f64,
    /// The direct HSM sign rate: the baseline of every ratio.
    hsm_signs: f64,
}

impl Bench {
    /// Measures and prints one row of `callers` callers made by `make`.
    fn row<C: Call>(&self, name: &'static str, callers: usize, make: impl Fn(Channel) -> C) -> Row {
        let row = self.runtime.block_on(broker_row(
            name,
            &self.channels,
            &make,
            callers,
            self.seconds,
            &self.clock,
            self.broker.pid().unwrap(),
        ));
        print_row(&row, Some(self.hsm_signs));
        row
    }

    /// [`Bench::row`] at each of [`CALLERS`]; the fastest.
    fn best_of<C: Call>(&self, name: &'static str, make: impl Fn(Channel) -> C) -> Row {
        let rows = CALLERS.map(|callers| self.row(name, callers, &make));
        fastest(rows)
    }
}

fn fastest(rows: impl IntoIterator<Item = Row>) -> Row {
    rows.into_iter()
        .max_by(|a, b| a.ops_per_second.total_cmp(&b.ops_per_second))
        .unwrap()
}

fn main() {
    let seconds = throughput::seconds_per_row();
    let genoa = Genoa::read();
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(cache.path().join("genoa_vcek.der"), &genoa.vcek).unwrap();
    let settings = format!(
        "challenge_ttl_seconds = {CHALLENGE_TTL_SECONDS}\ncertificate_cache = \"{}\"\n",
        cache.path().display()
    );
    let options = BrokerOptions {
        release: true,
        hsm_sessions: SESSIONS,
        ..BrokerOptions::default()
    };
    let broker = BrokerProcess::start_attesting(options, APPRAISAL_POLICY, &settings);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(create_bench_key(&broker));
    print_preamble(&broker, seconds);
    let client_us = client_cost(seconds);

    let clock = CpuClock::new();
    let direct = direct_rows(&clock, SESSIONS, &[SESSIONS], seconds).remove(0);
    print_header("op");
    print_row(&direct, None);
    let channels = runtime.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..MAX_CHANNELS {
            channels.push(broker.channel("workload").await.unwrap());
        }
        channels
    });
    let bench = Bench {
        runtime,
        broker,
        channels,
        clock,
        seconds,
        hsm_signs: direct.ops_per_second,
    };
    let sign = bench.best_of(Mode::Unary.name(), |channel| {
        SignCall::new(KeyServiceClient::new(channel), Mode::Unary)
    });
    let issuance = [Flow::OneCall, Flow::TwoCalls].map(|flow| issuance_rows(&bench, flow));
    let (token, csr) = bench
        .runtime
        .block_on(Workload::new(bench.channels[0].clone()).attested_csr());
    let issue = bench.best_of("IssueCertificate alone", |channel| {
        IssueCall::new(channel, token.clone(), csr.clone())
    });
    println!(
        "SNP evidence verifications per second (refused on binding, full chain and signature \
         checked); NOT an issuance rate:"
    );
    let spki = EphemeralKey::generate().unwrap().spki_der().to_vec();
    let snp = [
        ("SNP, VCEK sent", genoa.vcek.clone()),
        ("SNP, VCEK in cache", Vec::new()),
    ]
    .map(|(name, vek)| {
        bench.best_of(name, |channel| {
            SnpCall::new(channel, spki.clone(), genoa.report.clone(), vek.clone())
        })
    });
    let summary = Summary {
        hsm_signs: direct.ops_per_second,
        sign,
        issuance,
        issue,
        snp,
        client_us,
    };
    summary.print();
}

/// The full-flow rows of `flow`, each followed by where its issuances' wall time went; the
/// fastest.
fn issuance_rows(bench: &Bench, flow: Flow) -> Row {
    let rows = CALLERS.map(|callers| {
        let steps = Arc::new(Steps::default());
        let row = bench.row(flow.name(), callers, |channel| {
            IssuanceCall::new(channel, flow, steps.clone())
        });
        let means: Vec<String> = STEPS
            .iter()
            .zip(steps.mean_us())
            .map(|(step, us)| format!("{step} {us:.0}"))
            .collect();
        println!("{:<26} mean wall µs: {}", "", means.join(", "));
        row
    });
    fastest(rows)
}

fn print_preamble(broker: &BrokerProcess, seconds: f64) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "attested certificate issuance vs the HSM's ECDSA P-256 sign rate, SoftHSM2 token \
         {TOKEN_LABEL:?}, {seconds} s per row, {SESSIONS} PKCS#11 sessions each, {cores} CPUs"
    );
    println!(
        "broker: release build, pid {}, gRPC over mTLS as `workload` (bootstrap certificate, \
         spiffe://{TRUST_DOMAIN}/workload); callers are tokio tasks over min(callers, \
         {MAX_CHANNELS}) connections; challenge_ttl_seconds = {CHALLENGE_TTL_SECONDS}",
        broker.pid().unwrap()
    );
    println!(
        "op = one HSM sign (direct, Sign), one issuance (GetChallenge, key, CSR, Attest with \
         the CSR; or Attest then IssueCertificate), one IssueCertificate, or one SNP \
         GetChallenge+Attest (refused); p50/p99 are per op"
    );
    println!(
        "CPU µs/op: utime+stime over the row / ops completed (bench = this process: the signer \
         for the direct row, the workload clients for broker rows)"
    );
}

/// The client's own work per issuance, on one thread with nothing else running: µs to make
/// an ephemeral key, and to make a key and its CSR.
fn client_cost(seconds: f64) -> (f64, f64) {
    let id = format!("spiffe://{TRUST_DOMAIN}/workload");
    let key = || drop(EphemeralKey::generate().unwrap());
    let key_and_csr = || drop(EphemeralKey::generate().unwrap().csr_der(&id).unwrap());
    let seconds = seconds.min(1.0);
    let key_us = 1e6 / throughput::ops_per_second(&key, 1, seconds);
    let both_us = 1e6 / throughput::ops_per_second(&key_and_csr, 1, seconds);
    println!(
        "client work, 1 thread, unloaded: ephemeral P-256 key {key_us:.1} µs, its CSR {:.1} µs",
        both_us - key_us
    );
    (key_us, both_us - key_us)
}

/// The fastest row of each kind, against the baseline and the goal.
struct Summary {
    hsm_signs: f64,
    sign: Row,
    /// [`Flow::OneCall`], [`Flow::TwoCalls`].
    issuance: [Row; 2],
    issue: Row,
    snp: [Row; 2],
    client_us: (f64, f64),
}

impl Summary {
    fn print(&self) {
        let ratio = |row: &Row| row.ops_per_second / self.hsm_signs;
        println!("summary (best of {CALLERS:?} callers):");
        println!(
            "  HSM ECDSA P-256 sign, direct, {SESSIONS} threads: {:.0}/s (baseline); through \
             KeyService.Sign: {:.0}/s = {:.2}x at {} callers",
            self.hsm_signs,
            self.sign.ops_per_second,
            ratio(&self.sign),
            self.sign.callers
        );
        let [one, two] = &self.issuance;
        let goal = if one.ops_per_second >= GOAL {
            "met"
        } else {
            "missed"
        };
        println!(
            "  attested issuances/s, dev evidence, client included, Attest with the CSR (the \
             agent's flow): {:.0}/s = {:.2}x at {} callers (2 HSM signs each: ceiling \
             {:.0}/s); goal {GOAL:.0}/s {goal}",
            one.ops_per_second,
            ratio(one),
            one.callers,
            self.hsm_signs / 2.0
        );
        for (row, what) in [
            (one, "Attest with the CSR"),
            (two, "Attest, IssueCertificate"),
        ] {
            let broker = row.broker_cpu_us.unwrap_or(0.0);
            println!(
                "  per issuance, {what}: broker CPU {broker:.0} µs + client CPU {:.0} µs = \
                 {:.0} µs",
                row.bench_cpu_us,
                broker + row.bench_cpu_us
            );
        }
        println!(
            "  attested issuances/s with Attest then IssueCertificate: {:.0}/s = {:.2}x at {} \
             callers; client's key {:.0} µs and CSR {:.0} µs unloaded",
            two.ops_per_second,
            ratio(two),
            two.callers,
            self.client_us.0,
            self.client_us.1
        );
        println!(
            "  IssueCertificate alone: {:.0}/s = {:.2}x at {} callers",
            self.issue.ops_per_second,
            ratio(&self.issue),
            self.issue.callers
        );
        for row in &self.snp {
            println!(
                "  {}: {:.0} SNP evidence verifications/s = {:.2}x at {} callers (refused on \
                 binding, full chain and signature checked; not an issuance rate)",
                row.name,
                row.ops_per_second,
                ratio(row),
                row.callers
            );
        }
    }
}
