//! `SealStream` and `UnsealStream`: data of any size through the broker in constant memory.
//!
//! Each call authorizes on its first message and takes a stream slot (`super::slots`),
//! then a task of its own pumps the request stream through the sealer or opener into a
//! bounded channel of responses. When the caller stops reading, the channel fills, the
//! task stops reading requests, and HTTP/2 flow control stops the caller sending: the
//! broker holds at most [`DEPTH`] responses of at most [`super::MAX_PIECE`] bytes, one
//! chunk, and one request message per call. A caller that neither sends nor reads for
//! `server.request_timeout_seconds` has its stream ended with `DEADLINE_EXCEEDED`, after
//! the responses already queued: a stream ends with `OK` only when the pump finished.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::time::Duration;

use keybroker_api::v1 as pb;
use sealed_format::{ChunkOpener, FormatError, Header, SealWriter, TAG_LEN};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use zeroize::{Zeroize, Zeroizing};

use super::Sealing;
use super::slots::Slot;
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

/// Where a pump sends its responses, in pieces of at most `piece` bytes, and how long it
/// waits for the caller either way before it ends the stream.
struct Flow<T> {
    tx: Sender<T>,
    piece: usize,
    stall: Duration,
}

impl<T> Flow<T> {
    /// Sends `bytes` in pieces.
    async fn send(&self, bytes: &[u8], make: impl Fn(Vec<u8>) -> T) -> Result<(), Stop> {
        for piece in bytes.chunks(self.piece) {
            match tokio::time::timeout(self.stall, self.tx.send(Ok(make(piece.to_vec())))).await {
                Ok(Ok(())) => {}
                Ok(Err(_closed)) => return Err(Stop::Gone),
                Err(_elapsed) => return Err(self.stalled("read nothing")),
            }
        }
        Ok(())
    }

    /// The caller's next message.
    async fn next<R>(&self, inbound: &mut Streaming<R>) -> Result<Option<R>, Stop> {
        match tokio::time::timeout(self.stall, inbound.message()).await {
            Ok(message) => Ok(message?),
            Err(_elapsed) => Err(self.stalled("sent nothing")),
        }
    }

    fn stalled(&self, what: &str) -> Stop {
        Stop::Refused(Status::deadline_exceeded(format!(
            "the caller {what} for {} s: the stream is ended",
            self.stall.as_secs()
        )))
    }
}

/// Runs `pump` in a task of its own that holds `slot` until it ends. Its responses go
/// through a bounded channel; its refusal, if any, through a channel of its own that is
/// never full, after the responses already queued: a stream never ends with `OK` unless
/// the pump finished.
fn spawn_pump<T, F>(
    slot: Slot,
    (piece, stall): (usize, Duration),
    pump: impl FnOnce(Flow<T>) -> F,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>
where
    T: Send + 'static,
    F: Future<Output = Result<(), Stop>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(DEPTH);
    let (end_tx, end_rx) = mpsc::channel(1);
    let run = pump(Flow { tx, piece, stall });
    tokio::spawn(async move {
        let _slot = slot;
        if let Err(Stop::Refused(status)) = run.await {
            tracing::debug!(code = ?status.code(), message = status.message(), "sealing stream refused");
            let _ = end_tx.try_send(Err(status));
        }
    });
    Box::pin(ReceiverStream::new(rx).chain(ReceiverStream::new(end_rx)))
}

impl Sealing {
    pub async fn seal_stream(
        &self,
        request: Request<Streaming<pb::SealStreamRequest>>,
    ) -> Result<Response<SealStreamResponses>, Status> {
        let (meta, mut first, inbound) = first_message(request).await?;
        let (auth, key) = authorize_key(&self.manager, &self.gate, &meta, &first.name).await?;
        let slot = self.slots.take(auth.caller().as_str())?;
        let context = context_from(&first.context)?;
        let envelope = self
            .manager
            .new_envelope(&auth, &key, first.chunk_size)
            .await?;
        let version = envelope.header.key_version();
        let writer = SealWriter::new(Vec::new(), &envelope.header, envelope.data_key, &context)
            .map_err(|e| io_refusal(&e))?;
        let data = std::mem::take(&mut first.data);
        let responses = spawn_pump(slot, (self.piece, self.stall), move |flow| {
            pump_seal(inbound, data, writer, flow, version)
        });
        Ok(Response::new(responses))
    }

    pub async fn unseal_stream(
        &self,
        request: Request<Streaming<pb::UnsealStreamRequest>>,
    ) -> Result<Response<UnsealStreamResponses>, Status> {
        let (meta, mut first, mut inbound) = first_message(request).await?;
        let (auth, key) = authorize_key(&self.manager, &self.gate, &meta, &first.name).await?;
        let slot = self.slots.take(auth.caller().as_str())?;
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
        let version = header.key_version();
        let buf = Zeroizing::new(buf);
        let responses = spawn_pump(slot, (self.piece, self.stall), move |flow| {
            pump_unseal(inbound, buf, (opener, full), flow, version)
        });
        Ok(Response::new(responses))
    }
}

/// Seals each request's data as it comes; the first response carries the header.
async fn pump_seal(
    mut inbound: Streaming<pb::SealStreamRequest>,
    mut data: Vec<u8>,
    mut writer: SealWriter<Vec<u8>>,
    flow: Flow<pb::SealStreamResponse>,
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
        flow.send(&out, sealed).await?;
        match flow.next(&mut inbound).await? {
            Some(mut next) => data = std::mem::take(&mut next.data),
            None => break,
        }
    }
    let last = writer.finish().map_err(|e| io_refusal(&e))?;
    flow.send(&last, sealed).await
}

/// Opens each whole chunk as it comes. A chunk of full length is never the final one
/// (the final is always shorter), so only what is left when the caller's stream ends is
/// opened as final: a stream that ends on a chunk boundary was truncated.
async fn pump_unseal(
    mut inbound: Streaming<pb::UnsealStreamRequest>,
    mut buf: Zeroizing<Vec<u8>>,
    (mut opener, full): (ChunkOpener, usize),
    flow: Flow<pb::UnsealStreamResponse>,
    version: u32,
) -> Result<(), Stop> {
    let plaintext = |plaintext| pb::UnsealStreamResponse {
        plaintext,
        key_version: version,
    };
    // The version first, before any plaintext.
    match tokio::time::timeout(flow.stall, flow.tx.send(Ok(plaintext(Vec::new())))).await {
        Ok(Ok(())) => {}
        Ok(Err(_closed)) => return Err(Stop::Gone),
        Err(_elapsed) => return Err(flow.stalled("read nothing")),
    }
    loop {
        while buf.len() >= full {
            let opened = opener
                .open_chunk(buf.get(..full).unwrap_or_default(), false)
                .map_err(format_refusal)?;
            buf.drain(..full);
            flow.send(&opened, plaintext).await?;
        }
        match flow.next(&mut inbound).await? {
            Some(mut next) => {
                buf.extend_from_slice(&next.sealed);
                next.sealed.zeroize();
            }
            None => break,
        }
    }
    let opened = opener.open_chunk(&buf, true).map_err(format_refusal)?;
    flow.send(&opened, plaintext).await
}
