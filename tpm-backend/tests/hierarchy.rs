//! Hierarchy auth on a real swtpm: once the owner, endorsement, lockout and platform
//! hierarchies have auth values, another local process can no longer clear the TPM, and the
//! backend works only when it presents the owner auth.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use softhsm_tests::Swtpm;
use tpm_backend::hierarchy::{lock_platform_hierarchy, shutdown, take_ownership};
use tpm_backend::{
    HierarchyAuth, HierarchyAuths, Tcti, TpmBackend, TpmConfig, TpmError, TpmKeyKind, TpmSignScheme,
};
use zeroize::Zeroizing;

fn backend(tpm: &Swtpm, auths: HierarchyAuths) -> tpm_backend::Result<TpmBackend> {
    let mut config = TpmConfig::new(Tcti::new(&tpm.tcti()).unwrap());
    config.hierarchy_auth = auths;
    TpmBackend::connect(config)
}

fn hex_auth(auth: &HierarchyAuth) -> String {
    format!("hex:{}", hex::encode(auth.expose()))
}

#[test]
fn with_hierarchy_auth_set_another_process_cannot_clear_the_tpm() {
    let tpm = Swtpm::start();
    let tcti = Tcti::new(&tpm.tcti()).unwrap();
    let auths = HierarchyAuths {
        owner: Some(HierarchyAuth::random()),
        endorsement: Some(HierarchyAuth::random()),
        lockout: Some(HierarchyAuth::random()),
    };
    take_ownership(&tcti, &auths).unwrap();
    lock_platform_hierarchy(&tcti).unwrap();

    // tpm2_clear through the lockout hierarchy (its default) and through the platform one.
    for args in [&["tpm2_clear"][..], &["tpm2_clear", "-c", "p"][..]] {
        let refused = tpm.try_tpm2_tool(args);
        assert!(refused.is_err(), "{args:?} succeeded");
    }
    // Nor can it take the owner hierarchy for itself.
    assert!(
        tpm.try_tpm2_tool(&["tpm2_changeauth", "-c", "o", "mine"])
            .is_err()
    );

    // The backend works with the owner auth, and is refused without it.
    let working = backend(&tpm, auths.clone()).unwrap();
    let key = working.create_key(TpmKeyKind::EcP256Sign).wait().unwrap();
    working
        .sign(&key, TpmSignScheme::EcdsaSha256, common::digest(b"m"))
        .wait()
        .unwrap();
    drop(working);
    let refused = backend(&tpm, HierarchyAuths::default())
        .and_then(|b| b.create_key(TpmKeyKind::EcP256Sign).wait());
    assert!(matches!(refused, Err(TpmError::AuthFailed)), "{refused:?}");

    // Taking ownership twice is refused: the auths are already set.
    assert!(take_ownership(&tcti, &auths).is_err());

    // The failed tpm2_clear above put the lockout hierarchy in dictionary-attack lockout, as
    // it should; an orderly shutdown still works.
    let lockout = hex_auth(auths.lockout.as_ref().unwrap());
    let locked = tpm.try_tpm2_tool(&["tpm2_clear", &lockout]).unwrap_err();
    assert!(locked.contains("lockout"), "{locked}");
    shutdown(&tcti).unwrap();
}

#[test]
fn auth_values_are_bounded_and_never_printed() {
    assert!(HierarchyAuth::new(Zeroizing::new(Vec::new())).is_err());
    assert!(HierarchyAuth::new(Zeroizing::new(vec![1; 33])).is_err());
    let auth = HierarchyAuth::new(Zeroizing::new(b"secret-auth".to_vec())).unwrap();
    let printed = format!(
        "{auth:?} {:?}",
        HierarchyAuths {
            owner: Some(auth.clone()),
            ..HierarchyAuths::default()
        }
    );
    assert!(!printed.contains("secret"), "{printed}");
    assert_ne!(HierarchyAuth::random(), HierarchyAuth::random());
}
