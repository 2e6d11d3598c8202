//! Configuration parsing and validation.
use super::*;
use std::time::Duration;

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
    assert_eq!(c.server.max_concurrent_streams, 64);
    assert!(!c.server.allow_client_intermediates);
    assert!(c.server.client_crls.is_empty());
    assert_eq!(c.server.idle_timeout(), Duration::from_secs(300));
    assert!(c.server.max_handshakes_per_address < c.server.max_handshakes);
}

#[test]
fn transport_settings_load_and_crl_paths_are_resolved() {
    let text = MINIMAL.replace(
        "client_ca = [\"ca.pem\"]",
        "client_ca = [\"ca.pem\"]\nclient_crls = [\"clients.crl\"]\n\
         allow_client_intermediates = true\nmax_concurrent_streams = 8\n\
         max_handshakes = 32\nmax_handshakes_per_address = 4\nidle_timeout_seconds = 30\n\
         keepalive_interval_seconds = 10\nkeepalive_timeout_seconds = 5\n\
         max_connection_age_seconds = 600",
    );
    let c = parse(&text).unwrap();
    let s = &c.server;
    assert_eq!(s.client_crls, [PathBuf::from("/etc/keybroker/clients.crl")]);
    assert!(s.allow_client_intermediates);
    assert_eq!(
        (
            s.max_concurrent_streams,
            s.max_handshakes,
            s.max_handshakes_per_address
        ),
        (8, 32, 4)
    );
    assert_eq!(s.idle_timeout(), Duration::from_secs(30));
    assert_eq!(s.keepalive_interval(), Duration::from_secs(10));
    assert_eq!(s.keepalive_timeout(), Duration::from_secs(5));
    assert_eq!(s.max_connection_age(), Duration::from_secs(600));
}

