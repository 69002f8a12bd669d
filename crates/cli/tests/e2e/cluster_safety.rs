//! CONTRACT §5's safety rules against real nodes: what an operator or a hostile client does
//! must never make replicas differ, lose what was acknowledged, or pass unnoticed. Each test
//! is one of the actions that once did (issue: "A cluster nothing can make diverge").

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use converge_ledger::{
    AppendRequest, GetRequest, Ledger, LedgerApi as _, LedgerConfig, LedgerError,
};
use converge_proto::v1;
use converge_proto::v1::context_service_client::ContextServiceClient;
use converge_proto::v1::context_service_server::{ContextService, ContextServiceServer};
use converge_server::metrics::Metrics;
use converge_server::service::{LedgerService, WatchEvents};
use tonic::{Request, Response, Status};

use crate::cluster::{SHARDS, bootstrap, join, leader_of, trio, trio_with, wait_members};
use crate::node::{BIN, Node, refused_start};

/// Waits until every node holds `context` at `size` entries with one tree head.
async fn same_everywhere(nodes: &[Node], context: &str, size: u64) {
    let started = Instant::now();
    loop {
        let mut heads = Vec::new();
        for node in nodes {
            heads.push(node.client().await.tree_head(context).await.unwrap());
        }
        if heads.iter().all(|h| h.tree_size == size) && heads.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{context}: the nodes do not agree on {size} entries: {heads:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `node` has logged a line containing `text`.
async fn logged(node: &Node, text: &str) {
    let started = Instant::now();
    while !node.log.lock().unwrap().iter().any(|line| line.contains(text)) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} never logged {text:?}",
            node.url()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a client subcommand of the binary against `node`; its stdout.
fn command(node: &Node, args: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .args(args)
        .args(["--server", &node.url()])
        .output()
        .expect("run converge-ledger");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_limits_decide_whatever_a_nodes_own_flags_say() {
    let dir = tempfile::tempdir().unwrap();
    let small = ["--payload-bytes-max", "1048576"];
    let nodes = trio_with(dir.path(), [&[], &[], &small]).await;
    logged(&nodes[2], "differ from the cluster's limits").await;
    // 2 MiB, under the cluster's 4 MiB (the bootstrapping node's): accepted wherever it is
    // sent, the node whose own flag says 1 MiB included, and held alike by all three.
    let big = vec![7u8; 2 << 20];
    for (i, node) in nodes.iter().enumerate() {
        let context = format!("big-{i}");
        node.client()
            .await
            .append(AppendRequest::new(context.as_str(), "k", big.clone()))
            .await
            .unwrap();
        node.client()
            .await
            .append(AppendRequest::new(context.as_str(), "k", "small"))
            .await
            .unwrap();
    }
    for i in 0..3 {
        same_everywhere(&nodes, &format!("big-{i}"), 2).await;
    }
    let limits = nodes[2].client().await.cluster_status().await.unwrap().limits.unwrap();
    assert_eq!((limits.payload_bytes_max, limits.load_bytes_max), (4 << 20, 64 << 20));

    // Changed through the log by an admin command: 1 MiB on every node from then on.
    command(&nodes[1], &["cluster", "limits", "--payload-bytes-max", "1MiB"]);
    for node in &nodes {
        let started = Instant::now();
        loop {
            let status = node.client().await.cluster_status().await.unwrap();
            if status.limits.unwrap().payload_bytes_max == 1 << 20 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the new limits never applied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let json: serde_json::Value =
        serde_json::from_str(&command(&nodes[0], &["cluster", "status", "--json"])).unwrap();
    assert_eq!(json["limits"]["payload_bytes_max"], 1 << 20);
    for (i, node) in nodes.iter().enumerate() {
        let refused = node
            .client()
            .await
            .append(AppendRequest::new(format!("big-{i}"), "k", big.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, LedgerError::ResourceExhausted(m) if m.contains("cluster's limit is 1048576")),
            "{refused:?}"
        );
    }
    for i in 0..3 {
        same_everywhere(&nodes, &format!("big-{i}"), 2).await;
    }
}

/// Sends `node` 300 appends the ledger refuses (an empty key, a control character, a Lamport
/// clock past 2^62) and a load that is not a snapshot; each must be `INVALID_ARGUMENT`.
async fn send_refused_requests(node: &Node, context: &str) {
    let client = node.client().await;
    for i in 0..300 {
        let request = match i % 3 {
            0 => AppendRequest::new(context, "", "an empty key"),
            1 => AppendRequest::new(context, "bell\u{7}", "a control character"),
            _ => AppendRequest {
                received_lamport_clock: Some(1 << 63),
                ..AppendRequest::new(context, "k", "a clock past 2^62")
            },
        };
        let refused = client.append(request).await.unwrap_err();
        assert!(matches!(refused, LedgerError::InvalidArgument(_)), "{i}: {refused:?}");
    }
    let load = converge_ledger::LoadRequest {
        load_id: None,
        context_id: context.into(),
        snapshot: bytes::Bytes::from_static(b"not a snapshot"),
        fail_if_exists: false,
    };
    assert!(matches!(client.load(load).await, Err(LedgerError::InvalidArgument(_))));
}

/// Each shard's (term, committed index) on `node`, once nothing has changed for a while (a
/// shard handed over to its preferred leader adds an entry of its own).
async fn settled(node: &Node) -> Vec<(u64, u64)> {
    let mut last = Vec::new();
    let mut quiet_since = Instant::now();
    let started = Instant::now();
    loop {
        let status = node.client().await.cluster_status().await.unwrap();
        let now: Vec<(u64, u64)> = status.shards.iter().map(|s| (s.term, s.committed)).collect();
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        } else if quiet_since.elapsed() > Duration::from_secs(5) {
            return last;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the cluster never settled");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_ledger_refuses_never_enter_the_replicated_log() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = trio(dir.path()).await;
    let context = "refused";
    // A leader change in the middle adds an entry of its own and says nothing about the
    // requests: the measure is taken again then (a new term in some shard).
    for attempt in 1..=3 {
        let follower = &nodes[(leader_of(&nodes, context).await + 1) % 3];
        let before = settled(&nodes[0]).await;
        send_refused_requests(follower, context).await;
        let after = settled(&nodes[0]).await;
        let terms = |heads: &[(u64, u64)]| heads.iter().map(|h| h.0).collect::<Vec<_>>();
        if terms(&before) != terms(&after) && attempt < 3 {
            continue;
        }
        assert_eq!(
            before, after,
            "refused requests went through consensus: (term, committed) per shard"
        );
        break;
    }
    assert_eq!(nodes[0].client().await.tree_head(context).await.unwrap().tree_size, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_contexts_of_its_own_cannot_join_and_buffered_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (first_dir, alone_dir) = (dir.path().join("n1"), dir.path().join("n2"));
    let stderr = refused_start(&first_dir, &["--bootstrap", "--durability", "buffered"]);
    assert!(stderr.contains("a cluster node runs --durability fsync"), "{stderr}");
    let first = bootstrap(&first_dir, &[]).await;

    let mut alone = Node::start(&alone_dir, &[]);
    alone.client().await.append(AppendRequest::new("mine", "k", "only here")).await.unwrap();
    assert!(alone.terminate().success());
    let seed = first.grpc.to_string();
    let stderr = refused_start(&alone_dir, &["--join", &seed]);
    assert!(stderr.contains("holds 1 contexts") && stderr.contains("mine"), "{stderr}");
    let status = first.client().await.cluster_status().await.unwrap();
    assert_eq!(status.nodes.len(), 1, "the refused node was never added");

    // A cluster node's directory refuses buffered on a restart without cluster flags, too.
    drop(first);
    let stderr = refused_start(&first_dir, &["--durability", "buffered"]);
    assert!(stderr.contains("a cluster node runs --durability fsync"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_one_cluster_cannot_join_another() {
    let dir = tempfile::tempdir().unwrap();
    let first = bootstrap(&dir.path().join("a1"), &[]).await;
    let mut member = join(&dir.path().join("a2"), &first, &[]);
    wait_members(&first, 2).await;
    member.client().await.append(AppendRequest::new("of-a", "k", "v")).await.unwrap();
    let other = bootstrap(&dir.path().join("b1"), &[]).await;
    let id_of = |node: &Node| {
        let json: serde_json::Value =
            serde_json::from_str(&command(node, &["cluster", "status", "--json"])).unwrap();
        json["cluster_id"].as_str().unwrap().to_string()
    };
    let (a, b) = (id_of(&first), id_of(&other));
    assert_eq!(a.len(), 32, "{a}");
    assert_ne!(a, b, "two bootstraps make two clusters");
    assert_eq!(id_of(&member), a, "a member reports its cluster's id");

    let address = member.grpc.to_string();
    assert!(member.terminate().success());
    let stderr = refused_start(&dir.path().join("a2"), &["--join", &other.grpc.to_string()]);
    assert!(stderr.contains(&format!("belongs to cluster {a}")) && stderr.contains(&b), "{stderr}");
    assert_eq!(other.client().await.cluster_status().await.unwrap().nodes.len(), 1);
    // With its own cluster's seed it restarts as the member it is.
    let seed = first.grpc.to_string();
    let member = Node::start_at(&dir.path().join("a2"), &address, &["--join", &seed]);
    wait_members(&member, 2).await;
    assert_eq!(member.client().await.tree_head("of-a").await.unwrap().tree_size, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_ends_its_watches_and_stays_removed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = trio(dir.path()).await;
    nodes[0].client().await.append(AppendRequest::new("watched", "k", "one")).await.unwrap();
    same_everywhere(&nodes, "watched", 1).await;
    let channel =
        tonic::transport::Endpoint::from_shared(nodes[2].url()).unwrap().connect().await.unwrap();
    let request =
        v1::WatchRequest { context_id: "watched".into(), key: String::new(), from_sequence: 0 };
    let mut watch = ContextServiceClient::new(channel).watch(request).await.unwrap().into_inner();
    assert!(watch.message().await.unwrap().is_some(), "the watch delivers the entry");

    let third = nodes[2].client().await.cluster_status().await.unwrap().node;
    command(&nodes[0], &["cluster", "remove", &format!("{third:016x}")]);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the watch on the removed node ended");
    assert_eq!(ended.map(|s| s.code()), Some(tonic::Code::Unavailable));

    let address = nodes[2].grpc.to_string();
    assert!(nodes[2].terminate().success());
    nodes[2] = Node::start_at(&dir.path().join("n3"), &address, &[]);
    let refused = nodes[2].client().await.get(GetRequest::all("watched")).await.unwrap_err();
    assert!(
        matches!(&refused, LedgerError::FailedPrecondition(m) if m.contains("not a member")),
        "{refused:?}"
    );
    assert_eq!(nodes[2].http_get("/healthz").0, 503);
    // The two that remain still take writes.
    nodes[0].client().await.append(AppendRequest::new("watched", "k", "two")).await.unwrap();
}

/// Where each record of a Raft log file starts (records: crc, length, body).
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let (mut at, mut offsets) = (0, Vec::new());
    while at + 8 <= bytes.len() {
        offsets.push(at);
        at += 8 + u32::from_be_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_removed_while_it_was_down_learns_it_when_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = trio(dir.path()).await;
    let third = nodes[2].client().await.cluster_status().await.unwrap().node;
    let address = nodes[2].grpc.to_string();
    assert!(nodes[2].terminate().success());
    command(&nodes[0], &["cluster", "remove", &format!("{third:016x}")]);
    let back = Node::start_at(&dir.path().join("n3"), &address, &[]);
    let not_a_member = |result: Result<_, LedgerError>| matches!(result, Err(LedgerError::FailedPrecondition(m)) if m.contains("not a member"));
    let started = Instant::now();
    loop {
        let append = back.client().await.append(AppendRequest::new("after", "k", "v")).await;
        if not_a_member(append) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the removed node never learned it");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    logged(&back, "it was removed while it was down").await;
    // The two that remain go on, undisturbed by its elections; a restart keeps it removed.
    nodes[0].client().await.append(AppendRequest::new("after", "k", "v")).await.unwrap();
    let status = nodes[1].client().await.cluster_status().await.unwrap();
    assert_eq!(status.nodes.len(), 2, "{status:?}");
    drop(back);
    let again = Node::start_at(&dir.path().join("n3"), &address, &[]);
    let append = again.client().await.append(AppendRequest::new("after", "k", "v")).await;
    assert!(not_a_member(append));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_raft_state_is_damaged_or_missing_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = trio(dir.path()).await;
    let context = "damaged";
    let client = nodes[0].client().await;
    for i in 0..40 {
        client.append(AppendRequest::new(context, "k", format!("entry {i}"))).await.unwrap();
    }
    // The Raft log's fsync mark moves at most once a second: later writes carry it past
    // the entries above.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 40..45 {
        client.append(AppendRequest::new(context, "k", format!("entry {i}"))).await.unwrap();
    }
    same_everywhere(&nodes, context, 45).await;
    let victim = (leader_of(&nodes, context).await + 1) % 3;
    let victim_dir = dir.path().join(format!("n{}", victim + 1));
    nodes[victim].kill9();

    // Eight bytes flipped inside an acknowledged record of the node's Raft log.
    let log = victim_dir.join("raft").join("log").join("segment-0000000001");
    let mut bytes = std::fs::read(&log).unwrap();
    let offsets = record_offsets(&bytes);
    assert!(offsets.len() > 20, "the node's log holds the entries");
    let at = offsets[offsets.len() / 2];
    for byte in &mut bytes[at + 12..at + 20] {
        *byte ^= 0xA5;
    }
    std::fs::write(&log, &bytes).unwrap();
    let stderr = refused_start(&victim_dir, &[]);
    assert!(
        stderr.contains(&log.display().to_string()) && stderr.contains(&format!("byte {at}")),
        "the refusal names the file and the byte: {stderr}"
    );

    // A node whose Raft state is gone but whose identity remains is refused as well.
    std::fs::remove_dir_all(victim_dir.join("raft").join("log")).unwrap();
    let stderr = refused_start(&victim_dir, &[]);
    assert!(stderr.contains("is missing while this node's identity remains"), "{stderr}");

    // The others hold every acknowledged entry and take writes.
    let alive: Vec<&Node> = (0..3).filter(|i| *i != victim).map(|i| &nodes[i]).collect();
    let got = alive[0].client().await.get(GetRequest::all(context)).await.unwrap();
    assert_eq!(got.entries.len(), 45);
    alive[1].client().await.append(AppendRequest::new(context, "k", "after")).await.unwrap();
}

/// Sends `signal` to the process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_majority_says_not_serving_and_refuses_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = trio(dir.path()).await;
    // Once leaders have spread and settled, a context whose shard the first node leads.
    settled(&nodes[0]).await;
    let status = nodes[0].client().await.cluster_status().await.unwrap();
    let led: Vec<u32> =
        status.shards.iter().filter(|s| s.role == "leader").map(|s| s.shard).collect();
    let shards = SHARDS.parse().unwrap();
    let context = (0..1000)
        .map(|i| format!("isolated-{i}"))
        .find(|c| led.contains(&converge_cluster::shard_of(c, shards)))
        .unwrap_or_else(|| panic!("the first node leads no shard: {status:?}"));
    let client = nodes[0].client().await;
    client.append(AppendRequest::new(context.as_str(), "k", "before")).await.unwrap();
    let frozen = [nodes[1].pid(), nodes[2].pid()];
    for pid in frozen {
        signal(pid, "STOP");
    }
    let started = Instant::now();
    while nodes[0].http_get("/healthz").0 == 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the leader kept saying SERVING without its majority"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asked = Instant::now();
    let refused = client.append(AppendRequest::new(context.as_str(), "k", "alone")).await;
    let took = asked.elapsed();
    for pid in frozen {
        signal(pid, "CONT");
    }
    assert!(
        matches!(&refused, Err(LedgerError::Unavailable(m)) if m.contains("1 of 3 voters reachable")),
        "{refused:?} after {took:?}; the node's log:\n{}",
        nodes[0].log.lock().unwrap().join("\n")
    );
    assert!(took < Duration::from_secs(3), "refused at once, not after the commit wait: {took:?}");
    // Once the others are back, the shard has a leader with a majority again.
    let started = Instant::now();
    while nodes[0].http_get("/healthz").0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(30), "never SERVING again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.append(AppendRequest::new(context.as_str(), "k", "after")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_interrupted_before_it_finished_is_finished_by_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let first_dir = dir.path().join("n1");
    let mut alone = Node::start(&first_dir, &[]);
    for context in ["a", "b", "c"] {
        alone.client().await.append(AppendRequest::new(context, "k", context)).await.unwrap();
    }
    assert!(alone.terminate().success());
    // What a crash just after `--bootstrap` began leaves: its mark and the cluster's shape.
    std::fs::write(first_dir.join("bootstrap-pending"), "").unwrap();
    std::fs::write(first_dir.join("cluster"), format!("shards {SHARDS}\nvoters 3\n")).unwrap();
    let first = Node::start(&first_dir, &[]);
    wait_members(&first, 1).await;
    assert!(!first_dir.join("bootstrap-pending").exists(), "the bootstrap finished");
    // A node that joins gets every context: they were brought into the log.
    let second = join(&dir.path().join("n2"), &first, &[]);
    wait_members(&second, 2).await;
    let nodes = [first, second];
    for context in ["a", "b", "c"] {
        same_everywhere(&nodes, context, 1).await;
    }
}

/// A node that records the `append_id` of every append it is sent, then answers as the
/// service it wraps (marked as a cluster node's, or not). It has no `AppendStream`, so the
/// client sends every append as its own call.
#[derive(Clone)]
struct Recorder(LedgerService, Arc<Mutex<Vec<String>>>);

#[tonic::async_trait]
impl ContextService for Recorder {
    async fn append(
        &self,
        r: Request<v1::AppendRequest>,
    ) -> Result<Response<v1::AppendResponse>, Status> {
        self.1.lock().unwrap().push(r.get_ref().append_id.clone());
        self.0.append(r).await
    }
    async fn get(&self, r: Request<v1::GetRequest>) -> Result<Response<v1::GetResponse>, Status> {
        self.0.get(r).await
    }
    async fn list_contexts(
        &self,
        r: Request<v1::ListContextsRequest>,
    ) -> Result<Response<v1::ListContextsResponse>, Status> {
        self.0.list_contexts(r).await
    }
    async fn snapshot(
        &self,
        r: Request<v1::SnapshotRequest>,
    ) -> Result<Response<v1::SnapshotResponse>, Status> {
        self.0.snapshot(r).await
    }
    async fn load(
        &self,
        r: Request<v1::LoadRequest>,
    ) -> Result<Response<v1::LoadResponse>, Status> {
        self.1.lock().unwrap().push(r.get_ref().load_id.clone());
        self.0.load(r).await
    }
    type WatchStream = WatchEvents;
    async fn watch(&self, r: Request<v1::WatchRequest>) -> Result<Response<WatchEvents>, Status> {
        self.0.watch(r).await
    }
    type AppendStreamStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<v1::AppendStreamResponse, Status>> + Send>,
    >;
    async fn append_stream(
        &self,
        _: Request<tonic::Streaming<v1::AppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        Err(Status::unimplemented("unary only"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_given_one_node_of_a_cluster_sends_every_append_and_load_with_an_id() {
    for cluster in [true, false] {
        let ledger = Ledger::open(LedgerConfig::memory()).unwrap();
        let mut service = LedgerService::new(ledger, Arc::new(Metrics::default()));
        if cluster {
            service = service.in_cluster();
        }
        let sent = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder(service, Arc::clone(&sent));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ContextServiceServer::new(recorder))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let client = converge_client::Client::connect(url).await.unwrap();
        for i in 0..5 {
            client.append(AppendRequest::new("c", "k", format!("{i}"))).await.unwrap();
        }
        let blob = client.snapshot("c").await.unwrap().snapshot;
        let load = converge_ledger::LoadRequest {
            context_id: "copy".into(),
            snapshot: blob,
            fail_if_exists: true,
            load_id: None,
        };
        assert_eq!(client.load(load).await.unwrap().entries_restored, 5);
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 6);
        if cluster {
            assert!(sent.iter().all(|id| !id.is_empty()), "every write carries one: {sent:?}");
        } else {
            // Until the node first answered, the client could not know; then it sends none.
            assert!(sent[1..].iter().all(String::is_empty), "a lone node gets none: {sent:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_sent_again_to_another_node_is_answered_as_the_first_was() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = trio(dir.path()).await;
    let source = Ledger::open(LedgerConfig::memory()).unwrap();
    for i in 0..40 {
        source.append(AppendRequest::new("agent-run", "step", format!("{i}"))).await.unwrap();
    }
    let blob = source.snapshot("agent-run").await.unwrap().snapshot;
    let load = |fail_if_exists| converge_ledger::LoadRequest {
        context_id: "restored".into(),
        snapshot: blob.clone(),
        fail_if_exists,
        load_id: Some("restore-7".into()),
    };
    // The first attempt through one node, its retry (its answer lost) through each other.
    let first = nodes[0].client().await.load(load(true)).await.unwrap();
    assert_eq!((first.entries_restored, first.latest_sequence), (40, 40));
    for node in &nodes[1..] {
        assert_eq!(node.client().await.load(load(true)).await.unwrap(), first);
    }
    same_everywhere(&nodes, "restored", 40).await;
    // The id given with another snapshot is refused, on every node alike.
    source.append(AppendRequest::new("agent-run", "step", "40")).await.unwrap();
    let longer = source.snapshot("agent-run").await.unwrap().snapshot;
    for node in &nodes {
        let other = converge_ledger::LoadRequest { snapshot: longer.clone(), ..load(false) };
        let refused = node.client().await.load(other).await.unwrap_err();
        assert!(
            matches!(&refused, LedgerError::AlreadyExists(m) if m.contains("restore-7")),
            "{refused:?}"
        );
    }
    same_everywhere(&nodes, "restored", 40).await;
}
