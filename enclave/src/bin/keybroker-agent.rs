//! `keybroker-agent`: attests this workload to a Keybroker and keeps its certificate, key
//! and tokens in files (`enclave::cli`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    enclave::cli::main()
}
