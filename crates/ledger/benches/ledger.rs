//! Benchmarks of the embedded ledger (the targets of the embedded-ledger issue).
//!
//! Run all: `cargo bench -p converge-ledger --bench ledger`; one scenario:
//! `cargo bench -p converge-ledger --bench ledger -- durable`. Scenarios: `durable`,
//! `group-commit`, `append-many`, `memory`, `reads`, `watch`, `snapshot`, `memory-footprint`, `contexts`. Each figure is
//! the median of several runs, with the spread (min–max) beside it; fsync latency is measured
//! in the same runs, so ratios against it are fair on a noisy machine. Disk scenarios use the
//! system temp directory unless `CONVERGE_BENCH_DIR` names another.
#![allow(missing_docs)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "benchmark arithmetic on counts and durations"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use converge_ledger::{
    AppendRequest, GetRequest, Ledger, LedgerApi, LedgerConfig, ListContextsRequest, LoadRequest,
    WatchRequest,
};
use futures_util::StreamExt;

const RUNS: usize = 3;

fn bench_dir() -> tempfile::TempDir {
    let base =
        std::env::var_os("CONVERGE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::tempdir_in(base).expect("a temp dir for the benchmark")
}

fn payload(i: u64) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; 1024])
}

/// Median and spread of samples.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Run {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    fsync: Option<Duration>,
}

/// `in_flight` tasks append 1 KiB entries in a loop for `duration`, to `contexts` contexts.
async fn append_load(
    ledger: &Ledger,
    in_flight: usize,
    contexts: usize,
    duration: Duration,
) -> Run {
    let stop = Instant::now() + duration;
    let counter = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..in_flight)
        .map(|t| {
            let ledger = ledger.clone();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4096);
                let context = format!("bench-{}", t % contexts);
                while Instant::now() < stop {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    ledger
                        .append(AppendRequest::new(context.as_str(), "facts", payload(i)))
                        .await
                        .expect("append");
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let elapsed = started.elapsed().max(duration);
    all.sort_unstable();
    Run {
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        fsync: ledger.stats().log.and_then(|l| l.sync_median),
    }
}

fn report(label: &str, runs: &[Run]) {
    let (rate, lo, hi) = stats(runs.iter().map(|r| r.per_second).collect());
    let (p50, _, _) = stats(runs.iter().map(|r| ms(r.p50)).collect());
    let (p99, p99_lo, p99_hi) = stats(runs.iter().map(|r| ms(r.p99)).collect());
    let fsync = runs.iter().filter_map(|r| r.fsync).map(ms).collect::<Vec<_>>();
    let fsync = if fsync.is_empty() {
        String::new()
    } else {
        format!(", median fsync {:.3} ms", stats(fsync).0)
    };
    println!(
        "{label}: {rate:.0} entries/s (runs {lo:.0}–{hi:.0}), p50 {p50:.3} ms, p99 {p99:.3} ms ({p99_lo:.3}–{p99_hi:.3}){fsync}"
    );
}

async fn durable() {
    for (label, contexts) in [("1,024 contexts", 1024), ("one context", 1)] {
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            let dir = bench_dir();
            let ledger = Ledger::open(LedgerConfig::disk(dir.path())).expect("open");
            runs.push(append_load(&ledger, 1024, contexts, Duration::from_secs(3)).await);
            ledger.close().await.expect("close");
        }
        report(&format!("durable append, 1 KiB, 1,024 in flight, {label}"), &runs);
    }
}

async fn group_commit() {
    let linger = std::env::var("CONVERGE_BENCH_LINGER_US").ok().and_then(|v| v.parse().ok());
    for c in [1usize, 16, 64, 256] {
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            let dir = bench_dir();
            let mut config = LedgerConfig::disk(dir.path());
            if let Some(us) = linger {
                config.storage.group_commit_linger_max = Duration::from_micros(us);
            }
            let ledger = Ledger::open(config).expect("open");
            runs.push(append_load(&ledger, c, c.min(64), Duration::from_secs(2)).await);
            let batches = ledger.stats().log.map_or(0, |l| l.batches);
            let records = ledger.stats().log.map_or(0, |l| l.records);
            println!("    mean batch {:.1} records", records as f64 / batches.max(1) as f64);
            ledger.close().await.expect("close");
        }
        report(&format!("group commit, {c} in flight"), &runs);
        let ideal: Vec<f64> =
            runs.iter().filter_map(|r| r.fsync.map(|f| c as f64 / f.as_secs_f64())).collect();
        let ratio: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.fsync.map(|f| r.per_second / (c as f64 / f.as_secs_f64())))
            .collect();
        if !ideal.is_empty() {
            let (ideal, _, _) = stats(ideal);
            let (ratio, lo, hi) = stats(ratio);
            println!(
                "  c ÷ median fsync = {ideal:.0}/s; measured ÷ that = {:.0}% (runs {:.0}–{:.0}%)",
                ratio * 100.0,
                lo * 100.0,
                hi * 100.0
            );
        }
    }
}

