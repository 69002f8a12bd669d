//! CONTRACT §2, operation by operation, against the embedded ledger in both storage modes.
#![allow(clippy::cast_possible_truncation, reason = "test sizes and indices are small")]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use converge_core::merkle::CompactTree;
use converge_core::{ContextId, EMPTY_ROOT, Entry};
use converge_ledger::{
    AppendRequest, GetRequest, Ledger, LedgerApi, LedgerConfig, LedgerError, LoadRequest,
    StoreConfig,
};

async fn append(l: &Ledger, ctx: &str, key: &str, payload: &str) -> Arc<Entry> {
    l.append(AppendRequest::new(ctx, key, payload.as_bytes().to_vec())).await.unwrap()
}

#[tokio::test]
async fn append_assigns_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TestClock::default());
    let l = with_clock(StoreConfig::disk(dir.path()), clock);
    let a = l
        .append(
            AppendRequest::new("ctx", "facts", "market_size: 2.4B").with_metadata("agent", "a1"),
        )
        .await
        .unwrap();
    assert_eq!(a.sequence().0, 1);
    assert_eq!(a.lamport().0, 1);
    assert_eq!(a.metadata().get("agent"), Some("a1"));
    let b = l
        .append(AppendRequest::new("ctx", "intents", "x").with_received_lamport_clock(41))
        .await
        .unwrap();
    assert_eq!((b.sequence().0, b.lamport().0), (2, 42), "lamport = max(previous, received) + 1");
    let c = l
        .append(AppendRequest::new("ctx", "intents", "y").with_received_lamport_clock(3))
        .await
        .unwrap();
    assert_eq!(c.lamport().0, 43);
    assert!(a.appended_at() < b.appended_at() && b.appended_at() < c.appended_at());
    let ctx = ContextId::try_new("ctx").unwrap();
    for e in [&a, &b, &c] {
        e.verify(&ctx).unwrap();
        assert_eq!(e.id().to_hex(), e.content_hash().to_hex()[..32]);
    }
    // Another context starts its own sequence.
    assert_eq!(append(&l, "other", "k", "p").await.sequence().0, 1);
    let head = l.tree_head("ctx").await.unwrap();
    assert_eq!(head.tree_size, 3);
    assert_eq!(head.lamport_clock, 43);
    let hashes: Vec<_> = [&a, &b, &c].iter().map(|e| e.content_hash()).collect();
    assert_eq!(head.root_hash, CompactTree::from_leaves(&hashes).root());
}

#[tokio::test]
async fn appended_at_never_goes_backwards_when_the_clock_does() {
    struct Backwards(std::sync::atomic::AtomicU64);
    impl converge_ledger::Clock for Backwards {
        fn now(&self) -> converge_core::Timestamp {
            converge_core::Timestamp(
                1_000_000 - self.0.fetch_add(1000, std::sync::atomic::Ordering::SeqCst),
            )
        }
    }
    let l = with_clock(
        StoreConfig::memory(),
        Arc::new(Backwards(std::sync::atomic::AtomicU64::default())),
    );
    let mut previous = 0;
    for _ in 0..10 {
        let e = append(&l, "c", "k", "p").await;
        assert!(e.appended_at().0 > previous);
        previous = e.appended_at().0;
    }
}

