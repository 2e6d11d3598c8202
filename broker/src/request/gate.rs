//! The gate: authorization of one call on its resource, and the [`Authorized`] capability
//! that proves it happened.
//!
//! Only [`Gate::authorize`] can make an [`Authorized`] (its fields are private and it has
//! no public constructor), and every operation that acts on a key, a policy or a backend
//! takes one. A handler that skips the gate therefore does not compile, the way rustls
//! threads `ServerCertVerified` through its handshake. Each operation also checks that the
//! capability is for its own action and resource, so a capability for one key cannot be
//! spent on another.

use std::sync::Arc;

use attest::release::KemPublicKey;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use super::admission::RoutedAction;
use super::record::CallSlot;
use crate::authz::{Action, Authorizer, AuthzRequest, Resource};
use crate::error::BrokerError;
use crate::identity::SpiffeId;

/// Metadata key of an attestation token a caller presents to add its claims to the
/// authorization context.
pub const ATTESTATION_HEADER: &str = "x-keybroker-attestation";

/// Verifies attestation tokens presented by callers, for the authorization context.
pub trait ClaimsSource: Send + Sync + std::fmt::Debug {
    /// The verified claims of `token`, presented by `caller`, who proved it holds the
    /// private key of `holder_spki_der` (SubjectPublicKeyInfo DER).
    ///
    /// # Errors
    /// Why the token is not valid, was not issued to `caller`, or is bound to another
    /// key; or that tokens cannot be verified yet.
    fn claims(
        &self,
        token: &str,
        caller: &SpiffeId,
        holder_spki_der: &[u8],
    ) -> Result<Presented, ClaimsError>;
}

/// What a verified attestation token gives a call: the appraised claims, and the KEM key
/// the evidence also bound, to which secrets are released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub claims: attest::claims::Claims,
    pub kem: Option<KemPublicKey>,
}

/// The actions a call may go on to within itself, with claims it appraised, through
/// [`Gate::authorize_follow_on`]: `Attest` with a CSR issues the certificate in the same
/// call (docs/identity.md).
pub const FOLLOW_ONS: &[(Action, Action)] = &[(Action::Attest, Action::IssueCertificate)];

/// Which key the caller proved it holds, for a presented attestation token (whose `cnf`
/// must name that key).
#[derive(Debug, Clone, Copy)]
pub enum Holder<'a> {
    /// The key of the client certificate the connection was authenticated with: the TLS
    /// handshake proved possession.
    Connection,
    /// A key whose possession the handler has already verified, such as the key that
    /// signed a certification request (`IssueCertificate`).
    Proven(&'a [u8]),
}

/// Why a presented attestation token gives no claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimsError {
    /// The token is not valid for this caller on this connection (the reason is for the
    /// log only): `UNAUTHENTICATED`, attest again.
    Invalid(String),
    /// Tokens cannot be verified now (the broker is starting): `UNAVAILABLE`, retry.
    Unavailable(String),
}

impl From<String> for ClaimsError {
    fn from(reason: String) -> ClaimsError {
        ClaimsError::Invalid(reason)
    }
}

/// What an [`Authorized`] call acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizedResource {
    /// The key of this name (which may not exist).
    Key(String),
    /// The secret of this name (which may not exist).
    Secret(String),
    /// The broker itself.
    Broker,
}

/// Proof that the gate allowed one action on one resource for one caller. It holds the
/// broker-wide in-flight permit of the call, given back when the call ends.
#[derive(Debug)]
#[must_use = "an authorization is spent by passing it to the operation it allows"]
pub struct Authorized {
    caller: SpiffeId,
    action: Action,
    resource: AuthorizedResource,
    claims: Option<attest::claims::Claims>,
    /// The KEM key of the presented token, if it carries one.
    kem: Option<KemPublicKey>,
    /// The key (SPKI DER) the presented token was checked to be bound to: the attested
    /// key, which the caller proved it holds. `None` without a token.
    bound_key: Option<Vec<u8>>,
    _in_flight: Option<OwnedSemaphorePermit>,
}

impl Authorized {
    /// The caller.
    pub fn caller(&self) -> &SpiffeId {
        &self.caller
    }

    /// The action that was allowed.
    pub fn action(&self) -> Action {
        self.action
    }

    /// What it was allowed on.
    pub fn resource(&self) -> &AuthorizedResource {
        &self.resource
    }

    /// The attestation claims the decision used, if the caller presented a token.
    pub fn claims(&self) -> Option<&attest::claims::Claims> {
        self.claims.as_ref()
    }

