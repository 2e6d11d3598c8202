//! Command-line interface. Tables for people by default, `--json` for scripts. PINs are
//! read from files or environment variables, and secret values from files or stdin, never
//! from arguments.

mod admin;
mod ca;
mod client;
mod crypto;
mod keys;
mod kms_plugin;
mod seal;
mod secrets;
mod store;
mod token;

pub use client::ClientConfig;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use hsm_backend::HsmError;

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
    /// Run the broker.
    Serve(ServeArgs),
    /// Manage keys on a running broker.
    Keys {
        #[command(flatten)]
        client: ClientArg,
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Put, rotate, list and delete the secrets released to attested workloads.
    Secrets {
        #[command(flatten)]
        client: ClientArg,
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// Check policy files offline, and inspect, change or explain a broker's policy.
    Policy {
        /// Client configuration; not needed for `check`.
        #[arg(
            long,
            env = "KEYBROKER_CLIENT_CONFIG",
            value_name = "FILE",
            global = true
        )]
        client_config: Option<PathBuf>,
        #[command(subcommand)]
        command: admin::PolicyCommand,
    },
    /// Make the broker an intermediate CA: a CSR from its HSM, then the signed chain.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Check the broker's own store offline: every row's MAC (docs/sealing.md).
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// List and register a broker's HSM tokens and TPMs.
    Backends {
        #[command(flatten)]
        client: ClientArg,
        #[command(subcommand)]
        command: admin::BackendsCommand,
    },
    /// Seal a file of any size under a wrap-unwrap key (docs/sealing-cli.md).
    Seal {
        #[command(flatten)]
        client: ClientArg,
        #[command(flatten)]
        args: seal::SealArgs,
    },
    /// Open a sealed file; the output appears only if the whole file opens.
    Unseal {
        #[command(flatten)]
        client: ClientArg,
        #[command(flatten)]
        args: seal::UnsealArgs,
    },
    /// Wrap the data key of every sealed file in a directory under its key's primary
    /// version (after `keys rotate`, before retiring the older versions).
    Rewrap {
        #[command(flatten)]
        client: ClientArg,
        #[command(flatten)]
        args: seal::RewrapArgs,
    },
    /// Serve kube-apiserver as a Kubernetes KMS v2 plugin on a unix socket, sealing its
    /// data-key seeds under a wrap-unwrap key (docs/kms-plugin.md).
    KmsPlugin {
        #[command(flatten)]
        client: ClientArg,
        #[command(flatten)]
        args: kms_plugin::KmsPluginArgs,
    },
}

/// `keybroker serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "dev",
        conflicts_with = "dev"
    )]
    pub config: Option<PathBuf>,
    /// Development mode: a SoftHSM2 token, a swtpm, a development CA and certificates, all
    /// under --state-dir. Never for production.
    #[arg(long)]
    pub dev: bool,
    /// Where development mode keeps its state.
    #[arg(long, default_value = ".dev/broker", requires = "dev")]
    pub state_dir: PathBuf,
    /// Development mode's listening address.
    #[arg(long, default_value = "127.0.0.1:8443", requires = "dev")]
    pub listen: std::net::SocketAddr,
    /// Start although the store knows no keys while a backend holds objects labelled as
    /// the broker's (`kb:`): every such key becomes an orphan, unusable through the broker
    /// (and destroyed if `keys.orphans = "destroy"`). Without it, that start is refused:
    /// restore the store from its backup instead.
    #[arg(long)]
    pub orphan_all_existing_keys: bool,
}

/// Which broker to talk to.
#[derive(Debug, Args)]
pub struct ClientArg {
    /// Client configuration (endpoint, CA, certificate, key).
    #[arg(long, env = "KEYBROKER_CLIENT_CONFIG", value_name = "FILE")]
    pub client_config: PathBuf,
}

/// Where the PKCS#11 module is.
#[derive(Debug, Args)]
pub struct ModuleArg {
    /// Path of the PKCS#11 module (for SoftHSM2: /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, env = "KEYBROKER_PKCS11_MODULE")]
    pub module: PathBuf,
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
    /// The broker could not be reached (exit 6).
    Connect(String),
    /// The broker refused the call.
    Rpc(tonic::Status),
    /// The server failed to start or stopped with an error (exit 1).
    Serve(String),
    /// A check came out negative, such as a signature that does not verify (exit 1).
    Check(String),
}

impl CliError {
    /// The process exit code: 2 usage or invalid argument, 3 wrong PIN or unauthenticated,
    /// 4 not found, 5 permission denied, 6 broker unreachable, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Hsm(HsmError::PinIncorrect | HsmError::PinLocked) => 3,
            CliError::Hsm(HsmError::TokenNotFound(_) | HsmError::KeyNotFound(_)) => 4,
            CliError::Rpc(status) => match status.code() {
                tonic::Code::InvalidArgument => 2,
                tonic::Code::Unauthenticated => 3,
                tonic::Code::NotFound => 4,
                tonic::Code::PermissionDenied => 5,
                tonic::Code::Unavailable => 6,
                _ => 1,
            },
            CliError::Connect(_) => 6,
            _ => 1,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Output(m) | CliError::Serve(m) | CliError::Check(m) => {
                f.write_str(m)
            }
            CliError::Connect(m) => write!(f, "cannot reach the broker: {m}"),
            CliError::Rpc(s) => write!(f, "{:?}: {}", s.code(), s.message()),
            CliError::Hsm(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Rpc(s)
    }
}

