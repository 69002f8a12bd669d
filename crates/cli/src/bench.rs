//! `bench`: a gRPC load generator. Appends from `--in-flight` concurrent tasks over `--clients`
//! connections for `--duration` seconds (paced at `--rate` if given), optionally with
//! `--watchers` watching the first context (over `--watch-clients` connections of their own),
//! against `--server` or against a node it starts itself (durable, in a temporary directory).
//! Prints appends/s, latency percentiles, watch delivery latency and, when it can see the
//! node, the median fsync measured in the same run. With `--cold-reads N` it then reads the
//! newest entries of N contexts picked at random, one at a time: against a node restarted
//! after the load, each is a context idle since the restart, loaded from the index.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "benchmark arithmetic on counts and durations"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use converge_api::{AppendRequest, GetRequest, LedgerApi, WatchRequest};
use converge_client::{Client, ClientConfig};
use converge_ledger::{Ledger, LedgerConfig, StoreConfig};
use futures_util::StreamExt as _;
use tokio::sync::{Mutex, oneshot};

use crate::cli::StorageArg;
use crate::output;
use crate::skew::{Distribution, SplitMix64, Spread};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The node to load (e.g. <http://127.0.0.1:50051>); without it, bench starts one itself.
    #[arg(long)]
    pub server: Option<String>,
    /// The node's HTTP port (e.g. <http://127.0.0.1:9090>), to read its fsync latency from /metrics.
    #[arg(long)]
    pub metrics: Option<String>,
    /// gRPC connections.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// How appends travel: `stream` (the client's default: concurrent appends share its
    /// `AppendStream`s) or `unary` (one `Append` call each).
    #[arg(long, value_enum, default_value_t = Mode::Stream)]
    pub mode: Mode,
    /// Appends in flight at once (spread over the connections).
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// Payload size in bytes (at least 8: the send time rides in it).
    #[arg(long, default_value_t = 1024)]
    pub payload_bytes: usize,
    /// Contexts appended to.
    #[arg(long, default_value_t = 64)]
    pub contexts: usize,
    /// How appends spread over the contexts: `uniform` (round robin) or `zipf` (by rank,
    /// `--zipf-s`: a few hot contexts and a long idle tail, like real traffic).
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// The exponent of `--distribution zipf`.
    #[arg(long, default_value_t = 0.99)]
    pub zipf_s: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Watchers of the first context.
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// gRPC connections the watchers share, apart from the appenders' (watchers are usually
    /// other processes than writers).
    #[arg(long, default_value_t = 4)]
    pub watch_clients: usize,
    /// Appends per second in all (default: as fast as possible).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Storage of a node bench starts itself.
    #[arg(long, value_enum, default_value_t = StorageArg::Disk)]
    pub storage: StorageArg,
    /// Data directory of a node bench starts itself (default: a temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// After the load, read the newest 10 entries of this many contexts picked at random among
    /// `--contexts`, one at a time, and open as many Watches of others until each delivers
    /// its first entry; print both latencies (`--duration 0` reads without loading: against a
    /// restarted node the contexts are cold).
    #[arg(long, default_value_t = 0)]
    pub cold_reads: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How the bench's appends travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One `Append` call per append.
    Unary,
    /// Concurrent appends share the client's `AppendStream`s.
    Stream,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::Stream => "stream",
        }
    }
}

/// A node started by bench, stopped when dropped.
struct OwnNode {
    ledger: Ledger,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
}

async fn start_node(args: &BenchArgs) -> anyhow::Result<(String, OwnNode)> {
    let (storage, dir) = match (args.storage, &args.data_dir) {
        (StorageArg::Memory, _) => (StoreConfig::memory(), None),
        (StorageArg::Disk, Some(dir)) => (StoreConfig::disk(dir), None),
        (StorageArg::Disk, None) => {
            let dir = tempfile::tempdir().context("cannot make a temporary data directory")?;
            (StoreConfig::disk(dir.path()), Some(dir))
        }
    };
    let ledger =
        tokio::task::spawn_blocking(move || Ledger::open(LedgerConfig::with_storage(storage)))
            .await??;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = grpc.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = ledger.clone();
    let task = tokio::spawn(async move {
        let listeners = converge_server::Listeners { grpc, http: None };
        if let Err(err) = converge_server::run(
            serving,
            listeners,
            converge_server::Security::default(),
            async move {
                let _ = stopped.await;
            },
        )
        .await
        {
            eprintln!("bench node failed: {err}");
        }
    });
    Ok((format!("http://{addr}"), OwnNode { ledger, stop: Some(stop), task, _dir: dir }))
}

