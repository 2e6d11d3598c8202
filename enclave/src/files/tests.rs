//! `write_atomic` and `write_credentials` on real files in a temporary directory.

use super::*;
use rustls_pki_types::pem::PemObject;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn files_get_their_mode_whatever_they_replace() {
    let dir = tempfile::tempdir().unwrap();
    write_atomic(dir.path(), "key", b"one", SECRET_MODE).unwrap();
    write_atomic(dir.path(), "cert", b"two", PUBLIC_MODE).unwrap();
    assert_eq!(mode(&dir.path().join("key")), 0o600);
    assert_eq!(mode(&dir.path().join("cert")), 0o644);
    // Replacing a file that was more open leaves it at the new mode.
    fs::set_permissions(dir.path().join("key"), Permissions::from_mode(0o666)).unwrap();
    write_atomic(dir.path(), "key", b"three", SECRET_MODE).unwrap();
    assert_eq!(mode(&dir.path().join("key")), 0o600);
    assert_eq!(fs::read(dir.path().join("key")).unwrap(), b"three");
    assert_eq!(names(dir.path()), ["cert", "key"]);
}

#[test]
fn a_temporary_file_left_by_a_crash_never_becomes_the_target() {
    let dir = tempfile::tempdir().unwrap();
    write_atomic(dir.path(), "svid.pem", b"old", PUBLIC_MODE).unwrap();
    // A write cut short after creating its temporary file, before the rename.
    let stale = dir.path().join(".svid.pem.0123456789abcdef.tmp");
    fs::write(&stale, b"half-writ").unwrap();
    let other = dir.path().join(".bundle.pem.0123456789abcdef.tmp");
    fs::write(&other, b"not ours").unwrap();
    assert_eq!(fs::read(dir.path().join("svid.pem")).unwrap(), b"old");

    write_atomic(dir.path(), "svid.pem", b"new", PUBLIC_MODE).unwrap();
    assert_eq!(fs::read(dir.path().join("svid.pem")).unwrap(), b"new");
    assert!(!stale.exists());
    assert!(other.exists(), "another file's temporary is left alone");
}

#[test]
fn names_that_leave_the_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["", ".", "..", "../x", "a/b", "a\0b"] {
        assert!(
            matches!(
                write_atomic(dir.path(), bad, b"x", 0o600),
                Err(FilesError::Name(_))
            ),
            "{bad:?}"
        );
    }
    assert!(names(dir.path()).is_empty());
}

#[test]
fn audiences_become_safe_file_names() {
    let name = |a: &str| token_file_name(a).unwrap();
    assert_eq!(
        name("https://api.example.com"),
        "jwt_https___api.example.com.token"
    );
    assert_eq!(name("spiffe://td/db"), "jwt_spiffe___td_db.token");
    assert_eq!(name("../../etc/passwd"), "jwt_.._.._etc_passwd.token");
    assert_eq!(name("a b\0c\nd"), "jwt_a_b_c_d.token");
    assert_eq!(name("büro"), "jwt_b_ro.token");
    for bad in ["", "///", "..", &"a".repeat(201)] {
        assert!(
            matches!(token_file_name(bad), Err(FilesError::Audience(_))),
            "{bad}"
        );
    }
    assert!(token_file_name(&"a".repeat(200)).is_ok());
}

#[test]
fn two_audiences_for_one_file_are_refused() {
    let err = token_file_names(["a:b", "c", "a/b"]).unwrap_err();
    assert!(
        matches!(&err, FilesError::SameFile(a, b, f) if a == "a:b" && b == "a/b" && f == "jwt_a_b.token"),
        "{err:?}"
    );
    assert_eq!(
        token_file_names(["a:b", "c"]).unwrap(),
        ["jwt_a_b.token", "jwt_c.token"]
    );
}

#[test]
fn credentials_and_tokens_land_with_their_modes() {
    let key = crate::key::EphemeralKey::generate().unwrap();
    let creds = Credentials {
        key,
        kem: attest::release::KemKeyPair::generate(),
        chain_der: vec![b"leaf".to_vec(), b"intermediate".to_vec()],
        bundle_der: vec![b"root".to_vec()],
        cert_expires_at: std::time::SystemTime::UNIX_EPOCH,
        token: secrecy::SecretString::from("attestation.jwt".to_string()),
        token_expires_at: std::time::SystemTime::UNIX_EPOCH,
        spiffe_id: "spiffe://td/w".to_string(),
        claims_json: "{}".to_string(),
    };
    let token = |audience: &str| AudienceToken {
        audience: audience.to_string(),
        token: secrecy::SecretString::from(format!("jwt-for-{audience}")),
        expires_at: std::time::SystemTime::UNIX_EPOCH,
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("creds");
    write_credentials(&out, &creds, &[token("https://db"), token("api")]).unwrap();
    assert_eq!(
        names(&out),
        [
            "bundle.pem",
            "jwt_api.token",
            "jwt_https___db.token",
            "svid.pem",
            "svid_key.pem",
            "token"
        ]
    );
    for secret in [
        "jwt_api.token",
        "jwt_https___db.token",
        "svid_key.pem",
        "token",
    ] {
        assert_eq!(mode(&out.join(secret)), 0o600, "{secret}");
    }
    for public in ["bundle.pem", "svid.pem"] {
        assert_eq!(mode(&out.join(public)), 0o644, "{public}");
    }
    let chain = fs::read_to_string(out.join("svid.pem")).unwrap();
    let blocks: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
        .map(|c| c.unwrap().to_vec())
        .collect();
    assert_eq!(blocks, creds.chain_der);
    assert_eq!(fs::read(out.join("token")).unwrap(), b"attestation.jwt");
    assert_eq!(fs::read(out.join("jwt_api.token")).unwrap(), b"jwt-for-api");
    let key = fs::read_to_string(out.join("svid_key.pem")).unwrap();
    assert_eq!(key, creds.key.private_key_pem().expose_secret());

    // A bad audience is refused before anything is written.
    let fresh = dir.path().join("fresh");
    assert!(write_credentials(&fresh, &creds, &[token("///")]).is_err());
    assert!(!fresh.exists());
}
