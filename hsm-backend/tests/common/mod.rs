//! A fresh SoftHSM2 token per test, initialised through the backend's own provisioning.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU32, Ordering};

use hsm_backend::secrecy::SecretString;
use hsm_backend::{
    HsmBackend, KeyAlgorithm, KeyId, KeyInfo, KeyLabel, KeySpec, KeyUsage, Pin, Pkcs11Module,
    PoolConfig, TokenSelector, provision,
};
use softhsm_tests::SoftHsm;

pub const TOKEN_LABEL: &str = "keybroker-test";

/// A backend on its own token. Fields drop in order: sessions, module, token directory.
pub struct TestToken {
    pub backend: HsmBackend,
    pub module: Pkcs11Module,
    pub so_pin: Pin,
    pub user_pin: Pin,
    pub softhsm: SoftHsm,
}

pub fn pin(text: &str) -> Pin {
    Pin::new(SecretString::from(text)).unwrap()
}

pub fn selector() -> TokenSelector {
    TokenSelector::Label(TOKEN_LABEL.into())
}

/// Initialises a token on a fresh SoftHSM2 directory and opens a backend with `pool` sessions.
pub fn token_with_pool(pool: PoolConfig) -> TestToken {
    token_prepared(pool, |_, _| {})
}

/// A token whose security officer made the release transport key before the backend
/// opened (SO and user cannot both be logged in from one process).
pub fn token_with_release_transport() -> TestToken {
    token_prepared(PoolConfig::default(), |module, so_pin| {
        provision::create_release_transport_key(module, &selector(), so_pin).unwrap();
    })
}

/// Initialises a token, runs `as_so_before_open` (module, SO PIN), then opens a backend.
pub fn token_prepared(
    pool: PoolConfig,
    as_so_before_open: impl FnOnce(&Pkcs11Module, &Pin),
) -> TestToken {
    let softhsm = SoftHsm::new();
    let module = Pkcs11Module::load(softhsm.module_path()).unwrap();
    let so_pin = pin("so-secret-1234");
    let user_pin = pin("user-secret-5678");
    provision::init_token(&module, TOKEN_LABEL, &so_pin).unwrap();
    provision::init_user_pin(&module, &selector(), &so_pin, &user_pin).unwrap();
    as_so_before_open(&module, &so_pin);
    let backend =
        HsmBackend::open_with(module.clone(), &selector(), user_pin.clone(), pool).unwrap();
    TestToken {
        backend,
        module,
        so_pin,
        user_pin,
        softhsm,
    }
}

pub fn token() -> TestToken {
    token_with_pool(PoolConfig::default())
}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// A key id unique within this test process.
pub fn fresh_id() -> KeyId {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    KeyId::new(format!("test-key-{n}").into_bytes()).unwrap()
}

pub fn spec(algorithm: KeyAlgorithm, usage: KeyUsage) -> KeySpec {
    KeySpec::new(algorithm, usage).unwrap()
}

impl TestToken {
    /// A raw PKCS#11 session on the test token, as anyone holding the PIN could open.
    pub fn raw_session(&self) -> cryptoki::session::Session {
        let token = self.module.find_token(&selector()).unwrap();
        self.module.context().open_rw_session(token.slot()).unwrap()
    }

    /// Generates a key with a fresh id.
    pub fn generate(&self, algorithm: KeyAlgorithm, usage: KeyUsage) -> KeyInfo {
        let id = fresh_id();
        let label = KeyLabel::new(format!("{algorithm} {usage:?}")).unwrap();
        self.backend
            .generate_key(&id, &label, spec(algorithm, usage))
            .unwrap()
    }
}

/// Every algorithm paired with every usage it can serve.
pub fn all_specs() -> Vec<(KeyAlgorithm, KeyUsage)> {
    use KeyAlgorithm::*;
    use KeyUsage::*;
    use hsm_backend::EcCurve::*;
    vec![
        (Ec(P256), SignVerify),
        (Ec(P384), SignVerify),
        (Rsa(2048), SignVerify),
        (Rsa(3072), SignVerify),
        (Rsa(4096), SignVerify),
        (Rsa(2048), EncryptDecrypt),
        (Rsa(3072), EncryptDecrypt),
        (Rsa(4096), EncryptDecrypt),
        (Aes256, EncryptDecrypt),
        (Aes256, WrapUnwrap),
        (HmacSha256, Mac),
    ]
}
