//! `AttestationService`: challenges, appraisal and tokens, over gRPC.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use attest::Evidence;
use attest::binding;
use attest::challenge::Nonce;
use attest::claims::Appraisal;
use attest::dev::InsecureDevEvidence;
use attest::release::KemPublicKey;
use attest::snp::SnpEvidence;
use attest::token::{Bound, Confirmation, TokenAlgorithm};
use attest::tpm::TpmEvidence;
use keybroker_api::v1 as pb;
use pb::attestation_service_server::AttestationService;
use tonic::{Request, Response, Status};

use super::{Attestation, not_configured, status};
use crate::authz::{Action, Resource};
use crate::ca::Authority;
use crate::ca::certificate::VerifiedCsr;
use crate::identity::SpiffeId;
use crate::request::{Authorized, Gate};

/// Longest ephemeral public key accepted (an RSA-4096 SPKI is 550 bytes).
const MAX_SPKI_LEN: usize = 1024;
/// Most PCRs a quote can select.
const MAX_PCRS: usize = 24;

/// Serves `AttestationService`.
#[derive(Debug, Clone)]
pub struct AttestationServiceImpl {
    attestation: Option<Arc<Attestation>>,
    /// The CA, for a certificate asked for with `Attest`; `None` without `[ca]`.
    authority: Option<Arc<Authority>>,
    gate: Gate,
}

type Reply<T> = Result<Response<T>, Status>;

impl AttestationServiceImpl {
    /// `attestation` is `None` on a broker without an HSM: every call is refused.
    /// `authority` is `None` without `[ca]`: `Attest` with a CSR is refused.
    pub fn new(
        attestation: Option<Arc<Attestation>>,
        authority: Option<Arc<Authority>>,
        gate: Gate,
    ) -> Self {
        AttestationServiceImpl {
            attestation,
            authority,
            gate,
        }
    }

    fn attestation(&self) -> Result<&Arc<Attestation>, Status> {
        self.attestation.as_ref().ok_or_else(not_configured)
    }
}

fn unix(time: std::time::SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
}

fn fixed<const N: usize>(field: &str, bytes: &[u8]) -> Result<[u8; N], Status> {
    <[u8; N]>::try_from(bytes).map_err(|_| invalid(format!("{field}: expected {N} bytes")))
}

/// The wire evidence as the appraiser's.
fn evidence(wire: Option<pb::attest_request::Evidence>) -> Result<Evidence, Status> {
    use pb::attest_request::Evidence as Wire;
    match wire.ok_or_else(|| invalid("evidence: required"))? {
        Wire::Snp(snp) => Ok(Evidence::Snp(SnpEvidence {
            report: snp.report,
            vek_der: (!snp.vek_der.is_empty()).then_some(snp.vek_der),
        })),
        Wire::Tpm(tpm) => {
            if tpm.pcr_indices.len() != tpm.pcr_values.len() {
                return Err(invalid(
                    "tpm.pcr_values: one value is needed for each of pcr_indices",
                ));
            }
            if tpm.pcr_indices.len() > MAX_PCRS {
                return Err(invalid(format!("tpm.pcr_indices: at most {MAX_PCRS}")));
            }
            let mut pcr_values = BTreeMap::new();
            for (index, value) in tpm.pcr_indices.iter().zip(&tpm.pcr_values) {
                let index = u8::try_from(*index)
                    .ok()
                    .filter(|i| usize::from(*i) < MAX_PCRS)
                    .ok_or_else(|| invalid(format!("tpm.pcr_indices: {index} is not a PCR")))?;
                let value = fixed::<32>("tpm.pcr_values", value)?;
                if pcr_values.insert(index, value).is_some() {
                    return Err(invalid(format!("tpm.pcr_indices: {index} is repeated")));
                }
            }
            // The key in the request only names which enrolled AK signed the quote: the
            // appraiser refuses any key the appraisal policy does not enrol
            // (attest/src/policy/tpm.rs), since anyone can sign a "quote" in software.
            Ok(Evidence::Tpm {
                quote: TpmEvidence {
                    attest: tpm.attest,
                    signature: tpm.signature,
                    pcr_values,
                },
                ak_spki_der: tpm.ak_spki_der,
            })
        }
        Wire::Dev(dev) => {
            let measurement = hex::decode(&dev.measurement)
                .map_err(|_| invalid("dev.measurement: expected 96 hex characters"))?;
            Ok(Evidence::InsecureDev(InsecureDevEvidence {
                report_data: fixed::<64>("dev.report_data", &dev.report_data)?,
                measurement: fixed::<48>("dev.measurement", &measurement)?,
            }))
        }
    }
}

