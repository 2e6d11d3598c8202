//! `keybroker rewrap DIR`: every sealed file's data key wrapped again under its key's
//! primary version (`Rewrap`), after a rotation and before the older versions are
//! retired. Only the header changes: the chunks are copied, never decrypted, to a
//! temporary file beside the original, which is synced and renamed over it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use clap::Args;
use keybroker_api::v1 as pb;
use pb::key_service_client::KeyServiceClient;
use sealed_format::{Header, MAGIC};
use tonic::transport::Channel;

use super::output::{Output, TEMP_SUFFIX};
use super::{open_sealed, refusal};
use crate::cli::client::ClientConfig;
use crate::cli::{CliError, print_json};

/// `keybroker rewrap`.
#[derive(Debug, Args)]
pub struct RewrapArgs {
    /// The directory whose sealed files are rewrapped (files that are not sealed are
    /// skipped).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Rewrap in subdirectories too (symbolic links are not followed).
    #[arg(long)]
    pub recursive: bool,
}

/// What became of one file.
enum Outcome {
    Rewrapped { from: u32, to: u32 },
    Current,
    NotSealed,
}

/// Rewraps every sealed file in a directory; exit 1 if any failed.
pub async fn rewrap(args: RewrapArgs, client: &ClientConfig, json: bool) -> Result<(), CliError> {
    let mut files = Vec::new();
    collect(&args.dir, args.recursive, &mut files)?;
    let mut keys = KeyServiceClient::new(client.connect().await?);
    let (mut rewrapped, mut current, mut skipped) = (0u64, 0u64, 0u64);
    let mut failed = Vec::new();
    for path in files {
        match rewrap_file(&mut keys, &path).await {
            Ok(Outcome::Rewrapped { from, to }) => {
                rewrapped += 1;
                if !json {
                    println!("rewrapped {}: version {from} -> {to}", path.display());
                }
            }
            Ok(Outcome::Current) => current += 1,
            Ok(Outcome::NotSealed) => skipped += 1,
            Err(e) => {
                eprintln!("keybroker: rewrap failed: {e}");
                failed.push((path, e.to_string()));
            }
        }
    }
    if json {
        print_json(&serde_json::json!({
            "rewrapped": rewrapped,
            "current": current,
            "skipped": skipped,
            "failed": failed.iter().map(|(path, error)| serde_json::json!({
                "file": path.display().to_string(), "error": error,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        println!(
            "rewrapped {rewrapped}, already current {current}, skipped {skipped} (not sealed), \
             failed {}",
            failed.len()
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Check(format!(
            "{} file(s) could not be rewrapped",
            failed.len()
        )))
    }
}

/// The regular files of `dir` (and of its subdirectories if `recursive`), sorted; not
/// the temporary files of an interrupted seal, unseal or rewrap.
fn collect(dir: &Path, recursive: bool, files: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let unreadable = |e: std::io::Error| CliError::Usage(format!("{}: {e}", dir.display()));
    let mut entries = std::fs::read_dir(dir)
        .map_err(unreadable)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    entries.sort();
    for path in entries {
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        if meta.is_dir() && recursive {
            collect(&path, recursive, files)?;
        } else if meta.is_file() && !path.to_string_lossy().ends_with(TEMP_SUFFIX) {
            files.push(path);
        }
    }
    Ok(())
}

/// Whether the file starts with the format's magic.
fn is_sealed(path: &Path) -> Result<bool, CliError> {
    let mut magic = [0u8; MAGIC.len()];
    let mut file =
        File::open(path).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    let mut filled = 0;
    while filled < magic.len() {
        match file.read(magic.get_mut(filled..).unwrap_or_default()) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CliError::Usage(format!("{}: {e}", path.display()))),
        }
    }
    Ok(magic == MAGIC)
}

async fn rewrap_file(
    keys: &mut KeyServiceClient<Channel>,
    path: &Path,
) -> Result<Outcome, CliError> {
    if !is_sealed(path)? {
        return Ok(Outcome::NotSealed);
    }
    let (_, header, raw) = open_sealed(path)?;
    let reply = keys
        .rewrap(pb::RewrapRequest {
            name: header.key_name().to_string(),
            sealed: raw.clone(),
        })
        .await
        .map_err(|s| refusal(path, s))?
        .into_inner();
    if reply.key_version == reply.previous_version {
        return Ok(Outcome::Current);
    }
    // The new header must be a header for the same key, replacing exactly the old one.
    let replaced = usize::try_from(reply.replaced_len).unwrap_or(usize::MAX);
    match Header::parse(&reply.header) {
        Ok((new, len))
            if len == reply.header.len()
                && replaced == raw.len()
                && new.key_name() == header.key_name()
                && new.chunk_size() == header.chunk_size()
                && new.nonce_prefix() == header.nonce_prefix() => {}
        _ => {
            return Err(CliError::Check(format!(
                "{}: the broker's new header does not fit the file; left unchanged",
                path.display()
            )));
        }
    }
    let to = reply.key_version;
    let path_buf = path.to_path_buf();
    tokio::task::spawn_blocking(move || replace_header(&path_buf, &reply.header, replaced))
        .await
        .map_err(|e| CliError::Output(format!("{}: {e}", path.display())))??;
    Ok(Outcome::Rewrapped {
        from: header.key_version(),
        to,
    })
}

/// Writes `header` and the file's bytes after its first `replaced` to a temporary file
/// with the file's permissions, then renames it over the file.
fn replace_header(path: &Path, header: &[u8], replaced: usize) -> Result<(), CliError> {
    let unreadable = |e: std::io::Error| CliError::Usage(format!("{}: {e}", path.display()));
    let mut original = File::open(path).map_err(unreadable)?;
    let mode = original
        .metadata()
        .map_err(unreadable)?
        .permissions()
        .mode();
    original
        .seek(SeekFrom::Start(replaced as u64))
        .map_err(unreadable)?;
    let output = Output::beside(path)?;
    output.set_mode(mode & 0o7777)?;
    let mut out = std::io::BufWriter::new(output.file());
    out.write_all(header).map_err(|e| output.error(&e))?;
    // Ciphertext only: the payload is copied as it is.
    std::io::copy(&mut original, &mut out).map_err(|e| output.error(&e))?;
    out.into_inner().map_err(|e| output.error(e.error()))?;
    output.commit()
}
