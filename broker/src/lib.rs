//! The Keybroker service and the `keybroker` CLI.
//!
//! Today this holds the security-team commands that work over local PKCS#11 (`keybroker
//! token ...`). The gRPC service, policy, storage and audit come next (see DESIGN.md).
#![forbid(unsafe_code)]

pub mod cli;
