//! The workload's client library (`enclave::client`) seals and opens locally, in the same
//! format: what it seals the broker opens, and the other way round; data never crosses the
//! network, only the data key's header does.

use std::io::{Read, Write};

use enclave::client::{ClientError, local_sealer, local_unsealer};
use sealed_format::EncryptionContext;

use super::*;

fn local_context() -> EncryptionContext {
    let mut context = EncryptionContext::new();
    context.insert("volume", "data").unwrap();
    context
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_library_seals_and_opens_locally_in_the_brokers_format() {
    let broker = BrokerProcess::start();
    let mut keys = admin(&broker).await;
    let ctx = context(&[("volume", "data")]);
    for backend in BACKENDS {
        let name = format!("disk-{backend}");
        wrap_key(&mut keys, &name, backend).await;
        let plaintext = data(5 * 1024 * 1024 + 3);

        // Sealed here; the broker opens it (a stream: it is larger than one message).
        let mut writer = local_sealer(&mut keys, &name, 0, &local_context(), Vec::new())
            .await
            .unwrap();
        writer.write_all(&plaintext).unwrap();
        let sealed = writer.finish().unwrap();
        let (hash, len) = unseal_stream(&mut keys, &name, &ctx, &sealed, 60 * 1024)
            .await
            .unwrap();
        assert_eq!(
            (hash, len),
            (
                <[u8; 32]>::from(Sha256::digest(&plaintext)),
                plaintext.len()
            )
        );

        // Sealed by the broker; opened here.
        let small = data(40_000);
        let by_broker = seal(&mut keys, &name, &small, &ctx, 0).await.unwrap();
        let (mut reader, header) =
            local_unsealer(&mut keys, Some(&name), &local_context(), &by_broker[..])
                .await
                .unwrap();
        assert_eq!(header.key_name(), name);
        let mut opened = Vec::new();
        reader.read_to_end(&mut opened).unwrap();
        assert_eq!(opened, small);

        // Another key expected: refused before the broker is asked.
        let err = local_unsealer(&mut keys, Some("other"), &local_context(), &sealed[..])
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Input { .. }), "{err}");
        assert!(err.to_string().contains("not \"other\""), "{err}");

        // Another context: the data key opens, the first chunk does not.
        let (mut reader, _) =
            local_unsealer(&mut keys, None, &EncryptionContext::new(), &sealed[..])
                .await
                .unwrap();
        let mut opened = Vec::new();
        let err = reader.read_to_end(&mut opened).unwrap_err();
        assert!(
            err.to_string().contains("chunk 0 failed authentication"),
            "{err}"
        );
        assert!(opened.is_empty());
    }
    // A key that is not a wrap-unwrap key gives no data key for sealing.
    keys.create_key(create(
        "sign",
        pb::KeyAlgorithm::EcP256,
        pb::KeyPurpose::SignVerify,
        "softhsm",
    ))
    .await
    .unwrap();
    let err = local_sealer(&mut keys, "sign", 0, &local_context(), Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition), "{err}");
}
