//! Writes the seed corpus of every fuzz target into `fuzz/corpus/` (run once when a target or a
//! format changes: `cargo run -p converge-fuzz-targets --example seed_corpus`).

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use converge_core::{
    AppendId, ContextHead, ContextId, Entry, EntryParts, Hash, Key, LamportTime, Metadata,
    Timestamp,
};
use converge_proto::v1;
use converge_storage::log::segment::SegmentHeader;
use converge_storage::record::{self, Header, RecordKind, Seal};
use prost::Message as _;

fn entries(context: &ContextId, n: u64) -> Vec<Entry> {
    let mut head = ContextHead::new();
    (0..n)
        .map(|i| {
            let stamp = head.stamp(Timestamp(1_764_000_000_000_000_000 + i), None).unwrap();
            let metadata = if i % 2 == 0 {
                Metadata::new()
            } else {
                Metadata::try_from_pairs([("agent".to_string(), format!("a{i}"))]).unwrap()
            };
            let entry = Entry::seal(
                context,
                EntryParts {
                    sequence: stamp.sequence,
                    key: Key::try_new(["facts", "intents"][(i % 2) as usize]).unwrap(),
                    payload: Bytes::from(format!("payload {i}")),
                    appended_at: stamp.appended_at,
                    lamport: stamp.lamport,
                    metadata,
                },
            );
            head.apply(&entry, |_, _| {}).unwrap();
            entry
        })
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let context = ContextId::try_new("seed").unwrap();
    let some = entries(&context, 3);

    let snapshots = root.join("snapshot");
    let golden = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/snapshot-v1.bin"),
    )
    .unwrap();
    write(&snapshots, "golden-v1", &golden);
    write(&snapshots, "empty", &converge_core::snapshot::encode(&context, &[]));
    write(&snapshots, "three", &converge_core::snapshot::encode(&context, &some));

    let records = root.join("record");
    let header = |kind, lsn| Header { kind, flags: 0, group: 0, term: 0, lsn };
    let mut out = Vec::new();
    record::encode(&mut out, &header(RecordKind::Entry, 2), |b| {
        record::encode_entry_body(b, 1, &some[0], None);
    });
    write(&records, "entry", &out);
    out.clear();
    let id = AppendId::try_new("retry-1").unwrap();
    record::encode(&mut out, &header(RecordKind::Entry, 3), |b| {
        record::encode_entry_body(b, 1, &some[1], Some(&id));
    });
    write(&records, "entry-with-metadata-and-id", &out);
    out.clear();
    record::encode(&mut out, &header(RecordKind::Context, 1), |b| {
        record::encode_context_body(b, 1, &context);
    });
    write(&records, "context", &out);
    out.clear();
    let seal = Seal { records: 3, bytes: 4096, digest: Hash::from_bytes([7; 32]) };
    record::encode(&mut out, &header(RecordKind::Seal, 3), |b| record::encode_seal_body(b, &seal));
    write(&records, "seal", &out);

    let headers = root.join("segment_header");
    write(
        &headers,
        "first",
        &SegmentHeader { number: 1, first_lsn: 1, node: [1; 16], previous: Seal::zero() }.encode(),
    );
    write(
        &headers,
        "later",
        &SegmentHeader { number: 7, first_lsn: 1000, node: [2; 16], previous: seal }.encode(),
    );

    let requests = root.join("request");
    let tagged = |tag: u8, message: Vec<u8>| [vec![tag], message].concat();
    let append = v1::AppendRequest {
        context_id: "seed".into(),
        key: "facts".into(),
        payload: Bytes::from_static(b"market_size: 2.4B"),
        metadata: BTreeMap::from([("agent".into(), "a1".into())]),
        received_lamport_clock: Some(LamportTime(41).0),
        append_id: "retry-1".into(),
    };
    write(&requests, "append", &tagged(0, append.encode_to_vec()));
    let get = v1::GetRequest {
        context_id: "seed".into(),
        key: "facts".into(),
        after_sequence: 3,
        limit: 10,
        before_sequence: 9,
        newest_first: true,
    };
    write(&requests, "get", &tagged(1, get.encode_to_vec()));
    let load = v1::LoadRequest {
        load_id: String::new(),
        context_id: "seed".into(),
        snapshot: Bytes::from(golden),
        fail_if_exists: true,
    };
    write(&requests, "load", &tagged(2, load.encode_to_vec()));
    let watch =
        v1::WatchRequest { context_id: "seed".into(), key: String::new(), from_sequence: 1 };
    write(&requests, "watch", &tagged(3, watch.encode_to_vec()));
    println!("wrote the seed corpus to {}", root.display());
}
