//! The two per-call checks the transport needs from the request stack, as tower layers that
//! sit outermost (before any permit is taken):
//!
//! * [`CertificateValidityLayer`]: a connection outlives the handshake that checked its
//!   certificate, so every call checks [`PeerInfo::check_validity`] again and a certificate
//!   that expired while its connection was open gets `UNAUTHENTICATED`;
//! * [`ConnectionActivityLayer`]: marks each call open until its response body ends, so that
//!   the connection's idle timeout counts from the last call, not the last byte.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;

use super::{CallGuard, PeerInfo};

use crate::BoxFuture;

/// Refuses calls on a connection whose client certificate is outside its validity now.
#[derive(Debug, Clone, Copy, Default)]
pub struct CertificateValidityLayer;

impl<S> tower::Layer<S> for CertificateValidityLayer {
    type Service = CertificateValidity<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CertificateValidity { inner }
    }
}

/// See [`CertificateValidityLayer`].
#[derive(Debug, Clone)]
pub struct CertificateValidity<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for CertificateValidity<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let verdict = match request.extensions().get::<PeerInfo>() {
            Some(peer) => peer.check_validity(SystemTime::now()),
            None => Err(super::CertificateValidityError::NoCertificate),
        };
        if let Err(e) = verdict {
            tracing::info!(method = request.uri().path(), reason = %e, "call refused");
            let refused = Status::unauthenticated(e.to_string()).into_http();
            return Box::pin(async move { Ok(refused) });
        }
        Box::pin(self.inner.call(request))
    }
}

/// Keeps each call counted as open on its connection until its response body is done.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionActivityLayer;

impl<S> tower::Layer<S> for ConnectionActivityLayer {
    type Service = ConnectionActivityService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ConnectionActivityService { inner }
    }
}

/// See [`ConnectionActivityLayer`].
#[derive(Debug, Clone)]
pub struct ConnectionActivityService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for ConnectionActivityService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = request
            .extensions()
            .get::<PeerInfo>()
            .map(|peer| peer.activity.call_started());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match guard {
                Some(guard) => response.map(|body| {
                    tonic::body::Body::new(GuardedBody {
                        inner: body,
                        _guard: guard,
                    })
                }),
                None => response,
            })
        })
    }
}

/// A response body that holds its call open (a [`CallGuard`]) until it is dropped.
struct GuardedBody {
    inner: tonic::body::Body,
    _guard: CallGuard,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Layer, Service, ServiceExt};

    /// Answers every request with an empty OK response.
    #[derive(Clone)]
    struct OkService;

    impl Service<http::Request<()>> for OkService {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let body = tonic::body::Body::new(OneFrame(Some(Bytes::from_static(b"x"))));
            std::future::ready(Ok(http::Response::new(body)))
        }
    }

    /// A body with one frame still to send, as a response that is being streamed.
    struct OneFrame(Option<Bytes>);

    impl HttpBody for OneFrame {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.get_mut().0.take().map(|b| Ok(Frame::data(b))))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }
    }

    fn ok_service() -> OkService {
        OkService
    }

    fn grpc_status(response: &http::Response<tonic::body::Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    fn request_from(peer: Option<PeerInfo>) -> http::Request<()> {
        let mut request = http::Request::new(());
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        request
    }

    fn unix_now() -> i64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[tokio::test]
    async fn expired_and_certificate_less_calls_are_refused_before_the_service() {
        let now = unix_now();
        let valid = PeerInfo {
            not_before: Some(now - 60),
            not_after: Some(now + 60),
            ..PeerInfo::default()
        };
        let expired = PeerInfo {
            not_after: Some(now - 1),
            ..valid.clone()
        };
        let layer = CertificateValidityLayer;
        let served = layer
            .layer(ok_service())
            .oneshot(request_from(Some(valid)))
            .await
            .unwrap();
        assert_eq!(grpc_status(&served), None);
        for (peer, message) in [
            (Some(expired), "has expired"),
            (None, "no verified client certificate"),
        ] {
            let refused = layer
                .layer(ok_service())
                .oneshot(request_from(peer))
                .await
                .unwrap();
            assert_eq!(grpc_status(&refused), Some("16"), "UNAUTHENTICATED");
            let text = refused
                .headers()
                .get("grpc-message")
                .unwrap()
                .to_str()
                .unwrap();
            assert!(text.contains(&message.replace(' ', "%20")), "{text}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_stays_open_until_its_response_body_is_dropped() {
        let idle = std::time::Duration::from_secs(5);
        let peer = PeerInfo {
            activity: super::super::ConnectionActivity::new(),
            ..PeerInfo::default()
        };
        let activity = peer.activity.clone();
        let response = ConnectionActivityLayer
            .layer(ok_service())
            .oneshot(request_from(Some(peer)))
            .await
            .unwrap();
        tokio::time::advance(idle * 3).await;
        // Still open: the deadline moves with the clock.
        assert_eq!(
            activity.idle_deadline(idle),
            tokio::time::Instant::now() + idle
        );
        drop(response);
        let closed = tokio::time::Instant::now();
        tokio::time::advance(idle).await;
        assert_eq!(activity.idle_deadline(idle), closed + idle);
    }
}
