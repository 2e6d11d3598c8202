//! `make soak`: the kill -9 harness. One SoftHSM2 token, one swtpm and one store persist
//! across every restart of a release `keybroker`. Concurrent clients create, rotate and
//! destroy keys and sign and encrypt with them (HSM and TPM keys) while the broker is
//! killed with SIGKILL at a random moment (seeded; the seed is printed), then started
//! again, `SOAK_KILLS` times (default 100).
//!
//! A client-side ledger keeps every acknowledged operation (`benches/soak/ledger.rs`).
//! After each restart a sample of it is verified, and all of it at the end
//! (`benches/soak/verify.rs`): nothing acknowledged may be lost, and no object with the
//! broker's label may be on the token without the store knowing it. Start-up time is
//! measured from process spawn to the first successful RPC. Exits non-zero if anything
//! was lost or orphaned. docs/performance.md ("Kill -9 soak") has a recorded run.
//!
//! Knobs: `SOAK_KILLS` (100), `SOAK_CLIENTS` (4), `SOAK_SEED` (from the clock),
//! `SOAK_MAX_UP_MS` (2500: the longest a run lasts before its kill).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "soak/clients.rs"]
mod clients;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "soak/ledger.rs"]
mod ledger;
#[path = "soak/verify.rs"]
mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clients::{Client, Shared, lock};
use common::{BrokerOptions, BrokerProcess, TOKEN_LABEL, USER_PIN, create};
use hsm_backend::secrecy::SecretString;
use hsm_backend::{HsmBackend, Pin, Pkcs11Module, PoolConfig, TokenSelector};
use keybroker_api::v1 as pb;
use ledger::Kind;
use pb::key_service_client::KeyServiceClient;
use softhsm_tests::soak;
use verify::Depth;

/// The longest a broker may take from spawn to its first answer before the run fails.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// Keys every client may use, made before the first kill.
const SHARED: [(&str, Kind, pb::KeyAlgorithm, pb::KeyPurpose); 3] = [
    (
        "soak-hsm-sign",
        Kind::HsmSign,
        pb::KeyAlgorithm::EcP256,
        pb::KeyPurpose::SignVerify,
    ),
    (
        "soak-tpm-sign",
        Kind::TpmSign,
        pb::KeyAlgorithm::EcP256,
        pb::KeyPurpose::SignVerify,
    ),
    (
        "soak-tpm-rsa",
        Kind::TpmRsa,
        pb::KeyAlgorithm::Rsa2048,
        pb::KeyPurpose::EncryptDecrypt,
    ),
];

fn main() {
    let kills = soak::env_number("SOAK_KILLS", 100);
    let clients = soak::env_number("SOAK_CLIENTS", 4) as usize;
    let max_up_ms = soak::env_number("SOAK_MAX_UP_MS", 2500);
    let seed = soak::seed();
    println!(
        "kill -9 soak: {kills} kills, {clients} clients, seed {seed} (SOAK_SEED={seed} repeats the kill moments)"
    );
    let mut rng = soak::rng(seed);
    let mut broker = BrokerProcess::start_with(BrokerOptions {
        release: true,
        hsm_sessions: 2,
        ..BrokerOptions::default()
    });
    let hsm = open_token();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let shared: Shared = Arc::default();
    runtime.block_on(make_shared_keys(&broker, &shared));
    let made = Arc::new(AtomicU64::new(0));
    let mut start_times = Vec::new();
    let mut broker_orphans = 0usize;
    let mut kills_done = 0;
    for kill in 1..=kills {
        let up = Duration::from_millis(rng.u64(100..=max_up_ms));
        let killed = Arc::new(AtomicBool::new(false));
        runtime.block_on(async {
            let workers = spawn_clients(&broker, &shared, clients, &killed, &made, &mut rng).await;
            tokio::time::sleep(up).await;
            killed.store(true, Ordering::SeqCst);
            broker.kill9();
            for w in workers {
                let _ = w.await;
            }
        });
        let started = Instant::now();
        let log_before = broker.log().len();
        if let Err(status) = broker.try_spawn(&[]) {
            refused_start(&broker, &shared, kill, status, seed);
            break;
        }
        kills_done = kill;
        let mut keys = runtime.block_on(first_answer(&broker, started));
        start_times.push(started.elapsed());
        let scan = broker.wait_for_orphan_scan(log_before, Duration::from_secs(300));
        broker_orphans = broker_orphans.max(reported_orphans(&scan));
        let depth = if kill == kills {
            Depth::Full
        } else {
            Depth::Sample
        };
        runtime
            .block_on(verify::check_ledger(
                &mut keys, &hsm, &shared, depth, &mut rng,
            ))
            .unwrap_or_else(|s| panic!("verification after kill {kill} failed: {s:?}"));
        let l = lock(&shared);
        eprintln!(
            "kill {kill:>3} after {up:>5?}: start {}, {} keys, lost {}, orphans {}",
            soak::ms(*start_times.last().unwrap()),
            l.keys.len(),
            l.lost.len(),
            l.orphans.len()
        );
    }
    if broker_orphans > 0 {
        lock(&shared).orphans.insert(format!(
            "broker start-up report: {broker_orphans} objects not in the store"
        ));
    }
    let failed = summary(&lock(&shared), kills_done, &start_times);
    broker.stop();
    // Exiting skips destructors: end the swtpm and remove the directories first.
    drop(broker);
    if failed {
        std::process::exit(1);
    }
}

