//! Rewrap: after rotation, envelopes move to the new version without their payload being
//! sent or changed; the old version is retired and everything still opens.

use sealed_format::Header;
use tonic::Code;

use super::*;

async fn rewrap(keys: &mut Keys, name: &str, sealed: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    let (_, len) = Header::parse(sealed).unwrap();
    // Only the header goes to the broker.
    let reply = keys
        .rewrap(pb::RewrapRequest {
            name: name.into(),
            sealed: sealed[..len].to_vec(),
        })
        .await?
        .into_inner();
    assert_eq!(reply.replaced_len as usize, len);
    let mut out = reply.header.clone();
    out.extend_from_slice(&sealed[len..]);
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrap_moves_envelopes_to_the_new_version_and_the_old_one_can_be_retired() {
    let broker = BrokerProcess::start();
    let mut keys = admin(&broker).await;
    let ctx = context(&[("bucket", "archive")]);
    for backend in BACKENDS {
        let name = format!("archive-{backend}");
        wrap_key(&mut keys, &name, backend).await;
        let originals: Vec<Vec<u8>> = [0usize, 1, 50_000].into_iter().map(data).collect();
        let mut sealed = Vec::new();
        for p in &originals {
            sealed.push(seal(&mut keys, &name, p, &ctx, 0).await.unwrap());
        }
        // At the primary version already: the same header back.
        let same = rewrap(&mut keys, &name, &sealed[0]).await.unwrap();
        assert_eq!(same, sealed[0]);

        keys.rotate_key(pb::KeyRef { name: name.clone() })
            .await
            .unwrap();
        let mut moved = Vec::new();
        for s in &sealed {
            let r = rewrap(&mut keys, &name, s).await.unwrap();
            let (old, old_len) = Header::parse(s).unwrap();
            let (new, new_len) = Header::parse(&r).unwrap();
            assert_eq!((old.key_version(), new.key_version()), (1, 2));
            // The payload is byte for byte the same.
            assert_eq!(&r[new_len..], &s[old_len..], "{backend}");
            moved.push(r);
        }
        keys.retire_key_version(pb::KeyVersionRef {
            name: name.clone(),
            version: 1,
        })
        .await
        .unwrap();
        for (m, p) in moved.iter().zip(&originals) {
            assert_eq!(
                &unseal(&mut keys, &name, m, &ctx).await.unwrap(),
                p,
                "{backend}"
            );
        }
        // What was not rewrapped is gone with version 1, and cannot be rewrapped now.
        let err = unseal(&mut keys, &name, &sealed[2], &ctx)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("version 1 of key"), "{err:?}");
        let err = rewrap(&mut keys, &name, &sealed[2]).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    }
}
