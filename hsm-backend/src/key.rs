//! Names and kinds of keys: what the backend creates and how it finds them again.

use std::fmt;

use crate::error::{HsmError, Result};

/// A key's stable `CKA_ID`: how the backend finds it after a restart or a re-opened
/// session. Public and private halves share it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Vec<u8>);

impl KeyId {
    /// Longest id accepted.
    pub const MAX_LEN: usize = 64;

    /// Wraps id bytes.
    ///
    /// # Errors
    /// Empty ids and ids over [`KeyId::MAX_LEN`] bytes are refused.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<KeyId> {
        let bytes = bytes.into();
        if bytes.is_empty() || bytes.len() > Self::MAX_LEN {
            return Err(HsmError::InvalidInput(format!(
                "a key id has 1 to {} bytes, not {}",
                Self::MAX_LEN,
                bytes.len()
            )));
        }
        Ok(KeyId(bytes))
    }

    /// Parses a hex id.
    ///
    /// # Errors
    /// Not hex, or of the wrong length.
    pub fn from_hex(hex: &str) -> Result<KeyId> {
        let bad = || HsmError::InvalidInput(format!("{hex:?} is not a hex key id"));
        if hex.len() % 2 != 0 {
            return Err(bad());
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)?;
        KeyId::new(bytes)
    }

    /// The raw `CKA_ID` bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A key's `CKA_LABEL`: a human-readable name, not necessarily unique.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyLabel(String);

impl KeyLabel {
    /// Longest label accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates a label: 1 to 128 bytes of printable text.
    ///
    /// # Errors
    /// Empty, too long, or with control characters.
    pub fn new(label: impl Into<String>) -> Result<KeyLabel> {
        let label = label.into();
        if label.is_empty() || label.len() > Self::MAX_LEN || label.chars().any(char::is_control) {
            return Err(HsmError::InvalidInput(format!(
                "a key label has 1 to {} printable bytes",
                Self::MAX_LEN
            )));
        }
        Ok(KeyLabel(label))
    }

    /// The label text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Elliptic curves the backend generates keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
}

impl EcCurve {
    /// Byte length of one coordinate or scalar.
    pub fn field_len(self) -> usize {
        match self {
            EcCurve::P256 => 32,
            EcCurve::P384 => 48,
        }
    }
}

/// A key's algorithm and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA key pair.
    Ec(EcCurve),
    /// RSA key pair with this modulus size in bits (2048, 3072 or 4096).
    Rsa(u32),
    /// AES-256 secret key.
    Aes256,
    /// 256-bit generic secret for HMAC-SHA256.
    HmacSha256,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::Ec(EcCurve::P256) => f.write_str("EC P-256"),
            KeyAlgorithm::Ec(EcCurve::P384) => f.write_str("EC P-384"),
            KeyAlgorithm::Rsa(bits) => write!(f, "RSA-{bits}"),
            KeyAlgorithm::Aes256 => f.write_str("AES-256"),
            KeyAlgorithm::HmacSha256 => f.write_str("HMAC-SHA256"),
        }
    }
}

/// What a key may be used for. A key has exactly one usage, enforced by the token's
/// `CKA_SIGN` / `CKA_DECRYPT` / `CKA_WRAP` attributes, not only by this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyUsage {
    /// Sign and verify (EC, RSA).
    SignVerify,
    /// Encrypt and decrypt (RSA-OAEP, AES-GCM).
    EncryptDecrypt,
    /// Wrap and unwrap data keys (AES key wrap with padding).
    WrapUnwrap,
    /// Compute and verify MACs (HMAC).
    Mac,
}

/// Whether a key may ever leave the token, fixed when the key is generated.
///
/// The token enforces it: `CKA_EXTRACTABLE` can only go from true to false, every key is
/// made with `CKA_MODIFIABLE` false, and the token refuses to turn `CKA_WRAP_WITH_TRUSTED`
/// off (`CKR_ATTRIBUTE_READ_ONLY`), so a class can never be changed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyClass {
    /// Generated non-extractable: it can never leave the token, not even wrapped.
    #[default]
    Standard,
    /// An AES-256 key generated sensitive, extractable and `CKA_WRAP_WITH_TRUSTED`: the
    /// token wraps it only under keys the security officer marked `CKA_TRUSTED`, which is
    /// how [`crate::HsmBackend::release_key`] hands it to a workload, wrapped to the
    /// workload's public key, without its plaintext ever being in this process.
    Releasable,
}

/// A valid pairing of algorithm and usage, and the key's [`KeyClass`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeySpec {
    algorithm: KeyAlgorithm,
    usage: KeyUsage,
    class: KeyClass,
}

impl KeySpec {
    /// Checks that the usage fits the algorithm and that RSA has a supported size. The key
    /// is [`KeyClass::Standard`]: it never leaves the token.
    ///
    /// # Errors
    /// [`HsmError::InvalidInput`] for an RSA size other than 2048, 3072 or 4096, or a
    /// usage the algorithm cannot serve.
    pub fn new(algorithm: KeyAlgorithm, usage: KeyUsage) -> Result<KeySpec> {
        use KeyAlgorithm as A;
        use KeyUsage as U;
        if let A::Rsa(bits) = algorithm {
            if ![2048, 3072, 4096].contains(&bits) {
                return Err(HsmError::InvalidInput(format!(
                    "RSA keys are 2048, 3072 or 4096 bits, not {bits}"
                )));
            }
        }
        let fits = matches!(
            (algorithm, usage),
            (A::Ec(_), U::SignVerify)
                | (A::Rsa(_), U::SignVerify | U::EncryptDecrypt)
                | (A::Aes256, U::EncryptDecrypt | U::WrapUnwrap)
                | (A::HmacSha256, U::Mac)
        );
        if !fits {
            return Err(HsmError::InvalidInput(format!(
                "{algorithm} keys cannot be used for {usage:?}"
            )));
        }
        Ok(KeySpec {
            algorithm,
            usage,
            class: KeyClass::Standard,
        })
    }

