//! `keybroker store`: offline checks of the broker's own store (docs/sealing.md, "The
//! broker's own data at rest").

use std::path::PathBuf;

use clap::Subcommand;

use super::CliError;
use crate::config::Config;

/// `keybroker store ...`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Check every row's MAC under the store key, which the `[store] protect_with` backend
    /// unwraps, and name every row that was edited outside the broker. Exit 1 if any was.
    Verify {
        /// The broker's configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Runs a store command.
///
/// # Errors
/// The configuration, the store or its backend fails; a row fails its check.
pub fn run(command: StoreCommand) -> Result<(), CliError> {
    let StoreCommand::Verify { config } = command;
    let config = Config::load(&config).map_err(|e| CliError::Usage(e.to_string()))?;
    if config.store.protect_with.is_none() {
        return Err(CliError::Check(
            "store.protect_with is not set: the store's rows carry no MAC to verify".into(),
        ));
    }
    let store = crate::store_key::open_offline(&config, false)
        .map_err(|e| CliError::Check(format!("store: {e}")))?;
    let verified = store
        .verify()
        .wait()
        .map_err(|e| CliError::Check(format!("store: {e}")))?;
    for why in &verified.refused {
        println!("refused: {why}");
    }
    match verified.refused.len() {
        0 => {
            println!("{} rows checked: every MAC verifies", verified.rows);
            Ok(())
        }
        n => Err(CliError::Check(format!(
            "{n} of {} rows fail their integrity check; restore them from a backup",
            verified.rows
        ))),
    }
}
