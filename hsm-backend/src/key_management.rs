//! Creating, finding, listing and destroying keys.
//!
//! Private and secret keys are made inside the token as `CKA_TOKEN`, `CKA_PRIVATE`,
//! `CKA_SENSITIVE` and not `CKA_EXTRACTABLE`; each key has exactly one usage. Every object,
//! public halves included, is made with `CKA_MODIFIABLE` false, so that a PIN holder cannot
//! turn on another usage (`CKA_DECRYPT`, `CKA_WRAP`, ...) after the fact. The one exception
//! to non-extractable is a [`KeyClass::Releasable`] key, made `CKA_EXTRACTABLE` and
//! `CKA_WRAP_WITH_TRUSTED` at generation (`release.rs`).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};

use crate::backend::HsmBackend;
use crate::error::{HsmError, Op, Result};
use crate::key::{KeyAlgorithm, KeyClass, KeyId, KeyInfo, KeyLabel, KeySpec, KeyUsage};
use crate::lookup::{read_label, read_protection};
use crate::pool::PooledSession;
use crate::public_key::curve_params;

/// Fails with [`HsmError::KeyExists`] if any object already carries this id.
pub(crate) fn ensure_id_free(s: &mut PooledSession, id: &KeyId) -> Result<()> {
    let found = s
        .session
        .find_objects(&[Attribute::Id(id.as_bytes().to_vec())])
        .map_err(|e| s.error(e, Op::General))?;
    if found.is_empty() {
        Ok(())
    } else {
        Err(HsmError::KeyExists(id.clone()))
    }
}

/// Attributes every private or secret key gets: persistent, login-only, never readable,
/// never changed; never extractable, unless releasable, and then only under trusted keys.
fn sealed_attributes(id: &KeyId, label: &KeyLabel, class: KeyClass) -> Vec<Attribute> {
    let mut attributes = vec![
        Attribute::Token(true),
        Attribute::Modifiable(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Derive(false),
        Attribute::Id(id.as_bytes().to_vec()),
        Attribute::Label(label.as_str().as_bytes().to_vec()),
    ];
    match class {
        KeyClass::Standard => attributes.push(Attribute::Extractable(false)),
        KeyClass::Releasable => attributes.extend([
            Attribute::Extractable(true),
            Attribute::WrapWithTrusted(true),
        ]),
    }
    attributes
}

fn public_attributes(id: &KeyId, label: &KeyLabel) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Modifiable(false),
        Attribute::Private(false),
        Attribute::Id(id.as_bytes().to_vec()),
        Attribute::Label(label.as_str().as_bytes().to_vec()),
    ]
}

/// Public and private templates for a key pair; `algorithm_attributes` go on the public
/// half (curve, or modulus size and exponent).
///
/// The usage is stated on the private half only. A public key's `CKA_VERIFY`, `CKA_ENCRYPT`
/// and `CKA_WRAP` allow only what anyone holding the public key can do anyway, and some
/// modules derive them from the key and refuse a template that states them (tpm2-pkcs11:
/// `attr mismatch`), so they are left to the module. Usage is read back from the private
/// half (`lookup.rs`).
fn pair_templates(
    spec: KeySpec,
    id: &KeyId,
    label: &KeyLabel,
    algorithm_attributes: Vec<Attribute>,
) -> (Vec<Attribute>, Vec<Attribute>) {
    let signs = spec.usage() == KeyUsage::SignVerify;
    let mut public = public_attributes(id, label);
    public.extend(algorithm_attributes);
    let mut private = sealed_attributes(id, label, spec.class());
    private.extend([
        Attribute::Sign(signs),
        Attribute::Decrypt(!signs),
        Attribute::Unwrap(false),
    ]);
    (public, private)
}

