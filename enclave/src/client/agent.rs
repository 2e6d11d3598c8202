//! The flow that turns evidence into an identity (docs/attestation.md, "Tokens bound to
//! their holder"): on a connection with the current identity, `GetChallenge`; a new
//! ephemeral key; evidence over (nonce, key); `Attest` with a CSR signed by that key,
//! which returns the attestation token, bound to the key, and the certificate for it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use attest::challenge::Nonce;
use attest::release::KemKeyPair;
use keybroker_api::v1 as pb;
use keybroker_api::v1::attestation_service_client::AttestationServiceClient;
use keybroker_api::v1::identity_service_client::IdentityServiceClient;
use secrecy::{ExposeSecret, SecretString};
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::credentials::{CertificateSummary, unix_time};
use super::{ATTESTATION_HEADER, ClientError, Credentials, Step};
use crate::evidence::EvidenceSource;
use crate::key::EphemeralKey;

/// A certificate is used for the next attestation only while it has longer than this left.
const MIN_REMAINING: Duration = Duration::from_secs(30);

/// What an [`Agent`] needs.
pub struct AgentConfig {
    /// The broker, `https://host:port`.
    pub endpoint: String,
    /// The CA that the broker's server certificate chains to, PEM.
    pub server_ca_pem: Vec<u8>,
    /// The bootstrap client certificate (chain, leaf first), PEM: the identity used until
    /// an issued certificate replaces it. Its URI SAN is the SPIFFE ID requested.
    pub bootstrap_cert_pem: Vec<u8>,
    /// The bootstrap certificate's private key, PEM.
    pub bootstrap_key_pem: SecretString,
    /// Where evidence comes from.
    pub evidence: Arc<dyn EvidenceSource>,
    /// The certificate lifetime to request; 0: the broker policy's default.
    pub ttl_seconds: u32,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("endpoint", &self.endpoint)
            .field("evidence", &self.evidence.kind())
            .field("ttl_seconds", &self.ttl_seconds)
            .finish_non_exhaustive()
    }
}

/// A client identity: a certificate chain and its key.
struct ClientIdentity {
    chain_pem: Vec<u8>,
    key_pem: SecretString,
    spiffe_id: String,
    expires_at: SystemTime,
}

impl ClientIdentity {
    fn duplicate(&self) -> ClientIdentity {
        ClientIdentity {
            chain_pem: self.chain_pem.clone(),
            key_pem: SecretString::from(self.key_pem.expose_secret().to_owned()),
            spiffe_id: self.spiffe_id.clone(),
            expires_at: self.expires_at,
        }
    }
}

/// A JWT for one audience, from [`Agent::get_tokens`].
#[derive(Debug)]
pub struct AudienceToken {
    /// The audience it was issued for.
    pub audience: String,
    /// The JWT.
    pub token: SecretString,
    /// When it expires.
    pub expires_at: SystemTime,
}

/// Runs the attestation flow against one broker, and remembers the last certificate it
/// was issued so that the next attestation can authenticate with it.
pub struct Agent {
    config: AgentConfig,
    bootstrap: ClientIdentity,
    issued: Mutex<Option<ClientIdentity>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .field("spiffe_id", &self.bootstrap.spiffe_id)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent for `config`. Reads the bootstrap certificate's SPIFFE ID; connects nowhere.
    ///
    /// # Errors
    /// [`ClientError::Input`] if the server CA, the bootstrap certificate (which must name
    /// one SPIFFE ID) or the bootstrap key is unusable.
    pub fn new(config: AgentConfig) -> Result<Agent, ClientError> {
        super::tls::parse_certs(&config.server_ca_pem, "server CA certificate")?;
        super::tls::check_key(&config.bootstrap_key_pem, "bootstrap private key")?;
        let what = "bootstrap certificate";
        let leaf = super::tls::parse_certs(&config.bootstrap_cert_pem, what)?;
        let leaf = leaf
            .first()
            .ok_or_else(|| ClientError::input(Step::Connect, what, "empty"))?;
        let summary = CertificateSummary::read(leaf)
            .map_err(|reason| ClientError::input(Step::Connect, what, reason))?;
        let bootstrap = ClientIdentity {
            chain_pem: config.bootstrap_cert_pem.clone(),
            key_pem: SecretString::from(config.bootstrap_key_pem.expose_secret().to_owned()),
            spiffe_id: summary.spiffe_id,
            expires_at: summary.not_after,
        };
        Ok(Agent {
            config,
            bootstrap,
            issued: Mutex::new(None),
        })
    }

