//! Watch: no gap and no duplicate while appends race with subscriptions, stalled and lagging
//! watchers, contexts that do not exist yet, and cleanup.
#![allow(clippy::cast_possible_truncation, reason = "test sizes and indices are small")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use converge_core::Entry;
use converge_ledger::{
    AppendRequest, Ledger, LedgerApi, LedgerConfig, LedgerError, WatchRequest, WatchStream,
};
use futures_util::StreamExt;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(60);

async fn watch(l: &Ledger, ctx: &str, from: u64, key: Option<&str>) -> WatchStream {
    l.watch(WatchRequest { context_id: ctx.into(), key: key.map(Into::into), from_sequence: from })
        .await
        .unwrap()
}

async fn take(stream: &mut WatchStream, n: usize) -> Vec<Arc<Entry>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let next = timeout(WAIT, stream.next()).await.expect("watch delivers in time");
        out.push(next.expect("stream open").expect("no error"));
    }
    out
}

fn seqs(entries: &[Arc<Entry>]) -> Vec<u64> {
    entries.iter().map(|e| e.sequence().0).collect()
}

/// Appends `n` entries to `ctx` with `in_flight` appends at a time.
async fn write(l: &Ledger, ctx: &str, n: usize, in_flight: usize) {
    let l = l.clone();
    let ctx = ctx.to_string();
    futures_util::stream::iter(0..n)
        .for_each_concurrent(in_flight, |i| {
            let l = l.clone();
            let ctx = ctx.clone();
            async move {
                let key = if i % 2 == 0 { "even" } else { "odd" };
                l.append(AppendRequest::new(ctx, key, format!("entry {i}"))).await.unwrap();
            }
        })
        .await;
}

