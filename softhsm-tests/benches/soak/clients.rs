//! The concurrent clients of the kill -9 harness. Each owns the keys it creates (so that
//! no other client rotates or destroys them under it) and loops over a mix of creates,
//! rotations, destructions, signs and encrypts on the SoftHSM2 token and the swtpm, until
//! the broker is killed. Only answers go into the ledger; a call the kill interrupted
//! proves nothing and is forgotten (a destruction so interrupted leaves its key
//! `Uncertain`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;
use pb::key_service_client::KeyServiceClient;
use tonic::transport::Channel;

use super::common::create;
use super::ledger::{Kind, Ledger, Sealed, Signed, Standing};

/// Live keys one client keeps at most; past it, it destroys rather than creates.
const MAX_OWNED: usize = 6;

pub type Shared = Arc<Mutex<Ledger>>;

pub fn lock(ledger: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    ledger
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

enum Op {
    Sign,
    Encrypt,
    Create,
    Rotate,
    Destroy,
}

/// One client for one broker run.
pub struct Client {
    pub id: usize,
    pub keys: KeyServiceClient<Channel>,
    pub ledger: Shared,
    pub rng: fastrand::Rng,
    /// Set just before the kill: from then on, a failed call ends the run quietly.
    pub killed: Arc<AtomicBool>,
    /// Names made so far by this client over the whole harness (names are never reused).
    pub made: Arc<std::sync::atomic::AtomicU64>,
}

impl Client {
    /// Runs operations until one fails after the kill.
    pub async fn run(mut self) {
        loop {
            let result = match self.choose() {
                Op::Sign => self.sign().await,
                Op::Encrypt => self.encrypt().await,
                Op::Create => self.create().await,
                Op::Rotate => self.rotate().await,
                Op::Destroy => self.destroy().await,
            };
            if let Err(status) = result {
                if self.killed.load(Ordering::SeqCst) {
                    return;
                }
                lock(&self.ledger).refused(format!("client {}: {status:?}", self.id));
            }
        }
    }

    /// The next operation: 40% sign, 20% encrypt, 15% create, 12% rotate, 13% destroy,
    /// with creates turned into destructions past [`MAX_OWNED`] keys and the other way
    /// round below two.
    fn choose(&mut self) -> Op {
        let owned = lock(&self.ledger).owned(self.id, |_| true).len();
        match self.rng.u32(0..100) {
            0..40 => Op::Sign,
            40..60 => Op::Encrypt,
            _ if owned < 2 => Op::Create,
            60..75 if owned >= MAX_OWNED => Op::Destroy,
            60..75 => Op::Create,
            75..87 => Op::Rotate,
            _ => Op::Destroy,
        }
    }

    fn pick(&mut self, names: Vec<String>) -> Option<String> {
        if names.is_empty() {
            return None;
        }
        names.get(self.rng.usize(0..names.len())).cloned()
    }

    async fn create(&mut self) -> Result<(), tonic::Status> {
        let (kind, alg, purpose) = match self.rng.u32(0..3) {
            0 => (Kind::HsmSign, A::EcP256, P::SignVerify),
            1 => (Kind::HsmAes, A::Aes256, P::EncryptDecrypt),
            _ => (Kind::TpmSign, A::EcP256, P::SignVerify),
        };
        let n = self.made.fetch_add(1, Ordering::SeqCst);
        let name = format!("soak-w{}-{n}", self.id);
        self.keys
            .create_key(create(&name, alg, purpose, kind.backend()))
            .await?;
        lock(&self.ledger).created(&name, kind, Some(self.id));
        if kind.signs() {
            self.fetch_public_key(&name, 1).await?;
        }
        Ok(())
    }

    async fn fetch_public_key(&mut self, name: &str, version: u32) -> Result<(), tonic::Status> {
        let public = self
            .keys
            .get_public_key(pb::GetPublicKeyRequest {
                name: name.into(),
                version,
            })
            .await?
            .into_inner();
        lock(&self.ledger).saw_public_key(name, version, public.spki_der);
        Ok(())
    }

    async fn rotate(&mut self) -> Result<(), tonic::Status> {
        let owned = lock(&self.ledger).owned(self.id, |_| true);
        let Some(name) = self.pick(owned) else {
            return Ok(());
        };
        let key = self
            .keys
            .rotate_key(pb::KeyRef { name: name.clone() })
            .await?
            .into_inner();
        let signs = {
            let mut ledger = lock(&self.ledger);
            ledger.counts.rotations += 1;
            ledger.saw_version(&name, key.primary_version);
            ledger.keys.get(&name).is_some_and(|k| k.kind.signs())
        };
        if signs {
            self.fetch_public_key(&name, key.primary_version).await?;
        }
        Ok(())
    }

    async fn destroy(&mut self) -> Result<(), tonic::Status> {
        let owned = lock(&self.ledger).owned(self.id, |_| true);
        let Some(name) = self.pick(owned) else {
            return Ok(());
        };
        // Until answered, either outcome is possible.
        lock(&self.ledger).set_standing(&name, Standing::Uncertain);
        self.keys
            .schedule_key_destruction(pb::ScheduleKeyDestructionRequest {
                name: name.clone(),
                pending_days: 1,
            })
            .await?;
        let mut ledger = lock(&self.ledger);
        ledger.counts.destructions += 1;
        ledger.set_standing(&name, Standing::Destroyed);
        Ok(())
    }

    async fn sign(&mut self) -> Result<(), tonic::Status> {
        let candidates = {
            let ledger = lock(&self.ledger);
            let mut names = ledger.owned(self.id, Kind::signs);
            names.extend(ledger.shared(Kind::signs));
            names
        };
        let Some(name) = self.pick(candidates) else {
            return Ok(());
        };
        let message = self.rng.u64(..).to_le_bytes().to_vec();
        let signed = self
            .keys
            .sign(pb::SignRequest {
                name: name.clone(),
                input: Some(pb::sign_request::Input::Message(message.clone())),
                scheme: pb::SignatureScheme::Default as i32,
            })
            .await?
            .into_inner();
        let mut ledger = lock(&self.ledger);
        ledger.counts.signs += 1;
        ledger.saw_version(&name, signed.key_version);
        ledger.signed.push(Signed {
            key: name,
            version: signed.key_version,
            message,
            signature: signed.signature,
        });
        Ok(())
    }

    async fn encrypt(&mut self) -> Result<(), tonic::Status> {
        let candidates = {
            let ledger = lock(&self.ledger);
            let mut names = ledger.owned(self.id, |k| !k.signs());
            names.extend(ledger.shared(|k| !k.signs()));
            names
        };
        let Some(name) = self.pick(candidates) else {
            return Ok(());
        };
        let plaintext = self.rng.u64(..).to_le_bytes().to_vec();
        let sealed = self
            .keys
            .encrypt(pb::EncryptRequest {
                name: name.clone(),
                plaintext: plaintext.clone(),
                aad: vec![],
            })
            .await?
            .into_inner();
        let mut ledger = lock(&self.ledger);
        ledger.counts.encrypts += 1;
        ledger.saw_version(&name, sealed.key_version);
        ledger.sealed.push(Sealed {
            key: name,
            version: sealed.key_version,
            plaintext,
            ciphertext: sealed.ciphertext,
        });
        Ok(())
    }
}
