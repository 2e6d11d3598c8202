//! `IdentityService`: certificates for the key a workload proves it holds, the trust
//! bundle, and workload JWTs (docs/identity.md).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keybroker_api::v1 as pb;
use pb::identity_service_server::IdentityService;
use tonic::{Request, Response, Status};

use super::Authority;
use super::authority::unix_now;
use super::certificate::{ClaimsExtension, HsmSigner, VerifiedCsr, WorkloadProfile, issue};
use crate::attestation::{Attestation, TOKEN_KEYS_WAIT};
use crate::authz::{Action, Resource};
use crate::config::OidcConfig;
use crate::error::BrokerError;
use crate::identity::SpiffeId;
use crate::request::{Authorized, Gate, Holder};

/// How long a call waits for the CA while the broker starts.
const CA_WAIT: Duration = Duration::from_secs(5);
/// Longest audience accepted by `GetToken`.
const MAX_AUDIENCE_LEN: usize = 256;

/// Serves `IdentityService`.
#[derive(Debug, Clone)]
pub struct IdentityServiceImpl {
    authority: Option<Arc<Authority>>,
    attestation: Option<Arc<Attestation>>,
    oidc: OidcConfig,
    gate: Gate,
}

type Reply<T> = Result<Response<T>, Status>;

/// A certificate just issued, with what verifies it.
#[derive(Debug)]
pub struct Issued {
    /// The certificate first, then the CA certificates up to (not including) the root.
    pub chain: Vec<Vec<u8>>,
    pub expires_at: u64,
    /// The roots that verify the chain.
    pub bundle: Vec<Vec<u8>>,
}

fn ca_off() -> Status {
    Status::failed_precondition("this broker issues no certificates (no [ca] backend)")
}

/// The public key of a CSR, read without checking its signature: only to select which
/// key a presented token must be bound to. The signature is checked right after the
/// authorization, with this same key.
fn unverified_csr_key(csr_der: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer as _;
    x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .map(|(_, csr)| csr.certification_request_info.subject_pki.raw.to_vec())
        .unwrap_or_default()
}

impl Authority {
    /// Issues a certificate for the caller's SPIFFE ID and the key of `csr_der`, for
    /// `ttl_seconds` (0: the default; capped at `ca.max_ttl_seconds`), signed in the HSM.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a CSR that is malformed, not signed by its key or asking for
    /// another name; `UNAVAILABLE` while the CA loads or when the HSM fails;
    /// `FAILED_PRECONDITION` for an intermediate CA with no installed certificate.
    pub async fn issue(
        &self,
        auth: &Authorized,
        csr_der: &[u8],
        ttl_seconds: u32,
    ) -> Result<Issued, BrokerError> {
        auth.require_broker(Action::IssueCertificate)?;
        let csr = Self::verify_csr(csr_der, auth.caller())?;
        self.issue_verified(auth, csr, ttl_seconds).await
    }

    /// Parses `csr_der` and checks that its own key signed it and that it asks for no name
    /// but `caller`'s.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a CSR that is malformed, not signed by its key or asking for
    /// another name.
    pub fn verify_csr(csr_der: &[u8], caller: &SpiffeId) -> Result<VerifiedCsr, BrokerError> {
        VerifiedCsr::parse(csr_der, caller).map_err(|e| BrokerError::InvalidArgument(e.to_string()))
    }

    /// Waits (a few seconds at most, while the broker starts) until the CA can sign.
    ///
    /// # Errors
    /// `UNAVAILABLE` while the CA loads; `FAILED_PRECONDITION` for an intermediate CA with
    /// no installed certificate.
    pub async fn ready(&self) -> Result<(), BrokerError> {
        self.wait_loaded(CA_WAIT).await.map(drop)
    }

    /// [`Authority::issue`] for a CSR already verified by [`Authority::verify_csr`] for
    /// the caller of `auth`.
    ///
    /// # Errors
    /// As [`Authority::issue`], without the CSR's.
    pub async fn issue_verified(
        &self,
        auth: &Authorized,
        csr: VerifiedCsr,
        ttl_seconds: u32,
    ) -> Result<Issued, BrokerError> {
        auth.require_broker(Action::IssueCertificate)?;
        let config = self.config();
        let ttl = match u64::from(ttl_seconds) {
            0 => config.default_ttl_seconds,
            asked => asked.min(config.max_ttl_seconds),
        };
        let claims_sha256 = auth
            .claims()
            .map(attest::token::claims_digest)
            .transpose()
            .map_err(|e| BrokerError::Internal(format!("claims digest: {e}")))?;
        let oid = self.claims_oid().to_vec();
        let state = self.wait_loaded(CA_WAIT).await?;
        let current = state.current.clone();
        let caller = auth.caller().clone();
        let now = SystemTime::now();
        let leaf = self
            .hsm()
            .run(move |token| {
                let signer =
                    HsmSigner::with_point(token, current.key_id.clone(), current.point.clone());
                let profile = WorkloadProfile {
                    spiffe_id: &caller,
                    ttl: Duration::from_secs(ttl),
                    now,
                    claims: claims_sha256.map(|claims_sha256| ClaimsExtension {
                        oid: &oid,
                        claims_sha256,
                    }),
                };
                issue(&signer, &current.certificate, &csr, &profile).map_err(|e| match e {
                    super::certificate::CaError::BadRequest(why) => {
                        BrokerError::InvalidArgument(why)
                    }
                    super::certificate::CaError::Signing(why) => BrokerError::Unavailable(why),
                })
            })
            .await?;
        let current = &state.current;
        let mut chain = vec![leaf];
        if !current.chain.is_empty() {
            chain.push(current.certificate.clone());
            // The root is the relying party's to have (the bundle), not the chain's.
            chain.extend(
                current
                    .chain
                    .iter()
                    .take(current.chain.len().saturating_sub(1))
                    .cloned(),
            );
        }
        tracing::info!(caller = %auth.caller(), ca_version = current.version, ttl_s = ttl,
            attested = auth.claims().is_some(), "workload certificate issued");
        Ok(Issued {
            chain,
            expires_at: unix_now().saturating_add(ttl),
            bundle: state.bundle.clone(),
        })
    }

