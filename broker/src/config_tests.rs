//! Configuration parsing and validation.
use super::*;

const MINIMAL: &str = r#"
[server]
listen = "127.0.0.1:8443"
cert = "server.pem"
key = "server-key.pem"
client_ca = ["ca.pem"]

[store]
path = "keybroker.db"

[[hsm]]
name = "hsm"
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "keybroker"
user_pin_env = "KEYBROKER_PIN"
"#;

fn parse(text: &str) -> Result<Config, (String, String)> {
    Config::from_toml(text, Path::new("/etc/keybroker"))
}

#[test]
fn a_minimal_file_loads_with_defaults_and_absolute_paths() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.server.cert, PathBuf::from("/etc/keybroker/server.pem"));
    assert_eq!(c.store.path, PathBuf::from("/etc/keybroker/keybroker.db"));
    assert_eq!(c.keys.orphans, OrphanAction::Report);
    assert_eq!(c.hsm[0].sessions, 4);
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (MINIMAL.replace("listen =", "listn ="), "server.listn"),
        (
            MINIMAL.replace("127.0.0.1:8443", "localhost"),
            "server.listen",
        ),
        (
            MINIMAL.replace("user_pin_env = \"KEYBROKER_PIN\"", ""),
            "hsm[0].user_pin_file",
        ),
        (
            format!("{MINIMAL}\n[[tpm]]\nname = \"hsm\"\ntcti = \"swtpm:\"\n"),
            "tpm[0].name",
        ),
        (
            format!("{MINIMAL}\n[[tpm]]\nname = \"t\"\ntcti = \"mssim:\"\n"),
            "tpm[0].tcti",
        ),
        (
            format!("{MINIMAL}\n[keys]\ndefault_backend = \"nope\"\n"),
            "keys.default_backend",
        ),
        (
            format!("{MINIMAL}\n[keys]\norphans = \"burn\"\n"),
            "keys.orphans",
        ),
        (
            format!("{MINIMAL}\n[policy]\nfiles = [\"a.cedar\"]\nbootstrap = \"b.cedar\"\n"),
            "policy.bootstrap",
        ),
        (
            format!("{MINIMAL}\n[admin]\npkcs11_module = [\"/x.so\"]\n"),
            "admin.pkcs11_module",
        ),
        (
            format!("{MINIMAL}\n[attestation]\nsigning_backend = \"tpm\"\n"),
            "attestation.signing_backend",
        ),
        (
            format!("{MINIMAL}\n[attestation]\ncertificate_cach = \"vceks\"\n"),
            "attestation.certificate_cach",
        ),
    ];
    for (text, field) in cases {
        let (got, reason) = parse(&text).unwrap_err();
        assert_eq!(got, field, "{reason}");
    }
}

#[test]
fn the_admin_api_may_load_only_configured_modules() {
    let c = parse(&format!(
        "{MINIMAL}\n[admin]\npkcs11_modules = [\"/opt/vendor/libpkcs11.so\"]\n"
    ))
    .unwrap();
    assert!(c.module_allowed(Path::new("/usr/lib/softhsm/libsofthsm2.so")));
    assert!(c.module_allowed(Path::new("/opt/vendor/libpkcs11.so")));
    assert!(!c.module_allowed(Path::new("/tmp/evil.so")));
}

#[test]
fn attestation_and_bootstrap_paths_are_taken_from_the_config_directory() {
    let c = parse(&format!(
        "{MINIMAL}\n[policy]\nbootstrap = \"first.cedar\"\n[attestation]\npolicy = \"appraisal.toml\"\ncertificate_cache = \"vceks\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.policy.bootstrap,
        Some(PathBuf::from("/etc/keybroker/first.cedar"))
    );
    assert_eq!(
        c.attestation.policy,
        Some(PathBuf::from("/etc/keybroker/appraisal.toml"))
    );
    assert_eq!(
        c.attestation.certificate_cache,
        Some(PathBuf::from("/etc/keybroker/vceks"))
    );
}
