//! `keybroker keys sign|verify|encrypt|decrypt|data-key`: what a workload does with a key.
//!
//! Files are signed by digest: the CLI hashes them locally with the key's hash (SHA-256, or
//! SHA-384 for P-384 keys), so a file of any size costs one small call. Encryption sends
//! the plaintext itself, so its size is bounded by what the broker accepts; larger files
//! belong under a data key. Plaintexts are held in [`Zeroizing`] buffers and written to
//! owner-only files; they never reach stdout or the logs.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use clap::Subcommand;
use hsm_backend::HashAlgorithm;
use keybroker_api::v1 as pb;
use pb::key_service_client::KeyServiceClient;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use super::{CliError, print_json};
use crate::keys::convert::algorithm_from_wire;
use crate::keys::ops::{MAX_PLAINTEXT, hash_for, parse_envelope};

/// Largest plaintext `encrypt` sends: what the broker accepts.
pub const MAX_PLAINTEXT_BYTES: u64 = MAX_PLAINTEXT as u64;
/// Largest ciphertext `decrypt` reads: the largest plaintext plus the envelope (key name,
/// version, nonce, tag), generously.
pub const MAX_CIPHERTEXT_BYTES: u64 = MAX_PLAINTEXT_BYTES + 4096;
/// Largest signature `verify` reads (an RSA-4096 signature is 512 bytes).
pub const MAX_SIGNATURE_BYTES: u64 = 1024;

