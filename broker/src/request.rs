//! The request path: every call goes through [`CallLayer`], which knows the caller, the
//! operation, the resource and the outcome. Audit and rate limits attach here, one layer
//! each. Handlers name the resource and ask for a decision through [`Gate::authorize`],
//! which records both in the call's [`CallRecord`].

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::{Code, Status};

use crate::authz::{Action, Authorizer, AuthzRequest, Resource};
use crate::identity::SpiffeId;
use crate::tls::PeerInfo;

/// Metadata key of an attestation token a caller presents to add its claims to the
/// authorization context.
pub const ATTESTATION_HEADER: &str = "x-keybroker-attestation";

/// What one call did, filled in as it runs.
#[derive(Debug, Default, Clone)]
pub struct CallRecord {
    pub caller: Option<String>,
    pub method: String,
    pub resource: Option<String>,
    pub allowed: Option<bool>,
    pub policies: Vec<String>,
    pub attested: bool,
}

/// The shared slot a handler writes into.
#[derive(Debug, Clone, Default)]
pub struct CallSlot(Arc<Mutex<CallRecord>>);

impl CallSlot {
    fn update(&self, f: impl FnOnce(&mut CallRecord)) {
        if let Ok(mut record) = self.0.lock() {
            f(&mut record);
        }
    }

    fn snapshot(&self) -> CallRecord {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Verifies attestation tokens presented by callers, for the authorization context.
pub trait ClaimsSource: Send + Sync + std::fmt::Debug {
    /// The verified claims of `token`.
    ///
    /// # Errors
    /// Why the token is not valid, or was not issued to `caller` (for the log only).
    fn claims(&self, token: &str, caller: &SpiffeId) -> Result<attest::claims::Claims, String>;
}

/// Authentication and authorization for handlers.
#[derive(Debug, Clone)]
pub struct Gate {
    authorizer: Arc<Authorizer>,
    claims: Option<Arc<dyn ClaimsSource>>,
}

impl Gate {
    pub fn new(authorizer: Arc<Authorizer>, claims: Option<Arc<dyn ClaimsSource>>) -> Gate {
        Gate { authorizer, claims }
    }

    pub fn authorizer(&self) -> &Arc<Authorizer> {
        &self.authorizer
    }

    /// The caller's SPIFFE ID.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` when the client certificate carries no SPIFFE ID.
    pub fn caller<T>(request: &tonic::Request<T>) -> Result<SpiffeId, Status> {
        crate::tls::peer(request)
            .and_then(|p| p.identity.clone())
            .ok_or_else(|| Status::unauthenticated("the client certificate has no SPIFFE ID"))
    }

    /// Decides whether the caller may do `action` on `resource`; deny by default.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without an identity, or with an attestation token that is not
    /// valid for this caller; `PERMISSION_DENIED` (with no detail) when the policy does
    /// not permit it.
    pub fn authorize<T>(
        &self,
        request: &tonic::Request<T>,
        action: Action,
        resource: Resource<'_>,
    ) -> Result<SpiffeId, Status> {
        let caller = Self::caller(request)?;
        let claims = self.presented_claims(request, &caller)?;
        let resource_name = match &resource {
            Resource::Key(k) => Some(k.name.to_string()),
            Resource::Broker => None,
        };
        let decision = self.authorizer.authorize(&AuthzRequest {
            principal: &caller,
            action,
            resource,
            claims: claims.as_ref(),
        });
        if let Some(slot) = request.extensions().get::<CallSlot>() {
            slot.update(|r| {
                r.resource = resource_name;
                r.allowed = Some(decision.allowed);
                r.policies = decision.policies.clone();
                r.attested = claims.is_some();
            });
        }
        if decision.allowed {
            Ok(caller)
        } else {
            Err(Status::permission_denied("permission denied"))
        }
    }

    /// The claims of the attestation token the caller presents, if it presents one. A
    /// token that is present but not valid is refused rather than ignored, so that a
    /// workload learns at once that it must attest again.
    fn presented_claims<T>(
        &self,
        request: &tonic::Request<T>,
        caller: &SpiffeId,
    ) -> Result<Option<attest::claims::Claims>, Status> {
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
        source.claims(token, caller).map(Some).map_err(refused)
    }
}

/// The tower layer every call passes through. It also bounds the calls in flight across
/// all connections: beyond the bound a call is answered `RESOURCE_EXHAUSTED` at once,
/// never queued.
#[derive(Debug, Clone)]
pub struct CallLayer {
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl CallLayer {
    pub fn new(max_concurrent_requests: usize) -> CallLayer {
        CallLayer {
            in_flight: Arc::new(tokio::sync::Semaphore::new(max_concurrent_requests)),
        }
    }
}

impl<S> tower::Layer<S> for CallLayer {
    type Service = CallService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallService {
            inner,
            in_flight: self.in_flight.clone(),
        }
    }
}

/// See [`CallLayer`].
#[derive(Debug, Clone)]
pub struct CallService<S> {
    inner: S,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl<S, B> tower::Service<http::Request<B>> for CallService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            tracing::warn!(method = request.uri().path(), "overloaded: call refused");
            let refused = Status::resource_exhausted("too many requests in flight").into_http();
            return Box::pin(async move { Ok(refused) });
        };
        let slot = CallSlot::default();
        let method = request.uri().path().to_string();
        let caller = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.identity.as_ref().map(|i| i.to_string()));
        slot.update(|r| {
            r.method = method;
            r.caller = caller;
        });
        request.extensions_mut().insert(slot.clone());
        // Take the service that was driven to readiness; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let started = Instant::now();
        Box::pin(async move {
            let response = inner.call(request).await;
            drop(permit);
            if let Ok(response) = &response {
                let record = slot.snapshot();
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(Code::from_i32)
                    .unwrap_or(Code::Ok);
                tracing::info!(
                    target: "keybroker::call",
                    method = %record.method,
                    caller = record.caller.as_deref().unwrap_or("-"),
                    resource = record.resource.as_deref().unwrap_or("-"),
                    allowed = ?record.allowed,
                    policies = ?record.policies,
                    attested = record.attested,
                    code = ?code,
                    micros = started.elapsed().as_micros() as u64,
                    "call"
                );
            }
            response
        })
    }
}