#[test]
fn transport_limits_that_make_no_sense_are_refused_by_name() {
    let with = |line: &str| {
        MINIMAL.replace(
            "client_ca = [\"ca.pem\"]",
            &format!("client_ca = [\"ca.pem\"]\n{line}"),
        )
    };
    let cases = [
        (
            "max_concurrent_streams = 0",
            "server.max_concurrent_streams",
        ),
        (
            "max_concurrent_streams = 5000",
            "server.max_concurrent_streams",
        ),
        ("max_handshakes = 0", "server.max_handshakes"),
        (
            "max_handshakes_per_address = 999",
            "server.max_handshakes_per_address",
        ),
        ("max_connections = 0", "server.max_connections"),
        ("idle_timeout_seconds = 0", "server.idle_timeout_seconds"),
        (
            "keepalive_timeout_seconds = 0",
            "server.keepalive_timeout_seconds",
        ),
        (
            "max_connection_age_seconds = 0",
            "server.max_connection_age_seconds",
        ),
        ("client_crl = [\"x\"]", "server.client_crl"),
        (
            "allow_client_intermediates = \"yes\"",
            "server.allow_client_intermediates",
        ),
    ];
    for (line, field) in cases {
        let (got, reason) = parse(&with(line)).unwrap_err();
        assert_eq!(got, field, "{line}: {reason}");
    }
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
            format!("{MINIMAL}\n[[tpm]]\nname = \"t\"\ntcti = \"swtpm:\"\nseal_pcrs = [24]\n"),
            "tpm[0].seal_pcrs",
        ),
        (
            format!("{MINIMAL}\n[[tpm]]\nname = \"t\"\ntcti = \"swtpm:\"\nseal_pcrs = []\n"),
            "tpm[0].seal_pcrs",
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
            format!("{MINIMAL}\n[attestation]\npolicy = \"appraisal.toml\"\n"),
            "attestation.signing_backend",
        ),
        (
            format!("{MINIMAL}\n[attestation]\ncertificate_cach = \"vceks\"\n"),
            "attestation.certificate_cach",
        ),
        (
            format!("{MINIMAL}\n[ca]\nbackend = \"hsm\"\nmax_tll_seconds = 60\n"),
            "ca.max_tll_seconds",
        ),
        (format!("{MINIMAL}\n[ca]\nmode = \"root\"\n"), "ca.mode"),
        (
            format!("{MINIMAL}\n[secrets]\nbackend = \"nope\"\n"),
            "secrets.backend",
        ),
        (
            format!("{MINIMAL}\n[secrets]\nbakend = \"hsm\"\n"),
            "secrets.bakend",
        ),
        (
            format!("{MINIMAL}\n[secrets]\nlease_sweep_seconds = 0\n"),
            "secrets.lease_sweep_seconds",
        ),
        (
            format!(
                "{MINIMAL}\n[secrets]\nbackend = \"hsm\"\n[[secrets.random]]\nname = \"r\"\nmax_leases_per_caller = 0\n"
            ),
            "secrets.random[0].max_leases_per_caller",
        ),
        (
            format!("{MINIMAL}\n[[secrets.random]]\nname = \"r\"\n"),
            "secrets.backend",
        ),
        (
            format!(
                "{MINIMAL}\n[secrets]\nbackend = \"hsm\"\n[[secrets.random]]\nname = \"r\"\nbytes = 8\n"
            ),
            "secrets.random[0].bytes",
        ),
        (
            format!(
                "{MINIMAL}\n[secrets]\nbackend = \"hsm\"\n[[secrets.random]]\nname = \"r\"\ndefault_ttl_seconds = 7200\nmax_ttl_seconds = 3600\n"
            ),
            "secrets.random[0].default_ttl_seconds",
        ),
        (
            format!(
                "{MINIMAL}\n[secrets]\nbackend = \"hsm\"\n[[secrets.random]]\nname = \"bad name\"\n"
            ),
            "secrets.random[0].name",
        ),
        (
            format!(
                "{MINIMAL}\n[secrets]\nbackend = \"hsm\"\n[[secrets.random]]\nname = \"r\"\n[[secrets.postgres]]\nname = \"r\"\nhost = \"h\"\ndatabase = \"d\"\nuser = \"u\"\npassword_secret = \"p\"\n"
            ),
            "secrets.postgres[0].name",
        ),
        (
            format!(
                "{MINIMAL}\n[secrets]\nbackend = \"hsm\"\n[[secrets.postgres]]\nname = \"db\"\nhost = \"h\"\ndatabase = \"d\"\nuser = \"u\"\npassword_secret = \"p\"\nconnections = 0\n"
            ),
            "secrets.postgres[0].connections",
        ),
        (
            format!(
                "{MINIMAL}\n[secrets]\nbackend = \"hsm\"\n[[secrets.postgres]]\nname = \"db\"\nhost = \"h\"\ndatabase = \"d\"\nuser = \"u\"\npassword = \"in the file\"\n"
            ),
            "secrets.postgres[0].password",
        ),
        (
            format!(
                "{MINIMAL}\n[ca]\nclaims_extension_oid = \"2.25.329800735698586629295641978511506172918\"\n"
            ),
            "ca.claims_extension_oid",
        ),
        (
            format!("{MINIMAL}\n[ca]\nmax_ttl_seconds = 86401\n"),
            "ca.max_ttl_seconds",
        ),
        (
            format!("{MINIMAL}\n[ca]\nrotate_before_seconds = 3600\n"),
            "ca.rotate_before_seconds",
        ),
        (
            format!("{MINIMAL}\n[oidc]\nlisten = \"127.0.0.1:8444\"\n"),
            "oidc.issuer",
        ),
        (
            format!("{MINIMAL}\n[oidc]\nissuer = \"http://broker\"\n"),
            "oidc.issuer",
        ),
        (
            format!("{MINIMAL}\n[oidc]\nissuer = \"https://b\"\njwt_max_ttl_seconds = 301\n"),
            "oidc.jwt_max_ttl_seconds",
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
        "{MINIMAL}\n[policy]\nbootstrap = \"first.cedar\"\n[attestation]\npolicy = \"appraisal.toml\"\nsigning_backend = \"hsm\"\ncertificate_cache = \"vceks\"\n"
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
