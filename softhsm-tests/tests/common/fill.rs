//! Fills the broker's token (and store) directly, as fast as SoftHSM2 allows: benchmarks and
//! tests that need thousands of keys cannot make them over gRPC (about 27 creations/s).
//!
//! Objects are generated in one logged-in session with the attributes `hsm_backend` gives
//! a key (`hsm-backend/src/key_management.rs`: persistent, private, sensitive, never
//! extractable or modifiable, one usage), the broker's label (`kb:<name>:v1`,
//! `broker::keys::spec::label`) and a random 16-byte `CKA_ID`, which is the handle the
//! broker stores (`broker/src/backends/hsm.rs`). They are not made with
//! `HsmBackend::generate_key`, which first searches the whole token for the id and then
//! describes the key (more searches): on SoftHSM2's file store every search reads every
//! object's file, so filling 10,000 keys that way grows with the square of the count.
//! Store rows are written with the store's own API (`begin_create`, `complete_version`).

use std::path::Path;
use std::time::{Duration, Instant};

use broker::keys::spec::label;
use broker::store::sqlite::SqliteStore;
use broker::store::{Algorithm, HardwareHandle, KeyStore, NewKey, Purpose, StoreCall};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use hsm_backend::{Pkcs11Module, TokenSelector};

/// The backend name in the broker's configuration (`mod.rs`).
const BACKEND: &str = "softhsm";
/// Store writes queued before waiting for their answers (the store queues up to 1,024).
const STORE_BATCH: usize = 256;
/// DER of the P-256 curve's OID, `CKA_EC_PARAMS`.
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A logged-in read-write session on the broker's token, in this process.
pub struct TokenFiller {
    session: Session,
    // Held so that the module stays initialised while the session lives.
    _module: Pkcs11Module,
}

impl TokenFiller {
    pub fn open(module: &Path, token_label: &str, pin: &str) -> TokenFiller {
        let module = Pkcs11Module::load(module).unwrap();
        let token = module
            .find_token(&TokenSelector::Label(token_label.into()))
            .unwrap();
        let session = module.context().open_rw_session(token.slot()).unwrap();
        let pin = cryptoki::types::AuthPin::from(pin.to_string());
        session.login(UserType::User, Some(&pin)).unwrap();
        TokenFiller {
            session,
            _module: module,
        }
    }

    /// Generates one key with this id and label: the object pair of a signing key, or the
    /// secret key of an AES one.
    pub fn generate(&self, id: &[u8], object_label: &str, algorithm: Algorithm) {
        let named = |mut attrs: Vec<Attribute>| {
            attrs.extend([
                Attribute::Token(true),
                Attribute::Modifiable(false),
                Attribute::Id(id.to_vec()),
                Attribute::Label(object_label.as_bytes().to_vec()),
            ]);
            attrs
        };
        let sealed = |attrs: Vec<Attribute>| {
            let mut attrs = named(attrs);
            attrs.extend([
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Derive(false),
            ]);
            attrs
        };
        let (mechanism, params) = match algorithm {
            Algorithm::Aes256 => {
                let template = sealed(vec![
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Wrap(false),
                    Attribute::Unwrap(false),
                    Attribute::Sign(false),
                    Attribute::Verify(false),
                ]);
                self.session
                    .generate_key(&Mechanism::AesKeyGen, &template)
                    .unwrap();
                return;
            }
            Algorithm::Rsa2048 => (
                Mechanism::RsaPkcsKeyPairGen,
                vec![
                    Attribute::ModulusBits(2048.into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                ],
            ),
            Algorithm::EcP256 => (
                Mechanism::EccKeyPairGen,
                vec![Attribute::EcParams(P256.to_vec())],
            ),
            other => panic!("the filler makes no {other:?} keys"),
        };
        let mut public = named(vec![
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
        ]);
        public.extend(params);
        let private = sealed(vec![
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
        ]);
        self.session
            .generate_key_pair(&mechanism, &public, &private)
            .unwrap();
    }
}

impl TokenFiller {
    /// `(sensitive, extractable, never extractable)` of every private key whose CKA_ID
    /// is `id`, read in this process.
    pub fn private_key_flags(&self, id: &[u8]) -> Vec<(bool, bool, bool)> {
        self.key_flags(ObjectClass::PRIVATE_KEY, id)
    }

    /// As [`TokenFiller::private_key_flags`], for secret (AES) keys.
    pub fn secret_key_flags(&self, id: &[u8]) -> Vec<(bool, bool, bool)> {
        self.key_flags(ObjectClass::SECRET_KEY, id)
    }

    /// Destroys every secret key labelled `label`; how many.
    pub fn destroy_secret_keys(&self, label: &str) -> usize {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let found = self.session.find_objects(&template).unwrap();
        for handle in &found {
            self.session.destroy_object(*handle).unwrap();
        }
        found.len()
    }

