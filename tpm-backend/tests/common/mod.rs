//! One swtpm per test, and a backend connected to it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sha2::{Digest as _, Sha256};
use softhsm_tests::Swtpm;
use tpm_backend::{Tcti, TpmBackend, TpmConfig};

pub fn connect(tpm: &Swtpm) -> TpmBackend {
    TpmBackend::connect(TpmConfig::new(Tcti::new(&tpm.tcti()).unwrap())).unwrap()
}

pub fn digest(message: &[u8]) -> [u8; 32] {
    Sha256::digest(message).into()
}
