//! `make bench`: secret releases through the broker, beside the HSM's own rate of the
//! work one release asks of it (unwrapping a data key), measured in the same run on the
//! same SoftHSM2 token.
//!
//! The broker is the real `keybroker` process (release build) from the end-to-end
//! fixture. Eight workloads attest once each with development evidence (a signing key, a
//! KEM key, and a certificate in one `Attest`) and connect with their issued
//! certificates; then each op is one `GetSecret` presenting the token, and the client
//! opening the HPKE answer with its KEM key (the client's work is in "bench CPU"). The
//! broker verifies the token, decides with Cedar, unwraps the data key in the HSM,
//! decrypts the value and seals it to the token's KEM key.
//!
//! The baseline is `unwrap_data_key` with the broker's own key-encryption key, called
//! from this process on the broker's token. `BENCH_SECONDS` sets how long each row runs.
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

use std::sync::atomic::{AtomicU64, Ordering};

use attest::release::Sealed;
use common::workload::{Holder, attested_holder};
use common::{APPRAISAL_POLICY, BrokerOptions, BrokerProcess, TOKEN_LABEL, USER_PIN, with_token};
use hsm_backend::secrecy::{SecretBox, SecretString};
use hsm_backend::{DataKey, HsmBackend, KeyId, Pin, Pkcs11Module, PoolConfig, TokenSelector};
use keybroker_api::v1 as pb;
use measure::callers::{Call, broker_row};
use measure::cpu::{CpuClock, cpu_us_per_op};
use measure::table::{Row, print_header, print_row};
use pb::secret_service_client::SecretServiceClient;
use softhsm_tests::throughput;
use tonic::transport::Channel;

/// Concurrent callers of the broker rows.
const CALLERS: [usize; 3] = [4, 8, 16];
/// Attested workloads, each with its own certificate, connection, token and KEM key.
const WORKLOADS: usize = 8;
/// PKCS#11 sessions for the broker and for the direct baseline's threads.
const SESSIONS: usize = 2;
/// The secret every call releases.
const SECRET: &str = "app/bench";
/// The goal, releases per second.
const GOAL: f64 = 2_000.0;

struct ReleaseCall {
    client: SecretServiceClient<Channel>,
    holder: Holder,
}

impl Call for ReleaseCall {
    async fn call(&mut self) -> u64 {
        let request = pb::GetSecretRequest {
            name: SECRET.into(),
            version: 0,
        };
        let sealed = self
            .client
            .get_secret(with_token(request, &self.holder.token))
            .await
            .unwrap()
            .into_inner();
        let opened = self
            .holder
            .kem
            .open(
                &Sealed {
                    enc: sealed.enc,
                    ciphertext: sealed.ciphertext,
                },
                &sealed.info,
            )
            .unwrap();
        assert_eq!(opened.len(), 32);
        1
    }
}

/// Unwraps a data key with the broker's key-encryption key, from this process on the
/// broker's token, on `SESSIONS` threads.
fn direct_row(clock: &CpuClock, seconds: f64) -> Row {
    let pin = Pin::new(SecretString::from(USER_PIN)).unwrap();
    let module =
        Pkcs11Module::load(&softhsm_tests::SoftHsm::module_path_or_missing().unwrap()).unwrap();
    let pool = PoolConfig {
        size: SESSIONS,
        ..PoolConfig::default()
    };
    let hsm = HsmBackend::open_with(module, &TokenSelector::Label(TOKEN_LABEL.into()), pin, pool)
        .unwrap();
    let kek = KeyId::new(b"kbsys:secrets:kek:1".to_vec()).unwrap();
    let data_key = DataKey::new(SecretBox::new(Box::new([7u8; 32])));
    let wrapped = hsm.wrap_data_key(&kek, &data_key).unwrap();
    let unwraps = AtomicU64::new(0);
    let op = || {
        hsm.unwrap_data_key(&kek, &wrapped).unwrap();
        unwraps.fetch_add(1, Ordering::Relaxed);
    };
    let me = std::process::id();
    let cpu = clock.seconds(me);
    let ops_per_second = throughput::ops_per_second(&op, SESSIONS, seconds);
    Row {
        name: "direct hsm unwrap",
        callers: SESSIONS,
        ops_per_second,
        latency: None,
        broker_cpu_us: None,
        bench_cpu_us: cpu_us_per_op(cpu, clock.seconds(me), unwraps.load(Ordering::Relaxed)),
    }
}

fn main() {
    let seconds = throughput::seconds_per_row();
    let options = BrokerOptions {
        release: true,
        hsm_sessions: SESSIONS,
        ..BrokerOptions::default()
    };
    let broker = BrokerProcess::start_attesting(options, APPRAISAL_POLICY, "");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let holders: Vec<Holder> = runtime.block_on(async {
        SecretServiceClient::new(broker.channel("admin").await.unwrap())
            .put_secret(pb::PutSecretRequest {
                name: SECRET.into(),
                value: vec![0x5a; 32],
                description: "bench".into(),
            })
            .await
            .unwrap();
        let mut holders = Vec::new();
        for i in 0..WORKLOADS {
            holders.push(attested_holder(&broker, &format!("bench-holder-{i}")).await);
        }
        holders
    });
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "secret releases vs the HSM's data-key unwrap rate, SoftHSM2 token {TOKEN_LABEL:?}, \
         {seconds} s per row, {SESSIONS} PKCS#11 sessions, {cores} CPUs"
    );
    println!(
        "broker: release build, pid {}; op = one GetSecret of a 32-byte secret by an attested \
         workload over its issued certificate, presenting its token, and the client's HPKE \
         open; {WORKLOADS} workloads, callers spread over their connections",
        broker.pid().unwrap()
    );
    let clock = CpuClock::new();
    let direct = direct_row(&clock, seconds);
    print_header("op");
    print_row(&direct, None);
    let make = |holder: Holder| ReleaseCall {
        client: SecretServiceClient::new(holder.channel.clone()),
        holder,
    };
    let rows = CALLERS.map(|callers| {
        let row = runtime.block_on(broker_row(
            "GetSecret, attested",
            &holders,
            &make,
            callers,
            seconds,
            &clock,
            broker.pid().unwrap(),
        ));
        print_row(&row, Some(direct.ops_per_second));
        row
    });
    let best = rows
        .iter()
        .max_by(|a, b| a.ops_per_second.total_cmp(&b.ops_per_second))
        .unwrap();
    let goal = if best.ops_per_second >= GOAL {
        "met"
    } else {
        "missed"
    };
    println!("summary (best of {CALLERS:?} callers):");
    println!(
        "  HSM data-key unwrap, direct, {SESSIONS} threads: {:.0}/s (baseline)",
        direct.ops_per_second
    );
    println!(
        "  secret releases/s, attested workloads, client's HPKE open included: {:.0}/s = {:.2}x \
         at {} callers; goal {GOAL:.0}/s {goal}",
        best.ops_per_second,
        best.ops_per_second / direct.ops_per_second,
        best.callers
    );
    println!(
        "  per release: broker CPU {:.0} µs + client CPU {:.0} µs",
        best.broker_cpu_us.unwrap_or(0.0),
        best.bench_cpu_us
    );
}