impl From<HsmError> for CliError {
    fn from(e: HsmError) -> Self {
        match e {
            HsmError::PinSourceCount { .. } => CliError::Usage(e.to_string()),
            other => CliError::Hsm(other),
        }
    }
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command fails with; see [`CliError::exit_code`].
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Token(cmd) => token::run(cmd, cli.json),
        Command::Ca(cmd) => ca::run(cmd),
        Command::Store(cmd) => store::run(cmd),
        Command::Serve(args) => serve(args),
        Command::Keys { client, command } => {
            let config = ClientConfig::load(&client.client_config)?;
            runtime()?.block_on(keys::run(command, &config, cli.json))
        }
        Command::Secrets { client, command } => {
            let config = ClientConfig::load(&client.client_config)?;
            runtime()?.block_on(secrets::run(command, &config, cli.json))
        }
        Command::Policy {
            client_config,
            command,
        } => runtime()?.block_on(admin::run_policy(
            command,
            client_config.as_deref(),
            cli.json,
        )),
        Command::Backends { client, command } => {
            let config = ClientConfig::load(&client.client_config)?;
            runtime()?.block_on(admin::run_backends(command, &config, cli.json))
        }
        Command::Seal { client, args } => {
            let config = ClientConfig::load(&client.client_config)?;
            runtime()?.block_on(seal::seal(args, &config, cli.json))
        }
        Command::Unseal { client, args } => {
            let config = ClientConfig::load(&client.client_config)?;
            runtime()?.block_on(seal::unseal(args, &config, cli.json))
        }
        Command::Rewrap { client, args } => {
            let config = ClientConfig::load(&client.client_config)?;
            runtime()?.block_on(seal::rewrap(args, &config, cli.json))
        }
        Command::KmsPlugin { client, args } => {
            let config = ClientConfig::load(&client.client_config)?;
            init_logging();
            runtime()?.block_on(kms_plugin::run(args, &config))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Serve(format!("cannot start the async runtime: {e}")))
}

fn serve(args: ServeArgs) -> Result<(), CliError> {
    if args.dev {
        return crate::dev::run(&args.state_dir, args.listen, args.orphan_all_existing_keys)
            .map_err(CliError::Serve);
    }
    let path = args
        .config
        .ok_or_else(|| CliError::Usage("--config FILE or --dev is required".into()))?;
    let mut config =
        crate::config::Config::load(&path).map_err(|e| CliError::Usage(e.to_string()))?;
    config.keys.orphan_all_existing_keys = args.orphan_all_existing_keys;
    init_logging();
    runtime()?
        .block_on(crate::server::serve(config, shutdown_signal()))
        .map_err(|e| CliError::Serve(e.to_string()))
}

fn init_logging() {
    let asked = std::env::var("KEYBROKER_LOG").unwrap_or_default();
    let mut filter = Some(asked.as_str())
        .filter(|a| !a.trim().is_empty())
        .and_then(|a| tracing_subscriber::EnvFilter::try_new(a).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    // cryptoki logs an ERROR for each mechanism a module offers that it has no name for
    // (SoftHSM2 offers about thirty): the capability discovery at every start
    // (hsm-backend/src/capabilities.rs) is not an error. Unless the operator asks for
    // cryptoki's logs by name.
    if !asked.contains("cryptoki") {
        if let Ok(quiet) = "cryptoki::mechanism=off".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    // tokio-postgres logs every statement it sends at debug level, and the PostgreSQL
    // engine's CREATE ROLE carries a password's SCRAM verifier (docs/leases.md): never
    // below info, whatever is asked.
    if let Ok(statements) = "tokio_postgres=info".parse() {
        filter = filter.add_directive(statements);
    }
    // Colour only on a terminal: logs collected from files or journald stay plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

/// Prints a value as pretty JSON.
/// Most pages a listing follows: a broker that keeps answering with a next page (a bug,
/// or a token that does not move) must not keep the CLI in a loop.
const MAX_PAGES: usize = 100_000;

/// Every item of a paged listing of `what`: `page(token)` fetches the page at `token`
/// (starting with `first`) and returns its items and the next page's token, empty on the
/// last page.
async fn follow_pages<T>(
    what: &str,
    first: String,
    mut page: impl AsyncFnMut(String) -> Result<(Vec<T>, String), CliError>,
) -> Result<Vec<T>, CliError> {
    let mut all = Vec::new();
    let mut token = first;
    for _ in 0..MAX_PAGES {
        let (items, next) = page(token.clone()).await?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        if next == token {
            return Err(CliError::Check(
                "the broker returned the same page token twice".into(),
            ));
        }
        token = next;
    }
    Err(CliError::Check(format!(
        "more than {MAX_PAGES} pages of {what}"
    )))
}

fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Output(e.to_string()))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_file_and_a_pin_variable_together_are_a_usage_error() {
        let both = hsm_backend::Pin::from_file_or_env(
            Some(std::path::Path::new("/etc/keybroker/pin")),
            Some("KEYBROKER_PIN"),
        );
        let Err(err) = both.map(drop) else {
            panic!("both sources accepted");
        };
        assert_eq!(CliError::from(err).exit_code(), 2);
    }
}
