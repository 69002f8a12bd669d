//! Benchmarks of the pure core (the targets of the foundation issue).
//!
//! Run: `cargo bench -p converge-core --bench core`. Criterion prints a median (the middle of
//! `[low median high]`) per benchmark. Sizes follow the issue: a 1 KiB entry; 10^6 leaves; roots
//! over 10^4 and 10^5 leaves; proofs at 10^4 and 10^6 leaves with every node already stored;
//! snapshots of 10^4 entries of 1 KiB.
#![allow(missing_docs)]
#![allow(clippy::cast_possible_truncation, reason = "benchmark sizes are small")]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use converge_core::hash::{Hash, leaf_hash};
use converge_core::limits::Limits;
use converge_core::merkle::{
    CompactTree, LeafIndex, NodeId, RootHash, TreeSize, consistency_nodes, fold_range,
    inclusion_nodes, root_of_leaves, verify_consistency, verify_inclusion,
};
use converge_core::{
    ContextHead, ContextId, Entry, EntryParts, Key, Metadata, Timestamp, snapshot,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

fn entry_1k(context: &ContextId, head: &mut ContextHead, i: u64) -> Entry {
    let stamp = head.stamp(Timestamp(1_764_000_000_000_000_000 + i), None).unwrap();
    let entry = Entry::seal(
        context,
        EntryParts {
            sequence: stamp.sequence,
            key: Key::try_new("facts").unwrap(),
            payload: Bytes::from(vec![(i % 251) as u8; 1024]),
            appended_at: stamp.appended_at,
            lamport: stamp.lamport,
            metadata: Metadata::try_from_pairs([("agent".into(), "bench".into())]).unwrap(),
        },
    );
    head.apply(&entry, |_, _| {}).unwrap();
    entry
}

fn content_hash(c: &mut Criterion) {
    let context = ContextId::try_new("bench-context").unwrap();
    let entry = entry_1k(&context, &mut ContextHead::new(), 0);
    let leaf_input = entry.leaf_input(&context);
    let parts = entry.parts().clone();
    let mut g = c.benchmark_group("content_hash_1KiB");
    g.throughput(Throughput::Bytes(leaf_input.len() as u64));
    g.bench_function("entry_content_hash", |b| {
        b.iter(|| converge_core::entry::content_hash(black_box(&context), black_box(&parts)));
    });
    g.bench_function("raw_sha256_same_bytes", |b| {
        b.iter(|| {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(black_box(&leaf_input));
            h.finalize()
        });
    });
    g.finish();
}

fn tree_append(c: &mut Criterion) {
    let hashes = leaves(1_000_000);
    let mut g = c.benchmark_group("tree");
    g.sample_size(10);
    g.bench_function("append_1e6_leaves", |b| {
        b.iter(|| {
            let mut tree = CompactTree::new();
            for h in &hashes {
                tree.push(*h);
            }
            tree
        });
    });
    let tree = CompactTree::from_leaves(&hashes);
    g.sample_size(100);
    g.bench_function("root_at_1e6_from_frontier", |b| {
        b.iter(|| fold_range(black_box(tree.frontier())));
    });
    let _ = tree.root();
    g.bench_function("root_at_1e6_cached", |b| b.iter(|| black_box(&tree).root()));
    g.finish();
}

fn root_from_scratch(c: &mut Criterion) {
    let mut g = c.benchmark_group("root_recomputed");
    g.sample_size(20);
    for n in [10_000u64, 100_000] {
        let hashes = leaves(n);
        g.bench_function(format!("{n}_leaves"), |b| b.iter(|| root_of_leaves(black_box(&hashes))));
    }
    g.finish();
}

/// A tree with every complete node stored, as the ledger's index holds it.
struct Stored {
    nodes: HashMap<NodeId, Hash>,
    root: RootHash,
}

impl Stored {
    fn new(n: u64) -> Self {
        let mut tree = CompactTree::new();
        let mut nodes = HashMap::with_capacity(2 * n as usize);
        for h in leaves(n) {
            tree.append(h, |id, h| {
                nodes.insert(id, h);
            })
            .unwrap();
        }
        Self { nodes, root: tree.root_hash() }
    }

    fn fetch(&self, ids: &[NodeId]) -> Vec<Hash> {
        ids.iter().map(|id| self.nodes[id]).collect()
    }
}

fn proofs(c: &mut Criterion) {
    let mut g = c.benchmark_group("proof");
    for n in [10_000u64, 1_000_000] {
        let stored = Stored::new(n);
        let size = stored.root.size;
        // A leaf in the ragged right part and an old size that is not a power of two: the
        // expensive shapes.
        let index = LeafIndex(n - 3);
        let from = TreeSize(n / 3 + 1);
        let build_inclusion = || {
            let plan = inclusion_nodes(index, size).unwrap();
            plan.assemble(&stored.fetch(plan.ids())).unwrap()
        };
        let build_consistency = || {
            let plan = consistency_nodes(from, size).unwrap();
            plan.assemble(&stored.fetch(plan.ids())).unwrap()
        };
        g.bench_function(format!("inclusion_build_{n}"), |b| b.iter(build_inclusion));
        g.bench_function(format!("consistency_build_{n}"), |b| b.iter(build_consistency));

        let leaf = stored.nodes[&NodeId::leaf(index)];
        let inclusion = build_inclusion();
        g.bench_function(format!("inclusion_verify_{n}"), |b| {
            b.iter(|| verify_inclusion(&leaf, index, &stored.root, black_box(&inclusion)).unwrap());
        });
        let frontier: Vec<Hash> =
            stored.fetch(&CompactTree::frontier_ids(from).collect::<Vec<_>>());
        let old = RootHash { size: from, hash: fold_range(&frontier) };
        let consistency = build_consistency();
        g.bench_function(format!("consistency_verify_{n}"), |b| {
            b.iter(|| verify_consistency(&old, &stored.root, black_box(&consistency)).unwrap());
        });
    }
    g.finish();
}

fn snapshots(c: &mut Criterion) {
    let context = ContextId::try_new("bench-context").unwrap();
    let mut head = ContextHead::new();
    let entries: Vec<Entry> = (0..10_000).map(|i| entry_1k(&context, &mut head, i)).collect();
    let blob = Bytes::from(snapshot::encode(&context, &entries));
    let limits = Limits::default();
    let mut g = c.benchmark_group("snapshot_1e4_x_1KiB");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(blob.len() as u64));
    g.bench_function("encode", |b| b.iter(|| snapshot::encode(&context, black_box(&entries))));
    g.bench_function("decode_and_verify", |b| {
        b.iter_batched(
            || blob.clone(),
            |blob| snapshot::decode(&blob, &limits).unwrap(),
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = content_hash, tree_append, root_from_scratch, proofs, snapshots
}
criterion_main!(benches);
