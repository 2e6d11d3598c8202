//! `make bench`: how long `keybroker serve` takes to start on a token and store holding
//! 100, 1,000 and 10,000 keys, beside the same broker starting on an empty token and store,
//! measured in the same run.
//!
//! The broker is the real release `keybroker` on the end-to-end fixture's SoftHSM2 token
//! and swtpm (`tests/common/mod.rs`). Between sizes the broker is stopped and the token and
//! store are filled directly (`tests/common/fill.rs`), so that the token is built afresh on
//! every run: nothing is cached between runs. Each size starts the broker `RUNS` times:
//! - "listening": spawn until the broker prints its address;
//! - "first RPC": spawn until a `ListKeys` over mutual TLS answers;
//! - "first sign": spawn until a key of the filled set signs (not on an empty store);
//! - "ready": spawn until the broker prints `keybroker: ready` (its attestation token keys
//!   found, so that `Attest` answers at once);
//! - "scan": spawn until the broker logs that its orphan scan finished.
//!
//! `STARTUP_KEYS=100,1000` measures other sizes (ascending). Every run checks that the scan
//! reported no orphan; the first run of each size pages through `ListKeys` and checks that
//! every key is listed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::fill;
use common::{BrokerOptions, BrokerProcess, TOKEN_LABEL, USER_PIN};
use keybroker_api::v1 as pb;
use pb::key_service_client::KeyServiceClient;
use tonic::transport::Channel;

/// Key counts, after the empty baseline; `STARTUP_KEYS=100,1000` measures others.
const SIZES: [usize; 3] = [100, 1_000, 10_000];
/// Keys per `ListKeys` page: within the fixture's 64 KiB message limit (about 71 bytes a key).
const PAGE: u32 = 500;
/// Starts per size.
const RUNS: usize = 3;
/// Bounds a start that never gets ready (a failure, not a measurement).
const DEADLINE: Duration = Duration::from_secs(300);

/// One start, from spawn.
#[derive(Clone, Copy)]
struct Start {
    listening: Duration,
    first_rpc: Duration,
    first_sign: Option<Duration>,
    ready: Duration,
    scan: Duration,
}

fn main() {
    let mut broker = BrokerProcess::start_with(BrokerOptions {
        release: true,
        hsm_sessions: 2,
        ..BrokerOptions::default()
    });
    broker.stop();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "start-up of the release keybroker (SoftHSM2 file store, swtpm); {RUNS} starts per row, min / median"
    );
    let empty = measure(&mut broker, &runtime, 0);
    print_row("empty", &empty, None);
    let dir = broker.dir.path().to_path_buf();
    let mut filler = fill::Filler::open(broker.hsm.module_path(), TOKEN_LABEL, USER_PIN, &dir);
    for n in sizes() {
        let took = filler.fill_to(n);
        println!(
            "  (filled to {n} keys: token {:.1} s, store {:.1} s)",
            took.token.as_secs_f64(),
            took.store.as_secs_f64()
        );
        let starts = measure(&mut broker, &runtime, n);
        print_row(&format!("{n} keys"), &starts, Some(&empty));
    }
}

fn sizes() -> Vec<usize> {
    match std::env::var("STARTUP_KEYS") {
        Ok(list) => list.split(',').map(|n| n.trim().parse().unwrap()).collect(),
        Err(_) => SIZES.to_vec(),
    }
}

/// `RUNS` starts on what the token and store hold now (`keys` keys).
fn measure(
    broker: &mut BrokerProcess,
    runtime: &tokio::runtime::Runtime,
    keys: usize,
) -> Vec<Start> {
    (0..RUNS)
        .map(|run| {
            let start = start_once(broker, runtime, keys, run == 0, run + 1 == RUNS);
            broker.stop();
            start
        })
        .collect()
}

