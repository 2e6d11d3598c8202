//! The gRPC face of [`KeyManager`]: decode, authorize, operate, encode.

use std::collections::BTreeMap;
use std::sync::Arc;

use keybroker_api::v1 as pb;
use pb::key_service_server::KeyService;
use secrecy::{ExposeSecret, SecretSlice};
use tonic::{Request, Response, Status};

use super::convert::{
    algorithm_from_wire, algorithm_name, key_to_wire, purpose_from_wire, purpose_name, state_name,
};
use super::manager::{KeyManager, StateChange, now};
use super::ops::{self, Scheme};
use crate::authz::{Action, KeyResource, Resource};
use crate::error::BrokerError;
use crate::identity::SpiffeId;
use crate::request::Gate;
use crate::store::{KeyRecord, NewKey, Purpose};

/// Most digests in one `SignBatch`.
pub const MAX_BATCH: usize = 1024;

/// Serves `KeyService`.
#[derive(Debug, Clone)]
pub struct KeyServiceImpl {
    manager: Arc<KeyManager>,
    gate: Gate,
}

type Reply<T> = Result<Response<T>, Status>;

/// A key as an authorization resource.
pub(crate) fn resource(key: &KeyRecord) -> Resource<'_> {
    Resource::Key(KeyResource {
        name: &key.name,
        algorithm: algorithm_name(key.algorithm),
        purpose: purpose_name(key.purpose),
        backend: &key.backend,
        state: state_name(key.state),
        tags: &key.tags,
    })
}

/// A key that does not exist, as an authorization resource: no attributes, no tags.
pub(crate) fn absent_resource<'a>(
    name: &'a str,
    no_tags: &'a BTreeMap<String, String>,
) -> Resource<'a> {
    Resource::Key(KeyResource {
        name,
        algorithm: "",
        purpose: "",
        backend: "",
        state: "absent",
        tags: no_tags,
    })
}

impl KeyServiceImpl {
    pub fn new(manager: Arc<KeyManager>, gate: Gate) -> Self {
        KeyServiceImpl { manager, gate }
    }

