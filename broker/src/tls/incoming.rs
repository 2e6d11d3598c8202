//! The accept loop for tonic's `serve_with_incoming_shutdown`.
//!
//! tonic's built-in TLS runs each handshake inline in the accept path, so one client that
//! connects and sends nothing stalls everyone behind it. Here every handshake runs in its own
//! task with a deadline, and failures are logged and dropped (an `Err` item would only reach
//! tonic's trace log anyway).
//!
//! Two budgets, so that neither kind of connection can starve the other:
//! * handshakes in flight: a few per source address and a bounded total (`super::budget`),
//!   so sockets that never speak TLS cost one address its share, not everyone's;
//! * established connections: a global cap, the permit taken when the handshake completes
//!   and held until the connection closes.
//!
//! Over either budget a connection is closed at once. An established connection with no call
//! open for the idle timeout is closed too (see `super::activity`); HTTP/2 keep-alive and
//! the maximum connection age are tonic's (`Server::builder()`), set in `crate::server`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use super::budget::{HandshakeBudget, Refusal};
use super::{PeerInfo, ServerTls};

/// How many connections are accepted in one poll before yielding to the rest of the server.
const ACCEPT_BATCH: usize = 64;
/// How long to pause accepting after a listener error such as running out of descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Limits on incoming connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Established connections at most; `0` refuses all.
    pub max_connections: usize,
    /// TLS handshakes in flight at most, from all addresses together.
    pub max_handshakes: usize,
    /// TLS handshakes in flight at most from one address (an IPv4 address or an IPv6 /64).
    pub max_handshakes_per_address: usize,
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// An established connection with no call open for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// 1024 connections; 256 handshakes, 16 per address, 10 seconds each; 5 idle minutes.
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            max_handshakes: 256,
            max_handshakes_per_address: 16,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// A stream of established mutual-TLS connections, for
/// `tonic::transport::Server::builder()...serve_with_incoming_shutdown(incoming, signal)`.
///
/// It never yields an `Err`: failed handshakes and accept errors are logged and skipped. Must
/// be polled inside a Tokio runtime (tonic does). Dropping it closes the listener and aborts
/// handshakes still in progress.
pub struct TlsIncoming {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    budget: Arc<HandshakeBudget>,
    established: Arc<Semaphore>,
    handshakes: JoinSet<Option<TlsConnection>>,
    paused: Option<Pin<Box<Sleep>>>,
}

impl TlsIncoming {
    /// Accepts TCP connections from `listener` and completes TLS handshakes with `tls`.
    pub fn new(listener: TcpListener, tls: &ServerTls, limits: ConnectionLimits) -> TlsIncoming {
        TlsIncoming {
            listener,
            acceptor: TlsAcceptor::from(tls.config().clone()),
            limits,
            budget: HandshakeBudget::new(limits.max_handshakes, limits.max_handshakes_per_address),
            established: Arc::new(Semaphore::new(
                limits.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            handshakes: JoinSet::new(),
            paused: None,
        }
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    /// The operating-system error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts whatever is waiting (up to a batch), starting a handshake task for each.
    fn poll_accept(&mut self, cx: &mut Context<'_>) {
        for _ in 0..ACCEPT_BATCH {
            if let Some(pause) = self.paused.as_mut() {
                if pause.as_mut().poll(cx).is_pending() {
                    return;
                }
                self.paused = None;
            }
            match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((tcp, addr))) => self.start_handshake(tcp, addr),
                Poll::Ready(Err(e)) if is_per_connection(&e) => {
                    tracing::debug!(error = %e, "accept failed for one connection");
                }
                Poll::Ready(Err(e)) => {
                    tracing::warn!(error = %e, "accept failed; pausing before the next one");
                    self.paused = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                }
                Poll::Pending => return,
            }
        }
        // More may be waiting: come back after the connections already handshaken are served.
        cx.waker().wake_by_ref();
    }

    fn start_handshake(&mut self, tcp: TcpStream, addr: SocketAddr) {
        if self.established.available_permits() == 0 {
            tracing::debug!(%addr, "connection limit reached; closing the new connection");
            return; // dropping `tcp` closes it
        }
        let ticket = match self.budget.try_start(addr.ip()) {
            Ok(ticket) => ticket,
            Err(Refusal::Address) => {
                tracing::debug!(%addr, "this address has its handshakes in flight; closing");
                return;
            }
            Err(Refusal::Total) => {
                tracing::debug!(%addr, "handshake budget spent; closing the new connection");
                return;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%addr, error = %e, "could not set TCP_NODELAY");
        }
        let acceptor = self.acceptor.clone();
        let established = self.established.clone();
        let limits = self.limits;
        self.handshakes.spawn(async move {
            let deadline = limits.handshake_timeout;
            let result = tokio::time::timeout(deadline, acceptor.accept(tcp)).await;
            drop(ticket);
            let stream = match result {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    log_handshake_failure(addr, &e);
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%addr, ?deadline, "TLS handshake timed out");
                    return None;
                }
            };
            let Ok(permit) = established.try_acquire_owned() else {
                tracing::debug!(%addr, "connection limit reached after the handshake; closing");
                return None;
            };
            let peer = PeerInfo::from_connection(Some(addr), stream.get_ref().1);
            tracing::debug!(%addr, identity = ?peer.identity, kx = ?peer.kx_group,
                "TLS connection established");
            Some(TlsConnection::new(
                stream,
                peer,
                permit,
                limits.idle_timeout,
            ))
        });
    }
}

