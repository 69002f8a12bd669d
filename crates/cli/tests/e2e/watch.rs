//! Watch over gRPC: 200 concurrent watchers, and a stalled watcher while 10^5 entries are
//! appended.

use std::time::Duration;

use converge_api::{AppendRequest, GetRequest, LedgerApi, WatchRequest};
use converge_client::Client;
use futures_util::StreamExt as _;
use tokio::time::timeout;

use crate::node::Node;

async fn write(clients: &[Client], context: &str, n: usize, in_flight: usize, payload: usize) {
    futures_util::stream::iter(0..n)
        .for_each_concurrent(in_flight, |i| {
            let client = clients[i % clients.len()].clone();
            let context = context.to_string();
            async move {
                client
                    .append(AppendRequest::new(context, "k", vec![(i % 251) as u8; payload]))
                    .await
                    .unwrap();
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_watchers_each_see_every_entry_once() {
    const N: u64 = 500;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let client = node.client().await;
    // The server encodes each entry once for all of them; every one must still get each
    // entry's own fields. Half start at the beginning, half part-way (from the same window).
    let mut watchers = Vec::new();
    for w in 0..200 {
        let from_sequence = if w % 2 == 0 { 0 } else { 100 };
        let mut stream = client
            .watch(WatchRequest { context_id: "hot".into(), key: None, from_sequence })
            .await
            .unwrap();
        watchers.push(tokio::spawn(async move {
            let mut entries = Vec::new();
            while (entries.len() as u64) < N - from_sequence {
                let entry = timeout(Duration::from_secs(120), stream.next())
                    .await
                    .expect("delivered in time")
                    .unwrap()
                    .unwrap();
                entries.push(entry);
            }
            (from_sequence, entries)
        }));
    }
    write(std::slice::from_ref(&client), "hot", N as usize, 16, 256).await;
    let stored = client
        .get(GetRequest {
            context_id: "hot".into(),
            key: None,
            after_sequence: 0,
            limit: 0,
            before_sequence: 0,
            newest_first: false,
        })
        .await
        .unwrap()
        .entries;
    assert_eq!(stored.len() as u64, N);
    for w in watchers {
        let (from, seen) = w.await.unwrap();
        let expected = &stored[from as usize..];
        assert_eq!(seen.len(), expected.len());
        for (got, want) in seen.iter().zip(expected) {
            assert_eq!(**got, **want, "a watcher got entry {} as stored", want.sequence());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_while_100_000_entries_are_appended() {
    const N: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(node.client().await);
    }
    // A watcher that reads one entry and then stops reading: HTTP/2 flow control stops the
    // server's stream, and the ledger must neither wait for it nor buffer for it.
    let mut stalled = clients[0]
        .watch(WatchRequest { context_id: "busy".into(), key: None, from_sequence: 0 })
        .await
        .unwrap();
    write(&clients, "busy", 1, 1, 256).await;
    assert_eq!(stalled.next().await.unwrap().unwrap().sequence().0, 1);
    let rss_before = node.rss_kib();
    timeout(Duration::from_secs(600), write(&clients, "busy", N as usize - 1, 256, 256))
        .await
        .expect("the writer is never held up by a stalled watcher");
    let rss_after = node.rss_kib();
    assert!(
        rss_after < rss_before + 200 * 1024,
        "the server's memory stays bounded while a watcher stalls: {rss_before} KiB → {rss_after} KiB"
    );
    // The watcher resumes and gets every entry, in order, caught up from storage.
    let mut next = 2;
    while next <= N {
        let entry = timeout(Duration::from_secs(120), stalled.next())
            .await
            .expect("resumes")
            .unwrap()
            .unwrap();
        assert_eq!(entry.sequence().0, next);
        next += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_watch_resumes_after_the_node_restarts_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]);
    let grpc = node.grpc.to_string();
    let client = node.client().await;
    write(std::slice::from_ref(&client), "c", 5, 1, 64).await;
    let mut watch = client
        .watch(WatchRequest { context_id: "c".into(), key: None, from_sequence: 0 })
        .await
        .unwrap();
    for expected in 1..=5 {
        assert_eq!(watch.next().await.unwrap().unwrap().sequence().0, expected);
    }
    // The connection drops hard; the node comes back on the same address with more entries.
    node.kill9();
    let node = Node::start_at(dir.path(), &grpc, &[]);
    let writer = node.client().await;
    write(std::slice::from_ref(&writer), "c", 3, 1, 64).await;
    for expected in 6..=8 {
        let entry = timeout(Duration::from_secs(60), watch.next())
            .await
            .expect("the watch resumes")
            .unwrap()
            .unwrap();
        assert_eq!(entry.sequence().0, expected, "no gap, no duplicate across the reconnect");
    }
    // And after a clean shutdown (which ends the stream with UNAVAILABLE) too.
    let mut node = node;
    assert!(node.terminate().success());
    let node = Node::start_at(dir.path(), &grpc, &[]);
    write(&[node.client().await], "c", 1, 1, 64).await;
    let entry = timeout(Duration::from_secs(60), watch.next())
        .await
        .expect("the watch resumes")
        .unwrap()
        .unwrap();
    assert_eq!(entry.sequence().0, 9);
}
