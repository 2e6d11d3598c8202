//! End to end: secrets put by an administrator, kept envelope-encrypted under a key that
//! never leaves the real broker's SoftHSM2 token, and released with HPKE to the KEM key
//! an attested workload's evidence bound; opened by the agent and by an independent HPKE
//! implementation (`tests/hpke_open.py`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod canary;
mod cli;
#[path = "../common/mod.rs"]
mod common;
mod keys;
mod leases;
mod postgres;
mod refusals;
mod release;

use attest::release::KemKeyPair;
use common::workload::{attest_bootstrap_key, attest_workload};
use common::{BrokerOptions, BrokerProcess, TRUSTED_MEASUREMENT, maybe_token, with_token};
use keybroker_api::v1 as pb;
use pb::secret_service_client::SecretServiceClient;
use tonic::Code;
use tonic::transport::Channel;

const WORKLOAD: &str = "spiffe://test.keybroker/workload";

async fn secrets(broker: &BrokerProcess, who: &str) -> SecretServiceClient<Channel> {
    SecretServiceClient::new(broker.channel(who).await.unwrap())
}

/// Puts `name` = `value` as the admin.
async fn put(broker: &BrokerProcess, name: &str, value: &[u8]) -> pb::SecretVersionInfo {
    secrets(broker, "admin")
        .await
        .put_secret(pb::PutSecretRequest {
            name: name.into(),
            value: value.to_vec(),
            description: format!("test secret {name}"),
        })
        .await
        .unwrap()
        .into_inner()
}

/// An attested workload (`common::workload`): its KEM key and token, with a certificate
/// installed as `pki/<name>.pem`.
struct Attested {
    kem: KemKeyPair,
    token: String,
}

async fn attested(
    broker: &BrokerProcess,
    name: &str,
    measurement: &str,
    with_kem: bool,
) -> Attested {
    let w = attest_workload(broker, name, measurement, with_kem).await;
    Attested {
        kem: w.kem,
        token: w.token,
    }
}

/// A token for a fresh KEM key, usable on `workload`'s bootstrap connection
/// (`common::workload::attest_bootstrap_key`).
async fn attested_on_bootstrap(broker: &BrokerProcess, measurement: &str) -> Attested {
    let (kem, token) = attest_bootstrap_key(broker, measurement).await;
    Attested { kem, token }
}

/// `GetSecret` on `who`'s connection, presenting `token`.
async fn get(
    broker: &BrokerProcess,
    who: &str,
    token: Option<&str>,
    name: &str,
    version: u32,
) -> Result<pb::SealedSecret, tonic::Status> {
    let message = pb::GetSecretRequest {
        name: name.into(),
        version,
    };
    let request = maybe_token(message, token);
    Ok(secrets(broker, who)
        .await
        .get_secret(request)
        .await?
        .into_inner())
}
