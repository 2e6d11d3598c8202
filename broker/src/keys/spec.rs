//! What a key may be: its name and tags, and the label its objects get. Which algorithms
//! and purposes a backend holds is the backend's to say (`KeyBackend::check_spec`).

use std::collections::BTreeMap;

use super::manager::{LABEL_PREFIX, MAX_NAME_LEN};
use crate::error::{BrokerError, Result};

const MAX_TAGS: usize = 32;

/// Checks a key name: 1 to 100 characters of `[A-Za-z0-9/_.-]`, made of `/`-separated
/// segments that are neither empty nor `.` or `..`.
pub fn check_key_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_.-".contains(&b))
        && name
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(BrokerError::InvalidArgument(format!(
            "name: 1 to {MAX_NAME_LEN} characters of [A-Za-z0-9/_.-], in /-separated segments that are not empty, . or .."
        )))
    }
}

pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(BrokerError::InvalidArgument(format!(
            "tags: at most {MAX_TAGS}"
        )));
    }
    for (k, v) in tags {
        let key_ok = !k.is_empty()
            && k.len() <= 64
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !key_ok || v.len() > 256 || v.chars().any(char::is_control) {
            return Err(BrokerError::InvalidArgument(format!(
                "tags: {k:?}: names are 1 to 64 of [A-Za-z0-9_.-], values up to 256 printable characters"
            )));
        }
    }
    Ok(())
}

/// The name a version's object gets where the hardware keeps names: `kb:<key>:v<version>`.
/// Reconciliation knows the broker's objects by the prefix.
pub fn label(name: &str, version: u32) -> String {
    format!("{LABEL_PREFIX}{name}:v{version}")
}
