//! Typed handles: each backend's own name for a key (the HSM's `CKA_ID`, the TPM's wrapped
//! blob), and the one place where they become the store's opaque [`HardwareHandle`] and back.
//!
//! A backend only ever decodes handles into its own type, so no code can hand an HSM
//! object id to a TPM. What remains is the stored data: bytes read back from the store that
//! do not decode (the database was edited or damaged) are refused here, with one message.

use crate::error::{BrokerError, Result};
use crate::store::HardwareHandle;

/// A backend's own handle type.
pub trait TypedHandle: Sized {
    /// The backend kind that makes these handles.
    const KIND: &'static str;

    /// The bytes the store keeps.
    fn to_bytes(&self) -> Vec<u8>;

    /// The handle from stored bytes.
    ///
    /// # Errors
    /// The bytes are not such a handle; the message says why.
    fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String>;

    /// The stored form.
    fn encode(&self) -> HardwareHandle {
        HardwareHandle::new(Self::KIND, self.to_bytes())
    }

    /// The typed handle from its stored form.
    ///
    /// # Errors
    /// [`BrokerError::Internal`]: the stored handle is not one of this kind, or its bytes
    /// do not decode. Either means the store was damaged.
    fn decode(handle: &HardwareHandle) -> Result<Self> {
        if handle.kind() != Self::KIND {
            return Err(damaged(handle, "of another kind".into()));
        }
        Self::from_bytes(handle.bytes()).map_err(|why| damaged(handle, why))
    }
}

fn damaged(handle: &HardwareHandle, why: String) -> BrokerError {
    BrokerError::Internal(format!(
        "the store holds a damaged handle {handle:?} for this backend: {why}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Even(Vec<u8>);

    impl TypedHandle for Even {
        const KIND: &'static str = "even";
        fn to_bytes(&self) -> Vec<u8> {
            self.0.clone()
        }
        fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
            if bytes.len() % 2 == 0 {
                Ok(Even(bytes.to_vec()))
            } else {
                Err("odd length".into())
            }
        }
    }

    #[test]
    fn a_handle_round_trips_through_its_stored_form() {
        let handle = Even(vec![1, 2]).encode();
        assert_eq!(handle.kind(), "even");
        assert_eq!(Even::decode(&handle).unwrap(), Even(vec![1, 2]));
    }

    #[test]
    fn a_stored_handle_of_another_kind_is_refused() {
        let err = Even::decode(&HardwareHandle::new("odd", vec![1, 2])).unwrap_err();
        assert!(matches!(err, BrokerError::Internal(m) if m.contains("another kind")));
    }

    #[test]
    fn stored_bytes_that_do_not_decode_are_refused() {
        let err = Even::decode(&HardwareHandle::new("even", vec![1])).unwrap_err();
        assert!(matches!(err, BrokerError::Internal(m) if m.contains("odd length")));
    }
}
