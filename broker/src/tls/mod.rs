//! TLS 1.3 with client certificates.
