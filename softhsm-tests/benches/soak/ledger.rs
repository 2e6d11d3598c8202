//! The client-side ledger of the kill -9 harness: every operation the broker
//! acknowledged (a create that returned OK, a rotation that returned its new version, a
//! destruction that returned OK, a signature or a ciphertext returned), and what the
//! client saw with it (the public key of each version). Verification
//! (`benches/soak/verify.rs`) holds the broker to it after every restart.

use std::collections::{BTreeMap, BTreeSet};

/// What a key is for, and where it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// EC P-256 signing key on the SoftHSM2 token.
    HsmSign,
    /// AES-256 encryption key on the SoftHSM2 token.
    HsmAes,
    /// EC P-256 signing key in the swtpm.
    TpmSign,
    /// RSA-2048 encryption key in the swtpm.
    TpmRsa,
}

impl Kind {
    pub fn signs(self) -> bool {
        matches!(self, Kind::HsmSign | Kind::TpmSign)
    }

    pub fn backend(self) -> &'static str {
        match self {
            Kind::HsmSign | Kind::HsmAes => "softhsm",
            Kind::TpmSign | Kind::TpmRsa => "swtpm",
        }
    }
}

/// Where a key stands as far as the client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Live,
    /// Its destruction was acknowledged: it must never be usable again.
    Destroyed,
    /// A destruction was sent but not answered (the broker died): either outcome is fine.
    Uncertain,
}

/// One key the broker acknowledged creating.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub kind: Kind,
    pub standing: Standing,
    /// Every version acknowledged (by a create, a rotation, a signature or a ciphertext),
    /// with the SPKI the client first saw for it (signing keys).
    pub versions: BTreeMap<u32, Option<Vec<u8>>>,
    /// Which worker owns it (`None`: shared, never rotated or destroyed).
    pub owner: Option<usize>,
}

/// A signature the broker returned.
#[derive(Debug, Clone)]
pub struct Signed {
    pub key: String,
    pub version: u32,
    pub message: Vec<u8>,
    pub signature: Vec<u8>,
}

/// A ciphertext the broker returned, with its plaintext.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub key: String,
    pub version: u32,
    pub plaintext: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Acknowledged operations by kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub creates: u64,
    pub rotations: u64,
    pub destructions: u64,
    pub signs: u64,
    pub encrypts: u64,
    /// Calls refused while the broker was up (not a kill): reported, not a loss.
    pub refused: u64,
    /// Signature checks skipped: the version's public key was never seen (its answer was
    /// cut by a kill) and the key is now pending destruction, which shows none.
    pub unverifiable: u64,
}

/// Everything acknowledged, and every broken promise found so far.
#[derive(Debug, Default)]
pub struct Ledger {
    pub keys: BTreeMap<String, KeyEntry>,
    pub signed: Vec<Signed>,
    pub sealed: Vec<Sealed>,
    pub counts: Counts,
    /// Losses, each once (`"<kind>: <what>"`), however often they are seen.
    pub lost: BTreeSet<String>,
    /// Orphans, each once (`"<source>: <label or id>"`).
    pub orphans: BTreeSet<String>,
    /// The first few unexpected refusals, for the report.
    pub refusals: Vec<String>,
}

impl Ledger {
    pub fn created(&mut self, name: &str, kind: Kind, owner: Option<usize>) {
        self.counts.creates += 1;
        self.keys.insert(
            name.to_string(),
            KeyEntry {
                kind,
                standing: Standing::Live,
                versions: BTreeMap::from([(1, None)]),
                owner,
            },
        );
    }

    /// Notes that `version` of `name` exists (it was returned to the client).
    pub fn saw_version(&mut self, name: &str, version: u32) {
        if let Some(key) = self.keys.get_mut(name) {
            key.versions.entry(version).or_insert(None);
        }
    }

    /// Records the SPKI of a version the first time the client sees it.
    pub fn saw_public_key(&mut self, name: &str, version: u32, spki: Vec<u8>) {
        if let Some(key) = self.keys.get_mut(name) {
            let seen = key.versions.entry(version).or_insert(None);
            if seen.is_none() {
                *seen = Some(spki);
            }
        }
    }

    pub fn set_standing(&mut self, name: &str, standing: Standing) {
        if let Some(key) = self.keys.get_mut(name) {
            key.standing = standing;
        }
    }

    pub fn refused(&mut self, what: String) {
        self.counts.refused += 1;
        if self.refusals.len() < 10 {
            self.refusals.push(what);
        }
    }

    pub fn lose(&mut self, kind: &str, what: String) {
        if self.lost.insert(format!("{kind}: {what}")) {
            eprintln!("LOST {kind}: {what}");
        }
    }

    /// Losses by kind (the text before the first colon).
    pub fn lost_by_kind(&self) -> BTreeMap<String, usize> {
        let mut by_kind = BTreeMap::new();
        for entry in &self.lost {
            let kind = entry.split(':').next().unwrap_or_default().to_string();
            *by_kind.entry(kind).or_insert(0) += 1;
        }
        by_kind
    }

    /// Names of live keys of worker `owner` whose kind matches `want`.
    pub fn owned(&self, owner: usize, want: impl Fn(Kind) -> bool) -> Vec<String> {
        self.keys
            .iter()
            .filter(|(_, k)| k.owner == Some(owner) && k.standing == Standing::Live && want(k.kind))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Live shared keys whose kind matches `want`.
    pub fn shared(&self, want: impl Fn(Kind) -> bool) -> Vec<String> {
        self.keys
            .iter()
            .filter(|(_, k)| k.owner.is_none() && want(k.kind))
            .map(|(name, _)| name.clone())
            .collect()
    }
}
