//! The layers that admit a call before any handler runs: the action table, the caller's
//! identity, and the per-identity bound. Each is an [`Admit`] check; one service type runs
//! any of them, answers a refusal at once (never queued), and holds what the check returns
//! (a permit, say) until the call ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tonic::Status;

use crate::BoxFuture;
use crate::authz::Action;
use crate::identity::SpiffeId;
use crate::tls::PeerInfo;

/// Paths served without an action: gRPC health checking and server reflection. Both are
/// read-only and describe only the service itself.
const EXEMPT_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
];

/// Whether `path` is served without an action and an identity.
pub fn is_exempt_path(path: &str) -> bool {
    EXEMPT_SERVICES.iter().any(|s| path.starts_with(s))
}

/// The action the table gave the call, in the request's extensions for the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutedAction(pub Action);

/// A check that admits or refuses one call, and what it holds while the call runs.
pub trait Admit: Clone + Send + Sync + 'static {
    /// Held until the call's response is ready.
    type Held: Send + 'static;
    /// Admits the call (possibly adding to its extensions) or refuses it.
    ///
    /// # Errors
    /// The status the caller gets.
    fn admit(&self, path: &str, extensions: &mut http::Extensions) -> Result<Self::Held, Status>;
}

/// Runs an [`Admit`] check in front of `S`.
#[derive(Debug, Clone)]
pub struct AdmitService<C, S> {
    check: C,
    inner: S,
}

impl<C, S, B> tower::Service<http::Request<B>> for AdmitService<C, S>
where
    C: Admit,
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let held = match self.check.admit(&path, request.extensions_mut()) {
            Ok(held) => held,
            Err(status) => {
                let refused = status.into_http();
                return Box::pin(async move { Ok(refused) });
            }
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await;
            drop(held);
            response
        })
    }
}

macro_rules! admit_layer {
    ($layer:ident) => {
        impl<S> tower::Layer<S> for $layer {
            type Service = AdmitService<$layer, S>;
            fn layer(&self, inner: S) -> Self::Service {
                AdmitService {
                    check: self.clone(),
                    inner,
                }
            }
        }
    };
}

/// Maps each gRPC path to its [`Action`] ([`Action::from_grpc_path`]); refuses every path
/// that is not in the table with `PERMISSION_DENIED`, before any handler runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ActionTableLayer;
admit_layer!(ActionTableLayer);

impl Admit for ActionTableLayer {
    type Held = ();
    fn admit(&self, path: &str, extensions: &mut http::Extensions) -> Result<(), Status> {
        if is_exempt_path(path) {
            return Ok(());
        }
        match Action::from_grpc_path(path) {
            Some(action) => {
                extensions.insert(RoutedAction(action));
                Ok(())
            }
            None => {
                tracing::warn!(path, "call to a path outside the action table refused");
                Err(Status::permission_denied("permission denied"))
            }
        }
    }
}

/// Requires an identified caller: exactly one SPIFFE ID in its client certificate.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallerLayer;
admit_layer!(CallerLayer);

impl Admit for CallerLayer {
    type Held = ();
    fn admit(&self, path: &str, extensions: &mut http::Extensions) -> Result<(), Status> {
        if is_exempt_path(path) {
            return Ok(());
        }
        let peer = extensions.get::<PeerInfo>();
        if peer.and_then(|p| p.identity.as_ref()).is_none() {
            return Err(Status::unauthenticated(
                "the client certificate has no SPIFFE ID",
            ));
        }
        Ok(())
    }
}

/// Bounds the calls one identity has in flight, across all its connections. Over the
/// bound, its calls get `RESOURCE_EXHAUSTED`; other identities are not affected.
#[derive(Debug, Clone)]
pub struct IdentityLimitLayer {
    max_per_identity: usize,
    in_flight: Arc<Mutex<HashMap<SpiffeId, usize>>>,
}
admit_layer!(IdentityLimitLayer);

impl IdentityLimitLayer {
    pub fn new(max_per_identity: usize) -> IdentityLimitLayer {
        IdentityLimitLayer {
            max_per_identity,
            in_flight: Arc::default(),
        }
    }
}

/// One identity's slot; given back when the call ends.
#[derive(Debug)]
pub struct IdentitySlot {
    identity: SpiffeId,
    in_flight: Arc<Mutex<HashMap<SpiffeId, usize>>>,
}

impl Drop for IdentitySlot {
    fn drop(&mut self) {
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.identity) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.identity);
            }
        }
    }
}

impl Admit for IdentityLimitLayer {
    type Held = Option<IdentitySlot>;
    fn admit(
        &self,
        _path: &str,
        extensions: &mut http::Extensions,
    ) -> Result<Option<IdentitySlot>, Status> {
        let Some(identity) = extensions
            .get::<PeerInfo>()
            .and_then(|p| p.identity.clone())
        else {
            // Exempt paths only: every other call was refused by [`CallerLayer`].
            return Ok(None);
        };
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = map.entry(identity.clone()).or_default();
        if *count >= self.max_per_identity {
            tracing::warn!(caller = %identity, "too many calls in flight for this identity");
            return Err(Status::resource_exhausted(
                "too many calls in flight for this identity",
            ));
        }
        *count += 1;
        drop(map);
        Ok(Some(IdentitySlot {
            identity,
            in_flight: self.in_flight.clone(),
        }))
    }
}
