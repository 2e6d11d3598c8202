//! Round trips through the real broker, under both kinds of key-encryption key.

use std::io::{Read, Write};

use sealed_format::{DataKey, EncryptionContext, Header, KekKind, SealWriter, UnsealReader};

use super::*;

/// Sizes around the chunk boundaries of [`SMALL_CHUNK`], and one chunk of the default
/// size. (The fixture's messages are at most 64 KiB; the default size's boundaries go
/// through the streams below.)
const SIZES: [(usize, u32); 7] = [
    (0, SMALL_CHUNK),
    (1, SMALL_CHUNK),
    (1023, SMALL_CHUNK),
    (1024, SMALL_CHUNK),
    (1025, SMALL_CHUNK),
    (50_000, SMALL_CHUNK),
    (50_000, 0),
];

/// Data in one streamed message: under the fixture's 64 KiB messages.
const PIECE: usize = 60 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn seal_and_unseal_round_trip_under_an_hsm_key_and_a_tpm_key_at_every_boundary() {
    let broker = BrokerProcess::start();
    let mut keys = admin(&broker).await;
    let ctx = context(&[("tenant", "blue"), ("purpose", "backup")]);
    for backend in BACKENDS {
        let name = format!("vault-{backend}");
        wrap_key(&mut keys, &name, backend).await;
        for (len, chunk) in SIZES {
            let plaintext = data(len);
            let sealed = seal(&mut keys, &name, &plaintext, &ctx, chunk)
                .await
                .unwrap();
            let (header, _) = Header::parse(&sealed).unwrap();
            let expected_kek = match backend {
                "softhsm" => KekKind::HsmAesKeyWrap,
                _ => KekKind::TpmSealed,
            };
            assert_eq!(header.kek(), expected_kek, "{backend}");
            assert_eq!(
                (header.key_name(), header.key_version()),
                (name.as_str(), 1)
            );
            let opened = unseal(&mut keys, &name, &sealed, &ctx).await.unwrap();
            assert_eq!(opened, plaintext, "{backend}, {len} bytes");
            // The same bytes streamed, in messages that cut chunks anywhere.
            let (hash, got) = unseal_stream(&mut keys, &name, &ctx, &sealed, 777)
                .await
                .unwrap();
            assert_eq!(got, len);
            assert_eq!(hash, <[u8; 32]>::from(Sha256::digest(&plaintext)));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_hundred_mib_stream_through_the_broker_under_both_kinds_of_key() {
    let broker = BrokerProcess::start();
    let mut keys = admin(&broker).await;
    let ctx = context(&[("file", "db.tar")]);
    for backend in BACKENDS {
        let name = format!("bulk-{backend}");
        wrap_key(&mut keys, &name, backend).await;
        for len in [0, 1, 65535, 65536, 65537, 100 << 20] {
            let (sealed, hash) = seal_stream(&mut keys, &name, &ctx, len, PIECE)
                .await
                .unwrap();
            let chunks = len / 65536 + 1;
            assert!(sealed.len() > len + 16 * chunks, "{backend}: {len}");
            let (opened, got) = unseal_stream(&mut keys, &name, &ctx, &sealed, PIECE)
                .await
                .unwrap();
            assert_eq!((opened, got), (hash, len), "{backend}: {len} bytes");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_seals_locally_with_a_data_key_and_the_broker_opens_it_and_back() {
    let broker = BrokerProcess::start();
    let mut keys = admin(&broker).await;
    wrap_key(&mut keys, "local", "softhsm").await;
    let ctx = context(&[("app", "ledger")]);
    let mut local_ctx = EncryptionContext::new();
    local_ctx.insert("app", "ledger").unwrap();
    let plaintext = data(40_000);

    // GenerateDataKey: the data key and the header that holds it wrapped.
    let made = keys
        .generate_data_key(pb::GenerateDataKeyRequest {
            name: "local".into(),
            aad: Vec::new(),
            chunk_size: 4096,
        })
        .await
        .unwrap()
        .into_inner();
    let (header, len) = Header::parse(&made.ciphertext).unwrap();
    assert_eq!((len, header.chunk_size()), (made.ciphertext.len(), 4096));
    let key = DataKey::from_slice(&made.plaintext).unwrap();
    let mut writer = SealWriter::new(Vec::new(), &header, key, &local_ctx).unwrap();
    writer.write_all(&plaintext).unwrap();
    let sealed = writer.finish().unwrap();
    assert_eq!(
        unseal(&mut keys, "local", &sealed, &ctx).await.unwrap(),
        plaintext
    );

    // The other way: sealed by the broker, the data key recovered with Decrypt on the
    // header alone, opened here.
    let sealed = seal(&mut keys, "local", &plaintext, &ctx, 0).await.unwrap();
    let (header, len) = Header::parse(&sealed).unwrap();
    let opened_key = keys
        .decrypt(pb::DecryptRequest {
            name: "local".into(),
            ciphertext: sealed[..len].to_vec(),
            aad: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let key = DataKey::from_slice(&opened_key.plaintext).unwrap();
    let mut opened = Vec::new();
    UnsealReader::new(&sealed[len..], &header, &key, &local_ctx)
        .unwrap()
        .read_to_end(&mut opened)
        .unwrap();
    assert_eq!(opened, plaintext);

    // GenerateDataKeyWithoutPlaintext: a header only; its key opens with Decrypt later.
    let header_only = keys
        .generate_data_key_without_plaintext(pb::GenerateDataKeyRequest {
            name: "local".into(),
            aad: Vec::new(),
            chunk_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let (header, _) = Header::parse(&header_only.header).unwrap();
    assert_eq!((header.key_version(), header.chunk_size()), (1, 65536));
    let key = keys
        .decrypt(pb::DecryptRequest {
            name: "local".into(),
            ciphertext: header_only.header.clone(),
            aad: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key.plaintext.len(), 32);
}

/// 2 GiB each way through the broker under both kinds of key: `make bench` runs it (the
/// `sealing` bench measures the broker's memory meanwhile); too long for `make test`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "2 GiB each way: run by make bench"]
async fn two_gib_stream_through_the_broker_under_both_kinds_of_key() {
    let broker = BrokerProcess::start();
    let mut keys = admin(&broker).await;
    let ctx = context(&[("file", "image.raw")]);
    for backend in BACKENDS {
        let name = format!("huge-{backend}");
        wrap_key(&mut keys, &name, backend).await;
        let len = 2 << 30;
        let (sealed, hash) = seal_stream(&mut keys, &name, &ctx, len, PIECE)
            .await
            .unwrap();
        let (opened, got) = unseal_stream(&mut keys, &name, &ctx, &sealed, PIECE)
            .await
            .unwrap();
        assert_eq!((opened, got), (hash, len), "{backend}");
    }
}