/// Mechanism and template for a secret key.
fn secret_template(
    spec: KeySpec,
    id: &KeyId,
    label: &KeyLabel,
) -> (Mechanism<'static>, Vec<Attribute>) {
    let usage = spec.usage();
    let mut template = sealed_attributes(id, label, spec.class());
    template.extend([
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::ValueLen(32.into()),
        Attribute::Encrypt(usage == KeyUsage::EncryptDecrypt),
        Attribute::Decrypt(usage == KeyUsage::EncryptDecrypt),
        Attribute::Wrap(usage == KeyUsage::WrapUnwrap),
        Attribute::Unwrap(usage == KeyUsage::WrapUnwrap),
        Attribute::Sign(usage == KeyUsage::Mac),
        Attribute::Verify(usage == KeyUsage::Mac),
    ]);
    if usage == KeyUsage::WrapUnwrap {
        // A key-encryption key wraps only keys that are themselves meant to leave.
        template.push(Attribute::WrapWithTrusted(false));
    }
    let mechanism = if spec.algorithm() == KeyAlgorithm::HmacSha256 {
        template.push(Attribute::KeyType(KeyType::GENERIC_SECRET));
        Mechanism::GenericSecretKeyGen
    } else {
        template.push(Attribute::KeyType(KeyType::AES));
        Mechanism::AesKeyGen
    };
    (mechanism, template)
}

impl HsmBackend {
    /// Generates a key inside the token.
    ///
    /// # Errors
    /// [`HsmError::MechanismNotSupported`] naming what the token lacks (asked before the
    /// token is touched); [`HsmError::KeyExists`] if the id is taken; token errors
    /// otherwise. On error no object is left behind.
    pub fn generate_key(&self, id: &KeyId, label: &KeyLabel, spec: KeySpec) -> Result<KeyInfo> {
        self.capabilities().check_key(spec)?;
        self.serialize_keygen(|| {
            self.pool.run(|s| {
                ensure_id_free(s, id)?;
                let (mechanism, algorithm_attributes) = match spec.algorithm() {
                    KeyAlgorithm::Ec(curve) => (
                        Mechanism::EccKeyPairGen,
                        vec![Attribute::EcParams(curve_params(curve))],
                    ),
                    KeyAlgorithm::Rsa(bits) => (
                        Mechanism::RsaPkcsKeyPairGen,
                        vec![
                            Attribute::ModulusBits(u64::from(bits).into()),
                            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                        ],
                    ),
                    KeyAlgorithm::Aes256 | KeyAlgorithm::HmacSha256 => {
                        let (mechanism, template) = secret_template(spec, id, label);
                        s.session
                            .generate_key(&mechanism, &template)
                            .map_err(|e| s.error(e, Op::General))?;
                        return Ok(());
                    }
                };
                let (public, private) = pair_templates(spec, id, label, algorithm_attributes);
                s.session
                    .generate_key_pair(&mechanism, &public, &private)
                    .map_err(|e| s.error(e, Op::General))?;
                Ok(())
            })
        })?;
        tracing::info!(key = %id, algorithm = %spec.algorithm(), usage = ?spec.usage(),
            class = ?spec.class(), "key generated");
        self.describe_key(id)
    }

