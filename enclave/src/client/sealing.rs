//! Sealing on the workload's side (docs/sealing.md): large data sealed and opened here, in
//! the one sealed-data format, so that it never crosses the network. The broker only makes
//! and opens the data key: `GenerateDataKey` on a wrap-unwrap key returns a fresh data key
//! and the envelope header that holds it wrapped inside the HSM or sealed by the TPM;
//! `Decrypt` of that header gives the data key back. The data key lives here only inside
//! the writer or reader, and is wiped with it.
//!
//! The I/O on `output` and `input` runs on the calling task: give them buffered files, or
//! call from `spawn_blocking` for slow ones.

use std::io::{Read, Write};

use keybroker_api::v1 as pb;
use keybroker_api::v1::key_service_client::KeyServiceClient;
use sealed_format::{DataKey, EncryptionContext, Header, SealWriter, UnsealReader};
use tonic::transport::Channel;
use zeroize::Zeroizing;

use super::{ClientError, Step};

fn refused(status: tonic::Status) -> ClientError {
    ClientError::Refused {
        step: Step::Seal,
        code: status.code(),
        message: status.message().to_string(),
    }
}

fn unusable(reason: impl std::fmt::Display) -> ClientError {
    ClientError::Answer {
        step: Step::Seal,
        reason: reason.to_string(),
    }
}

fn io(what: &str, error: &std::io::Error) -> ClientError {
    ClientError::Input {
        step: Step::Seal,
        what: what.into(),
        reason: error.to_string(),
    }
}

/// A writer that seals everything written to it into `output` under a fresh data key of
/// the wrap-unwrap key `name` (`chunk_size` 0: the broker's default). It has written the
/// header already; call `finish` at the end, or the envelope is truncated.
///
/// # Errors
/// The broker refused (not a wrap-unwrap key, not allowed), its answer is not an envelope
/// header for `name`, or `output` failed.
pub async fn local_sealer<W: Write>(
    keys: &mut KeyServiceClient<Channel>,
    name: &str,
    chunk_size: u32,
    context: &EncryptionContext,
    output: W,
) -> Result<SealWriter<W>, ClientError> {
    let mut answer = keys
        .generate_data_key(pb::GenerateDataKeyRequest {
            name: name.into(),
            aad: Vec::new(),
            chunk_size,
        })
        .await
        .map_err(refused)?
        .into_inner();
    let plaintext = Zeroizing::new(std::mem::take(&mut answer.plaintext));
    let (header, len) = Header::parse(&answer.ciphertext).map_err(|e| {
        unusable(format!(
            "{name:?} is not a wrap-unwrap key, or the header is damaged: {e}"
        ))
    })?;
    if len != answer.ciphertext.len() || header.key_name() != name {
        return Err(unusable(
            "the header is not one envelope header for this key",
        ));
    }
    let key = DataKey::from_slice(&plaintext).map_err(unusable)?;
    SealWriter::new(output, &header, key, context).map_err(|e| io("output", &e))
}

/// A reader of the plaintext of the envelope that `input` holds, with the header read off
/// its front. Its data key is opened by the broker (`Decrypt` of the header alone) under
/// the key the header names, which must be `expected_key` when one is given. Read it to
/// the end: only a read that reaches the end without error has the whole plaintext.
///
/// # Errors
/// `input` failed or is not sealed data, the envelope is another key's, or the broker
/// refused (a retired version, an altered wrapping, a TPM whose PCRs left the sealed state).
pub async fn local_unsealer<R: Read>(
    keys: &mut KeyServiceClient<Channel>,
    expected_key: Option<&str>,
    context: &EncryptionContext,
    mut input: R,
) -> Result<(UnsealReader<R>, Header), ClientError> {
    let (header, raw) = Header::read_from(&mut input).map_err(|e| io("sealed input", &e))?;
    if let Some(expected) = expected_key
        && expected != header.key_name()
    {
        return Err(ClientError::Input {
            step: Step::Seal,
            what: "sealed input".into(),
            reason: format!("sealed under key {:?}, not {expected:?}", header.key_name()),
        });
    }
    let mut answer = keys
        .decrypt(pb::DecryptRequest {
            name: header.key_name().into(),
            ciphertext: raw,
            aad: Vec::new(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let plaintext = Zeroizing::new(std::mem::take(&mut answer.plaintext));
    let key = DataKey::from_slice(&plaintext).map_err(unusable)?;
    let reader = UnsealReader::new(input, &header, &key, context).map_err(unusable)?;
    Ok((reader, header))
}
