//! Appends, reads, proofs and reopening, in both storage modes.
#![allow(clippy::cast_possible_truncation, reason = "test sizes and indices are small")]

mod common;

use common::*;
use converge_core::merkle::{CompactTree, inclusion_nodes, verify_inclusion};
use converge_core::{LeafIndex, Seq, TreeSize};
use converge_storage::StoreConfig;

fn exercise(config: &StoreConfig, reopen: bool) {
    let store = open(config);
    let a = store.context(&ctx("a")).unwrap();
    let b = store.context(&ctx("b")).unwrap();
    let mut expected_a = Vec::new();
    for i in 0..300u32 {
        let key = if i % 3 == 0 { "facts" } else { "traces" };
        expected_a.push(append(&a, key, format!("payload {i}").as_bytes()));
        if i % 7 == 0 {
            append(&b, "intents", &i.to_be_bytes());
        }
    }
    check(&store, &expected_a);
    store.checkpoint().unwrap();
    for i in 300..320u32 {
        expected_a.push(append(&a, "facts", format!("payload {i}").as_bytes()));
    }
    check(&store, &expected_a);
    if reopen {
        store.close().unwrap();
        drop((a, b, store));
        let store = open(config);
        assert!(!store.open_report().unclean_shutdown);
        check(&store, &expected_a);
        let a = store.context(&ctx("a")).unwrap();
        let next = append(&a, "facts", b"after reopen");
        assert_eq!(next.sequence(), Seq(321));
        assert!(next.appended_at() > expected_a.last().unwrap().appended_at());
        expected_a.push(next);
        check(&store, &expected_a);
    }
}

fn check(store: &converge_storage::Store, expected: &[std::sync::Arc<converge_core::Entry>]) {
    let a = store.find(&ctx("a")).unwrap().expect("context a exists");
    let all = read_all(&a);
    assert_eq!(all.len(), expected.len());
    assert_eq!(all, expected);
    // Pages, limits, key filters.
    assert_eq!(read(&a, Seq(10), 5, None), expected[10..15].to_vec());
    let facts: Vec<_> = expected.iter().filter(|e| e.key().as_str() == "facts").cloned().collect();
    assert_eq!(read(&a, Seq(0), usize::MAX, Some("facts")), facts);
    assert_eq!(read(&a, facts[3].sequence(), 2, Some("facts")), facts[4..6].to_vec());
    assert!(read(&a, Seq(expected.len() as u64), 10, None).is_empty());
    // Below a sequence, oldest or newest first, with and without a key, across the checkpoint.
    let n = expected.len() as u64;
    for (after, before) in [
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 150),
        (40, 299),
        (0, 301),
        (295, 310),
        (0, n),
        (0, n + 9),
        (310, 0),
    ] {
        for limit in [1, 7, 200, usize::MAX] {
            for key in [None, Some("facts"), Some("traces"), Some("absent")] {
                let matching = || {
                    expected.iter().filter(|e| {
                        let s = e.sequence().0;
                        s > after
                            && (before == 0 || s < before)
                            && key.is_none_or(|k| e.key().as_str() == k)
                    })
                };
                let newest: Vec<_> = matching().rev().take(limit).cloned().collect();
                let oldest: Vec<_> = matching().take(limit).cloned().collect();
                let what = format!("after {after}, before {before}, limit {limit}, key {key:?}");
                assert_eq!(read_range(&a, (after, before), limit, key, true), newest, "{what}");
                assert_eq!(read_range(&a, (after, before), limit, key, false), oldest, "{what}");
            }
        }
    }
    // The tree head and proofs agree with a tree built from the entries.
    let hashes: Vec<_> = expected.iter().map(|e| e.content_hash()).collect();
    let head = a.tree_head();
    assert_eq!(head.root, CompactTree::from_leaves(&hashes).root_hash());
    assert_eq!(a.leaf_hashes(Seq(1), Seq(expected.len() as u64)).unwrap(), hashes);
    for (i, size) in [(0u64, 1u64), (5, 17), (100, 300), (299, expected.len() as u64)] {
        let plan = inclusion_nodes(LeafIndex(i), TreeSize(size)).unwrap();
        let proof = plan.assemble(&a.node_hashes(plan.ids()).unwrap()).unwrap();
        let root = converge_core::RootHash {
            size: TreeSize(size),
            hash: a.root_at(TreeSize(size)).unwrap(),
        };
        assert_eq!(root.hash, CompactTree::from_leaves(&hashes[..size as usize]).root());
        verify_inclusion(&hashes[i as usize], LeafIndex(i), &root, &proof).unwrap();
    }
    assert!(store.find(&ctx("never")).unwrap().is_none());
}

#[test]
fn memory_mode() {
    exercise(&StoreConfig::memory(), false);
}

#[test]
fn disk_mode_with_reopen() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&disk(dir.path()), true);
}

#[test]
fn disk_mode_with_small_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { segment_bytes: 4096, ..disk(dir.path()) };
    exercise(&config, true);
    let segments = std::fs::read_dir(dir.path().join("log")).unwrap().count();
    assert!(segments > 5, "small segments rotate ({segments} segments)");
}

/// A key-filtered read of everything is cut by the byte budget page by page, and gives the
/// same entries as an unbounded one when the budget allows.
#[test]
fn key_filtered_reads_are_bounded_by_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&disk(dir.path()));
    let c = store.context(&ctx("c")).unwrap();
    for i in 0..3000u32 {
        append(&c, if i % 3 == 0 { "wanted" } else { "other" }, &i.to_be_bytes());
    }
    store.checkpoint().unwrap();
    let key = converge_core::Key::try_new("wanted").unwrap();
    let query = |bytes_max| converge_storage::ReadQuery {
        after: converge_core::Seq(0),
        before: None,
        newest_first: false,
        limit: usize::MAX,
        key: Some(key.clone()),
        bytes_max,
    };
    let all = c.read(&query(usize::MAX)).unwrap();
    assert_eq!(all.entries.len(), 1000);
    assert!(all.entries.iter().all(|e| e.key() == &key));
    let cut = c.read(&query(10_000)).unwrap();
    assert!(cut.over_budget);
    assert!(!cut.entries.is_empty() && cut.entries.len() < 1000);
    assert_eq!(cut.entries[..], all.entries[..cut.entries.len()]);
    store.close().unwrap();
}
