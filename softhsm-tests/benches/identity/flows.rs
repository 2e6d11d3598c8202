//! What the identity benchmark's callers repeat: the workload's whole flow (challenge,
//! ephemeral key, CSR, development evidence, `Attest` with the CSR; or `Attest` then
//! `IssueCertificate`), timed step by step; `IssueCertificate` alone with one token and
//! CSR; and `Attest` with a real SEV-SNP report, which the broker refuses on its binding
//! after checking its chain and signature.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use attest::binding::bound_keys;
use attest::challenge::Nonce;
use attest::release::KemKeyPair;
use enclave::evidence::{DevEvidence, EvidenceSource};
use enclave::key::EphemeralKey;
use keybroker_api::v1 as pb;
use pb::attestation_service_client::AttestationServiceClient;
use pb::identity_service_client::IdentityServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{TRUST_DOMAIN, TRUSTED_MEASUREMENT, with_token};
use crate::measure::callers::Call;

/// The lifetime asked for each certificate.
const TTL_SECONDS: u32 = 300;

/// The steps of one issuance, in order, as [`Steps`] reports them.
pub const STEPS: [&str; 5] = ["GetChallenge", "key", "CSR", "Attest", "IssueCertificate"];

/// How a workload gets its certificate.
#[derive(Debug, Clone, Copy)]
pub enum Flow {
    /// `Attest` with the CSR: the token and the certificate in one call (the agent's way).
    OneCall,
    /// `Attest`, then `IssueCertificate` presenting the token.
    TwoCalls,
}

impl Flow {
    pub fn name(self) -> &'static str {
        match self {
            Flow::OneCall => "issuance, Attest+CSR",
            Flow::TwoCalls => "issuance, Attest, Issue",
        }
    }
}

/// Wall time per step, summed over every issuance of a row (its warm-up included).
#[derive(Default)]
pub struct Steps {
    nanos: [AtomicU64; STEPS.len()],
    flows: AtomicU64,
}

impl Steps {
    /// Mean wall time of each step of [`STEPS`], in µs.
    pub fn mean_us(&self) -> [f64; STEPS.len()] {
        let flows = self.flows.load(Ordering::Relaxed).max(1) as f64;
        self.nanos
            .each_ref()
            .map(|n| n.load(Ordering::Relaxed) as f64 / flows / 1e3)
    }
}

/// The `workload` identity's clients on one bootstrap mTLS connection.
pub struct Workload {
    attestation: AttestationServiceClient<Channel>,
    identity: IdentityServiceClient<Channel>,
    evidence: DevEvidence,
    spiffe_id: String,
}

impl Workload {
    pub fn new(channel: Channel) -> Workload {
        Workload {
            attestation: AttestationServiceClient::new(channel.clone()),
            identity: IdentityServiceClient::new(channel),
            evidence: DevEvidence::new(TRUSTED_MEASUREMENT).unwrap(),
            spiffe_id: format!("spiffe://{TRUST_DOMAIN}/workload"),
        }
    }

    async fn challenge(&mut self) -> Nonce {
        let challenge = self
            .attestation
            .get_challenge(pb::GetChallengeRequest {})
            .await
            .unwrap()
            .into_inner();
        Nonce::from_slice(&challenge.nonce).unwrap()
    }

    /// `Attest` with development evidence binding `nonce`, `key` and a fresh KEM key (as
    /// the agent does), and `csr_der` if not empty: the token, and the certificate chain if
    /// one was asked for.
    async fn attest(
        &mut self,
        nonce: &Nonce,
        key: &EphemeralKey,
        csr_der: Vec<u8>,
    ) -> (String, Option<pb::IssueCertificateResponse>) {
        let kem = KemKeyPair::generate().public();
        let bound = bound_keys(key.spki_der(), Some(&kem));
        let evidence = self.evidence.collect(nonce, &bound).unwrap();
        let request = pb::AttestRequest {
            nonce: nonce.as_bytes().to_vec(),
            ephemeral_public_key: key.spki_der().to_vec(),
            evidence: Some(evidence),
            csr_der,
            certificate_ttl_seconds: TTL_SECONDS,
            kem_public_key: kem.as_bytes().to_vec(),
        };
        let answer = self.attestation.attest(request).await.unwrap().into_inner();
        (answer.token, answer.certificate)
    }

