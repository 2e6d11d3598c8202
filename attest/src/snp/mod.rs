//! AMD SEV-SNP: verify a report's signature chain and binding.
//!
//! 1. The report is 1184 bytes, of a version shipping firmware produces (2 to 5).
//! 2. The VEK comes with the evidence (from the extended report's certificate table) or
//!    from a local certificate cache, chosen by the report's chip id and reported TCB.
//! 3. VCEK: ARK → ASK → VCEK with AMD's built-in roots for Milan, Genoa or Turin. VLEK:
//!    ARK → ASVK → VLEK with ASVK roots the operator configures. Every certificate must be
//!    valid at the verifier's clock.
//! 4. The report's ECDSA P-384 signature verifies with the VEK, over the raw signed bytes
//!    (the `sev` crate verifies a re-encoding of what it parsed, which misses bits in fields
//!    its parser skips), and the unsigned remainder (signature padding, reserved tail) is
//!    zero as the specification requires: no bit of the report can change unnoticed.
//! 5. The VEK's hardware id and TCB extensions equal the report's chip id and reported TCB.
//! 6. `REPORT_DATA` equals the expected binding ([`crate::binding::snp_report_data`]).
//!
//! Verified chains are cached by the VEK's digest, so a known VEK costs one signature check.

mod appraise;
mod certs;
mod report;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use der::Decode;
use sev::certs::snp::{Certificate, Chain, Verifiable, builtin, ca};
use sev::firmware::guest::AttestationReport;
use sha2::{Digest, Sha256};

pub use appraise::appraise;
pub use certs::CertTcb;
pub use report::parse_report;

use report::{check_vek_matches, verify_signature};

use crate::binding::constant_time_eq;
use crate::clock::Clock;
use crate::error::{AttestError, Result};

/// Length of an SNP attestation report.
pub const REPORT_LEN: usize = 1184;
const MAX_CACHED_CHAINS: usize = 4096;

/// AMD EPYC generations with SEV-SNP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Generation {
    /// 3rd generation (Milan).
    Milan,
    /// 4th generation (Genoa).
    Genoa,
    /// 5th generation (Turin).
    Turin,
}

/// Which endorsement key signed a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signer {
    /// Versioned chip endorsement key (per chip and TCB).
    Vcek,
    /// Versioned loaded endorsement key (per cloud provider and TCB).
    Vlek,
}

/// SNP evidence as a workload sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpEvidence {
    /// The raw 1184-byte report.
    pub report: Vec<u8>,
    /// The VCEK or VLEK certificate (DER), from the extended report; optional when the
    /// verifier's certificate cache holds it.
    pub vek_der: Option<Vec<u8>>,
}

/// A report whose signature, chain, TCB and binding verified.
#[derive(Debug, Clone)]
pub struct VerifiedReport {
    /// The parsed report.
    pub report: AttestationReport,
    /// The generation whose roots verified the chain.
    pub generation: Generation,
    /// VCEK or VLEK.
    pub signer: Signer,
}

struct Root {
    generation: Generation,
    chain: ca::Chain,
    x509: [x509_cert::Certificate; 2],
}

struct CachedVek {
    der: Vec<u8>,
    info: certs::VekInfo,
}

/// Verifies SNP reports. Build once and share: it caches verified chains.
pub struct SnpVerifier {
    clock: Arc<dyn Clock>,
    vcek_roots: Vec<Root>,
    vlek_roots: Vec<Root>,
    cache: Vec<CachedVek>,
    verified: Mutex<HashMap<[u8; 32], Generation>>,
}

impl std::fmt::Debug for SnpVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnpVerifier")
            .field("vlek_roots", &self.vlek_roots.len())
            .field("cached_veks", &self.cache.len())
            .finish_non_exhaustive()
    }
}

fn chain_error(what: &str) -> impl Fn(std::io::Error) -> AttestError + '_ {
    move |e| AttestError::Chain(format!("{what}: {e}"))
}

