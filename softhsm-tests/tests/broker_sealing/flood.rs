//! A flood of sealing streams from one caller that sends and never reads: the broker holds
//! a bounded amount for each, refuses the caller's streams past its share at once, serves
//! another caller meanwhile, and ends the stalled streams with an error, never with `OK`.

use std::time::Duration;

use common::TransportOptions;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::*;

/// `server.request_timeout_seconds` of this broker: how long a stream waits for its caller.
const STALL_SECONDS: u64 = 4;

/// A stream that sends 60 KiB messages for as long as the broker takes them, on a
/// connection of its own (a stalled stream fills its connection's HTTP/2 window, which
/// stalls only that connection).
async fn flooding_stream(
    broker: &BrokerProcess,
) -> Result<tonic::Streaming<pb::SealStreamResponse>, tonic::Status> {
    let mut keys = admin(broker).await;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let message = pb::SealStreamRequest {
                name: if first { "vault".into() } else { String::new() },
                context: HashMap::new(),
                chunk_size: 0,
                data: vec![0x5a; 60 * 1024],
            };
            first = false;
            if tx.send(message).await.is_err() {
                return;
            }
        }
    });
    let responses = keys
        .seal_stream(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(responses)
}

fn vm_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_stalled_streams_is_bounded_and_another_caller_is_served() {
    let transport = TransportOptions {
        server_lines: format!("request_timeout_seconds = {STALL_SECONDS}"),
        ..TransportOptions::default()
    };
    let broker = BrokerProcess::start_with_transport(common::BrokerOptions::default(), transport);
    let pid = broker.pid().unwrap();
    let mut keys = admin(&broker).await;
    wrap_key(&mut keys, "vault", "softhsm").await;
    let before = vm_rss_mib(pid);

    // The flooding caller takes its share of streams, and no more.
    let mut held = Vec::new();
    for _ in 0..broker::sealing::MAX_STREAMS_PER_IDENTITY {
        held.push(flooding_stream(&broker).await.unwrap());
    }
    let refused = flooding_stream(&broker).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("sealing streams open"),
        "{refused:?}"
    );

    // Another caller is served meanwhile.
    let mut workload = broker.keys("workload").await;
    let sealed = seal(&mut workload, "vault", b"still served", &HashMap::new(), 0)
        .await
        .unwrap();
    // The flooding caller's own unary calls are not streams: they are served too.
    let opened = unseal(&mut keys, "vault", &sealed, &HashMap::new())
        .await
        .unwrap();
    assert_eq!(opened, b"still served");
    // Nobody reads, everybody sends: what the broker holds stays bounded.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = vm_rss_mib(pid);
    assert!(
        during - before < 64.0,
        "the broker grew from {before:.1} to {during:.1} MiB under 8 stalled streams"
    );

    // The stalled streams end with an error after what was queued; never with OK.
    tokio::time::sleep(Duration::from_secs(STALL_SECONDS + 1)).await;
    for mut responses in held {
        let ended = loop {
            match responses.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a stalled stream ended with OK"),
                Err(status) => break status,
            }
        };
        assert_eq!(ended.code(), Code::DeadlineExceeded, "{ended:?}");
        assert!(ended.message().contains("read nothing"), "{ended:?}");
    }
    // Their slots came back.
    let mut again = flooding_stream(&broker).await.unwrap();
    assert!(again.message().await.unwrap().is_some());
}
