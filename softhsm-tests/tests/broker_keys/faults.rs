//! Faults around the hardware reach the client as statuses it can act on, never as
//! `INTERNAL`.

use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;
use tonic::Code;

use super::common::{BrokerProcess, create};
use super::sign_req;

#[tokio::test(flavor = "multi_thread")]
async fn an_object_missing_from_the_token_is_a_failed_precondition_naming_key_and_version() {
    let broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    keys.create_key(create("gone", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    keys.create_key(create("gone-aes", A::Aes256, P::EncryptDecrypt, "softhsm"))
        .await
        .unwrap();
    // Someone with the token's PIN deletes the objects behind the broker's back.
    broker.pkcs11_tool(&[
        "--delete-object",
        "--type",
        "privkey",
        "--label",
        "kb:gone:v1",
    ]);
    broker.pkcs11_tool(&[
        "--delete-object",
        "--type",
        "secrkey",
        "--label",
        "kb:gone-aes:v1",
    ]);

    let err = keys
        .sign(sign_req("gone", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("key \"gone\" version 1") && err.message().contains("missing"),
        "{err:?}"
    );
    let err = keys
        .encrypt(pb::EncryptRequest {
            name: "gone-aes".into(),
            plaintext: b"p".to_vec(),
            aad: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("key \"gone-aes\" version 1"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn after_kill_9_next_to_a_live_swtpm_the_next_start_succeeds() {
    let mut broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    // Keys loaded in the TPM when the broker dies: swtpm, which has no resource manager,
    // keeps them, and its few object slots with them.
    for name in ["t1", "t2", "t3"] {
        keys.create_key(create(name, A::EcP256, P::SignVerify, "swtpm"))
            .await
            .unwrap();
        keys.sign(sign_req(name, b"m", pb::SignatureScheme::Default))
            .await
            .unwrap();
    }
    for round in 0..3 {
        broker.kill9();
        broker
            .try_spawn(&[])
            .unwrap_or_else(|status| panic!("start {round} failed ({status}): {}", broker.log()));
        let mut keys = broker.keys("admin").await;
        for name in ["t1", "t2", "t3"] {
            keys.sign(sign_req(name, b"m", pb::SignatureScheme::Default))
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tpm_key_that_no_longer_loads_refuses_to_encrypt() {
    let mut broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    keys.create_key(create("sealed-box", A::Rsa2048, P::EncryptDecrypt, "swtpm"))
        .await
        .unwrap();
    let request = || pb::EncryptRequest {
        name: "sealed-box".into(),
        plaintext: b"p".to_vec(),
        aad: Vec::new(),
    };
    keys.encrypt(request()).await.unwrap();
    // The TPM is cleared while the broker is down: a new storage seed, so the key's blob,
    // wrapped under the old SRK, can never load again.
    broker.stop();
    broker.tpm.tpm2_tool(&["tpm2_clear", "-c", "l"]);
    broker.spawn();
    let mut keys = broker.keys("admin").await;
    // Encryption needs only the public key; it must still refuse, since nobody could ever
    // decrypt the result.
    let err = keys.encrypt(request()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("key \"sealed-box\" version 1"),
        "{err:?}"
    );
}

/// Whether `name` signs again within 30 s (polled).
async fn signs_within_30_s(
    keys: &pb::key_service_client::KeyServiceClient<tonic::transport::Channel>,
    name: &str,
) -> bool {
    super::common::eventually(std::time::Duration::from_secs(30), || {
        let mut keys = keys.clone();
        async move {
            keys.sign(sign_req(name, b"m", pb::SignatureScheme::Default))
                .await
                .is_ok()
        }
    })
    .await
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -s {name} {pid}");
}

/// Sets `[[tpm]] command_timeout_seconds` in the broker's configuration.
fn set_tpm_deadline(broker: &BrokerProcess, seconds: u64) {
    let config = std::fs::read_to_string(broker.config_path()).unwrap();
    let tcti = format!("tcti = \"{}\"", broker.tpm.tcti());
    assert!(config.contains(&tcti), "{config}");
    let config = config.replace(
        &tcti,
        &format!("{tcti}\ncommand_timeout_seconds = {seconds}"),
    );
    std::fs::write(broker.config_path(), config).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_swtpm_down_at_start_the_hsm_serves_and_the_tpm_joins_when_it_comes_up() {
    let mut broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    keys.create_key(create("on-tpm", A::EcP256, P::SignVerify, "swtpm"))
        .await
        .unwrap();
    keys.create_key(create("on-hsm", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    broker.stop();
    broker.tpm.stop();
    broker
        .try_spawn(&[])
        .unwrap_or_else(|status| panic!("no start without the TPM ({status}): {}", broker.log()));
    let mut keys = broker.keys("admin").await;
    keys.sign(sign_req("on-hsm", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap();
    let err = keys
        .sign(sign_req("on-tpm", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&broker.tpm.tcti()), "{err:?}");
    assert!(err.message().contains("TCTI: I/O error"), "{err:?}");
    assert!(
        !tpm_listed_as_available(&broker).await,
        "ListBackends says the TPM is away"
    );

    broker.tpm.restart();
    let joined = signs_within_30_s(&keys, "on-tpm").await;
    assert!(joined, "the TPM never joined: {}", broker.log());
    assert!(tpm_listed_as_available(&broker).await);
}

/// What `ListBackends` says of the `swtpm` backend's availability.
async fn tpm_listed_as_available(broker: &BrokerProcess) -> bool {
    let mut admin =
        pb::admin_service_client::AdminServiceClient::new(broker.channel("admin").await.unwrap());
    let listed = admin
        .list_backends(pb::ListBackendsRequest {})
        .await
        .unwrap()
        .into_inner()
        .backends;
    listed
        .iter()
        .find(|b| b.name == "swtpm")
        .map(|b| b.available)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_swtpm_gives_unavailable_within_the_deadline_and_recovers() {
    let mut broker = BrokerProcess::start();
    broker.stop();
    set_tpm_deadline(&broker, 2);
    broker.spawn();
    let mut keys = broker.keys("admin").await;
    keys.create_key(create("on-tpm", A::EcP256, P::SignVerify, "swtpm"))
        .await
        .unwrap();
    let pid = broker.tpm.pid().unwrap();
    signal(pid, "STOP");
    let started = std::time::Instant::now();
    let err = keys
        .sign(sign_req("on-tpm", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap_err();
    let took = started.elapsed();
    signal(pid, "CONT");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        took < std::time::Duration::from_secs(10),
        "UNAVAILABLE after {took:?}, not within the 2 s deadline"
    );
    // Once the TPM answers again, so does the key.
    let recovered = signs_within_30_s(&keys, "on-tpm").await;
    assert!(recovered, "{}", broker.log());
}