fn root(generation: Generation, ark_pem: &[u8], ask_pem: &[u8]) -> Result<Root> {
    let parse = |pem: &[u8], what| -> Result<(Certificate, x509_cert::Certificate)> {
        let cert = Certificate::from_pem(pem).map_err(chain_error(what))?;
        let der = cert.to_der().map_err(chain_error(what))?;
        let x509 = x509_cert::Certificate::from_der(&der)
            .map_err(|e| AttestError::Chain(format!("{what}: {e}")))?;
        Ok((cert, x509))
    };
    let (ark, ark_x509) = parse(ark_pem, "ARK")?;
    let (ask, ask_x509) = parse(ask_pem, "ASK")?;
    Ok(Root {
        generation,
        chain: ca::Chain { ark, ask },
        x509: [ark_x509, ask_x509],
    })
}

impl SnpVerifier {
    /// A verifier with AMD's built-in ARK/ASK for Milan, Genoa and Turin.
    ///
    /// # Errors
    /// Only if the built-in certificates fail to parse.
    pub fn new(clock: Arc<dyn Clock>) -> Result<SnpVerifier> {
        Ok(SnpVerifier {
            clock,
            vcek_roots: vec![
                root(Generation::Milan, builtin::milan::ARK, builtin::milan::ASK)?,
                root(Generation::Genoa, builtin::genoa::ARK, builtin::genoa::ASK)?,
                root(Generation::Turin, builtin::turin::ARK, builtin::turin::ASK)?,
            ],
            vlek_roots: Vec::new(),
            cache: Vec::new(),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Trusts an ARK and ASVK pair (PEM) for VLEK-signed reports of one generation. The
    /// ARK must be the built-in one of that generation.
    ///
    /// # Errors
    /// Malformed PEM, an ARK that is not AMD's, or an ASVK the ARK did not sign.
    pub fn with_vlek_root(
        mut self,
        generation: Generation,
        ark_pem: &[u8],
        asvk_pem: &[u8],
    ) -> Result<SnpVerifier> {
        let trusted = self
            .vcek_roots
            .iter()
            .find(|r| r.generation == generation)
            .ok_or_else(|| AttestError::Chain("no built-in ARK for that generation".into()))?;
        let candidate = root(generation, ark_pem, asvk_pem)?;
        if candidate.x509[0] != trusted.x509[0] {
            return Err(AttestError::Chain(
                "the ARK is not AMD's built-in ARK for that generation".into(),
            ));
        }
        (&candidate.chain)
            .verify()
            .map_err(chain_error("the ARK does not sign the ASVK"))?;
        self.vlek_roots.push(candidate);
        Ok(self)
    }

    /// Loads every `.der` and `.pem` VCEK/VLEK certificate in a directory, so evidence
    /// may come without one.
    ///
    /// # Errors
    /// An unreadable directory, or a file that is not a VEK certificate (named).
    pub fn with_certificate_cache(mut self, dir: &Path) -> Result<SnpVerifier> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| AttestError::Chain(format!("certificate cache {}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let der = match path.extension().and_then(|e| e.to_str()) {
                Some("der") => std::fs::read(&path).ok(),
                Some("pem") => std::fs::read(&path)
                    .ok()
                    .and_then(|pem| Certificate::from_pem(&pem).ok())
                    .and_then(|c| c.to_der().ok()),
                _ => continue,
            }
            .ok_or_else(|| AttestError::Chain(format!("{}: not a certificate", path.display())))?;
            let x509 = x509_cert::Certificate::from_der(&der)
                .map_err(|e| AttestError::Chain(format!("{}: {e}", path.display())))?;
            let info = certs::vek_info(&x509)
                .map_err(|e| AttestError::Chain(format!("{}: {e}", path.display())))?;
            self.cache.push(CachedVek { der, info });
        }
        Ok(self)
    }

    /// Verifies a report and its binding to `expected_report_data`.
    ///
    /// # Errors
    /// [`AttestError::Malformed`], [`AttestError::UnsupportedVersion`],
    /// [`AttestError::Chain`], [`AttestError::Signature`],
    /// [`AttestError::CertificateMismatch`], [`AttestError::BindingMismatch`].
    pub fn verify(
        &self,
        evidence: &SnpEvidence,
        expected_report_data: &[u8; 64],
    ) -> Result<VerifiedReport> {
        let report = parse_report(&evidence.report)?;
        let signer = match report.key_info.signing_key() {
            0 => Signer::Vcek,
            1 => Signer::Vlek,
            other => {
                return Err(AttestError::Signature(format!(
                    "the report is not signed (signing key {other})"
                )));
            }
        };
        let vek_der = match &evidence.vek_der {
            Some(der) => der.as_slice(),
            None => self.cached_vek(&report)?,
        };
        let vek = Certificate::from_der(vek_der).map_err(chain_error("VEK"))?;
        let vek_x509 = x509_cert::Certificate::from_der(vek_der)
            .map_err(|e| AttestError::Chain(format!("VEK: {e}")))?;
        let generation = self.chain_generation(vek_der, &vek, signer)?;
        verify_signature(&evidence.report, vek.public_key_sec1())?;
        check_vek_matches(&report, &certs::vek_info(&vek_x509)?, signer)?;
        self.check_times(generation, signer, &vek_x509)?;
        if !constant_time_eq(&report.report_data, expected_report_data) {
            return Err(AttestError::BindingMismatch);
        }
        Ok(VerifiedReport {
            report,
            generation,
            signer,
        })
    }

    fn roots(&self, signer: Signer) -> &[Root] {
        match signer {
            Signer::Vcek => &self.vcek_roots,
            Signer::Vlek => &self.vlek_roots,
        }
    }

    /// The generation whose roots sign this VEK (cached by the VEK's digest).
    fn chain_generation(
        &self,
        vek_der: &[u8],
        vek: &Certificate,
        signer: Signer,
    ) -> Result<Generation> {
        let key: [u8; 32] = Sha256::digest(vek_der).into();
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(generation) = verified.get(&key) {
            return Ok(*generation);
        }
        let generation = self
            .roots(signer)
            .iter()
            .find(|root| {
                let chain = Chain {
                    ca: root.chain.clone(),
                    vek: vek.clone(),
                };
                (&chain).verify().is_ok()
            })
            .map(|root| root.generation)
            .ok_or_else(|| {
                AttestError::Chain(match signer {
                    Signer::Vcek => {
                        "the VCEK is not signed by AMD's Milan, Genoa or Turin ASK".into()
                    }
                    Signer::Vlek => "the VLEK is not signed by a configured ASVK".into(),
                })
            })?;
        if verified.len() >= MAX_CACHED_CHAINS {
            verified.clear();
        }
        verified.insert(key, generation);
        Ok(generation)
    }

    fn check_times(
        &self,
        generation: Generation,
        signer: Signer,
        vek: &x509_cert::Certificate,
    ) -> Result<()> {
        let now = self.clock.now();
        if let Some(root) = self
            .roots(signer)
            .iter()
            .find(|r| r.generation == generation)
        {
            certs::check_validity(&root.x509[0], "ARK", now)?;
            certs::check_validity(&root.x509[1], "ASK", now)?;
        }
        certs::check_validity(vek, "VEK", now)
    }

    fn cached_vek(&self, report: &AttestationReport) -> Result<&[u8]> {
        self.cache
            .iter()
            .find(|c| check_vek_matches(report, &c.info, Signer::Vcek).is_ok() && c.info.hwid.is_some())
            .map(|c| c.der.as_slice())
            .ok_or_else(|| {
                AttestError::Chain(format!(
                    "no VEK for chip {}… at this TCB: send it with the evidence or add it to the certificate cache",
                    hex::encode(&report.chip_id[..8])
                ))
            })
    }
}