async fn memory() {
    for (label, contexts) in [("64 contexts", 64), ("one context", 1)] {
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            let ledger = Ledger::open(LedgerConfig::memory()).expect("open");
            runs.push(append_load(&ledger, 64, contexts, Duration::from_secs(2)).await);
        }
        report(&format!("memory mode, 1 KiB, 64 appenders, {label}"), &runs);
    }
}

/// `writers` tasks each send batches of `batch` 1 KiB entries with `append_many` for
/// `duration`, each to its own context.
async fn many_load(ledger: &Ledger, writers: usize, batch: usize, duration: Duration) -> Run {
    let stop = Instant::now() + duration;
    let counter = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..writers)
        .map(|t| {
            let ledger = ledger.clone();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut appended = 0usize;
                let context = format!("many-{t}");
                while Instant::now() < stop {
                    let first = counter.fetch_add(batch as u64, Ordering::Relaxed);
                    let requests = (first..first + batch as u64)
                        .map(|i| AppendRequest::new(context.as_str(), "facts", payload(i)))
                        .collect();
                    let started = Instant::now();
                    for outcome in ledger.append_many(requests).await {
                        outcome.expect("append");
                    }
                    appended += batch;
                    latencies.push(started.elapsed());
                }
                (appended, latencies)
            })
        })
        .collect();
    let started = Instant::now();
    let (mut count, mut all) = (0, Vec::new());
    for t in tasks {
        let (n, latencies) = t.await.expect("task");
        count += n;
        all.extend(latencies);
    }
    let elapsed = started.elapsed().max(duration);
    all.sort_unstable();
    Run {
        per_second: count as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        fsync: ledger.stats().log.and_then(|l| l.sync_median),
    }
}

/// `append_many` in memory and on disk (latencies are per batch).
async fn append_many() {
    for (storage, writers, batch) in
        [("memory", 4, 1024), ("durable", 4, 1024), ("durable", 16, 256)]
    {
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            let dir = bench_dir();
            let config = if storage == "memory" {
                LedgerConfig::memory()
            } else {
                LedgerConfig::disk(dir.path())
            };
            let ledger = Ledger::open(config).expect("open");
            runs.push(many_load(&ledger, writers, batch, Duration::from_secs(3)).await);
            ledger.close().await.expect("close");
        }
        report(
            &format!(
                "append_many, {storage}, 1 KiB, {writers} writers × batches of {batch} (latency per batch)"
            ),
            &runs,
        );
    }
}

/// Fills `context` with `n` entries of 1 KiB, every 100th with key "rare".
async fn fill(ledger: &Ledger, context: &str, n: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..256)
        .map(|_| {
            let ledger = ledger.clone();
            let next = Arc::clone(&next);
            let context = context.to_string();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let key = if i.is_multiple_of(100) { "rare" } else { "facts" };
                    ledger
                        .append(AppendRequest::new(context.as_str(), key, payload(i)))
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("fill task");
    }
}

async fn time_op<F, Fut>(samples: usize, mut op: F) -> (f64, f64, f64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut per_run = Vec::new();
    for _ in 0..RUNS {
        let mut times = Vec::with_capacity(samples);
        for i in 0..samples {
            let started = Instant::now();
            op(i).await;
            times.push(started.elapsed());
        }
        times.sort_unstable();
        per_run.push(times[times.len() / 2].as_secs_f64() * 1e6);
    }
    stats(per_run)
}

