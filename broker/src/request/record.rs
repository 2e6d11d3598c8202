//! The call record: what one call did, filled in by the layers and the gate as it runs, and
//! written as one log line when it ends. Audit attaches here later.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::Code;

use crate::BoxFuture;
use crate::tls::PeerInfo;

/// What one call did.
#[derive(Debug, Default, Clone)]
pub struct CallRecord {
    pub caller: Option<String>,
    pub method: String,
    pub resource: Option<String>,
    pub allowed: Option<bool>,
    pub policies: Vec<String>,
    pub attested: bool,
}

/// The shared slot the layers and the gate write into.
#[derive(Debug, Clone, Default)]
pub struct CallSlot(Arc<Mutex<CallRecord>>);

impl CallSlot {
    pub(super) fn update(&self, f: impl FnOnce(&mut CallRecord)) {
        if let Ok(mut record) = self.0.lock() {
            f(&mut record);
        }
    }

    fn snapshot(&self) -> CallRecord {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Opens the record of every call and logs it when the call ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallRecordLayer;

impl<S> tower::Layer<S> for CallRecordLayer {
    type Service = CallRecordService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallRecordService { inner }
    }
}

/// See [`CallRecordLayer`].
#[derive(Debug, Clone)]
pub struct CallRecordService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for CallRecordService<S>
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
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
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
            if let Ok(response) = &response {
                log_call(&slot.snapshot(), status_code(response), started);
            }
            response
        })
    }
}

/// The gRPC status of a response: its `grpc-status` header (a trailers-only response, as
/// every refusal is), else OK (a unary answer carries its status in trailers).
fn status_code<B>(response: &http::Response<B>) -> Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
        .unwrap_or(Code::Ok)
}

fn log_call(record: &CallRecord, code: Code, started: Instant) {
    tracing::info!(
        target: "keybroker::call",
        method = %record.method,
        caller = record.caller.as_deref().unwrap_or("-"),
        resource = record.resource.as_deref().unwrap_or("-"),
        allowed = ?record.allowed,
        policies = ?record.policies,
        attested = record.attested,
        code = ?code,
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "call"
    );
}
