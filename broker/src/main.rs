//! `keybroker`: the command-line entry point.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Every freed block is zeroed before it returns to the system allocator: a secret that
/// passed through a buffer the broker does not own (a decrypted TLS record, an HTTP/2
/// frame, a protobuf message) does not outlive the buffer. Measured by `make bench`
/// (docs/performance.md).
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);

fn main() -> ExitCode {
    let cli = broker::cli::Cli::parse();
    match broker::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keybroker: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
