//! The gRPC face of [`KeyManager`]: authorize, decode, operate, encode. The gate comes
//! first in every handler, and its [`Authorized`] capability is what the operation takes.

use std::collections::BTreeMap;
use std::sync::Arc;

use keybroker_api::v1 as pb;
use pb::key_service_server::KeyService;
use secrecy::{ExposeSecret, SecretSlice};
use tonic::{Request, Response, Status};

pub(crate) use super::authorize::{absent_resource, authorize_key, resource};
use super::convert::{
    algorithm_from_wire, algorithm_name, key_to_wire, page_to_wire, purpose_from_wire,
    purpose_name, sign_input, state_name,
};
use super::manager::{KeyManager, StateChange, now};
use super::ops::{self, Scheme};
use crate::authz::{KeyResource, Resource};
use crate::error::BrokerError;
use crate::request::{Authorized, Gate};
use crate::sealing::{SealStreamResponses, Sealing, UnsealStreamResponses};
use crate::store::Purpose;
use crate::store::{KeyQuery, KeyRecord, NewKey};

/// Most digests in one `SignBatch`.
pub const MAX_BATCH: usize = 1024;

/// Serves `KeyService`.
#[derive(Debug, Clone)]
pub struct KeyServiceImpl {
    manager: Arc<KeyManager>,
    gate: Gate,
    sealing: Sealing,
    /// The largest response the server may send (`server.max_message_bytes`): a
    /// `ListKeys` page is cut short to fit it.
    max_response_bytes: usize,
}

/// Room left in a response for the page token and gRPC's framing.
const RESPONSE_HEADROOM: usize = 2 * 1024;

type Reply<T> = Result<Response<T>, Status>;

impl KeyServiceImpl {
    /// `max_response_bytes` is the server's largest message (`server.max_message_bytes`).
    pub fn new(
        manager: Arc<KeyManager>,
        gate: Gate,
        max_response_bytes: usize,
        stream_stall: std::time::Duration,
    ) -> Self {
        KeyServiceImpl {
            sealing: Sealing::new(
                manager.clone(),
                gate.clone(),
                max_response_bytes,
                stream_stall,
            ),
            manager,
            gate,
            max_response_bytes,
        }
    }

    async fn authorized_key<T>(
        &self,
        request: &Request<T>,
        name: &str,
    ) -> Result<(Authorized, KeyRecord), Status> {
        authorize_key(&self.manager, &self.gate, request, name).await
    }

    async fn change_state(
        &self,
        request: Request<pb::KeyRef>,
        change: StateChange,
    ) -> Reply<pb::Key> {
        let name = request.get_ref().name.clone();
        let (auth, _) = self.authorized_key(&request, &name).await?;
        let key = self.manager.transition(&auth, &name, change).await?;
        tracing::info!(key = %name, state = state_name(key.state), "key state changed");
        Ok(Response::new(key_to_wire(&key)))
    }
}

#[tonic::async_trait]
impl KeyService for KeyServiceImpl {
    async fn create_key(&self, request: Request<pb::CreateKeyRequest>) -> Reply<pb::Key> {
        // Authorize on what the request asks for, before checking any of it: a refusal
        // must not tell a stranger which backends exist or which names are taken.
        let r = request.get_ref();
        let tags: BTreeMap<String, String> = r.tags.clone().into_iter().collect();
        let backend_name = self.manager.backend_name_for_new_key(&r.backend);
        let auth = self.gate.authorize(
            &request,
            Resource::Key(KeyResource {
                name: &r.name,
                algorithm: algorithm_from_wire(r.algorithm).map_or("", algorithm_name),
                purpose: purpose_from_wire(r.purpose).map_or("", purpose_name),
                backend: backend_name.as_deref().unwrap_or(""),
                state: "creating",
                tags: &tags,
            }),
        )?;
        let backend = self.manager.backend_for_new_key(&r.backend)?;
        let new = NewKey {
            name: r.name.clone(),
            algorithm: algorithm_from_wire(r.algorithm)?,
            purpose: purpose_from_wire(r.purpose)?,
            backend: backend.name.clone(),
            tags,
            created_at: now(),
            releasable: r.releasable,
        };
        let key = self.manager.create(&auth, new, backend).await?;
        tracing::info!(key = %key.name, backend = %key.backend, "key created");
        Ok(Response::new(key_to_wire(&key)))
    }

    async fn get_key(&self, request: Request<pb::KeyRef>) -> Reply<pb::Key> {
        let (_auth, key) = self
            .authorized_key(&request, &request.get_ref().name)
            .await?;
        Ok(Response::new(key_to_wire(&key)))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Reply<pb::ListKeysResponse> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        let r = request.into_inner();
        let query = KeyQuery::new(
            r.prefix,
            r.tags.into_iter().collect(),
            &r.page_token,
            r.page_size,
        )
        .map_err(BrokerError::from)?;
        let page = self.manager.list(&auth, &query).await?;
        let budget = self.max_response_bytes.saturating_sub(RESPONSE_HEADROOM);
        Ok(Response::new(page_to_wire(&page, budget)))
    }

