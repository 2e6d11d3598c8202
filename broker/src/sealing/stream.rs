//! `SealStream` and `UnsealStream`: data of any size through the broker in constant memory.
//!
//! Each call authorizes on its first message, then a task of its own pumps the request
//! stream through the sealer or opener into a bounded channel of responses. When the
//! caller stops reading, the channel fills, the task stops reading requests, and HTTP/2
//! flow control stops the caller sending: the broker holds at most [`DEPTH`] responses of
//! at most [`super::MAX_PIECE`] bytes, one chunk, and one request message per call.

use std::io::Write;
use std::pin::Pin;

use keybroker_api::v1 as pb;
use sealed_format::{ChunkOpener, FormatError, Header, SealWriter, TAG_LEN};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use zeroize::{Zeroize, Zeroizing};

use super::Sealing;
use crate::error::BrokerError;
use crate::keys::authorize_key;
use crate::keys::sealing::{context_from, format_refusal, io_refusal};

/// Responses a call may have queued for a caller that is not reading.
pub const DEPTH: usize = 4;

/// The responses of `SealStream`.
pub type SealStreamResponses =
    Pin<Box<dyn Stream<Item = Result<pb::SealStreamResponse, Status>> + Send + 'static>>;
/// The responses of `UnsealStream`.
pub type UnsealStreamResponses =
    Pin<Box<dyn Stream<Item = Result<pb::UnsealStreamResponse, Status>> + Send + 'static>>;

type Sender<T> = mpsc::Sender<Result<T, Status>>;

/// Why a pump stopped early: the caller went away (nothing more to say), or a refusal.
enum Stop {
    Gone,
    Refused(Status),
}

impl From<BrokerError> for Stop {
    fn from(e: BrokerError) -> Stop {
        Stop::Refused(e.into())
    }
}

impl From<Status> for Stop {
    fn from(s: Status) -> Stop {
        Stop::Refused(s)
    }
}

/// The first message of a stream, with the request's metadata for the gate.
async fn first_message<T>(
    request: Request<Streaming<T>>,
) -> Result<(Request<()>, T, Streaming<T>), Status> {
    let (metadata, extensions, mut inbound) = request.into_parts();
    let Some(first) = inbound.message().await? else {
        return Err(BrokerError::InvalidArgument(
            "the stream ended before its first message".into(),
        )
        .into());
    };
    Ok((
        Request::from_parts(metadata, extensions, ()),
        first,
        inbound,
    ))
}

/// Sends `bytes` in pieces of at most `piece` bytes.
async fn send_pieces<T>(
    tx: &Sender<T>,
    piece: usize,
    bytes: &[u8],
    make: impl Fn(Vec<u8>) -> T,
) -> Result<(), Stop> {
    for piece in bytes.chunks(piece) {
        tx.send(Ok(make(piece.to_vec())))
            .await
            .map_err(|_| Stop::Gone)?;
    }
    Ok(())
}

/// Ends a pump: a refusal goes to the caller, if it still listens.
async fn finish<T>(tx: Sender<T>, result: Result<(), Stop>) {
    if let Err(Stop::Refused(status)) = result {
        tracing::debug!(code = ?status.code(), message = status.message(), "sealing stream refused");
        let _ = tx.send(Err(status)).await;
    }
}

