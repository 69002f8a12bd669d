//! Every RPC and every error row of CONTRACT §2 against the real binary, over gRPC; health,
//! reflection and the HTTP port.

use std::sync::Arc;

use bytes::Bytes;
use converge_api::{AppendRequest, GetRequest, LedgerApi, LedgerError, LoadRequest, WatchRequest};
use converge_core::merkle::CompactTree;
use converge_core::{ContextId, Entry};
use futures_util::StreamExt as _;

use crate::node::Node;

async fn append(client: &impl LedgerApi, ctx: &str, key: &str, payload: &str) -> Arc<Entry> {
    client.append(AppendRequest::new(ctx, key, payload.as_bytes().to_vec())).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_per_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let client = node.verifying_client().await;

    // Append: every assigned field.
    let a = client
        .append(
            AppendRequest::new("ctx", "facts", "market_size: 2.4B").with_metadata("agent", "a1"),
        )
        .await
        .unwrap();
    let b = client
        .append(AppendRequest::new("ctx", "intents", "grow").with_received_lamport_clock(41))
        .await
        .unwrap();
    assert_eq!((a.sequence().0, a.lamport().0, b.sequence().0, b.lamport().0), (1, 1, 2, 42));
    assert!(b.appended_at() > a.appended_at());
    let id = ContextId::try_new("ctx").unwrap();
    a.verify(&id).unwrap();
    let c = append(&client, "ctx", "facts", "third").await;

    // Get: all, page, key filter, unknown context.
    let all = client.get(GetRequest::all("ctx")).await.unwrap();
    assert_eq!(
        (all.entries.clone(), all.latest_sequence),
        (vec![a.clone(), b.clone(), c.clone()], 3)
    );
    let facts = client
        .get(GetRequest {
            context_id: "ctx".into(),
            key: Some("facts".into()),
            after_sequence: 1,
            limit: 5,
            before_sequence: 0,
            newest_first: false,
        })
        .await
        .unwrap();
    assert_eq!((facts.entries, facts.latest_sequence), (vec![c.clone()], 3));
    let unknown = client.get(GetRequest::all("nobody")).await.unwrap();
    assert_eq!((unknown.entries.len(), unknown.latest_sequence), (0, 0));

    // Integrity: tree head and proofs, checked client side by the verifying client.
    let head = client.tree_head("ctx").await.unwrap();
    let hashes: Vec<_> = [&a, &b, &c].iter().map(|e| e.content_hash()).collect();
    assert_eq!(
        (head.tree_size, head.root_hash, head.lamport_clock),
        (3, CompactTree::from_leaves(&hashes).root(), 43)
    );
    let inclusion = client.prove_inclusion("ctx", 2, 0).await.unwrap();
    inclusion.verify(&b.content_hash()).unwrap();
    let consistency = client.prove_consistency("ctx", 1, 3).await.unwrap();
    consistency.verify().unwrap();

    // Snapshot and Load.
    let snap = client.snapshot("ctx").await.unwrap();
    assert_eq!(
        (snap.entry_count, snap.sequence, snap.version, snap.merkle_root),
        (3, 3, 1, head.root_hash)
    );
    let loaded = client
        .load(LoadRequest {
            load_id: None,
            context_id: "copy".into(),
            snapshot: snap.snapshot.clone(),
            fail_if_exists: true,
        })
        .await
        .unwrap();
    assert_eq!((loaded.entries_restored, loaded.latest_sequence), (3, 3));
    let copy = client.get(GetRequest::all("copy")).await.unwrap().entries;
    assert_eq!(
        copy.iter().map(|e| e.parts().clone()).collect::<Vec<_>>(),
        all.entries.iter().map(|e| e.parts().clone()).collect::<Vec<_>>()
    );

    // Watch: backlog then live.
    let mut watch = client
        .watch(WatchRequest { context_id: "ctx".into(), key: None, from_sequence: 1 })
        .await
        .unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap().sequence().0, 2);
    assert_eq!(watch.next().await.unwrap().unwrap().sequence().0, 3);
    let d = append(&client, "ctx", "traces", "live").await;
    assert_eq!(watch.next().await.unwrap().unwrap(), d);
}

fn assert_kind(
    result: Result<impl std::fmt::Debug, LedgerError>,
    expected: fn(&LedgerError) -> bool,
    needle: &str,
) {
    match result {
        Err(err) if expected(&err) => {
            assert!(err.message().contains(needle), "{err} should mention {needle:?}");
        }
        other => panic!("expected an error mentioning {needle:?}, got {other:?}"),
    }
}

