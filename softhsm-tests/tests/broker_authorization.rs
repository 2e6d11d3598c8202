//! End to end: authorization cannot be skipped. Every RPC of every service that server
//! reflection lists is called by an identity that no policy names, and each is refused
//! before it changes anything. An RPC added later is covered without touching this test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::str::FromStr;

use bytes::{Buf, BufMut};
use common::{BrokerProcess, create};
use keybroker_api::v1 as pb;
use pb::KeyAlgorithm as A;
use pb::KeyPurpose as P;
use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorProto, field_descriptor_proto::Type};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

/// Services that answer without an action: health and reflection themselves.
const EXEMPT: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
];

/// Sends and receives protobuf bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

async fn reflect(channel: Channel, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response: ServerReflectionResponse = stream.message().await.unwrap().unwrap();
    response.message_response.unwrap()
}

/// Every service the broker lists, with the file descriptors that define it.
async fn services(channel: &Channel) -> Vec<(String, Vec<FileDescriptorProto>)> {
    let MessageResponse::ListServicesResponse(list) =
        reflect(channel.clone(), MessageRequest::ListServices(String::new())).await
    else {
        panic!("reflection did not list services");
    };
    let mut out = Vec::new();
    for service in list.service {
        if EXEMPT.contains(&service.name.as_str()) {
            continue;
        }
        let MessageResponse::FileDescriptorResponse(files) = reflect(
            channel.clone(),
            MessageRequest::FileContainingSymbol(service.name.clone()),
        )
        .await
        else {
            panic!("no descriptor for {}", service.name);
        };
        let mut files: Vec<FileDescriptorProto> = files
            .file_descriptor_proto
            .iter()
            .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).unwrap())
            .collect();
        // The files it imports, where its messages may live (`keys.proto` imports
        // `sealing.proto`).
        let imports: Vec<String> = files.iter().flat_map(|f| f.dependency.clone()).collect();
        for import in imports {
            if files.iter().any(|f| f.name() == import) {
                continue;
            }
            let MessageResponse::FileDescriptorResponse(more) = reflect(
                channel.clone(),
                MessageRequest::FileByFilename(import.clone()),
            )
            .await
            else {
                panic!("no descriptor for {import}");
            };
            files.extend(
                more.file_descriptor_proto
                    .iter()
                    .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).unwrap()),
            );
        }
        out.push((service.name, files));
    }
    out
}