    async fn get_public_key(
        &self,
        request: Request<pb::GetPublicKeyRequest>,
    ) -> Reply<pb::PublicKey> {
        let (auth, key) = self
            .authorized_key(&request, &request.get_ref().name)
            .await?;
        let (version, spki) = self
            .manager
            .public_key(&auth, &key, request.get_ref().version)
            .await?;
        let pem = super::convert::spki_pem(&spki)?;
        Ok(Response::new(pb::PublicKey {
            name: key.name,
            version,
            spki_der: spki.to_vec(),
            pem,
        }))
    }

    async fn sign(&self, request: Request<pb::SignRequest>) -> Reply<pb::SignResponse> {
        let (auth, key) = self
            .authorized_key(&request, &request.get_ref().name)
            .await?;
        let r = request.into_inner();
        let scheme = Scheme::resolve(key.algorithm, r.scheme)?;
        let (message, digest) = sign_input(r.input);
        let digest = ops::digest_of(key.algorithm, message.as_deref(), digest.as_deref())?;
        let mut signed = self.manager.sign(&auth, &key, scheme, vec![digest]).await?;
        let signature = signed
            .signatures
            .pop()
            .ok_or_else(|| BrokerError::Internal("no signature".into()))?;
        Ok(Response::new(pb::SignResponse {
            signature,
            key_version: signed.version,
        }))
    }

    async fn sign_batch(
        &self,
        request: Request<pb::SignBatchRequest>,
    ) -> Reply<pb::SignBatchResponse> {
        let (auth, key) = self
            .authorized_key(&request, &request.get_ref().name)
            .await?;
        let r = request.into_inner();
        if r.digests.is_empty() || r.digests.len() > MAX_BATCH {
            return Err(BrokerError::InvalidArgument(format!("digests: 1 to {MAX_BATCH}")).into());
        }
        let scheme = Scheme::resolve(key.algorithm, r.scheme)?;
        let digests = r
            .digests
            .iter()
            .map(|d| ops::digest_of(key.algorithm, None, Some(d)))
            .collect::<Result<Vec<_>, _>>()?;
        let signed = self.manager.sign(&auth, &key, scheme, digests).await?;
        Ok(Response::new(pb::SignBatchResponse {
            signatures: signed.signatures,
            key_version: signed.version,
        }))
    }

    async fn verify(&self, request: Request<pb::VerifyRequest>) -> Reply<pb::VerifyResponse> {
        let (auth, key) = self
            .authorized_key(&request, &request.get_ref().name)
            .await?;
        let r = request.into_inner();
        let scheme = Scheme::resolve(key.algorithm, r.scheme)?;
        let (message, digest) = match r.input {
            Some(pb::verify_request::Input::Message(m)) => (Some(m), None),
            Some(pb::verify_request::Input::Digest(d)) => (None, Some(d)),
            None => (None, None),
        };
        let digest = ops::digest_of(key.algorithm, message.as_deref(), digest.as_deref())?;
        let valid = self
            .manager
            .verify(&auth, &key, r.key_version, scheme, &digest, &r.signature)
            .await?;
        Ok(Response::new(pb::VerifyResponse { valid }))
    }

    async fn encrypt(&self, request: Request<pb::EncryptRequest>) -> Reply<pb::EncryptResponse> {
        let (auth, key) = self
            .authorized_key(&request, &request.get_ref().name)
            .await?;
        let mut r = request.into_inner();
        let plaintext = SecretSlice::from(std::mem::take(&mut r.plaintext));
        let aad = std::mem::take(&mut r.aad);
        let encrypted = self.manager.encrypt(&auth, &key, plaintext, aad).await?;
        Ok(Response::new(pb::EncryptResponse {
            ciphertext: encrypted.ciphertext,
            key_version: encrypted.version,
        }))
    }

    async fn release_key(&self, request: Request<pb::ReleaseKeyRequest>) -> Reply<pb::ReleasedKey> {
        let (auth, key) = self
            .authorized_key(&request, &request.get_ref().name)
            .await?;
        let released = self
            .manager
            .release(&auth, &key, request.get_ref().version)
            .await?;
        Ok(Response::new(pb::ReleasedKey {
            name: key.name,
            version: released.version,
            ephemeral_public_key: released.key.ephemeral_public,
            wrapped_key: released.key.wrapped,
            kdf: released.key.kdf.to_string(),
        }))
    }

