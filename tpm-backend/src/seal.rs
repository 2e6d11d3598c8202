//! Sealing: up to 128 bytes bound to a PCR policy (and optionally an auth value), opened
//! only while the PCRs hold the values it was sealed to.
//!
//! The sealed object has no `userWithAuth`, so its policy is the only way in. Unsealing
//! runs the policy in a session salted with the SRK that encrypts the response, so the
//! secret crosses the bus encrypted. An auth value is proven with `PolicyAuthValue` (an
//! HMAC), never sent in the clear as `PolicyPassword` would; both give the same digest.
//! (With `PolicyPassword` and response encryption, ESAPI 3.2 and the TPM also disagree on
//! the decryption key: the unsealed bytes come back garbled.)

use secrecy::{ExposeSecret, SecretSlice, SecretString};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{ObjectHandle, SessionHandle};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{Auth, Digest, SensitiveData};
use zeroize::Zeroize;

use crate::blob::TpmBlob;
use crate::connection::{Connection, start_session};
use crate::error::{Result, TpmError, TssResultExt};
use crate::pcr::{self, PcrSelection, PcrValue};
use crate::policy::{PolicyDigest, pcr_policy_digest, pcr_values_digest};
use crate::templates;
use crate::worker::{Pending, Retry, TpmBackend};

/// Most bytes one sealed object holds.
pub const MAX_SEAL_LEN: usize = 128;

/// What sealed data is bound to.
#[derive(Debug, Clone)]
pub struct SealPolicy {
    /// The PCRs whose values must match.
    pub pcrs: PcrSelection,
    /// The values they must hold; `None` means their values now. Give future values to
    /// seal to a state the TPM will reach later (see [`crate::policy::extended`]).
    pub pcr_values: Option<Vec<PcrValue>>,
    /// An auth value that must also be presented, if any.
    pub auth: Option<SecretString>,
}

/// A sealed object as the caller stores it, with the PCR selection its policy replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBlob {
    object: TpmBlob,
    pcrs: PcrSelection,
    needs_auth: bool,
}

impl SealedBlob {
    /// The PCRs it is bound to.
    pub fn pcrs(&self) -> &PcrSelection {
        &self.pcrs
    }

    /// Whether unsealing needs an auth value too.
    pub fn needs_auth(&self) -> bool {
        self.needs_auth
    }

    /// Stored form: PCR bitmap (3 bytes), auth flag (1 byte), then the object blob.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.pcrs.to_bytes().to_vec();
        out.push(u8::from(self.needs_auth));
        out.extend_from_slice(&self.object.to_bytes());
        out
    }

    /// Parses [`SealedBlob::to_bytes`] output.
    ///
    /// # Errors
    /// [`TpmError::InvalidBlob`] for anything malformed.
    pub fn from_bytes(bytes: &[u8]) -> Result<SealedBlob> {
        let bad = || TpmError::InvalidBlob("sealed blob is truncated or malformed".into());
        let (head, object) = bytes.split_at_checked(4).ok_or_else(bad)?;
        let [a, b, c, flag] = <[u8; 4]>::try_from(head).map_err(|_| bad())?;
        Ok(SealedBlob {
            pcrs: PcrSelection::from_bitmap([a, b, c]).map_err(|_| bad())?,
            needs_auth: match flag {
                0 => false,
                1 => true,
                _ => return Err(bad()),
            },
            object: TpmBlob::from_bytes(object)?,
        })
    }
}

fn auth_value(secret: &SecretString) -> Result<Auth> {
    Auth::try_from(secret.expose_secret().as_bytes().to_vec())
        .map_err(|_| TpmError::InvalidInput("the auth value is longer than 32 bytes".into()))
}

/// Runs `f` with a policy session (or trial session) on `c`, flushing it afterwards.
pub(crate) fn with_policy_session<T>(
    c: &mut Connection,
    kind: SessionType,
    encrypt: bool,
    f: impl FnOnce(&mut Connection, AuthSession, PolicySession) -> Result<T>,
) -> Result<T> {
    let srk = c.srk;
    let session = start_session(&mut c.ctx, srk, kind, encrypt)?;
    let policy = PolicySession::try_from(session).during("policy session")?;
    let result = f(c, session, policy);
    c.flush(ObjectHandle::from(SessionHandle::from(session)));
    result
}

