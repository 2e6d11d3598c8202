//! Authorizing a call on the key it names: the key as Cedar sees it, and the rule that an
//! unknown name is authorized before the caller learns that it is unknown.

use std::collections::BTreeMap;

use tonic::{Request, Status};

use super::convert::{algorithm_name, purpose_name, state_name};
use super::manager::KeyManager;
use crate::authz::{KeyResource, Resource};
use crate::error::BrokerError;
use crate::request::{Authorized, Gate};
use crate::store::KeyRecord;

/// A key as an authorization resource.
pub(crate) fn resource(key: &KeyRecord) -> Resource<'_> {
    Resource::Key(KeyResource {
        name: &key.name,
        algorithm: algorithm_name(key.algorithm),
        purpose: purpose_name(key.purpose),
        backend: &key.backend,
        state: state_name(key.state),
        tags: &key.tags,
    })
}

/// A key that does not exist, as an authorization resource: no attributes, no tags.
pub(crate) fn absent_resource<'a>(
    name: &'a str,
    no_tags: &'a BTreeMap<String, String>,
) -> Resource<'a> {
    Resource::Key(KeyResource {
        name,
        algorithm: "",
        purpose: "",
        backend: "",
        state: "absent",
        tags: no_tags,
    })
}

/// Authorizes the call on the key it names, before any other check. An unknown key (or a
/// name that is not a key name) is authorized as an attribute-less resource first, so that
/// a caller without a grant cannot learn which names exist or are valid.
pub(crate) async fn authorize_key<T>(
    manager: &KeyManager,
    gate: &Gate,
    request: &Request<T>,
    name: &str,
) -> Result<(Authorized, KeyRecord), Status> {
    match manager.find_for_authorization(name).await? {
        Some(key) => {
            let auth = gate.authorize(request, resource(&key))?;
            Ok((auth, key))
        }
        None => {
            let empty = BTreeMap::new();
            let _auth = gate.authorize(request, absent_resource(name, &empty))?;
            // Allowed to know: say precisely why there is no such key.
            Err(manager
                .get(name)
                .await
                .err()
                .unwrap_or_else(|| BrokerError::KeyNotFound(name.to_string()))
                .into())
        }
    }
}
