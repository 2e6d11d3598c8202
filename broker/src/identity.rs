//! The caller's identity: the SPIFFE ID in its client certificate's URI SAN.

use std::fmt;

/// A validated `spiffe://trust-domain/path` identity.
///
/// Trust domain: lowercase letters, digits, `.`, `-`, `_`. Path: one or more `/segment`
/// parts of letters, digits, `.`, `-`, `_`; no empty, `.` or `..` segments; no query or
/// fragment (the SPIFFE ID specification, section 2).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: String,
    domain_len: usize,
}

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("a SPIFFE ID starts with \"spiffe://\"")]
    Scheme,
    #[error("the trust domain is empty or has characters outside [a-z0-9._-]")]
    TrustDomain,
    #[error("the path must be one or more /segments of [A-Za-z0-9._-], without . or ..")]
    Path,
    #[error("a SPIFFE ID is at most 2048 bytes")]
    TooLong,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    ///
    /// # Errors
    /// [`SpiffeIdError`] naming the part that is wrong.
    pub fn parse(text: &str) -> Result<SpiffeId, SpiffeIdError> {
        if text.len() > 2048 {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = text
            .strip_prefix("spiffe://")
            .ok_or(SpiffeIdError::Scheme)?;
        let (domain, path) = rest.split_once('/').ok_or(SpiffeIdError::Path)?;
        let domain_ok = !domain.is_empty()
            && domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !domain_ok {
            return Err(SpiffeIdError::TrustDomain);
        }
        let path_ok = path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
        if !path_ok {
            return Err(SpiffeIdError::Path);
        }
        Ok(SpiffeId {
            uri: text.to_string(),
            domain_len: domain.len(),
        })
    }

    /// The whole ID, `spiffe://domain/path`.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        self.uri
            .get("spiffe://".len().."spiffe://".len() + self.domain_len)
            .unwrap_or_default()
    }

    /// The path, starting with `/`.
    pub fn path(&self) -> &str {
        self.uri
            .get("spiffe://".len() + self.domain_len..)
            .unwrap_or_default()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_split_into_domain_and_path() {
        let id = SpiffeId::parse("spiffe://prod.example/ns/payments/sa/api").unwrap();
        assert_eq!(id.trust_domain(), "prod.example");
        assert_eq!(id.path(), "/ns/payments/sa/api");
    }

    #[test]
    fn malformed_ids_are_refused_with_the_part_named() {
        for (text, err) in [
            ("https://x/y", SpiffeIdError::Scheme),
            ("spiffe://Prod/y", SpiffeIdError::TrustDomain),
            ("spiffe:///y", SpiffeIdError::TrustDomain),
            ("spiffe://prod", SpiffeIdError::Path),
            ("spiffe://prod/", SpiffeIdError::Path),
            ("spiffe://prod/a//b", SpiffeIdError::Path),
            ("spiffe://prod/a/../b", SpiffeIdError::Path),
            ("spiffe://prod/a?x=1", SpiffeIdError::Path),
        ] {
            assert_eq!(SpiffeId::parse(text), Err(err), "{text}");
        }
        assert_eq!(
            SpiffeId::parse(&format!("spiffe://d/{}", "a".repeat(2100))),
            Err(SpiffeIdError::TooLong)
        );
    }
}