    /// Attests and gets a certificate: connects with the current identity (the last issued
    /// certificate while it has more than 30 s left, else the bootstrap one), asks for a
    /// challenge, makes a new ephemeral key, collects evidence over both, and attests with
    /// a CSR signed by the key: one `Attest` returns the token and the certificate.
    ///
    /// # Errors
    /// [`ClientError`] naming the step that failed.
    pub async fn attest(&self) -> Result<Credentials, ClientError> {
        let identity = self.current_identity();
        let channel = super::channel(
            &self.config.endpoint,
            &self.config.server_ca_pem,
            &identity.chain_pem,
            &identity.key_pem,
        )
        .await?;
        let mut attestation = AttestationServiceClient::new(channel.clone());
        let challenge = attestation
            .get_challenge(pb::GetChallengeRequest {})
            .await
            .map_err(ClientError::refused(Step::Challenge))?
            .into_inner();
        let nonce = Nonce::from_slice(&challenge.nonce)
            .map_err(|_| ClientError::answer(Step::Challenge, "the nonce is not 32 bytes"))?;
        let key = EphemeralKey::generate().map_err(|source| ClientError::Key {
            step: Step::Attest,
            source,
        })?;
        // A second key, for key agreement only: secrets are released to it with HPKE. The
        // evidence binds both (docs/attestation.md, "Two keys, two uses").
        let kem = KemKeyPair::generate();
        let bound = attest::binding::bound_keys(key.spki_der(), Some(&kem.public()));
        let evidence = self.collect(nonce, bound).await?;
        let csr_der = key
            .csr_der(&identity.spiffe_id)
            .map_err(|source| ClientError::Key {
                step: Step::Issue,
                source,
            })?;
        let attested = attestation
            .attest(pb::AttestRequest {
                nonce: nonce.as_bytes().to_vec(),
                ephemeral_public_key: key.spki_der().to_vec(),
                evidence: Some(evidence),
                csr_der,
                certificate_ttl_seconds: self.config.ttl_seconds,
                kem_public_key: kem.public().as_bytes().to_vec(),
            })
            .await
            .map_err(ClientError::refused(Step::Attest))?
            .into_inner();
        let issued = attested.certificate.ok_or_else(|| {
            ClientError::answer(Step::Issue, "no certificate came with the token")
        })?;
        let token_expires_at = unix_time(attested.expires_at)
            .ok_or_else(|| ClientError::answer(Step::Attest, "expires_at is before 1970"))?;
        let attested = Attested {
            token: SecretString::from(attested.token),
            expires_at: token_expires_at,
            claims_json: attested.claims_json,
        };
        let credentials = issued_credentials(key, kem, issued, attested)?;
        self.remember(&credentials)?;
        Ok(credentials)
    }

    /// A JWT for `audience` (`sub` = the SPIFFE ID), asked for on a connection with the
    /// issued certificate, presenting the attestation token.
    ///
    /// # Errors
    /// [`ClientError`] naming the step that failed ([`Step::Connect`] or [`Step::Token`]).
    pub async fn get_token(
        &self,
        creds: &Credentials,
        audience: &str,
    ) -> Result<(SecretString, SystemTime), ClientError> {
        let channel = self.issued_channel(creds).await?;
        let token = token_on(channel, creds, audience).await?;
        Ok((token.token, token.expires_at))
    }

    /// [`Agent::get_token`] for each of `audiences`, on one connection.
    ///
    /// # Errors
    /// As [`Agent::get_token`], for the first audience that fails.
    pub async fn get_tokens(
        &self,
        creds: &Credentials,
        audiences: &[String],
    ) -> Result<Vec<AudienceToken>, ClientError> {
        if audiences.is_empty() {
            return Ok(Vec::new());
        }
        let channel = self.issued_channel(creds).await?;
        let mut tokens = Vec::with_capacity(audiences.len());
        for audience in audiences {
            tokens.push(token_on(channel.clone(), creds, audience).await?);
        }
        Ok(tokens)
    }

    /// A channel that authenticates with the issued certificate in `creds`.
    pub(super) async fn issued_channel(&self, creds: &Credentials) -> Result<Channel, ClientError> {
        creds
            .channel(&self.config.endpoint, &self.config.server_ca_pem)
            .await
    }