    /// Loads a key and authorizes the action on it. An unknown key is authorized as an
    /// attribute-less resource first, so that a caller without a grant cannot learn which
    /// names exist.
    fn authorized_key<T>(
        &self,
        request: &Request<T>,
        name: &str,
        action: Action,
    ) -> Result<(KeyRecord, SpiffeId), Status> {
        match self.manager.get(name) {
            Ok(key) => {
                let caller = self.gate.authorize(request, action, resource(&key))?;
                Ok((key, caller))
            }
            Err(BrokerError::KeyNotFound(_)) => {
                let empty = BTreeMap::new();
                self.gate
                    .authorize(request, action, absent_resource(name, &empty))?;
                Err(BrokerError::KeyNotFound(name.to_string()).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn change_state(
        &self,
        request: Request<pb::KeyRef>,
        action: Action,
        change: StateChange,
    ) -> Reply<pb::Key> {
        let name = request.get_ref().name.clone();
        self.authorized_key(&request, &name, action)?;
        let key = self.manager.transition(&name, change)?;
        tracing::info!(key = %name, state = state_name(key.state), "key state changed");
        Ok(Response::new(key_to_wire(&key)))
    }
}

fn sign_input(input: Option<pb::sign_request::Input>) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    match input {
        Some(pb::sign_request::Input::Message(m)) => (Some(m), None),
        Some(pb::sign_request::Input::Digest(d)) => (None, Some(d)),
        None => (None, None),
    }
}

#[tonic::async_trait]
impl KeyService for KeyServiceImpl {
    async fn create_key(&self, request: Request<pb::CreateKeyRequest>) -> Reply<pb::Key> {
        let r = request.get_ref();
        let backend = self.manager.backend_for_new_key(&r.backend)?;
        let new = NewKey {
            name: r.name.clone(),
            algorithm: algorithm_from_wire(r.algorithm)?,
            purpose: purpose_from_wire(r.purpose)?,
            backend: backend.name.clone(),
            tags: r.tags.clone().into_iter().collect(),
            created_at: now(),
        };
        self.manager.check_new_key(&new, &backend)?;
        self.gate.authorize(
            &request,
            Action::CreateKey,
            Resource::Key(KeyResource {
                name: &new.name,
                algorithm: algorithm_name(new.algorithm),
                purpose: purpose_name(new.purpose),
                backend: &new.backend,
                state: "creating",
                tags: &new.tags,
            }),
        )?;
        let key = self.manager.create(new, backend).await?;
        tracing::info!(key = %key.name, backend = %key.backend, "key created");
        Ok(Response::new(key_to_wire(&key)))
    }

    async fn get_key(&self, request: Request<pb::KeyRef>) -> Reply<pb::Key> {
        let (key, _) = self.authorized_key(&request, &request.get_ref().name, Action::GetKey)?;
        Ok(Response::new(key_to_wire(&key)))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Reply<pb::ListKeysResponse> {
        self.gate
            .authorize(&request, Action::ListKeys, Resource::Broker)?;
        let keys = self
            .manager
            .store()
            .list(&request.get_ref().prefix)
            .map_err(BrokerError::from)?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: keys.iter().map(key_to_wire).collect(),
        }))
    }

    async fn get_public_key(
        &self,
        request: Request<pb::GetPublicKeyRequest>,
    ) -> Reply<pb::PublicKey> {
        let r = request.get_ref();
        let (key, _) = self.authorized_key(&request, &r.name, Action::GetPublicKey)?;
        if key.algorithm == crate::store::Algorithm::Aes256 {
            return Err(
                BrokerError::FailedPrecondition("AES keys have no public key".into()).into(),
            );
        }
        let version = self.manager.usable(&key, r.version)?;
        let spki = self.manager.public_key(&key, &version).await?;
        let pem = spki_pem(&spki)?;
        Ok(Response::new(pb::PublicKey {
            name: key.name,
            version: version.version,
            spki_der: spki.to_vec(),
            pem,
        }))
    }

    async fn sign(&self, request: Request<pb::SignRequest>) -> Reply<pb::SignResponse> {
        let (key, _) = self.authorized_key(&request, &request.get_ref().name, Action::Sign)?;
        let r = request.into_inner();
        KeyManager::require_purpose(&key, Purpose::SignVerify)?;
        let scheme = Scheme::resolve(key.algorithm, r.scheme)?;
        let (message, digest) = sign_input(r.input);
        let digest = ops::digest_of(key.algorithm, message.as_deref(), digest.as_deref())?;
        let version = self.manager.usable(&key, 0)?;
        let backend = self.manager.backends().get(&key.backend)?;
        let mut signatures = ops::sign(backend, &key, &version, scheme, vec![digest]).await?;
        let signature = signatures
            .pop()
            .ok_or_else(|| BrokerError::Internal("no signature".into()))?;
        Ok(Response::new(pb::SignResponse {
            signature,
            key_version: version.version,
        }))
    }

    async fn sign_batch(
        &self,
        request: Request<pb::SignBatchRequest>,
    ) -> Reply<pb::SignBatchResponse> {
        let (key, _) = self.authorized_key(&request, &request.get_ref().name, Action::Sign)?;
        let r = request.into_inner();
        KeyManager::require_purpose(&key, Purpose::SignVerify)?;
        if r.digests.is_empty() || r.digests.len() > MAX_BATCH {
            return Err(BrokerError::InvalidArgument(format!("digests: 1 to {MAX_BATCH}")).into());
        }
        let scheme = Scheme::resolve(key.algorithm, r.scheme)?;
        let digests = r
            .digests
            .iter()
            .map(|d| ops::digest_of(key.algorithm, None, Some(d)))
            .collect::<Result<Vec<_>, _>>()?;
        let version = self.manager.usable(&key, 0)?;
        let backend = self.manager.backends().get(&key.backend)?;
        let signatures = ops::sign(backend, &key, &version, scheme, digests).await?;
        Ok(Response::new(pb::SignBatchResponse {
            signatures,
            key_version: version.version,
        }))
    }

    async fn verify(&self, request: Request<pb::VerifyRequest>) -> Reply<pb::VerifyResponse> {
        let (key, _) = self.authorized_key(&request, &request.get_ref().name, Action::Verify)?;
        let r = request.into_inner();
        KeyManager::require_purpose(&key, Purpose::SignVerify)?;
        let scheme = Scheme::resolve(key.algorithm, r.scheme)?;
        let (message, digest) = match r.input {
            Some(pb::verify_request::Input::Message(m)) => (Some(m), None),
            Some(pb::verify_request::Input::Digest(d)) => (None, Some(d)),
            None => (None, None),
        };
        let digest = ops::digest_of(key.algorithm, message.as_deref(), digest.as_deref())?;
        let version = self.manager.usable(&key, r.key_version)?;
        let spki = self.manager.public_key(&key, &version).await?;
        let valid = ops::verify(key.algorithm, &spki, scheme, &digest, &r.signature)?;
        Ok(Response::new(pb::VerifyResponse { valid }))
    }

    async fn encrypt(&self, request: Request<pb::EncryptRequest>) -> Reply<pb::EncryptResponse> {
        let (key, _) = self.authorized_key(&request, &request.get_ref().name, Action::Encrypt)?;
        let r = request.into_inner();
        KeyManager::require_purpose(&key, Purpose::EncryptDecrypt)?;
        let version = self.manager.usable(&key, 0)?;
        let backend = self.manager.backends().get(&key.backend)?;
        let plaintext = SecretSlice::from(r.plaintext);
        let ciphertext = ops::encrypt(backend, &key, &version, plaintext, r.aad).await?;
        Ok(Response::new(pb::EncryptResponse {
            ciphertext,
            key_version: version.version,
        }))
    }

    async fn decrypt(&self, request: Request<pb::DecryptRequest>) -> Reply<pb::DecryptResponse> {
        let (key, _) = self.authorized_key(&request, &request.get_ref().name, Action::Decrypt)?;
        let r = request.into_inner();
        KeyManager::require_purpose(&key, Purpose::EncryptDecrypt)?;
        let envelope = ops::parse_envelope(&r.ciphertext)?;
        if envelope.key != key.name {
            return Err(BrokerError::InvalidArgument(
                "ciphertext: it was made by another key".into(),
            )
            .into());
        }
        if envelope.version == 0 {
            return Err(BrokerError::InvalidArgument("ciphertext: no key version".into()).into());
        }
        let version = self.manager.usable(&key, envelope.version)?;
        let backend = self.manager.backends().get(&key.backend)?;
        let plaintext = ops::decrypt(backend, &key, &version, envelope, r.aad).await?;
        Ok(Response::new(pb::DecryptResponse {
            plaintext: plaintext.expose_secret().to_vec(),
            key_version: version.version,
        }))
    }

    async fn generate_data_key(
        &self,
        request: Request<pb::GenerateDataKeyRequest>,
    ) -> Reply<pb::GenerateDataKeyResponse> {
        let (key, _) =
            self.authorized_key(&request, &request.get_ref().name, Action::GenerateDataKey)?;
        let r = request.into_inner();
        KeyManager::require_purpose(&key, Purpose::EncryptDecrypt)?;
        let version = self.manager.usable(&key, 0)?;
        let backend = self.manager.backends().get(&key.backend)?;
        let data_key = ops::random_data_key(backend.clone()).await?;
        let copy = SecretSlice::from(data_key.expose_secret().to_vec());
        let ciphertext = ops::encrypt(backend, &key, &version, copy, r.aad).await?;
        Ok(Response::new(pb::GenerateDataKeyResponse {
            plaintext: data_key.expose_secret().to_vec(),
            ciphertext,
            key_version: version.version,
        }))
    }

    async fn rotate_key(&self, request: Request<pb::KeyRef>) -> Reply<pb::Key> {
        let name = request.get_ref().name.clone();
        self.authorized_key(&request, &name, Action::RotateKey)?;
        let key = self.manager.rotate(&name).await?;
        tracing::info!(key = %name, version = key.primary_version, "key rotated");
        Ok(Response::new(key_to_wire(&key)))
    }

    async fn disable_key(&self, request: Request<pb::KeyRef>) -> Reply<pb::Key> {
        self.change_state(request, Action::DisableKey, StateChange::Disable)
            .await
    }

    async fn enable_key(&self, request: Request<pb::KeyRef>) -> Reply<pb::Key> {
        self.change_state(request, Action::EnableKey, StateChange::Enable)
            .await
    }

    async fn revoke_key(&self, request: Request<pb::KeyRef>) -> Reply<pb::Key> {
        self.change_state(request, Action::RevokeKey, StateChange::Revoke)
            .await
    }

    async fn retire_key_version(&self, request: Request<pb::KeyVersionRef>) -> Reply<pb::Key> {
        let r = request.get_ref().clone();
        self.authorized_key(&request, &r.name, Action::RetireKeyVersion)?;
        let key = self.manager.retire_version(&r.name, r.version).await?;
        Ok(Response::new(key_to_wire(&key)))
    }

    async fn schedule_key_destruction(
        &self,
        request: Request<pb::ScheduleKeyDestructionRequest>,
    ) -> Reply<pb::Key> {
        let r = request.get_ref().clone();
        self.authorized_key(&request, &r.name, Action::ScheduleKeyDestruction)?;
        let key = self.manager.transition(
            &r.name,
            StateChange::ScheduleDestruction {
                days: r.pending_days,
            },
        )?;
        Ok(Response::new(key_to_wire(&key)))
    }

    async fn cancel_key_destruction(&self, request: Request<pb::KeyRef>) -> Reply<pb::Key> {
        self.change_state(
            request,
            Action::CancelKeyDestruction,
            StateChange::CancelDestruction,
        )
        .await
    }
}

fn spki_pem(der: &[u8]) -> Result<String, BrokerError> {
    use der::pem::LineEnding;
    der::pem::encode_string("PUBLIC KEY", LineEnding::LF, der)
        .map_err(|e| BrokerError::Internal(format!("PEM: {e}")))
}