impl AttestationServiceImpl {
    /// The CSR sent with `Attest`, verified for `caller` and for the ephemeral key, and the
    /// CA that is to sign it, ready.
    async fn certificate_request(
        &self,
        caller: &SpiffeId,
        csr_der: &[u8],
        ephemeral_spki: &[u8],
    ) -> Result<(Arc<Authority>, VerifiedCsr), Status> {
        let authority = self.authority.clone().ok_or_else(|| {
            Status::failed_precondition("csr_der: this broker issues no certificates (no [ca])")
        })?;
        let csr = Authority::verify_csr(csr_der, caller)?;
        // The CSR's signature proves the workload holds its key; that key must be the one
        // the evidence binds, which the token's `cnf` names.
        if csr.spki_der() != ephemeral_spki {
            return Err(invalid(
                "csr_der: signed by another key than ephemeral_public_key",
            ));
        }
        authority.ready().await?;
        Ok((authority, csr))
    }
}

/// Appraises `evidence`, bound to `nonce` and the key material `bound_keys`, for the
/// caller of `auth`, which it hands back.
async fn appraise(
    attestation: &Arc<Attestation>,
    auth: Authorized,
    evidence: Evidence,
    nonce: Nonce,
    bound_keys: Vec<u8>,
) -> Result<(Appraisal, Authorized), Status> {
    let inline = matches!(evidence, Evidence::InsecureDev(_));
    let run = move |attestation: &Attestation, auth: Authorized| {
        let appraisal = attestation
            .appraiser_for(&auth)?
            .appraise(auth.caller().as_str(), &evidence, &nonce, &bound_keys)
            .map_err(status)?;
        Ok((appraisal, auth))
    };
    // Development evidence has no signature to check: a thread hand-off would cost more
    // than the appraisal. Verifying SEV-SNP or TPM evidence is CPU work: off the workers.
    if inline {
        return run(attestation, auth);
    }
    let attestation = Arc::clone(attestation);
    tokio::task::spawn_blocking(move || run(&attestation, auth))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "attestation task failed");
            Status::internal("internal error")
        })?
}

/// The attestation token for `appraisal`, signed in the HSM.
async fn mint(
    attestation: &Attestation,
    appraisal: &Appraisal,
    caller: &SpiffeId,
    bound: Bound,
) -> Result<String, Status> {
    let keys = attestation.token_keys();
    let signing_key = keys.signing_key()?;
    let unsigned = attest::token::prepare(
        appraisal,
        attestation.issuer(),
        caller.as_str(),
        bound,
        TokenAlgorithm::Es256,
        signing_key.key_id(),
    )
    .map_err(|e| {
        tracing::error!(error = %e, "preparing an attestation token failed");
        Status::internal("internal error")
    })?;
    let token = keys.sign(&signing_key, unsigned).await.map_err(|e| {
        tracing::error!(error = %e, "signing an attestation token failed");
        Status::unavailable("the attestation token could not be signed")
    })?;
    tracing::info!(
        caller = %caller,
        tee = ?appraisal.claims.tee,
        kid = signing_key.key_id(),
        expires_at = appraisal.expires_at,
        "attestation token issued"
    );
    Ok(token)
}

