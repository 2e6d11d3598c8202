//! `keybroker seal`, `keybroker unseal` and `keybroker rewrap`: files in the sealed-data
//! format (`sealed-format`, docs/sealing-cli.md) under a wrap-unwrap key.
//!
//! By default the broker only makes and opens data keys (`GenerateDataKey` and `Decrypt`
//! of an envelope header) and the file is sealed or opened here, in constant memory;
//! `--remote` streams the file through the broker instead (`SealStream`, `UnsealStream`).
//! Either way the output is written to an owner-only temporary file beside its
//! destination and renamed into place only once it is complete, so a refused, altered or
//! truncated envelope never leaves a partial plaintext under the output's name. Data keys
//! and plaintext live in [`Zeroizing`] buffers or [`DataKey`]s, and are never printed.

mod output;
mod remote;
mod rewrap;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal as _, Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use keybroker_api::v1 as pb;
use pb::key_service_client::KeyServiceClient;
use sealed_format::{DataKey, EncryptionContext, FormatError, Header, SealWriter, UnsealReader};
use zeroize::Zeroizing;

use super::client::ClientConfig;
use super::{CliError, print_json};
use output::Output;

pub use rewrap::{RewrapArgs, rewrap};

/// Plaintext read from a file at a time.
const BUFFER_BYTES: usize = 64 * 1024;
/// Files at least this large get a progress bar (on a terminal).
const PROGRESS_FROM_BYTES: u64 = 4 << 20;

/// `keybroker seal`.
#[derive(Debug, Args)]
pub struct SealArgs {
    /// The wrap-unwrap key (`keys create NAME --algorithm aes-256 --purpose wrap`); its
    /// primary version wraps the file's data key.
    #[arg(long)]
    pub key: String,
    /// The file to seal.
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Where to write the sealed envelope (replaced only once it is complete).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// An encryption context entry, KEY=VALUE (repeatable): authenticated with every
    /// chunk but not stored in the envelope; `unseal` must give the same entries.
    #[arg(long = "context", value_name = "KEY=VALUE", value_parser = parse_entry)]
    pub context: Vec<(String, String)>,
    /// Plaintext bytes per chunk: a power of two from 1024 to 16777216 (0: the broker's
    /// default, 65536).
    #[arg(long, default_value_t = 0)]
    pub chunk_size: u32,
    /// Seal in the broker (`SealStream`): the plaintext travels to it over mTLS. By
    /// default the broker only makes the data key and the file is sealed here.
    #[arg(long)]
    pub remote: bool,
}

/// `keybroker unseal`.
#[derive(Debug, Args)]
pub struct UnsealArgs {
    /// The sealed envelope.
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Where to write the plaintext (owner-only; written only if the whole envelope
    /// opens).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The encryption context the file was sealed with, KEY=VALUE (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE", value_parser = parse_entry)]
    pub context: Vec<(String, String)>,
    /// The key the file must be sealed under (default: the key its header names).
    #[arg(long)]
    pub key: Option<String>,
    /// Open in the broker (`UnsealStream`): the plaintext travels from it over mTLS. By
    /// default the broker only opens the data key and the file is opened here.
    #[arg(long)]
    pub remote: bool,
}

fn parse_entry(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| "expected KEY=VALUE".to_string())
}

/// The `--context` entries, checked against the format's limits; a key given twice is a
/// mistake, not a replacement.
fn context_of(entries: &[(String, String)]) -> Result<EncryptionContext, CliError> {
    let mut context = EncryptionContext::new();
    for (k, v) in entries {
        if context.get(k).is_some() {
            return Err(CliError::Usage(format!("--context {k} is given twice")));
        }
        context
            .insert(k.clone(), v.clone())
            .map_err(|e| CliError::Usage(format!("--context: {e}")))?;
    }
    Ok(context)
}

