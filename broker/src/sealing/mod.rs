//! The sealing calls of `KeyService` (docs/sealing.md): `Seal` and `Unseal` for payloads
//! that fit in one message, `SealStream` and `UnsealStream` ([`stream`]) for any size in
//! constant memory, `GenerateDataKeyWithoutPlaintext` and `Rewrap`. Each authorizes the
//! key the request names first, through the same gate as every other call, and only then
//! reads the envelope. Data keys live in zeroed-on-drop buffers for one call.

mod slots;
mod stream;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use keybroker_api::v1 as pb;
use sealed_format::{FormatError, Header, SealWriter, UnsealReader};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::error::BrokerError;
use crate::keys::KeyManager;
use crate::keys::authorize_key;
use crate::keys::sealing::{context_from, format_refusal, io_refusal};
use crate::request::Gate;

use slots::StreamSlots;
pub use slots::{MAX_STREAMS, MAX_STREAMS_PER_IDENTITY};
pub use stream::{SealStreamResponses, UnsealStreamResponses};

/// Largest plaintext `Seal` takes: larger data goes through `SealStream`. The envelope
/// must also fit in one response (`server.max_message_bytes`).
pub const MAX_SEAL_PLAINTEXT: usize = 1 << 20;
/// Largest piece of data in one streamed response, whatever the chunk size; less when
/// the server's messages are smaller.
pub const MAX_PIECE: usize = 1 << 20;
/// Room in a response for everything but its data: field tags, lengths, the version.
const FRAMING: usize = 64;

type Reply<T> = Result<Response<T>, Status>;

/// Serves the sealing calls.
#[derive(Debug, Clone)]
pub struct Sealing {
    manager: Arc<KeyManager>,
    gate: Gate,
    /// The data in one streamed response.
    piece: usize,
    /// The largest response (`server.max_message_bytes`).
    max_response: usize,
    /// The streams in flight.
    slots: StreamSlots,
    /// How long a stream waits for its caller, either way, before it ends.
    stall: Duration,
}

/// The header at the start of `sealed`, and its length.
fn parse_header(sealed: &[u8]) -> Result<(Header, usize), BrokerError> {
    Header::parse(sealed).map_err(|e| match e {
        FormatError::Truncated => BrokerError::InvalidArgument(
            "sealed: the data ends inside the envelope's header".into(),
        ),
        other => format_refusal(other),
    })
}

impl Sealing {
    /// `max_response` is the server's largest message (`server.max_message_bytes`);
    /// `stall`, how long a stream waits for its caller to send or to read
    /// (`server.request_timeout_seconds`).
    pub fn new(manager: Arc<KeyManager>, gate: Gate, max_response: usize, stall: Duration) -> Self {
        Sealing {
            manager,
            gate,
            piece: MAX_PIECE.min(max_response.saturating_sub(FRAMING)).max(1),
            max_response,
            slots: StreamSlots::default(),
            stall,
        }
    }

    pub async fn seal(&self, request: Request<pb::SealRequest>) -> Reply<pb::SealResponse> {
        let name = request.get_ref().name.clone();
        let (auth, key) = authorize_key(&self.manager, &self.gate, &request, &name).await?;
        let r = request.into_inner();
        if r.plaintext.len() > MAX_SEAL_PLAINTEXT {
            return Err(BrokerError::InvalidArgument(format!(
                "plaintext: at most {MAX_SEAL_PLAINTEXT} bytes; larger data goes through \
                 SealStream"
            ))
            .into());
        }
        let context = context_from(&r.context)?;
        let envelope = self.manager.new_envelope(&auth, &key, r.chunk_size).await?;
        let version = envelope.header.key_version();
        let len = r.plaintext.len();
        let chunk = usize::try_from(envelope.header.chunk_size()).unwrap_or(usize::MAX);
        let sealed_len = envelope.header.encode().len() + len + 16 * (len / chunk + 1);
        if sealed_len.saturating_add(FRAMING) > self.max_response {
            return Err(BrokerError::InvalidArgument(format!(
                "plaintext: its envelope ({sealed_len} bytes) would not fit in one message of \
                 this server ({} bytes); larger data goes through SealStream",
                self.max_response
            ))
            .into());
        }
        let out = Vec::with_capacity(sealed_len);
        let sealed = SealWriter::new(out, &envelope.header, envelope.data_key, &context)
            .and_then(|mut writer| {
                writer.write_all(&r.plaintext)?;
                writer.finish()
            })
            .map_err(|e| io_refusal(&e))?;
        Ok(Response::new(pb::SealResponse {
            sealed,
            key_version: version,
        }))
    }

