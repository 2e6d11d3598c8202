//! Secrets released to this workload (docs/secrets.md): `SecretService.GetSecret` on a
//! connection with the issued certificate, presenting the attestation token. The answer is
//! checked before it is opened: it must name the secret asked for, and its `info` must be
//! the one `attest::release::release_info` makes for that name, version and this workload's
//! SPIFFE ID, so a ciphertext meant for another secret or workload is never taken for this.

use attest::release::{KemKeyPair, Sealed, release_info};
use keybroker_api::v1 as pb;
use keybroker_api::v1::secret_service_client::SecretServiceClient;
use zeroize::Zeroizing;

use super::agent::with_attestation;
use super::{Agent, ClientError, Credentials, Step};

/// A secret the broker released to this workload, opened. `Debug` never shows the value.
pub struct ReleasedSecret {
    /// The secret's name.
    pub name: String,
    /// The version released (never 0: asking for 0 gets the newest enabled version).
    pub version: u32,
    /// The value, wiped on drop.
    pub value: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ReleasedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleasedSecret")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Version `version` of the secret `name` (0: the newest enabled version), asked for
    /// on a connection with the issued certificate, presenting the attestation token, and
    /// opened with the KEM key the evidence bound ([`open_released`]).
    ///
    /// # Errors
    /// [`ClientError`] naming [`Step::Connect`] or [`Step::Secret`]: the broker refused, or
    /// its answer is not for this secret and workload or does not open.
    pub async fn get_secret(
        &self,
        creds: &Credentials,
        name: &str,
        version: u32,
    ) -> Result<ReleasedSecret, ClientError> {
        let channel = self.issued_channel(creds).await?;
        let request = pb::GetSecretRequest {
            name: name.to_string(),
            version,
        };
        let answer = SecretServiceClient::new(channel)
            .get_secret(with_attestation(request, &creds.token, Step::Secret)?)
            .await
            .map_err(ClientError::refused(Step::Secret))?
            .into_inner();
        open_released(&creds.kem, &creds.spiffe_id, name, version, answer)
    }
}