    async fn issue(&mut self, csr_der: Vec<u8>, token: &str) {
        let request = pb::IssueCertificateRequest {
            csr_der,
            ttl_seconds: TTL_SECONDS,
        };
        let issued = self
            .identity
            .issue_certificate(with_token(request, token))
            .await
            .unwrap()
            .into_inner();
        assert!(!issued.chain_der.is_empty());
    }

    /// A fresh key, attested: its token and a CSR signed by it.
    pub async fn attested_csr(&mut self) -> (String, Vec<u8>) {
        let nonce = self.challenge().await;
        let key = EphemeralKey::generate().unwrap();
        let (token, _) = self.attest(&nonce, &key, Vec::new()).await;
        (token, key.csr_der(&self.spiffe_id).unwrap())
    }
}

/// One attested issuance per call, the client's work included, timed into `steps`.
pub struct IssuanceCall {
    workload: Workload,
    flow: Flow,
    steps: Arc<Steps>,
}

impl IssuanceCall {
    pub fn new(channel: Channel, flow: Flow, steps: Arc<Steps>) -> IssuanceCall {
        IssuanceCall {
            workload: Workload::new(channel),
            flow,
            steps,
        }
    }
}

impl Call for IssuanceCall {
    async fn call(&mut self) -> u64 {
        let mut marks = [Instant::now(); STEPS.len() + 1];
        let nonce = self.workload.challenge().await;
        marks[1] = Instant::now();
        let key = EphemeralKey::generate().unwrap();
        marks[2] = Instant::now();
        let csr = key.csr_der(&self.workload.spiffe_id).unwrap();
        marks[3] = Instant::now();
        match self.flow {
            Flow::OneCall => {
                let (_, issued) = self.workload.attest(&nonce, &key, csr).await;
                assert!(!issued.unwrap().chain_der.is_empty());
                marks[4] = Instant::now();
            }
            Flow::TwoCalls => {
                let (token, _) = self.workload.attest(&nonce, &key, Vec::new()).await;
                marks[4] = Instant::now();
                self.workload.issue(csr, &token).await;
            }
        }
        marks[5] = Instant::now();
        for (step, pair) in self.steps.nanos.iter().zip(marks.windows(2)) {
            let nanos = u64::try_from((pair[1] - pair[0]).as_nanos()).unwrap_or(u64::MAX);
            step.fetch_add(nanos, Ordering::Relaxed);
        }
        self.steps.flows.fetch_add(1, Ordering::Relaxed);
        1
    }
}

/// `IssueCertificate` alone: the same token and CSR every call (the CSR's key is the one
/// the token is bound to); each call is a new certificate signed in the HSM.
pub struct IssueCall {
    workload: Workload,
    token: String,
    csr_der: Vec<u8>,
}

impl IssueCall {
    pub fn new(channel: Channel, token: String, csr_der: Vec<u8>) -> IssueCall {
        IssueCall {
            workload: Workload::new(channel),
            token,
            csr_der,
        }
    }
}

impl Call for IssueCall {
    async fn call(&mut self) -> u64 {
        self.workload.issue(self.csr_der.clone(), &self.token).await;
        1
    }
}

/// `GetChallenge`, then `Attest` with a real SEV-SNP report made for another challenge:
/// refused as "not bound", the last check, after the VCEK chain, the report's signature,
/// the VCEK's chip id and TCB, and the certificates' validity passed.
pub struct SnpCall {
    attestation: AttestationServiceClient<Channel>,
    spki: Vec<u8>,
    report: Vec<u8>,
    /// The VCEK sent with the evidence; empty: the broker takes it from its certificate cache.
    vek_der: Vec<u8>,
}

impl SnpCall {
    pub fn new(channel: Channel, spki: Vec<u8>, report: Vec<u8>, vek_der: Vec<u8>) -> SnpCall {
        SnpCall {
            attestation: AttestationServiceClient::new(channel),
            spki,
            report,
            vek_der,
        }
    }
}

impl Call for SnpCall {
    async fn call(&mut self) -> u64 {
        let challenge = self
            .attestation
            .get_challenge(pb::GetChallengeRequest {})
            .await
            .unwrap()
            .into_inner();
        let request = pb::AttestRequest {
            nonce: challenge.nonce,
            ephemeral_public_key: self.spki.clone(),
            evidence: Some(pb::attest_request::Evidence::Snp(pb::SnpEvidence {
                report: self.report.clone(),
                vek_der: self.vek_der.clone(),
            })),
            ..Default::default()
        };
        let refused = self.attestation.attest(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains("not bound"), "{refused:?}");
        1
    }
}