/// A Load of `snapshot` into `context`, without a load id.
fn load_request(context: &str, snapshot: Bytes, fail_if_exists: bool) -> LoadRequest {
    LoadRequest { context_id: context.into(), snapshot, fail_if_exists, load_id: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_row_maps_to_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let node =
        Node::start(dir.path(), &["--payload-bytes-max", "4096", "--response-bytes-max", "20000"]);
    let client = node.client().await;
    for _ in 0..6 {
        client.append(AppendRequest::new("ctx", "k", vec![7u8; 4000])).await.unwrap();
    }
    // INVALID_ARGUMENT: bad context id, key, metadata.
    assert_kind(
        client.append(AppendRequest::new("bad\u{1}id", "k", "p")).await,
        |e| matches!(e, LedgerError::InvalidArgument(_)),
        "control character",
    );
    assert_kind(
        client.append(AppendRequest::new("c", "", "p")).await,
        |e| matches!(e, LedgerError::InvalidArgument(_)),
        "key must not be empty",
    );
    let mut meta = AppendRequest::new("c", "k", "p");
    meta.metadata = (0..65).map(|i| (i.to_string(), String::new())).collect();
    assert_kind(
        client.append(meta).await,
        |e| matches!(e, LedgerError::InvalidArgument(_)),
        "65 pairs",
    );
    // RESOURCE_EXHAUSTED: payload over the limit; response over the limit (with paging advice).
    assert_kind(
        client.append(AppendRequest::new("c", "k", vec![0u8; 4097])).await,
        |e| matches!(e, LedgerError::ResourceExhausted(_)),
        "4097 bytes",
    );
    assert_kind(
        client.get(GetRequest::all("ctx")).await,
        |e| matches!(e, LedgerError::ResourceExhausted(_)),
        "page with after_sequence",
    );
    assert_kind(
        client.snapshot("ctx").await,
        |e| matches!(e, LedgerError::ResourceExhausted(_)),
        "response_bytes_max",
    );
    // INVALID_ARGUMENT: malformed snapshot.
    let bad = LoadRequest {
        load_id: None,
        context_id: "d".into(),
        snapshot: Bytes::from_static(
            b"not a snapshot at all, not even close!!!!!!!!!!!!!!!!!!!!!!!!!",
        ),
        fail_if_exists: false,
    };
    assert_kind(
        client.load(bad).await,
        |e| matches!(e, LedgerError::InvalidArgument(_)),
        "invalid snapshot",
    );
    // ALREADY_EXISTS: load into a non-empty context with fail_if_exists; append_id reuse.
    let small = node_snapshot(&client, "small").await;
    assert_kind(
        client.load(load_request("small", small.clone(), true)).await,
        |e| matches!(e, LedgerError::AlreadyExists(_)),
        "fail_if_exists",
    );
    client.append(AppendRequest::new("ids", "k", "p").with_append_id("once")).await.unwrap();
    assert_kind(
        client.append(AppendRequest::new("ids", "k", "other").with_append_id("once")).await,
        |e| matches!(e, LedgerError::AlreadyExists(_)),
        "entry 1",
    );
    // FAILED_PRECONDITION: a blob that diverges from existing history.
    client.append(AppendRequest::new("fork", "k", "different history")).await.unwrap();
    let other = client.load(load_request("fork", small, false)).await;
    assert_kind(other, |e| matches!(e, LedgerError::FailedPrecondition(_)), "at sequence 1");
    // OUT_OF_RANGE: proofs beyond the tree.
    assert_kind(
        client.prove_inclusion("ctx", 7, 0).await,
        |e| matches!(e, LedgerError::OutOfRange(_)),
        "not in a tree of size 6",
    );
    assert_kind(
        client.prove_consistency("ctx", 1, 9).await,
        |e| matches!(e, LedgerError::OutOfRange(_)),
        "beyond",
    );
    // INVALID_ARGUMENT: sequence 0, consistency from 0, from > to.
    assert_kind(
        client.prove_inclusion("ctx", 0, 0).await,
        |e| matches!(e, LedgerError::InvalidArgument(_)),
        "sequence 0",
    );
    assert_kind(
        client.prove_consistency("ctx", 0, 2).await,
        |e| matches!(e, LedgerError::InvalidArgument(_)),
        "size 0",
    );
    assert_kind(
        client.prove_consistency("ctx", 3, 2).await,
        |e| matches!(e, LedgerError::InvalidArgument(_)),
        "larger than to_size",
    );
    // Nothing of the refused requests was appended.
    assert_eq!(client.tree_head("c").await.unwrap().tree_size, 0);
}

/// A snapshot of a fresh two-entry context `name`.
async fn node_snapshot(client: &impl LedgerApi, name: &str) -> Bytes {
    append(client, name, "k", "one").await;
    append(client, name, "k", "two").await;
    client.snapshot(name).await.unwrap().snapshot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_answers_unavailable_and_ends_watches() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]);
    let channel =
        tonic::transport::Endpoint::from_shared(node.url()).unwrap().connect().await.unwrap();
    let mut raw = converge_proto::v1::context_service_client::ContextServiceClient::new(channel);
    let mut stream = raw
        .watch(converge_proto::v1::WatchRequest { context_id: "c".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let status = node.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    match stream.message().await {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        Ok(other) => panic!("expected UNAVAILABLE, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics_are_answered() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let channel =
        tonic::transport::Endpoint::from_shared(node.url()).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in
        ["", "converge.context.v1.ContextService", "converge.context.v1.IntegrityService"]
    {
        let resp = health
            .check(HealthCheckRequest { service: service.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "converge.context.v1.ContextService",
        "converge.context.v1.IntegrityService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
    }
    let client = node.client().await;
    append(&client, "m", "k", "p").await;
    let (status, body) = node.http_get("/healthz");
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, metrics) = node.http_get("/metrics");
    assert_eq!(status, 200);
    for line in ["converge_appends_total 1", "converge_watchers 0", "converge_log_records_total"] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains("converge_fsync_batch_records_bucket"), "{metrics}");
}
