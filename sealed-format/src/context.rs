//! The encryption context: string pairs that every chunk authenticates but the envelope
//! does not carry. Whoever unseals must present the same context.

use std::collections::BTreeMap;

use crate::error::FormatError;
use crate::wire;

/// A validated encryption context: at most 64 entries, keys of 1 to 128 bytes, values of
/// 0 to 1,024 bytes. Not secret (it may be logged), but bound to the sealed data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionContext {
    entries: BTreeMap<String, String>,
}

impl EncryptionContext {
    /// The most entries.
    pub const MAX_ENTRIES: usize = 64;
    /// The longest key, in bytes.
    pub const MAX_KEY_LEN: usize = 128;
    /// The longest value, in bytes.
    pub const MAX_VALUE_LEN: usize = 1024;

    /// An empty context.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry, or replaces the value of an existing key.
    ///
    /// # Errors
    /// [`FormatError::ContextKeyLength`], [`FormatError::ContextValueLength`], or
    /// [`FormatError::ContextTooManyEntries`] for a 65th key. The context is unchanged.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), FormatError> {
        let (key, value) = (key.into(), value.into());
        check_entry(&key, &value)?;
        if !self.entries.contains_key(&key) && self.entries.len() >= Self::MAX_ENTRIES {
            return Err(FormatError::ContextTooManyEntries(self.entries.len() + 1));
        }
        self.entries.insert(key, value);
        Ok(())
    }

    /// The value of `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// The entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The canonical encoding: u16 count, then for each entry in key order (bytewise)
    /// u16 length ‖ key ‖ u16 length ‖ value, all big-endian.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // At most 64 entries: the count always fits.
        let count = u16::try_from(self.entries.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for (key, value) in &self.entries {
            wire::put_u16_prefixed(&mut out, key.as_bytes());
            wire::put_u16_prefixed(&mut out, value.as_bytes());
        }
        out
    }
}

impl TryFrom<BTreeMap<String, String>> for EncryptionContext {
    type Error = FormatError;

    fn try_from(entries: BTreeMap<String, String>) -> Result<Self, FormatError> {
        if entries.len() > Self::MAX_ENTRIES {
            return Err(FormatError::ContextTooManyEntries(entries.len()));
        }
        for (key, value) in &entries {
            check_entry(key, value)?;
        }
        Ok(Self { entries })
    }
}

fn check_entry(key: &str, value: &str) -> Result<(), FormatError> {
    if key.is_empty() || key.len() > EncryptionContext::MAX_KEY_LEN {
        return Err(FormatError::ContextKeyLength(key.len()));
    }
    if value.len() > EncryptionContext::MAX_VALUE_LEN {
        return Err(FormatError::ContextValueLength {
            key: key.to_owned(),
            len: value.len(),
        });
    }
    Ok(())
}