    async fn decrypt(&self, request: Request<pb::DecryptRequest>) -> Reply<pb::DecryptResponse> {
        let (auth, key) = self
            .authorized_key(&request, &request.get_ref().name)
            .await?;
        if key.purpose == Purpose::WrapUnwrap {
            let opened = self.sealing.open_data_key(&auth, &key, request.get_ref());
            return Ok(Response::new(opened.await?));
        }
        let r = request.into_inner();
        let decrypted = self
            .manager
            .decrypt(&auth, &key, &r.ciphertext, r.aad)
            .await?;
        Ok(Response::new(pb::DecryptResponse {
            plaintext: decrypted.plaintext.expose_secret().to_vec(),
            key_version: decrypted.version,
        }))
    }

    async fn generate_data_key(
        &self,
        request: Request<pb::GenerateDataKeyRequest>,
    ) -> Reply<pb::GenerateDataKeyResponse> {
        let (auth, key) = self
            .authorized_key(&request, &request.get_ref().name)
            .await?;
        if key.purpose == Purpose::WrapUnwrap {
            let made = self
                .sealing
                .generate_data_key(&auth, &key, request.get_ref());
            return Ok(Response::new(made.await?));
        }
        let r = request.into_inner();
        let data_key = self.manager.generate_data_key(&auth, &key, r.aad).await?;
        Ok(Response::new(pb::GenerateDataKeyResponse {
            plaintext: data_key.plaintext.expose_secret().to_vec(),
            ciphertext: data_key.ciphertext,
            key_version: data_key.version,
        }))
    }

    type SealStreamStream = SealStreamResponses;
    type UnsealStreamStream = UnsealStreamResponses;

    async fn seal(&self, request: Request<pb::SealRequest>) -> Reply<pb::SealResponse> {
        self.sealing.seal(request).await
    }

    async fn unseal(&self, request: Request<pb::UnsealRequest>) -> Reply<pb::UnsealResponse> {
        self.sealing.unseal(request).await
    }

    async fn seal_stream(
        &self,
        request: Request<tonic::Streaming<pb::SealStreamRequest>>,
    ) -> Reply<SealStreamResponses> {
        self.sealing.seal_stream(request).await
    }

    async fn unseal_stream(
        &self,
        request: Request<tonic::Streaming<pb::UnsealStreamRequest>>,
    ) -> Reply<UnsealStreamResponses> {
        self.sealing.unseal_stream(request).await
    }

    async fn generate_data_key_without_plaintext(
        &self,
        request: Request<pb::GenerateDataKeyRequest>,
    ) -> Reply<pb::GenerateDataKeyWithoutPlaintextResponse> {
        self.sealing.generate_without_plaintext(request).await
    }

    async fn rewrap(&self, request: Request<pb::RewrapRequest>) -> Reply<pb::RewrapResponse> {
        self.sealing.rewrap(request).await
    }

    async fn rotate_key(&self, request: Request<pb::KeyRef>) -> Reply<pb::Key> {
        let name = request.get_ref().name.clone();
        let (auth, _) = self.authorized_key(&request, &name).await?;
        let key = self.manager.rotate(&auth, &name).await?;
        tracing::info!(key = %name, version = key.primary_version, "key rotated");
        Ok(Response::new(key_to_wire(&key)))
    }

    async fn disable_key(&self, request: Request<pb::KeyRef>) -> Reply<pb::Key> {
        self.change_state(request, StateChange::Disable).await
    }

    async fn enable_key(&self, request: Request<pb::KeyRef>) -> Reply<pb::Key> {
        self.change_state(request, StateChange::Enable).await
    }

    async fn revoke_key(&self, request: Request<pb::KeyRef>) -> Reply<pb::Key> {
        self.change_state(request, StateChange::Revoke).await
    }

    async fn retire_key_version(&self, request: Request<pb::KeyVersionRef>) -> Reply<pb::Key> {
        let r = request.get_ref().clone();
        let (auth, _) = self.authorized_key(&request, &r.name).await?;
        let key = self
            .manager
            .retire_version(&auth, &r.name, r.version)
            .await?;
        Ok(Response::new(key_to_wire(&key)))
    }

    async fn schedule_key_destruction(
        &self,
        request: Request<pb::ScheduleKeyDestructionRequest>,
    ) -> Reply<pb::Key> {
        let r = request.get_ref().clone();
        let (auth, _) = self.authorized_key(&request, &r.name).await?;
        let change = StateChange::ScheduleDestruction {
            days: r.pending_days,
        };
        let key = self.manager.transition(&auth, &r.name, change).await?;
        Ok(Response::new(key_to_wire(&key)))
    }

    async fn cancel_key_destruction(&self, request: Request<pb::KeyRef>) -> Reply<pb::Key> {
        self.change_state(request, StateChange::CancelDestruction)
            .await
    }
}