async fn reads() {
    const N: u64 = 1_000_000;
    let dir = bench_dir();
    let ledger = Ledger::open(LedgerConfig::disk(dir.path())).expect("open");
    let started = Instant::now();
    fill(&ledger, "big", N).await;
    println!("filled 10^6 entries of 1 KiB in {:.1} s", started.elapsed().as_secs_f64());
    ledger.checkpoint().expect("checkpoint");
    let last10 = time_op(2000, |_| {
        let ledger = ledger.clone();
        async move {
            let got = ledger
                .get(GetRequest {
                    context_id: "big".into(),
                    after_sequence: N - 10,
                    limit: 10,
                    key: None,
                    before_sequence: 0,
                    newest_first: false,
                })
                .await
                .expect("get");
            assert_eq!(got.entries.len(), 10);
        }
    })
    .await;
    println!(
        "last 10 entries of a 10^6-entry context: median {:.1} µs (runs {:.1}–{:.1})",
        last10.0, last10.1, last10.2
    );
    let filtered = time_op(2000, |i| {
        let ledger = ledger.clone();
        async move {
            let after = (i as u64 * 7919) % (N - 2000);
            let req = GetRequest {
                context_id: "big".into(),
                after_sequence: after,
                limit: 10,
                key: Some("rare".into()),
                before_sequence: 0,
                newest_first: false,
            };
            let got = ledger.get(req).await.expect("get");
            assert_eq!(got.entries.len(), 10);
        }
    })
    .await;
    println!(
        "key-filtered Get of 10 matches in a 10^6-entry context: median {:.1} µs (runs {:.1}–{:.1})",
        filtered.0, filtered.1, filtered.2
    );
    newest_first_reads(&ledger, N).await;
    ledger.close().await.expect("close");
    drop(ledger);
    let mut reopen = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let ledger = Ledger::open(LedgerConfig::disk(dir.path())).expect("reopen");
        let head = ledger.tree_head("big").await.expect("head");
        reopen.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(head.tree_size, N);
        ledger.close().await.expect("close");
    }
    let (r, lo, hi) = stats(reopen);
    println!(
        "reopen after 10^6 entries of 1 KiB (clean shutdown): median {r:.0} ms (runs {lo:.0}–{hi:.0})"
    );
}

/// Newest-first reads of the 10^6-entry context `big` (`n` entries, every 100th with key
/// "rare"): the latest entry, and ten of a key below a random sequence.
async fn newest_first_reads(ledger: &Ledger, n: u64) {
    let newest = |key: Option<&str>, before: u64, limit: u32| GetRequest {
        context_id: "big".into(),
        key: key.map(Into::into),
        after_sequence: 0,
        limit,
        before_sequence: before,
        newest_first: true,
    };
    let latest = time_op(2000, |_| {
        let (ledger, req) = (ledger.clone(), newest(None, 0, 1));
        async move {
            let got = ledger.get(req).await.expect("get");
            assert_eq!(got.entries[0].sequence().0, n);
        }
    })
    .await;
    println!(
        "latest entry (newest first, limit 1) of a 10^6-entry context: median {:.1} µs (runs {:.1}–{:.1})",
        latest.0, latest.1, latest.2
    );
    let back = time_op(2000, |i| {
        let before = 2000 + (i as u64 * 7919) % (n - 2000);
        let (ledger, req) = (ledger.clone(), newest(Some("rare"), before, 10));
        async move {
            let got = ledger.get(req).await.expect("get");
            assert_eq!(got.entries.len(), 10);
            assert!(got.entries[0].sequence().0 < before);
        }
    })
    .await;
    println!(
        "key-filtered newest-first Get of 10 matches below a random sequence of a 10^6-entry context: median {:.1} µs (runs {:.1}–{:.1})",
        back.0, back.1, back.2
    );
}

async fn watch() {
    const WATCHERS: usize = 1000;
    const RATE: u64 = 10_000;
    const SECONDS: u64 = 3;
    let total = RATE * SECONDS;
    let dir = bench_dir();
    let ledger = Ledger::open(LedgerConfig::disk(dir.path())).expect("open");
    let origin = Instant::now();
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..=total).map(|_| AtomicU64::new(0)).collect());
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let mut stream = ledger
            .watch(WatchRequest { context_id: "hot".into(), ..Default::default() })
            .await
            .expect("watch");
        watchers.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity((total / 10) as usize);
            let mut n = 0;
            while n < total {
                let entry = stream.next().await.expect("open").expect("entry");
                n += 1;
                let seq = entry.sequence().0;
                if seq % 10 == 0 {
                    let mut sent = [0; 8];
                    sent.copy_from_slice(&entry.payload()[..8]);
                    seen.push((seq, u64::from_le_bytes(sent), origin.elapsed().as_nanos() as u64));
                }
            }
            seen
        }));
    }
    // The writer: RATE appends per second, in batches of 10 every millisecond.
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut issued = 0;
    let mut writers = Vec::new();
    while issued < total {
        tick.tick().await;
        for _ in 0..10 {
            let ledger = ledger.clone();
            let acked = Arc::clone(&acked);
            issued += 1;
            writers.push(tokio::spawn(async move {
                let mut body = vec![0u8; 1024];
                body[..8].copy_from_slice(&(origin.elapsed().as_nanos() as u64).to_le_bytes());
                let entry =
                    ledger.append(AppendRequest::new("hot", "k", body)).await.expect("append");
                acked[entry.sequence().0 as usize]
                    .store(origin.elapsed().as_nanos() as u64, Ordering::SeqCst);
            }));
        }
    }
    for w in writers {
        w.await.expect("writer");
    }
    let mut latencies = Vec::new();
    let mut end_to_end = Vec::new();
    for w in watchers {
        for (seq, sent, at) in w.await.expect("watcher") {
            let ack = acked[seq as usize].load(Ordering::SeqCst);
            latencies.push(Duration::from_nanos(at.saturating_sub(ack)));
            end_to_end.push(Duration::from_nanos(at.saturating_sub(sent)));
        }
    }
    latencies.sort_unstable();
    end_to_end.sort_unstable();
    println!(
        "watch delivery, {WATCHERS} watchers at {RATE} appends/s, from the append call (fsync included): p50 {:.3} ms, p99 {:.3} ms",
        ms(percentile(&end_to_end, 0.5)),
        ms(percentile(&end_to_end, 0.99))
    );
    println!(
        "watch delivery, {WATCHERS} watchers on one context at {RATE} appends/s: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (from acknowledgement to the watcher)",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0))
    );
    ledger.close().await.expect("close");
}

