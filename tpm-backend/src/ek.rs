//! The endorsement key, its certificate, and binding an AK to it with
//! MakeCredential / ActivateCredential (as keylime and Parsec do, LESSONS: keylime #1820).
//!
//! A verifier checks the EK certificate against the manufacturer's CA, encrypts a secret
//! to the EK for the AK's name (MakeCredential), and the TPM releases the secret only if
//! that AK is loaded in the same TPM as that EK (ActivateCredential).

use secrecy::SecretSlice;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ek};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::AuthHandle;
use tss_esapi::interface_types::algorithm::AsymmetricAlgorithm;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::{Digest, EncryptedSecret, IdObject, Name, Public};
use tss_esapi::traits::{Marshall, UnMarshall};
use zeroize::Zeroize;

use crate::blob::TpmBlob;
use crate::error::{Result, TpmError, TssResultExt};
use crate::keys::spki;
use crate::seal::with_policy_session;
use crate::worker::{Pending, Retry, TpmBackend};

/// NV index of the RSA-2048 EK certificate (TCG EK Credential Profile).
pub const RSA_EK_CERTIFICATE_NV_INDEX: u32 = 0x01c0_0002;

/// The EK's public area (RSA-2048, from the TCG default template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkPublic(Vec<u8>);

impl EkPublic {
    /// SubjectPublicKeyInfo DER, to compare with the EK certificate's key.
    ///
    /// # Errors
    /// Only for a malformed public area.
    pub fn spki(&self) -> Result<Vec<u8>> {
        spki(&self.public()?)
    }

    /// The marshalled `TPMT_PUBLIC`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Wraps a marshalled `TPMT_PUBLIC`.
    ///
    /// # Errors
    /// [`TpmError::InvalidBlob`] if it does not parse.
    pub fn from_bytes(bytes: &[u8]) -> Result<EkPublic> {
        let ek = EkPublic(bytes.to_vec());
        ek.public()?;
        Ok(ek)
    }

    fn public(&self) -> Result<Public> {
        Public::unmarshall(&self.0).map_err(|e| TpmError::InvalidBlob(format!("EK public: {e}")))
    }
}

/// A credential encrypted to an EK for one AK name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialBlob {
    /// `TPM2B_ID_OBJECT` contents.
    pub id_object: Vec<u8>,
    /// `TPM2B_ENCRYPTED_SECRET` contents.
    pub encrypted_secret: Vec<u8>,
}

/// Longest secret a credential carries.
pub const MAX_CREDENTIAL_LEN: usize = 32;

impl TpmBackend {
    /// Reads the RSA EK certificate (DER) from NV.
    pub fn ek_certificate(&self) -> Pending<Vec<u8>> {
        self.submit(Retry::Safe, |c| {
            ek::retrieve_ek_pubcert(
                &mut c.ctx,
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            )
            .map_err(|_| TpmError::EkCertificateMissing(RSA_EK_CERTIFICATE_NV_INDEX))
        })
    }

    /// Re-creates the RSA EK from the default template and returns its public area.
    pub fn ek_public(&self) -> Pending<EkPublic> {
        self.submit(Retry::Safe, |c| {
            c.make_room(1);
            let handle = ek::create_ek_object(&mut c.ctx, AsymmetricAlgorithm::Rsa, None)
                .during("create the EK")?;
            let public = c.ctx.read_public(handle).during("read the EK");
            c.flush(handle.into());
            Ok(EkPublic(public?.0.marshall().during("marshal the EK")?))
        })
    }

    /// Verifier side: encrypts `secret` to `ek` for the object named `ak_name`. Uses the TPM
    /// only as a calculator (the EK is loaded as an external public key).
    pub fn make_credential(
        &self,
        ek: &EkPublic,
        ak_name: &[u8],
        secret: &[u8],
    ) -> Pending<CredentialBlob> {
        let (ek, ak_name, secret) = (ek.clone(), ak_name.to_vec(), secret.to_vec());
        self.submit(Retry::Safe, move |c| {
            if secret.is_empty() || secret.len() > MAX_CREDENTIAL_LEN {
                return Err(TpmError::InvalidInput(format!(
                    "a credential has 1 to {MAX_CREDENTIAL_LEN} bytes"
                )));
            }
            let name = Name::try_from(ak_name.clone())
                .map_err(|_| TpmError::InvalidInput("bad AK name".into()))?;
            let public = ek.public()?;
            c.make_room(1);
            let handle = c
                .ctx
                .execute_without_session(|ctx| ctx.load_external_public(public, Hierarchy::Null))
                .during("load the EK public key")?;
            let made = c.ctx.execute_without_session(|ctx| {
                ctx.make_credential(handle, Digest::try_from(secret.clone())?, name)
            });
            c.flush(handle.into());
            let (id_object, encrypted_secret) = made.during("make a credential")?;
            Ok(CredentialBlob {
                id_object: id_object.value().to_vec(),
                encrypted_secret: encrypted_secret.value().to_vec(),
            })
        })
    }

    /// Agent side: releases the credential's secret if `ak` is loaded in the TPM whose EK it
    /// was made for.
    pub fn activate_credential(
        &self,
        ak: &TpmBlob,
        credential: &CredentialBlob,
    ) -> Pending<SecretSlice<u8>> {
        let (ak, credential) = (ak.clone(), credential.clone());
        self.submit(Retry::Safe, move |c| {
            let id_object = IdObject::try_from(credential.id_object.clone())
                .map_err(|_| TpmError::InvalidInput("malformed credential".into()))?;
            let secret = EncryptedSecret::try_from(credential.encrypted_secret.clone())
                .map_err(|_| TpmError::InvalidInput("malformed credential".into()))?;
            c.make_room(2);
            let ek_handle = ek::create_ek_object(&mut c.ctx, AsymmetricAlgorithm::Rsa, None)
                .during("create the EK")?;
            let result = c.with_temporary(&ak, |c, ak_handle| {
                with_policy_session(c, SessionType::Policy, false, |c, session, policy| {
                    c.ctx
                        .execute_with_nullauth_session(|ctx| {
                            ctx.policy_secret(
                                policy,
                                AuthHandle::Endorsement,
                                Default::default(),
                                Default::default(),
                                Default::default(),
                                None,
                            )
                        })
                        .during("authorize the EK")?;
                    let hmac = c.session;
                    c.ctx
                        .execute_with_sessions((Some(hmac), Some(session), None), |ctx| {
                            ctx.activate_credential(ak_handle, ek_handle, id_object, secret)
                        })
                        .during("activate the credential")
                })
            });
            c.flush(ek_handle.into());
            let mut bytes = result?.value().to_vec();
            let released = SecretSlice::from(bytes.clone());
            bytes.zeroize();
            Ok(released)
        })
    }
}
