//! `seal --remote` and `unseal --remote`: the file streamed through the broker
//! (`SealStream`, `UnsealStream`). A blocking task reads the file into messages and
//! queues at most [`QUEUE`] of them; the responses are written as they come. Only a
//! response stream that ends OK, from a file read to its end, is committed.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use indicatif::ProgressBar;
use keybroker_api::v1 as pb;
use pb::key_service_client::KeyServiceClient;
use sealed_format::EncryptionContext;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use super::output::Output;
use super::{SealArgs, UnsealArgs, context_map, progress_bar, refusal, unreadable};
use crate::cli::CliError;

/// File bytes per request message: far below the broker's default message limit (4 MiB)
/// and below the limits brokers are usually given, so that one message never exceeds it.
pub const MESSAGE_BYTES: usize = 32 * 1024;
/// Request messages read ahead of the broker.
pub const QUEUE: usize = 4;

/// Seals the file through `SealStream`: the version that wraps it, and the bytes sealed.
pub(super) async fn seal(
    keys: &mut KeyServiceClient<Channel>,
    args: &SealArgs,
    context: &EncryptionContext,
) -> Result<(u32, u64), CliError> {
    let output = Output::beside(&args.out)?;
    let first = pb::SealStreamRequest {
        name: args.key.clone(),
        context: context_map(context),
        chunk_size: args.chunk_size,
        data: Vec::new(),
    };
    let (producer, requests) = start_producer(&args.input, first, |m, data| m.data = data)?;
    let mut responses = keys.seal_stream(requests).await?.into_inner();
    let mut version = 0;
    while let Some(response) = responses.message().await? {
        if version == 0 {
            version = response.key_version;
        }
        write(&output, &response.sealed)?;
    }
    let bytes = finish(producer, output).await?;
    Ok((version, bytes))
}

/// Opens the file through `UnsealStream` under `name` (its header's key): the version
/// whose wrapping opened, and the bytes of the sealed file.
pub(super) async fn unseal(
    keys: &mut KeyServiceClient<Channel>,
    args: &UnsealArgs,
    name: &str,
    context: &EncryptionContext,
) -> Result<(u32, u64), CliError> {
    let output = Output::beside(&args.out)?;
    let first = pb::UnsealStreamRequest {
        name: name.to_string(),
        context: context_map(context),
        sealed: Vec::new(),
    };
    let (producer, requests) = start_producer(&args.input, first, |m, data| m.sealed = data)?;
    let refused = |s| refusal(&args.input, s);
    let mut responses = keys
        .unseal_stream(requests)
        .await
        .map_err(refused)?
        .into_inner();
    let mut version = 0;
    let mut plaintext_bytes = 0u64;
    // Each response wipes its plaintext when dropped.
    while let Some(response) = responses.message().await.map_err(refused)? {
        if version == 0 {
            version = response.key_version;
        }
        write(&output, &response.plaintext)?;
        plaintext_bytes = plaintext_bytes.saturating_add(response.plaintext.len() as u64);
    }
    finish(producer, output).await?;
    Ok((version, plaintext_bytes))
}

type Producer = tokio::task::JoinHandle<Result<u64, CliError>>;

/// Opens `path` and starts reading it into request messages: `first`, then defaults,
/// each given its piece of the file by `set`.
fn start_producer<T: Default + Send + 'static>(
    path: &Path,
    first: T,
    set: fn(&mut T, Vec<u8>),
) -> Result<(Producer, ReceiverStream<T>), CliError> {
    let input = File::open(path).map_err(|e| unreadable(path, &e))?;
    let len = input.metadata().map_err(|e| unreadable(path, &e))?.len();
    let progress = progress_bar(len);
    let (tx, rx) = mpsc::channel(QUEUE);
    let path = path.to_path_buf();
    let producer =
        tokio::task::spawn_blocking(move || produce(input, &path, &progress, tx, first, set));
    Ok((producer, ReceiverStream::new(rx)))
}

/// Reads the file into messages until its end. The broker ending the call first stops
/// it (the caller reports the broker's status).
fn produce<T>(
    mut input: File,
    path: &Path,
    progress: &ProgressBar,
    tx: mpsc::Sender<T>,
    first: T,
    set: fn(&mut T, Vec<u8>),
) -> Result<u64, CliError>
where
    T: Default,
{
    let mut first = Some(first);
    let mut total = 0u64;
    loop {
        let mut data = read_up_to(&mut input, path, MESSAGE_BYTES)?;
        let n = data.len();
        if n == 0 && first.is_none() {
            break;
        }
        let mut message = first.take().unwrap_or_default();
        set(&mut message, std::mem::take(&mut *data));
        if tx.blocking_send(message).is_err() {
            return Err(CliError::Output(
                "the broker ended the call before the whole file was sent".into(),
            ));
        }
        total = total.saturating_add(n as u64);
        progress.inc(n as u64);
        if n < MESSAGE_BYTES {
            break;
        }
    }
    progress.finish_and_clear();
    Ok(total)
}

/// Up to `limit` bytes, fewer only at the end of the file.
fn read_up_to(input: &mut File, path: &Path, limit: usize) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let mut buf = Zeroizing::new(vec![0u8; limit]);
    let mut filled = 0;
    while filled < limit {
        let rest = buf.get_mut(filled..).unwrap_or_default();
        match input.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(unreadable(path, &e)),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

fn write(output: &Output, bytes: &[u8]) -> Result<(), CliError> {
    tokio::task::block_in_place(|| output.file().write_all(bytes)).map_err(|e| output.error(&e))
}

/// The file was read to its end and the broker's stream ended OK: the output is
/// committed.
async fn finish(producer: Producer, output: Output) -> Result<u64, CliError> {
    let sent = producer
        .await
        .map_err(|e| CliError::Output(format!("reading the file stopped: {e}")))??;
    tokio::task::block_in_place(|| output.commit())?;
    Ok(sent)
}
