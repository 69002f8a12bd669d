//! How an embedded ledger is set up, and where its time comes from.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use converge_core::{Limits, Timestamp};
use converge_storage::StoreConfig;

/// Most concurrent watchers by default. Each holds a small buffer and a task's worth of
/// state; the cap keeps a flood of subscriptions from exhausting memory.
pub const WATCHERS_MAX_DEFAULT: usize = 10_000;

/// Entries a context's live feed holds for watchers that fall behind, by default. A watcher
/// further behind than this catches up from storage instead.
pub const WATCH_BUFFER_ENTRIES_DEFAULT: usize = 1024;

/// Payload bytes of appends in flight at once, by default: beyond this, appends wait for
/// earlier ones to become durable instead of queueing without bound in memory.
pub const APPEND_BYTES_IN_FLIGHT_MAX_DEFAULT: usize = 256 * 1024 * 1024;

/// The wall clock the ledger stamps appends with. The only place the ledger reads time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in nanoseconds since the Unix epoch.
    fn now(&self) -> Timestamp;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// Everything an embedded ledger needs.
#[derive(Clone)]
pub struct LedgerConfig {
    /// Where and how entries are stored.
    pub storage: StoreConfig,
    /// Payload and response limits.
    pub limits: Limits,
    /// Most concurrent watchers.
    pub watchers_max: usize,
    /// Entries buffered per watched context for watchers that fall behind.
    pub watch_buffer_entries: usize,
    /// Payload bytes of appends in flight at once.
    pub append_bytes_in_flight_max: usize,
    /// The wall clock.
    pub clock: Arc<dyn Clock>,
}

impl LedgerConfig {
    /// A durable ledger in `dir` with default limits.
    pub fn disk(dir: impl Into<std::path::PathBuf>) -> Self {
        Self::with_storage(StoreConfig::disk(dir))
    }

    /// A ledger that keeps everything in memory.
    pub fn memory() -> Self {
        Self::with_storage(StoreConfig::memory())
    }

    /// A ledger over `storage` with default limits.
    pub fn with_storage(storage: StoreConfig) -> Self {
        Self {
            storage,
            limits: Limits::default(),
            watchers_max: WATCHERS_MAX_DEFAULT,
            watch_buffer_entries: WATCH_BUFFER_ENTRIES_DEFAULT,
            append_bytes_in_flight_max: APPEND_BYTES_IN_FLIGHT_MAX_DEFAULT,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for LedgerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerConfig")
            .field("storage", &self.storage)
            .field("limits", &self.limits)
            .field("watchers_max", &self.watchers_max)
            .field("watch_buffer_entries", &self.watch_buffer_entries)
            .field("append_bytes_in_flight_max", &self.append_bytes_in_flight_max)
            .finish_non_exhaustive()
    }
}
