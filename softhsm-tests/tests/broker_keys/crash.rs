//! `kill -9` in the middle of key creations, until one lands mid-way: the next start
//! reconciles the store with the token, and nothing half-made or unknown goes unnoticed.

use std::time::Duration;

use broker::store::KeyStore;
use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;

use super::common::{BrokerProcess, create, eventually};
use super::sign_req;

/// `Creating` versions in the broker's store: creations under way (read through the
/// store's own code, unlocked with the HSM, as a second process may).
fn creations_under_way(broker: &BrokerProcess) -> usize {
    let store = super::common::store::open_unlocked(broker.dir.path());
    store.pending_versions().wait().unwrap().len()
}

/// `(half_made_destroyed, pending_dropped)` from the broker's last start-up.
fn last_reconciliation(log: &str) -> (usize, usize) {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("store and hardware reconciled"))
        .unwrap_or_else(|| panic!("no reconciliation in the log:\n{log}"));
    let field = |name: &str| -> usize {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .parse()
            .unwrap()
    };
    (field("half_made_destroyed"), field("pending_dropped"))
}

/// Kill attempts before the test gives up on landing one mid-creation.
const KILL_ATTEMPTS: usize = 5;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_creation_is_reconciled_and_leaves_no_half_made_key_or_unnoticed_orphan() {
    let mut broker = BrokerProcess::start();
    // One key that is surely complete: a store that knows no keys beside a token that holds
    // the broker's objects is a lost store, and the broker would refuse to start.
    broker
        .keys("admin")
        .await
        .create_key(create("anchor", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    let mut interrupted = None;
    for attempt in 0..KILL_ATTEMPTS {
        let channel = broker.channel("admin").await.unwrap();
        // RSA-4096 generation takes long enough on SoftHSM2 for a kill to land mid-way.
        let tasks: Vec<_> = (0..3)
            .map(|i| {
                let mut keys = pb::key_service_client::KeyServiceClient::new(channel.clone());
                let name = format!("big-{attempt}-{i}");
                tokio::spawn(async move {
                    keys.create_key(create(&name, A::Rsa4096, P::SignVerify, "softhsm"))
                        .await
                })
            })
            .collect();
        // Kill once a creation's intent is in the store, i.e. while it is under way.
        let under_way = eventually(Duration::from_secs(60), || async {
            creations_under_way(&broker) > 0
        })
        .await;
        broker.kill9();
        for task in tasks {
            let _ = task.await;
        }
        broker.spawn();
        let (half_made, dropped) = last_reconciliation(&broker.log());
        eprintln!(
            "attempt {attempt}: under way {under_way}, half-made {half_made}, dropped {dropped}"
        );
        if dropped > 0 {
            interrupted = Some((half_made, dropped));
            break;
        }
    }
    let (half_made, dropped) = interrupted
        .unwrap_or_else(|| panic!("no kill landed mid-creation in {KILL_ATTEMPTS} attempts"));
    // Every interrupted creation was dropped; those whose object existed were destroyed.
    assert!(half_made <= dropped);
    assert_eq!(creations_under_way(&broker), 0);

    // While the broker is down, an object with the broker's label appears that no store
    // knows (as after restoring an old database).
    broker.kill9();
    broker.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "kb:ghost:v1",
        "--id",
        "0badc0de",
    ]);
    broker.spawn();
    assert_eq!(last_reconciliation(&broker.log()), (0, 0));
    let mut keys = broker.keys("admin").await;
    let listed = keys
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    // Every key the broker shows works.
    for key in &listed {
        keys.sign(sign_req(&key.name, b"m", pb::SignatureScheme::Default))
            .await
            .unwrap();
    }
    // The token holds exactly the listed keys' objects, plus the ghost, which is reported:
    // nothing half-made is left.
    let mut expected: Vec<String> = listed.iter().map(|k| format!("kb:{}:v1", k.name)).collect();
    expected.push("kb:ghost:v1".into());
    expected.sort();
    assert_eq!(broker.broker_objects(), expected);
    // The orphan scan runs once the broker serves (docs/design.md): wait for its report.
    let reported = eventually(Duration::from_secs(60), || async {
        let log = broker.log();
        log.contains("object not in the store") && log.contains("kb:ghost:v1")
    })
    .await;
    assert!(reported, "{}", broker.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deadline_during_creation_or_rotation_leaves_no_blocked_name_and_no_orphan() {
    let broker = BrokerProcess::start();
    let mut keys = broker.keys("admin").await;
    // RSA-4096 generation takes far longer than 50 ms on SoftHSM2: the caller gives up
    // while the broker is between the intent and the object.
    let mut hurried = tonic::Request::new(create("hurried", A::Rsa4096, P::SignVerify, "softhsm"));
    hurried.set_timeout(Duration::from_millis(50));
    let err = keys.create_key(hurried).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );
    // The creation finishes without its caller: the key is usable, and nothing is pending.
    let enabled = |keys: pb::key_service_client::KeyServiceClient<_>| async move {
        let mut keys = keys;
        keys.get_key(pb::KeyRef {
            name: "hurried".into(),
        })
        .await
        .map(|k| k.into_inner())
    };
    assert!(
        eventually(Duration::from_secs(60), || async {
            creations_under_way(&broker) == 0 && enabled(keys.clone()).await.is_ok()
        })
        .await,
        "the creation never finished"
    );
    keys.sign(sign_req("hurried", b"m", pb::SignatureScheme::Default))
        .await
        .unwrap();

    // The same for a rotation.
    let mut hurried = tonic::Request::new(pb::KeyRef {
        name: "hurried".into(),
    });
    hurried.set_timeout(Duration::from_millis(50));
    let err = keys.rotate_key(hurried).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );
    assert!(
        eventually(Duration::from_secs(60), || async {
            creations_under_way(&broker) == 0
                && enabled(keys.clone())
                    .await
                    .is_ok_and(|k| k.primary_version == 2)
        })
        .await,
        "the rotation never finished"
    );
    // The token holds exactly the two versions' objects: no orphan, nothing half-made.
    assert_eq!(
        broker.broker_objects(),
        vec!["kb:hurried:v1".to_string(), "kb:hurried:v2".to_string()]
    );
}
