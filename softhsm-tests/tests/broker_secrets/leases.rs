//! Dynamic secrets from the random engine (`[[secrets.random]] app/token` in the test
//! configuration): leased to the attested caller, renewed, revoked, expired and swept, and
//! refused to anyone else.

use super::*;

const ROLE: &str = "app/token";

async fn generate(
    broker: &BrokerProcess,
    who: &str,
    token: Option<&str>,
    role: &str,
    ttl_seconds: u32,
) -> Result<pb::LeasedSecret, tonic::Status> {
    let message = pb::GenerateSecretRequest {
        role: role.into(),
        ttl_seconds,
    };
    let request = maybe_token(message, token);
    Ok(secrets(broker, who)
        .await
        .generate_secret(request)
        .await?
        .into_inner())
}

async fn renew(
    broker: &BrokerProcess,
    who: &str,
    token: &str,
    lease_id: &str,
) -> Result<pb::LeaseInfo, tonic::Status> {
    let request = with_token(
        pb::RenewLeaseRequest {
            lease_id: lease_id.into(),
            increment_seconds: 100,
        },
        token,
    );
    Ok(secrets(broker, who)
        .await
        .renew_lease(request)
        .await?
        .into_inner())
}

async fn revoke(
    broker: &BrokerProcess,
    who: &str,
    token: Option<&str>,
    lease_id: &str,
) -> Result<(), tonic::Status> {
    let message = pb::RevokeLeaseRequest {
        lease_id: lease_id.into(),
    };
    let request = maybe_token(message, token);
    secrets(broker, who).await.revoke_lease(request).await?;
    Ok(())
}

