//! Appraising a verified SNP report against the policy's reference values.

use crate::claims::{Claims, TcbClaims, TeeKind};
use crate::error::{AttestError, Refusal, Result};
use crate::policy::SnpPolicy;

use super::{Generation, Signer, VerifiedReport};

fn at_least(component: &'static str, reported: u8, minimum: u8) -> Result<()> {
    if reported < minimum {
        return Err(Refusal::TcbTooLow {
            component,
            reported,
            minimum,
        }
        .into());
    }
    Ok(())
}

fn allowed<const N: usize>(list: &[[u8; N]], value: &[u8; N], refusal: Refusal) -> Result<()> {
    if list.is_empty() || list.contains(value) {
        Ok(())
    } else {
        Err(refusal.into())
    }
}

/// Checks a verified report against the policy and returns its claims.
///
/// # Errors
/// [`AttestError::UnsupportedVersion`] or [`AttestError::Refused`] naming the first rule
/// that fails.
pub fn appraise(verified: &VerifiedReport, policy: &SnpPolicy) -> Result<Claims> {
    let r = &verified.report;
    if !policy.report_versions.contains(&r.version) {
        return Err(AttestError::UnsupportedVersion(r.version));
    }
    if !policy.allowed_measurements.contains(&r.measurement) {
        return Err(Refusal::Measurement(hex::encode(r.measurement)).into());
    }
    if r.policy.debug_allowed() && !policy.allow_debug {
        return Err(Refusal::DebugAllowed.into());
    }
    if r.policy.migrate_ma_allowed() && !policy.allow_migration_agent {
        return Err(Refusal::MigrationAgentAllowed.into());
    }
    if r.policy.smt_allowed() && !policy.allow_smt {
        return Err(Refusal::SmtAllowed.into());
    }
    if let Some(required) = policy.vmpl {
        if r.vmpl != required {
            return Err(Refusal::Vmpl {
                reported: r.vmpl,
                required,
            }
            .into());
        }
    }
    if policy.host_data.is_some_and(|h| h != r.host_data) {
        return Err(Refusal::HostData.into());
    }
    allowed(
        &policy.id_key_digests,
        &r.id_key_digest,
        Refusal::IdKeyDigest,
    )?;
    allowed(
        &policy.author_key_digests,
        &r.author_key_digest,
        Refusal::AuthorKeyDigest,
    )?;
    let t = &r.reported_tcb;
    let m = &policy.min_tcb;
    at_least("bootloader", t.bootloader, m.bootloader)?;
    at_least("tee", t.tee, m.tee)?;
    at_least("snp", t.snp, m.snp)?;
    at_least("microcode", t.microcode, m.microcode)?;
    if let Some(fmc) = t.fmc {
        at_least("fmc", fmc, m.fmc)?;
    }
    let generation = match verified.generation {
        Generation::Milan => "milan",
        Generation::Genoa => "genoa",
        Generation::Turin => "turin",
    };
    let signer = match verified.signer {
        Signer::Vcek => "vcek",
        Signer::Vlek => "vlek",
    };
    Ok(Claims {
        tee: TeeKind::SevSnp,
        insecure: false,
        measurement: Some(hex::encode(r.measurement)),
        tcb: Some(TcbClaims {
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
            fmc: t.fmc,
        }),
        debug: Some(r.policy.debug_allowed()),
        vmpl: Some(r.vmpl),
        platform: Some(format!("{generation}/{signer}")),
        attestation_key: None,
        pcrs: Default::default(),
    })
}