/// Checks `answer` to a `GetSecret` for `asked_name` and `asked_version` (0: any), made as
/// `spiffe_id`, then opens it with `kem`. The answer must name the secret asked for, a
/// version (the one asked for, if any), and carry exactly the `info` that
/// `attest::release::release_info` makes for them and `spiffe_id`.
///
/// # Errors
/// [`ClientError::Answer`] at [`Step::Secret`] for an answer that fails a check or does
/// not open with `kem`. The message never contains the value.
pub fn open_released(
    kem: &KemKeyPair,
    spiffe_id: &str,
    asked_name: &str,
    asked_version: u32,
    answer: pb::SealedSecret,
) -> Result<ReleasedSecret, ClientError> {
    if answer.name != asked_name {
        return Err(ClientError::answer(
            Step::Secret,
            format!(
                "asked for secret {asked_name:?}, the broker answered with {:?}",
                answer.name
            ),
        ));
    }
    if answer.version == 0 || (asked_version != 0 && answer.version != asked_version) {
        return Err(ClientError::answer(
            Step::Secret,
            format!(
                "asked for version {asked_version} of {asked_name:?}, the broker answered \
                 with version {}",
                answer.version
            ),
        ));
    }
    let info = release_info(&answer.name, u64::from(answer.version), spiffe_id)
        .map_err(|e| ClientError::answer(Step::Secret, e.to_string()))?;
    if answer.info != info {
        return Err(ClientError::answer(
            Step::Secret,
            "the secret was sealed for another name, version or workload (its info differs)",
        ));
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
    Ok(ReleasedSecret {
        name: answer.name,
        version: answer.version,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKLOAD: &str = "spiffe://td/w";
    const VALUE: &[u8] = b"correct horse battery staple";

    /// What a broker answers for `name` and `version` released to `caller`, sealed to `kem`.
    fn answer(kem: &KemKeyPair, name: &str, version: u32, caller: &str) -> pb::SealedSecret {
        let info = release_info(name, u64::from(version), caller).unwrap();
        let sealed = attest::release::seal(&kem.public(), &info, VALUE).unwrap();
        pb::SealedSecret {
            name: name.to_string(),
            version,
            enc: sealed.enc,
            ciphertext: sealed.ciphertext,
            info,
        }
    }

    /// The reason of a refusal at [`Step::Secret`].
    fn refusal(result: Result<ReleasedSecret, ClientError>) -> String {
        match result {
            Err(ClientError::Answer {
                step: Step::Secret,
                reason,
            }) => reason,
            other => panic!("expected a refused answer, got {other:?}"),
        }
    }

    #[test]
    fn an_answer_for_what_was_asked_opens() {
        let kem = KemKeyPair::generate();
        for asked in [0, 3] {
            let answer = answer(&kem, "db/password", 3, WORKLOAD);
            let secret = open_released(&kem, WORKLOAD, "db/password", asked, answer).unwrap();
            assert_eq!(secret.name, "db/password");
            assert_eq!(secret.version, 3);
            assert_eq!(secret.value.as_slice(), VALUE);
        }
    }

    #[test]
    fn an_answer_for_another_secret_is_refused() {
        let kem = KemKeyPair::generate();
        let answer = answer(&kem, "db/other", 1, WORKLOAD);
        let reason = refusal(open_released(&kem, WORKLOAD, "db/password", 0, answer));
        assert!(reason.contains("db/other"), "{reason}");
    }

    #[test]
    fn an_answer_for_another_version_is_refused() {
        let kem = KemKeyPair::generate();
        let other = answer(&kem, "db/password", 3, WORKLOAD);
        let reason = refusal(open_released(&kem, WORKLOAD, "db/password", 2, other));
        assert!(reason.contains("version 3"), "{reason}");
        // A released version is never 0, whatever was asked.
        let zero = answer(&kem, "db/password", 0, WORKLOAD);
        refusal(open_released(&kem, WORKLOAD, "db/password", 0, zero));
    }

    #[test]
    fn an_answer_sealed_for_another_workload_is_refused_before_opening() {
        let kem = KemKeyPair::generate();
        let answer = answer(&kem, "db/password", 1, "spiffe://td/other");
        let reason = refusal(open_released(&kem, WORKLOAD, "db/password", 1, answer));
        assert!(reason.contains("info differs"), "{reason}");
    }

    #[test]
    fn an_answer_whose_info_was_changed_after_sealing_does_not_open() {
        let kem = KemKeyPair::generate();
        // Sealed for another workload, but claiming this one's info.
        let mut answer = answer(&kem, "db/password", 1, "spiffe://td/other");
        answer.info = release_info("db/password", 1, WORKLOAD).unwrap();
        let reason = refusal(open_released(&kem, WORKLOAD, "db/password", 1, answer));
        assert!(reason.contains("does not open"), "{reason}");
    }

    #[test]
    fn a_secret_sealed_to_another_kem_key_does_not_open() {
        let (kem, other) = (KemKeyPair::generate(), KemKeyPair::generate());
        let answer = answer(&other, "db/password", 1, WORKLOAD);
        let reason = refusal(open_released(&kem, WORKLOAD, "db/password", 1, answer));
        assert_eq!(
            reason,
            "the secret does not open with this workload's KEM key"
        );
    }

    #[test]
    fn debug_never_shows_the_value() {
        let secret = ReleasedSecret {
            name: "db/password".to_string(),
            version: 2,
            value: Zeroizing::new(VALUE.to_vec()),
        };
        let text = format!("{secret:?} {secret:#?}");
        assert!(text.contains("db/password"), "{text}");
        assert!(!text.contains("horse"), "{text}");
        assert!(!text.contains(&format!("{:?}", VALUE.to_vec())), "{text}");
    }
}