    /// Evidence over `nonce` and `spki_der`, off the async workers (it may block on a device).
    async fn collect(
        &self,
        nonce: Nonce,
        spki_der: Vec<u8>,
    ) -> Result<pb::attest_request::Evidence, ClientError> {
        let source = Arc::clone(&self.config.evidence);
        tokio::task::spawn_blocking(move || source.collect(&nonce, &spki_der))
            .await
            .map_err(|e| {
                ClientError::Evidence(crate::evidence::EvidenceError::Device {
                    source_kind: self.config.evidence.kind(),
                    reason: format!("the collecting task failed: {e}"),
                })
            })?
            .map_err(ClientError::Evidence)
    }

    fn current_identity(&self) -> ClientIdentity {
        let issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh_until = SystemTime::now()
            .checked_add(MIN_REMAINING)
            .unwrap_or(SystemTime::now());
        match issued.as_ref() {
            Some(identity) if identity.expires_at > fresh_until => identity.duplicate(),
            _ => self.bootstrap.duplicate(),
        }
    }

    fn remember(&self, creds: &Credentials) -> Result<(), ClientError> {
        let chain_pem = creds
            .chain_pem()
            .map_err(|e| ClientError::answer(Step::Issue, e.to_string()))?;
        let identity = ClientIdentity {
            chain_pem: chain_pem.into_bytes(),
            key_pem: creds.key.private_key_pem(),
            spiffe_id: creds.spiffe_id.clone(),
            expires_at: creds.cert_expires_at,
        };
        *self.issued.lock().unwrap_or_else(PoisonError::into_inner) = Some(identity);
        Ok(())
    }
}

/// `GetToken` for `audience` on `channel`.
async fn token_on(
    channel: Channel,
    creds: &Credentials,
    audience: &str,
) -> Result<AudienceToken, ClientError> {
    let request = pb::GetTokenRequest {
        audience: audience.to_string(),
        ttl_seconds: 0,
    };
    let answer = IdentityServiceClient::new(channel)
        .get_token(with_attestation(request, &creds.token, Step::Token)?)
        .await
        .map_err(ClientError::refused(Step::Token))?
        .into_inner();
    let expires_at = unix_time(answer.expires_at)
        .ok_or_else(|| ClientError::answer(Step::Token, "expires_at is before 1970"))?;
    Ok(AudienceToken {
        audience: audience.to_string(),
        token: SecretString::from(answer.token),
        expires_at,
    })
}

/// `message` with the attestation token in [`ATTESTATION_HEADER`], marked sensitive (never
/// indexed by HPACK).
pub(super) fn with_attestation<T>(
    message: T,
    token: &SecretString,
    step: Step,
) -> Result<Request<T>, ClientError> {
    let mut value = MetadataValue::try_from(token.expose_secret())
        .map_err(|_| ClientError::answer(step, "the attestation token is not ASCII"))?;
    value.set_sensitive(true);
    let mut request = Request::new(message);
    request.metadata_mut().insert(ATTESTATION_HEADER, value);
    Ok(request)
}

/// What `Attest` returned.
struct Attested {
    token: SecretString,
    expires_at: SystemTime,
    claims_json: String,
}

/// The credentials from the certificate `Attest` returned, checked: the leaf certifies `key`
/// and names one SPIFFE ID.
fn issued_credentials(
    key: EphemeralKey,
    kem: KemKeyPair,
    issued: pb::IssueCertificateResponse,
    attested: Attested,
) -> Result<Credentials, ClientError> {
    let leaf = issued
        .chain_der
        .first()
        .ok_or_else(|| ClientError::answer(Step::Issue, "the certificate chain is empty"))?;
    let summary = CertificateSummary::read(leaf).map_err(|reason| {
        ClientError::answer(Step::Issue, format!("issued certificate: {reason}"))
    })?;
    if summary.spki_der != key.spki_der() {
        return Err(ClientError::answer(
            Step::Issue,
            "the issued certificate is for another key",
        ));
    }
    Ok(Credentials {
        key,
        kem,
        chain_der: issued.chain_der,
        bundle_der: issued.trust_bundle_der,
        cert_expires_at: summary.not_after,
        token: attested.token,
        token_expires_at: attested.expires_at,
        spiffe_id: summary.spiffe_id,
        claims_json: attested.claims_json,
    })
}