#[tokio::test]
async fn invalid_requests_are_refused_with_actionable_errors() {
    let l = memory();
    let cases: Vec<(AppendRequest, &str)> = vec![
        (AppendRequest::new("", "k", "p"), "context_id must not be empty"),
        (
            AppendRequest::new("c".repeat(1025), "k", "p"),
            "context_id is 1025 bytes long; the limit is 1024",
        ),
        (AppendRequest::new("bad\nid", "k", "p"), "control character U+000A"),
        (AppendRequest::new("c", "", "p"), "key must not be empty"),
        (AppendRequest::new("c", "k\u{0}", "p"), "control character U+0000"),
        (
            AppendRequest::new("c", "k", "p").with_append_id("a".repeat(129)),
            "append_id is 129 bytes long",
        ),
    ];
    for (req, expected) in cases {
        match l.append(req).await {
            Err(LedgerError::InvalidArgument(m)) => {
                assert!(m.contains(expected), "{m} should contain {expected}");
            }
            other => panic!("expected InvalidArgument containing {expected}, got {other:?}"),
        }
    }
    let mut many = AppendRequest::new("c", "k", "p");
    many.metadata = (0..65).map(|i| (i.to_string(), String::new())).collect();
    assert!(
        matches!(l.append(many).await, Err(LedgerError::InvalidArgument(m)) if m.contains("65 pairs"))
    );
    let huge = AppendRequest::new("c", "k", "p").with_metadata("k", "v".repeat(64 * 1024));
    assert!(
        matches!(l.append(huge).await, Err(LedgerError::InvalidArgument(m)) if m.contains("metadata is"))
    );
    // Nothing was appended by any of them.
    assert_eq!(l.tree_head("c").await.unwrap().tree_size, 0);
    // Metadata values may hold newlines and tabs; ids of 1000 characters keep working.
    let ok = AppendRequest::new("x".repeat(1000), "k", "p").with_metadata("note", "line\n\tnext");
    assert!(l.append(ok).await.is_ok());
}

