//! `make bench`: dynamic secrets through the broker, each beside the work it asks of the
//! hardware or the database, measured in the same run.
//!
//! - Random secrets: `GenerateSecret` on the test configuration's `[[secrets.random]]`
//!   role (32 bytes from the HSM, a lease written to the store, the value sealed with HPKE
//!   to the caller's KEM key, opened by the client), beside `C_GenerateRandom` of 32 bytes
//!   called directly on the broker's token.
//! - PostgreSQL credentials: `GenerateSecret` on a `[[secrets.postgres]]` role (a private
//!   PostgreSQL server from `softhsm_tests::Postgres`): a lease, a random password, a
//!   SCRAM-SHA-256 verifier, `CREATE ROLE ... VALID UNTIL` and a `GRANT` in one
//!   transaction. The baseline is that transaction, verifier included, sent directly from
//!   this process over as many connections as the broker keeps.
//!
//! The broker is the real `keybroker` process (release build). Eight workloads attest once
//! each with development evidence and call over their issued certificates.
//! `BENCH_SECONDS` sets how long each row runs.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use attest::release::Sealed;
use common::postgres::{ADMIN_SECRET, ROLE as PG_ROLE, postgres_role};
use common::workload::{Holder, attested_holder};
use common::{BrokerOptions, BrokerProcess, TOKEN_LABEL, USER_PIN, with_token};
use hsm_backend::secrecy::SecretString;
use hsm_backend::{HsmBackend, Pin, Pkcs11Module, PoolConfig, TokenSelector};
use keybroker_api::v1 as pb;
use measure::callers::{Call, broker_row, run_callers};
use measure::cpu::{CpuClock, cpu_us_per_op};
use measure::table::{Row, print_header, print_row};
use pb::secret_service_client::SecretServiceClient;
use softhsm_tests::{Postgres, throughput};
use tonic::transport::Channel;

/// Concurrent callers of the broker rows.
const CALLERS: [usize; 3] = [4, 8, 16];
/// Attested workloads, each with its own certificate, connection, token and KEM key.
const WORKLOADS: usize = 8;
/// PKCS#11 sessions for the broker and the direct baseline's threads.
const SESSIONS: usize = 2;
/// Connections the broker's PostgreSQL engine keeps (the role's default), and the
/// baseline's.
const PG_CONNECTIONS: usize = 4;
/// The random role of the test configuration.
const RANDOM_ROLE: &str = "app/token";

struct GenerateCall {
    client: SecretServiceClient<Channel>,
    holder: Holder,
    role: &'static str,
}

impl Call for GenerateCall {
    async fn call(&mut self) -> u64 {
        let request = pb::GenerateSecretRequest {
            role: self.role.into(),
            ttl_seconds: 0,
        };
        let leased = self
            .client
            .generate_secret(with_token(request, &self.holder.token))
            .await
            .unwrap()
            .into_inner();
        let opened = self
            .holder
            .kem
            .open(
                &Sealed {
                    enc: leased.enc,
                    ciphertext: leased.ciphertext,
                },
                &leased.info,
            )
            .unwrap();
        assert!(!opened.is_empty());
        1
    }
}

/// `C_GenerateRandom` of 32 bytes on the broker's token from this process.
fn direct_random_row(clock: &CpuClock, seconds: f64) -> Row {
    let pin = Pin::new(SecretString::from(USER_PIN)).unwrap();
    let module =
        Pkcs11Module::load(&softhsm_tests::SoftHsm::module_path_or_missing().unwrap()).unwrap();
    let pool = PoolConfig {
        size: SESSIONS,
        ..PoolConfig::default()
    };
    let hsm = HsmBackend::open_with(module, &TokenSelector::Label(TOKEN_LABEL.into()), pin, pool)
        .unwrap();
    let count = AtomicU64::new(0);
    let op = || {
        hsm.random(32).unwrap();
        count.fetch_add(1, Ordering::Relaxed);
    };
    let me = std::process::id();
    let cpu = clock.seconds(me);
    let ops_per_second = throughput::ops_per_second(&op, SESSIONS, seconds);
    Row {
        name: "direct hsm random 32 B",
        callers: SESSIONS,
        ops_per_second,
        latency: None,
        broker_cpu_us: None,
        bench_cpu_us: cpu_us_per_op(cpu, clock.seconds(me), count.load(Ordering::Relaxed)),
    }
}

/// One direct connection to `pg` as the broker's admin role.
async fn pg_client(pg: &Postgres) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::Config::new()
        .host(pg.host())
        .port(pg.port())
        .dbname(pg.database())
        .user(pg.admin_user())
        .password(pg.admin_password())
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// What one PostgreSQL credential asks of the server, sent directly.
struct DirectRole {
    client: Arc<tokio::sync::Mutex<tokio_postgres::Client>>,
    next: Arc<AtomicU64>,
}

impl Clone for DirectRole {
    fn clone(&self) -> Self {
        DirectRole {
            client: self.client.clone(),
            next: self.next.clone(),
        }
    }
}

