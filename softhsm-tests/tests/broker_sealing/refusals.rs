//! Every refusal an adversary's envelope earns, each with its precise error, and nothing
//! opened: truncation, swapped, appended and altered chunks, a wrong context, a wrong key,
//! a retired version, an unknown format version, and a TPM envelope after a PCR extend.

use sealed_format::Header;
use tonic::Code;

use super::*;

/// 5000 bytes in chunks of 1024: four full chunks and a final one of 904.
const LEN: usize = 5000;
const FULL: usize = SMALL_CHUNK as usize + 16;

fn refused(result: Result<Vec<u8>, tonic::Status>, code: Code, says: &str) {
    match result {
        Ok(_) => panic!("opened; expected {code:?} saying {says:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(says),
                "{status:?} should say {says:?}"
            );
        }
    }
}

/// The envelope's payload chunks, after its header.
fn chunks(sealed: &[u8]) -> (usize, Vec<Vec<u8>>) {
    let (_, len) = Header::parse(sealed).unwrap();
    (
        len,
        sealed[len..].chunks(FULL).map(<[u8]>::to_vec).collect(),
    )
}

fn joined(header: &[u8], chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = header.to_vec();
    chunks.iter().for_each(|c| out.extend_from_slice(c));
    out
}

/// Unseals unary and streamed; both must refuse alike.
async fn both_refuse(
    keys: &mut Keys,
    name: &str,
    sealed: &[u8],
    ctx: &HashMap<String, String>,
    code: Code,
    says: &str,
) {
    refused(unseal(keys, name, sealed, ctx).await, code, says);
    let streamed = unseal_stream(keys, name, ctx, sealed, 700)
        .await
        .map(|_| Vec::new());
    refused(streamed, code, says);
}

