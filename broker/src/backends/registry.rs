//! The registered backends by name, as `Arc<dyn KeyBackend>`, and the typed lookup that
//! hands one out as its own type to the code that needs that kind (the attestation token
//! signer needs an HSM) without a match on kinds.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::provide::KeyBackend;
use crate::error::{BrokerError, Result};

/// One opened backend and the name it is registered under.
#[derive(Debug)]
pub struct NamedBackend {
    pub name: String,
    pub backend: Arc<dyn KeyBackend>,
}

impl NamedBackend {
    /// `backend`, registered as `name`.
    pub fn new(name: impl Into<String>, backend: impl KeyBackend + 'static) -> NamedBackend {
        NamedBackend {
            name: name.into(),
            backend: Arc::new(backend),
        }
    }

    /// The backend's kind.
    pub fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// What the backend is, for operators.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Whether the hardware is known to answer ([`super::KeyBackend::available`]).
    pub fn available(&self) -> bool {
        self.backend.available()
    }

    /// The backend as its own type `T`, if it is one.
    pub fn downcast<T: KeyBackend + 'static>(&self) -> Option<Arc<T>> {
        self.backend.clone().into_any().downcast::<T>().ok()
    }
}

/// All backends, by name.
#[derive(Debug, Default)]
pub struct Backends {
    by_name: RwLock<BTreeMap<String, Arc<NamedBackend>>>,
}

impl Backends {
    /// A backend by name.
    ///
    /// # Errors
    /// [`BrokerError::UnknownBackend`].
    pub fn get(&self, name: &str) -> Result<Arc<NamedBackend>> {
        self.by_name
            .read()
            .map_err(|_| BrokerError::Internal("backend registry poisoned".into()))?
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownBackend(name.to_string()))
    }

    /// The backend `name` as its own type `T`: `None` when it is of another kind.
    ///
    /// # Errors
    /// [`BrokerError::UnknownBackend`].
    pub fn get_as<T: KeyBackend + 'static>(&self, name: &str) -> Result<Option<Arc<T>>> {
        Ok(self.get(name)?.downcast::<T>())
    }

    /// The first backend, by name, of type `T`.
    pub fn first_as<T: KeyBackend + 'static>(&self) -> Option<Arc<T>> {
        self.all().iter().find_map(|b| b.downcast::<T>())
    }

    /// Every backend, by name.
    pub fn all(&self) -> Vec<Arc<NamedBackend>> {
        self.by_name
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Adds an opened backend.
    ///
    /// # Errors
    /// The name is taken.
    pub fn insert(&self, backend: NamedBackend) -> Result<Arc<NamedBackend>> {
        let mut map = self
            .by_name
            .write()
            .map_err(|_| BrokerError::Internal("backend registry poisoned".into()))?;
        if map.contains_key(&backend.name) {
            return Err(BrokerError::InvalidArgument(format!(
                "backend {:?} is already registered",
                backend.name
            )));
        }
        let backend = Arc::new(backend);
        map.insert(backend.name.clone(), backend.clone());
        Ok(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that implements only what is required: everything else is refused.
    #[derive(Debug)]
    struct Bare;

    impl KeyBackend for Bare {
        fn kind(&self) -> &'static str {
            "bare"
        }
        fn describe(&self) -> String {
            "nothing".into()
        }
    }

    #[derive(Debug)]
    struct Other;

    impl KeyBackend for Other {
        fn kind(&self) -> &'static str {
            "other"
        }
        fn describe(&self) -> String {
            "something else".into()
        }
    }

    #[test]
    fn the_typed_lookup_hands_out_only_backends_of_that_type() {
        let backends = Backends::default();
        backends.insert(NamedBackend::new("a", Other)).unwrap();
        backends.insert(NamedBackend::new("b", Bare)).unwrap();
        assert!(backends.get_as::<Bare>("b").unwrap().is_some());
        assert!(backends.get_as::<Bare>("a").unwrap().is_none());
        assert!(matches!(
            backends.get_as::<Bare>("c"),
            Err(BrokerError::UnknownBackend(_))
        ));
        assert_eq!(backends.first_as::<Bare>().unwrap().kind(), "bare");
    }

    #[test]
    fn a_name_is_registered_once() {
        let backends = Backends::default();
        backends.insert(NamedBackend::new("a", Bare)).unwrap();
        assert!(backends.insert(NamedBackend::new("a", Other)).is_err());
        assert_eq!(backends.get("a").unwrap().kind(), "bare");
    }
}
