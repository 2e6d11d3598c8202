//! `keybroker ca ...`: make the broker an intermediate CA (`ca.mode = "intermediate"`).
//! Both commands read the broker's configuration and open its store and CA token
//! locally, beside a running broker, which picks the result up within 10 s.

use std::path::PathBuf;

use clap::Subcommand;
use hsm_backend::{HsmBackend, Pkcs11Module, PoolConfig, TokenSelector};

use super::CliError;
use crate::config::Config;
use crate::store::sqlite::SqliteStore;

/// CA commands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Make the next CA key in the HSM and print a CSR for it (PEM), signed there, for
    /// the external root to sign.
    Csr {
        /// The broker's configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Write the CSR here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Install the certificate the root signed, with the chain above it (PEM: the CA
    /// certificate first, the root last). It is checked by verifying a certificate from
    /// the new CA through the chain.
    Install {
        /// The broker's configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The chain, PEM.
        #[arg(long, value_name = "FILE")]
        chain: PathBuf,
    },
}

/// The CA's token and the store, opened from the configuration.
fn open(config: &std::path::Path) -> Result<(Config, String, HsmBackend, SqliteStore), CliError> {
    let config = Config::load(config).map_err(|e| CliError::Usage(e.to_string()))?;
    let name = config.ca.backend.clone().ok_or_else(|| {
        CliError::Usage("ca.backend: the configuration names no HSM for the CA".into())
    })?;
    let hsm = config
        .hsm
        .iter()
        .find(|h| h.name == name)
        .ok_or_else(|| CliError::Usage(format!("ca.backend: no [[hsm]] is named {name:?}")))?;
    // The store first: unlocking it opens the `protect_with` backend, often this token,
    // and closes it again, since a process opens a token once.
    let store = crate::store_key::open_offline(&config, true)
        .map_err(|e| CliError::Serve(format!("store: {e}")))?;
    let pin = crate::backends::read_pin(hsm.user_pin_file.as_deref(), hsm.user_pin_env.as_deref())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let module = Pkcs11Module::load(&hsm.module)?;
    let token = HsmBackend::open_with(
        module,
        &TokenSelector::Label(hsm.token_label.clone()),
        pin,
        PoolConfig::default(),
    )?;
    Ok((config, name, token, store))
}

fn failed(e: crate::error::BrokerError) -> CliError {
    match e {
        crate::error::BrokerError::InvalidArgument(m) => CliError::Usage(m),
        other => CliError::Check(other.to_string()),
    }
}

/// Runs a CA command.
///
/// # Errors
/// The configuration, the HSM or the store fails; the chain is refused.
pub fn run(command: CaCommand) -> Result<(), CliError> {
    match command {
        CaCommand::Csr { config, out } => {
            let (config, name, token, store) = open(&config)?;
            let pem =
                crate::ca::intermediate::csr(&token, &store, &name, &config.ca).map_err(failed)?;
            match out {
                Some(path) => std::fs::write(&path, pem)
                    .map_err(|e| CliError::Output(format!("{}: {e}", path.display())))?,
                None => print!("{pem}"),
            }
            Ok(())
        }
        CaCommand::Install { config, chain } => {
            let (_, name, token, store) = open(&config)?;
            let pem = std::fs::read_to_string(&chain)
                .map_err(|e| CliError::Usage(format!("{}: {e}", chain.display())))?;
            let version =
                crate::ca::intermediate::install(&token, &store, &name, &pem).map_err(failed)?;
            println!("CA version {version} installed; a running broker signs with it within 10 s");
            Ok(())
        }
    }
}
