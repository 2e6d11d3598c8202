//! What the broker issues, checked by tools that share no code with it: OpenSSL for the
//! certificates, a TLS server that only trusts the bundle, curl for the JWKS, and PyJWT
//! (Debian's `python3-jwt`) for the workload JWTs.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use super::*;

/// The claims extension's OID under its default (`ca.claims_extension_oid`).
pub(super) const CLAIMS_OID: &str = "1.3.6.1.4.1.99999.1.1";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_pems(dir: &Path, name: &str, label: &str, ders: &[Vec<u8>]) -> std::path::PathBuf {
    let path = dir.join(name);
    let body: String = ders.iter().map(|d| pem(label, d)).collect();
    std::fs::write(&path, body).unwrap();
    path
}

/// The `attestation` member of a token's payload, unverified (the test only reads it).
pub(super) fn token_claims(token: &str) -> attest::claims::Claims {
    use base64ct::{Base64UrlUnpadded, Encoding};
    let payload = token.split('.').nth(1).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&Base64UrlUnpadded::decode_vec(payload).unwrap()).unwrap();
    serde_json::from_value(json["attestation"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn issued_certificates_verify_with_openssl_and_carry_the_claims_digest() {
    let broker = BrokerProcess::start();
    let (_key, token, issued) = attested(&broker, "attested", 120).await;
    let dir = tempfile::tempdir().unwrap();
    let leaf = write_pems(dir.path(), "leaf.pem", "CERTIFICATE", &issued.chain_der);
    let bundle = write_pems(
        dir.path(),
        "bundle.pem",
        "CERTIFICATE",
        &issued.trust_bundle_der,
    );
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&bundle)
        .arg(&leaf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // The test PKI's CA did not sign it.
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(broker.dir.path().join("pki/ca.pem"))
        .arg(&leaf)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));

    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&leaf)
        .output()
        .unwrap();
    let shown = text(&out);
    for expected in [
        "URI:spiffe://test.keybroker/workload",
        "Digital Signature",
        "TLS Web Client Authentication, TLS Web Server Authentication",
        "CA:FALSE",
        CLAIMS_OID,
    ] {
        assert!(shown.contains(expected), "{expected:?} in:\n{shown}");
    }
    // Its lifetime is the one asked for (from a minute back, for slow clocks).
    let (_, cert) = x509_parser::parse_x509_certificate(&issued.chain_der[0]).unwrap();
    let validity = cert.validity();
    assert_eq!(
        validity.not_after.timestamp() - validity.not_before.timestamp(),
        120 + 60
    );
    // The extension holds SHA-256 of the attestation claims the token carries.
    let extension = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == CLAIMS_OID)
        .unwrap();
    let digest = attest::token::claims_digest(&token_claims(&token)).unwrap();
    let mut expected = vec![0x04, 0x20];
    expected.extend_from_slice(&digest);
    assert_eq!(extension.value, expected.as_slice());
    assert!(!extension.critical);
}

#[tokio::test(flavor = "multi_thread")]
async fn issued_certificates_expire() {
    let broker = BrokerProcess::start();
    let (_key, _token, issued) = attested(&broker, "brief", 5).await;
    let bundle_call = || async {
        identity(&broker, "brief")
            .await
            .get_trust_bundle(pb::GetTrustBundleRequest {})
            .await
    };
    bundle_call().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let refused = match broker.channel("brief").await {
        Err(_) => true,
        Ok(channel) => IdentityServiceClient::new(channel)
            .get_trust_bundle(pb::GetTrustBundleRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "the broker accepted an expired certificate");
    let dir = tempfile::tempdir().unwrap();
    let leaf = write_pems(dir.path(), "leaf.pem", "CERTIFICATE", &issued.chain_der);
    let bundle = write_pems(
        dir.path(),
        "ca.pem",
        "CERTIFICATE",
        &issued.trust_bundle_der,
    );
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&bundle)
        .arg(&leaf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("expired"), "{}", text(&out));
    assert!(
        broker.log().contains("expired"),
        "the handshake refusal is logged"
    );
}

