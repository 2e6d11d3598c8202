//! One version of the attestation token-signing key: its label (version and creation
//! time), how it is found on a token and made in it (`token_keys.rs` keeps the ring).

use attest::token::{PublishedKey, TokenAlgorithm};
use hsm_backend::{
    EcCurve, HsmBackend, HsmError, KeyAlgorithm, KeyId, KeyInfo, KeyLabel, KeySpec, KeyUsage,
};
use sha2::Digest as _;

use super::token_keys::RotationSchedule;
use crate::error::{BrokerError, Result};

/// CKA_ID prefix of the token-signing keys (`…:<version>`); managed keys have random
/// 16-byte ids.
const ID_PREFIX: &str = "kbsys:attestation-token:";
/// CKA_LABEL prefix (`…v<version>:<created, Unix seconds>`).
const LABEL_PREFIX: &str = "kbsys:attestation-token:v";
/// One version of the token-signing key.
#[derive(Debug, Clone)]
pub(super) struct TokenKey {
    pub(super) version: u32,
    pub(super) id: KeyId,
    pub(super) kid: String,
    pub(super) spki: Vec<u8>,
    pub(super) created: u64,
}

pub(super) fn internal(e: HsmError) -> BrokerError {
    BrokerError::Internal(format!("attestation token key: {e}"))
}

/// `(version, created)` of a token-signing key's label; `created` is 0 for the first
/// version's label, which had no time (`kbsys:attestation-token:v1`).
pub(super) fn parse_label(label: &str) -> Option<(u32, u64)> {
    let rest = label.strip_prefix(LABEL_PREFIX)?;
    match rest.split_once(':') {
        Some((version, created)) => Some((version.parse().ok()?, created.parse().ok()?)),
        None => Some((rest.parse().ok()?, 0)),
    }
}

impl TokenKey {
    pub(super) fn from_info(info: &KeyInfo, hsm: &HsmBackend) -> Result<Option<TokenKey>> {
        let Some((version, created)) = parse_label(&info.label) else {
            return Ok(None);
        };
        if info.id.as_bytes() != format!("{ID_PREFIX}{version}").as_bytes() {
            return Ok(None);
        }
        if info.spec.algorithm() != KeyAlgorithm::Ec(EcCurve::P256)
            || info.spec.usage() != KeyUsage::SignVerify
        {
            return Err(BrokerError::FailedPrecondition(format!(
                "the token holds {:?}, which has a token-signing key's label but is not an EC \
                 P-256 signing key ({})",
                info.label,
                info.spec.algorithm()
            )));
        }
        let spki = hsm
            .public_key(&info.id)
            .map_err(internal)?
            .as_der()
            .to_vec();
        Ok(Some(TokenKey::new(version, info.id.clone(), spki, created)))
    }

    fn new(version: u32, id: KeyId, spki: Vec<u8>, created: u64) -> TokenKey {
        // The key id names the public key, so a new key gets a new id.
        let kid = format!(
            "kb-{}",
            hex::encode(sha2::Sha256::digest(&spki).get(..12).unwrap_or_default())
        );
        TokenKey {
            version,
            id,
            kid,
            spki,
            created,
        }
    }

    pub(super) fn generate(hsm: &HsmBackend, version: u32, created: u64) -> Result<TokenKey> {
        let id = KeyId::new(format!("{ID_PREFIX}{version}").into_bytes()).map_err(internal)?;
        let label =
            KeyLabel::new(format!("{LABEL_PREFIX}{version}:{created}")).map_err(internal)?;
        let spec = KeySpec::new(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify)
            .map_err(internal)?;
        hsm.generate_key(&id, &label, spec).map_err(internal)?;
        let spki = hsm.public_key(&id).map_err(internal)?.as_der().to_vec();
        Ok(TokenKey::new(version, id, spki, created))
    }

    /// Whether it is past its period at `now`.
    pub(super) fn due(&self, schedule: RotationSchedule, now: u64) -> bool {
        now.saturating_sub(self.created) >= schedule.period.as_secs()
    }

    pub(super) fn published(&self) -> PublishedKey<'_> {
        PublishedKey {
            key_id: &self.kid,
            algorithm: TokenAlgorithm::Es256,
            spki_der: &self.spki,
        }
    }
}

/// The versions a token holds: the current one, and the one it replaced with the end of
/// its overlap if that is after `now` (blocking). The first version is generated if there
/// is none, and the next one if the current one is past its period; versions past their
/// overlap are destroyed. `candidates` are the ids of the objects labelled as token keys
/// in a listing already made; `None` lists the token.
///
/// # Errors
/// The token refuses, or holds an object with a token-signing key's label that is not one.
pub(super) fn choose_versions(
    token: &HsmBackend,
    candidates: Option<Vec<KeyId>>,
    schedule: RotationSchedule,
    now: u64,
) -> Result<(TokenKey, Option<(TokenKey, u64)>)> {
    let candidates = match candidates {
        Some(ids) => ids,
        None => token
            .list_labels()
            .map_err(internal)?
            .into_iter()
            .filter(|(_, label)| parse_label(label).is_some())
            .map(|(id, _)| id)
            .collect(),
    };
    let mut found = Vec::new();
    for id in candidates {
        // Gone since the listing, or half-written by a kill during generation.
        let Ok(info) = token.describe_key(&id) else {
            continue;
        };
        found.extend(TokenKey::from_info(&info, token)?);
    }
    found.sort_by_key(|k| k.version);
    let mut current = match found.pop() {
        Some(key) => key,
        None => TokenKey::generate(token, 1, now)?,
    };
    let mut previous = found.pop();
    if current.due(schedule, now) {
        let next = TokenKey::generate(token, current.version.saturating_add(1), now)?;
        found.extend(previous.replace(std::mem::replace(&mut current, next)));
    }
    // A replaced key verifies until `overlap` after its successor was made.
    let previous = previous.and_then(|key| {
        let until = current.created.saturating_add(schedule.overlap.as_secs());
        if now < until {
            Some((key, until))
        } else {
            found.push(key);
            None
        }
    });
    for stale in &found {
        match token.destroy_key(&stale.id) {
            Ok(()) => tracing::info!(version = stale.version, kid = %stale.kid,
                "retired attestation token key destroyed"),
            Err(e) => tracing::warn!(version = stale.version, error = %e,
                "a retired attestation token key could not be destroyed"),
        }
    }
    Ok((current, previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_carry_the_version_and_creation_time() {
        assert_eq!(
            parse_label("kbsys:attestation-token:v3:1764338400"),
            Some((3, 1_764_338_400))
        );
        assert_eq!(parse_label("kbsys:attestation-token:v1"), Some((1, 0)));
        for other in [
            "kb:payments:v1",
            "kbsys:attestation-token:vx",
            "kbsys:attestation-token:v2:soon",
            "kbsys:attestation-token:",
        ] {
            assert_eq!(parse_label(other), None, "{other}");
        }
    }
}
