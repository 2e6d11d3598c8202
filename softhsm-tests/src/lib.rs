//! Test fixtures that give each test its own real hardware interface.
//!
//! - [`SoftHsm`]: a private SoftHSM2 token directory and `SOFTHSM2_CONF`.
//! - [`Swtpm`]: a private swtpm process on loopback TCP, killed and removed on drop.
//! - [`Tpm2Pkcs11`]: swtpm behind tpm2-abrmd on a private D-Bus, and a tpm2-pkcs11 token:
//!   a second PKCS#11 module.
//! - [`Postgres`]: a private PostgreSQL server on loopback TCP with password logins, an
//!   admin role that can create and drop login roles, and a database `app`.
//! - [`throughput`]: the measuring loop every `make bench` row uses.
//!
//! The fixtures depend on no other workspace crate, so every crate can take this one
//! as a dev-dependency. They never skip: a missing system package fails the test with
//! a message that names the package and how to install it.
//!
//! Fixtures panic on set-up failure on purpose: that is how a test fails loudly.
#![deny(unsafe_code)]
#![allow(clippy::panic, clippy::expect_used)]

mod packages;
mod postgres;
pub mod soak;
mod softhsm;
mod swtpm;
pub mod throughput;
mod tpm2pkcs11;

pub use packages::{MissingPackage, require_command};
pub use postgres::Postgres;
pub use softhsm::SoftHsm;
pub use swtpm::Swtpm;
pub use tpm2pkcs11::Tpm2Pkcs11;