/// A refused client certificate is worth an operator's attention (it says which rule); other
/// failures (scanners, dropped connections) are routine.
fn log_handshake_failure(addr: SocketAddr, e: &io::Error) {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| matches!(tls, rustls::Error::InvalidCertificate(_)));
    if certificate {
        tracing::info!(%addr, error = %e, "client certificate refused");
    } else {
        tracing::debug!(%addr, error = %e, "TLS handshake failed");
    }
}

/// Accept errors that concern only the connection being accepted, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

impl Stream for TlsIncoming {
    type Item = Result<TlsConnection, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.poll_accept(cx);
        loop {
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(conn)))) => return Poll::Ready(Some(Ok(conn))),
                Poll::Ready(Some(Ok(None))) => {}
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "TLS handshake task ended abnormally");
                }
                // No handshakes in flight: the listener's waker brings us back.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl fmt::Debug for TlsIncoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIncoming")
            .field("listener", &self.listener)
            .field("limits", &self.limits)
            .field(
                "established_available",
                &self.established.available_permits(),
            )
            .field("handshakes_in_flight", &self.budget.in_flight())
            .finish_non_exhaustive()
    }
}

/// An established, mutually authenticated TLS connection. Holds one of the
/// [`ConnectionLimits::max_connections`] permits until dropped. Once no call has been open
/// on it for the idle timeout, reading fails with `TimedOut`, and the server closes it.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
}

impl TlsConnection {
    fn new(
        stream: TlsStream<TcpStream>,
        peer: PeerInfo,
        permit: OwnedSemaphorePermit,
        idle_timeout: Duration,
    ) -> TlsConnection {
        let first = peer.activity.idle_deadline(idle_timeout);
        TlsConnection {
            stream,
            peer,
            _permit: permit,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep_until(first)),
        }
    }

    /// Ready with an error once the connection has been idle for the idle timeout; until
    /// then the timer is re-armed for the latest deadline.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.peer.activity.idle_deadline(self.idle_timeout);
            if deadline <= Instant::now() {
                tracing::debug!(addr = ?self.peer.remote_addr, "idle connection closed");
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no call for the idle timeout",
                ));
            }
            self.idle.as_mut().reset(deadline);
        }
    }

    /// What the handshake established about the peer.
    pub fn peer_info(&self) -> &PeerInfo {
        &self.peer
    }

    /// The underlying TLS stream.
    pub fn get_ref(&self) -> &TlsStream<TcpStream> {
        &self.stream
    }
}

impl fmt::Debug for TlsConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(idle) = this.poll_idle(cx) {
            return Poll::Ready(Err(idle));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
