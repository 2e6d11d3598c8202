//! Dynamic secrets made for this workload (docs/leases.md): `SecretService.GenerateSecret`
//! on a connection with the issued certificate, presenting the attestation token, and the
//! lease calls. The answer is checked before it is opened: its lease must be on the role
//! asked for and issued to this workload, and its `info` must be the one
//! `attest::release::lease_info` makes for that lease and this workload's SPIFFE ID.

use attest::release::{KemKeyPair, Sealed, lease_info};
use keybroker_api::v1 as pb;
use keybroker_api::v1::secret_service_client::SecretServiceClient;
use zeroize::Zeroizing;

use super::agent::with_attestation;
use super::{Agent, ClientError, Credentials, Step};

/// A dynamic secret made for this workload, opened. `Debug` never shows the value.
pub struct LeasedSecret {
    /// The lease: its id, role, holder and times.
    pub lease: pb::LeaseInfo,
    /// What is not secret (a database user name, host, port, database).
    pub attributes: std::collections::BTreeMap<String, String>,
    /// The value (random bytes, or a database password), wiped on drop.
    pub value: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for LeasedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedSecret")
            .field("lease", &self.lease)
            .field("attributes", &self.attributes)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// A new lease on `role` (`ttl_seconds` 0: the role's default), opened with the KEM
    /// key the evidence bound ([`open_leased`]).
    ///
    /// # Errors
    /// [`ClientError`] at [`Step::Connect`] or [`Step::Secret`].
    pub async fn generate_secret(
        &self,
        creds: &Credentials,
        role: &str,
        ttl_seconds: u32,
    ) -> Result<LeasedSecret, ClientError> {
        let request = pb::GenerateSecretRequest {
            role: role.to_string(),
            ttl_seconds,
        };
        let answer = self
            .secrets(creds)
            .await?
            .generate_secret(with_attestation(request, &creds.token, Step::Secret)?)
            .await
            .map_err(ClientError::refused(Step::Secret))?
            .into_inner();
        open_leased(&creds.kem, &creds.spiffe_id, role, answer)
    }

    /// Extends this workload's lease `lease_id` by `increment_seconds` from now (0: the
    /// role's default).
    ///
    /// # Errors
    /// [`ClientError`] at [`Step::Connect`] or [`Step::Secret`].
    pub async fn renew_lease(
        &self,
        creds: &Credentials,
        lease_id: &str,
        increment_seconds: u32,
    ) -> Result<pb::LeaseInfo, ClientError> {
        let request = pb::RenewLeaseRequest {
            lease_id: lease_id.to_string(),
            increment_seconds,
        };
        Ok(self
            .secrets(creds)
            .await?
            .renew_lease(with_attestation(request, &creds.token, Step::Secret)?)
            .await
            .map_err(ClientError::refused(Step::Secret))?
            .into_inner())
    }

    /// Ends this workload's lease `lease_id` now.
    ///
    /// # Errors
    /// [`ClientError`] at [`Step::Connect`] or [`Step::Secret`].
    pub async fn revoke_lease(
        &self,
        creds: &Credentials,
        lease_id: &str,
    ) -> Result<(), ClientError> {
        let request = pb::RevokeLeaseRequest {
            lease_id: lease_id.to_string(),
        };
        self.secrets(creds)
            .await?
            .revoke_lease(with_attestation(request, &creds.token, Step::Secret)?)
            .await
            .map_err(ClientError::refused(Step::Secret))?;
        Ok(())
    }

    async fn secrets(
        &self,
        creds: &Credentials,
    ) -> Result<SecretServiceClient<tonic::transport::Channel>, ClientError> {
        Ok(SecretServiceClient::new(self.issued_channel(creds).await?))
    }
}

