//! The `keybroker-agent` command line: attest this workload to a broker and hand the
//! certificate, key and tokens it gets to the workload, once or continuously (`run`), or
//! a secret or key released to it (`get-secret`, `release-key`).
//!
//! The commands: `attest`, `get-cert`, `get-token`, `get-secret`, `release-key`, the lease
//! commands, `run` (these attest first) and `tpm-create-ak`.
//!
//! The bootstrap key is read from a file (mode 0600, through [`secret_file`]), never from
//! the command line. Exit status 0 on success, 1 with one line on stderr naming the step
//! that failed.

mod commands;
mod leases;
mod run_loop;
mod setup;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::ClientError;
use crate::evidence::EvidenceError;
use crate::files::FilesError;

/// keybroker-agent: attests this workload to a Keybroker and fetches its identity.
#[derive(Debug, Parser)]
#[command(name = "keybroker-agent", version)]
pub struct Cli {
    /// Where to connect and how to attest.
    #[command(flatten)]
    pub options: Options,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The options every command shares (each command uses the ones it needs).
#[derive(Debug, Args)]
pub struct Options {
    /// The broker, https://host:port.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The CA certificate the broker's server certificate chains to, PEM.
    #[arg(long, global = true, value_name = "FILE")]
    pub server_ca: Option<PathBuf>,
    /// The bootstrap client certificate (chain), PEM.
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The bootstrap client certificate's private key, PEM (a file of mode 0600).
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Where evidence comes from.
    #[arg(long, global = true, value_enum)]
    pub evidence: Option<EvidenceKind>,
    /// `--evidence dev`: the launch measurement to claim, 96 hex characters.
    #[arg(long, global = true, value_name = "HEX")]
    pub dev_measurement: Option<String>,
    /// `--evidence tpm` and `tpm-create-ak`: the TPM's TCTI [default: device:/dev/tpmrm0].
    #[arg(long, global = true, value_name = "TCTI")]
    pub tpm_tcti: Option<String>,
    /// `--evidence tpm`: the attestation key blob made by `tpm-create-ak`.
    #[arg(long, global = true, value_name = "FILE")]
    pub tpm_ak: Option<PathBuf>,
    /// `--evidence tpm`: the SHA-256 PCRs to quote, e.g. 16,17.
    #[arg(long, global = true, value_name = "LIST", value_delimiter = ',')]
    pub pcrs: Vec<u8>,
    /// `--evidence snp`: the VMPL to request reports at, 0 to 3 [default: 0].
    #[arg(long, global = true, value_name = "N")]
    pub snp_vmpl: Option<u32>,
    /// The certificate lifetime to request; 0: the broker policy's default.
    #[arg(long, global = true, value_name = "N", default_value_t = 0)]
    pub ttl_seconds: u32,
}

/// An evidence source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvidenceKind {
    /// Insecure development evidence (a claimed measurement).
    Dev,
    /// A TPM 2.0 quote.
    Tpm,
    /// An AMD SEV-SNP attestation report.
    Snp,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The commands that talk to the broker.
    #[command(flatten)]
    Broker(BrokerCommand),
    /// Create a TPM attestation key, store its blob in FILE (a new file, mode 0600), and
    /// print its public key (PEM) to enrol in the broker's appraisal policy.
    TpmCreateAk {
        /// Where to store the key blob.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// The commands that attest to the broker.
#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Attest once and print the identity, expiries and appraised claims as JSON.
    Attest {
        /// Write the credentials into DIR instead (svid.pem, svid_key.pem, bundle.pem, token).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Attest once and write the certificate and key into DIR, or with `-` print the
    /// chain and then the key, PEM, on stdout.
    GetCert {
        /// A directory, or `-` for stdout.
        #[arg(long, value_name = "DIR|-")]
        out: PathBuf,
    },
    /// Attest once and get a JWT for one audience.
    GetToken {
        /// The token's audience.
        #[arg(long)]
        audience: String,
        /// A file (written at mode 0600), or `-` for stdout.
        #[arg(long, value_name = "FILE|-", default_value = "-")]
        out: PathBuf,
    },
    /// Attest once and get a secret released to this workload (docs/secrets.md): its value,
    /// as it is, in FILE (written at mode 0600) or on stdout. Nothing of it goes to stderr.
    GetSecret {
        /// The secret's name.
        name: String,
        /// The version; 0 or absent: the newest enabled one.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
        /// A file (written at mode 0600), or `-` or absent for stdout.
        #[arg(long, value_name = "FILE|-")]
        out: Option<PathBuf>,
    },
    /// Attest once and get a releasable AES-256 key unwrapped with this workload's
    /// ephemeral key (docs/releasable-keys.md): its 32 raw bytes in FILE (written at mode
    /// 0600) or on stdout. Nothing of it goes to stderr.
    ReleaseKey {
        /// The key's name.
        name: String,
        /// The version; 0 or absent: the primary one.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
        /// A file (written at mode 0600), or `-` or absent for stdout.
        #[arg(long, value_name = "FILE|-")]
        out: Option<PathBuf>,
    },
    /// Attest once and get a new dynamic secret on ROLE (docs/leases.md): its value in FILE
    /// (mode 0600) and the lease as JSON on stdout, or with `-` or absent, the value on
    /// stdout and the lease on stderr.
    GenerateSecret {
        /// A role of the broker's configuration, like `db/app-readonly`.
        role: String,
        /// The lease's lifetime in seconds; 0 or absent: the role's default.
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u32>,
        /// A file (written at mode 0600), or `-` or absent for stdout.
        #[arg(long, value_name = "FILE|-")]
        out: Option<PathBuf>,
    },
    /// Attest once and extend one of this workload's leases; the lease as JSON on stdout.
    RenewLease {
        lease_id: String,
        /// Seconds from now; 0 or absent: the role's default.
        #[arg(long, value_name = "SECONDS")]
        increment: Option<u32>,
    },
    /// Attest once and end one of this workload's leases now.
    RevokeLease { lease_id: String },
    /// Keep the credentials in DIR fresh until SIGTERM or SIGINT: attest, write, get the
    /// tokens, renew halfway through their lifetimes, back off on failure.
    Run {
        /// Where to write (svid.pem, svid_key.pem, bundle.pem, token, jwt_<audience>.token).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// An audience to keep a JWT for; repeat for more.
        #[arg(long)]
        audience: Vec<String>,
    },
}

/// Why the agent failed. Messages name the step or the input, never secrets.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A required option is missing or an option is unusable.
    #[error("{0}")]
    Usage(String),
    /// An input file could not be read.
    #[error("{what}: {reason}")]
    Input {
        /// Which input.
        what: &'static str,
        /// What went wrong, naming the file.
        reason: String,
    },
    /// The evidence source could not be set up.
    #[error("evidence: {0}")]
    Evidence(#[from] EvidenceError),
    /// A step of the flow failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The credentials could not be written.
    #[error("write: {0}")]
    Files(#[from] FilesError),
    /// Standard output could not be written.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs `cli` to completion.
///
/// # Errors
/// [`CliError`], for `main` to print.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let command = match cli.command {
        Command::TpmCreateAk { out } => {
            return commands::tpm_create_ak(setup::tcti(&cli.options), &out);
        }
        Command::Broker(command) => command,
    };
    // Before the runtime: opening a TPM blocks.
    let agent = setup::agent(&cli.options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            BrokerCommand::Attest { out } => commands::attest(&agent, out.as_deref()).await,
            BrokerCommand::GetCert { out } => commands::get_cert(&agent, &out).await,
            BrokerCommand::GetToken { audience, out } => {
                commands::get_token(&agent, &audience, &out).await
            }
            BrokerCommand::GetSecret { name, version, out } => {
                commands::get_secret(&agent, &name, version.unwrap_or(0), out.as_deref()).await
            }
            BrokerCommand::ReleaseKey { name, version, out } => {
                commands::release_key(&agent, &name, version.unwrap_or(0), out.as_deref()).await
            }
            BrokerCommand::GenerateSecret { role, ttl, out } => {
                leases::generate(&agent, &role, ttl.unwrap_or(0), out.as_deref()).await
            }
            BrokerCommand::RenewLease {
                lease_id,
                increment,
            } => leases::renew(&agent, &lease_id, increment.unwrap_or(0)).await,
            BrokerCommand::RevokeLease { lease_id } => leases::revoke(&agent, &lease_id).await,
            BrokerCommand::Run { dir, audience } => run_loop::run(&agent, &dir, &audience).await,
        }
    })
}