impl Call for DirectRole {
    async fn call(&mut self) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("direct_{}_{n}", std::process::id());
        let verifier = postgres_protocol::password::scram_sha_256(format!("pw-{n}").as_bytes());
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.unwrap();
        // As the broker's engine: one role's grants change the same privileges, which
        // PostgreSQL refuses to do in two transactions at once.
        tx.batch_execute("SELECT pg_advisory_xact_lock(1)")
            .await
            .unwrap();
        tx.batch_execute(&format!(
            "CREATE ROLE \"{name}\" WITH LOGIN PASSWORD '{verifier}' VALID UNTIL '2099-01-01T00:00:00Z'"
        ))
        .await
        .unwrap();
        tx.batch_execute(&format!("GRANT app_readonly TO \"{name}\""))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        1
    }
}

async fn direct_postgres_row(pg: &Postgres, clock: &CpuClock, seconds: f64) -> Row {
    let next = Arc::new(AtomicU64::new(0));
    let mut connections = Vec::new();
    for _ in 0..PG_CONNECTIONS {
        connections.push(DirectRole {
            client: Arc::new(tokio::sync::Mutex::new(pg_client(pg).await)),
            next: next.clone(),
        });
    }
    let me = std::process::id();
    let cpu = clock.seconds(me);
    let (ops, elapsed, latency) = run_callers(
        &connections,
        &|c: DirectRole| c,
        PG_CONNECTIONS,
        std::time::Duration::from_secs_f64(seconds),
    )
    .await;
    Row {
        name: "direct CREATE ROLE+GRANT",
        callers: PG_CONNECTIONS,
        ops_per_second: ops as f64 / elapsed,
        latency: Some((
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99),
        )),
        broker_cpu_us: None,
        bench_cpu_us: cpu_us_per_op(cpu, clock.seconds(me), ops),
    }
}

/// What every broker row needs.
struct Bench<'a> {
    runtime: &'a tokio::runtime::Runtime,
    broker: &'a BrokerProcess,
    holders: &'a [Holder],
    clock: &'a CpuClock,
    seconds: f64,
}

impl Bench<'_> {
    /// The broker rows of `role` at each of [`CALLERS`], beside `direct`; the best.
    fn rows(&self, name: &'static str, role: &'static str, direct: f64) -> Row {
        let make = |holder: Holder| GenerateCall {
            client: SecretServiceClient::new(holder.channel.clone()),
            holder,
            role,
        };
        CALLERS
            .map(|callers| {
                let row = self.runtime.block_on(broker_row(
                    name,
                    self.holders,
                    &make,
                    callers,
                    self.seconds,
                    self.clock,
                    self.broker.pid().unwrap(),
                ));
                print_row(&row, Some(direct));
                row
            })
            .into_iter()
            .max_by(|a, b| a.ops_per_second.total_cmp(&b.ops_per_second))
            .unwrap()
    }
}

fn main() {
    let seconds = throughput::seconds_per_row();
    let pg = Postgres::start();
    let options = BrokerOptions {
        release: true,
        hsm_sessions: SESSIONS,
        ..BrokerOptions::default()
    };
    let broker = BrokerProcess::start_with_secrets(options, &postgres_role(&pg));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let holders: Vec<Holder> = runtime.block_on(async {
        SecretServiceClient::new(broker.channel("admin").await.unwrap())
            .put_secret(pb::PutSecretRequest {
                name: ADMIN_SECRET.into(),
                value: pg.admin_password().as_bytes().to_vec(),
                description: "the broker's PostgreSQL login".into(),
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
        "dynamic secrets vs the work each asks of the HSM or PostgreSQL, {seconds} s per row, \
         {SESSIONS} PKCS#11 sessions, {PG_CONNECTIONS} PostgreSQL connections, {cores} CPUs"
    );
    println!(
        "broker: release build, pid {}; op = one GenerateSecret by an attested workload over \
         its issued certificate, presenting its token, and the client's HPKE open",
        broker.pid().unwrap()
    );
    let clock = CpuClock::new();
    print_header("op");
    let direct_random = direct_random_row(&clock, seconds);
    print_row(&direct_random, None);
    let bench = Bench {
        runtime: &runtime,
        broker: &broker,
        holders: &holders,
        clock: &clock,
        seconds,
    };
    let random = bench.rows(
        "GenerateSecret, random",
        RANDOM_ROLE,
        direct_random.ops_per_second,
    );
    let direct_pg = runtime.block_on(direct_postgres_row(&pg, &clock, seconds));
    print_row(&direct_pg, None);
    let started = Instant::now();
    let postgres = bench.rows(
        "GenerateSecret, postgres",
        PG_ROLE,
        direct_pg.ops_per_second,
    );
    let roles = pg.superuser_sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'kb\\_%'");
    println!("summary (best of {CALLERS:?} callers):");
    println!(
        "  random leases/s: {:.0}/s = {:.2}x the direct HSM random rate ({:.0}/s); broker CPU \
         {:.0} µs/lease",
        random.ops_per_second,
        random.ops_per_second / direct_random.ops_per_second,
        direct_random.ops_per_second,
        random.broker_cpu_us.unwrap_or(0.0),
    );
    println!(
        "  PostgreSQL credentials/s: {:.0}/s = {:.2}x the direct CREATE ROLE+GRANT rate \
         ({:.0}/s); broker CPU {:.0} µs/credential; {roles} roles made in {:.0} s",
        postgres.ops_per_second,
        postgres.ops_per_second / direct_pg.ops_per_second,
        direct_pg.ops_per_second,
        postgres.broker_cpu_us.unwrap_or(0.0),
        started.elapsed().as_secs_f64(),
    );
}