    /// A [`KeyClass::Releasable`] key: only AES-256 keys for encryption are.
    ///
    /// # Errors
    /// [`HsmError::InvalidInput`] for any other algorithm or usage.
    pub fn releasable(algorithm: KeyAlgorithm, usage: KeyUsage) -> Result<KeySpec> {
        if (algorithm, usage) != (KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt) {
            return Err(HsmError::InvalidInput(format!(
                "only AES-256 encryption keys can be releasable, not {algorithm} keys for \
                 {usage:?}"
            )));
        }
        let mut spec = KeySpec::new(algorithm, usage)?;
        spec.class = KeyClass::Releasable;
        Ok(spec)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The usage.
    pub fn usage(&self) -> KeyUsage {
        self.usage
    }

    /// Whether the key may leave the token.
    pub fn class(&self) -> KeyClass {
        self.class
    }
}

/// How a key is protected on the token, as the token reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyProtection {
    /// `CKA_TOKEN`: persistent on the token.
    pub token: bool,
    /// `CKA_PRIVATE`: usable only after login.
    pub private: bool,
    /// `CKA_SENSITIVE`: the value cannot be read in plaintext.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`: the value can be wrapped out.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: it has always been sensitive.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`: it has never been extractable.
    pub never_extractable: bool,
    /// `CKA_LOCAL`: generated inside the token, not imported.
    pub local: bool,
    /// `CKA_WRAP_WITH_TRUSTED`: it can be wrapped only by keys marked `CKA_TRUSTED`.
    pub wrap_with_trusted: bool,
}

impl KeyProtection {
    /// Whether the key was made in the token and can never leave it.
    pub fn is_hardware_bound(&self) -> bool {
        self.token
            && self.private
            && self.sensitive
            && !self.extractable
            && self.always_sensitive
            && self.never_extractable
            && self.local
    }

    /// Whether the key is [`KeyClass::Releasable`] as the token made it: generated in the
    /// token, always sensitive, and extractable only by wrapping under a trusted key.
    pub fn is_releasable(&self) -> bool {
        self.token
            && self.private
            && self.sensitive
            && self.extractable
            && self.wrap_with_trusted
            && self.always_sensitive
            && self.local
    }
}

/// A key as found on the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Its `CKA_ID`.
    pub id: KeyId,
    /// Its `CKA_LABEL`.
    pub label: String,
    /// Algorithm and usage.
    pub spec: KeySpec,
    /// `Some` for keys with a private or secret part; `None` for an imported public key.
    pub protection: Option<KeyProtection>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_round_trips_through_hex() {
        let id = KeyId::new(vec![0x00, 0xab, 0xff]).unwrap();
        assert_eq!(id.to_string(), "00abff");
        assert_eq!(KeyId::from_hex("00abff").unwrap(), id);
        assert!(KeyId::from_hex("0g").is_err());
        assert!(KeyId::from_hex("abc").is_err());
        assert!(KeyId::new(Vec::new()).is_err());
        assert!(KeyId::new(vec![0; 65]).is_err());
    }

    #[test]
    fn specs_refuse_usages_the_algorithm_cannot_serve() {
        assert!(KeySpec::new(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::EncryptDecrypt).is_err());
        assert!(KeySpec::new(KeyAlgorithm::HmacSha256, KeyUsage::SignVerify).is_err());
        assert!(KeySpec::new(KeyAlgorithm::Aes256, KeyUsage::SignVerify).is_err());
        assert!(KeySpec::new(KeyAlgorithm::Rsa(1024), KeyUsage::SignVerify).is_err());
        assert!(KeySpec::new(KeyAlgorithm::Rsa(3072), KeyUsage::EncryptDecrypt).is_ok());
        assert!(KeySpec::new(KeyAlgorithm::Aes256, KeyUsage::WrapUnwrap).is_ok());
    }

    #[test]
    fn only_aes_encryption_keys_can_be_releasable() {
        let spec = KeySpec::releasable(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt).unwrap();
        assert_eq!(spec.class(), KeyClass::Releasable);
        assert_ne!(
            spec,
            KeySpec::new(KeyAlgorithm::Aes256, KeyUsage::EncryptDecrypt).unwrap()
        );
        assert!(KeySpec::releasable(KeyAlgorithm::Aes256, KeyUsage::WrapUnwrap).is_err());
        assert!(KeySpec::releasable(KeyAlgorithm::HmacSha256, KeyUsage::Mac).is_err());
        assert!(
            KeySpec::releasable(KeyAlgorithm::Ec(EcCurve::P256), KeyUsage::SignVerify).is_err()
        );
    }

    #[test]
    fn labels_refuse_control_characters_and_excess_length() {
        assert!(KeyLabel::new("payments-signing").is_ok());
        assert!(KeyLabel::new("").is_err());
        assert!(KeyLabel::new("a\nb").is_err());
        assert!(KeyLabel::new("x".repeat(129)).is_err());
    }
}