async fn snapshot() {
    let dir = bench_dir();
    let ledger = Ledger::open(LedgerConfig::disk(dir.path())).expect("open");
    fill(&ledger, "src", 10_000).await;
    let blob = ledger.snapshot("src").await.expect("snapshot").snapshot;
    let snap = time_op(10, |_| {
        let ledger = ledger.clone();
        async move {
            ledger.snapshot("src").await.expect("snapshot");
        }
    })
    .await;
    println!(
        "snapshot of 10^4 × 1 KiB: median {:.1} ms (runs {:.1}–{:.1})",
        snap.0 / 1e3,
        snap.1 / 1e3,
        snap.2 / 1e3
    );
    // Into an empty context of the same name on another node (a restore), and into a new
    // context of another name (every hash recomputed for it).
    let load_same = time_op(10, |_| {
        let blob = blob.clone();
        async move {
            let dir = bench_dir();
            let other = Ledger::open(LedgerConfig::disk(dir.path())).expect("open");
            let started = Instant::now();
            let req = LoadRequest {
                load_id: None,
                context_id: "src".into(),
                snapshot: blob,
                fail_if_exists: true,
            };
            assert_eq!(other.load(req).await.expect("load").entries_restored, 10_000);
            let took = started.elapsed();
            other.close().await.expect("close");
            LOAD_TIMES.lock().expect("lock").push(took);
        }
    })
    .await;
    let _ = load_same;
    let times = std::mem::take(&mut *LOAD_TIMES.lock().expect("lock"));
    let per_run: Vec<f64> = times
        .chunks(10)
        .map(|c| {
            let mut c = c.to_vec();
            c.sort_unstable();
            ms(c[c.len() / 2])
        })
        .collect();
    let (m, lo, hi) = stats(per_run);
    println!(
        "load (verify + write) of 10^4 × 1 KiB into the same context id: median {m:.1} ms (runs {lo:.1}–{hi:.1})"
    );
    let load = time_op(10, |i| {
        let ledger = ledger.clone();
        let blob = blob.clone();
        async move {
            let req = LoadRequest {
                load_id: None,
                context_id: format!("dst-{i}-{}", rand_suffix()),
                snapshot: blob,
                fail_if_exists: true,
            };
            assert_eq!(ledger.load(req).await.expect("load").entries_restored, 10_000);
        }
    })
    .await;
    println!(
        "load (verify + rehash + write) of 10^4 × 1 KiB into another context id: median {:.1} ms (runs {:.1}–{:.1})",
        load.0 / 1e3,
        load.1 / 1e3,
        load.2 / 1e3
    );
    ledger.close().await.expect("close");
}

static LOAD_TIMES: std::sync::Mutex<Vec<Duration>> = std::sync::Mutex::new(Vec::new());

fn rand_suffix() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

async fn memory_footprint() {
    const N: u64 = 1_000_000;
    let ledger = Ledger::open(LedgerConfig::memory()).expect("open");
    let before = rss_bytes();
    fill(&ledger, "mem", N).await;
    let after = rss_bytes();
    println!(
        "memory mode: {:.0} bytes of RSS per 1 KiB entry ({} entries)",
        (after - before) as f64 / N as f64,
        N
    );
    assert_eq!(ledger.tree_head("mem").await.expect("head").tree_size, N);
}

