//! CONTRACT §0.6 under a flood of large appends, against the real binary: request bodies
//! received but not yet admitted count against a budget, so no number of connections and
//! concurrent appends grows a node past its limits, alone or in a cluster whose followers
//! cannot take what it proposes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use converge_proto::v1;
use converge_proto::v1::context_service_client::ContextServiceClient;

use crate::cluster::{leader_of, trio};
use crate::cluster_safety::signal;
use crate::node::{Node, rss_kib};

/// What a flood did: appends answered OK, refused, refused because the node was busy
/// receiving (`UNAVAILABLE`, retry), and the node's peak resident memory.
struct Flooded {
    ok: usize,
    refused: usize,
    busy: usize,
    peak_rss_kib: u64,
}

/// Sends `appends` appends of `payload_bytes` each to `node` at once, spread over
/// `connections` connections, `context` chosen per append by `context_of`, while sampling the
/// node's resident memory from `/proc`.
async fn flood(
    node: &Node,
    appends: usize,
    payload_bytes: usize,
    connections: usize,
    context_of: impl Fn(usize) -> String,
) -> Flooded {
    let payload = Bytes::from(vec![0x5Au8; payload_bytes]);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel =
            tonic::transport::Endpoint::from_shared(node.url()).unwrap().connect().await.unwrap();
        clients.push(
            ContextServiceClient::new(channel)
                .max_encoding_message_size(usize::MAX)
                .max_decoding_message_size(usize::MAX),
        );
    }
    let (done, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (done, peak, pid) = (Arc::clone(&done), Arc::clone(&peak), node.pid());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let calls = (0..appends).map(|i| {
        let mut client = clients[i % connections].clone();
        let request = v1::AppendRequest {
            context_id: context_of(i),
            key: "flood".into(),
            payload: payload.clone(),
            append_id: format!("flood-{i}"),
            ..Default::default()
        };
        async move { client.append(request).await }
    });
    let started = Instant::now();
    let answers = futures_util::future::join_all(calls).await;
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    let busy = answers
        .iter()
        .filter(|a| {
            a.as_ref().is_err_and(|s| s.message().contains("more request bytes than its budget"))
        })
        .count();
    let flooded = Flooded {
        ok,
        refused: answers.len() - ok,
        busy,
        peak_rss_kib: peak.load(Ordering::Relaxed),
    };
    println!(
        "{appends} appends of {payload_bytes} bytes over {connections} connections: {} ok, {} refused ({} busy) in {:.1}s, peak RSS {} MiB",
        flooded.ok,
        flooded.refused,
        flooded.busy,
        started.elapsed().as_secs_f64(),
        flooded.peak_rss_kib / 1024
    );
    if let Some(Err(status)) = answers.iter().find(|a| a.is_err()) {
        println!("first refusal: {status}");
    }
    flooded
}

/// The bound both floods are held to: the node's budgets (256 MiB of appends received and
/// admitted) plus its flow-control windows and a fixed overhead, far below what the flood sends.
const PEAK_RSS_KIB_MAX: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_4_mib_appends_do_not_swell_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let flooded = flood(&node, 1000, 4 << 20, 32, |i| format!("flood-{}", i % 64)).await;
    // Each is taken in its turn (all 1,000 in about 18 s here), or, if it waited longer than
    // the receive budget's wait on a slower machine, refused as busy, to retry: nothing else.
    assert!(flooded.ok > 0, "appends are taken");
    assert_eq!(flooded.ok + flooded.busy, 1000, "the others are refused as busy, to retry");
    assert!(
        flooded.peak_rss_kib < PEAK_RSS_KIB_MAX,
        "peak RSS {} MiB while 4 GiB arrived",
        flooded.peak_rss_kib / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_whose_followers_are_frozen_holds_its_budget_under_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = trio(dir.path()).await;
    // Every append goes to a shard the first node leads, and neither follower takes any.
    let status = nodes[0].client().await.cluster_status().await.unwrap();
    let led: Vec<u32> =
        status.shards.iter().filter(|s| s.role == "leader").map(|s| s.shard).collect();
    let shards = crate::cluster::SHARDS.parse().unwrap();
    let context = (0..1000)
        .map(|i| format!("frozen-{i}"))
        .find(|c| led.contains(&converge_cluster::shard_of(c, shards)))
        .expect("the first node leads a shard");
    assert_eq!(leader_of(&nodes, &context).await, 0);
    let frozen = [nodes[1].pid(), nodes[2].pid()];
    for pid in frozen {
        signal(pid, "STOP");
    }
    let flooded = flood(&nodes[0], 1000, 4 << 20, 32, |_| context.clone()).await;
    for pid in frozen {
        signal(pid, "CONT");
    }
    assert_eq!(flooded.ok, 0, "nothing is acknowledged without a majority");
    assert!(
        flooded.peak_rss_kib < PEAK_RSS_KIB_MAX,
        "peak RSS {} MiB while 4 GiB arrived",
        flooded.peak_rss_kib / 1024
    );
}
