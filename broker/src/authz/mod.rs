//! Authorization with Cedar: which workload may make which gRPC call on which key.
//!
//! Why Cedar: the rules (who may use which keys, who administers, which uses need an
//! attested caller) change per deployment and must be readable and checkable by the
//! operator, not compiled in. Cedar policies are validated against a schema at load time,
//! so a typo in a policy (an unknown action, attribute or entity type) is refused when the
//! policy is loaded instead of silently never matching at request time.
//!
//! The model (namespace `Keybroker`, [`SCHEMA`]):
//! - principal `Workload`, id = the caller's full SPIFFE ID, attributes `trust_domain`
//!   and `path`;
//! - resource `Key`, id = the key name, attributes `name`, `algorithm`, `purpose`,
//!   `backend`, `state`, and the key's free-form labels as Cedar entity tags
//!   (`resource.hasTag("team") && resource.getTag("team") == "payments"`);
//!   resource `Broker::"broker"` for calls that name no key;
//! - one action per gRPC method, named like it ([`Action`]), in the groups `KeyUse`,
//!   `KeyAdmin`, `Attestation` and `Admin`;
//! - context `attested` and, when the caller presented a verified attestation token, its
//!   `claims` (PCRs as a set of `"index=hex"` strings:
//!   `context.claims.pcrs.contains("7=3d45…")`).
//!
//! Deny by default: a call is allowed only if some `permit` matches and no `forbid` does,
//! and any error while building or evaluating the request denies it. The policy in force
//! is swapped atomically; a policy that fails to parse or validate never replaces it.

mod action;
mod authorizer;
mod compile;
mod error;
mod request;
mod source;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use action::{Action, ActionGroup, ResourceKind};
pub use authorizer::Authorizer;
pub use error::{AuthzError, PolicyProblem};

use crate::identity::SpiffeId;

/// The Cedar schema every policy is validated against (strict mode).
pub const SCHEMA: &str = include_str!("schema.cedarschema");

/// The policy the development mode uses: `spiffe://keybroker.dev/admin` may do
/// everything; `spiffe://keybroker.dev/workload` may use keys tagged `team = "demo"` and
/// attest; Decrypt on keys tagged `requires-attestation = "true"` needs an attested caller.
pub const DEV_POLICY: &str = include_str!("dev-policy.cedar");

/// The Cedar entity id of the single broker resource.
pub const BROKER_ENTITY_ID: &str = "broker";

/// A key as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyResource<'a> {
    /// The key name (also the entity id).
    pub name: &'a str,
    /// `"ec-p256"`, `"ec-p384"`, `"rsa-2048"`, `"rsa-3072"`, `"rsa-4096"` or `"aes-256"`.
    pub algorithm: &'a str,
    /// `"sign-verify"` or `"encrypt-decrypt"`.
    pub purpose: &'a str,
    /// The backend that holds it.
    pub backend: &'a str,
    /// `"enabled"`, `"disabled"`, ...; `"creating"` for CreateKey.
    pub state: &'a str,
    /// Free-form labels, exposed to policies as entity tags.
    pub tags: &'a BTreeMap<String, String>,
}

/// What a call acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// A key: for CreateKey, the key that would be created.
    Key(KeyResource<'a>),
    /// A secret, by name (which may not exist).
    Secret(&'a str),
    /// The broker itself, for calls that name no key.
    Broker,
}

/// One call to decide.
#[derive(Debug, Clone, Copy)]
pub struct AuthzRequest<'a> {
    /// The caller, from its client certificate.
    pub principal: &'a SpiffeId,
    /// The call.
    pub action: Action,
    /// What it acts on; must match [`Action::resource_kind`] or the call is denied.
    pub resource: Resource<'a>,
    /// Claims from a verified attestation token the caller presented, if any.
    pub claims: Option<&'a attest::claims::Claims>,
}

/// The outcome of [`Authorizer::authorize`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Whether the call may proceed.
    pub allowed: bool,
    /// Ids of the policies that determined the decision: the permits that matched when
    /// allowed; the forbids that matched when denied by a `forbid`; the policies that
    /// failed to evaluate when denied by an error; empty when denied by default.
    pub policies: Vec<String>,
    /// What went wrong building or evaluating the request; any error denies.
    pub errors: Vec<String>,
}

impl Decision {
    /// A denial for a request that could not be evaluated.
    pub(crate) fn error(message: String) -> Decision {
        Decision {
            allowed: false,
            policies: Vec::new(),
            errors: vec![message],
        }
    }
}

/// The policy in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    /// Its Cedar text (for files: their contents, joined by newlines, in order).
    pub text: String,
    /// SHA-256 of `text`, lowercase hex.
    pub digest_hex: String,
    /// How many policies it holds.
    pub policies: usize,
}