    /// Describes a key: label, algorithm, usage and protection.
    ///
    /// # Errors
    /// [`HsmError::KeyNotFound`].
    pub fn describe_key(&self, id: &KeyId) -> Result<KeyInfo> {
        self.pool.run(|s| {
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY] {
                match s.resolve(id, class) {
                    Ok(key) => {
                        let protection = read_protection(&s.session, key.handle, &s.quirks)?;
                        return Ok(KeyInfo {
                            id: id.clone(),
                            label: read_label(&s.session, key.handle, &s.quirks)?,
                            spec: key.spec,
                            protection: Some(protection),
                        });
                    }
                    Err(HsmError::KeyNotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            let public = s.resolve(id, ObjectClass::PUBLIC_KEY)?;
            Ok(KeyInfo {
                id: id.clone(),
                label: read_label(&s.session, public.handle, &s.quirks)?,
                spec: public.spec,
                protection: None,
            })
        })
    }

    /// Whether any object carries this id, whatever it is: also an object that a crash
    /// during key generation left with some attributes unwritten, which
    /// [`HsmBackend::describe_key`] cannot describe but [`HsmBackend::destroy_key`] can
    /// remove.
    ///
    /// # Errors
    /// Token errors.
    pub fn id_in_use(&self, id: &KeyId) -> Result<bool> {
        self.pool.run(|s| match ensure_id_free(s, id) {
            Ok(()) => Ok(false),
            Err(HsmError::KeyExists(_)) => Ok(true),
            Err(e) => Err(e),
        })
    }

    /// Lists every key on the token that this backend can use, by id.
    ///
    /// # Errors
    /// Token errors.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut ids: Vec<KeyId> = self.list_labels()?.into_iter().map(|(id, _)| id).collect();
        ids.sort();
        // Objects this backend does not understand are skipped, not fatal.
        Ok(ids
            .into_iter()
            .filter_map(|id| self.describe_key(&id).ok())
            .collect())
    }

    /// The id and label of every key object on the token, in one pass: one search of the
    /// whole token and one attribute read per object, so that it costs about the same per
    /// object at 10 keys as at 100,000 (on SoftHSM2's file store, each search reads every
    /// object: one search rather than one per class saves a third of the time at 10,000
    /// keys; docs/performance.md). A key whose private (or secret) and public objects share
    /// an id is listed once, with the label of its private or secret object. For
    /// reconciliation, which needs no more; [`HsmBackend::list_keys`] describes each key.
    /// Listed by id. An object whose class, id and label cannot be read is left out and
    /// counted in the log: a kill during generation can leave one on SoftHSM2 (a file with
    /// only some attributes, found by the kill -9 soak), and one such object must not stop
    /// the listing; the reconciliation of the interrupted creation destroys it by id.
    ///
    /// # Errors
    /// Token errors.
    pub fn list_labels(&self) -> Result<Vec<(KeyId, String)>> {
        self.pool.run(|s| {
            // By id: the label, and whether it is a public object's (replaced by the
            // private or secret object's label when that comes).
            let mut listed: BTreeMap<KeyId, (String, bool)> = BTreeMap::new();
            let handles = s
                .session
                .find_objects(&[])
                .map_err(|e| s.error(e, Op::General))?;
            let mut unreadable = 0usize;
            for handle in handles {
                let read = s.session.get_attributes(
                    handle,
                    &[
                        AttributeType::Class,
                        AttributeType::Id,
                        AttributeType::Label,
                    ],
                );
                let attrs = match read {
                    Ok(attrs) => attrs,
                    // This object is broken (or went away); the session and token are not.
                    Err(CkError::Pkcs11(
                        RvError::AttributeValueInvalid
                        | RvError::AttributeTypeInvalid
                        | RvError::ObjectHandleInvalid,
                        _,
                    )) => {
                        unreadable += 1;
                        continue;
                    }
                    Err(e) => return Err(s.error(e, Op::General)),
                };
                let (mut class, mut id, mut label) = (None, None, String::new());
                for attr in attrs {
                    match attr {
                        Attribute::Class(c) => class = Some(c),
                        Attribute::Id(raw) => id = KeyId::new(raw).ok(),
                        Attribute::Label(raw) => {
                            label = String::from_utf8_lossy(&raw).into_owned();
                        }
                        _ => {}
                    }
                }
                let public = match class {
                    Some(ObjectClass::PRIVATE_KEY | ObjectClass::SECRET_KEY) => false,
                    Some(ObjectClass::PUBLIC_KEY) => true,
                    // Certificates, data objects and the like are not keys.
                    _ => continue,
                };
                let Some(id) = id else { continue };
                match listed.entry(id) {
                    Entry::Vacant(slot) => {
                        slot.insert((label, public));
                    }
                    Entry::Occupied(mut seen) if seen.get().1 && !public => {
                        seen.insert((label, public));
                    }
                    Entry::Occupied(_) => {}
                }
            }
            if unreadable > 0 {
                tracing::warn!(
                    unreadable,
                    "objects on the token whose class, id and label cannot be read were left \
                     out of the listing (half-written by a kill during key generation?)"
                );
            }
            Ok(listed
                .into_iter()
                .map(|(id, (label, _))| (id, label))
                .collect())
        })
    }

    /// Destroys every object of a key (private, public or secret).
    ///
    /// # Errors
    /// [`HsmError::KeyNotFound`] if no object has this id.
    pub fn destroy_key(&self, id: &KeyId) -> Result<()> {
        self.pool.run(|s| {
            let handles = s
                .session
                .find_objects(&[Attribute::Id(id.as_bytes().to_vec())])
                .map_err(|e| s.error(e, Op::General))?;
            if handles.is_empty() {
                return Err(HsmError::KeyNotFound(id.clone()));
            }
            s.forget(id);
            for handle in handles {
                s.session
                    .destroy_object(handle)
                    .map_err(|e| s.error(e, Op::General))?;
            }
            Ok(())
        })?;
        self.pool.invalidate_handles();
        tracing::info!(key = %id, "key destroyed");
        Ok(())
    }
}