impl Sealing {
    pub async fn seal_stream(
        &self,
        request: Request<Streaming<pb::SealStreamRequest>>,
    ) -> Result<Response<SealStreamResponses>, Status> {
        let (meta, mut first, inbound) = first_message(request).await?;
        let (auth, key) = authorize_key(&self.manager, &self.gate, &meta, &first.name).await?;
        let context = context_from(&first.context)?;
        let envelope = self
            .manager
            .new_envelope(&auth, &key, first.chunk_size)
            .await?;
        let version = envelope.header.key_version();
        let writer = SealWriter::new(Vec::new(), &envelope.header, envelope.data_key, &context)
            .map_err(|e| io_refusal(&e))?;
        let (tx, rx) = mpsc::channel(DEPTH);
        let piece = self.piece;
        let data = std::mem::take(&mut first.data);
        tokio::spawn(async move {
            let result = pump_seal(inbound, data, writer, (&tx, piece), version).await;
            finish(tx, result).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    pub async fn unseal_stream(
        &self,
        request: Request<Streaming<pb::UnsealStreamRequest>>,
    ) -> Result<Response<UnsealStreamResponses>, Status> {
        let (meta, mut first, mut inbound) = first_message(request).await?;
        let (auth, key) = authorize_key(&self.manager, &self.gate, &meta, &first.name).await?;
        let context = context_from(&first.context)?;
        // The header, which may come in several messages.
        let mut buf = std::mem::take(&mut first.sealed);
        let (header, header_len) = loop {
            match Header::parse(&buf) {
                Ok(parsed) => break parsed,
                Err(FormatError::Truncated) => match inbound.message().await? {
                    Some(more) => buf.extend_from_slice(&more.sealed),
                    None => {
                        return Err(BrokerError::InvalidArgument(
                            "sealed: the data ends inside the envelope's header".into(),
                        )
                        .into());
                    }
                },
                Err(other) => return Err(format_refusal(other).into()),
            }
        };
        let data_key = self.manager.open_envelope(&auth, &key, &header).await?;
        let opener = ChunkOpener::new(&header, &data_key, &context).map_err(format_refusal)?;
        buf.drain(..header_len);
        let full = usize::try_from(header.chunk_size()).unwrap_or(usize::MAX) + TAG_LEN;
        let (tx, rx) = mpsc::channel(DEPTH);
        let piece = self.piece;
        let version = header.key_version();
        tokio::spawn(async move {
            let result = pump_unseal(
                inbound,
                Zeroizing::new(buf),
                opener,
                full,
                (&tx, piece),
                version,
            )
            .await;
            finish(tx, result).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Seals each request's data as it comes; the first response carries the header.
async fn pump_seal(
    mut inbound: Streaming<pb::SealStreamRequest>,
    mut data: Vec<u8>,
    mut writer: SealWriter<Vec<u8>>,
    (tx, piece): (&Sender<pb::SealStreamResponse>, usize),
    version: u32,
) -> Result<(), Stop> {
    let sealed = |sealed| pb::SealStreamResponse {
        sealed,
        key_version: version,
    };
    loop {
        let written = writer.write_all(&data);
        data.zeroize();
        written.map_err(|e| io_refusal(&e))?;
        let out = std::mem::take(writer.get_mut());
        send_pieces(tx, piece, &out, sealed).await?;
        match inbound.message().await? {
            Some(mut next) => data = std::mem::take(&mut next.data),
            None => break,
        }
    }
    let last = writer.finish().map_err(|e| io_refusal(&e))?;
    send_pieces(tx, piece, &last, sealed).await
}

/// Opens each whole chunk as it comes. A chunk of full length is never the final one
/// (the final is always shorter), so only what is left when the caller's stream ends is
/// opened as final: a stream that ends on a chunk boundary was truncated.
async fn pump_unseal(
    mut inbound: Streaming<pb::UnsealStreamRequest>,
    mut buf: Zeroizing<Vec<u8>>,
    mut opener: ChunkOpener,
    full: usize,
    (tx, piece): (&Sender<pb::UnsealStreamResponse>, usize),
    version: u32,
) -> Result<(), Stop> {
    let plaintext = |plaintext| pb::UnsealStreamResponse {
        plaintext,
        key_version: version,
    };
    // The version first, before any plaintext.
    tx.send(Ok(plaintext(Vec::new())))
        .await
        .map_err(|_| Stop::Gone)?;
    loop {
        while buf.len() >= full {
            let opened = opener
                .open_chunk(buf.get(..full).unwrap_or_default(), false)
                .map_err(format_refusal)?;
            buf.drain(..full);
            send_pieces(tx, piece, &opened, plaintext).await?;
        }
        match inbound.message().await? {
            Some(mut next) => {
                buf.extend_from_slice(&next.sealed);
                next.sealed.zeroize();
            }
            None => break,
        }
    }
    let opened = opener.open_chunk(&buf, true).map_err(format_refusal)?;
    send_pieces(tx, piece, &opened, plaintext).await
}
