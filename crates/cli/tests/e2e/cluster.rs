//! CONTRACT §5 against real nodes on loopback: any node answers and reads its own writes,
//! `append_id`s survive a failover, no majority means `UNAVAILABLE` naming the reachable
//! voters, health waits for the join, status and remove, the `peer` role, a single node's
//! data directory becoming a cluster with its contexts, a client given several servers, and
//! appends sent to their shard's leader.
//! (Faults under load, with a checker over the history, are `cluster_faults.rs`.)

use std::path::Path;
use std::time::{Duration, Instant};

use converge_client::{Client, ClientConfig};
use converge_ledger::{
    AppendRequest, GetRequest, LedgerApi as _, LedgerError, ListContextsRequest,
};
use converge_proto::cluster::StatusRequest;
use converge_proto::cluster::peer_client::PeerClient;
use futures_util::StreamExt as _;

use crate::node::{BIN, Node};

pub const SHARDS: &str = "4";

/// Starts a node that bootstraps a cluster and waits until it leads every shard.
pub async fn bootstrap(dir: &Path, extra: &[&str]) -> Node {
    let mut args = vec!["--bootstrap", "--shards", SHARDS];
    args.extend_from_slice(extra);
    let node = Node::start(dir, &args);
    wait_members(&node, 1).await;
    node
}

/// Starts a node that joins through `seed`.
pub fn join(dir: &Path, seed: &Node, extra: &[&str]) -> Node {
    let seed = seed.grpc.to_string();
    let mut args = vec!["--join", seed.as_str()];
    args.extend_from_slice(extra);
    Node::start(dir, &args)
}

/// Three nodes: one bootstraps, two join; returns once all three are voters with leaders.
pub async fn trio(dir: &Path) -> Vec<Node> {
    trio_with(dir, [&[], &[], &[]]).await
}

/// Three nodes as [`trio`] makes them, each with its own extra flags.
pub async fn trio_with(dir: &Path, extra: [&[&str]; 3]) -> Vec<Node> {
    let first = bootstrap(&dir.join("n1"), extra[0]).await;
    let second = join(&dir.join("n2"), &first, extra[1]);
    let third = join(&dir.join("n3"), &first, extra[2]);
    let nodes = vec![first, second, third];
    for node in &nodes {
        wait_members(node, 3).await;
    }
    nodes
}

