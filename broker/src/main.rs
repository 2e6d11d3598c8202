//! `keybroker`: the command-line entry point.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

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