    /// The trust bundle (`GetTrustBundle`).
    ///
    /// # Errors
    /// As [`Authority::issue`], without the CSR's.
    pub async fn bundle(&self, auth: &Authorized) -> Result<Vec<Vec<u8>>, BrokerError> {
        auth.require_broker(Action::GetTrustBundle)?;
        Ok(self.wait_loaded(CA_WAIT).await?.bundle.clone())
    }
}

impl IdentityServiceImpl {
    /// `authority` is `None` without `[ca]`; `attestation` is `None` without attestation.
    pub fn new(
        authority: Option<Arc<Authority>>,
        attestation: Option<Arc<Attestation>>,
        oidc: OidcConfig,
        gate: Gate,
    ) -> Self {
        IdentityServiceImpl {
            authority,
            attestation,
            oidc,
            gate,
        }
    }

    fn authority(&self) -> Result<&Arc<Authority>, Status> {
        self.authority.as_ref().ok_or_else(ca_off)
    }

    /// A workload JWT for `audience`, signed by the attestation token keys.
    async fn token(
        &self,
        auth: &Authorized,
        audience: &str,
        ttl_seconds: u32,
    ) -> Result<(String, u64), Status> {
        auth.require_broker(Action::GetToken)?;
        let attestation = self.attestation.as_ref().ok_or_else(|| {
            Status::failed_precondition("attestation is not configured on this broker")
        })?;
        let claims = auth.claims().ok_or_else(|| {
            Status::failed_precondition(
                "GetToken needs an attestation token (x-keybroker-attestation) bound to this \
                 connection's key",
            )
        })?;
        if audience.is_empty()
            || audience.len() > MAX_AUDIENCE_LEN
            || !audience.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Status::invalid_argument(format!(
                "audience: 1 to {MAX_AUDIENCE_LEN} printable ASCII characters, no spaces"
            )));
        }
        let max = self.oidc.jwt_max_ttl_seconds;
        let ttl = match u64::from(ttl_seconds) {
            0 => max,
            asked => asked.min(max),
        };
        let issuer = self
            .oidc
            .issuer
            .as_deref()
            .unwrap_or_else(|| attestation.issuer());
        let now = unix_now();
        let keys = attestation.token_keys();
        keys.wait_found(TOKEN_KEYS_WAIT).await?;
        let signing_key = keys.signing_key()?;
        let internal = |e: attest::AttestError| {
            tracing::error!(error = %e, "preparing a workload JWT failed");
            Status::internal("internal error")
        };
        let claims = attest::token::WorkloadClaims::new(
            issuer,
            auth.caller().as_str(),
            audience,
            now,
            ttl,
            claims,
        )
        .map_err(internal)?;
        let unsigned = attest::token::prepare_jwt(
            &claims,
            attest::token::TokenAlgorithm::Es256,
            signing_key.key_id(),
        )
        .map_err(internal)?;
        let token = keys.sign(&signing_key, unsigned).await?;
        tracing::info!(caller = %auth.caller(), audience, ttl_s = ttl, "workload JWT issued");
        Ok((token, claims.exp))
    }
}

fn unix_i64(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl IdentityService for IdentityServiceImpl {
    async fn issue_certificate(
        &self,
        request: Request<pb::IssueCertificateRequest>,
    ) -> Reply<pb::IssueCertificateResponse> {
        // A presented attestation token must be bound to the key the CSR is signed with,
        // whatever certificate this connection was made with: that is how a workload
        // trades its bootstrap identity for a certificate of its attested key.
        let holder = unverified_csr_key(&request.get_ref().csr_der);
        let auth =
            self.gate
                .authorize_holder(&request, Resource::Broker, Holder::Proven(&holder))?;
        let request = request.into_inner();
        let issued = self
            .authority()?
            .issue(&auth, &request.csr_der, request.ttl_seconds)
            .await?;
        Ok(Response::new(pb::IssueCertificateResponse {
            chain_der: issued.chain,
            expires_at: unix_i64(issued.expires_at),
            trust_bundle_der: issued.bundle,
        }))
    }

    async fn get_trust_bundle(
        &self,
        request: Request<pb::GetTrustBundleRequest>,
    ) -> Reply<pb::TrustBundle> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        Ok(Response::new(pb::TrustBundle {
            certificates_der: self.authority()?.bundle(&auth).await?,
        }))
    }

    async fn get_token(
        &self,
        request: Request<pb::GetTokenRequest>,
    ) -> Reply<pb::GetTokenResponse> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        let request = request.into_inner();
        let (token, expires_at) = self
            .token(&auth, &request.audience, request.ttl_seconds)
            .await?;
        Ok(Response::new(pb::GetTokenResponse {
            token,
            expires_at: unix_i64(expires_at),
        }))
    }
}
