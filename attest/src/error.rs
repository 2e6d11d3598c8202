//! Why evidence was refused. Each refusal is precise enough for an operator to act on;
//! the broker decides how much of it a caller sees.

/// Everything that can go wrong while verifying or appraising evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The evidence cannot be parsed (truncated, wrong length, bad encoding).
    #[error("malformed evidence: {0}")]
    Malformed(String),
    /// The report version is not one this verifier accepts.
    #[error("report version {0} is not supported")]
    UnsupportedVersion(u32),
    /// A certificate is missing, does not chain to a trusted root, or is outside its validity.
    #[error("certificate chain rejected: {0}")]
    Chain(String),
    /// The evidence's signature does not verify with the endorsement key.
    #[error("signature invalid: {0}")]
    Signature(String),
    /// The certificate does not belong to the chip or TCB the report claims.
    #[error("certificate does not match the report: {0}")]
    CertificateMismatch(String),
    /// The TPM quote names an attestation key that the appraisal policy does not enrol
    /// (named by [`crate::policy::ak_fingerprint`]). Anyone can sign a "quote" with a key
    /// of their own, so only an enrolled AK makes one evidence.
    #[error("the TPM attestation key {0} is not enrolled in the appraisal policy")]
    UntrustedAttestationKey(String),
    /// The evidence does not commit to this challenge and this session key.
    #[error("evidence is not bound to the challenge and key")]
    BindingMismatch,
    /// The challenge nonce is unknown.
    #[error("unknown challenge")]
    UnknownChallenge,
    /// The challenge nonce expired.
    #[error("challenge expired")]
    ExpiredChallenge,
    /// The challenge nonce was already used.
    #[error("challenge already used")]
    ReplayedChallenge,
    /// The challenge was issued to another identity.
    #[error("the challenge was issued to another identity")]
    ForeignChallenge,
    /// Too many challenges are outstanding.
    #[error("too many outstanding challenges")]
    ChallengeStoreFull,
    /// This identity already has this many challenges outstanding.
    #[error("this identity already has {0} challenges outstanding; use or let them expire")]
    ChallengeQuotaExceeded(usize),
    /// The evidence verified but its claims fail the appraisal policy.
    #[error("appraisal refused: {0}")]
    Refused(Refusal),
    /// The policy file is invalid; the message names the field.
    #[error("invalid policy: {0}")]
    Policy(String),
}

/// A claim that fails the appraisal policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The launch measurement is not in the allow-list.
    #[error("measurement {0} is not in the allow-list")]
    Measurement(String),
    /// A TCB component is below the policy's minimum.
    #[error("{component} SVN {reported} is below the minimum {minimum}")]
    TcbTooLow {
        /// `bootloader`, `tee`, `snp`, `microcode` or `fmc`.
        component: &'static str,
        /// The reported SVN.
        reported: u8,
        /// The policy's minimum.
        minimum: u8,
    },
    /// The guest policy allows debugging.
    #[error("the guest allows debugging")]
    DebugAllowed,
    /// The guest policy allows a migration agent.
    #[error("the guest allows a migration agent")]
    MigrationAgentAllowed,
    /// The guest policy allows SMT and the appraisal policy does not.
    #[error("the guest allows SMT")]
    SmtAllowed,
    /// VMPL differs from the required one.
    #[error("VMPL {reported} is not the required {required}")]
    Vmpl {
        /// The report's VMPL.
        reported: u32,
        /// The policy's VMPL.
        required: u32,
    },
    /// HOST_DATA differs.
    #[error("host data does not match")]
    HostData,
    /// The ID key digest is not an allowed one.
    #[error("ID key digest is not allowed")]
    IdKeyDigest,
    /// The author key digest is not an allowed one.
    #[error("author key digest is not allowed")]
    AuthorKeyDigest,
    /// A PCR holds a value that is not a reference value.
    #[error("PCR {0} does not hold a reference value")]
    Pcr(u8),
    /// Insecure development evidence, and the policy does not allow it.
    #[error("insecure development evidence is not allowed by the policy")]
    InsecureEvidence,
    /// The policy has no section for this kind of evidence.
    #[error("the policy does not accept {0} evidence")]
    EvidenceKind(&'static str),
}

impl From<Refusal> for AttestError {
    fn from(r: Refusal) -> Self {
        AttestError::Refused(r)
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = AttestError> = std::result::Result<T, E>;
