//! Prometheus metrics: per-RPC counts and latency histograms, errors by status, appended
//! bytes, and the ledger's own gauges (watchers, lagging watchers, fsync batches), rendered in
//! the text exposition format on the HTTP port's `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use converge_ledger::Ledger;

/// The RPCs the server counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `ContextService/Append`.
    Append,
    /// `ContextService/Get`.
    Get,
    /// `ContextService/Snapshot`.
    Snapshot,
    /// `ContextService/Load`.
    Load,
    /// `ContextService/Watch` (counted when the stream opens).
    Watch,
    /// `ContextService/AppendStream` (counted when the stream opens; its appends count as
    /// `Append`).
    AppendStream,
    /// `ContextService/ListContexts`.
    ListContexts,
    /// `IntegrityService/GetTreeHead`.
    GetTreeHead,
    /// `IntegrityService/ProveInclusion`.
    ProveInclusion,
    /// `IntegrityService/ProveConsistency`.
    ProveConsistency,
}

const METHODS: [Method; 10] = [
    Method::Append,
    Method::Get,
    Method::Snapshot,
    Method::Load,
    Method::Watch,
    Method::AppendStream,
    Method::ListContexts,
    Method::GetTreeHead,
    Method::ProveInclusion,
    Method::ProveConsistency,
];

impl Method {
    fn name(self) -> &'static str {
        match self {
            Self::Append => "Append",
            Self::Get => "Get",
            Self::Snapshot => "Snapshot",
            Self::Load => "Load",
            Self::Watch => "Watch",
            Self::AppendStream => "AppendStream",
            Self::ListContexts => "ListContexts",
            Self::GetTreeHead => "GetTreeHead",
            Self::ProveInclusion => "ProveInclusion",
            Self::ProveConsistency => "ProveConsistency",
        }
    }

    fn index(self) -> usize {
        METHODS.iter().position(|m| *m == self).unwrap_or(0)
    }
}

/// Latency bucket bounds, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0];

/// gRPC status codes 0..=16.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    latency: [Histogram; METHODS.len()],
    errors: [AtomicU64; CODES.len()],
    append_bytes: AtomicU64,
    panics: AtomicU64,
    /// Calls refused before reaching a handler.
    pub auth: std::sync::Arc<crate::auth::AuthCounters>,
    /// Connections refused or cut off by the connection bounds.
    pub connections: std::sync::Arc<crate::connections::ConnectionCounters>,
}