/// `main`: parses the command line, runs it, prints a failure as one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Only fails if a subscriber is already installed, which then stays.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keybroker-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn get_secret_takes_a_name_a_version_and_a_file() {
        let cli =
            Cli::try_parse_from(["keybroker-agent", "get-secret", "db/password", "--out", "F"])
                .unwrap();
        let Command::Broker(BrokerCommand::GetSecret { name, version, out }) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(name, "db/password");
        assert_eq!(version, None);
        assert_eq!(out, Some(PathBuf::from("F")));

        let cli =
            Cli::try_parse_from(["keybroker-agent", "get-secret", "s", "--version", "3"]).unwrap();
        let Command::Broker(BrokerCommand::GetSecret { version, out, .. }) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(version, Some(3));
        assert_eq!(out, None);
        // The name is required.
        assert!(Cli::try_parse_from(["keybroker-agent", "get-secret"]).is_err());
    }

    #[test]
    fn the_lease_commands_take_a_role_or_a_lease_id() {
        let cli = Cli::try_parse_from([
            "keybroker-agent",
            "generate-secret",
            "db/app",
            "--ttl",
            "900",
            "--out",
            "F",
        ])
        .unwrap();
        let Command::Broker(BrokerCommand::GenerateSecret { role, ttl, out }) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!((role.as_str(), ttl), ("db/app", Some(900)));
        assert_eq!(out, Some(PathBuf::from("F")));
        let cli = Cli::try_parse_from([
            "keybroker-agent",
            "renew-lease",
            "db/app/00",
            "--increment",
            "60",
        ])
        .unwrap();
        let Command::Broker(BrokerCommand::RenewLease {
            lease_id,
            increment,
        }) = cli.command
        else {
            panic!("{:?}", cli.command);
        };
        assert_eq!((lease_id.as_str(), increment), ("db/app/00", Some(60)));
        let cli = Cli::try_parse_from(["keybroker-agent", "revoke-lease", "db/app/00"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Broker(BrokerCommand::RevokeLease { .. })
        ));
        // A role or a lease id is required; a TTL is a number.
        for bad in [
            &["keybroker-agent", "generate-secret"][..],
            &["keybroker-agent", "revoke-lease"],
            &["keybroker-agent", "generate-secret", "r", "--ttl", "soon"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn release_key_takes_a_name_a_version_and_a_file() {
        let cli = Cli::try_parse_from([
            "keybroker-agent",
            "release-key",
            "disk/root",
            "--version",
            "2",
            "--out",
            "K",
        ])
        .unwrap();
        let Command::Broker(BrokerCommand::ReleaseKey { name, version, out }) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(name, "disk/root");
        assert_eq!(version, Some(2));
        assert_eq!(out, Some(PathBuf::from("K")));

        let cli =
            Cli::try_parse_from(["keybroker-agent", "release-key", "k", "--out", "-"]).unwrap();
        let Command::Broker(BrokerCommand::ReleaseKey { version, out, .. }) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(version, None);
        assert_eq!(out, Some(PathBuf::from("-")));
        // The name is required.
        assert!(Cli::try_parse_from(["keybroker-agent", "release-key"]).is_err());
    }
}
