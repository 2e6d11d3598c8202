//! The workload side of Keybroker (docs/identity.md): evidence that proves what the
//! workload runs (`evidence`), the ephemeral key that evidence binds (`key`), and the
//! client that turns them into a certificate and tokens (`client`).
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod evidence;
pub mod files;
pub mod key;
