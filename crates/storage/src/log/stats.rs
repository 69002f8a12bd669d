//! What the log writer has done: batches, records, bytes, and recent fsync latencies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Recent fsync latencies kept for medians.
const SYNC_SAMPLES_MAX: usize = 4096;

/// Buckets of the batch-size histogram: 1, 2–3, 4–7, …, 2^15 and more.
pub const BATCH_BUCKETS: usize = 16;

/// Counters of the log writer's work.
#[derive(Debug, Default)]
pub struct LogStats {
    batches: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    syncs: AtomicU64,
    batch_sizes: [AtomicU64; BATCH_BUCKETS],
    sync_micros: Mutex<SyncSamples>,
}

#[derive(Debug, Default)]
struct SyncSamples {
    ring: Vec<u32>,
    next: usize,
}

/// A copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStatsSnapshot {
    /// Write batches (group commits).
    pub batches: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written.
    pub bytes: u64,
    /// fdatasync calls.
    pub syncs: u64,
    /// Batches by record count: bucket `i` counts batches of `2^i` to `2^(i+1) − 1` records.
    pub batch_sizes: [u64; BATCH_BUCKETS],
    /// The median of the most recent fsync latencies.
    pub sync_median: Option<Duration>,
}

impl LogStats {
    pub(super) fn record_batch(&self, records: usize, bytes: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let bucket = (records.max(1).ilog2() as usize).min(BATCH_BUCKETS - 1);
        self.batch_sizes[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn record_sync(&self, took: Duration) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        let mut samples = self.sync_micros.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.ring.len() < SYNC_SAMPLES_MAX {
            samples.ring.push(micros);
        } else {
            let next = samples.next;
            samples.ring[next] = micros;
        }
        samples.next = (samples.next + 1) % SYNC_SAMPLES_MAX;
    }

    /// A consistent-enough copy of the counters.
    pub fn snapshot(&self) -> LogStatsSnapshot {
        let mut sorted =
            self.sync_micros.lock().unwrap_or_else(PoisonError::into_inner).ring.clone();
        sorted.sort_unstable();
        LogStatsSnapshot {
            batches: self.batches.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            batch_sizes: std::array::from_fn(|i| self.batch_sizes[i].load(Ordering::Relaxed)),
            sync_median: sorted
                .get(sorted.len() / 2)
                .map(|&us| Duration::from_micros(u64::from(us))),
        }
    }
}