/// Checks `answer` to a `GenerateSecret` for `role`, made as `spiffe_id`, then opens it
/// with `kem`: the lease must be on `role` (its id `<role>/...`) and held by `spiffe_id`,
/// and the `info` exactly what `attest::release::lease_info` makes for them.
///
/// # Errors
/// [`ClientError::Answer`] at [`Step::Secret`]. The message never contains the value.
pub fn open_leased(
    kem: &KemKeyPair,
    spiffe_id: &str,
    role: &str,
    answer: pb::LeasedSecret,
) -> Result<LeasedSecret, ClientError> {
    let refuse = |reason: String| Err(ClientError::answer(Step::Secret, reason));
    let Some(lease) = answer.lease else {
        return refuse("the answer carries no lease".into());
    };
    let on_role = lease
        .lease_id
        .strip_prefix(role)
        .is_some_and(|rest| rest.starts_with('/'));
    if lease.role != role || !on_role {
        return refuse(format!(
            "asked for a lease on {role:?}, the broker answered with {:?}",
            lease.lease_id
        ));
    }
    if lease.owner != spiffe_id {
        return refuse(format!("the lease was issued to {:?}", lease.owner));
    }
    let info = lease_info(&lease.lease_id, spiffe_id)
        .map_err(|e| ClientError::answer(Step::Secret, e.to_string()))?;
    if answer.info != info {
        return refuse(
            "the secret was sealed for another lease or workload (its info differs)".into(),
        );
    }
    let sealed = Sealed {
        enc: answer.enc,
        ciphertext: answer.ciphertext,
    };
    let value = kem.open(&sealed, &info).map_err(|_| {
        ClientError::answer(
            Step::Secret,
            "the secret does not open with this workload's KEM key",
        )
    })?;
    Ok(LeasedSecret {
        lease,
        attributes: answer.attributes.into_iter().collect(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKLOAD: &str = "spiffe://td/w";
    const ROLE: &str = "db/app";
    const ID: &str = "db/app/0123456789abcdef0123456789abcdef";

    fn answer(kem: &KemKeyPair, id: &str, owner: &str, sealed_for: &str) -> pb::LeasedSecret {
        let info = lease_info(id, sealed_for).unwrap();
        let sealed = attest::release::seal(&kem.public(), &info, b"s3cret").unwrap();
        pb::LeasedSecret {
            lease: Some(pb::LeaseInfo {
                lease_id: id.into(),
                role: id.rsplit_once('/').unwrap().0.into(),
                owner: owner.into(),
                ..Default::default()
            }),
            enc: sealed.enc,
            ciphertext: sealed.ciphertext,
            info,
            attributes: [("username".to_string(), "kb_x".to_string())].into(),
        }
    }

    fn refusal(result: Result<LeasedSecret, ClientError>) -> String {
        match result {
            Err(ClientError::Answer {
                step: Step::Secret,
                reason,
            }) => reason,
            other => panic!("expected a refused answer, got {other:?}"),
        }
    }

    #[test]
    fn a_lease_for_this_workload_and_role_opens() {
        let kem = KemKeyPair::generate();
        let leased =
            open_leased(&kem, WORKLOAD, ROLE, answer(&kem, ID, WORKLOAD, WORKLOAD)).unwrap();
        assert_eq!(leased.value.as_slice(), b"s3cret");
        assert_eq!(leased.attributes["username"], "kb_x");
        assert!(!format!("{leased:?}").contains("s3cret"));
    }

    #[test]
    fn a_lease_on_another_role_or_for_another_workload_is_refused() {
        let kem = KemKeyPair::generate();
        let other_role = "db/application/0123456789abcdef0123456789abcdef";
        let reason = refusal(open_leased(
            &kem,
            WORKLOAD,
            ROLE,
            answer(&kem, other_role, WORKLOAD, WORKLOAD),
        ));
        assert!(reason.contains("db/application"), "{reason}");
        let reason = refusal(open_leased(
            &kem,
            WORKLOAD,
            ROLE,
            answer(&kem, ID, "spiffe://td/x", WORKLOAD),
        ));
        assert!(reason.contains("issued to"), "{reason}");
        let reason = refusal(open_leased(
            &kem,
            WORKLOAD,
            ROLE,
            answer(&kem, ID, WORKLOAD, "spiffe://td/x"),
        ));
        assert!(reason.contains("info differs"), "{reason}");
    }

    #[test]
    fn a_lease_sealed_to_another_kem_key_does_not_open() {
        let (kem, other) = (KemKeyPair::generate(), KemKeyPair::generate());
        let reason = refusal(open_leased(
            &kem,
            WORKLOAD,
            ROLE,
            answer(&other, ID, WORKLOAD, WORKLOAD),
        ));
        assert!(reason.contains("does not open"), "{reason}");
    }
}