/// Waits until `node` sees `voters` voters, every shard with a leader, and says SERVING.
pub async fn wait_members(node: &Node, voters: usize) {
    let started = Instant::now();
    loop {
        if let Ok(status) = node.client().await.cluster_status().await {
            let have = status.nodes.iter().filter(|n| n.voter).count();
            let led = status.shards.iter().all(|s| s.leader.is_some());
            if have == voters && led && node.http_get("/healthz").0 == 200 {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} did not see {voters} voters with leaders in time; its log:\n{}",
            node.url(),
            node.log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The slot of the node leading `context`'s shard.
pub async fn leader_of(nodes: &[Node], context: &str) -> usize {
    let shard = converge_cluster::shard_of(context, SHARDS.parse().unwrap());
    let status = nodes[0].client().await.cluster_status().await.unwrap();
    let leader = status.shards.iter().find(|s| s.shard == shard).and_then(|s| s.leader).unwrap();
    let address = status.nodes.iter().find(|n| n.id == leader).unwrap().address.clone();
    nodes.iter().position(|n| n.grpc.to_string() == address).unwrap()
}

/// Waits until the shards' leaders are spread: the bootstrap node leads every shard at first;
/// each shard then moves to its preferred node (voters in id order, round the shards), once it
/// has been led a few seconds.
pub async fn wait_spread(nodes: &[Node]) {
    let client = nodes[0].client().await;
    let started = Instant::now();
    loop {
        let status = client.cluster_status().await.unwrap();
        let leaders: std::collections::BTreeSet<u64> =
            status.shards.iter().filter_map(|s| s.leader).collect();
        let voters: std::collections::BTreeSet<u64> =
            status.nodes.iter().filter(|n| n.voter).map(|n| n.id).collect();
        let preferred = status
            .shards
            .iter()
            .all(|s| s.leader == converge_cluster::spread::preferred(s.shard, &voters));
        if leaders.len() == nodes.len() && preferred {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "shard leaders did not spread over the nodes: {:?}",
            status.shards
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The writes the nodes forwarded to another node so far (their `/metrics`, summed).
fn forwarded(nodes: &[Node]) -> u64 {
    nodes
        .iter()
        .map(|node| {
            let (code, body) = node.http_get("/metrics");
            assert_eq!(code, 200, "{body}");
            body.lines()
                .find_map(|l| l.strip_prefix("converge_cluster_forwarded_total "))
                .unwrap_or_else(|| panic!("no forwarded counter in:\n{body}"))
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

/// `count` concurrent appends from `client`, spread over 24 contexts (every shard).
async fn appends(client: &Client, tag: &str, count: usize) {
    let sent = (0..count).map(|i| {
        let request = AppendRequest::new(format!("{tag}-{}", i % 24), "k", vec![1; 64]);
        client.append(request)
    });
    for answer in futures_util::future::join_all(sent).await {
        answer.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_given_every_node_sends_appends_to_their_shards_leader() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = trio(dir.path()).await;
    wait_spread(&nodes).await;
    // Given one node, two appends in three go to a node that does not lead their shard.
    let one = nodes[0].client().await;
    let before = forwarded(&nodes);
    appends(&one, "one", 300).await;
    let through_one = forwarded(&nodes) - before;
    assert!(through_one >= 100, "a client of one node had {through_one} of 300 forwarded");
    // Given all three, it learns the leaders (in the background, after its first append) and
    // sends each append to its shard's leader: none is forwarded while leaders stay put.
    let servers = nodes.iter().map(Node::url).collect::<Vec<_>>().join(",");
    let all = Client::connect(servers.as_str()).await.unwrap();
    appends(&all, "warm", 24).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = forwarded(&nodes);
    appends(&all, "all", 300).await;
    let through_all = forwarded(&nodes) - before;
    assert!(
        through_all <= 15,
        "a client of every node had {through_all} of 300 forwarded (one node's: {through_one})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_answers_and_shows_its_own_writes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = trio(dir.path()).await;
    for round in 0..5 {
        for (i, node) in nodes.iter().enumerate() {
            let client = node.client().await;
            let context = format!("ctx-{round}-{i}");
            let entry = client
                .append(AppendRequest::new(context.as_str(), "k", format!("from node {i}")))
                .await
                .unwrap();
            // The node that answered has applied it: a Get there shows it, right away.
            let got = client.get(GetRequest::all(context.as_str())).await.unwrap();
            assert_eq!(got.entries.last().map(|e| e.content_hash()), Some(entry.content_hash()));
        }
    }
    // Every node holds the same entries and tree heads.
    for round in 0..5 {
        for i in 0..3 {
            let context = format!("ctx-{round}-{i}");
            let mut heads = Vec::new();
            for node in &nodes {
                let client = node.client().await;
                let started = Instant::now();
                let head = loop {
                    let head = client.tree_head(&context).await.unwrap();
                    if head.tree_size == 1 || started.elapsed() > Duration::from_secs(10) {
                        break head;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                heads.push(head);
            }
            assert!(heads.windows(2).all(|w| w[0] == w[1]), "{context}: {heads:?}");
        }
    }
    // Every node lists those contexts, of every shard, in order, with the same heads.
    let mut listings = Vec::new();
    for node in &nodes {
        let client = node.verifying_client().await;
        let page = client.list_contexts(ListContextsRequest::prefix("ctx-")).await.unwrap();
        assert!(page.next_page_token.is_empty());
        listings.push(page.contexts);
    }
    let ids: Vec<&str> = listings[0].iter().map(|c| c.context_id.as_str()).collect();
    let mut expected: Vec<String> =
        (0..5).flat_map(|r| (0..3).map(move |i| format!("ctx-{r}-{i}"))).collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert!(listings.windows(2).all(|w| w[0] == w[1]), "{listings:?}");

    // AppendStream on every node (most of its appends forwarded): answered in request order,
    // each context's appends in the order sent, all applied on the answering node at once.
    for (i, node) in nodes.iter().enumerate() {
        let channel =
            tonic::transport::Endpoint::from_shared(node.url()).unwrap().connect().await.unwrap();
        let mut grpc =
            converge_proto::v1::context_service_client::ContextServiceClient::new(channel);
        let requests: Vec<_> = (0..300)
            .map(|k| converge_proto::v1::AppendRequest {
                context_id: format!("stream-{i}-{}", k % 6),
                key: "k".into(),
                payload: format!("{k}").into_bytes().into(),
                ..Default::default()
            })
            .collect();
        let sent = requests.clone();
        let mut answers =
            grpc.append_stream(futures_util::stream::iter(requests)).await.unwrap().into_inner();
        let mut last = std::collections::HashMap::new();
        for req in &sent {
            let answer = answers.message().await.unwrap().expect("one answer per request");
            let entry = answer.entry.unwrap_or_else(|| panic!("{:?}", answer.error));
            assert_eq!(entry.payload, req.payload, "answered in request order");
            let previous = last.insert(req.context_id.clone(), entry.sequence).unwrap_or(0);
            assert_eq!(entry.sequence, previous + 1, "{}: in the order sent", req.context_id);
        }
        assert!(answers.message().await.unwrap().is_none());
        let client = node.client().await;
        for (context, latest) in last {
            let got = client.get(GetRequest::all(context.as_str())).await.unwrap();
            assert_eq!(got.latest_sequence, latest, "{context} applied on the node that answered");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_id_retried_on_another_node_after_a_failover_returns_the_first_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = trio(dir.path()).await;
    let leader = leader_of(&nodes, "orders").await;
    let other = (leader + 1) % 3;
    let request = AppendRequest::new("orders", "placed", "order 1").with_append_id("order-1");
    let first = nodes[other].client().await.append(request.clone()).await.unwrap();
    nodes[leader].kill9();
    let survivor = (leader + 2) % 3;
    let client = nodes[survivor].client().await;
    let retried = loop {
        match client.append(request.clone()).await {
            Ok(entry) => break entry,
            Err(LedgerError::Unavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the retry failed: {e}"),
        }
    };
    assert_eq!(
        (retried.sequence(), retried.content_hash()),
        (first.sequence(), first.content_hash())
    );
    let next = client.append(AppendRequest::new("orders", "placed", "order 2")).await.unwrap();
    assert_eq!(next.sequence().0, 2, "the retry appended nothing; the next append follows");
    // A client id in the cluster's reserved space is refused.
    let reserved = AppendRequest::new("orders", "k", "x").with_append_id("raft:forged");
    assert!(matches!(client.append(reserved).await, Err(LedgerError::InvalidArgument(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_majority_appends_fail_unavailable_and_a_joining_node_is_not_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = trio(dir.path()).await;
    let client = nodes[0].client().await;
    client.append(AppendRequest::new("ops", "k", "before")).await.unwrap();
    nodes[1].kill9();
    nodes[2].kill9();
    let err = client.append(AppendRequest::new("ops", "k", "alone")).await.unwrap_err();
    let LedgerError::Unavailable(message) = &err else {
        panic!("expected UNAVAILABLE, got {err:?}")
    };
    assert!(message.contains("1 of 3 voters reachable"), "{message}");
    // Reads go on from what the node has.
    let got = client.get(GetRequest::all("ops")).await.unwrap();
    assert_eq!(got.entries.len(), 1);
    // A node that joins now cannot be added (no leader): it serves, but says NOT_SERVING.
    let fourth = join(&dir.path().join("n4"), &nodes[0], &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fourth.http_get("/healthz").0, 503, "not yet a caught-up member");
    // The majority returns (where the others know it); the join completes, as a learner:
    // three voters are enough.
    let address = nodes[1].grpc.to_string();
    nodes[1] = Node::start_at(&dir.path().join("n2"), &address, &[]);
    let started = Instant::now();
    while fourth.http_get("/healthz").0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the fourth node never became ready; its log:\n{}",
            fourth.log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = fourth.client().await.cluster_status().await.unwrap();
    let me = status.nodes.iter().find(|n| n.id == status.node).unwrap();
    assert!(!me.voter, "three voters are wanted; the fourth is a learner");
    // It caught up. (The append refused without a majority was not acknowledged, but it was
    // in the leader's log: once the majority returned it may have been committed. Either
    // way every node holds the same.)
    let ours = fourth.client().await.tree_head("ops").await.unwrap();
    let theirs = nodes[0].client().await.tree_head("ops").await.unwrap();
    assert_eq!(ours, theirs);
    assert!((1..=2).contains(&ours.tree_size));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = trio(dir.path()).await;
    let out = std::process::Command::new(BIN)
        .args(["cluster", "status", "--json", "--server", &nodes[1].url()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = status["nodes"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for node in members {
        assert_eq!(node["id"].as_str().unwrap().len(), 16);
        assert!(node["address"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(node["role"], "voter");
        assert_eq!(node["reachable"], true);
    }
    let shards = status["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 4);
    for shard in shards {
        assert!(shard["leader"].is_string());
        assert!(shard["term"].as_u64().unwrap() >= 1);
        assert!(shard["committed"].is_u64());
    }
    // Remove the third node through the first.
    let third = nodes[2].client().await.cluster_status().await.unwrap().node;
    let out = std::process::Command::new(BIN)
        .args(["cluster", "remove", &format!("{third:016x}"), "--server", &nodes[0].url()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = nodes[2].client().await.get(GetRequest::all("x")).await.unwrap_err();
    assert!(
        matches!(&err, LedgerError::FailedPrecondition(m) if m.contains("not a member of the cluster")),
        "{err:?}"
    );
    let status = nodes[0].client().await.cluster_status().await.unwrap();
    assert_eq!(status.nodes.len(), 2);
    nodes[0].client().await.append(AppendRequest::new("after", "k", "two voters")).await.unwrap();
    // Metrics carry each shard's Raft state.
    let (code, metrics) = nodes[0].http_get("/metrics");
    assert_eq!(code, 200);
    for name in [
        "converge_raft_term{shard=\"0\"}",
        "converge_raft_applied_index{shard=\"3\"}",
        "converge_raft_role{shard=\"1\"",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
}

fn create_token(tokens: &Path, role: &str) -> String {
    let out = std::process::Command::new(BIN)
        .args(["token", "create", "--role", role, "--tokens"])
        .arg(tokens)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn peer_status(node: &Node, token: &str) -> Result<(), tonic::Status> {
    let channel =
        tonic::transport::Endpoint::from_shared(node.url()).unwrap().connect().await.unwrap();
    let mut request = tonic::Request::new(StatusRequest {});
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    PeerClient::new(channel).status(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_peer_token_opens_the_internal_service_and_it_opens_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let [reader, writer, admin, peer] =
        ["reader", "writer", "admin", "peer"].map(|r| create_token(&tokens, r));
    let t = tokens.to_str().unwrap();
    let first = Node::start(
        &dir.path().join("n1"),
        &["--bootstrap", "--shards", SHARDS, "--tokens", t, "--peer-token", &peer],
    );
    // A node joins with its peer token.
    let second = join(&dir.path().join("n2"), &first, &["--tokens", t, "--peer-token", &peer]);
    for token in [&reader, &writer, &admin] {
        let err = peer_status(&first, token).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    }
    peer_status(&first, &peer).await.expect("a peer token calls the internal service");
    let mut config = ClientConfig::new(first.url());
    config.token = Some(peer.clone());
    let as_peer = Client::connect_with(config).await.unwrap();
    for err in [
        as_peer.get(GetRequest::all("x")).await.map(|_| ()).unwrap_err(),
        as_peer.append(AppendRequest::new("x", "k", "v")).await.map(|_| ()).unwrap_err(),
        as_peer.cluster_status().await.map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(err, LedgerError::PermissionDenied(_)), "{err:?}");
    }
    // The joined node works under tokens: a writer appends through it.
    let mut config = ClientConfig::new(second.url());
    config.token = Some(writer.clone());
    let as_writer = Client::connect_with(config).await.unwrap();
    let started = Instant::now();
    loop {
        match as_writer.append(AppendRequest::new("x", "k", "v")).await {
            Ok(_) => break,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("appending through the joined node failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_nodes_data_directory_becomes_a_cluster_with_all_its_contexts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let mut alone = Node::start(&data, &[]);
    let client = alone.client().await;
    let contexts: Vec<String> = (0..6).map(|i| format!("old-{i}")).collect();
    for (i, context) in contexts.iter().enumerate() {
        for j in 0..=i {
            client.append(AppendRequest::new(context.as_str(), "k", format!("{j}"))).await.unwrap();
        }
    }
    let mut before = Vec::new();
    for context in &contexts {
        before.push(client.tree_head(context).await.unwrap());
    }
    assert!(alone.terminate().success());
    let first = bootstrap(&data, &[]).await;
    let second = join(&dir.path().join("n2"), &first, &[]);
    wait_members(&second, 2).await;
    for node in [&first, &second] {
        let client = node.client().await;
        for (context, head) in contexts.iter().zip(&before) {
            let started = Instant::now();
            loop {
                let now = client.tree_head(context).await.unwrap();
                if now == *head {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "{context} on {}: {now:?} != {head:?}",
                    node.url()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Appends continue the old histories, on every node alike.
    let entry =
        second.client().await.append(AppendRequest::new("old-5", "k", "new")).await.unwrap();
    assert_eq!(entry.sequence().0, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_given_several_servers_moves_on_when_one_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = trio(dir.path()).await;
    // The first server is down from the start; the client uses the next.
    let servers = format!("http://127.0.0.1:1,{},{}", nodes[1].url(), nodes[2].url());
    let client = Client::connect(servers.as_str()).await.unwrap();
    let first = client.append(AppendRequest::new("feed", "k", "1")).await.unwrap();
    let mut watch = client
        .watch(converge_ledger::WatchRequest { context_id: "feed".into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap().sequence(), first.sequence());
    // The node it talks to (the second) dies: appends and the watch go on on the third.
    nodes[1].kill9();
    // If the dead node led the shard, the survivors elect a new leader first; under a loaded
    // test run that can outlast the client's own rounds, so the same append is sent again.
    let request = AppendRequest::new("feed", "k", "2").with_append_id("feed-2");
    let started = Instant::now();
    let second = loop {
        match client.append(request.clone()).await {
            Ok(entry) => break entry,
            Err(LedgerError::Unavailable(why)) if started.elapsed() < Duration::from_secs(30) => {
                eprintln!("append after the kill: {why}; again");
            }
            Err(e) => panic!("the append after the kill failed: {e}"),
        }
    };
    assert_eq!(second.sequence().0, 2);
    let next = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.sequence().0, 2, "the watch resumed on another node without a gap");
    // The CLI takes the same list.
    let out = std::process::Command::new(BIN)
        .args(["get", "feed", "--json", "--server", &servers])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["entries"].as_array().map(Vec::len), Some(2), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_serve_tls_speak_tls_to_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::security::pki(dir.path());
    let (cert, key, ca) = (
        pki.server_cert.to_str().unwrap(),
        pki.server_key.to_str().unwrap(),
        pki.ca.to_str().unwrap(),
    );
    // Client certificates required: peers must present theirs too.
    let tls = ["--tls-cert", cert, "--tls-key", key, "--client-ca", ca];

    // Without --peer-ca a TLS node cannot verify its peers, and says so.
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("no-peer-ca"))
        .args(tls)
        .arg("--bootstrap")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--peer-ca"), "{out:?}");

    let mut args = tls.to_vec();
    args.extend(["--peer-ca", ca, "--shards", SHARDS]);
    let first = Node::start(&dir.path().join("n1"), &[&args[..], &["--bootstrap"]].concat());
    let seed = first.grpc.to_string();
    let others: Vec<Node> = ["n2", "n3"]
        .iter()
        .map(|name| Node::start(&dir.path().join(name), &[&args[..], &["--join", &seed]].concat()))
        .collect();
    let identity = Some((pki.client_cert.as_path(), pki.client_key.as_path()));
    let mut clients = Vec::new();
    for node in std::iter::once(&first).chain(&others) {
        clients.push(crate::security::tls_client(node, &pki.ca, identity, None).await.unwrap());
    }
    let started = Instant::now();
    loop {
        let status = clients[0].cluster_status().await.unwrap();
        let voters = status.nodes.iter().filter(|n| n.voter).count();
        if voters == 3 && status.shards.iter().all(|s| s.leader.is_some()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the TLS nodes did not form a cluster of three: {status:?}; a joiner's log:\n{}",
            others[0].log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A write on a follower is forwarded to the leader over TLS; every node then holds it.
    let entry = clients[2]
        .append(AppendRequest::new("tls-ctx", "fact", b"over tls".to_vec()))
        .await
        .unwrap();
    for client in &clients {
        let mut got = Vec::new();
        let started = Instant::now();
        while got.is_empty() && started.elapsed() < Duration::from_secs(10) {
            got = client.get(GetRequest::all("tls-ctx")).await.unwrap().entries;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].content_hash(), entry.content_hash());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_leaders_are_spread_over_the_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = trio(dir.path()).await;
    wait_spread(&nodes).await;
    // Appends go on everywhere afterwards.
    for (i, node) in nodes.iter().enumerate() {
        let context = format!("spread-{i}");
        node.client()
            .await
            .append(AppendRequest::new(context, "fact", b"x".to_vec()))
            .await
            .unwrap();
    }
}
