//! The client-certificate rules and connection budgets of the transport, attacked over real
//! TLS: chains with intermediates, certificates with several URI SANs, revoked certificates
//! (and CRLs changed while serving), silent sockets from one address, connections over the
//! established cap, idle connections.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, SystemTime};

use broker::tls::{ConnectionLimits, ServerTls};
use support::{
    DAY, TestCa, TestServer, check_with, check_with_chain, closed_by_server_within, connect_from,
    new_pki, served_by_http2, tls13_connect, tls13_connector, valid_client,
};
use tonic_health::pb::health_check_response::ServingStatus;

/// Well past any deadline in these tests; only reached when something is wrong.
const GENEROUS: Duration = Duration::from_secs(20);

/// The dev PKI's CA signed the server certificate; clients trust it for the server.
fn server_ca_pem(tls_pki: &broker::tls::devpki::DevPki) -> String {
    tls_pki.ca_cert_pem().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_with_intermediates_are_refused_unless_configured() {
    let root = TestCa::root("client root");
    let intermediate = root.intermediate("client intermediate");
    let (leaf, key) = intermediate.leaf(&["spiffe://test.example/via-intermediate"]);
    let chain = format!("{leaf}{}", intermediate.pem);

    let server_pki = new_pki();
    let server_tls = |allow: bool| {
        ServerTls::from_pem_with(
            server_pki.server().cert_pem().as_bytes(),
            server_pki.server().key_pem().as_bytes(),
            &[root.pem.as_bytes().to_vec()],
            allow,
            &[],
        )
        .unwrap()
    };
    let ca = server_ca_pem(&server_pki);

    let strict = TestServer::start(&server_tls(false), ConnectionLimits::default()).await;
    let refused = check_with_chain(&strict, &ca, &chain, &key).await;
    assert!(
        refused.is_err(),
        "an intermediate was accepted: {refused:?}"
    );
    // A leaf signed by the root directly, sent with the root repeated, is fine.
    let (direct, direct_key) = root.leaf(&["spiffe://test.example/direct"]);
    let with_root = format!("{direct}{}", root.pem);
    assert_eq!(
        check_with_chain(&strict, &ca, &with_root, &direct_key).await,
        Ok(ServingStatus::Serving)
    );
    assert_eq!(
        strict.requests_seen(),
        1,
        "the refused chain reached no handler"
    );
    strict.stop().await;

    let lenient = TestServer::start(&server_tls(true), ConnectionLimits::default()).await;
    assert_eq!(
        check_with_chain(&lenient, &ca, &chain, &key).await,
        Ok(ServingStatus::Serving)
    );
    assert_eq!(
        lenient
            .last_peer()
            .and_then(|p| p.identity)
            .map(|id| id.to_string())
            .as_deref(),
        Some("spiffe://test.example/via-intermediate")
    );
    lenient.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_needs_exactly_one_uri_san_and_it_must_be_spiffe() {
    let root = TestCa::root("client root");
    let server_pki = new_pki();
    let tls = ServerTls::from_pem_with(
        server_pki.server().cert_pem().as_bytes(),
        server_pki.server().key_pem().as_bytes(),
        &[root.pem.as_bytes().to_vec()],
        false,
        &[],
    )
    .unwrap();
    let server = TestServer::start(&tls, ConnectionLimits::default()).await;
    let ca = server_ca_pem(&server_pki);
    for uris in [
        &["spiffe://test.example/a", "spiffe://test.example/b"][..],
        &["spiffe://test.example/a", "https://example.com/b"][..],
        &["https://example.com/only"][..],
        &[][..],
    ] {
        let (cert, key) = root.leaf(uris);
        let result = check_with_chain(&server, &ca, &cert, &key).await;
        assert!(result.is_err(), "{uris:?} was accepted");
    }
    assert_eq!(server.requests_seen(), 0);
    let (one, key) = root.leaf(&["spiffe://test.example/one"]);
    assert_eq!(
        check_with_chain(&server, &ca, &one, &key).await,
        Ok(ServingStatus::Serving)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_certificates_are_refused_and_crls_change_while_serving() {
    let pki = new_pki();
    let ca = pki.ca_cert_pem();
    let next_week = SystemTime::now() + 7 * DAY;
    let revoked = valid_client(&pki, "/revoked");
    let later = valid_client(&pki, "/revoked-later");
    let good = valid_client(&pki, "/good");
    let crl = pki
        .revocation_list(&[revoked.cert_pem()], 1, next_week)
        .unwrap();
    let tls = ServerTls::from_pem_with(
        pki.server().cert_pem().as_bytes(),
        pki.server().key_pem().as_bytes(),
        &[ca.as_bytes().to_vec()],
        false,
        &[crl.into_bytes()],
    )
    .unwrap();
    let server = TestServer::start(&tls, ConnectionLimits::default()).await;
    assert!(check_with(&server, ca, &revoked).await.is_err());
    assert_eq!(
        check_with(&server, ca, &later).await,
        Ok(ServingStatus::Serving)
    );

    // A new list while serving: from now on `later` is refused too.
    let crl2 = pki
        .revocation_list(&[revoked.cert_pem(), later.cert_pem()], 2, next_week)
        .unwrap();
    tls.set_crls(&[crl2.into_bytes()]).unwrap();
    assert!(check_with(&server, ca, &later).await.is_err());
    assert!(check_with(&server, ca, &revoked).await.is_err());
    assert_eq!(
        check_with(&server, ca, &good).await,
        Ok(ServingStatus::Serving)
    );

    // A list that does not parse changes nothing.
    assert!(
        tls.set_crls(&[b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n".to_vec()])
            .is_err()
    );
    assert!(tls.set_crls(&[b"not a crl".to_vec()]).is_err());
    assert!(check_with(&server, ca, &later).await.is_err());
    assert_eq!(
        check_with(&server, ca, &good).await,
        Ok(ServingStatus::Serving)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_from_one_address_cost_only_that_address_its_handshakes() {
    let pki = new_pki();
    let limits = ConnectionLimits {
        max_handshakes: 64,
        max_handshakes_per_address: 4,
        handshake_timeout: Duration::from_secs(60),
        ..ConnectionLimits::default()
    };
    let server = TestServer::start(&pki.server_tls().unwrap(), limits).await;
    let mut attacker = Vec::new();
    for _ in 0..4 {
        attacker.push(connect_from([127, 0, 0, 2], server.addr).await.unwrap());
    }
    // The fifth from the same address is closed at once, not after the handshake timeout.
    let mut fifth = connect_from([127, 0, 0, 2], server.addr).await.unwrap();
    closed_by_server_within(&mut fifth, GENEROUS).await;
    // Another address still completes handshakes and is served.
    let good = valid_client(&pki, "/workload");
    assert_eq!(
        check_with(&server, pki.ca_cert_pem(), &good).await,
        Ok(ServingStatus::Serving)
    );
    drop(attacker);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_connections_have_their_own_cap_and_idle_ones_are_closed() {
    let pki = new_pki();
    let limits = ConnectionLimits {
        max_connections: 2,
        idle_timeout: Duration::from_secs(2),
        ..ConnectionLimits::default()
    };
    let server = TestServer::start(&pki.server_tls().unwrap(), limits).await;
    let client = valid_client(&pki, "/idle");
    let connector = tls13_connector(pki.ca_cert_pem(), client.cert_pem(), client.key_pem());
    let mut first = tls13_connect(&connector, server.addr).await.unwrap();
    served_by_http2(&mut first).await;
    let mut second = tls13_connect(&connector, server.addr).await.unwrap();
    served_by_http2(&mut second).await;
    // Over the cap: closed before or right after its handshake.
    if let Ok(mut third) = tls13_connect(&connector, server.addr).await {
        closed_by_server_within(&mut third, GENEROUS).await;
    }
    // The two idle ones are closed by the idle timeout (this server's stack marks no calls).
    closed_by_server_within(&mut first, GENEROUS).await;
    closed_by_server_within(&mut second, GENEROUS).await;
    // Their slots are free again.
    assert_eq!(
        check_with(&server, pki.ca_cert_pem(), &client).await,
        Ok(ServingStatus::Serving)
    );
    server.stop().await;
}
