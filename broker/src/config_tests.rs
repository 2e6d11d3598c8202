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
    ];
    for (text, field) in cases {
        let (got, reason) = parse(&text).unwrap_err();
        assert_eq!(got, field, "{reason}");
    }
}