    pub async fn unseal(&self, request: Request<pb::UnsealRequest>) -> Reply<pb::UnsealResponse> {
        let name = request.get_ref().name.clone();
        let (auth, key) = authorize_key(&self.manager, &self.gate, &request, &name).await?;
        let r = request.into_inner();
        let context = context_from(&r.context)?;
        let (header, header_len) = parse_header(&r.sealed)?;
        let data_key = self.manager.open_envelope(&auth, &key, &header).await?;
        let payload = r.sealed.get(header_len..).unwrap_or_default();
        let mut plaintext = Zeroizing::new(Vec::with_capacity(payload.len()));
        UnsealReader::new(payload, &header, &data_key, &context)
            .map_err(format_refusal)?
            .read_to_end(&mut plaintext)
            .map_err(|e| io_refusal(&e))?;
        Ok(Response::new(pb::UnsealResponse {
            plaintext: std::mem::take(&mut *plaintext),
            key_version: header.key_version(),
        }))
    }

    pub async fn generate_without_plaintext(
        &self,
        request: Request<pb::GenerateDataKeyRequest>,
    ) -> Reply<pb::GenerateDataKeyWithoutPlaintextResponse> {
        let name = request.get_ref().name.clone();
        let (auth, key) = authorize_key(&self.manager, &self.gate, &request, &name).await?;
        let r = request.into_inner();
        refuse_aad(&r.aad)?;
        let envelope = self.manager.new_envelope(&auth, &key, r.chunk_size).await?;
        Ok(Response::new(pb::GenerateDataKeyWithoutPlaintextResponse {
            header: envelope.header.encode(),
            key_version: envelope.header.key_version(),
        }))
    }

    pub async fn rewrap(&self, request: Request<pb::RewrapRequest>) -> Reply<pb::RewrapResponse> {
        let name = request.get_ref().name.clone();
        let (auth, key) = authorize_key(&self.manager, &self.gate, &request, &name).await?;
        let (header, replaced_len) = parse_header(&request.get_ref().sealed)?;
        let rewrapped = self.manager.rewrap(&auth, &key, &header).await?;
        if rewrapped.key_version() != header.key_version() {
            tracing::info!(key = %key.name, from = header.key_version(), to = rewrapped.key_version(), "envelope rewrapped");
        }
        Ok(Response::new(pb::RewrapResponse {
            header: rewrapped.encode(),
            replaced_len: u32::try_from(replaced_len).unwrap_or(u32::MAX),
            key_version: rewrapped.key_version(),
            previous_version: header.key_version(),
        }))
    }

    /// `GenerateDataKey` on a wrap-unwrap key: the data key, and the envelope header
    /// that holds it wrapped.
    ///
    /// # Errors
    /// As [`KeyManager::new_envelope`]; `aad` (the envelope binds a context instead).
    pub async fn generate_data_key(
        &self,
        auth: &crate::request::Authorized,
        key: &crate::store::KeyRecord,
        request: &pb::GenerateDataKeyRequest,
    ) -> Result<pb::GenerateDataKeyResponse, BrokerError> {
        refuse_aad(&request.aad)?;
        let envelope = self
            .manager
            .new_envelope(auth, key, request.chunk_size)
            .await?;
        use secrecy::ExposeSecret;
        Ok(pb::GenerateDataKeyResponse {
            plaintext: envelope.data_key.expose_secret().to_vec(),
            ciphertext: envelope.header.encode(),
            key_version: envelope.header.key_version(),
        })
    }

    /// `Decrypt` of an envelope header under a wrap-unwrap key: its data key, as AWS KMS
    /// `Decrypt` opens an encrypted data key. A whole envelope opens with `Unseal`.
    ///
    /// # Errors
    /// Not exactly a header; as [`KeyManager::open_envelope`].
    pub async fn open_data_key(
        &self,
        auth: &crate::request::Authorized,
        key: &crate::store::KeyRecord,
        request: &pb::DecryptRequest,
    ) -> Result<pb::DecryptResponse, BrokerError> {
        refuse_aad(&request.aad)?;
        let (header, len) = parse_header(&request.ciphertext)?;
        if len != request.ciphertext.len() {
            return Err(BrokerError::InvalidArgument(
                "ciphertext: a whole sealed envelope; Decrypt opens only an envelope's \
                 header (its data key), and Unseal opens the envelope"
                    .into(),
            ));
        }
        let data_key = self.manager.open_envelope(auth, key, &header).await?;
        use secrecy::ExposeSecret;
        Ok(pb::DecryptResponse {
            plaintext: data_key.expose_secret().to_vec(),
            key_version: header.key_version(),
        })
    }
}

fn refuse_aad(aad: &[u8]) -> Result<(), BrokerError> {
    if aad.is_empty() {
        Ok(())
    } else {
        Err(BrokerError::InvalidArgument(
            "aad: a sealed envelope binds an encryption context (given when the chunks are \
             sealed), not associated data"
                .into(),
        ))
    }
}
