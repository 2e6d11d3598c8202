//! What OpenSC's `pkcs11-tool` says of the objects in a broker's token: an independent
//! reader of the attributes the broker set.

use std::process::Command;

use super::{BrokerProcess, TOKEN_LABEL, USER_PIN};

/// The objects `pkcs11-tool --list-objects` lists on the broker's token, as it prints them.
pub fn objects(broker: &BrokerProcess) -> String {
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(broker.hsm.module_path())
        .args(["--token-label", TOKEN_LABEL, "--login", "--pin"])
        .arg(USER_PIN)
        .arg("--list-objects")
        .env("SOFTHSM2_CONF", broker.hsm.conf_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The line starting with `field` (like `"Access:"`) that `pkcs11-tool` prints for the
/// object labelled `label`, trimmed.
pub fn field_of(listing: &str, label: &str, field: &str) -> String {
    let mut lines = listing.lines();
    lines
        .find(|l| l.trim() == format!("label:      {label}"))
        .unwrap_or_else(|| panic!("no object {label:?} in:\n{listing}"));
    lines
        .find(|l| l.trim_start().starts_with(field))
        .unwrap_or_else(|| panic!("no {field} for {label:?} in:\n{listing}"))
        .trim()
        .to_string()
}