#[tokio::test]
async fn payload_over_the_limit_is_resource_exhausted() {
    let mut config = LedgerConfig::memory();
    config.limits.payload_bytes_max = 1024;
    let l = Ledger::open(config).unwrap();
    assert!(l.append(AppendRequest::new("c", "k", vec![0u8; 1024])).await.is_ok());
    match l.append(AppendRequest::new("c", "k", vec![0u8; 1025])).await {
        Err(LedgerError::ResourceExhausted(m)) => {
            assert!(m.contains("1025 bytes; the limit is 1024"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn get_pages_filters_and_reports_the_latest_sequence() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, l) in both(dir.path()) {
        let mut all = Vec::new();
        for i in 0..50 {
            let key = ["facts", "traces", "evals"][i % 3];
            all.push(append(&l, "c", key, &format!("p{i}")).await);
        }
        let got = l.get(GetRequest::all("c")).await.unwrap();
        assert_eq!((got.entries, got.latest_sequence), (all.clone(), 50), "{mode}");
        let page = l
            .get(GetRequest {
                context_id: "c".into(),
                after_sequence: 10,
                limit: 5,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.entries, all[10..15], "{mode}");
        let facts = l
            .get(GetRequest {
                context_id: "c".into(),
                key: Some("facts".into()),
                after_sequence: 3,
                limit: 4,
                before_sequence: 0,
                newest_first: false,
            })
            .await
            .unwrap();
        let expected: Vec<_> = all
            .iter()
            .filter(|e| e.key().as_str() == "facts" && e.sequence().0 > 3)
            .take(4)
            .cloned()
            .collect();
        assert_eq!(facts.entries, expected, "{mode}");
        assert_eq!(facts.latest_sequence, 50, "latest is the context's, whatever the filter");
        let none = l
            .get(GetRequest {
                context_id: "c".into(),
                key: Some("nope".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(none.entries.is_empty());
        assert_eq!(none.latest_sequence, 50);
        let unknown = l.get(GetRequest::all("never-written")).await.unwrap();
        assert_eq!(
            (unknown.entries.len(), unknown.latest_sequence),
            (0, 0),
            "unknown context is not an error"
        );
        let past = l
            .get(GetRequest { context_id: "c".into(), after_sequence: 1000, ..Default::default() })
            .await
            .unwrap();
        assert!(past.entries.is_empty());
    }
}

#[tokio::test]
async fn a_response_over_the_size_limit_is_refused_with_paging_advice() {
    let mut config = LedgerConfig::memory();
    config.limits.payload_bytes_max = 10_000;
    config.limits.response_bytes_max = 50_000;
    let l = Ledger::open(config).unwrap();
    for _ in 0..10 {
        l.append(AppendRequest::new("c", "k", vec![1u8; 9_000])).await.unwrap();
    }
    match l.get(GetRequest::all("c")).await {
        Err(LedgerError::ResourceExhausted(m)) => {
            assert!(
                m.contains("50000 bytes")
                    && m.contains("page with after_sequence")
                    && m.contains("response_bytes_max"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    let page =
        l.get(GetRequest { context_id: "c".into(), limit: 3, ..Default::default() }).await.unwrap();
    assert_eq!(page.entries.len(), 3);
    assert!(
        matches!(l.snapshot("c").await, Err(LedgerError::ResourceExhausted(m)) if m.contains("snapshot"))
    );
}

#[tokio::test]
async fn append_id_makes_retries_safe() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = disk(dir.path());
        let first =
            l.append(AppendRequest::new("c", "k", "p").with_append_id("req-1")).await.unwrap();
        let retry =
            l.append(AppendRequest::new("c", "k", "p").with_append_id("req-1")).await.unwrap();
        assert_eq!(first, retry, "a retry returns the recorded entry");
        assert_eq!(l.tree_head("c").await.unwrap().tree_size, 1, "and appends nothing");
        match l.append(AppendRequest::new("c", "k", "different").with_append_id("req-1")).await {
            Err(LedgerError::AlreadyExists(m)) => {
                assert!(m.contains("entry 1") && m.contains("req-1"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        // Ids are per context.
        assert_eq!(
            l.append(AppendRequest::new("d", "k", "p").with_append_id("req-1"))
                .await
                .unwrap()
                .sequence()
                .0,
            1
        );
        // Concurrent calls with one id append once and all get that entry.
        let calls = (0..32).map(|_| {
            let l = l.clone();
            tokio::spawn(async move {
                l.append(AppendRequest::new("c", "k", "q").with_append_id("req-2")).await.unwrap()
            })
        });
        let results: Vec<_> =
            futures_util::future::join_all(calls).await.into_iter().map(Result::unwrap).collect();
        assert!(results.iter().all(|e| e == &results[0]));
        assert_eq!(results[0].sequence().0, 2);
        l.checkpoint().unwrap();
        let _ = l.append(AppendRequest::new("c", "k", "r").with_append_id("req-3")).await.unwrap();
        l.close().await.unwrap();
    }
    // After a restart: ids in the checkpointed index and in the replayed log are both found.
    let l = disk(dir.path());
    for (id, payload, seq) in [("req-1", "p", 1), ("req-2", "q", 2), ("req-3", "r", 3)] {
        let again =
            l.append(AppendRequest::new("c", "k", payload).with_append_id(id)).await.unwrap();
        assert_eq!(again.sequence().0, seq, "{id}");
    }
    assert_eq!(l.tree_head("c").await.unwrap().tree_size, 3);
    assert!(matches!(
        l.append(AppendRequest::new("c", "k", "other").with_append_id("req-2")).await,
        Err(LedgerError::AlreadyExists(_))
    ));
}

#[tokio::test]
async fn load_id_answers_a_retried_load_as_the_first_attempt_was() {
    let dir = tempfile::tempdir().unwrap();
    let src = memory();
    let _ = numbered(&src, "src", 0..5).await;
    let five = src.snapshot("src").await.unwrap().snapshot;
    let _ = numbered(&src, "src", 5..8).await;
    let eight = src.snapshot("src").await.unwrap().snapshot;
    let load = |snapshot: &Bytes, fail_if_exists: bool, id: &str| LoadRequest {
        context_id: "dst".into(),
        snapshot: snapshot.clone(),
        fail_if_exists,
        load_id: Some(id.into()),
    };
    {
        let l = disk(dir.path());
        let first = l.load(load(&five, true, "load-1")).await.unwrap();
        assert_eq!((first.entries_restored, first.latest_sequence), (5, 5));
        // Sent again (the answer was lost): the same answer, not "already exists".
        assert_eq!(l.load(load(&five, true, "load-1")).await.unwrap(), first);
        // Without an id the same request is refused, as the contract says.
        assert!(matches!(
            l.load(LoadRequest { load_id: None, ..load(&five, true, "") }).await,
            Err(LedgerError::AlreadyExists(_))
        ));
        // A longer blob under a new id appends its suffix; its retry answers the same, after
        // entries appended meanwhile.
        let suffix = l.load(load(&eight, false, "load-2")).await.unwrap();
        assert_eq!((suffix.entries_restored, suffix.latest_sequence), (3, 8));
        let _ = append(&l, "dst", "k", "later").await;
        assert_eq!(l.load(load(&eight, false, "load-2")).await.unwrap(), suffix);
        // The id of a load that restored entries, given with a different snapshot: refused.
        match l.load(load(&eight, false, "load-1")).await {
            Err(LedgerError::AlreadyExists(m)) => assert!(m.contains("load-1"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Concurrent attempts with one id restore once.
        let calls = (0..16).map(|_| {
            let (l, req) = (l.clone(), load(&five, true, "load-3"));
            tokio::spawn(async move {
                let mut req = req;
                req.context_id = "twice".into();
                l.load(req).await.unwrap()
            })
        });
        let answers: Vec<_> =
            futures_util::future::join_all(calls).await.into_iter().map(Result::unwrap).collect();
        assert!(answers.iter().all(|a| (a.entries_restored, a.latest_sequence) == (5, 5)));
        assert_eq!(l.tree_head("twice").await.unwrap().tree_size, 5);
        l.checkpoint().unwrap();
        l.close().await.unwrap();
    }
    // After a restart the recorded ids are found where they lie.
    let l = disk(dir.path());
    assert_eq!(l.load(load(&five, true, "load-1")).await.unwrap().entries_restored, 5);
    assert_eq!(l.load(load(&eight, false, "load-2")).await.unwrap().entries_restored, 3);
    assert_eq!(l.tree_head("dst").await.unwrap().tree_size, 9);
    assert!(matches!(
        l.load(load(&five, true, &"x".repeat(129))).await,
        Err(LedgerError::InvalidArgument(m)) if m.contains("load_id")
    ));
}

/// Appends entries `range` of a fixed, reproducible series to `ctx`.
async fn numbered(l: &Ledger, ctx: &str, range: std::ops::Range<usize>) -> Vec<Arc<Entry>> {
    let mut out = Vec::new();
    for i in range {
        let req = AppendRequest::new(ctx, ["facts", "intents"][i % 2], format!("payload {i}"))
            .with_metadata("i", i.to_string())
            .with_received_lamport_clock(i as u64 * 3);
        out.push(l.append(req).await.unwrap());
    }
    out
}

#[tokio::test]
async fn snapshot_and_load_restore_every_field() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, l) in both(dir.path()) {
        let originals = numbered(&l, "src", 0..20).await;
        let snap = l.snapshot("src").await.unwrap();
        assert_eq!((snap.sequence, snap.entry_count, snap.version), (20, 20, 1), "{mode}");
        assert_eq!(snap.merkle_root, l.tree_head("src").await.unwrap().root_hash);

        // Into an empty context of the same name elsewhere: every field as it was.
        let other = memory();
        let loaded = other
            .load(LoadRequest {
                load_id: None,
                context_id: "src".into(),
                snapshot: snap.snapshot.clone(),
                fail_if_exists: true,
            })
            .await
            .unwrap();
        assert_eq!((loaded.entries_restored, loaded.latest_sequence), (20, 20));
        assert_eq!(other.get(GetRequest::all("src")).await.unwrap().entries, originals, "{mode}");

        // Into a different context: fields kept, hashes recomputed.
        let moved = l
            .load(LoadRequest {
                load_id: None,
                context_id: "dst".into(),
                snapshot: snap.snapshot.clone(),
                fail_if_exists: true,
            })
            .await
            .unwrap();
        assert_eq!(moved.entries_restored, 20);
        let dst = l.get(GetRequest::all("dst")).await.unwrap().entries;
        let dst_id = ContextId::try_new("dst").unwrap();
        for (a, b) in originals.iter().zip(&dst) {
            assert_eq!(a.parts(), b.parts(), "{mode}: fields kept");
            assert_ne!(a.content_hash(), b.content_hash());
            b.verify(&dst_id).unwrap();
        }
        assert_eq!(
            l.tree_head("dst").await.unwrap().lamport_clock,
            originals.last().unwrap().lamport().0
        );

        // fail_if_exists on a non-empty context.
        assert!(matches!(
            l.load(LoadRequest { load_id: None, context_id: "dst".into(), snapshot: snap.snapshot.clone(), fail_if_exists: true }).await,
            Err(LedgerError::AlreadyExists(m)) if m.contains("fail_if_exists = false")
        ));
        // Equal history: nothing changes.
        let same = l
            .load(LoadRequest {
                load_id: None,
                context_id: "dst".into(),
                snapshot: snap.snapshot.clone(),
                fail_if_exists: false,
            })
            .await
            .unwrap();
        assert_eq!((same.entries_restored, same.latest_sequence), (0, 20));
        // The context is a prefix of the blob: only the suffix is appended.
        numbered(&l, "src", 20..25).await;
        let longer = l.snapshot("src").await.unwrap();
        let grown = l
            .load(LoadRequest {
                load_id: None,
                context_id: "dst".into(),
                snapshot: longer.snapshot.clone(),
                fail_if_exists: false,
            })
            .await
            .unwrap();
        assert_eq!((grown.entries_restored, grown.latest_sequence), (5, 25), "{mode}");
        // The blob is a prefix of the context: nothing changes.
        let shorter = l
            .load(LoadRequest {
                load_id: None,
                context_id: "dst".into(),
                snapshot: snap.snapshot.clone(),
                fail_if_exists: false,
            })
            .await
            .unwrap();
        assert_eq!((shorter.entries_restored, shorter.latest_sequence), (0, 25));
        // Divergence names the first differing sequence and changes nothing.
        let fork = memory();
        numbered(&fork, "dst", 0..7).await;
        let forked = fork.snapshot("dst").await.unwrap();
        match l
            .load(LoadRequest {
                load_id: None,
                context_id: "dst".into(),
                snapshot: forked.snapshot,
                fail_if_exists: false,
            })
            .await
        {
            Err(LedgerError::FailedPrecondition(m)) => assert!(m.contains("at sequence 1"), "{m}"),
            other => panic!("{mode}: {other:?}"),
        }
        assert_eq!(l.tree_head("dst").await.unwrap().tree_size, 25);
    }
}

#[tokio::test]
async fn a_bad_snapshot_is_refused_and_nothing_is_written() {
    let l = memory();
    for i in 0..5 {
        append(&l, "src", "k", &format!("{i}")).await;
    }
    let blob = l.snapshot("src").await.unwrap().snapshot;
    let mut damaged = blob.to_vec();
    let at = damaged.len() / 2;
    damaged[at] ^= 1;
    for (what, bytes) in
        [("damaged", damaged), ("truncated", blob[..blob.len() - 1].to_vec()), ("empty", vec![])]
    {
        match l
            .load(LoadRequest {
                load_id: None,
                context_id: "dst".into(),
                snapshot: Bytes::from(bytes),
                fail_if_exists: false,
            })
            .await
        {
            Err(LedgerError::InvalidArgument(m)) => {
                assert!(m.starts_with("invalid snapshot"), "{what}: {m}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    assert_eq!(l.tree_head("dst").await.unwrap().tree_size, 0);
    // An empty context snapshots to a valid empty blob.
    let empty = l.snapshot("nothing-here").await.unwrap();
    assert_eq!((empty.entry_count, empty.merkle_root), (0, EMPTY_ROOT));
    assert_eq!(
        l.load(LoadRequest {
            load_id: None,
            context_id: "x".into(),
            snapshot: empty.snapshot,
            fail_if_exists: true
        })
        .await
        .unwrap()
        .entries_restored,
        0
    );
}

#[tokio::test]
async fn proofs_verify_and_bad_coordinates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, l) in both(dir.path()) {
        let mut entries = Vec::new();
        for i in 0..100 {
            entries.push(append(&l, "c", "k", &format!("{i}")).await);
        }
        if mode == "disk" {
            l.checkpoint().unwrap();
        }
        for i in 100..137 {
            entries.push(append(&l, "c", "k", &format!("{i}")).await);
        }
        let head = l.tree_head("c").await.unwrap();
        for (seq, size) in
            [(1, 0), (37, 0), (137, 0), (1, 1), (50, 64), (64, 64), (65, 100), (100, 101)]
        {
            let proof = l.prove_inclusion("c", seq, size).await.unwrap();
            let size = if size == 0 { head.tree_size } else { size };
            assert_eq!((proof.leaf_index, proof.tree_size), (seq - 1, size));
            proof
                .verify(&entries[seq as usize - 1].content_hash())
                .unwrap_or_else(|e| panic!("{mode} ({seq},{size}): {e}"));
        }
        for (from, to) in [(1, 0), (1, 1), (17, 64), (64, 137), (100, 0), (137, 137), (5, 101)] {
            let proof = l.prove_consistency("c", from, to).await.unwrap();
            proof.verify().unwrap_or_else(|e| panic!("{mode} ({from},{to}): {e}"));
            assert_eq!(
                proof.to_root,
                l.prove_inclusion("c", 1, proof.to_size).await.unwrap().root_hash
            );
        }
        let head_proof = l.prove_consistency("c", 1, 0).await.unwrap();
        assert_eq!(head_proof.to_root, head.root_hash);

        assert!(
            matches!(l.prove_inclusion("c", 0, 0).await, Err(LedgerError::InvalidArgument(m)) if m.contains("sequence 0"))
        );
        assert!(matches!(l.prove_inclusion("c", 138, 0).await, Err(LedgerError::OutOfRange(_))));
        assert!(matches!(l.prove_inclusion("c", 5, 138).await, Err(LedgerError::OutOfRange(_))));
        assert!(matches!(l.prove_inclusion("c", 10, 5).await, Err(LedgerError::OutOfRange(_))));
        assert!(
            matches!(l.prove_consistency("c", 0, 5).await, Err(LedgerError::InvalidArgument(m)) if m.contains("size 0"))
        );
        assert!(matches!(
            l.prove_consistency("c", 10, 5).await,
            Err(LedgerError::InvalidArgument(_))
        ));
        assert!(matches!(l.prove_consistency("c", 1, 500).await, Err(LedgerError::OutOfRange(_))));
        assert!(matches!(l.prove_consistency("c", 500, 0).await, Err(LedgerError::OutOfRange(_))));
        assert!(matches!(
            l.prove_inclusion("missing", 1, 0).await,
            Err(LedgerError::OutOfRange(_))
        ));
        let _ = BTreeMap::<String, String>::new();
    }
}

/// CONTRACT §2: no value a client sends can make later appends to a context fail.
#[tokio::test]
async fn lamport_clocks_at_or_above_two_to_the_62_are_refused_and_the_context_keeps_working() {
    let l = memory();
    let max = (1u64 << 62) - 1;
    for received in [1 << 62, u64::MAX - 1, u64::MAX] {
        let req = AppendRequest::new("ctx", "k", "p").with_received_lamport_clock(received);
        match l.append(req).await {
            Err(LedgerError::InvalidArgument(m)) => assert!(m.contains("below 2^62"), "{m}"),
            other => panic!("received {received}: {other:?}"),
        }
    }
    let top = l
        .append(AppendRequest::new("ctx", "k", "p").with_received_lamport_clock(max))
        .await
        .unwrap();
    assert_eq!(top.lamport().0, max + 1);
    for i in 0..3 {
        let next = append(&l, "ctx", "k", &format!("after {i}")).await;
        assert_eq!(next.lamport().0, max + 2 + i, "later appends go on");
    }

    // A snapshot whose entries carry such a clock is refused too, and nothing is written.
    let ctx = ContextId::try_new("loaded").unwrap();
    let parts = converge_core::EntryParts {
        sequence: converge_core::Seq(1),
        key: converge_core::Key::try_new("k").unwrap(),
        payload: Bytes::from_static(b"p"),
        appended_at: converge_core::Timestamp(1),
        lamport: converge_core::LamportTime(1 << 62),
        metadata: converge_core::Metadata::new(),
    };
    let blob = converge_core::snapshot::encode(&ctx, &[Entry::seal(&ctx, parts)]);
    let req = LoadRequest {
        load_id: None,
        context_id: "loaded".into(),
        snapshot: blob.into(),
        fail_if_exists: false,
    };
    match l.load(req).await {
        Err(LedgerError::InvalidArgument(m)) => assert!(m.contains("below 2^62"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(l.tree_head("loaded").await.unwrap().tree_size, 0);
}

#[tokio::test]
async fn append_many_answers_each_request_in_order_and_keeps_each_context_in_order() {
    for storage in ["memory", "disk"] {
        let dir = tempfile::tempdir().unwrap();
        let config = if storage == "memory" {
            LedgerConfig::memory()
        } else {
            LedgerConfig::disk(dir.path())
        };
        let l = Ledger::open(config).unwrap();
        let first = append(&l, "a", "k", "recorded").await;
        let mut requests = Vec::new();
        // Over 1,024 per context after the append_id splits: runs fill up and a new one starts.
        for i in 0..3300 {
            let context = ["a", "b", "c"][i % 3];
            requests.push(AppendRequest::new(context, "k", format!("p{i}")));
        }
        requests[10] = AppendRequest::new("", "k", "no context"); // refused alone
        requests[20] = AppendRequest::new("a", "k", "again").with_append_id("x"); // goes alone
        requests[30] = AppendRequest::new("a", "k", "again").with_append_id("x"); // its retry
        let sent = requests.clone();
        let outcomes = l.append_many(requests).await;
        assert_eq!(outcomes.len(), sent.len(), "{storage}");
        assert!(matches!(outcomes[10], Err(LedgerError::InvalidArgument(_))), "{storage}");
        let x = outcomes[20].as_ref().unwrap();
        assert_eq!(outcomes[30].as_ref().unwrap(), x, "{storage}: the retry returns the entry");
        let mut last: BTreeMap<&str, u64> = BTreeMap::from([("a", first.sequence().0)]);
        for (i, (outcome, req)) in outcomes.iter().zip(&sent).enumerate() {
            if i == 10 || i == 30 {
                continue;
            }
            let entry = outcome.as_ref().unwrap();
            assert_eq!(entry.payload(), &req.payload, "{storage}: #{i} answers its request");
            let previous = last.insert(req.context_id.as_str(), entry.sequence().0).unwrap_or(0);
            assert_eq!(entry.sequence().0, previous + 1, "{storage}: #{i} in order");
        }
        let context_a = l.get(GetRequest::all("a")).await.unwrap();
        assert_eq!(context_a.latest_sequence, last["a"]);
        assert_eq!(context_a.entries[0], first);
        l.close().await.unwrap();
        drop(l);
        if storage == "disk" {
            // Acknowledged means durable: all there after reopening.
            let l = Ledger::open(LedgerConfig::disk(dir.path())).unwrap();
            for (context, latest) in &last {
                let held = l.get(GetRequest::all(*context)).await.unwrap();
                assert_eq!(held.latest_sequence, *latest);
                let ours: Vec<_> = outcomes
                    .iter()
                    .zip(&sent)
                    .enumerate()
                    .filter(|(i, (_, r))| *i != 30 && r.context_id == *context)
                    .filter_map(|(_, (o, _))| o.as_ref().ok().cloned())
                    .collect();
                let tail = &held.entries[held.entries.len() - ours.len()..];
                assert_eq!(tail, &ours[..], "{context}");
            }
        }
    }
}