/// A start after a kill failed: the run ends there, as a loss of everything, with the
/// store, configuration, log and token copied to `/tmp/keybroker-soak-<seed>` to study.
fn refused_start(
    broker: &BrokerProcess,
    shared: &Shared,
    kill: u64,
    status: std::process::ExitStatus,
    seed: u64,
) {
    let kept = format!("/tmp/keybroker-soak-{seed}");
    let _ = std::fs::create_dir_all(&kept);
    for from in [broker.dir.path(), broker.hsm.token_dir()] {
        let _ = std::process::Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(&kept)
            .status();
    }
    let log = broker.log();
    let reason = log
        .lines()
        .rev()
        .find(|l| l.starts_with("keybroker:"))
        .unwrap_or("no reason logged");
    lock(shared).lose(
        "start-up",
        format!(
            "after kill {kill} the broker did not start ({status}): {reason}; state kept in {kept}"
        ),
    );
}

/// The broker's token, opened in this process: the direct PKCS#11 listing.
fn open_token() -> HsmBackend {
    let pin = Pin::new(SecretString::from(USER_PIN)).unwrap();
    let module =
        Pkcs11Module::load(&softhsm_tests::SoftHsm::module_path_or_missing().unwrap()).unwrap();
    let pool = PoolConfig {
        size: 1,
        ..PoolConfig::default()
    };
    HsmBackend::open_with(module, &TokenSelector::Label(TOKEN_LABEL.into()), pin, pool).unwrap()
}

async fn make_shared_keys(broker: &BrokerProcess, shared: &Shared) {
    let mut keys = broker.keys("admin").await;
    for (name, kind, alg, purpose) in SHARED {
        keys.create_key(create(name, alg, purpose, kind.backend()))
            .await
            .unwrap();
        lock(shared).created(name, kind, None);
    }
}

async fn spawn_clients(
    broker: &BrokerProcess,
    shared: &Shared,
    clients: usize,
    killed: &Arc<AtomicBool>,
    made: &Arc<AtomicU64>,
    rng: &mut fastrand::Rng,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut workers = Vec::new();
    for id in 0..clients {
        let client = Client {
            id,
            keys: broker.keys("admin").await,
            ledger: shared.clone(),
            rng: soak::rng(rng.u64(..)),
            killed: killed.clone(),
            made: made.clone(),
        };
        workers.push(tokio::spawn(client.run()));
    }
    workers
}

/// Polls until an RPC succeeds: the end of start-up as a client sees it.
async fn first_answer(
    broker: &BrokerProcess,
    started: Instant,
) -> KeyServiceClient<tonic::transport::Channel> {
    loop {
        if let Ok(channel) = broker.channel("admin").await {
            let mut keys = KeyServiceClient::new(channel);
            let probe = pb::ListKeysRequest {
                page_size: 1,
                ..Default::default()
            };
            if keys.list_keys(probe).await.is_ok() {
                return keys;
            }
        }
        assert!(
            started.elapsed() < START_DEADLINE,
            "no answer within {START_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `orphans=N` of the orphan scan's report line.
fn reported_orphans(line: &str) -> usize {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("orphans="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no orphan count in {line:?}"))
}

/// Prints the table; true if anything was lost or orphaned.
fn summary(l: &ledger::Ledger, kills: u64, start_times: &[Duration]) -> bool {
    let c = l.counts;
    let lost: usize = l.lost.len();
    println!("\n| measure | value |\n|---|---|");
    println!("| kills (SIGKILL) | {kills} |");
    println!("| acknowledged creates | {} |", c.creates);
    println!("| acknowledged rotations | {} |", c.rotations);
    println!("| acknowledged destructions | {} |", c.destructions);
    println!("| acknowledged signatures | {} |", c.signs);
    println!("| acknowledged encryptions | {} |", c.encrypts);
    println!("| keys in the ledger at the end | {} |", l.keys.len());
    println!("| calls refused while the broker was up | {} |", c.refused);
    println!(
        "| signature checks skipped (no public key seen) | {} |",
        c.unverifiable
    );
    println!("| lost operations (goal 0) | {lost} |");
    for (kind, n) in l.lost_by_kind() {
        println!("| lost: {kind} | {n} |");
    }
    println!("| orphans (goal 0) | {} |", l.orphans.len());
    if let Some(s) = soak::spread(start_times) {
        println!(
            "| start-up, spawn to first answer: min / median / p95 / max | {} / {} / {} / {} |",
            soak::ms(s.min),
            soak::ms(s.median),
            soak::ms(s.p95),
            soak::ms(s.max)
        );
    }
    for r in &l.refusals {
        println!("refused: {r}");
    }
    for o in &l.orphans {
        println!("orphan: {o}");
    }
    for x in &l.lost {
        println!("lost: {x}");
    }
    lost > 0 || !l.orphans.is_empty()
}
