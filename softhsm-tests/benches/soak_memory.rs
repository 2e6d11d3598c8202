//! `make soak-memory`: the resident memory of a release `keybroker` under a realistic
//! load for `SOAK_MINUTES` (default 30). Eight clients (`SOAK_CLIENTS`) call it over
//! mutual TLS as two identities: `workload` signs (unary and batches), verifies, reads
//! public keys and lists keys; `admin` encrypts and decrypts (AES-256 and RSA-2048 in
//! the token, RSA-2048 in the TPM), signs with a TPM key, makes data keys, and attests
//! with development evidence (challenge, attestation, JWKS). Every client opens a new
//! connection after `SOAK_CALLS_PER_CONNECTION` calls (default 2000), as clients that
//! come and go do.
//!
//! VmRSS (`/proc/<pid>/status`) is sampled every `SOAK_SAMPLE_SECONDS` (10). The report:
//! RSS at the start, after warm-up (`SOAK_WARMUP_MINUTES`, default a sixth of the run),
//! at the end, and the least-squares slope after warm-up. With `SOAK_HEAPTRACK=<prefix>`
//! the broker is profiled by `heaptrack --pid` for the whole run; `heaptrack_print
//! --print-leaks` then lists what was still allocated when the broker was killed.
//! docs/performance.md ("Memory soak") has a recorded run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "soak/load.rs"]
mod load;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{BrokerOptions, BrokerProcess};
use softhsm_tests::soak;

fn main() {
    let minutes = soak::env_number("SOAK_MINUTES", 30);
    let clients = soak::env_number("SOAK_CLIENTS", 8) as usize;
    let sample_every = Duration::from_secs(soak::env_number("SOAK_SAMPLE_SECONDS", 10));
    // A sixth of the run, at least a minute, unless set.
    let warm_up = match soak::env_number("SOAK_WARMUP_MINUTES", 0) {
        0 => Duration::from_secs((minutes * 10).max(60)),
        m => Duration::from_secs(m * 60),
    };
    let per_connection = soak::env_number("SOAK_CALLS_PER_CONNECTION", 2000);
    let seed = soak::seed();
    let mut broker = BrokerProcess::start_with(BrokerOptions {
        release: true,
        hsm_sessions: 2,
        ..BrokerOptions::default()
    });
    let profiled = std::env::var("SOAK_HEAPTRACK").ok();
    let (pid, mut profiler) = match &profiled {
        Some(prefix) => {
            let (pid, child) = respawn_under_heaptrack(&mut broker, prefix);
            (pid, Some(child))
        }
        None => (broker.pid().unwrap(), None),
    };
    println!(
        "memory soak: {minutes} min, {clients} clients, a new connection every {per_connection} \
         calls, RSS every {sample_every:?}, warm-up {warm_up:?}, seed {seed}, broker pid {pid}"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    runtime.block_on(load::make_keys(&broker));
    let counters = Arc::new(load::Counters::default());
    let samples = runtime.block_on(async {
        let workers = load::spawn(&broker, clients, per_connection, seed, &stop, &counters);
        let samples = sample_rss(
            pid,
            Duration::from_secs(minutes * 60),
            sample_every,
            &counters,
        )
        .await;
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            let _ = w.await;
        }
        samples
    });
    // SIGKILL, so that the profile ends with what was live during the load.
    broker.kill9();
    if let Some(p) = profiler.as_mut() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        let _ = p.wait();
    }
    report(&samples, warm_up, &counters);
}

/// Stops the fixture's broker and starts it again under `heaptrack` (on the same token,
/// swtpm and store); its profile is `<prefix>.zst`. Returns the broker's own pid (a child
/// of the heaptrack script) and the script's process.
fn respawn_under_heaptrack(broker: &mut BrokerProcess, prefix: &str) -> (u32, Child) {
    softhsm_tests::require_command("heaptrack", "heaptrack").unwrap();
    broker.stop();
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(broker.log_path())
        .unwrap();
    let mut child = Command::new("heaptrack")
        .args(["-o", prefix])
        .arg(common::keybroker_binary(true))
        .args(["serve", "--config"])
        .arg(broker.config_path())
        .env("SOFTHSM2_CONF", broker.hsm.conf_path())
        .env("KEYBROKER_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let common::Started { addr, .. } =
        common::read_start(&mut child, true, Duration::from_secs(180))
            .unwrap_or_else(|e| panic!("the broker did not start under heaptrack: {e:?}"));
    broker.addr = addr;
    let config = broker.config_path().display().to_string();
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"keybroker"))
                && args.contains(&config.as_bytes())
        })
        .expect("the broker's process under heaptrack");
    println!("heaptrack runs the broker (pid {pid}), writing {prefix}.zst");
    (pid, child)
}

/// `(seconds since start, RSS KiB)` every `every`, for `length`.
async fn sample_rss(
    pid: u32,
    length: Duration,
    every: Duration,
    counters: &load::Counters,
) -> Vec<(f64, f64)> {
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut next = start;
    while start.elapsed() <= length {
        let rss = soak::vm_rss_kib(pid).unwrap_or_else(|| panic!("the broker (pid {pid}) is gone"));
        let t = start.elapsed().as_secs_f64();
        println!(
            "t={t:>6.0} s  RSS {:>7.1} MiB  calls {:>9}  refused {}",
            rss as f64 / 1024.0,
            counters.calls.load(Ordering::Relaxed),
            counters.refused.load(Ordering::Relaxed)
        );
        samples.push((t, rss as f64));
        next += every;
        tokio::time::sleep_until(next.into()).await;
    }
    samples
}

fn report(samples: &[(f64, f64)], warm_up: Duration, counters: &load::Counters) {
    let mib = |kib: f64| kib / 1024.0;
    let Some(&(_, first)) = samples.first() else {
        panic!("no samples");
    };
    let (_, last) = *samples.last().unwrap();
    let after: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warm_up.as_secs_f64())
        .collect();
    let warm = after.first().map_or(first, |p| p.1);
    let peak = samples.iter().map(|p| p.1).fold(0.0, f64::max);
    let per_10_min = soak::slope(&after).map_or(0.0, |s| s * 600.0);
    let calls = counters.calls.load(Ordering::Relaxed);
    let length = samples.last().map_or(0.0, |p| p.0);
    println!("\n| measure | value |\n|---|---|");
    println!(
        "| calls (all clients) | {calls} ({:.0}/s) |",
        calls as f64 / length.max(1.0)
    );
    println!(
        "| calls refused | {} |",
        counters.refused.load(Ordering::Relaxed)
    );
    println!(
        "| connections opened | {} |",
        counters.connections.load(Ordering::Relaxed)
    );
    println!("| RSS at start | {:.1} MiB |", mib(first));
    println!(
        "| RSS after warm-up ({:.0} s) | {:.1} MiB |",
        warm_up.as_secs_f64(),
        mib(warm)
    );
    println!("| RSS at end ({length:.0} s) | {:.1} MiB |", mib(last));
    println!("| RSS peak | {:.1} MiB |", mib(peak));
    println!(
        "| end vs after warm-up | {:+.1}% |",
        (last / warm - 1.0) * 100.0
    );
    println!(
        "| slope after warm-up | {:+.2} MiB per 10 min |",
        mib(per_10_min)
    );
}
