//! Releases refused: without attestation, outside the trusted measurement, to another
//! identity, without a KEM key, for a disabled version or an unknown secret.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn secrets_go_only_to_attested_workloads_with_the_trusted_measurement() {
    let broker = BrokerProcess::start();
    put(&broker, "app/db-password", b"s3cret").await;

    // No attestation: the policy asks for it.
    let err = get(&broker, "workload", None, "app/db-password", 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Attested, with a measurement the policy does not trust.
    let untrusted = attested_on_bootstrap(&broker, &"11".repeat(48)).await;
    let err = get(
        &broker,
        "workload",
        Some(&untrusted.token),
        "app/db-password",
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // The same evidence with the trusted measurement gets it on that connection.
    let trusted_here = attested_on_bootstrap(&broker, TRUSTED_MEASUREMENT).await;
    get(
        &broker,
        "workload",
        Some(&trusted_here.token),
        "app/db-password",
        0,
    )
    .await
    .unwrap();

    // Another identity: a stranger has no policy at all; the admin's own connection
    // cannot use the workload's token, which is bound to the workload's key.
    let trusted = attested(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    let err = get(
        &broker,
        "stranger",
        Some(&trusted.token),
        "app/db-password",
        0,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err.code(), Code::PermissionDenied | Code::Unauthenticated),
        "{err:?}"
    );
    let err = get(
        &broker,
        "workload",
        Some(&trusted.token),
        "app/db-password",
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Outside the names the policy gives it, even attested.
    put(&broker, "ops/root-password", b"no").await;
    let err = get(
        &broker,
        "holder",
        Some(&trusted.token),
        "ops/root-password",
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A token whose evidence bound no KEM key: nothing to seal to.
    let no_kem = attested(&broker, "no-kem", TRUSTED_MEASUREMENT, false).await;
    let err = get(&broker, "no-kem", Some(&no_kem.token), "app/db-password", 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("KEM"), "{err:?}");

    // The workload administers nothing.
    let err = secrets(&broker, "workload")
        .await
        .put_secret(pb::PutSecretRequest {
            name: "app/mine".into(),
            value: b"x".to_vec(),
            description: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_versions_and_unknown_secrets_are_not_released() {
    let broker = BrokerProcess::start();
    put(&broker, "app/rotating", b"one").await;
    let admin = || async { secrets(&broker, "admin").await };
    admin()
        .await
        .rotate_secret(pb::RotateSecretRequest {
            name: "app/rotating".into(),
            value: b"two".to_vec(),
        })
        .await
        .unwrap();
    let workload = attested(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    let token = Some(workload.token.as_str());
    let version = |v: u32| pb::SecretVersionRequest {
        name: "app/rotating".into(),
        version: v,
    };

    let disabled = admin()
        .await
        .disable_secret_version(version(2))
        .await
        .unwrap()
        .into_inner();
    assert!(!disabled.enabled);
    let err = get(&broker, "holder", token, "app/rotating", 2)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("disabled"), "{err:?}");
    // The newest enabled version is what "newest" means.
    assert_eq!(
        get(&broker, "holder", token, "app/rotating", 0)
            .await
            .unwrap()
            .version,
        1
    );
    admin()
        .await
        .disable_secret_version(version(1))
        .await
        .unwrap();
    let err = get(&broker, "holder", token, "app/rotating", 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    admin()
        .await
        .enable_secret_version(version(2))
        .await
        .unwrap();
    assert_eq!(
        get(&broker, "holder", token, "app/rotating", 0)
            .await
            .unwrap()
            .version,
        2
    );

    let err = get(&broker, "holder", token, "app/bad name", 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = get(&broker, "holder", token, "app/unknown", 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = get(&broker, "holder", token, "app/rotating", 9)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Listing shows names and versions, never values.
    let listed = admin()
        .await
        .list_secrets(pb::ListSecretsRequest {
            prefix: "app/".into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.secrets.len(), 1);
    assert_eq!(listed.secrets[0].versions.len(), 2);

    // Deleted: gone for good.
    admin()
        .await
        .delete_secret(pb::DeleteSecretRequest {
            name: "app/rotating".into(),
        })
        .await
        .unwrap();
    let err = get(&broker, "holder", token, "app/rotating", 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Bad input changes nothing. A value over 64 KiB does not even pass the transport's
    // message limit (OUT_OF_RANGE); the service's own bound is the same.
    for (name, value, code) in [
        ("", b"v".to_vec(), Code::InvalidArgument),
        ("bad name", b"v".to_vec(), Code::InvalidArgument),
        ("app/ok", Vec::new(), Code::InvalidArgument),
        ("app/big", vec![0; 65 * 1024], Code::OutOfRange),
    ] {
        let err = admin()
            .await
            .put_secret(pb::PutSecretRequest {
                name: name.into(),
                value,
                description: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{name:?}: {err:?}");
    }
    let listed = admin()
        .await
        .list_secrets(pb::ListSecretsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.secrets.is_empty(), "nothing was stored: {listed:?}");
    let err = admin()
        .await
        .put_secret(pb::PutSecretRequest {
            name: "app/dup".into(),
            value: b"1".to_vec(),
            description: String::new(),
        })
        .await
        .map(drop);
    assert!(err.is_ok());
    let err = admin()
        .await
        .put_secret(pb::PutSecretRequest {
            name: "app/dup".into(),
            value: b"2".to_vec(),
            description: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
}