/// The context as the API's map.
fn context_map(context: &EncryptionContext) -> HashMap<String, String> {
    context
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Seals a file.
pub async fn seal(args: SealArgs, client: &ClientConfig, json: bool) -> Result<(), CliError> {
    let context = context_of(&args.context)?;
    let mut keys = KeyServiceClient::new(client.connect().await?);
    let (version, bytes) = if args.remote {
        remote::seal(&mut keys, &args, &context).await?
    } else {
        seal_local(&mut keys, &args, context).await?
    };
    report(
        json,
        "sealed",
        &args.input,
        &args.out,
        &args.key,
        version,
        bytes,
    )
}

/// Unseals a file.
pub async fn unseal(args: UnsealArgs, client: &ClientConfig, json: bool) -> Result<(), CliError> {
    let context = context_of(&args.context)?;
    let (reader, header, raw) = open_sealed(&args.input)?;
    let name = header.key_name().to_string();
    if let Some(expected) = &args.key {
        if *expected != name {
            return Err(CliError::Check(format!(
                "{}: sealed under key {name:?}, not {expected:?}",
                args.input.display()
            )));
        }
    }
    let mut keys = KeyServiceClient::new(client.connect().await?);
    let (version, bytes) = if args.remote {
        drop(reader);
        remote::unseal(&mut keys, &args, &name, &context).await?
    } else {
        unseal_local(&mut keys, &args, reader, header, raw, context).await?
    };
    report(
        json,
        "unsealed",
        &args.input,
        &args.out,
        &name,
        version,
        bytes,
    )
}

/// GenerateDataKey, then the file sealed here under the data key.
async fn seal_local(
    keys: &mut KeyServiceClient<tonic::transport::Channel>,
    args: &SealArgs,
    context: EncryptionContext,
) -> Result<(u32, u64), CliError> {
    let input = File::open(&args.input).map_err(|e| unreadable(&args.input, &e))?;
    let output = Output::beside(&args.out)?;
    let reply = keys
        .generate_data_key(pb::GenerateDataKeyRequest {
            name: args.key.clone(),
            aad: Vec::new(),
            chunk_size: args.chunk_size,
        })
        .await?
        .into_inner();
    // `reply` wipes its plaintext when dropped; the key lives on only in `data_key`.
    let header = match Header::parse(&reply.ciphertext) {
        Ok((header, len)) if len == reply.ciphertext.len() && header.key_name() == args.key => {
            header
        }
        _ => {
            return Err(CliError::Usage(format!(
                "{} is not a wrap-unwrap key: its data key came back without an envelope \
                 header (create one with `keys create NAME --algorithm aes-256 --purpose wrap`)",
                args.key
            )));
        }
    };
    let data_key = DataKey::from_slice(&reply.plaintext)
        .map_err(|e| CliError::Check(format!("the broker's data key for {}: {e}", args.key)))?;
    drop(reply);
    let version = header.key_version();
    let in_path = args.input.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        let bytes = seal_file(input, &in_path, &output, &header, data_key, &context)?;
        output.commit()?;
        Ok::<_, CliError>(bytes)
    })
    .await
    .map_err(|e| CliError::Output(format!("sealing stopped: {e}")))??;
    Ok((version, bytes))
}

/// Seals `input` into `output`; the plaintext passes only through a wiped buffer and the
/// writer's own.
fn seal_file(
    mut input: File,
    in_path: &Path,
    output: &Output,
    header: &Header,
    data_key: DataKey,
    context: &EncryptionContext,
) -> Result<u64, CliError> {
    let len = input.metadata().map_err(|e| unreadable(in_path, &e))?.len();
    let progress = progress_bar(len);
    let out = BufWriter::new(output.file());
    let mut writer =
        SealWriter::new(out, header, data_key, context).map_err(|e| output.error(&e))?;
    let mut buf = Zeroizing::new(vec![0u8; BUFFER_BYTES]);
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(unreadable(in_path, &e)),
        };
        let piece = buf.get(..n).unwrap_or_default();
        writer
            .write_all(piece)
            .map_err(|e| match FormatError::from_io(&e) {
                Some(format) => CliError::Check(format!("sealing {}: {format}", in_path.display())),
                None => output.error(&e),
            })?;
        total = total.saturating_add(n as u64);
        progress.inc(n as u64);
    }
    let out = writer.finish().map_err(|e| output.error(&e))?;
    out.into_inner().map_err(|e| output.error(e.error()))?;
    progress.finish_and_clear();
    Ok(total)
}