/// A ledger on disk holding `n` contexts of one entry each (ids `agent-NNNNNN/run`), reopened
/// so that every context is cold (in the index, none in memory).
async fn many_contexts(dir: &std::path::Path, n: u64) -> Ledger {
    let ledger = Ledger::open(LedgerConfig::disk(dir)).expect("open");
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let requests = chunk
            .iter()
            .map(|i| AppendRequest::new(format!("agent-{i:06}/run"), "k", payload(*i)))
            .collect();
        for outcome in ledger.append_many(requests).await {
            outcome.expect("append");
        }
    }
    ledger.close().await.expect("close");
    drop(ledger);
    Ledger::open(LedgerConfig::disk(dir)).expect("reopen")
}

/// `ListContexts` (CONTRACT §2): a page costs in proportion to what it returns, whether the
/// ledger holds 10^3 contexts or 10^5.
async fn contexts() {
    let mut pages = Vec::new();
    for n in [1_000u64, 100_000] {
        let dir = bench_dir();
        let started = Instant::now();
        let ledger = many_contexts(dir.path(), n).await;
        println!("{n} contexts written and reopened in {:.1} s", started.elapsed().as_secs_f64());
        let page = |token: String, prefix: &str, limit: u32| ListContextsRequest {
            prefix: prefix.into(),
            page_token: token,
            limit,
        };
        let first = time_op(500, |_| {
            let (ledger, req) = (ledger.clone(), page(String::new(), "", 100));
            async move {
                assert_eq!(ledger.list_contexts(req).await.expect("list").contexts.len(), 100);
            }
        })
        .await;
        let middle = time_op(500, |i| {
            let after = format!("agent-{:06}/run", (i as u64 * 7919) % (n - 200));
            let (ledger, req) = (ledger.clone(), page(after, "", 100));
            async move {
                assert_eq!(ledger.list_contexts(req).await.expect("list").contexts.len(), 100);
            }
        })
        .await;
        let prefixed = time_op(500, |i| {
            let prefix = format!("agent-{:05}", (i as u64 * 7919) % (n / 10));
            let (ledger, req) = (ledger.clone(), page(String::new(), &prefix, 0));
            async move {
                assert_eq!(ledger.list_contexts(req).await.expect("list").contexts.len(), 10);
            }
        })
        .await;
        println!(
            "{n} contexts: a page of 100 from the start {:.0} µs (runs {:.0}–{:.0}), after a token {:.0} µs (runs {:.0}–{:.0}); the 10 of a prefix {:.0} µs (runs {:.0}–{:.0})",
            first.0,
            first.1,
            first.2,
            middle.0,
            middle.1,
            middle.2,
            prefixed.0,
            prefixed.1,
            prefixed.2
        );
        let started = Instant::now();
        let (mut token, mut listed) = (String::new(), 0);
        loop {
            let resp = ledger.list_contexts(page(token, "", 1000)).await.expect("list");
            listed += resp.contexts.len() as u64;
            if resp.next_page_token.is_empty() {
                break;
            }
            token = resp.next_page_token;
        }
        assert_eq!(listed, n);
        let all = started.elapsed().as_secs_f64();
        println!(
            "{n} contexts: all of them, 1,000 a page, in {:.0} ms ({:.0} contexts/s)",
            all * 1e3,
            n as f64 / all
        );
        pages.push((first.0, middle.0, prefixed.0));
        ledger.close().await.expect("close");
    }
    println!(
        "10^5 ÷ 10^3 contexts, per page: from the start {:.2}, after a token {:.2}, a prefix {:.2}",
        pages[1].0 / pages[0].0,
        pages[1].1 / pages[0].1,
        pages[1].2 / pages[0].2
    );
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "machine: {} CPUs; runs per figure: {RUNS}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    if wants("memory-footprint") {
        rt.block_on(memory_footprint());
    }
    if wants("durable") {
        rt.block_on(durable());
    }
    if wants("append-many") {
        rt.block_on(append_many());
    }
    if wants("group-commit") {
        rt.block_on(group_commit());
    }
    if wants("memory") && !filter.iter().any(|f| f == "memory-footprint") {
        rt.block_on(memory());
    }
    if wants("reads") {
        rt.block_on(reads());
    }
    if wants("watch") {
        rt.block_on(watch());
    }
    if wants("snapshot") {
        rt.block_on(snapshot());
    }
    if wants("contexts") {
        rt.block_on(contexts());
    }
}