    /// The KEM key of the presented attestation token: the only key a secret is released
    /// to (docs/secrets.md). `None` without a token, or for a token without one.
    pub fn release_key(&self) -> Option<&KemPublicKey> {
        self.kem.as_ref()
    }

    /// The attested key the caller proved it holds (SPKI DER): the key the presented
    /// token is bound to. `None` without a token.
    pub fn attested_key(&self) -> Option<&[u8]> {
        self.bound_key.as_deref()
    }

    /// Checks that this authorization is for one of `actions` on the key `name`.
    ///
    /// # Errors
    /// [`BrokerError::Internal`]: an operation was handed another call's authorization,
    /// which is a bug; the operation must not run.
    pub fn require_key(&self, actions: &[Action], name: &str) -> Result<(), BrokerError> {
        match &self.resource {
            AuthorizedResource::Key(key) if key == name && actions.contains(&self.action) => Ok(()),
            _ => Err(self.mismatch(actions, name)),
        }
    }

    /// Checks that this authorization is for `action` on the secret `name`.
    ///
    /// # Errors
    /// As [`Authorized::require_key`].
    pub fn require_secret(&self, action: Action, name: &str) -> Result<(), BrokerError> {
        match &self.resource {
            AuthorizedResource::Secret(secret) if secret == name && self.action == action => Ok(()),
            _ => Err(self.mismatch(&[action], name)),
        }
    }

    /// Checks that this authorization is for `action` on the broker.
    ///
    /// # Errors
    /// As [`Authorized::require_key`].
    pub fn require_broker(&self, action: Action) -> Result<(), BrokerError> {
        if self.resource == AuthorizedResource::Broker && self.action == action {
            Ok(())
        } else {
            Err(self.mismatch(&[action], "broker"))
        }
    }

    fn mismatch(&self, actions: &[Action], target: &str) -> BrokerError {
        tracing::error!(
            allowed = %self.action,
            resource = ?self.resource,
            wanted = ?actions,
            target,
            "an operation was given an authorization for something else"
        );
        BrokerError::Internal("authorization does not cover this operation".into())
    }

    /// An authorization made without the gate, for the crate's own unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(caller: &str, action: Action, resource: AuthorizedResource) -> Self {
        Authorized {
            caller: SpiffeId::parse(caller).unwrap_or_else(|_| unreachable!()),
            action,
            resource,
            claims: None,
            kem: None,
            bound_key: None,
            _in_flight: None,
        }
    }
}

/// Authorization for handlers.
#[derive(Debug, Clone)]
pub struct Gate {
    authorizer: Arc<Authorizer>,
    claims: Option<Arc<dyn ClaimsSource>>,
    in_flight: Arc<Semaphore>,
}