fn run_policy(
    c: &mut Connection,
    policy: PolicySession,
    pcrs: &PcrSelection,
    pcr_digest: Digest,
    with_auth: bool,
) -> Result<()> {
    let selection = pcrs.tss()?;
    c.ctx
        .execute_without_session(|ctx| {
            ctx.policy_pcr(policy, pcr_digest, selection)?;
            if with_auth {
                ctx.policy_auth_value(policy)?;
            }
            Ok(())
        })
        .during("run the sealing policy")
}

impl TpmBackend {
    /// Seals `data` (at most [`MAX_SEAL_LEN`] bytes) to a PCR policy.
    pub fn seal(&self, data: &[u8], policy: SealPolicy) -> Pending<SealedBlob> {
        let mut data = data.to_vec();
        self.submit(Retry::Safe, move |c| {
            if data.is_empty() || data.len() > MAX_SEAL_LEN {
                return Err(TpmError::InvalidInput(format!(
                    "sealed data has 1 to {MAX_SEAL_LEN} bytes, not {}",
                    data.len()
                )));
            }
            let values = match &policy.pcr_values {
                Some(values) => values.clone(),
                None => pcr::read(&mut c.ctx, &policy.pcrs)?,
            };
            let digest = pcr_policy_digest(&policy.pcrs, &values, policy.auth.is_some())?;
            let template = templates::sealed(Digest::try_from(digest.to_vec()).during("seal")?)?;
            let auth = policy.auth.as_ref().map(auth_value).transpose()?;
            let sensitive = SensitiveData::try_from(data.clone()).during("seal")?;
            let srk = c.srk;
            c.make_room(1);
            let created = c
                .ctx
                .create(srk, template, auth, Some(sensitive), None, None)
                .during("seal");
            data.zeroize();
            let created = created?;
            Ok(SealedBlob {
                object: TpmBlob::from_parts(&created.out_public, &created.out_private)?,
                pcrs: policy.pcrs.clone(),
                needs_auth: policy.auth.is_some(),
            })
        })
    }

    /// Unseals, if the PCRs still hold the sealed-to values (and the auth value matches).
    ///
    /// # Errors
    /// [`TpmError::PcrPolicyNotSatisfied`] once a bound PCR changed;
    /// [`TpmError::AuthFailed`] for a wrong auth value; [`TpmError::InvalidInput`] if an
    /// auth value is needed and missing.
    pub fn unseal(
        &self,
        sealed: &SealedBlob,
        auth: Option<SecretString>,
    ) -> Pending<SecretSlice<u8>> {
        let sealed = sealed.clone();
        self.submit(Retry::Safe, move |c| {
            let auth = match (&auth, sealed.needs_auth) {
                (Some(secret), true) => Some(auth_value(secret)?),
                (None, true) => {
                    return Err(TpmError::InvalidInput(
                        "this sealed data needs its auth value".into(),
                    ));
                }
                (_, false) => None,
            };
            c.with_temporary(&sealed.object, |c, object| {
                if let Some(auth) = auth.clone() {
                    c.ctx
                        .tr_set_auth(object.into(), auth)
                        .during("set the auth value")?;
                }
                with_policy_session(c, SessionType::Policy, true, |c, session, policy| {
                    run_policy(
                        c,
                        policy,
                        &sealed.pcrs,
                        Digest::default(),
                        sealed.needs_auth,
                    )?;
                    let data = c
                        .ctx
                        .execute_with_session(Some(session), |ctx| ctx.unseal(object.into()))
                        .during("unseal")?;
                    let mut bytes = data.value().to_vec();
                    let secret = SecretSlice::from(bytes.clone());
                    bytes.zeroize();
                    Ok(secret)
                })
            })
        })
    }

    /// The TPM's own computation of a PCR policy digest, in a trial session: a check on
    /// [`crate::policy::pcr_policy_digest`].
    pub fn trial_pcr_policy(
        &self,
        pcrs: &PcrSelection,
        values: &[PcrValue],
        with_auth: bool,
    ) -> Pending<PolicyDigest> {
        let (pcrs, values) = (pcrs.clone(), values.to_vec());
        self.submit(Retry::Safe, move |c| {
            with_policy_session(c, SessionType::Trial, false, |c, _, policy| {
                let pcr_digest =
                    Digest::try_from(pcr_values_digest(&values).to_vec()).during("trial")?;
                run_policy(c, policy, &pcrs, pcr_digest, with_auth)?;
                let digest = c
                    .ctx
                    .execute_without_session(|ctx| ctx.policy_get_digest(policy))
                    .during("read the trial policy digest")?;
                <[u8; 32]>::try_from(digest.value())
                    .map_err(|_| TpmError::Unsupported("policy digest is not SHA-256".into()))
            })
        })
    }
}