/// Decrypt of the header (its data key), then the file opened here.
async fn unseal_local(
    keys: &mut KeyServiceClient<tonic::transport::Channel>,
    args: &UnsealArgs,
    reader: BufReader<File>,
    header: Header,
    raw: Vec<u8>,
    context: EncryptionContext,
) -> Result<(u32, u64), CliError> {
    let output = Output::beside(&args.out)?;
    let reply = keys
        .decrypt(pb::DecryptRequest {
            name: header.key_name().to_string(),
            ciphertext: raw,
            aad: Vec::new(),
        })
        .await
        .map_err(|s| refusal(&args.input, s))?
        .into_inner();
    let data_key = DataKey::from_slice(&reply.plaintext)
        .map_err(|e| CliError::Check(format!("the broker's data key: {e}")))?;
    drop(reply);
    let version = header.key_version();
    let in_path = args.input.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        let bytes = unseal_file(reader, &in_path, &output, &header, &data_key, &context)?;
        output.commit()?;
        Ok::<_, CliError>(bytes)
    })
    .await
    .map_err(|e| CliError::Output(format!("unsealing stopped: {e}")))??;
    Ok((version, bytes))
}

/// Opens the payload of `reader` into `output`; every chunk authenticates before its
/// plaintext is written, and the output counts only if the final chunk does too.
fn unseal_file(
    reader: BufReader<File>,
    in_path: &Path,
    output: &Output,
    header: &Header,
    data_key: &DataKey,
    context: &EncryptionContext,
) -> Result<u64, CliError> {
    let len = reader
        .get_ref()
        .metadata()
        .map_err(|e| unreadable(in_path, &e))?
        .len();
    let progress = progress_bar(len);
    let counted = progress.wrap_read(reader);
    let mut opened = UnsealReader::new(counted, header, data_key, context)
        .map_err(|e| CliError::Check(format!("{}: {e}", in_path.display())))?;
    let mut out = output.file();
    let mut buf = Zeroizing::new(vec![0u8; BUFFER_BYTES]);
    let mut total = 0u64;
    loop {
        let n = match opened.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(match FormatError::from_io(&e) {
                    Some(format) => CliError::Check(format!("{}: {format}", in_path.display())),
                    None => unreadable(in_path, &e),
                });
            }
        };
        out.write_all(buf.get(..n).unwrap_or_default())
            .map_err(|e| output.error(&e))?;
        total = total.saturating_add(n as u64);
    }
    progress.finish_and_clear();
    Ok(total)
}

/// A sealed file, its header read: the reader is left at the first chunk.
fn open_sealed(path: &Path) -> Result<(BufReader<File>, Header, Vec<u8>), CliError> {
    let file = File::open(path).map_err(|e| unreadable(path, &e))?;
    let mut reader = BufReader::with_capacity(BUFFER_BYTES, file);
    let (header, raw) =
        Header::read_from(&mut reader).map_err(|e| match FormatError::from_io(&e) {
            Some(FormatError::Truncated) => CliError::Check(format!(
                "{}: not a whole sealed envelope: it ends inside its header",
                path.display()
            )),
            Some(format) => CliError::Check(format!("{}: {format}", path.display())),
            None => unreadable(path, &e),
        })?;
    Ok((reader, header, raw))
}

/// A broker's refusal of a sealed file: a malformed, altered or retired envelope is a
/// check that came out negative (exit 1), named with the file; other refusals keep their
/// exit codes.
fn refusal(path: &Path, status: tonic::Status) -> CliError {
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
            CliError::Check(format!("{}: {}", path.display(), status.message()))
        }
        _ => CliError::Rpc(status),
    }
}

/// A progress bar on stderr for a large file, if stderr is a terminal; otherwise hidden.
fn progress_bar(len: u64) -> ProgressBar {
    if len < PROGRESS_FROM_BYTES || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bytes:>10}/{total_bytes} [{wide_bar}] {bytes_per_sec} {eta}")
    {
        bar.set_style(style);
    }
    bar
}

fn report(
    json: bool,
    done: &str,
    input: &Path,
    out: &Path,
    key: &str,
    version: u32,
    bytes: u64,
) -> Result<(), CliError> {
    if json {
        return print_json(&serde_json::json!({
            "key": key, "version": version, "bytes": bytes,
            "in": input.display().to_string(), "out": out.display().to_string(),
        }));
    }
    println!(
        "{done} {} ({bytes} bytes) with {key} version {version}: wrote {}",
        input.display(),
        out.display()
    );
    Ok(())
}

fn unreadable(path: &Path, e: &std::io::Error) -> CliError {
    CliError::Usage(format!("cannot read {}: {e}", path.display()))
}