async fn race(l: Ledger) {
    const N: usize = 3000;
    let writer = tokio::spawn({
        let l = l.clone();
        async move { write(&l, "race", N, 32).await }
    });
    let mut watchers = Vec::new();
    for w in 0..40u64 {
        let l = l.clone();
        watchers.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(w * 373 % 20_000)).await;
            let mut stream = watch(&l, "race", 0, None).await;
            seqs(&take(&mut stream, N).await)
        }));
    }
    writer.await.unwrap();
    let expected: Vec<u64> = (1..=N as u64).collect();
    for w in watchers {
        assert_eq!(w.await.unwrap(), expected, "each watcher sees exactly 1..=N in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_watchers_subscribing_while_a_writer_appends_flat_out_memory() {
    race(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_watchers_subscribing_while_a_writer_appends_flat_out_disk() {
    let dir = tempfile::tempdir().unwrap();
    race(disk(dir.path())).await;
}

/// Appends entries `range` to `ctx` in order, `batch` at a time: entry `i` is sequence `i`,
/// with key "odd" or "even" after it.
async fn write_in_order(l: &Ledger, ctx: &str, range: std::ops::RangeInclusive<u64>, batch: u64) {
    let mut next = *range.start();
    while next <= *range.end() {
        let last = (next + batch - 1).min(*range.end());
        let requests = (next..=last)
            .map(|seq| {
                let key = if seq % 2 == 1 { "odd" } else { "even" };
                AppendRequest::new(ctx, key, format!("entry {seq}"))
            })
            .collect();
        for (seq, outcome) in (next..).zip(l.append_many(requests).await) {
            assert_eq!(outcome.unwrap().sequence().0, seq);
        }
        next = last + 1;
    }
}

/// Watchers far behind catch up together (sharing what each reads from storage) while the
/// writer goes on: each sees exactly its entries, in order.
async fn catching_up_together(l: Ledger) {
    const BEFORE: u64 = 20_000;
    const TOTAL: u64 = 22_000;
    write_in_order(&l, "deep", 1..=BEFORE, 1000).await;
    let writer = tokio::spawn({
        let l = l.clone();
        async move { write_in_order(&l, "deep", BEFORE + 1..=TOTAL, 50).await }
    });
    let mut watchers = Vec::new();
    for w in 0..36u64 {
        let l = l.clone();
        watchers.push(tokio::spawn(async move {
            // Most start together at 0, others part-way; every fourth filters by key.
            let from = if w % 3 == 0 { w * 397 } else { 0 };
            let key = (w % 4 == 3).then_some("odd");
            let mut stream = watch(&l, "deep", from, key).await;
            let expected: Vec<u64> =
                (from + 1..=TOTAL).filter(|seq| key.is_none() || seq % 2 == 1).collect();
            let got = seqs(&take(&mut stream, expected.len()).await);
            (got, expected)
        }));
    }
    writer.await.unwrap();
    for w in watchers {
        let (got, expected) = w.await.unwrap();
        assert_eq!(got, expected, "a watcher catching up misses nothing and repeats nothing");
    }
    assert_eq!(l.lagging_watchers(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_far_behind_catch_up_together_memory() {
    catching_up_together(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_far_behind_catch_up_together_disk() {
    let dir = tempfile::tempdir().unwrap();
    catching_up_together(disk(dir.path())).await;
}

#[tokio::test]
async fn from_sequence_and_key_filter() {
    let l = memory();
    write(&l, "c", 20, 1).await;
    let mut from = watch(&l, "c", 15, None).await;
    assert_eq!(seqs(&take(&mut from, 5).await), vec![16, 17, 18, 19, 20]);
    let mut odd = watch(&l, "c", 4, Some("odd")).await;
    assert_eq!(seqs(&take(&mut odd, 8).await), vec![6, 8, 10, 12, 14, 16, 18, 20]);
    write(&l, "c", 4, 1).await;
    assert_eq!(seqs(&take(&mut from, 4).await), vec![21, 22, 23, 24]);
    assert_eq!(seqs(&take(&mut odd, 2).await), vec![22, 24]);
}

#[tokio::test]
async fn a_watcher_of_a_context_that_does_not_exist_yet_waits_for_its_first_entry() {
    let l = memory();
    let mut stream = watch(&l, "future", 0, None).await;
    assert!(timeout(Duration::from_millis(50), stream.next()).await.is_err(), "nothing yet");
    write(&l, "future", 3, 1).await;
    assert_eq!(seqs(&take(&mut stream, 3).await), vec![1, 2, 3]);
}

async fn stalled(l: Ledger, n: usize) {
    let mut stalled = watch(&l, "busy", 0, None).await;
    let mut active = watch(&l, "busy", 0, None).await;
    write(&l, "busy", 1, 1).await;
    assert_eq!(seqs(&take(&mut stalled, 1).await), vec![1]);
    // The stalled watcher is not polled at all while n entries are appended: the writer must
    // finish anyway (it never waits for a watcher).
    timeout(Duration::from_secs(300), write(&l, "busy", n, 64))
        .await
        .expect("the writer is never held up by a stalled watcher");
    assert_eq!(seqs(&take(&mut active, n + 1).await), (1..=n as u64 + 1).collect::<Vec<_>>());
    // The stalled watcher resumes: it finds it lagged, catches up from storage, misses nothing.
    let mut rest = take(&mut stalled, 1).await;
    assert_eq!(l.lagging_watchers(), 1, "it fell behind the live feed and reads from storage");
    rest.extend(take(&mut stalled, n - 1).await);
    assert_eq!(seqs(&rest), (2..=n as u64 + 1).collect::<Vec<_>>());
    assert_eq!(l.lagging_watchers(), 0, "caught up again");
    write(&l, "busy", 2, 1).await;
    assert_eq!(
        seqs(&take(&mut stalled, 2).await),
        vec![n as u64 + 2, n as u64 + 3],
        "and rejoined the live feed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_while_100_000_entries_are_appended_memory() {
    stalled(memory(), 100_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_while_20_000_entries_are_appended_disk() {
    let dir = tempfile::tempdir().unwrap();
    stalled(disk(dir.path()), 20_000).await;
}

#[tokio::test]
async fn dropping_watchers_frees_their_resources() {
    let l = memory();
    let streams: Vec<_> = futures_util::future::join_all((0..10).map(|i| {
        let l = l.clone();
        async move { watch(&l, &format!("c{}", i % 3), 0, None).await }
    }))
    .await;
    assert_eq!((l.watchers(), l.watched_contexts()), (10, 3));
    drop(streams);
    assert_eq!((l.watchers(), l.watched_contexts()), (0, 0));
    // A new watcher after that works as before.
    let mut again = watch(&l, "c0", 0, None).await;
    write(&l, "c0", 1, 1).await;
    assert_eq!(seqs(&take(&mut again, 1).await), vec![1]);
}

#[tokio::test]
async fn the_watcher_cap_is_enforced() {
    let mut config = LedgerConfig::memory();
    config.watchers_max = 2;
    let l = Ledger::open(config).unwrap();
    let _a = watch(&l, "c", 0, None).await;
    let _b = watch(&l, "c", 0, None).await;
    let refused = l.watch(WatchRequest { context_id: "c".into(), ..Default::default() }).await;
    assert!(matches!(refused, Err(LedgerError::ResourceExhausted(m)) if m.contains("2 watchers")));
}

#[tokio::test]
async fn closing_ends_watch_streams_with_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let l = disk(dir.path());
    write(&l, "c", 2, 1).await;
    let mut stream = watch(&l, "c", 0, None).await;
    assert_eq!(seqs(&take(&mut stream, 2).await), vec![1, 2]);
    l.close().await.unwrap();
    match timeout(WAIT, stream.next()).await.unwrap() {
        Some(Err(LedgerError::Unavailable(m))) => assert!(m.contains("resume"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(timeout(WAIT, stream.next()).await.unwrap().is_none(), "then the stream ends");
    assert!(matches!(
        l.append(AppendRequest::new("c", "k", "p")).await,
        Err(LedgerError::Unavailable(_))
    ));
}

/// CONTRACT §0.6: watching contexts that do not exist holds nothing once the watch ends, and
/// a watched context that then gets written keeps its entries.
#[tokio::test]
async fn watches_of_unknown_contexts_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, l) in both(dir.path()) {
        for i in 0..10_000 {
            let stream = watch(&l, &format!("unknown-{i}"), 0, None).await;
            drop(stream);
        }
        assert_eq!(l.stats().contexts, 0, "{mode}: no context is left after its watch");
        let mut stream = watch(&l, "written-while-watched", 0, None).await;
        l.append(AppendRequest::new("written-while-watched", "k", "x")).await.unwrap();
        assert_eq!(seqs(&take(&mut stream, 1).await), [1]);
        drop(stream);
        assert_eq!(l.stats().contexts, 1, "{mode}: a written context stays");
    }
}

/// The live window is bounded in bytes: a stalled watcher of large entries falls back to
/// storage, and still sees every entry once, in order.
#[tokio::test]
async fn large_entries_push_a_stalled_watcher_to_storage_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let l = disk(dir.path());
    let mut stream = watch(&l, "big", 0, None).await;
    let payload = vec![7u8; 1024 * 1024];
    let n = converge_ledger::WATCH_WINDOW_BYTES_MAX / payload.len() * 2;
    for _ in 0..n {
        l.append(AppendRequest::new("big", "k", payload.clone())).await.unwrap();
    }
    let got = take(&mut stream, n).await;
    assert_eq!(seqs(&got), (1..=n as u64).collect::<Vec<_>>());
}
