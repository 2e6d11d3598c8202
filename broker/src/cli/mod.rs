//! Command-line interface. Tables for people by default, `--json` for scripts. PINs are
//! read from files or environment variables, never from arguments.

mod token;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use hsm_backend::{HsmError, Pin};

/// Keybroker: a hardware-backed key manager.
#[derive(Debug, Parser)]
#[command(name = "keybroker", version, about)]
pub struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set up and inspect HSM tokens over local PKCS#11.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

/// Where the PKCS#11 module is.
#[derive(Debug, Args)]
pub struct ModuleArg {
    /// Path of the PKCS#11 module (for SoftHSM2: /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, env = "KEYBROKER_PKCS11_MODULE")]
    pub module: PathBuf,
}

/// Reads a PIN from a file or an environment variable.
fn read_pin(file: Option<&PathBuf>, env: Option<&String>) -> Result<Pin, CliError> {
    match (file, env) {
        (Some(path), _) => Ok(Pin::from_file(path)?),
        (None, Some(var)) => Ok(Pin::from_env(var)?),
        (None, None) => Err(CliError::Usage(
            "a PIN file or PIN variable is required".into(),
        )),
    }
}

/// A failed command, with its exit code.
#[derive(Debug)]
pub enum CliError {
    /// Wrong arguments (exit 2).
    Usage(String),
    /// The HSM refused or failed (exit 1, or 3 for authentication).
    Hsm(HsmError),
    /// Output could not be written (exit 1).
    Output(String),
}

impl CliError {
    /// The process exit code: 2 usage, 3 wrong or locked PIN, 4 not found, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Hsm(HsmError::PinIncorrect | HsmError::PinLocked) => 3,
            CliError::Hsm(HsmError::TokenNotFound(_) | HsmError::KeyNotFound(_)) => 4,
            _ => 1,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Output(m) => f.write_str(m),
            CliError::Hsm(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<HsmError> for CliError {
    fn from(e: HsmError) -> Self {
        CliError::Hsm(e)
    }
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command fails with; see [`CliError::exit_code`].
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Token(cmd) => token::run(cmd, cli.json),
    }
}

/// Prints a value as pretty JSON.
fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Output(e.to_string()))?;
    println!("{text}");
    Ok(())
}
