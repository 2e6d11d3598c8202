//! The accept loop for tonic's `serve_with_incoming_shutdown`.
//!
//! tonic's built-in TLS runs each handshake inline in the accept path, so one client that
//! connects and sends nothing stalls everyone behind it. Here every handshake runs in its own
//! task with a deadline, failures are logged and dropped (an `Err` item would only reach
//! tonic's trace log anyway), and a semaphore caps the number of open connections: the permit
//! is taken at accept and held by the connection until it closes, so handshakes in flight
//! count too. Over the cap, new TCP connections are closed at once.

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
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use super::{PeerInfo, ServerTls};

/// How many connections are accepted in one poll before yielding to the rest of the server.
const ACCEPT_BATCH: usize = 64;
/// How long to pause accepting after a listener error such as running out of descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Limits on incoming connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections (handshaking or established) at most; `0` refuses all.
    pub max_connections: usize,
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// 1024 connections, 10-second handshakes.
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
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
    handshake_timeout: Duration,
    permits: Arc<Semaphore>,
    handshakes: JoinSet<Option<TlsConnection>>,
    paused: Option<Pin<Box<Sleep>>>,
}

impl TlsIncoming {
    /// Accepts TCP connections from `listener` and completes TLS handshakes with `tls`.
    pub fn new(listener: TcpListener, tls: &ServerTls, limits: ConnectionLimits) -> TlsIncoming {
        TlsIncoming {
            listener,
            acceptor: TlsAcceptor::from(tls.config().clone()),
            handshake_timeout: limits.handshake_timeout,
            permits: Arc::new(Semaphore::new(
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
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::debug!(%addr, "connection limit reached; closing the new connection");
            return; // dropping `tcp` closes it
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%addr, error = %e, "could not set TCP_NODELAY");
        }
        let acceptor = self.acceptor.clone();
        let deadline = self.handshake_timeout;
        self.handshakes.spawn(async move {
            match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let peer = PeerInfo::from_connection(Some(addr), stream.get_ref().1);
                    tracing::debug!(%addr, identity = ?peer.identity, kx = ?peer.kx_group,
                        "TLS connection established");
                    Some(TlsConnection {
                        stream,
                        peer,
                        _permit: permit,
                    })
                }
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%addr, ?deadline, "TLS handshake timed out");
                    None
                }
            }
        });
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
            .field("handshake_timeout", &self.handshake_timeout)
            .field("available_permits", &self.permits.available_permits())
            .field("handshakes_in_flight", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

/// An established, mutually authenticated TLS connection. Holds one of the
/// [`ConnectionLimits::max_connections`] permits until dropped.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
    _permit: OwnedSemaphorePermit,
}

impl TlsConnection {
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
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
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
