//! Restarts, kill -9 under load, and SIGTERM during appends, against the real binary: nothing
//! acknowledged is ever lost, and append ids survive restarts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use converge_api::{AppendRequest, GetRequest, LedgerApi};
use converge_client::Client;
use converge_core::ContextId;
use converge_core::merkle::CompactTree;
use tokio::sync::Mutex;

use crate::node::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_id_retries_return_one_entry_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]);
    let client = node.client().await;
    let first =
        client.append(AppendRequest::new("c", "k", "p").with_append_id("req-1")).await.unwrap();
    let again =
        client.append(AppendRequest::new("c", "k", "p").with_append_id("req-1")).await.unwrap();
    assert_eq!(first, again, "the same request twice is one entry");
    assert!(node.terminate().success());

    let node = Node::start(dir.path(), &[]);
    let client = node.client().await;
    let after =
        client.append(AppendRequest::new("c", "k", "p").with_append_id("req-1")).await.unwrap();
    assert_eq!(after, first, "a retry after a restart returns the recorded entry");
    assert_eq!(client.tree_head("c").await.unwrap().tree_size, 1);
}

/// Acknowledged appends, by context and sequence, with their content hashes.
type Acked = Arc<Mutex<BTreeMap<(String, u64), converge_core::Hash>>>;

/// Appends from 64 tasks until `stop`, recording every acknowledgement.
fn load(client: &Client, stop: &Arc<AtomicBool>) -> (Acked, Vec<tokio::task::JoinHandle<()>>) {
    let acked: Acked = Arc::default();
    let tasks = (0..64)
        .map(|t| {
            let client = client.clone();
            let stop = Arc::clone(stop);
            let acked = Arc::clone(&acked);
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let context = format!("ctx-{}", t % 5);
                    let req = AppendRequest::new(
                        context.clone(),
                        "k",
                        format!("task {t} append {i}").into_bytes(),
                    );
                    match client.append(req).await {
                        Ok(entry) => {
                            acked
                                .lock()
                                .await
                                .insert((context, entry.sequence().0), entry.content_hash());
                        }
                        // The node went away mid-append: not acknowledged, so not counted.
                        Err(_) => return,
                    }
                    i += 1;
                }
            })
        })
        .collect();
    (acked, tasks)
}

async fn check_survivors(node: &Node, acked: &BTreeMap<(String, u64), converge_core::Hash>) {
    let client = node.client().await;
    let mut contexts: Vec<&String> = acked.keys().map(|(c, _)| c).collect();
    contexts.dedup();
    for context in contexts {
        let entries = client.get(GetRequest::all(context.as_str())).await.unwrap().entries;
        let id = ContextId::try_new(context.as_str()).unwrap();
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.sequence().0, i as u64 + 1, "gap-free");
            entry.verify(&id).unwrap();
        }
        for ((c, seq), hash) in acked.range((context.clone(), 0)..=(context.clone(), u64::MAX)) {
            let entry = entries
                .get(*seq as usize - 1)
                .unwrap_or_else(|| panic!("acknowledged {c}/{seq} was lost"));
            assert_eq!(&entry.content_hash(), hash, "acknowledged {c}/{seq} is byte-identical");
        }
        let hashes: Vec<_> = entries.iter().map(|e| e.content_hash()).collect();
        let head = client.tree_head(context).await.unwrap();
        assert_eq!(
            head.root_hash,
            CompactTree::from_leaves(&hashes).root(),
            "{context}: the root recomputes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_concurrent_appends_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]);
    let client = node.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, tasks) = load(&client, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.kill9();
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() > 100, "the load made progress ({} acknowledged)", acked.len());
    let node = Node::start(dir.path(), &[]);
    check_survivors(&node, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_appends_exits_0_and_keeps_every_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]);
    let client = node.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, tasks) = load(&client, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = node.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() > 100, "the load made progress ({} acknowledged)", acked.len());
    let node = Node::start(dir.path(), &[]);
    assert!(
        node.log.lock().unwrap().iter().all(|l| !l.contains("unclean")),
        "the shutdown was clean"
    );
    check_survivors(&node, &acked).await;
}