async fn leases(broker: &BrokerProcess) -> Vec<pb::LeaseInfo> {
    secrets(broker, "admin")
        .await
        .list_leases(pb::ListLeasesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .leases
}

#[tokio::test(flavor = "multi_thread")]
async fn a_random_secret_is_leased_renewed_within_its_maximum_and_revoked() {
    let broker = BrokerProcess::start();
    let workload = attested(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    let answer = generate(&broker, "holder", Some(&workload.token), ROLE, 30)
        .await
        .unwrap();
    let lease = answer.lease.clone().unwrap();
    assert_eq!(
        (lease.role.as_str(), lease.owner.as_str()),
        (ROLE, WORKLOAD)
    );
    assert!(lease.lease_id.starts_with("app/token/"), "{lease:?}");
    assert_eq!(lease.expires_at - lease.created_at, 30);
    assert_eq!(lease.max_expires_at - lease.created_at, 120);
    let info = attest::release::lease_info(&lease.lease_id, WORKLOAD).unwrap();
    assert_eq!(answer.info, info, "the info names the lease and the caller");
    let sealed = attest::release::Sealed {
        enc: answer.enc.clone(),
        ciphertext: answer.ciphertext.clone(),
    };
    let value = workload.kem.open(&sealed, &info).unwrap();
    assert_eq!(value.len(), 32, "the role's default size");
    // Another KEM key cannot open it.
    assert!(KemKeyPair::generate().open(&sealed, &info).is_err());
    // A second lease is another value.
    let second = generate(&broker, "holder", Some(&workload.token), ROLE, 0)
        .await
        .unwrap();
    let second_lease = second.lease.clone().unwrap();
    assert_eq!(
        second_lease.expires_at - second_lease.created_at,
        60,
        "the default TTL"
    );
    let second_info = attest::release::lease_info(&second_lease.lease_id, WORKLOAD).unwrap();
    let second_value = workload
        .kem
        .open(
            &attest::release::Sealed {
                enc: second.enc,
                ciphertext: second.ciphertext,
            },
            &second_info,
        )
        .unwrap();
    assert_ne!(value.as_slice(), second_value.as_slice());
    // A TTL past the maximum is cut to it.
    let long = generate(&broker, "holder", Some(&workload.token), ROLE, 100_000)
        .await
        .unwrap()
        .lease
        .unwrap();
    assert_eq!(long.expires_at - long.created_at, 120);

    // Renewal: 100 s from now, never past the maximum.
    let renewed = renew(&broker, "holder", &workload.token, &lease.lease_id)
        .await
        .unwrap();
    assert!(renewed.expires_at > lease.expires_at, "{renewed:?}");
    assert!(renewed.expires_at <= lease.max_expires_at, "{renewed:?}");

    // The administrator sees the three leases, never a value.
    let listed = leases(&broker).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|l| l.owner == WORKLOAD && l.revoked_at == 0)
    );

    // Revoked: renewal is refused, and the sweep forgets it.
    revoke(&broker, "holder", Some(&workload.token), &lease.lease_id)
        .await
        .unwrap();
    let err = renew(&broker, "holder", &workload.token, &lease.lease_id)
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::FailedPrecondition | Code::NotFound),
        "{err:?}"
    );
    let listed = leases(&broker).await;
    assert!(
        listed.iter().all(|l| l.lease_id != lease.lease_id),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_are_refused_without_attestation_outside_policy_and_to_other_identities() {
    let broker = BrokerProcess::start();
    // No attestation: the policy asks for it.
    let err = generate(&broker, "workload", None, ROLE, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // A measurement outside the policy.
    let untrusted = attested_on_bootstrap(&broker, &"11".repeat(48)).await;
    let err = generate(&broker, "workload", Some(&untrusted.token), ROLE, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // A role that is not configured.
    let workload = attested(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    let err = generate(&broker, "holder", Some(&workload.token), "app/nothing", 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // A token without a KEM key has nothing to seal to.
    let no_kem = attested(&broker, "no-kem", TRUSTED_MEASUREMENT, false).await;
    let err = generate(&broker, "no-kem", Some(&no_kem.token), ROLE, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    let lease = generate(&broker, "holder", Some(&workload.token), ROLE, 0)
        .await
        .unwrap()
        .lease
        .unwrap();
    // Another identity, even one the policy lets do everything, cannot renew or revoke
    // it: only the holder can.
    let err = revoke(&broker, "admin", None, &lease.lease_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("another identity"), "{err:?}");
    // A stranger has no policy; a made-up or malformed lease id is refused.
    let err = revoke(&broker, "stranger", None, &lease.lease_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let made_up = format!("{ROLE}/{}", "ab".repeat(16));
    let err = renew(&broker, "holder", &workload.token, &made_up)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = renew(&broker, "holder", &workload.token, "app/token")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // The lease is untouched by all of that.
    let listed = leases(&broker).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].revoked_at, 0);

    // The administrator can revoke every lease of the role at once.
    let revoked = secrets(&broker, "admin")
        .await
        .revoke_leases(pb::RevokeLeasesRequest { role: ROLE.into() })
        .await
        .unwrap()
        .into_inner()
        .revoked;
    assert_eq!(revoked, 1);
    let err = renew(&broker, "holder", &workload.token, &lease.lease_id)
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::FailedPrecondition | Code::NotFound),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lease_cannot_be_renewed_and_is_swept() {
    let broker = BrokerProcess::start();
    let workload = attested(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    let lease = generate(&broker, "holder", Some(&workload.token), ROLE, 1)
        .await
        .unwrap()
        .lease
        .unwrap();
    // The sweep runs every second in the test configuration.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !leases(&broker).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired lease was never swept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let err = renew(&broker, "holder", &workload.token, &lease.lease_id)
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::FailedPrecondition | Code::NotFound),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_holds_its_limit_of_leases_is_refused_until_one_ends() {
    let broker = BrokerProcess::start();
    let workload = attested(&broker, "holder", TRUSTED_MEASUREMENT, true).await;
    let token = Some(workload.token.as_str());
    // `app/capped` allows two live leases per caller.
    let first = generate(&broker, "holder", token, "app/capped", 0)
        .await
        .unwrap()
        .lease
        .unwrap();
    generate(&broker, "holder", token, "app/capped", 0)
        .await
        .unwrap();
    let err = generate(&broker, "holder", token, "app/capped", 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("2 live leases"), "{err:?}");
    // Nothing was recorded for the refused one; other roles still serve the caller.
    assert_eq!(leases(&broker).await.len(), 2);
    generate(&broker, "holder", token, ROLE, 0).await.unwrap();
    // Once one ends, there is room again.
    revoke(&broker, "holder", token, &first.lease_id)
        .await
        .unwrap();
    generate(&broker, "holder", token, "app/capped", 0)
        .await
        .unwrap();
}