    /// `CKA_WRAP_WITH_TRUSTED` of each secret key labelled `label` (which `pkcs11-tool`
    /// does not print).
    pub fn wrap_with_trusted(&self, label: &str) -> Vec<bool> {
        use cryptoki::object::AttributeType as T;
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        self.session
            .find_objects(&template)
            .unwrap()
            .into_iter()
            .map(|handle| {
                let attrs = self
                    .session
                    .get_attributes(handle, &[T::WrapWithTrusted])
                    .unwrap();
                attrs
                    .iter()
                    .any(|a| matches!(a, Attribute::WrapWithTrusted(true)))
            })
            .collect()
    }

    fn key_flags(&self, class: ObjectClass, id: &[u8]) -> Vec<(bool, bool, bool)> {
        use cryptoki::object::AttributeType as T;
        let template = [Attribute::Class(class), Attribute::Id(id.to_vec())];
        let flag = |attrs: &[Attribute], wanted: T| {
            attrs.iter().any(|a| match (a, wanted) {
                (Attribute::Sensitive(v), T::Sensitive)
                | (Attribute::Extractable(v), T::Extractable)
                | (Attribute::NeverExtractable(v), T::NeverExtractable) => *v,
                _ => false,
            })
        };
        let kinds = [T::Sensitive, T::Extractable, T::NeverExtractable];
        self.session
            .find_objects(&template)
            .unwrap()
            .into_iter()
            .map(|handle| {
                let attrs = self.session.get_attributes(handle, &kinds).unwrap();
                (
                    flag(&attrs, T::Sensitive),
                    flag(&attrs, T::Extractable),
                    flag(&attrs, T::NeverExtractable),
                )
            })
            .collect()
    }

    /// Destroys every object labelled `label`.
    pub fn destroy_labelled(&self, label: &str) {
        let labelled = [Attribute::Label(label.as_bytes().to_vec())];
        for handle in self.session.find_objects(&labelled).unwrap() {
            self.session.destroy_object(handle).unwrap();
        }
    }
}

/// Key names: `startup/000042`. Key 0 is always EC P-256, for the first signature.
pub fn key_name(i: usize) -> String {
    format!("startup/{i:06}")
}

/// The mix: one RSA-2048 signing key in 1,000, one AES-256 key in 50, the rest EC P-256
/// signing keys.
fn algorithm(i: usize) -> (Algorithm, Purpose) {
    match i {
        i if i % 1000 == 999 => (Algorithm::Rsa2048, Purpose::SignVerify),
        i if i % 50 == 49 => (Algorithm::Aes256, Purpose::EncryptDecrypt),
        _ => (Algorithm::EcP256, Purpose::SignVerify),
    }
}

/// The broker's token and store, filled key by key as the broker would have.
pub struct Filler {
    token: TokenFiller,
    store: SqliteStore,
    /// Keys made so far.
    pub keys: usize,
}

/// How long one fill step took, by part.
pub struct FillTime {
    pub token: Duration,
    pub store: Duration,
}

impl Filler {
    /// Opens the token by label and the broker's store file (the broker is stopped).
    /// The token, and the store of the broker whose directory is `dir` (unlocked).
    pub fn open(module: &Path, token_label: &str, pin: &str, dir: &Path) -> Filler {
        Filler {
            token: TokenFiller::open(module, token_label, pin),
            store: super::store::open_unlocked(dir),
            keys: 0,
        }
    }

    /// Makes keys until there are `total`.
    pub fn fill_to(&mut self, total: usize) -> FillTime {
        let started = Instant::now();
        let made: Vec<(usize, HardwareHandle)> = (self.keys..total)
            .map(|i| {
                let id = random_id();
                self.token
                    .generate(&id, &label(&key_name(i), 1), algorithm(i).0);
                (i, HardwareHandle::new("hsm", id))
            })
            .collect();
        let token = started.elapsed();
        let started = Instant::now();
        for chunk in made.chunks(STORE_BATCH) {
            let begun: Vec<StoreCall<()>> = chunk
                .iter()
                .map(|(i, handle)| self.store.begin_create(&new_key(*i), handle))
                .collect();
            begun.into_iter().for_each(|c| c.wait().unwrap());
            let done: Vec<_> = chunk
                .iter()
                .map(|(i, handle)| self.store.complete_version(&key_name(*i), 1, handle))
                .collect();
            done.into_iter().for_each(|c| drop(c.wait().unwrap()));
        }
        self.keys = total;
        FillTime {
            token,
            store: started.elapsed(),
        }
    }
}

fn new_key(i: usize) -> NewKey {
    let (algorithm, purpose) = algorithm(i);
    NewKey {
        name: key_name(i),
        algorithm,
        purpose,
        backend: BACKEND.into(),
        tags: [("team".to_string(), "payments".to_string())].into(),
        created_at: 1_700_000_000,
        releasable: false,
    }
}

/// A random object id from the kernel, as the broker's `intent()` takes one from `OsRng`.
pub fn random_id() -> Vec<u8> {
    use std::io::Read;
    let mut id = vec![0u8; 16];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut id)
        .unwrap();
    id
}
