//! Wire compatibility, checked with a client written by hand from CONTRACT §1 — not generated
//! from the server's proto — the way a client generated from the original Elixir ledger's proto
//! sees the service. Messages are prost structs declared here with the contract's field numbers
//! and types; calls go through tonic's generic client by method path. A second set of
//! messages without the extension fields stands in for an old client.

use std::collections::HashMap;

use bytes::Bytes;
use tonic::client::Grpc;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

use crate::node::Node;

#[derive(Clone, PartialEq, prost::Message)]
struct Entry {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    key: String,
    #[prost(bytes = "bytes", tag = "3")]
    payload: Bytes,
    #[prost(uint64, tag = "4")]
    sequence: u64,
    #[prost(uint64, tag = "5")]
    appended_at_ns: u64,
    #[prost(map = "string, string", tag = "6")]
    metadata: HashMap<String, String>,
    #[prost(uint64, tag = "7")]
    lamport_clock: u64,
    #[prost(bytes = "bytes", tag = "8")]
    content_hash: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AppendRequest {
    #[prost(string, tag = "1")]
    context_id: String,
    #[prost(string, tag = "2")]
    key: String,
    #[prost(bytes = "bytes", tag = "3")]
    payload: Bytes,
    #[prost(map = "string, string", tag = "4")]
    metadata: HashMap<String, String>,
    #[prost(uint64, optional, tag = "5")]
    received_lamport_clock: Option<u64>,
    #[prost(string, tag = "6")]
    append_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AppendResponse {
    #[prost(message, optional, tag = "1")]
    entry: Option<Entry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetRequest {
    #[prost(string, tag = "1")]
    context_id: String,
    #[prost(string, tag = "2")]
    key: String,
    #[prost(uint64, tag = "3")]
    after_sequence: u64,
    #[prost(uint32, tag = "4")]
    limit: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetResponse {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<Entry>,
    #[prost(uint64, tag = "2")]
    latest_sequence: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotRequest {
    #[prost(string, tag = "1")]
    context_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotMetadata {
    #[prost(uint64, tag = "1")]
    created_at_ns: u64,
    #[prost(uint64, tag = "2")]
    entry_count: u64,
    #[prost(uint32, tag = "3")]
    version: u32,
    #[prost(bytes = "bytes", tag = "4")]
    merkle_root: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotResponse {
    #[prost(bytes = "bytes", tag = "1")]
    snapshot: Bytes,
    #[prost(uint64, tag = "2")]
    sequence: u64,
    #[prost(message, optional, tag = "3")]
    metadata: Option<SnapshotMetadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LoadRequest {
    #[prost(string, tag = "1")]
    context_id: String,
    #[prost(bytes = "bytes", tag = "2")]
    snapshot: Bytes,
    #[prost(bool, tag = "3")]
    fail_if_exists: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LoadResponse {
    #[prost(uint64, tag = "1")]
    entries_restored: u64,
    #[prost(uint64, tag = "2")]
    latest_sequence: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WatchRequest {
    #[prost(string, tag = "1")]
    context_id: String,
    #[prost(string, tag = "2")]
    key: String,
    #[prost(uint64, tag = "3")]
    from_sequence: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WatchEvent {
    #[prost(message, optional, tag = "1")]
    entry: Option<Entry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TreeHeadRequest {
    #[prost(string, tag = "1")]
    context_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TreeHead {
    #[prost(uint64, tag = "1")]
    tree_size: u64,
    #[prost(bytes = "bytes", tag = "2")]
    root_hash: Bytes,
    #[prost(uint64, tag = "3")]
    lamport_clock: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct InclusionRequest {
    #[prost(string, tag = "1")]
    context_id: String,
    #[prost(uint64, tag = "2")]
    sequence: u64,
    #[prost(uint64, tag = "3")]
    tree_size: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct InclusionProof {
    #[prost(uint64, tag = "1")]
    leaf_index: u64,
    #[prost(uint64, tag = "2")]
    tree_size: u64,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    hashes: Vec<Bytes>,
    #[prost(bytes = "bytes", tag = "4")]
    root_hash: Bytes,
}

/// The original client's view of an entry and an append: no extension fields.
#[derive(Clone, PartialEq, prost::Message)]
struct OldEntry {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    key: String,
    #[prost(bytes = "bytes", tag = "3")]
    payload: Bytes,
    #[prost(uint64, tag = "4")]
    sequence: u64,
    #[prost(uint64, tag = "5")]
    appended_at_ns: u64,
    #[prost(map = "string, string", tag = "6")]
    metadata: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OldAppendRequest {
    #[prost(string, tag = "1")]
    context_id: String,
    #[prost(string, tag = "2")]
    key: String,
    #[prost(bytes = "bytes", tag = "3")]
    payload: Bytes,
    #[prost(map = "string, string", tag = "4")]
    metadata: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OldAppendResponse {
    #[prost(message, optional, tag = "1")]
    entry: Option<OldEntry>,
}

async fn unary<Req, Resp>(
    channel: &Channel,
    path: &'static str,
    request: Req,
) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = ProstCodec::<Req, Resp>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(request), path, codec).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_client_from_the_contract_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let channel =
        tonic::transport::Endpoint::from_shared(node.url()).unwrap().connect().await.unwrap();

    let req = AppendRequest {
        context_id: "wire".into(),
        key: "facts".into(),
        payload: Bytes::from_static(b"market_size: 2.4B"),
        metadata: HashMap::from([("agent".into(), "a1".into())]),
        received_lamport_clock: Some(9),
        append_id: "w-1".into(),
    };
    let appended: AppendResponse =
        unary(&channel, "/converge.context.v1.ContextService/Append", req).await.unwrap();
    let entry = appended.entry.unwrap();
    assert_eq!((entry.sequence, entry.lamport_clock, entry.key.as_str()), (1, 10, "facts"));
    assert_eq!(entry.content_hash.len(), 32);
    assert_eq!(entry.id, converge_core::hex::encode(&entry.content_hash[..16]));
    assert_eq!(entry.metadata.get("agent").map(String::as_str), Some("a1"));

    // An old client without the extension fields appends and reads back what it knows.
    let old = OldAppendRequest {
        context_id: "wire".into(),
        key: "intents".into(),
        payload: Bytes::from_static(b"grow"),
        metadata: HashMap::new(),
    };
    let old: OldAppendResponse =
        unary(&channel, "/converge.context.v1.ContextService/Append", old).await.unwrap();
    let old = old.entry.unwrap();
    assert_eq!((old.sequence, old.key.as_str(), &old.payload[..]), (2, "intents", &b"grow"[..]));

    let get =
        GetRequest { context_id: "wire".into(), key: String::new(), after_sequence: 0, limit: 0 };
    let got: GetResponse =
        unary(&channel, "/converge.context.v1.ContextService/Get", get).await.unwrap();
    assert_eq!((got.entries.len(), got.latest_sequence), (2, 2));
    assert_eq!(got.entries[0], entry);

    let snap: SnapshotResponse = unary(
        &channel,
        "/converge.context.v1.ContextService/Snapshot",
        SnapshotRequest { context_id: "wire".into() },
    )
    .await
    .unwrap();
    let meta = snap.metadata.unwrap();
    assert_eq!(
        (snap.sequence, meta.entry_count, meta.version, meta.merkle_root.len()),
        (2, 2, 1, 32)
    );
    let load = LoadRequest {
        context_id: "wire-copy".into(),
        snapshot: snap.snapshot,
        fail_if_exists: true,
    };
    let loaded: LoadResponse =
        unary(&channel, "/converge.context.v1.ContextService/Load", load).await.unwrap();
    assert_eq!((loaded.entries_restored, loaded.latest_sequence), (2, 2));

    let head: TreeHead = unary(
        &channel,
        "/converge.context.v1.IntegrityService/GetTreeHead",
        TreeHeadRequest { context_id: "wire".into() },
    )
    .await
    .unwrap();
    assert_eq!((head.tree_size, head.root_hash.clone()), (2, meta.merkle_root));
    let proof: InclusionProof = unary(
        &channel,
        "/converge.context.v1.IntegrityService/ProveInclusion",
        InclusionRequest { context_id: "wire".into(), sequence: 1, tree_size: 0 },
    )
    .await
    .unwrap();
    assert_eq!(
        (proof.leaf_index, proof.tree_size, proof.hashes.len(), proof.root_hash),
        (0, 2, 1, head.root_hash)
    );

    // Watch, a server stream.
    let mut grpc = Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/converge.context.v1.ContextService/Watch",
    );
    let watch = WatchRequest { context_id: "wire".into(), key: "intents".into(), from_sequence: 0 };
    let mut events = grpc
        .server_streaming(
            tonic::Request::new(watch),
            path,
            ProstCodec::<WatchRequest, WatchEvent>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let first = events.message().await.unwrap().unwrap().entry.unwrap();
    assert_eq!((first.sequence, first.key.as_str()), (2, "intents"));

    // Errors arrive as the contract's status codes.
    let bad =
        GetRequest { context_id: String::new(), key: String::new(), after_sequence: 0, limit: 0 };
    let err = unary::<_, GetResponse>(&channel, "/converge.context.v1.ContextService/Get", bad)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("context_id must not be empty"), "{}", err.message());
}
