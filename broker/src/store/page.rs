//! Listing keys one page at a time: the query (name prefix, tags that must all match, where
//! the previous page ended, how many) and its page. The store runs the filter and the
//! paging in SQL, so a listing never loads more keys than one page.
//!
//! A page token is opaque to callers: today the URL-safe base64 of the last name on the
//! previous page (names are never reused, so it stays a stable cursor while keys come
//! and go). Anything that does not decode to a plausible name is refused.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{KeyRecord, StoreError};

/// Keys per page when the caller names no size.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most keys per page; a larger request gets this many.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Most tag filters: a key has at most this many tags, so more never match.
pub const MAX_TAG_FILTERS: usize = 32;
/// Longest prefix, tag name, tag value or cursor accepted; longer ones match nothing.
const MAX_TEXT: usize = 256;

/// Which keys to list: one page of those (not `Creating`) whose name starts with
/// `prefix` and that carry every tag in `tags` with that value, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyQuery {
    pub prefix: String,
    pub tags: BTreeMap<String, String>,
    /// Only names after this one: where the previous page ended.
    pub after: Option<String>,
    /// Keys on the page, 1 to [`MAX_PAGE_SIZE`].
    pub page_size: usize,
}

/// One page of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<KeyRecord>,
    /// Whether more keys match after this page.
    pub more: bool,
}

fn invalid(what: &str) -> StoreError {
    StoreError::InvalidQuery(what.to_owned())
}

impl KeyQuery {
    /// The query a `ListKeys` request asks for. A page size of 0 is
    /// [`DEFAULT_PAGE_SIZE`]; one above [`MAX_PAGE_SIZE`] is that maximum.
    ///
    /// # Errors
    /// [`StoreError::InvalidQuery`] for a page token that no listing made, too many tag
    /// filters, or a prefix, tag name or value too long to match any key.
    pub fn new(
        prefix: String,
        tags: BTreeMap<String, String>,
        page_token: &str,
        page_size: u32,
    ) -> Result<KeyQuery, StoreError> {
        if prefix.len() > MAX_TEXT {
            return Err(invalid("prefix: too long"));
        }
        if tags.len() > MAX_TAG_FILTERS {
            return Err(invalid(&format!("tags: at most {MAX_TAG_FILTERS}")));
        }
        if tags
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > MAX_TEXT || v.len() > MAX_TEXT)
        {
            return Err(invalid(
                "tags: names must not be empty; names and values are at most 256 bytes",
            ));
        }
        let after = match page_token {
            "" => None,
            token => Some(decode_token(token)?),
        };
        let page_size = match usize::try_from(page_size).unwrap_or(MAX_PAGE_SIZE) {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        Ok(KeyQuery {
            prefix,
            tags,
            after,
            page_size,
        })
    }
}

impl KeyPage {
    /// The token for the next page, or empty on the last page.
    pub fn next_page_token(&self) -> String {
        match self.keys.last() {
            Some(last) if self.more => page_token_after(&last.name),
            _ => String::new(),
        }
    }
}

/// The page token that continues a listing after the key `name`.
pub fn page_token_after(name: &str) -> String {
    URL_SAFE_NO_PAD.encode(name.as_bytes())
}

/// The name a page token holds.
///
/// # Errors
/// [`StoreError::InvalidQuery`] for a token that no listing made.
pub fn decode_token(token: &str) -> Result<String, StoreError> {
    let bad = || invalid("page_token: not a token from a previous listing");
    if token.len() > MAX_TEXT * 2 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let name = String::from_utf8(bytes).map_err(|_| bad())?;
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(token: &str, size: u32) -> Result<KeyQuery, StoreError> {
        KeyQuery::new(String::new(), BTreeMap::new(), token, size)
    }

    #[test]
    fn page_sizes_default_and_are_capped() {
        assert_eq!(query("", 0).unwrap().page_size, DEFAULT_PAGE_SIZE);
        assert_eq!(query("", 7).unwrap().page_size, 7);
        assert_eq!(query("", u32::MAX).unwrap().page_size, MAX_PAGE_SIZE);
    }

    #[test]
    fn a_token_round_trips_to_the_last_name() {
        let token = URL_SAFE_NO_PAD.encode("team/a-key");
        assert_eq!(
            query(&token, 0).unwrap().after.as_deref(),
            Some("team/a-key")
        );
    }

    #[test]
    fn tokens_that_no_listing_made_are_refused() {
        let not_utf8 = URL_SAFE_NO_PAD.encode([0xff, 0xfe]);
        let control = URL_SAFE_NO_PAD.encode("a\nb");
        let long = "A".repeat(1000);
        for token in [
            "not base64!",
            "%%%",
            not_utf8.as_str(),
            control.as_str(),
            long.as_str(),
        ] {
            assert!(
                matches!(query(token, 0), Err(StoreError::InvalidQuery(m)) if m.contains("page_token")),
                "{token:?}"
            );
        }
    }

    #[test]
    fn too_many_or_oversized_tag_filters_are_refused() {
        let many: BTreeMap<String, String> = (0..=MAX_TAG_FILTERS)
            .map(|i| (format!("t{i}"), "v".to_owned()))
            .collect();
        let empty_name = BTreeMap::from([(String::new(), "v".to_owned())]);
        let long_value = BTreeMap::from([("t".to_owned(), "v".repeat(MAX_TEXT + 1))]);
        for tags in [many, empty_name, long_value] {
            assert!(matches!(
                KeyQuery::new(String::new(), tags, "", 0),
                Err(StoreError::InvalidQuery(m)) if m.contains("tags")
            ));
        }
        let long_prefix = "p".repeat(MAX_TEXT + 1);
        assert!(KeyQuery::new(long_prefix, BTreeMap::new(), "", 0).is_err());
    }
}
