//! Misbehaving clients: more streams than allowed, a flood of reset streams, thousands of idle
//! connections, and messages one byte over each limit. Each abuse gets a status or a closed
//! connection, never a crash; a well-behaved client keeps being answered throughout and the
//! server's memory stays bounded. (Latencies are printed, not asserted: they are benchmark
//! figures, reported in the closing note.)

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use converge_api::{AppendRequest, LedgerApi, LedgerError, LoadRequest};

use crate::node::Node;

/// A well-behaved client appending in a loop until stopped: its latencies and failures.
fn good_client(
    node: &Node,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<Duration>, Vec<String>)> {
    let url = node.url();
    tokio::spawn(async move {
        let client = converge_client::Client::connect(url).await.unwrap();
        let (mut latencies, mut failures) = (Vec::new(), Vec::new());
        while !stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            match client.append(AppendRequest::new("good", "k", vec![1u8; 256])).await {
                Ok(_) => latencies.push(started.elapsed()),
                Err(err) => failures.push(err.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (latencies, failures)
    })
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort_unstable();
    latencies.get(latencies.len() * 99 / 100).copied().unwrap_or_default()
}

/// Runs `abuse` (blocking) while a good client appends; checks the good client never failed,
/// the node is alive and its memory grew by less than `rss_growth_kib`.
async fn under_abuse(
    node: &Node,
    what: &str,
    rss_growth_kib: u64,
    abuse: impl FnOnce() + Send + 'static,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let baseline = good_client(node, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (base_latencies, base_failures) = baseline.await.unwrap();
    assert!(base_failures.is_empty(), "{base_failures:?}");
    let rss_before = node.rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let during = good_client(node, Arc::clone(&stop));
    tokio::task::spawn_blocking(abuse).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (latencies, failures) = during.await.unwrap();
    let rss_after = node.rss_kib();
    assert!(failures.is_empty(), "{what}: the well-behaved client failed: {failures:?}");
    assert!(!latencies.is_empty(), "{what}: the well-behaved client was answered");
    assert!(
        rss_after < rss_before + rss_growth_kib,
        "{what}: memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    eprintln!(
        "{what}: well-behaved p99 {:?} during abuse vs {:?} baseline ({} vs {} calls); RSS {rss_before} → {rss_after} KiB",
        p99(latencies.clone()),
        p99(base_latencies.clone()),
        latencies.len(),
        base_latencies.len()
    );
    // And the node still answers a fresh connection.
    let client = converge_client::Client::connect(node.url()).await.unwrap();
    client.tree_head("good").await.unwrap();
}

/// Raw HTTP/2 frames, for clients that do not play by the rules.
mod frames {
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    pub fn settings() -> Vec<u8> {
        frame(4, 0, 0, &[])
    }

    /// HPACK: a literal header field without indexing, new name, no Huffman.
    fn header(out: &mut Vec<u8>, name: &str, value: &str) {
        out.push(0);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }

    pub fn request_headers(stream: u32, path: &str) -> Vec<u8> {
        let mut block = Vec::new();
        for (name, value) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "127.0.0.1"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ] {
            header(&mut block, name, value);
        }
        frame(1, 0x4, stream, &block)
    }

    /// A gRPC message carrying `context_id = name` (field 1) as its whole request.
    pub fn request_body(stream: u32, name: &str) -> Vec<u8> {
        let mut message = vec![0x0a, name.len() as u8];
        message.extend_from_slice(name.as_bytes());
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(&message);
        frame(0, 0x1, stream, &body)
    }

    pub fn reset(stream: u32) -> Vec<u8> {
        frame(3, 0, stream, &8u32.to_be_bytes())
    }
}

/// Reads frames until the connection closes or `limit` passes; counts `RST_STREAM` frames and
/// whether a GOAWAY came.
fn drain(stream: &mut TcpStream, limit: Duration) -> (usize, bool) {
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + limit;
    let (mut resets, mut goaway) = (0, false);
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            match buf[3] {
                3 => resets += 1,
                7 => goaway = true,
                _ => {}
            }
            buf.drain(..9 + len);
        }
    }
    (resets, goaway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_streams_than_allowed_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let addr = node.grpc;
    under_abuse(
        &node,
        "1,500 concurrent streams on one connection (limit 1,024)",
        256 * 1024,
        move || {
            let mut tcp = TcpStream::connect(addr).unwrap();
            tcp.write_all(frames::PREFACE).unwrap();
            tcp.write_all(&frames::settings()).unwrap();
            let mut out = Vec::new();
            for i in 0..1500u32 {
                let id = 2 * i + 1;
                out.extend(frames::request_headers(
                    id,
                    "/converge.context.v1.ContextService/Watch",
                ));
                out.extend(frames::request_body(id, "abused"));
            }
            let _ = tcp.write_all(&out);
            let (resets, goaway) = drain(&mut tcp, Duration::from_secs(5));
            assert!(
                resets > 0 || goaway,
                "excess streams get RST_STREAM or the connection a GOAWAY"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_reset_streams_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let addr = node.grpc;
    under_abuse(
        &node,
        "20,000 streams opened and reset at once (rapid reset)",
        128 * 1024,
        move || {
            let mut tcp = TcpStream::connect(addr).unwrap();
            tcp.write_all(frames::PREFACE).unwrap();
            tcp.write_all(&frames::settings()).unwrap();
            let mut out = Vec::new();
            for i in 0..20_000u32 {
                let id = 2 * i + 1;
                out.extend(frames::request_headers(id, "/converge.context.v1.ContextService/Get"));
                out.extend(frames::reset(id));
            }
            let _ = tcp.write_all(&out);
            let (_, goaway) = drain(&mut tcp, Duration::from_secs(5));
            assert!(goaway, "the server answers a reset flood with GOAWAY");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_do_not_starve_others() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let addr = node.grpc;
    under_abuse(&node, "3,000 idle connections", 256 * 1024, move || {
        let mut idle = Vec::new();
        for i in 0..3000 {
            let mut tcp = TcpStream::connect(addr).unwrap();
            if i % 2 == 0 {
                // Half complete the HTTP/2 preface and then say nothing more.
                let _ = tcp.write_all(frames::PREFACE);
                let _ = tcp.write_all(&frames::settings());
            }
            idle.push(tcp);
        }
        std::thread::sleep(Duration::from_secs(1));
        drop(idle);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_one_byte_over_each_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node =
        Node::start(dir.path(), &["--payload-bytes-max", "2048", "--response-bytes-max", "65536"]);
    let client = converge_client::Client::connect(node.url()).await.unwrap();
    // The payload limit.
    client.append(AppendRequest::new("c", "k", vec![0u8; 2048])).await.unwrap();
    assert!(matches!(
        client.append(AppendRequest::new("c", "k", vec![0u8; 2049])).await,
        Err(LedgerError::ResourceExhausted(_))
    ));
    // The message limit: the largest request is the response limit plus the envelope.
    let decode_max = 65536 + converge_server::limits::ENVELOPE_BYTES;
    let load = |len: usize| LoadRequest {
        load_id: None,
        context_id: "x".into(),
        snapshot: Bytes::from(vec![0u8; len]),
        fail_if_exists: false,
    };
    // context_id field (3 bytes) + snapshot tag (1) + its length varint (3) + the bytes.
    let fits = decode_max - 3 - 1 - 3;
    match client.load(load(fits)).await {
        Err(LedgerError::InvalidArgument(m)) => assert!(m.contains("invalid snapshot"), "{m}"),
        other => panic!("a message at the limit reaches the ledger: {other:?}"),
    }
    match client.load(load(fits + 1)).await {
        Err(
            err @ (LedgerError::ResourceExhausted(_)
            | LedgerError::OutOfRange(_)
            | LedgerError::Internal(_)),
        ) => {
            assert!(
                err.message().contains("message length too large")
                    || err.message().contains("limit"),
                "{err}"
            );
        }
        other => panic!("a message one byte over the limit is refused: {other:?}"),
    }
    // The header list limit: one byte over 64 KiB of headers closes the stream, not the node.
    let mut raw = converge_proto::v1::integrity_service_client::IntegrityServiceClient::new(
        tonic::transport::Endpoint::from_shared(node.url()).unwrap().connect().await.unwrap(),
    );
    let mut request =
        tonic::Request::new(converge_proto::v1::TreeHeadRequest { context_id: "c".into() });
    let big = "x".repeat(65 * 1024);
    request.metadata_mut().insert("x-padding", big.parse().unwrap());
    assert!(raw.get_tree_head(request).await.is_err(), "an oversized header list is refused");
    client.tree_head("c").await.expect("the node still answers");
}
