//! Holding the broker to the ledger after a restart: every acknowledged key and version
//! is listed and works with the public key the client saw, every acknowledged destruction
//! stays unusable, every returned signature verifies and every returned ciphertext
//! decrypts; and no object with the broker's label is on the token that the store does
//! not know (read directly over PKCS#11 with `hsm-backend`, beside the broker's own
//! start-up report). A quick check samples the ledger; the final one covers all of it.

use std::collections::{BTreeMap, BTreeSet};

use hsm_backend::HsmBackend;
use keybroker_api::v1 as pb;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePublicKey;
use pb::key_service_client::KeyServiceClient;
use tonic::transport::Channel;

use super::clients::{Shared, lock};
use super::ledger::{KeyEntry, Kind, Standing};

/// How much of the ledger a check covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Some keys, the newest signatures, some ciphertexts.
    Sample,
    /// Everything.
    Full,
}

const SAMPLE_KEYS: usize = 12;
const SAMPLE_RECORDS: usize = 48;

/// Every key the broker lists, by name.
async fn list_all(
    keys: &mut KeyServiceClient<Channel>,
) -> Result<BTreeMap<String, pb::Key>, tonic::Status> {
    let mut all = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = keys
            .list_keys(pb::ListKeysRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        all.extend(page.keys.into_iter().map(|k| (k.name.clone(), k)));
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

/// The labels the store accounts for on the token: every version not retired of every
/// SoftHSM2 key not destroyed.
fn expected_labels(listed: &BTreeMap<String, pb::Key>) -> BTreeSet<String> {
    listed
        .values()
        .filter(|k| k.backend == "softhsm" && k.state != pb::KeyState::Destroyed as i32)
        .flat_map(|k| {
            k.versions
                .iter()
                .filter(|v| v.state != pb::KeyVersionState::Retired as i32)
                .map(move |v| format!("kb:{}:v{}", k.name, v.version))
        })
        .collect()
}

/// Objects with the broker's label on the token that the store does not account for
/// are orphans; objects it accounts for that are gone are losses.
pub fn check_token(hsm: &HsmBackend, listed: &BTreeMap<String, pb::Key>, shared: &Shared) {
    let on_token: BTreeSet<String> = match hsm.list_labels() {
        Ok(objects) => objects
            .into_iter()
            .map(|(_, label)| label)
            .filter(|l| l.starts_with("kb:"))
            .collect(),
        Err(e) => {
            lock(shared).lose("token listing", e.to_string());
            return;
        }
    };
    let expected = expected_labels(listed);
    let mut ledger = lock(shared);
    for orphan in on_token.difference(&expected) {
        ledger.orphans.insert(format!("token: {orphan}"));
    }
    for missing in expected.difference(&on_token) {
        ledger.lose(
            "object",
            format!("{missing} is listed but not on the token"),
        );
    }
}

/// Checks the keys, signatures and ciphertexts of the ledger against the broker.
pub async fn check_ledger(
    keys: &mut KeyServiceClient<Channel>,
    hsm: &HsmBackend,
    shared: &Shared,
    depth: Depth,
    rng: &mut fastrand::Rng,
) -> Result<(), tonic::Status> {
    let listed = list_all(keys).await?;
    check_token(hsm, &listed, shared);
    let entries: Vec<(String, KeyEntry)> = {
        let ledger = lock(shared);
        let all: Vec<_> = ledger
            .keys
            .iter()
            .map(|(n, k)| (n.clone(), k.clone()))
            .collect();
        sample(all, depth, SAMPLE_KEYS, rng)
    };
    for (name, entry) in &entries {
        check_key(keys, shared, listed.get(name), name, entry).await?;
    }
    check_signatures(keys, shared, depth, rng).await?;
    check_ciphertexts(keys, shared, depth, rng).await
}

fn sample<T>(mut items: Vec<T>, depth: Depth, n: usize, rng: &mut fastrand::Rng) -> Vec<T> {
    if depth == Depth::Full || items.len() <= n {
        return items;
    }
    rng.shuffle(&mut items);
    items.truncate(n);
    items
}

/// One key: listed, in the state the client was told, every version present, and usable
/// (live) or not (destroyed).
async fn check_key(
    keys: &mut KeyServiceClient<Channel>,
    shared: &Shared,
    listed: Option<&pb::Key>,
    name: &str,
    entry: &KeyEntry,
) -> Result<(), tonic::Status> {
    let Some(key) = listed else {
        lock(shared).lose("create", format!("{name} is not listed"));
        return Ok(());
    };
    let state = pb::KeyState::try_from(key.state).unwrap_or(pb::KeyState::Unspecified);
    match entry.standing {
        Standing::Live if state != pb::KeyState::Enabled => {
            lock(shared).lose("state", format!("{name} is {state:?}, not enabled"));
        }
        Standing::Destroyed
            if !matches!(
                state,
                pb::KeyState::PendingDestruction | pb::KeyState::Destroyed
            ) =>
        {
            lock(shared).lose("destruction", format!("{name} is {state:?} again"));
        }
        _ => {}
    }
    for version in entry.versions.keys() {
        let there = key
            .versions
            .iter()
            .any(|v| v.version == *version && v.state != pb::KeyVersionState::Retired as i32);
        if !there {
            lock(shared).lose("version", format!("{name} v{version} is gone"));
        }
    }
    match entry.standing {
        Standing::Live => check_use(keys, shared, name, entry).await,
        Standing::Destroyed => {
            if use_once(keys, name, entry.kind).await.is_ok() {
                lock(shared).lose("destruction", format!("{name} is usable"));
            }
            Ok(())
        }
        Standing::Uncertain => Ok(()),
    }
}

/// A live key's versions show the public keys first seen, and it signs (verified here
/// with the public key of the version that signed) or encrypts and decrypts.
async fn check_use(
    keys: &mut KeyServiceClient<Channel>,
    shared: &Shared,
    name: &str,
    entry: &KeyEntry,
) -> Result<(), tonic::Status> {
    if entry.kind.signs() {
        for version in entry.versions.keys() {
            public_key(keys, shared, name, *version).await?;
        }
    }
    match use_once(keys, name, entry.kind).await {
        Ok(Used::Signed {
            version,
            message,
            signature,
        }) => {
            let spki = public_key(keys, shared, name, version).await?;
            if !verifies(&spki, &message, &signature) {
                lock(shared).lose(
                    "sign",
                    format!("{name} v{version}: a fresh signature fails"),
                );
            }
        }
        Ok(Used::RoundTrip(true)) => {}
        Ok(Used::RoundTrip(false)) => {
            lock(shared).lose("encrypt", format!("{name}: a round trip changed the data"));
        }
        Err(status) => lock(shared).lose("use", format!("{name}: {status:?}")),
    }
    Ok(())
}

enum Used {
    Signed {
        version: u32,
        message: Vec<u8>,
        signature: Vec<u8>,
    },
    RoundTrip(bool),
}

/// Signs a message, or encrypts and decrypts one.
async fn use_once(
    keys: &mut KeyServiceClient<Channel>,
    name: &str,
    kind: Kind,
) -> Result<Used, tonic::Status> {
    let message = b"soak verification".to_vec();
    if kind.signs() {
        let signed = keys
            .sign(pb::SignRequest {
                name: name.into(),
                input: Some(pb::sign_request::Input::Message(message.clone())),
                scheme: pb::SignatureScheme::Default as i32,
            })
            .await?
            .into_inner();
        return Ok(Used::Signed {
            version: signed.key_version,
            message,
            signature: signed.signature,
        });
    }
    let sealed = keys
        .encrypt(pb::EncryptRequest {
            name: name.into(),
            plaintext: message.clone(),
            aad: vec![],
        })
        .await?
        .into_inner();
    let opened = decrypt(keys, name, sealed.ciphertext).await?;
    Ok(Used::RoundTrip(opened == message))
}

async fn decrypt(
    keys: &mut KeyServiceClient<Channel>,
    name: &str,
    ciphertext: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut opened = keys
        .decrypt(pb::DecryptRequest {
            name: name.into(),
            ciphertext,
            aad: vec![],
        })
        .await?
        .into_inner();
    // The response zeroizes itself on drop: take the bytes out.
    Ok(std::mem::take(&mut opened.plaintext))
}

/// The SPKI of a version: the one the client first saw, which the broker must still
/// show; recorded now if the client never saw it (the answer was cut by a kill).
async fn public_key(
    keys: &mut KeyServiceClient<Channel>,
    shared: &Shared,
    name: &str,
    version: u32,
) -> Result<Vec<u8>, tonic::Status> {
    let now = match keys
        .get_public_key(pb::GetPublicKeyRequest {
            name: name.into(),
            version,
        })
        .await
    {
        Ok(public) => public.into_inner().spki_der,
        Err(status) => {
            lock(shared).lose("public key", format!("{name} v{version}: {status:?}"));
            return Ok(Vec::new());
        }
    };
    let mut ledger = lock(shared);
    let seen = ledger
        .keys
        .get(name)
        .and_then(|k| k.versions.get(&version).cloned().flatten());
    match seen {
        Some(seen) if seen != now => {
            ledger.lose("public key", format!("{name} v{version} changed"));
            Ok(seen)
        }
        Some(seen) => Ok(seen),
        None => {
            ledger.saw_public_key(name, version, now.clone());
            Ok(now)
        }
    }
}

fn verifies(spki: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(spki) else {
        return false;
    };
    let Ok(signature) = p256::ecdsa::Signature::from_der(signature) else {
        return false;
    };
    key.verify(message, &signature).is_ok()
}

/// Every returned signature verifies with the public key of its version.
async fn check_signatures(
    keys: &mut KeyServiceClient<Channel>,
    shared: &Shared,
    depth: Depth,
    rng: &mut fastrand::Rng,
) -> Result<(), tonic::Status> {
    let signed = sample(lock(shared).signed.clone(), depth, SAMPLE_RECORDS, rng);
    for s in signed {
        let known = lock(shared)
            .keys
            .get(&s.key)
            .and_then(|k| k.versions.get(&s.version).cloned().flatten());
        let live = lock(shared)
            .keys
            .get(&s.key)
            .is_some_and(|k| k.standing == Standing::Live);
        let spki = match known {
            Some(spki) => spki,
            // Its public key was never seen, and a key pending destruction shows none.
            None if !live => {
                lock(shared).counts.unverifiable += 1;
                continue;
            }
            None => public_key(keys, shared, &s.key, s.version).await?,
        };
        if !verifies(&spki, &s.message, &s.signature) {
            lock(shared).lose(
                "signature",
                format!("{} v{} does not verify", s.key, s.version),
            );
        }
    }
    Ok(())
}

/// Every returned ciphertext of a live key decrypts to its plaintext.
async fn check_ciphertexts(
    keys: &mut KeyServiceClient<Channel>,
    shared: &Shared,
    depth: Depth,
    rng: &mut fastrand::Rng,
) -> Result<(), tonic::Status> {
    let sealed = {
        let ledger = lock(shared);
        let live: Vec<_> = ledger
            .sealed
            .iter()
            .filter(|s| {
                ledger
                    .keys
                    .get(&s.key)
                    .is_some_and(|k| k.standing == Standing::Live)
            })
            .cloned()
            .collect();
        live
    };
    for s in sample(sealed, depth, SAMPLE_RECORDS, rng) {
        match decrypt(keys, &s.key, s.ciphertext.clone()).await {
            Ok(plaintext) if plaintext == s.plaintext => {}
            Ok(_) => lock(shared).lose(
                "ciphertext",
                format!("{} v{} decrypts wrong", s.key, s.version),
            ),
            Err(status) => {
                lock(shared).lose(
                    "ciphertext",
                    format!("{} v{}: {status:?}", s.key, s.version),
                );
            }
        }
    }
    Ok(())
}