impl Metrics {
    /// Records a finished RPC with its outcome.
    pub fn observe(&self, method: Method, took: Duration, code: tonic::Code) {
        self.latency[method.index()].observe(took);
        if code != tonic::Code::Ok {
            let index = (code as usize).min(CODES.len() - 1);
            self.errors[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts the payload bytes of an acknowledged append.
    pub fn appended(&self, bytes: usize) {
        self.append_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a handler panic (answered with `INTERNAL`).
    pub fn panicked(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition of every metric.
    pub fn render(&self, ledger: &Ledger) -> String {
        let mut out = String::with_capacity(8192);
        self.render_rpcs(&mut out);
        let _ = writeln!(out, "# HELP converge_errors_total RPCs answered with a non-OK status.");
        let _ = writeln!(out, "# TYPE converge_errors_total counter");
        for (code, count) in CODES.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "converge_errors_total{{code=\"{code}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let appends = self.latency[Method::Append.index()].count.load(Ordering::Relaxed);
        counter(
            &mut out,
            "converge_appends_total",
            "Appends handled (Append calls and AppendStream requests).",
            appends,
        );
        counter(
            &mut out,
            "converge_append_payload_bytes_total",
            "Payload bytes of acknowledged appends.",
            self.append_bytes.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "converge_handler_panics_total",
            "Handler panics answered with INTERNAL.",
            self.panics.load(Ordering::Relaxed),
        );
        self.render_refusals(&mut out);
        gauge(&mut out, "converge_watchers", "Watch streams open.", ledger.watchers() as u64);
        gauge(
            &mut out,
            "converge_lagging_watchers",
            "Watchers catching up from storage.",
            ledger.lagging_watchers() as u64,
        );
        gauge(
            &mut out,
            "converge_watched_contexts",
            "Contexts with a live feed.",
            ledger.watched_contexts() as u64,
        );
        let stats = ledger.stats();
        gauge(
            &mut out,
            "converge_contexts_loaded",
            "Contexts held in memory.",
            stats.contexts as u64,
        );
        gauge(
            &mut out,
            "converge_open_segments",
            "Log segment files held open for reads.",
            stats.open_segments as u64,
        );
        gauge(
            &mut out,
            "converge_append_bytes_free",
            "Bytes of the append budget free now (appends and loads hold theirs until durable).",
            ledger.append_bytes_free() as u64,
        );
        render_waits(&mut out, ledger);
        counter(
            &mut out,
            "converge_checkpoints_total",
            "Index checkpoints written.",
            stats.checkpoints,
        );
        if let Some(log) = stats.log {
            counter(&mut out, "converge_log_records_total", "Log records written.", log.records);
            counter(&mut out, "converge_log_bytes_total", "Log bytes written.", log.bytes);
            counter(&mut out, "converge_fsyncs_total", "fdatasync calls of the log.", log.syncs);
            let median = log.sync_median.map_or(0.0, |d| d.as_secs_f64());
            let _ = writeln!(
                out,
                "# HELP converge_fsync_median_seconds Median of recent log fsyncs.\n# TYPE converge_fsync_median_seconds gauge\nconverge_fsync_median_seconds {median}"
            );
            let _ = writeln!(
                out,
                "# HELP converge_fsync_batch_records Records per group commit (one fsync)."
            );
            let _ = writeln!(out, "# TYPE converge_fsync_batch_records histogram");
            let mut cumulative = 0;
            for (i, count) in log.batch_sizes.iter().enumerate() {
                cumulative += count;
                let le = (1u64 << (i + 1)) - 1;
                let _ = writeln!(
                    out,
                    "converge_fsync_batch_records_bucket{{le=\"{le}\"}} {cumulative}"
                );
            }
            let _ =
                writeln!(out, "converge_fsync_batch_records_bucket{{le=\"+Inf\"}} {}", log.batches);
            let _ = writeln!(out, "converge_fsync_batch_records_sum {}", log.records);
            let _ = writeln!(out, "converge_fsync_batch_records_count {}", log.batches);
        }
        out
    }

    /// What was turned away before reaching a handler: calls and connections.
    fn render_refusals(&self, out: &mut String) {
        counter(
            out,
            "converge_unauthenticated_total",
            "Calls refused for missing or invalid tokens.",
            self.auth.unauthenticated.load(Ordering::Relaxed),
        );
        counter(
            out,
            "converge_permission_denied_total",
            "Calls refused because the token's role does not allow them.",
            self.auth.denied.load(Ordering::Relaxed),
        );
        counter(
            out,
            "converge_connections_refused_total",
            "Connections closed on accept because the most connections were open.",
            self.connections.refused.load(Ordering::Relaxed),
        );
        counter(
            out,
            "converge_connections_silent_total",
            "Connections closed because the client sent nothing within the handshake timeout.",
            self.connections.silent.load(Ordering::Relaxed),
        );
        counter(
            out,
            "converge_accept_errors_total",
            "Failed accepts (e.g. out of file descriptors).",
            self.connections.accept_errors.load(Ordering::Relaxed),
        );
    }

    fn render_rpcs(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP converge_rpc_duration_seconds Time to answer an RPC (Watch: to open the stream)."
        );
        let _ = writeln!(out, "# TYPE converge_rpc_duration_seconds histogram");
        for method in METHODS {
            let h = &self.latency[method.index()];
            let name = method.name();
            for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
                let _ = writeln!(
                    out,
                    "converge_rpc_duration_seconds_bucket{{method=\"{name}\",le=\"{bound}\"}} {}",
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let sum = Duration::from_nanos(h.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
            let _ = writeln!(
                out,
                "converge_rpc_duration_seconds_bucket{{method=\"{name}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(out, "converge_rpc_duration_seconds_sum{{method=\"{name}\"}} {sum}");
            let _ =
                writeln!(out, "converge_rpc_duration_seconds_count{{method=\"{name}\"}} {count}");
        }
    }
}

/// Appends that waited before they were queued, by what they waited for.
fn render_waits(out: &mut String, ledger: &Ledger) {
    let waits = ledger.append_waits();
    let _ = writeln!(
        out,
        "# HELP converge_append_waits_total Appends that waited before they were queued: for room in the append budget (bytes), or for a checkpoint before making one more context hold entries only memory holds (checkpoint).\n# TYPE converge_append_waits_total counter\nconverge_append_waits_total{{reason=\"bytes\"}} {}\nconverge_append_waits_total{{reason=\"checkpoint\"}} {}",
        waits.bytes, waits.checkpoint
    );
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}
