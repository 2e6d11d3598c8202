//! The request path. Every gRPC call passes through one `tower::ServiceBuilder` stack
//! ([`stack`]), one concern per layer, outermost first:
//!
//! 1. [`ConnectionActivityLayer`]: marks the call open on its connection until its
//!    response ends, so that the connection's idle timeout counts from the last call.
//! 2. [`CallRecordLayer`]: the call's record and its log line (caller, method, resource,
//!    decision, status, latency), whatever refuses the call further in.
//! 3. [`CertificateValidityLayer`]: the client certificate must be inside its validity
//!    period *now*, checked on every call, so a certificate that expires while its
//!    connection stays open stops working.
//! 4. [`ActionTableLayer`]: maps the gRPC path to its [`Action`](crate::authz::Action).
//!    A path that is not in the table is refused before any handler runs; health and
//!    reflection are the only exceptions.
//! 5. [`CallerLayer`]: the caller must be identified: exactly one SPIFFE ID.
//! 6. [`IdentityLimitLayer`]: calls in flight per identity are bounded, so that one caller
//!    cannot take every slot.
//!
//! The handler then asks the [`Gate`] to authorize the call on its resource. The gate
//! returns an [`Authorized`] capability that no other code can make: every operation on a
//! key, a policy or a backend takes one, so a handler that forgets to authorize does not
//! compile. The broker-wide in-flight permit is taken only then, after the caller is
//! identified and the call allowed, and is held by the capability until the call ends.
//!
//! HTTP/2 `MAX_CONCURRENT_STREAMS`, connection and handshake budgets live in the
//! transport (`crate::tls`, `crate::server`), below this stack.

mod admission;
mod gate;
mod record;

pub use admission::{
    ActionTableLayer, CallerLayer, IdentityLimitLayer, RoutedAction, is_exempt_path,
};
pub use gate::{
    ATTESTATION_HEADER, Authorized, AuthorizedResource, ClaimsError, ClaimsSource, FOLLOW_ONS,
    Gate, Holder, Presented,
};
pub use record::{CallRecord, CallRecordLayer, CallSlot};

use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};

use crate::tls::{CertificateValidityLayer, ConnectionActivityLayer};

/// The layers of [`stack`], innermost first (as `tower` nests them).
pub type RequestStack = Stack<
    IdentityLimitLayer,
    Stack<
        CallerLayer,
        Stack<
            ActionTableLayer,
            Stack<
                CertificateValidityLayer,
                Stack<CallRecordLayer, Stack<ConnectionActivityLayer, Identity>>,
            >,
        >,
    >,
>;

/// The request stack the server runs every call through, outermost first (see the
/// module docs).
pub fn stack(max_calls_per_identity: usize) -> ServiceBuilder<RequestStack> {
    ServiceBuilder::new()
        .layer(ConnectionActivityLayer)
        .layer(CallRecordLayer)
        .layer(CertificateValidityLayer)
        .layer(ActionTableLayer)
        .layer(CallerLayer)
        .layer(IdentityLimitLayer::new(max_calls_per_identity))
}
