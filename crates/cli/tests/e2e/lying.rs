//! The verifying client against a server that lies. Three real nodes hold one context: A the
//! honest history, B the same first entry and then a rewritten second one, C the same first
//! two entries and a different third (a fork of the same size). A TCP proxy in front of them
//! lets the test switch which one answers, while one verifying client keeps its pins.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use converge_client::{Client, ClientConfig};
use converge_ledger::{AppendRequest, GetRequest, LedgerApi, LedgerError, LoadRequest};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::node::Node;

/// Forwards each connection to the current upstream; switching drops the open ones.
struct Proxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(Mutex::new(upstream));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (to, conns) = (Arc::clone(&upstream), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = *to.lock().unwrap();
                conns.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        Self { addr, upstream, connections }
    }

    fn switch(&self, to: SocketAddr) {
        *self.upstream.lock().unwrap() = to;
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

/// Calls `f` until it gets past a dropped connection (the proxy just switched).
async fn call<T, F: std::future::Future<Output = Result<T, LedgerError>>>(
    f: impl Fn() -> F,
) -> Result<T, LedgerError> {
    for _ in 0..50 {
        match f().await {
            Err(LedgerError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            other => return other,
        }
    }
    f().await
}

async fn append(node: &Node, payload: &str) {
    node.client()
        .await
        .append(AppendRequest::new("ctx", "k", payload.as_bytes().to_vec()))
        .await
        .unwrap();
}

/// Copies `from`'s context into `to` (same entries, same hashes).
async fn copy(from: &Node, to: &Node) {
    let blob: Bytes = from.client().await.snapshot("ctx").await.unwrap().snapshot;
    let req = LoadRequest {
        load_id: None,
        context_id: "ctx".into(),
        snapshot: blob,
        fail_if_exists: true,
    };
    to.client().await.load(req).await.unwrap();
}

fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, LedgerError>) {
    match result {
        Err(LedgerError::Verification(m)) => {
            assert!(m.contains("rewritten or forked"), "{what}: {m}");
        }
        other => panic!("{what}: the lie was not refused: {other:?}"),
    }
}

#[tokio::test]
async fn the_verifying_client_refuses_a_rewritten_or_forked_history() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [a, b, c] = [0, 1, 2].map(|i| Node::start(dirs[i].path(), &[]));
    append(&a, "e1").await;
    copy(&a, &b).await;
    append(&a, "e2").await;
    copy(&a, &c).await;
    append(&a, "e3").await;
    for payload in ["e2 rewritten", "e3", "e4"] {
        append(&b, payload).await;
    }
    append(&c, "e3 forked").await;

    let proxy = Proxy::start(a.grpc).await;
    let client =
        Client::connect_with(ClientConfig::new(format!("http://{}", proxy.addr)).verifying())
            .await
            .unwrap();
    let whole = || GetRequest {
        context_id: "ctx".into(),
        key: None,
        after_sequence: 0,
        limit: 0,
        before_sequence: 0,
        newest_first: false,
    };
    assert_eq!(call(|| client.tree_head("ctx")).await.unwrap().tree_size, 3, "pins A at 3");
    call(|| client.get(whole())).await.unwrap();

    // B rewrote entry 2 and grew: its newer head is not consistent with the pinned one.
    proxy.switch(b.grpc);
    refused("B's tree head", call(|| client.tree_head("ctx")).await);
    refused("B's entries from the start", call(|| client.get(whole())).await);
    let newest = || GetRequest { newest_first: true, ..whole() };
    refused("B's entries newest first", call(|| client.get(newest())).await);
    refused("B's snapshot", call(|| client.snapshot("ctx")).await);
    refused("B's consistency proof", call(|| client.prove_consistency("ctx", 1, 4)).await);

    // C forked at entry 3: the same size, another root.
    proxy.switch(c.grpc);
    refused("C's tree head", call(|| client.tree_head("ctx")).await);
    refused("C's inclusion proof", call(|| client.prove_inclusion("ctx", 3, 0)).await);

    // The honest node growing is accepted, with a consistency proof, and pinned.
    proxy.switch(a.grpc);
    append(&a, "e4").await;
    append(&a, "e5").await;
    assert_eq!(call(|| client.tree_head("ctx")).await.unwrap().tree_size, 5);
    call(|| client.get(whole())).await.unwrap();
    call(|| client.get(newest())).await.unwrap();
    call(|| client.prove_inclusion("ctx", 2, 0)).await.unwrap();
    call(|| client.prove_consistency("ctx", 2, 5)).await.unwrap();
    // And now even B's first lie is one size behind the pin: still refused.
    proxy.switch(b.grpc);
    assert!(call(|| client.tree_head("ctx")).await.is_err(), "B is refused after the pin moved");
}