/// Commands that use a key.
#[derive(Debug, Subcommand)]
pub enum CryptoCommand {
    /// Sign a file: hashed here with the key's hash, the digest signed by the broker
    /// with the key's primary version. Prints the version used.
    Sign {
        /// The key.
        name: String,
        /// The file to sign.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the signature (DER for ECDSA, raw for RSA); default: base64
        /// on stdout, and the key version on stderr.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check a signature over a file. Exit 0 if it verifies, 1 if it does not.
    Verify {
        /// The key.
        name: String,
        /// The signed file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// The signature, as `sign --out` wrote it.
        #[arg(long, value_name = "FILE")]
        signature: PathBuf,
        /// The key version that signed (as `sign` printed it); default: the primary.
        #[arg(long, default_value_t = 0)]
        version: u32,
    },
    /// Encrypt a file (at most 64 KiB) under the key's primary version.
    Encrypt {
        /// The key.
        name: String,
        /// The plaintext.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the ciphertext envelope (it names the key and version).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Decrypt a ciphertext envelope; the envelope names the key and version.
    Decrypt {
        /// The ciphertext, as `encrypt --out` wrote it.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the plaintext (created owner-only).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Make a 32-byte data key: its plaintext for local use, and the same key encrypted
    /// under KEY to store beside the data (`decrypt` recovers it).
    DataKey {
        /// The key-encryption key.
        name: String,
        /// Where to write the data key's plaintext (created owner-only).
        #[arg(long, value_name = "FILE")]
        plaintext_out: PathBuf,
        /// Where to write the encrypted data key.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// Runs a command that uses a key.
pub(super) async fn run(
    cmd: CryptoCommand,
    keys: &mut KeyServiceClient<Channel>,
    json: bool,
) -> Result<(), CliError> {
    match cmd {
        CryptoCommand::Sign { name, input, out } => sign(keys, name, &input, out, json).await,
        CryptoCommand::Verify {
            name,
            input,
            signature,
            version,
        } => verify(keys, name, &input, &signature, version, json).await,
        CryptoCommand::Encrypt { name, input, out } => {
            let plaintext = read_bounded(&input, MAX_PLAINTEXT_BYTES, "encrypt")?;
            let reply = keys
                .encrypt(pb::EncryptRequest {
                    name: name.clone(),
                    // The gRPC stack's copies are beyond our reach; ours is zeroized.
                    plaintext: plaintext.to_vec(),
                    aad: Vec::new(),
                })
                .await?
                .into_inner();
            write_file(&out, &reply.ciphertext, false)?;
            report(json, "encrypted", &name, reply.key_version, &out)
        }
        CryptoCommand::Decrypt { input, out } => {
            let ciphertext = read_bounded(&input, MAX_CIPHERTEXT_BYTES, "decrypt")?;
            let name = envelope_key(&ciphertext).map_err(|m| in_file(&input, &m))?;
            let mut reply = keys
                .decrypt(pb::DecryptRequest {
                    name: name.clone(),
                    ciphertext: ciphertext.to_vec(),
                    aad: Vec::new(),
                })
                .await?
                .into_inner();
            let plaintext = Zeroizing::new(std::mem::take(&mut reply.plaintext));
            write_file(&out, &plaintext, true)?;
            report(json, "decrypted", &name, reply.key_version, &out)
        }
        CryptoCommand::DataKey {
            name,
            plaintext_out,
            out,
        } => {
            let mut reply = keys
                .generate_data_key(pb::GenerateDataKeyRequest {
                    name: name.clone(),
                    aad: Vec::new(),
                    chunk_size: 0,
                })
                .await?
                .into_inner();
            let plaintext = Zeroizing::new(std::mem::take(&mut reply.plaintext));
            write_file(&plaintext_out, &plaintext, true)?;
            write_file(&out, &reply.ciphertext, false)?;
            report(json, "made a data key with", &name, reply.key_version, &out)
        }
    }
}

async fn sign(
    keys: &mut KeyServiceClient<Channel>,
    name: String,
    input: &Path,
    out: Option<PathBuf>,
    json: bool,
) -> Result<(), CliError> {
    let hash = signing_hash(&key(keys, &name).await?)?;
    let digest = digest_file(input, hash)?;
    let reply = keys
        .sign(pb::SignRequest {
            name: name.clone(),
            input: Some(pb::sign_request::Input::Digest(digest)),
            scheme: pb::SignatureScheme::Default as i32,
        })
        .await?
        .into_inner();
    if let Some(path) = out {
        write_file(&path, &reply.signature, false)?;
        return report(json, "signed with", &name, reply.key_version, &path);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(&reply.signature);
    if json {
        return print_json(&serde_json::json!({
            "key": name, "version": reply.key_version, "signature": encoded,
        }));
    }
    println!("{encoded}");
    eprintln!("signed with {name} version {}", reply.key_version);
    Ok(())
}

async fn verify(
    keys: &mut KeyServiceClient<Channel>,
    name: String,
    input: &Path,
    signature: &Path,
    version: u32,
    json: bool,
) -> Result<(), CliError> {
    let hash = signing_hash(&key(keys, &name).await?)?;
    let digest = digest_file(input, hash)?;
    let signature = read_bounded(signature, MAX_SIGNATURE_BYTES, "verify")?;
    let reply = keys
        .verify(pb::VerifyRequest {
            name: name.clone(),
            key_version: version,
            input: Some(pb::verify_request::Input::Digest(digest)),
            signature: signature.to_vec(),
            scheme: pb::SignatureScheme::Default as i32,
        })
        .await?
        .into_inner();
    if json {
        print_json(&serde_json::json!({ "key": name, "valid": reply.valid }))?;
    }
    if !reply.valid {
        return Err(CliError::Check(format!(
            "the signature does not verify under {name}"
        )));
    }
    if !json {
        println!("signature verifies under {name}");
    }
    Ok(())
}

async fn key(keys: &mut KeyServiceClient<Channel>, name: &str) -> Result<pb::Key, CliError> {
    let key = pb::KeyRef { name: name.into() };
    Ok(keys.get_key(key).await?.into_inner())
}

fn report(json: bool, done: &str, key: &str, version: u32, out: &Path) -> Result<(), CliError> {
    if json {
        return print_json(&serde_json::json!({
            "key": key, "version": version, "out": out.display().to_string(),
        }));
    }
    println!("{done} {key} version {version}: wrote {}", out.display());
    Ok(())
}

/// The hash a key signs with, or why it cannot sign.
fn signing_hash(key: &pb::Key) -> Result<HashAlgorithm, CliError> {
    if key.purpose != pb::KeyPurpose::SignVerify as i32 {
        return Err(CliError::Usage(format!(
            "{} is not a signing key (it was created with --purpose encrypt)",
            key.name
        )));
    }
    let algorithm = algorithm_from_wire(key.algorithm)
        .map_err(|e| CliError::Usage(format!("{}: {e}", key.name)))?;
    Ok(hash_for(algorithm))
}

/// Hashes a file as it streams, so its size does not matter.
fn digest_file(path: &Path, hash: HashAlgorithm) -> Result<Vec<u8>, CliError> {
    let file = std::fs::File::open(path).map_err(|e| unreadable(path, &e))?;
    let digest = match hash {
        HashAlgorithm::Sha256 => stream_hash::<sha2::Sha256>(file),
        HashAlgorithm::Sha384 => stream_hash::<sha2::Sha384>(file),
        HashAlgorithm::Sha512 => stream_hash::<sha2::Sha512>(file),
    };
    digest.map_err(|e| unreadable(path, &e))
}

fn stream_hash<D: sha2::Digest + std::io::Write>(
    mut file: std::fs::File,
) -> std::io::Result<Vec<u8>> {
    let mut hasher = D::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().to_vec())
}

/// Reads a whole file of at most `limit` bytes into a buffer that is zeroized on drop.
/// A larger file is refused before it is read, naming the command and the limit.
fn read_bounded(path: &Path, limit: u64, command: &str) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let file = std::fs::File::open(path).map_err(|e| unreadable(path, &e))?;
    let len = file.metadata().map_err(|e| unreadable(path, &e))?.len();
    let too_big = |len: u64| {
        let hint = if command == "encrypt" {
            "; for larger files, encrypt the file locally under a data key (`keys data-key`)"
        } else {
            ""
        };
        CliError::Usage(format!(
            "{}: {len} bytes is too large: `keys {command}` takes at most {limit} bytes{hint}",
            path.display()
        ))
    };
    if len > limit {
        return Err(too_big(len));
    }
    // Room for one byte more than the limit, so that the buffer never reallocates (which
    // would leave an unzeroized copy) and a file that grew while we read is caught.
    let capacity = usize::try_from(limit.saturating_add(1)).unwrap_or(0);
    let mut buffer = Zeroizing::new(Vec::with_capacity(capacity));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut buffer)
        .map_err(|e| unreadable(path, &e))?;
    let read = u64::try_from(buffer.len()).unwrap_or(u64::MAX);
    if read > limit {
        return Err(too_big(read));
    }
    Ok(buffer)
}

/// The key a ciphertext envelope names, or why the bytes are not one.
fn envelope_key(bytes: &[u8]) -> Result<String, String> {
    if bytes.starts_with(&sealed_format::MAGIC) {
        let (header, _) = sealed_format::Header::parse(bytes)
            .map_err(|e| format!("not a Keybroker ciphertext: {e}"))?;
        return Ok(header.key_name().to_string());
    }
    let envelope = parse_envelope(bytes).map_err(|_| "not a Keybroker ciphertext".to_string())?;
    if envelope.key.is_empty() || envelope.version == 0 {
        return Err("not a Keybroker ciphertext: it names no key version".into());
    }
    Ok(envelope.key)
}

/// Writes a file; `private` files (plaintexts) are made readable by the owner only, before
/// anything is written to them.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mode = if private { 0o600 } else { 0o644 };
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)?;
        if private {
            // An existing file keeps its mode on open; narrow it.
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        file.write_all(bytes)
    };
    write().map_err(|e| CliError::Output(format!("{}: {e}", path.display())))
}

fn unreadable(path: &Path, e: &std::io::Error) -> CliError {
    CliError::Usage(format!("cannot read {}: {e}", path.display()))
}

fn in_file(path: &Path, message: &str) -> CliError {
    CliError::Usage(format!("{}: {message}", path.display()))
}

#[cfg(test)]
#[path = "crypto_tests.rs"]
mod tests;