fn start_once(
    broker: &mut BrokerProcess,
    runtime: &tokio::runtime::Runtime,
    keys: usize,
    check_listing: bool,
    print_log: bool,
) -> Start {
    let log_before = broker.log().len();
    let spawned = Instant::now();
    let ready = broker.spawn_listening();
    let listening = spawned.elapsed();
    let (first_rpc, first_sign) = runtime.block_on(async {
        let mut client = KeyServiceClient::new(broker.channel("admin").await.unwrap());
        list(&mut client, 1, "").await;
        let first_rpc = spawned.elapsed();
        let first_sign = if keys > 0 {
            sign(&mut client).await;
            Some(spawned.elapsed())
        } else {
            None
        };
        if check_listing {
            assert_eq!(count_keys(&mut client).await, keys, "every key lists");
        }
        (first_rpc, first_sign)
    });
    let scan = wait_for_scan(broker, log_before, spawned);
    // When the line was read, not when it is received here.
    let ready = ready
        .recv_timeout(DEADLINE)
        .expect("keybroker: ready")
        .duration_since(spawned);
    if print_log {
        // Where the time went, by the broker's own account.
        let log = broker.log();
        for line in log.get(log_before..).unwrap_or_default().lines() {
            if line.contains("elapsed_ms=") {
                println!(
                    "    broker: {}",
                    line.split_once("  INFO ").map_or(line, |(_, l)| l)
                );
            }
        }
    }
    Start {
        listening,
        first_rpc,
        first_sign,
        ready,
        scan,
    }
}

/// Waits for the orphan scan's line in this start's part of the log and checks it found
/// no orphan; the time from spawn until it was seen.
fn wait_for_scan(broker: &BrokerProcess, log_before: usize, spawned: Instant) -> Duration {
    let line = broker.wait_for_orphan_scan(log_before, DEADLINE);
    let seen = spawned.elapsed();
    assert!(line.contains(" orphans=0"), "orphans reported: {line}");
    let log = broker.log();
    let this_start = log.get(log_before..).unwrap_or_default();
    assert!(
        !this_start.contains("object not in the store"),
        "orphans reported:\n{this_start}"
    );
    seen
}

async fn list(
    client: &mut KeyServiceClient<Channel>,
    page_size: u32,
    page_token: &str,
) -> pb::ListKeysResponse {
    client
        .list_keys(pb::ListKeysRequest {
            prefix: String::new(),
            page_size,
            page_token: page_token.into(),
            tags: Default::default(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn count_keys(client: &mut KeyServiceClient<Channel>) -> usize {
    let (mut count, mut token) = (0, String::new());
    loop {
        let page = list(client, PAGE, &token).await;
        count += page.keys.len();
        if page.next_page_token.is_empty() {
            return count;
        }
        token = page.next_page_token;
    }
}

async fn sign(client: &mut KeyServiceClient<Channel>) {
    client
        .sign(pb::SignRequest {
            name: fill::key_name(0),
            input: Some(pb::sign_request::Input::Message(b"start-up".to_vec())),
            scheme: pb::SignatureScheme::Default as i32,
        })
        .await
        .unwrap();
}

fn print_row(name: &str, starts: &[Start], empty: Option<&[Start]>) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let stat = |f: &dyn Fn(&Start) -> Duration, starts: &[Start]| {
        let mut v: Vec<f64> = starts.iter().map(|s| ms(f(s))).collect();
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2])
    };
    let (rpc_min, rpc_med) = stat(&|s| s.first_rpc, starts);
    let over = empty
        .map(|e| {
            format!(
                ", +{:.0} ms over empty",
                rpc_med - stat(&|s| s.first_rpc, e).1
            )
        })
        .unwrap_or_default();
    println!("{name}: first RPC {rpc_min:.0} / {rpc_med:.0} ms{over}");
    let (l_min, l_med) = stat(&|s| s.listening, starts);
    let (r_min, r_med) = stat(&|s| s.ready, starts);
    let (s_min, s_med) = stat(&|s| s.scan, starts);
    println!(
        "  listening {l_min:.0} / {l_med:.0} ms; ready {r_min:.0} / {r_med:.0} ms; orphan scan done {s_min:.0} / {s_med:.0} ms"
    );
    if starts.iter().all(|s| s.first_sign.is_some()) {
        let (f_min, f_med) = stat(&|s| s.first_sign.unwrap_or_default(), starts);
        println!("  first sign {f_min:.0} / {f_med:.0} ms");
    }
}