#[tokio::test(flavor = "multi_thread")]
async fn altered_envelopes_are_refused_precisely_and_open_nothing() {
    let broker = BrokerProcess::start();
    let mut keys = admin(&broker).await;
    wrap_key(&mut keys, "vault", "softhsm").await;
    let ctx = context(&[("tenant", "blue")]);
    let sealed = seal(&mut keys, "vault", &data(LEN), &ctx, SMALL_CHUNK)
        .await
        .unwrap();
    let (header_len, parts) = chunks(&sealed);
    let header = &sealed[..header_len];
    assert_eq!(parts.len(), 5);
    let k = &mut keys;

    // Truncation: the final chunk dropped (the stream ends on a chunk boundary).
    let cut = joined(header, &parts[..4]);
    both_refuse(k, "vault", &cut, &ctx, Code::InvalidArgument, "truncated").await;
    // Truncation inside the final chunk.
    let cut = &sealed[..sealed.len() - 5];
    both_refuse(
        k,
        "vault",
        cut,
        &ctx,
        Code::InvalidArgument,
        "chunk 4, the final one",
    )
    .await;
    // Only the header.
    both_refuse(k, "vault", header, &ctx, Code::InvalidArgument, "truncated").await;

    // Two chunks swapped.
    let mut swapped = parts.clone();
    swapped.swap(1, 2);
    let swapped = joined(header, &swapped);
    both_refuse(
        k,
        "vault",
        &swapped,
        &ctx,
        Code::InvalidArgument,
        "chunk 1 failed authentication",
    )
    .await;

    // A chunk appended after the final one (a copy of chunk 1).
    let mut longer = parts.clone();
    longer.push(parts[1].clone());
    let longer = joined(header, &longer);
    both_refuse(
        k,
        "vault",
        &longer,
        &ctx,
        Code::InvalidArgument,
        "chunk 4 failed authentication",
    )
    .await;

    // One bit flipped in a chunk, in the header's bound fields, and in the wrapped key.
    let mut flipped = sealed.clone();
    flipped[header_len + 2 * FULL + 100] ^= 0x01;
    both_refuse(
        k,
        "vault",
        &flipped,
        &ctx,
        Code::InvalidArgument,
        "chunk 2 failed authentication",
    )
    .await;
    let mut flipped = sealed.clone();
    let prefix_at = header_len - 2 - 40 - 7; // the nonce prefix, before the wrapped key
    flipped[prefix_at] ^= 0x80;
    both_refuse(
        k,
        "vault",
        &flipped,
        &ctx,
        Code::InvalidArgument,
        "chunk 0 failed authentication",
    )
    .await;
    let mut flipped = sealed.clone();
    flipped[header_len - 1] ^= 0x01;
    both_refuse(
        k,
        "vault",
        &flipped,
        &ctx,
        Code::InvalidArgument,
        "wrapped data key does not open",
    )
    .await;

    // A wrong, partial or missing encryption context.
    for wrong in [
        context(&[("tenant", "red")]),
        context(&[("tenant", "blue"), ("extra", "x")]),
        context(&[]),
    ] {
        both_refuse(
            k,
            "vault",
            &sealed,
            &wrong,
            Code::InvalidArgument,
            "chunk 0 failed authentication",
        )
        .await;
    }

    // An unknown format version.
    let mut future = sealed.clone();
    future[4] = 2;
    both_refuse(
        k,
        "vault",
        &future,
        &ctx,
        Code::InvalidArgument,
        "unknown sealed-data format version 2",
    )
    .await;
    // Not sealed data at all.
    both_refuse(
        k,
        "vault",
        b"PK\x03\x04 a zip file",
        &ctx,
        Code::InvalidArgument,
        "KBSE",
    )
    .await;

    // Nothing was damaged: the original still opens.
    assert_eq!(unseal(k, "vault", &sealed, &ctx).await.unwrap(), data(LEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn another_key_a_retired_version_and_the_wrong_purpose_are_refused() {
    let broker = BrokerProcess::start();
    let mut keys = admin(&broker).await;
    wrap_key(&mut keys, "vault", "softhsm").await;
    wrap_key(&mut keys, "other", "softhsm").await;
    let ctx = context(&[("tenant", "blue")]);
    let sealed = seal(&mut keys, "vault", b"payroll", &ctx, 0).await.unwrap();

    // Presented as another key's: refused by name, before any unwrapping.
    refused(
        unseal(&mut keys, "other", &sealed, &ctx).await,
        Code::InvalidArgument,
        "sealed under key \"vault\", not \"other\"",
    );
    // The header rewritten to name the other key: its wrapping does not open there.
    let (header, len) = Header::parse(&sealed).unwrap();
    let forged = Header::new(
        header.kek(),
        "other",
        1,
        header.chunk_size(),
        header.nonce_prefix(),
        header.wrapped_key().to_vec(),
    )
    .unwrap();
    let mut forged_env = forged.encode();
    forged_env.extend_from_slice(&sealed[len..]);
    refused(
        unseal(&mut keys, "other", &forged_env, &ctx).await,
        Code::InvalidArgument,
        "wrapped data key does not open under key \"other\" version 1",
    );
    // An unknown key.
    refused(
        unseal(&mut keys, "nobody", &sealed, &ctx).await,
        Code::NotFound,
        "nobody",
    );

    // Sealing under a key that is not a key-encryption key.
    keys.create_key(create(
        "aes",
        pb::KeyAlgorithm::Aes256,
        pb::KeyPurpose::EncryptDecrypt,
        "softhsm",
    ))
    .await
    .unwrap();
    refused(
        seal(&mut keys, "aes", b"x", &ctx, 0).await,
        Code::FailedPrecondition,
        "is for encrypt-decrypt",
    );
    // More than Seal takes in one message; a chunk size out of bounds.
    refused(
        seal(&mut keys, "vault", &vec![0; 65_000], &ctx, SMALL_CHUNK).await,
        Code::InvalidArgument,
        "SealStream",
    );
    refused(
        seal(&mut keys, "vault", b"x", &ctx, 512).await,
        Code::InvalidArgument,
        "chunk_size",
    );
    // Decrypt opens a header's data key, never a whole envelope.
    let whole = keys
        .decrypt(pb::DecryptRequest {
            name: "vault".into(),
            ciphertext: sealed.clone(),
            aad: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(whole.code(), Code::InvalidArgument);
    assert!(whole.message().contains("Unseal"), "{whole:?}");

    // A retired version: rotate, retire version 1, and its envelopes no longer open.
    keys.rotate_key(pb::KeyRef {
        name: "vault".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        unseal(&mut keys, "vault", &sealed, &ctx).await.unwrap(),
        b"payroll"
    );
    keys.retire_key_version(pb::KeyVersionRef {
        name: "vault".into(),
        version: 1,
    })
    .await
    .unwrap();
    refused(
        unseal(&mut keys, "vault", &sealed, &ctx).await,
        Code::FailedPrecondition,
        "version 1 of key \"vault\" is retired",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tpm_envelope_is_refused_after_a_pcr_extend_until_the_key_is_rotated() {
    let mut broker = BrokerProcess::start();
    let mut keys = admin(&broker).await;
    wrap_key(&mut keys, "boot-bound", "swtpm").await;
    let ctx = context(&[("disk", "data")]);
    let sealed = seal(&mut keys, "boot-bound", b"volume key", &ctx, 0)
        .await
        .unwrap();
    assert_eq!(
        unseal(&mut keys, "boot-bound", &sealed, &ctx)
            .await
            .unwrap(),
        b"volume key"
    );

    // The state changes: PCR 16 is extended. The fixture's `[[tpm]] seal_pcrs` adds it to
    // the default 0, 2, 4 and 7, so this also shows that the setting is what binds.
    broker.stop();
    broker
        .tpm
        .tpm2_tool(&["tpm2_pcrextend", &format!("16:sha256={}", "ab".repeat(32))]);
    broker.spawn();
    let mut keys = admin(&broker).await;
    refused(
        unseal(&mut keys, "boot-bound", &sealed, &ctx).await,
        Code::FailedPrecondition,
        "PCRs [16] no longer hold the values",
    );
    // Sealing to a state the machine has left is refused too: nothing could open it.
    refused(
        seal(&mut keys, "boot-bound", b"x", &ctx, 0).await,
        Code::FailedPrecondition,
        "PCRs [16] no longer hold the values",
    );
    // A new version binds the state of now.
    keys.rotate_key(pb::KeyRef {
        name: "boot-bound".into(),
    })
    .await
    .unwrap();
    let resealed = seal(&mut keys, "boot-bound", b"x", &ctx, 0).await.unwrap();
    assert_eq!(
        unseal(&mut keys, "boot-bound", &resealed, &ctx)
            .await
            .unwrap(),
        b"x"
    );
    // The old envelope still does not open.
    refused(
        unseal(&mut keys, "boot-bound", &sealed, &ctx).await,
        Code::FailedPrecondition,
        "PCRs [16]",
    );
}
