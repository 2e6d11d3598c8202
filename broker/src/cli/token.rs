//! `keybroker token ...`: list tokens and mechanisms, initialise a token.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use hsm_backend::{Pin, Pkcs11Module, TokenDescription, TokenSelector, provision};
use serde::Serialize;

use super::{CliError, ModuleArg, print_json};

/// The security officer's PIN: from a file or an environment variable, never argv.
#[derive(Debug, Args)]
pub struct SoPinArg {
    /// File holding the security officer's PIN.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "so_pin_env",
        required_unless_present = "so_pin_env"
    )]
    so_pin_file: Option<PathBuf>,
    /// Environment variable holding the security officer's PIN.
    #[arg(long, value_name = "VAR")]
    so_pin_env: Option<String>,
}

impl SoPinArg {
    fn read(&self) -> Result<Pin, CliError> {
        Ok(Pin::from_file_or_env(
            self.so_pin_file.as_deref(),
            self.so_pin_env.as_deref(),
        )?)
    }
}

/// Token commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// List the slots that hold a token, initialised or not.
    List {
        #[command(flatten)]
        module: ModuleArg,
    },
    /// List the mechanisms a token offers.
    Mechanisms {
        #[command(flatten)]
        module: ModuleArg,
        /// The token's label.
        #[arg(long)]
        label: String,
    },
    /// Initialise an empty token and set its user PIN.
    Init {
        #[command(flatten)]
        module: ModuleArg,
        /// Label for the token (1 to 32 bytes).
        #[arg(long)]
        label: String,
        #[command(flatten)]
        so_pin: SoPinArg,
        /// File holding the user PIN.
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "user_pin_env",
            required_unless_present = "user_pin_env"
        )]
        user_pin_file: Option<PathBuf>,
        /// Environment variable holding the user PIN.
        #[arg(long, value_name = "VAR")]
        user_pin_env: Option<String>,
        /// Also make the trusted transport key that releasable keys need (see
        /// `enable-release`).
        #[arg(long)]
        enable_release: bool,
    },
    /// As the security officer, make the token's trusted transport key, the only key that
    /// may wrap releasable keys (docs/releasable-keys.md). Once per token; run again, it
    /// checks the key. Without it, releasable keys can be created but never released.
    EnableRelease {
        #[command(flatten)]
        module: ModuleArg,
        /// The token's label.
        #[arg(long)]
        label: String,
        #[command(flatten)]
        so_pin: SoPinArg,
    },
}

/// Makes (or checks) the release transport key; says which unless `quiet`.
fn enable_release(
    module: &Pkcs11Module,
    label: &str,
    so_pin: &Pin,
    quiet: bool,
) -> Result<(), CliError> {
    let selector = TokenSelector::Label(label.to_string());
    let said = match provision::create_release_transport_key(module, &selector, so_pin)? {
        provision::ReleaseSetup::Created => "release transport key created",
        provision::ReleaseSetup::AlreadyProvisioned => "release transport key present and as made",
    };
    if !quiet {
        println!("token {label:?}: {said}");
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct TokenRow {
    slot_id: u64,
    label: String,
    serial: String,
    manufacturer: String,
    model: String,
    initialized: bool,
    user_pin_initialized: bool,
    user_pin_locked: bool,
}

impl From<TokenDescription> for TokenRow {
    fn from(d: TokenDescription) -> Self {
        TokenRow {
            slot_id: d.slot_id,
            label: d.label,
            serial: d.serial,
            manufacturer: d.manufacturer,
            model: d.model,
            initialized: d.initialized,
            user_pin_initialized: d.user_pin_initialized,
            user_pin_locked: d.user_pin_locked,
        }
    }
}

fn print_tokens(rows: &[TokenRow]) {
    println!(
        "{:<12} {:<32} {:<18} {:<12} {:<8}",
        "SLOT", "LABEL", "SERIAL", "MODEL", "STATE"
    );
    for r in rows {
        let state = match (r.initialized, r.user_pin_initialized, r.user_pin_locked) {
            (false, _, _) => "empty",
            (true, false, _) => "no user PIN",
            (true, true, true) => "PIN locked",
            (true, true, false) => "ready",
        };
        println!(
            "{:<12} {:<32} {:<18} {:<12} {state:<8}",
            r.slot_id, r.label, r.serial, r.model
        );
    }
}

pub(super) fn run(cmd: TokenCommand, json: bool) -> Result<(), CliError> {
    match cmd {
        TokenCommand::List { module } => {
            let module = Pkcs11Module::load(&module.module)?;
            let rows: Vec<TokenRow> = module
                .tokens()?
                .into_iter()
                .map(|t| t.description.into())
                .collect();
            if json {
                print_json(&rows)
            } else {
                print_tokens(&rows);
                Ok(())
            }
        }
        TokenCommand::Mechanisms { module, label } => {
            let module = Pkcs11Module::load(&module.module)?;
            let token = module.find_token(&TokenSelector::Label(label))?;
            let mechanisms = module.mechanisms(&token)?;
            if json {
                print_json(&mechanisms)
            } else {
                mechanisms.iter().for_each(|m| println!("{m}"));
                Ok(())
            }
        }
        TokenCommand::Init {
            module,
            label,
            so_pin,
            user_pin_file,
            user_pin_env,
            enable_release: release,
        } => {
            let so_pin = so_pin.read()?;
            let user_pin =
                Pin::from_file_or_env(user_pin_file.as_deref(), user_pin_env.as_deref())?;
            let module = Pkcs11Module::load(&module.module)?;
            let description = provision::init_token(&module, &label, &so_pin)?;
            provision::init_user_pin(
                &module,
                &TokenSelector::Label(label.clone()),
                &so_pin,
                &user_pin,
            )?;
            if release {
                enable_release(&module, &label, &so_pin, json)?;
            }
            let row = TokenRow::from(
                module
                    .find_token(&TokenSelector::Serial(description.serial))?
                    .description,
            );
            if json {
                print_json(&row)
            } else {
                println!("initialised token {:?} (serial {})", row.label, row.serial);
                Ok(())
            }
        }
        TokenCommand::EnableRelease {
            module,
            label,
            so_pin,
        } => {
            let so_pin = so_pin.read()?;
            let module = Pkcs11Module::load(&module.module)?;
            enable_release(&module, &label, &so_pin, json)?;
            if json {
                print_json(&serde_json::json!({ "label": label, "release": true }))?;
            }
            Ok(())
        }
    }
}
