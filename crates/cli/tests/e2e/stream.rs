//! `AppendStream` against the real binary (CONTRACT §2): one response per request in request
//! order, errors in band with the unary call's code, the same `append_id` rules; and the Rust
//! client putting concurrent appends on streams by itself.

use std::collections::HashMap;
use std::sync::Arc;

use converge_api::{AppendRequest, GetRequest, LedgerApi};
use converge_client::{Client, ClientConfig};
use converge_proto::v1;
use converge_proto::v1::context_service_client::ContextServiceClient;

use crate::node::Node;

fn request(context: &str, payload: String, append_id: &str) -> v1::AppendRequest {
    v1::AppendRequest {
        context_id: context.into(),
        key: "k".into(),
        payload: payload.into_bytes().into(),
        append_id: append_id.into(),
        ..v1::AppendRequest::default()
    }
}

/// The count of `method` in the node's RPC metrics.
pub(crate) fn rpc_count(node: &Node, method: &str) -> u64 {
    let (status, body) = node.http_get("/metrics");
    assert_eq!(status, 200);
    let prefix = format!("converge_rpc_duration_seconds_count{{method=\"{method}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in the metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_answers_every_request_in_order_with_errors_in_band() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let channel =
        tonic::transport::Endpoint::from_shared(node.url()).unwrap().connect().await.unwrap();
    let mut grpc = ContextServiceClient::new(channel).max_encoding_message_size(8 << 20);

    // 300 appends over two contexts; three of them are refused, each for its own reason.
    let mut requests = Vec::new();
    for i in 0..300 {
        let context = if i % 2 == 0 { "even" } else { "odd" };
        let append_id = if i % 10 == 0 { format!("id-{i}") } else { String::new() };
        requests.push(request(context, format!("payload {i}"), &append_id));
    }
    requests[100].context_id = String::new(); // INVALID_ARGUMENT
    requests[150] = request("even", "other content".into(), "id-10"); // ALREADY_EXISTS
    requests[151] = request("even", "payload 10".into(), "id-10"); // a retry: the entry of #10
    requests[200].payload = vec![0; 5 << 20].into(); // over the payload limit (4 MiB)
    let sent = requests.clone();
    let responses = grpc.append_stream(futures_util::stream::iter(requests)).await.unwrap();
    let mut responses = responses.into_inner();
    let mut answers = Vec::new();
    while let Some(answer) = responses.message().await.unwrap() {
        answers.push(answer);
    }
    assert_eq!(answers.len(), sent.len(), "one response per request");

    let mut last: HashMap<String, u64> = HashMap::new();
    let mut by_id = HashMap::new();
    for (i, (answer, req)) in answers.iter().zip(&sent).enumerate() {
        match i {
            100 | 150 | 200 => {
                let error = answer.error.as_ref().unwrap_or_else(|| panic!("#{i} is refused"));
                assert!(answer.entry.is_none(), "#{i}: exactly one of entry and error");
                let code = tonic::Code::from(i32::try_from(error.code).unwrap());
                let expected = match i {
                    100 => tonic::Code::InvalidArgument,
                    150 => tonic::Code::AlreadyExists,
                    _ => tonic::Code::ResourceExhausted,
                };
                assert_eq!(code, expected, "#{i}: {}", error.message);
                assert!(!error.message.is_empty());
            }
            _ => {
                assert!(answer.error.is_none(), "#{i} failed: {:?}", answer.error);
                let entry = answer.entry.as_ref().expect("an entry");
                assert_eq!(entry.payload, req.payload, "#{i} answers its own request");
                if i == 151 {
                    assert_eq!(Some(&entry.sequence), by_id.get("id-10"), "a retry returns #10");
                    continue;
                }
                let previous = last.insert(req.context_id.clone(), entry.sequence).unwrap_or(0);
                assert_eq!(entry.sequence, previous + 1, "#{i}: sequences in the order sent");
                if !req.append_id.is_empty() {
                    by_id.insert(req.append_id.clone(), entry.sequence);
                }
            }
        }
    }

    // What was answered is what the ledger holds, and nothing else.
    let client = node.verifying_client().await;
    for context in ["even", "odd"] {
        let held = client.get(GetRequest::all(context)).await.unwrap();
        assert_eq!(held.latest_sequence, last[context]);
        let streamed: Vec<_> = answers
            .iter()
            .zip(&sent)
            .enumerate()
            .filter(|(i, (a, r))| *i != 151 && a.entry.is_some() && r.context_id == context)
            .map(|(_, (a, _))| a.entry.as_ref().unwrap().content_hash.clone())
            .collect();
        let hashes: Vec<_> =
            held.entries.iter().map(|e| e.content_hash().as_bytes().to_vec()).collect();
        let streamed: Vec<Vec<u8>> = streamed.iter().map(|h| h.to_vec()).collect();
        assert_eq!(hashes, streamed, "context {context}");
    }
    assert_eq!(rpc_count(&node, "AppendStream"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_of_one_client_share_streams_and_a_lone_one_goes_unary() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let client = node.verifying_client().await;

    // A lone append: unary.
    client.append(AppendRequest::new("c", "k", "alone")).await.unwrap();
    assert_eq!(rpc_count(&node, "AppendStream"), 0);

    // Many at once: streams, at most as many as the client keeps.
    let appends = (0..500).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            client.append(AppendRequest::new(format!("c{}", i % 7), "k", format!("p{i}"))).await
        })
    });
    let mut entries = Vec::new();
    for append in appends.collect::<Vec<_>>() {
        entries.push(append.await.unwrap().unwrap());
    }
    let streams = rpc_count(&node, "AppendStream");
    assert!((1..=2).contains(&streams), "{streams} streams for one client");
    let mut per_context: HashMap<String, Vec<Arc<converge_core::Entry>>> = HashMap::new();
    for entry in entries {
        let i: usize = std::str::from_utf8(&entry.payload()[1..]).unwrap().parse().unwrap();
        per_context.entry(format!("c{}", i % 7)).or_default().push(entry);
    }
    for i in 0..7 {
        let context = format!("c{i}");
        let mut ours: Vec<u64> = per_context[&context].iter().map(|e| e.sequence().0).collect();
        ours.sort_unstable();
        let held = client.get(GetRequest::all(&context)).await.unwrap();
        let held: Vec<u64> = held.entries.iter().map(|e| e.sequence().0).collect();
        assert_eq!(ours, held, "{context}: every answered append is held once");
    }

    // A client told to use no streams does not.
    let mut config = ClientConfig::new(node.url());
    config.append_streams = 0;
    let unary = Client::connect_with(config).await.unwrap();
    let appends: Vec<_> = (0..50)
        .map(|i| {
            let unary = unary.clone();
            tokio::spawn(
                async move { unary.append(AppendRequest::new("u", "k", format!("{i}"))).await },
            )
        })
        .collect();
    for append in appends {
        append.await.unwrap().unwrap();
    }
    assert_eq!(rpc_count(&node, "AppendStream"), streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_open_append_streams_shuts_down_cleanly_and_the_streams_end_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]);
    let channel =
        tonic::transport::Endpoint::from_shared(node.url()).unwrap().connect().await.unwrap();
    let mut grpc = ContextServiceClient::new(channel);
    let (requests, queue) = tokio::sync::mpsc::unbounded_channel();
    let queue =
        futures_util::stream::unfold(queue, |mut q| async move { q.recv().await.map(|r| (r, q)) });
    requests.send(request("c", "before".into(), "")).unwrap();
    let mut responses = grpc.append_stream(queue).await.unwrap().into_inner();
    let first = responses.message().await.unwrap().expect("an answer");
    assert_eq!(first.entry.expect("appended").sequence, 1);

    // The stream stays open (the client has not finished it); SIGTERM still stops the node.
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || node.terminate()).await.unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    let end = responses.message().await;
    assert!(
        matches!(&end, Err(s) if s.code() == tonic::Code::Unavailable),
        "the stream ends with UNAVAILABLE: {end:?}"
    );
    drop(requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_node_restarts_the_clients_appends_open_new_streams() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]);
    let address = node.grpc.to_string();
    let client = Client::connect(node.url()).await.unwrap();
    let burst = |client: &Client, round: usize| {
        let appends: Vec<_> = (0..100)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    client.append(AppendRequest::new("c", "k", format!("{round}-{i}"))).await
                })
            })
            .collect();
        async move {
            let mut failed = 0;
            for append in appends {
                failed += usize::from(append.await.unwrap().is_err());
            }
            failed
        }
    };
    assert_eq!(burst(&client, 0).await, 0);
    let before = rpc_count(&node, "AppendStream");
    assert!(before >= 1);

    // The streams end with the node; the next appends open new ones on the new process.
    let status = tokio::task::spawn_blocking(move || node.terminate()).await.unwrap();
    assert!(status.success());
    let node = Node::start_at(dir.path(), &address, &[]);
    let mut failed = burst(&client, 1).await;
    // At most the appends caught by the reconnection fail (UNAVAILABLE, not taken); none hangs.
    assert!(failed < 100, "{failed} of 100 failed after the restart");
    failed = burst(&client, 2).await;
    assert_eq!(failed, 0, "once reconnected, every append goes through");
    assert!(rpc_count(&node, "AppendStream") >= 1, "new streams on the new process");
}
