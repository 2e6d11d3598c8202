//! `[server]` of the broker's configuration: where to listen, how clients authenticate, and
//! the transport limits that keep one client from exhausting the broker (see
//! `crate::tls` for what each enforces).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[server]`: where and how to listen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Server certificate chain, PEM.
    pub cert: PathBuf,
    /// Server private key, PEM; must not be readable by group or others.
    pub key: PathBuf,
    /// CA bundles that client certificates must chain to.
    pub client_ca: Vec<PathBuf>,
    /// Accept client chains with intermediate certificates. Off: the verifier does not
    /// enforce `pathLenConstraint` on client CAs, so only leaves they sign directly count.
    #[serde(default)]
    pub allow_client_intermediates: bool,
    /// Certificate revocation lists (PEM or DER) for client certificates, re-read on SIGHUP.
    /// With any configured, every client CA must have a current list: a certificate whose
    /// revocation status is unknown is refused.
    #[serde(default)]
    pub client_crls: Vec<PathBuf>,
    /// Established connections at most.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// TLS handshakes in flight at most, from all addresses together.
    #[serde(default = "defaults::max_handshakes")]
    pub max_handshakes: usize,
    /// TLS handshakes in flight at most from one address (IPv4 address or IPv6 /64).
    #[serde(default = "defaults::max_handshakes_per_address")]
    pub max_handshakes_per_address: usize,
    /// Authorized calls in flight across the broker; past it, `RESOURCE_EXHAUSTED`.
    #[serde(default = "defaults::max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Calls in flight for one identity, across all its connections.
    #[serde(default = "defaults::max_calls_per_identity")]
    pub max_calls_per_identity: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: calls one connection may have open.
    #[serde(default = "defaults::max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// Largest request message, bytes.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    #[serde(default = "defaults::request_timeout_seconds")]
    pub request_timeout_seconds: u64,
    #[serde(default = "defaults::handshake_timeout_seconds")]
    pub handshake_timeout_seconds: u64,
    /// A connection with no call open for this long is closed.
    #[serde(default = "defaults::idle_timeout_seconds")]
    pub idle_timeout_seconds: u64,
    /// HTTP/2 PING interval on a quiet connection, to find dead peers.
    #[serde(default = "defaults::keepalive_interval_seconds")]
    pub keepalive_interval_seconds: u64,
    /// How long a PING may go unanswered before the connection is closed.
    #[serde(default = "defaults::keepalive_timeout_seconds")]
    pub keepalive_timeout_seconds: u64,
    /// A connection is asked to close (GOAWAY) after this long, whatever it does; calls
    /// open then get the request timeout to finish.
    #[serde(default = "defaults::max_connection_age_seconds")]
    pub max_connection_age_seconds: u64,
}

impl ServerConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_seconds)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_secs(self.keepalive_interval_seconds)
    }
    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_secs(self.keepalive_timeout_seconds)
    }
    pub fn max_connection_age(&self) -> Duration {
        Duration::from_secs(self.max_connection_age_seconds)
    }

    /// `(field, reason)` for the first transport limit that makes no sense.
    pub(super) fn validate_transport(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, reason: &str| Err((format!("server.{field}"), reason.to_string()));
        let counts = [
            ("max_connections", self.max_connections),
            ("max_handshakes", self.max_handshakes),
            (
                "max_handshakes_per_address",
                self.max_handshakes_per_address,
            ),
            ("max_concurrent_requests", self.max_concurrent_requests),
            ("max_calls_per_identity", self.max_calls_per_identity),
        ];
        for (field, value) in counts {
            if value == 0 {
                return bad(field, "must be at least 1");
            }
        }
        if self.max_handshakes_per_address > self.max_handshakes {
            return bad(
                "max_handshakes_per_address",
                "must not exceed max_handshakes",
            );
        }
        if self.max_concurrent_streams == 0 || self.max_concurrent_streams > 1024 {
            return bad("max_concurrent_streams", "must be 1 to 1024");
        }
        let seconds = [
            ("request_timeout_seconds", self.request_timeout_seconds),
            ("handshake_timeout_seconds", self.handshake_timeout_seconds),
            ("idle_timeout_seconds", self.idle_timeout_seconds),
            (
                "keepalive_interval_seconds",
                self.keepalive_interval_seconds,
            ),
            ("keepalive_timeout_seconds", self.keepalive_timeout_seconds),
            (
                "max_connection_age_seconds",
                self.max_connection_age_seconds,
            ),
        ];
        for (field, value) in seconds {
            if value == 0 || value > 7 * 86_400 {
                return bad(field, "must be 1 second to 7 days");
            }
        }
        Ok(())
    }
}

mod defaults {
    pub fn max_connections() -> usize {
        1024
    }
    pub fn max_handshakes() -> usize {
        256
    }
    pub fn max_handshakes_per_address() -> usize {
        16
    }
    pub fn max_concurrent_requests() -> usize {
        512
    }
    pub fn max_calls_per_identity() -> usize {
        64
    }
    pub fn max_concurrent_streams() -> u32 {
        64
    }
    pub fn max_message_bytes() -> usize {
        4 << 20
    }
    pub fn request_timeout_seconds() -> u64 {
        30
    }
    pub fn handshake_timeout_seconds() -> u64 {
        10
    }
    pub fn idle_timeout_seconds() -> u64 {
        300
    }
    pub fn keepalive_interval_seconds() -> u64 {
        60
    }
    pub fn keepalive_timeout_seconds() -> u64 {
        20
    }
    pub fn max_connection_age_seconds() -> u64 {
        86_400
    }
}