#[tonic::async_trait]
impl AttestationService for AttestationServiceImpl {
    async fn get_challenge(
        &self,
        request: Request<pb::GetChallengeRequest>,
    ) -> Reply<pb::Challenge> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        let challenge = self.attestation()?.issue_challenge(&auth)?;
        Ok(Response::new(pb::Challenge {
            nonce: challenge.nonce.as_bytes().to_vec(),
            expires_at: unix(challenge.expires_at),
        }))
    }

    async fn attest(&self, request: Request<pb::AttestRequest>) -> Reply<pb::AttestResponse> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        let caller = auth.caller().clone();
        let attestation = self.attestation()?.clone();
        attestation.appraiser_for(&auth)?;
        let (_, extensions, request) = request.into_parts();
        let nonce =
            Nonce::from_slice(&request.nonce).map_err(|_| invalid("nonce: expected 32 bytes"))?;
        if request.ephemeral_public_key.is_empty()
            || request.ephemeral_public_key.len() > MAX_SPKI_LEN
        {
            return Err(invalid(format!(
                "ephemeral_public_key: a SubjectPublicKeyInfo of 1 to {MAX_SPKI_LEN} bytes"
            )));
        }
        // The token is bound to the ephemeral key the evidence binds (`cnf.jkt`), not to
        // this connection: the workload uses it once it proves it holds that key, on the
        // certificate the broker issues for it (IssueCertificate) or any connection whose
        // client certificate carries it.
        let confirmation = Confirmation::for_key(&request.ephemeral_public_key).map_err(|_| {
            invalid("ephemeral_public_key: an EC P-256 or P-384 SubjectPublicKeyInfo")
        })?;
        let kem = match request.kem_public_key.is_empty() {
            true => None,
            false => Some(
                KemPublicKey::from_slice(&request.kem_public_key)
                    .map_err(|e| invalid(format!("kem_public_key: {e}")))?,
            ),
        };
        let evidence = evidence(request.evidence)?;
        // Everything that can refuse the certificate on its own is checked before the
        // appraisal redeems the challenge, so that such a refusal burns nothing.
        let csr = match request.csr_der.is_empty() {
            true => None,
            false => Some(
                self.certificate_request(&caller, &request.csr_der, &request.ephemeral_public_key)
                    .await?,
            ),
        };
        // Also before: a workload that attests while the broker starts waits for the key
        // that signs its token, and if it is refused it may retry with the same challenge.
        attestation
            .token_keys()
            .wait_found(super::TOKEN_KEYS_WAIT)
            .await?;
        let bound_keys = binding::bound_keys(&request.ephemeral_public_key, kem.as_ref());
        let (appraisal, auth) = appraise(&attestation, auth, evidence, nonce, bound_keys).await?;
        let certificate = match csr {
            None => None,
            Some((authority, csr)) => {
                let issuing = self.gate.authorize_follow_on(
                    &extensions,
                    &auth,
                    Action::IssueCertificate,
                    appraisal.claims.clone(),
                )?;
                Some((authority, csr, issuing))
            }
        };
        let bound = Bound {
            cnf: confirmation,
            kem,
        };
        let minting = mint(&attestation, &appraisal, &caller, bound);
        let (token, certificate) = match certificate {
            None => (minting.await?, None),
            Some((authority, csr, issuing)) => {
                let ttl = request.certificate_ttl_seconds;
                let (token, issued) =
                    tokio::join!(minting, authority.issue_verified(&issuing, csr, ttl));
                (token?, Some(issued?))
            }
        };
        let claims_json = serde_json::to_string(&appraisal.claims)
            .map_err(|_| Status::internal("internal error"))?;
        Ok(Response::new(pb::AttestResponse {
            token,
            expires_at: i64::try_from(appraisal.expires_at).unwrap_or(i64::MAX),
            claims_json,
            certificate: certificate.map(|issued| pb::IssueCertificateResponse {
                chain_der: issued.chain,
                expires_at: i64::try_from(issued.expires_at).unwrap_or(i64::MAX),
                trust_bundle_der: issued.bundle,
            }),
        }))
    }

    async fn get_jwks(&self, request: Request<pb::GetJwksRequest>) -> Reply<pb::Jwks> {
        let auth = self.gate.authorize(&request, Resource::Broker)?;
        Ok(Response::new(pb::Jwks {
            json: self.attestation()?.jwks(&auth).await?,
        }))
    }
}