/// A TLS server (rustls) that trusts only `bundle` for client certificates, on
/// 127.0.0.1: for each connection, "accepted" if the handshake passed.
async fn bundle_server(
    broker: &BrokerProcess,
    bundle: &[Vec<u8>],
) -> (u16, tokio::task::JoinHandle<Vec<bool>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::AsyncWriteExt;
    let mut roots = rustls::RootCertStore::empty();
    for der in bundle {
        roots.add(CertificateDer::from(der.clone())).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(broker.dir.path().join("pki/server.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(broker.dir.path().join("pki/server-key.pem")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            match acceptor.accept(stream).await {
                Ok(mut tls) => {
                    tls.write_all(b"accepted\n").await.unwrap();
                    tls.shutdown().await.ok();
                    outcomes.push(true);
                }
                Err(_) => outcomes.push(false),
            }
        }
        outcomes
    });
    (port, server)
}

fn s_client(broker: &BrokerProcess, port: u16, cert: &Path, key: &Path) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-servername",
            "localhost",
        ])
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-CAfile")
        .arg(broker.dir.path().join("pki/ca.pem"))
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    text(&out)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_server_that_trusts_the_bundle_accepts_openssl_with_an_issued_certificate() {
    let broker = BrokerProcess::start();
    let (_key, _token, issued) = attested(&broker, "attested", 300).await;
    let (port, server) = bundle_server(&broker, &issued.trust_bundle_der).await;
    let pki = broker.dir.path().join("pki");
    let accepted = s_client(
        &broker,
        port,
        &pki.join("attested.pem"),
        &pki.join("attested-key.pem"),
    );
    assert!(accepted.contains("accepted"), "{accepted}");
    // The bootstrap certificate, from another CA, is refused.
    let refused = s_client(
        &broker,
        port,
        &pki.join("workload.pem"),
        &pki.join("workload-key.pem"),
    );
    assert!(!refused.contains("accepted"), "{refused}");
    assert_eq!(server.await.unwrap(), [true, false]);
}

/// Runs PyJWT (Debian's python3-jwt, not the pyenv one) to verify `token` against `jwks`
/// for `audience` and the broker's issuer.
fn pyjwt(jwks: &str, token: &str, audience: &str) -> Output {
    const SCRIPT: &str = r#"
import json, sys, jwt
jwks, token, audience, issuer = sys.argv[1:5]
kid = jwt.get_unverified_header(token)["kid"]
key = next(k for k in jwt.PyJWKSet.from_json(jwks).keys if k.key_id == kid)
claims = jwt.decode(token, key.key, algorithms=["ES256"], audience=audience, issuer=issuer)
print(json.dumps(claims))
"#;
    Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT, jwks, token, audience, common::ISSUER])
        .output()
        .unwrap()
}

fn curl(broker: &BrokerProcess, path: &str) -> String {
    let port = broker.oidc_addr.rsplit(':').next().unwrap();
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--cacert"])
        .arg(broker.dir.path().join("pki/ca.pem"))
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {path}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_jwts_verify_in_pyjwt_with_the_jwks_fetched_by_curl() {
    let broker = BrokerProcess::start();
    let (_key, token, _issued) = attested(&broker, "attested", 300).await;
    let jwt = identity(&broker, "attested")
        .await
        .get_token(with_token(
            pb::GetTokenRequest {
                audience: "https://db.example".into(),
                ttl_seconds: 0,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .token;

    let discovery: serde_json::Value =
        serde_json::from_str(&curl(&broker, "/.well-known/openid-configuration")).unwrap();
    assert_eq!(discovery["issuer"], common::ISSUER);
    let jwks = curl(&broker, "/keys");

    let out = pyjwt(&jwks, &jwt, "https://db.example");
    assert!(out.status.success(), "{}", text(&out));
    let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["sub"], WORKLOAD);
    assert_eq!(claims["aud"], "https://db.example");
    assert!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() <= 300);
    let digest = attest::token::claims_digest(&token_claims(&token)).unwrap();
    use base64ct::{Base64UrlUnpadded, Encoding};
    assert_eq!(
        claims["attestation_sha256"],
        Base64UrlUnpadded::encode_string(&digest)
    );

    // Another audience: refused. The attestation token (no audience) is no workload JWT.
    let out = pyjwt(&jwks, &jwt, "https://other.example");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("InvalidAudienceError"),
        "{}",
        text(&out)
    );
    let out = pyjwt(&jwks, &token, "https://db.example");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("MissingRequiredClaimError"),
        "{}",
        text(&out)
    );
    // Nothing but the two documents, and nothing but reads.
    let port = broker.oidc_addr.rsplit(':').next().unwrap();
    let out = Command::new("curl")
        .args([
            "--silent",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code}",
        ])
        .args(["--request", "POST", "--cacert"])
        .arg(broker.dir.path().join("pki/ca.pem"))
        .arg(format!("https://localhost:{port}/keys"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "405");
}
