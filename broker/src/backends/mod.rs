//! The hardware that holds keys, behind one trait.
//!
//! Every kind of backend implements [`KeyBackend`] in its own module ([`hsm`]: PKCS#11
//! tokens; [`tpm`]: TPM 2.0) with its own typed handle ([`TypedHandle`]), and no code
//! outside that module names the kind. [`KINDS`] is the one table that lists them: adding a
//! backend is one module and one line there (docs/design.md, "Backends"). The registry
//! ([`Backends`]) holds them by name, opened at start from the configuration and the store
//! and added at run time through the admin API.

mod handle;
pub mod hsm;
mod hsm_batch;
mod hsm_spec;
mod hsm_wrap;
mod provide;
mod registry;
pub mod tpm;
mod tpm_seal;

pub use tpm_seal::SEAL_PCRS as DEFAULT_SEAL_PCRS;

pub use handle::TypedHandle;
pub use hsm::{HsmKeys, open as open_hsm, read_pin};
pub use hsm_wrap::find_or_make_system_key;
pub use provide::{
    KeyBackend, KeyRef, ListedObject, ObjectSpec, ReleasedMaterial, Scheme, Sealed, WrappedDataKey,
    unsupported,
};
pub use registry::{Backends, NamedBackend};
pub use tpm::{TpmKeys, open as open_tpm, open_with as open_tpm_with, read_auth as read_tpm_auth};

use crate::error::{BrokerError, Result};
use crate::store::BackendRecord;

/// How one kind of backend is registered.
#[derive(Debug)]
pub struct Kind {
    /// Opens the backend a stored record describes; `None` when the record is another
    /// kind's.
    pub open: fn(&BackendRecord) -> Option<Result<NamedBackend>>,
    /// Whether two records name the same hardware (`false` unless both are this kind's).
    pub same_hardware: fn(&BackendRecord, &BackendRecord) -> bool,
}

/// Every kind of backend the broker can open.
pub const KINDS: &[Kind] = &[hsm::KIND, tpm::KIND];

/// Opens a backend registered through the admin API (blocking: the hardware is opened).
///
/// # Errors
/// The hardware does not open or its secrets cannot be read; no kind opens the record.
pub fn open_record(record: &BackendRecord) -> Result<NamedBackend> {
    KINDS
        .iter()
        .find_map(|kind| (kind.open)(record))
        .unwrap_or_else(|| {
            Err(BrokerError::Unsupported(format!(
                "backend {:?}: no backend kind opens this record",
                record.name()
            )))
        })
}

/// Whether two records name the same hardware: the same token or TPM under two names
/// would make each name's keys look like orphans to the other's reconciliation.
pub fn same_hardware(a: &BackendRecord, b: &BackendRecord) -> bool {
    KINDS.iter().any(|kind| (kind.same_hardware)(a, b))
}