impl OwnNode {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
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

/// Acknowledgement times of the watched context's entries, by sequence.
type Acks = Arc<Mutex<HashMap<u64, u64>>>;

struct Load {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

async fn appenders(
    clients: &[Client],
    args: &BenchArgs,
    origin: Instant,
    acks: &Acks,
) -> anyhow::Result<Load> {
    let deadline = origin + Duration::from_secs_f64(args.duration);
    let next = Arc::new(AtomicU64::new(0));
    let spread = Spread::new(args.distribution, args.contexts, args.zipf_s);
    let mut tasks = Vec::with_capacity(args.in_flight);
    for t in 0..args.in_flight {
        let client = clients[t % clients.len()].clone();
        let next = Arc::clone(&next);
        let acks = Arc::clone(acks);
        let (spread, payload_bytes, rate, watched) =
            (spread.clone(), args.payload_bytes.max(8), args.rate, args.watchers > 0);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut rng = SplitMix64::new(t as u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if let Some(rate) = rate {
                    let at = origin + Duration::from_secs_f64(i as f64 / rate as f64);
                    if at >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                } else if Instant::now() >= deadline {
                    break;
                }
                let context = spread.pick(i, &mut rng);
                let mut payload = vec![(i % 251) as u8; payload_bytes];
                let started = Instant::now();
                payload[..8].copy_from_slice(
                    &(started.duration_since(origin).as_nanos() as u64).to_le_bytes(),
                );
                let req = AppendRequest::new(format!("bench-{context}"), "bench", payload);
                let entry = client.append(req).await?;
                latencies.push(started.elapsed());
                if watched && context == 0 {
                    acks.lock()
                        .await
                        .insert(entry.sequence().0, origin.elapsed().as_nanos() as u64);
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    latencies.sort_unstable();
    Ok(Load { latencies, elapsed: origin.elapsed() })
}

/// The entries a cold read asks for: the newest of a context, as an engine resuming a run does.
const COLD_READ_LIMIT: u32 = 10;

/// The latencies of cold reads, sorted: Gets and Watches.
#[derive(Default)]
struct ColdReads {
    gets: Vec<Duration>,
    watches: Vec<Duration>,
}

/// Reads the newest [`COLD_READ_LIMIT`] entries of `--cold-reads` contexts picked at random
/// among `--contexts`, one at a time, and opens a Watch of as many others (from the start:
/// at many contexts each holds a few entries, so its first is near the tip) until it
/// delivers an entry.
async fn cold_reads(client: &Client, args: &BenchArgs) -> anyhow::Result<ColdReads> {
    let mut rng = SplitMix64::new(0x00c0_1d5e_ed00);
    let mut cold = ColdReads::default();
    let mut pick = || format!("bench-{}", rng.next() % args.contexts as u64);
    let empty = |context: &str| {
        anyhow::anyhow!("{context} has no entries: load the node with the same --contexts first")
    };
    for _ in 0..args.cold_reads {
        let context = pick();
        let request = GetRequest {
            newest_first: true,
            limit: COLD_READ_LIMIT,
            ..GetRequest::all(context.clone())
        };
        let started = Instant::now();
        let response = client.get(request).await?;
        cold.gets.push(started.elapsed());
        anyhow::ensure!(!response.entries.is_empty(), empty(&context));

        let context = pick();
        let request = WatchRequest { context_id: context.clone(), key: None, from_sequence: 0 };
        let started = Instant::now();
        let mut watch = client.watch(request).await?;
        let first = tokio::time::timeout(Duration::from_secs(10), watch.next()).await;
        cold.watches.push(started.elapsed());
        anyhow::ensure!(matches!(first, Ok(Some(Ok(_)))), empty(&context));
    }
    cold.gets.sort_unstable();
    cold.watches.sort_unstable();
    Ok(cold)
}

/// Watches of `bench-0`; each returns (sequence, send time, receive time) of what it saw.
async fn watchers(
    clients: &[Client],
    count: usize,
    origin: Instant,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<Vec<(u64, u64, u64)>>>> {
    let mut handles = Vec::with_capacity(count);
    // Live entries only: start after what the context already holds.
    let from_sequence =
        if count > 0 { clients[0].tree_head("bench-0").await?.tree_size } else { 0 };
    for w in 0..count {
        let client = clients[w % clients.len()].clone();
        let stream = client
            .watch(WatchRequest { context_id: "bench-0".into(), key: None, from_sequence })
            .await?;
        let mut stop = stop.clone();
        handles.push(tokio::spawn(async move {
            // One stop future for the whole watch, not one per entry (the bench's own cost
            // per delivery should stay small next to the client's).
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let mut stream = stream.take_until(Box::pin(stopped));
            let mut seen = Vec::new();
            while let Some(Ok(entry)) = stream.next().await {
                let mut sent = [0; 8];
                sent.copy_from_slice(&entry.payload()[..8]);
                let received = origin.elapsed().as_nanos() as u64;
                seen.push((entry.sequence().0, u64::from_le_bytes(sent), received));
            }
            seen
        }));
    }
    Ok(handles)
}

async fn fsync_median(node: Option<&OwnNode>, metrics: Option<&str>) -> Option<Duration> {
    if let Some(node) = node {
        return node.ledger.stats().log.and_then(|l| l.sync_median);
    }
    let url = metrics?;
    let body = http_get(&format!("{}/metrics", url.trim_end_matches('/'))).await.ok()?;
    let line = body.lines().find(|l| l.starts_with("converge_fsync_median_seconds "))?;
    let seconds: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_secs_f64(seconds))
}

/// A minimal HTTP/1.0 GET (the metrics endpoint is plain HTTP on loopback).
async fn http_get(url: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = url.strip_prefix("http://").context("the metrics URL must start with http://")?;
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    stream.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body.split_once("\r\n\r\n").map_or(body.clone(), |(_, b)| b.to_string()))
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.clients > 0 && args.in_flight > 0 && args.contexts > 0 && args.watch_clients > 0,
        "--clients, --watch-clients, --in-flight and --contexts must be positive"
    );
    let (server, node) = if let Some(server) = &args.server {
        (server.clone(), None)
    } else {
        let (url, node) = start_node(&args).await?;
        (url, Some(node))
    };
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let mut config = ClientConfig::new(server.clone());
        if args.mode == Mode::Unary {
            config.append_streams = 0;
        }
        clients.push(Client::connect_with(config).await?);
    }
    let origin = Instant::now();
    let acks: Acks = Arc::default();
    let (stop_watchers, stop) = tokio::sync::watch::channel(false);
    let mut watch_clients = Vec::new();
    if args.watchers > 0 {
        for _ in 0..args.watch_clients {
            watch_clients.push(Client::connect(server.clone()).await?);
        }
    }
    let watches = watchers(&watch_clients, args.watchers, origin, &stop).await?;
    let load = appenders(&clients, &args, origin, &acks).await?;
    let fsync = fsync_median(node.as_ref(), args.metrics.as_deref()).await;
    // Give watchers a moment to receive the last entries, then stop them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut delivery = Vec::new();
    let mut end_to_end = Vec::new();
    let acks = acks.lock().await.clone();
    let _ = stop_watchers.send(true);
    for handle in watches {
        if let Ok(seen) = handle.await {
            for (seq, sent, received) in seen {
                end_to_end.push(Duration::from_nanos(received.saturating_sub(sent)));
                if let Some(ack) = acks.get(&seq) {
                    delivery.push(Duration::from_nanos(received.saturating_sub(*ack)));
                }
            }
        }
    }
    delivery.sort_unstable();
    end_to_end.sort_unstable();
    let cold = cold_reads(&clients[0], &args).await?;
    if let Some(node) = node {
        node.stop().await;
    }
    if !load.latencies.is_empty() || cold.gets.is_empty() {
        report(&args, &server, &load, fsync, &delivery, &end_to_end);
    }
    if !cold.gets.is_empty() {
        report_cold_reads(&args, &cold);
    }
    Ok(ExitCode::SUCCESS)
}

fn report(
    args: &BenchArgs,
    server: &str,
    load: &Load,
    fsync: Option<Duration>,
    delivery: &[Duration],
    end_to_end: &[Duration],
) {
    let rate = load.latencies.len() as f64 / load.elapsed.as_secs_f64();
    let l = &load.latencies;
    if args.json {
        output::line(&serde_json::json!({
            "server": server, "mode": args.mode.name(), "clients": args.clients, "in_flight": args.in_flight,
            "payload_bytes": args.payload_bytes, "contexts": args.contexts, "distribution": args.distribution.name(),
            "duration_s": args.duration,
            "watchers": args.watchers, "rate_target": args.rate,
            "appends": l.len(), "appends_per_s": rate,
            "latency_ms": { "p50": ms(percentile(l, 0.5)), "p99": ms(percentile(l, 0.99)), "p999": ms(percentile(l, 0.999)) },
            "fsync_median_ms": fsync.map(ms),
            "watch_delivery_ms": { "samples": delivery.len(), "p50": ms(percentile(delivery, 0.5)), "p99": ms(percentile(delivery, 0.99)) },
            "watch_end_to_end_ms": { "p50": ms(percentile(end_to_end, 0.5)), "p99": ms(percentile(end_to_end, 0.99)) },
        }).to_string());
        return;
    }
    output::line(&format!(
        "{} appends in {:.1} s: {rate:.0} appends/s ({}: {} in flight over {} connections, {} B payloads, {} contexts, {})",
        l.len(),
        load.elapsed.as_secs_f64(),
        args.mode.name(),
        args.in_flight,
        args.clients,
        args.payload_bytes,
        args.contexts,
        args.distribution.name()
    ));
    output::line(&format!(
        "append latency: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
        ms(percentile(l, 0.5)),
        ms(percentile(l, 0.99)),
        ms(percentile(l, 0.999))
    ));
    if let Some(fsync) = fsync {
        output::line(&format!(
            "median fsync {:.3} ms; in flight ÷ fsync = {:.0}/s; measured is {:.0}% of that",
            ms(fsync),
            args.in_flight as f64 / fsync.as_secs_f64(),
            100.0 * rate / (args.in_flight as f64 / fsync.as_secs_f64())
        ));
    }
    if args.watchers > 0 {
        output::line(&format!(
            "watch delivery ({} watchers, {} deliveries): from acknowledgement p50 {:.3} ms, p99 {:.3} ms; from the append call p50 {:.3} ms, p99 {:.3} ms",
            args.watchers,
            end_to_end.len(),
            ms(percentile(delivery, 0.5)),
            ms(percentile(delivery, 0.99)),
            ms(percentile(end_to_end, 0.5)),
            ms(percentile(end_to_end, 0.99))
        ));
    }
}

fn report_cold_reads(args: &BenchArgs, cold: &ColdReads) {
    let summary = |latencies: &[Duration]| {
        (
            ms(percentile(latencies, 0.5)),
            ms(percentile(latencies, 0.99)),
            ms(latencies.last().copied().unwrap_or_default()),
        )
    };
    let (p50, p99, max) = summary(&cold.gets);
    let (w50, w99, wmax) = summary(&cold.watches);
    if args.json {
        output::line(
            &serde_json::json!({
                "cold_reads": cold.gets.len(), "limit": COLD_READ_LIMIT, "contexts": args.contexts,
                "latency_ms": { "p50": p50, "p99": p99, "max": max },
                "watch_first_entry_ms": { "p50": w50, "p99": w99, "max": wmax },
            })
            .to_string(),
        );
        return;
    }
    output::line(&format!(
        "cold reads ({} contexts of {}, newest {COLD_READ_LIMIT} entries each, one at a time): p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms",
        cold.gets.len(),
        args.contexts
    ));
    output::line(&format!(
        "cold watches ({} other contexts, until the first entry arrives): p50 {w50:.3} ms, p99 {w99:.3} ms, max {wmax:.3} ms",
        cold.watches.len(),
    ));
}