impl Gate {
    /// A gate deciding with `authorizer`, admitting at most `max_in_flight` authorized
    /// calls at once across the broker.
    pub fn new(
        authorizer: Arc<Authorizer>,
        claims: Option<Arc<dyn ClaimsSource>>,
        max_in_flight: usize,
    ) -> Gate {
        Gate {
            authorizer,
            claims,
            in_flight: Arc::new(Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Decides whether the caller may do the call's action (from the action table) on
    /// `resource`; deny by default. Handlers call this before any other check, so that a
    /// refusal tells a stranger nothing about what exists.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without an identity, or with an attestation token that is not
    /// valid for this caller; `PERMISSION_DENIED` (with no detail) when the policy does
    /// not permit it, or when the call did not come through the action table;
    /// `RESOURCE_EXHAUSTED` when the broker has too many calls in flight.
    pub fn authorize<T>(
        &self,
        request: &tonic::Request<T>,
        resource: Resource<'_>,
    ) -> Result<Authorized, Status> {
        self.authorize_holder(request, resource, Holder::Connection)
    }

    /// [`Gate::authorize`], where a presented attestation token must be bound to the key
    /// of `holder` rather than to the connection's.
    ///
    /// # Errors
    /// As [`Gate::authorize`].
    pub fn authorize_holder<T>(
        &self,
        request: &tonic::Request<T>,
        resource: Resource<'_>,
        holder: Holder<'_>,
    ) -> Result<Authorized, Status> {
        let Some(RoutedAction(action)) = request.extensions().get::<RoutedAction>().copied() else {
            tracing::error!("a call reached a handler without an action from the table");
            return Err(Status::permission_denied("permission denied"));
        };
        let peer = crate::tls::peer(request);
        let caller = peer
            .and_then(|p| p.identity.clone())
            .ok_or_else(|| Status::unauthenticated("the client certificate has no SPIFFE ID"))?;
        let holder = match holder {
            Holder::Connection => peer.and_then(|p| p.public_key_der.as_deref()),
            Holder::Proven(spki) => Some(spki),
        };
        let (claims, kem, bound_key) = match self.presented_claims(request, &caller, holder)? {
            Some(presented) => (
                Some(presented.claims),
                presented.kem,
                holder.map(<[u8]>::to_vec),
            ),
            None => (None, None, None),
        };
        let authorized_resource = match &resource {
            Resource::Key(k) => AuthorizedResource::Key(k.name.to_string()),
            Resource::Secret(name) => AuthorizedResource::Secret(name.to_string()),
            Resource::Broker => AuthorizedResource::Broker,
        };
        let decision = self.authorizer.authorize(&AuthzRequest {
            principal: &caller,
            action,
            resource,
            claims: claims.as_ref(),
        });
        if let Some(slot) = request.extensions().get::<CallSlot>() {
            slot.update(|r| {
                r.resource = match &authorized_resource {
                    AuthorizedResource::Key(name) | AuthorizedResource::Secret(name) => {
                        Some(name.clone())
                    }
                    AuthorizedResource::Broker => None,
                };
                r.allowed = Some(decision.allowed);
                r.policies = decision.policies.clone();
                r.attested = claims.is_some();
            });
        }
        if !decision.allowed {
            return Err(Status::permission_denied("permission denied"));
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            tracing::warn!(caller = %caller, %action, "overloaded: call refused");
            return Err(Status::resource_exhausted("too many requests in flight"));
        };
        Ok(Authorized {
            caller,
            action,
            resource: authorized_resource,
            claims,
            kem,
            bound_key,
            _in_flight: Some(permit),
        })
    }

    /// A second authorization inside a call the gate already allowed (`first`): `action`
    /// on the broker, for the same caller, decided with `claims` that the broker has just
    /// appraised in this call, not taken from a presented token. Only the pairs of
    /// [`FOLLOW_ONS`] are allowed. The decision is added to the call's record; the call's
    /// in-flight permit stays with `first`.
    ///
    /// # Errors
    /// `PERMISSION_DENIED` (no detail) when the policy does not permit it, or for a pair
    /// that is not in [`FOLLOW_ONS`].
    pub fn authorize_follow_on(
        &self,
        extensions: &tonic::Extensions,
        first: &Authorized,
        action: Action,
        claims: attest::claims::Claims,
    ) -> Result<Authorized, Status> {
        if !FOLLOW_ONS.contains(&(first.action, action))
            || first.resource != AuthorizedResource::Broker
        {
            tracing::error!(first = %first.action, then = %action, "a follow-on authorization that no call makes");
            return Err(Status::permission_denied("permission denied"));
        }
        let decision = self.authorizer.authorize(&AuthzRequest {
            principal: &first.caller,
            action,
            resource: Resource::Broker,
            claims: Some(&claims),
        });
        if let Some(slot) = extensions.get::<CallSlot>() {
            slot.update(|r| {
                r.allowed = Some(r.allowed.unwrap_or(true) && decision.allowed);
                r.policies.extend(decision.policies.iter().cloned());
                r.attested = true;
            });
        }
        if !decision.allowed {
            return Err(Status::permission_denied("permission denied"));
        }
        Ok(Authorized {
            caller: first.caller.clone(),
            action,
            resource: AuthorizedResource::Broker,
            claims: Some(claims),
            kem: None,
            bound_key: None,
            _in_flight: None,
        })
    }

    /// The claims of the attestation token the caller presents, if it presents one. A
    /// token that is present but not valid, or bound to another key than the one the
    /// caller proved it holds, is refused rather than ignored, so that a workload learns
    /// at once that it must attest again.
    fn presented_claims<T>(
        &self,
        request: &tonic::Request<T>,
        caller: &SpiffeId,
        holder_spki_der: Option<&[u8]>,
    ) -> Result<Option<Presented>, Status> {
        let Some(value) = request.metadata().get(ATTESTATION_HEADER) else {
            return Ok(None);
        };
        let refused = |why: String| {
            tracing::warn!(caller = %caller, reason = %why, "attestation token refused");
            Status::unauthenticated("the attestation token is not valid; attest again")
        };
        let token = value
            .to_str()
            .map_err(|_| refused("the header is not ASCII".into()))?;
        let source = self
            .claims
            .as_ref()
            .ok_or_else(|| refused("attestation is not configured".into()))?;
        let holder = holder_spki_der
            .ok_or_else(|| refused("the connection has no client certificate".into()))?;
        match source.claims(token, caller, holder) {
            Ok(presented) => Ok(Some(presented)),
            Err(ClaimsError::Invalid(why)) => Err(refused(why)),
            Err(ClaimsError::Unavailable(why)) => Err(Status::unavailable(why)),
        }
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
