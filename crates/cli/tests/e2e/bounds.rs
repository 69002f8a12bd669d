//! CONTRACT §0.6 against the real binary, measured from outside: what clients name and send
//! does not grow the node. `BOUNDS_IDS` (default 20,000) sets how many distinct ids are
//! touched; the closing note of the storage issue reports a run with 1,000,000.

use std::time::Instant;

use bytes::Bytes;
use converge_proto::v1::context_service_client::ContextServiceClient;
use converge_proto::v1::{GetRequest, WatchRequest};
use tonic::client::Grpc;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

use crate::node::Node;

fn ids() -> usize {
    std::env::var("BOUNDS_IDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

/// A 900-byte id, distinct for each `i` (the report used ids of that size).
fn id(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:08}-{}", "x".repeat(880))
}

/// Open files of a process, from `/proc`.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_and_gets_of_distinct_unknown_contexts_hold_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let channel =
        tonic::transport::Endpoint::from_shared(node.url()).unwrap().connect().await.unwrap();
    let client = ContextServiceClient::new(channel);
    // Warm up the node's allocator and runtime first, then measure growth from there.
    touch(&client, "warm", 2_000).await;
    let (rss_before, files_before) = (node.rss_kib(), open_files(node.pid()));
    let started = Instant::now();
    let n = ids();
    touch(&client, "id", n).await;
    let (rss_after, files_after) = (node.rss_kib(), open_files(node.pid()));
    println!(
        "{n} watches and {n} gets of distinct 900-byte ids in {:.1}s: RSS {rss_before} -> {rss_after} KiB, open files {files_before} -> {files_after}",
        started.elapsed().as_secs_f64()
    );
    // The report: 20,000 watches took the node from 10 MB to 69 MB, for good.
    assert!(rss_after < rss_before + 16 * 1024, "RSS grew from {rss_before} to {rss_after} KiB");
    assert!(rss_after < 256 * 1024, "RSS {rss_after} KiB");
    assert!(files_after <= files_before + 8, "open files {files_before} -> {files_after}");
    // Cancelled watches end on the node when their resets arrive; then nothing is held.
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let contexts = gauge(&node, "converge_contexts_loaded");
        if contexts == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{contexts} contexts still held in memory");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn gauge(node: &Node, name: &str) -> f64 {
    let metrics = node.http_get("/metrics").1;
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the node reports {name}"))
}

/// Opens a watch of each of `n` distinct ids and cancels it at once, and gets each of them,
/// sixteen at a time.
async fn touch(client: &ContextServiceClient<Channel>, prefix: &str, n: usize) {
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let mut client = client.clone();
            let prefix = prefix.to_string();
            tokio::spawn(async move {
                for i in (t..n).step_by(16) {
                    let watch = WatchRequest {
                        context_id: id(&prefix, i),
                        key: String::new(),
                        from_sequence: 0,
                    };
                    let stream = client.watch(watch).await.expect("watch opens");
                    drop(stream);
                    let get = GetRequest {
                        context_id: id(&prefix, i),
                        key: String::new(),
                        after_sequence: 0,
                        limit: 0,
                        before_sequence: 0,
                        newest_first: false,
                    };
                    let resp = client.get(get).await.expect("get answers").into_inner();
                    assert_eq!(resp.latest_sequence, 0);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// A request whose `context_id` is not UTF-8 (sent as raw bytes, as a client in a language
/// that does not check would), or that does not decode at all: `INVALID_ARGUMENT` naming the
/// field, not `INTERNAL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_requests_are_invalid_argument() {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawAppend {
        #[prost(bytes = "bytes", tag = "1")]
        context_id: Bytes,
        #[prost(bytes = "bytes", tag = "2")]
        key: Bytes,
        #[prost(bytes = "bytes", tag = "3")]
        payload: Bytes,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Anything {}
    /// Field 1 as a varint where a string belongs: not decodable as any request.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Wrong {
        #[prost(uint64, tag = "1")]
        context_id: u64,
    }

    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let channel =
        tonic::transport::Endpoint::from_shared(node.url()).unwrap().connect().await.unwrap();
    let cases = [
        (
            "context_id",
            RawAppend {
                context_id: Bytes::from_static(b"\xff\xfe"),
                key: "k".into(),
                payload: "p".into(),
            },
        ),
        (
            "key",
            RawAppend {
                context_id: "ctx".into(),
                key: Bytes::from_static(b"k\xc3"),
                payload: "p".into(),
            },
        ),
    ];
    for (field, request) in cases {
        let mut grpc = Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/converge.context.v1.ContextService/Append",
        );
        let status = grpc
            .unary(tonic::Request::new(request), path, ProstCodec::<RawAppend, Anything>::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
    // Bytes that are not a protobuf message at all, to every RPC.
    for rpc in ["Append", "Get", "Snapshot", "Load", "Watch"] {
        let mut grpc = Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::try_from(format!(
            "/converge.context.v1.ContextService/{rpc}"
        ))
        .unwrap();
        let result = if rpc == "Watch" {
            grpc.server_streaming(
                tonic::Request::new(Wrong { context_id: 7 }),
                path,
                ProstCodec::<Wrong, Anything>::default(),
            )
            .await
            .map(|_| ())
        } else {
            grpc.unary(
                tonic::Request::new(Wrong { context_id: 7 }),
                path,
                ProstCodec::<Wrong, Anything>::default(),
            )
            .await
            .map(|_| ())
        };
        let status = result.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{rpc}: {status:?}");
    }
    assert!(node.http_get("/healthz").0 == 200, "the node is still up");
}