/// A request of `message` type (".package.Name") that names the key `key` in its
/// `name` field, if it has one; otherwise the empty message.
fn request_naming(files: &[FileDescriptorProto], message: &str, key: &str) -> Vec<u8> {
    let found: Option<&DescriptorProto> = files.iter().find_map(|file| {
        let package = file.package();
        file.message_type
            .iter()
            .find(|m| format!(".{package}.{}", m.name()) == message)
    });
    let descriptor = found.unwrap_or_else(|| panic!("message {message} not described"));
    let mut bytes = Vec::new();
    if let Some(field) = descriptor
        .field
        .iter()
        .find(|f| f.name() == "name" && f.r#type() == Type::String)
    {
        let number = u32::try_from(field.number()).unwrap();
        prost::encoding::string::encode(number, &key.to_string(), &mut bytes);
    }
    bytes
}

async fn call(channel: Channel, path: &str, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_str(path).unwrap();
    match grpc
        .unary(tonic::Request::new(body), path.clone(), RawCodec)
        .await
    {
        Ok(_) => panic!("{path} served a stranger"),
        Err(status) => status,
    }
}

/// A streaming call whose first (and only) message is `body`: refused before any response.
async fn call_streaming(channel: Channel, path: &str, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_str(path).unwrap();
    let request = tonic::Request::new(tokio_stream::once(body));
    match grpc.streaming(request, path.clone(), RawCodec).await {
        Ok(mut responses) => match responses.get_mut().message().await {
            Err(status) => status,
            Ok(_) => panic!("{path} served a stranger"),
        },
        Err(status) => status,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_refuses_an_identity_that_no_policy_names() {
    let broker = BrokerProcess::start();
    let mut admin = broker.keys("admin").await;
    admin
        .create_key(create("pay", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    let policy_before =
        pb::admin_service_client::AdminServiceClient::new(broker.channel("admin").await.unwrap())
            .get_policy(pb::GetPolicyRequest::default())
            .await
            .unwrap()
            .into_inner();

    let stranger = broker.channel("stranger").await.unwrap();
    let mut called = Vec::new();
    for (service, files) in services(&stranger).await {
        let (package, name) = service.rsplit_once('.').unwrap();
        let described = files
            .iter()
            .filter(|f| f.package() == package)
            .flat_map(|f| f.service.iter())
            .find(|s| s.name() == name)
            .unwrap_or_else(|| panic!("{service} not described"));
        for method in &described.method {
            let streaming = method.client_streaming() || method.server_streaming();
            let path = format!("/{service}/{}", method.name());
            // Once with a key that exists, once with one that does not: the answer must
            // not tell them apart.
            for key in ["pay", "no-such-key", "../not a name"] {
                let body = request_naming(&files, method.input_type(), key);
                let status = if streaming {
                    call_streaming(stranger.clone(), &path, body).await
                } else {
                    call(stranger.clone(), &path, body).await
                };
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{path} ({key}): {status:?}"
                );
                assert_eq!(status.message(), "permission denied", "{path} ({key})");
            }
            called.push(path);
        }
    }
    // The table has 27 methods today; the test finds whatever reflection lists.
    assert!(
        called.len() >= 27,
        "only {} RPCs found: {called:?}",
        called.len()
    );
    assert!(called.contains(&"/keybroker.v1.KeyService/SignBatch".to_string()));
    assert!(called.contains(&"/keybroker.v1.KeyService/UnsealStream".to_string()));

    // A path outside the action table is refused by the request layer before any
    // handler, even on a service that exists.
    let status = call(
        stranger.clone(),
        "/keybroker.v1.KeyService/ExportKey",
        Vec::new(),
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = call(
        broker.channel("admin").await.unwrap(),
        "/keybroker.v1.Nope/Sign",
        Vec::new(),
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Nothing the stranger asked for happened.
    let key = admin
        .get_key(pb::KeyRef { name: "pay".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key.state, pb::KeyState::Enabled as i32);
    assert_eq!(key.primary_version, 1);
    let policy_after =
        pb::admin_service_client::AdminServiceClient::new(broker.channel("admin").await.unwrap())
            .get_policy(pb::GetPolicyRequest::default())
            .await
            .unwrap()
            .into_inner();
    assert_eq!(policy_after.digest, policy_before.digest);
    let log = broker.log();
    assert!(
        log.contains("call to a path outside the action table refused"),
        "{log}"
    );
}

/// A stranger learns nothing from CreateKey: not which backends exist, not which names
/// are taken, not which names are valid.
#[tokio::test(flavor = "multi_thread")]
async fn create_key_authorizes_before_it_checks_anything() {
    let broker = BrokerProcess::start();
    let mut admin = broker.keys("admin").await;
    admin
        .create_key(create("taken", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap();
    let mut stranger = broker.keys("stranger").await;
    for (name, backend) in [
        ("taken", "softhsm"),
        ("fresh", "softhsm"),
        ("fresh", "no-such-backend"),
        ("bad name!", "softhsm"),
    ] {
        let status = stranger
            .create_key(create(name, A::EcP256, P::SignVerify, backend))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{name}@{backend}: {status:?}"
        );
        assert_eq!(status.message(), "permission denied");
    }
    // The admin, who is allowed, gets the precise reasons.
    let status = admin
        .create_key(create("taken", A::EcP256, P::SignVerify, "softhsm"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    let status = admin
        .create_key(create("fresh", A::EcP256, P::SignVerify, "no-such-backend"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

/// A client certificate is checked on every call, not only at the handshake: once it
/// expires, the connection it opened stops working.
#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_that_expires_while_connected_stops_working() {
    use std::time::{Duration, Instant, SystemTime};
    let broker = BrokerProcess::start();
    let now = SystemTime::now();
    // Whole seconds: X.509 times have no fractions.
    let expires = now + Duration::from_secs(4);
    broker
        .pki
        .issue_client("/admin", now - Duration::from_secs(3600), expires)
        .unwrap()
        .write_to(&broker.dir.path().join("pki"), "short-lived")
        .unwrap();
    let channel = broker.channel("short-lived").await.unwrap();
    let mut client = pb::key_service_client::KeyServiceClient::new(channel);
    client
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap();
    // Poll the same connection until the certificate's notAfter has passed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match client.list_keys(pb::ListKeysRequest::default()).await {
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "still served long after notAfter"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(status) => break status,
        }
    };
    assert!(
        SystemTime::now() >= expires,
        "refused before notAfter: {status:?}"
    );
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("expired"), "{status:?}");
}
