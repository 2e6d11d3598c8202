//! Start-up on a token with many objects: the broker serves as soon as interrupted
//! creations are resolved, and the orphan scan, which reads every object on the token,
//! finishes while it serves (`broker/src/keys/reconcile.rs`).

use std::time::Duration;

use broker::store::Algorithm;
use keybroker_api::v1 as pb;

use super::common::fill::{TokenFiller, random_id};
use super::common::{BrokerProcess, TOKEN_LABEL, USER_PIN, eventually};
use super::sign_req;

/// Objects on the token that are not the broker's: enough that reading them all takes
/// far longer than one signature.
const OTHER_OBJECTS: usize = 3_000;
/// Starts before the test gives up on signing while the scan runs.
const ATTEMPTS: usize = 5;
const SCAN_DONE: &str = "orphan scan finished";

/// Key pairs that another application keeps on the broker's token (labels without `kb:`).
fn add_other_objects(broker: &BrokerProcess, count: usize) {
    let token = TokenFiller::open(broker.hsm.module_path(), TOKEN_LABEL, USER_PIN);
    for i in 0..count {
        token.generate(&random_id(), &format!("other-app:{i}"), Algorithm::EcP256);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_sign_before_the_orphan_scan_of_a_large_token_finishes() {
    let mut broker = BrokerProcess::start();
    broker.create_signing_key("early").await;
    broker.stop();
    add_other_objects(&broker, OTHER_OBJECTS);

    let mut signed_during_scan = false;
    for attempt in 0..ATTEMPTS {
        let before = broker.log().len();
        // Not waiting for "ready": finding the attestation keys shares the scan's listing.
        let _ready = broker.spawn_listening();
        let mut keys = broker.keys("workload").await;
        keys.sign(sign_req("early", b"m", pb::SignatureScheme::Default))
            .await
            .unwrap();
        let this_start = broker.log()[before..].to_string();
        signed_during_scan = !this_start.contains(SCAN_DONE);
        eprintln!("attempt {attempt}: signed during the scan: {signed_during_scan}");
        // The scan runs to its end while the broker serves, and finds nothing of its own.
        let finished = eventually(Duration::from_secs(120), || async {
            broker.log()[before..].contains(SCAN_DONE)
        })
        .await;
        let this_start = broker.log()[before..].to_string();
        assert!(finished, "the scan never finished:\n{this_start}");
        let serving = this_start.find(": serving local=").unwrap();
        let scan_line = this_start.find(SCAN_DONE).unwrap();
        assert!(
            serving < scan_line,
            "serving before the scan ends:\n{this_start}"
        );
        let scan_line = this_start[scan_line..].lines().next().unwrap();
        assert!(scan_line.contains(" orphans=0 "), "{scan_line}");
        if signed_during_scan {
            break;
        }
        broker.stop();
    }
    assert!(
        signed_during_scan,
        "no signature was answered before the orphan scan finished in {ATTEMPTS} starts"
    );
}

/// What a kill during SoftHSM2's key generation left in the kill -9 soak (seed 1128): an
/// object file with its generation and one attribute, `CKA_KEY_TYPE` = `CKK_EC`, and
/// nothing else (SoftHSM2's file format: big-endian generation, then type, encoding tag
/// and value of each attribute).
const HALF_WRITTEN_OBJECT: [u8; 32] = [
    0, 0, 0, 0, 0, 0, 0, 2, // generation
    0, 0, 0, 0, 0, 0, 1, 0, // CKA_KEY_TYPE
    0, 0, 0, 0, 0, 0, 0, 2, // an unsigned long
    0, 0, 0, 0, 0, 0, 0, 3, // CKK_EC
];

#[tokio::test(flavor = "multi_thread")]
async fn a_half_written_object_on_the_token_does_not_stop_the_start() {
    let mut broker = BrokerProcess::start();
    broker.create_signing_key("kept").await;
    broker.stop();
    let token = std::fs::read_dir(broker.hsm.token_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let name = "48f548b8-0e86-617d-c19c-3b60359f8296";
    std::fs::write(token.join(format!("{name}.object")), HALF_WRITTEN_OBJECT).unwrap();
    std::fs::write(token.join(format!("{name}.lock")), b"").unwrap();

    // "ready" means the listing that finds the attestation keys got past the object.
    let before = broker.log().len();
    broker.spawn();
    let mut keys = broker.keys("workload").await;
    keys.sign(sign_req("kept", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap();
    let scanned = eventually(Duration::from_secs(60), || async {
        broker.log()[before..].contains(SCAN_DONE)
    })
    .await;
    let log = broker.log()[before..].to_string();
    assert!(scanned, "{log}");
    assert!(log.contains("orphan scan finished orphans=0 "), "{log}");
    assert!(log.contains("unreadable=1"), "the object is counted: {log}");
    // Mechanism discovery is not an error (cryptoki's own log of unnamed mechanisms).
    assert!(!log.contains(" ERROR "), "{log}");
}
