//! The store: opening and recovering the data directory, finding contexts, checkpointing the
//! index, and closing cleanly.
//!
//! Data directory layout (disk mode):
//!
//! ```text
//! LOCK        held (flock) while a process has the directory open
//! node.id     the node identity (see `node`)
//! RUNNING     the unclean-shutdown marker
//! log/        segment files (see `log::segment`)
//! index/      the fjall index (see `index::cold`)
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use converge_core::merkle::CompactTree;
use converge_core::{ContextId, Hash, NodeId, Sequencer, TreeSize};
use tracing::{debug, error, info, warn};

use crate::context::Context;
use crate::dirty::Dirty;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::fault::Faults;
use crate::index::STORED_LEVEL_MIN;
use crate::index::cold::{Cold, IndexMemory, Watermark};
use crate::listing::{self, ContextPage};
use crate::log::{DiskLog, LogConfig, LogStatsSnapshot, Replayed};
use crate::node::{self, NodeIdentity};
use crate::record::{self, PayloadMode, RecordKind};
use crate::vfs::{DirLock, RealFs, Vfs};

/// Segments are sealed once they pass this size, by default.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// The smallest segment size allowed (small sizes are for tests of rotation).
pub const SEGMENT_BYTES_MIN: u64 = 4096;

/// The largest segment size allowed: record offsets are 32-bit.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// A checkpoint runs after this much log by default: it bounds what a reopen replays.
pub const CHECKPOINT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// A checkpoint runs at least this often while anything was written.
pub const CHECKPOINT_INTERVAL_DEFAULT: Duration = Duration::from_secs(10);

/// The longest the log writer lingers for appenders to come back, by default: a fraction of a
/// typical fsync, so lingering never costs more than it saves.
pub const GROUP_COMMIT_LINGER_MAX_DEFAULT: Duration = Duration::from_micros(200);

/// In buffered mode, the longest a written record waits for an fsync by default (Redis's
/// `appendfsync everysec`): a power cut loses at most about this much.
pub const SYNC_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);

/// The memory idle contexts and the index may take, by default (the index a quarter of it, see
/// `StoreConfig::contexts_resident_max`); beyond it the least recently used idle contexts are
/// evicted (and reloaded from the index when next used).
pub const MEMORY_BUDGET_DEFAULT: usize = 128 * 1024 * 1024;

/// What one resident context is reckoned to cost in memory: its state, id (twice: the map's
/// key and its own), the frontier of its tree and its slot in the map. `tests/resident_bytes.rs`
/// counts what an idle context allocates (about 500 bytes with an id of 9 bytes) and holds this
/// above it; the rest is the allocator's own overhead per allocation. Contexts holding entries
/// not yet checkpointed are bounded separately (`StoreConfig::dirty_contexts_max`).
pub const CONTEXT_RESIDENT_BYTES: usize = 768;

/// The most contexts that may come to hold entries only memory holds between two checkpoints
/// (`StoreConfig::dirty_contexts_max` lowers it for a small budget); a checkpoint runs at half
/// of it. Such a context cannot be evicted, so an append that would dirty one more waits for
/// the next checkpoint to begin (`Store::when_room`): without the bound, appends spread over
/// 10^6 contexts outran the checkpointer, each checkpoint grew with what piled up meanwhile
/// (20k contexts, then 146k), and the node held 240k contexts and 0.7 GB against a budget
/// of 128 MiB. Reopening loads every context the log after the watermark touches from the
/// index, so this, not the log's bytes, also bounds a reopen: after 40 s of appends over 10^6
/// contexts, a reopen replayed 54k records of as many contexts and took 2.8 s.
pub const DIRTY_CONTEXTS_MAX: u64 = 32_768;

/// The floor of `StoreConfig::dirty_contexts_max`, so a tiny budget does not checkpoint at
/// every few appends.
const DIRTY_CONTEXTS_MIN: u64 = 1_024;

/// How often the checkpointer looks at the log.
const CHECKPOINT_POLL: Duration = Duration::from_millis(50);

/// Where entries are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageMode {
    /// Durably, in this data directory.
    Disk(PathBuf),
    /// In memory only: the same behaviour, nothing survives the process.
    Memory,
}

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Disk or memory.
    pub mode: StorageMode,
    /// When appends are acknowledged (disk mode).
    pub durability: Durability,
    /// Segment size before sealing.
    pub segment_bytes: u64,
    /// Log bytes between checkpoints.
    pub checkpoint_bytes: u64,
    /// Longest time between checkpoints while anything is written.
    pub checkpoint_interval: Duration,
    /// The longest the log writer waits for appenders to come back before a group commit
    /// (it waits only when fewer are queued than the last commit held; 0 turns it off).
    pub group_commit_linger_max: Duration,
    /// Buffered mode: the longest a written record waits for an fsync.
    pub sync_interval: Duration,
    /// The memory idle contexts may take (see [`CONTEXT_RESIDENT_BYTES`]); beyond it the
    /// least recently used ones are evicted.
    pub memory_budget: usize,
    /// Injected failures (tests).
    pub faults: Arc<Faults>,
    /// The file system the log and the node files live on (the index is always on the real
    /// one).
    pub vfs: Arc<dyn Vfs>,
    /// Deterministic tests: no writer or checkpointer thread; queued records are written only
    /// when [`Store::step`] is called, checkpoints only when [`Store::checkpoint`] is.
    pub manual: bool,
}

impl StoreConfig {
    /// Durable storage in `dir`, with defaults.
    pub fn disk(dir: impl Into<PathBuf>) -> Self {
        Self {
            mode: StorageMode::Disk(dir.into()),
            durability: Durability::default(),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            checkpoint_bytes: CHECKPOINT_BYTES_DEFAULT,
            checkpoint_interval: CHECKPOINT_INTERVAL_DEFAULT,
            group_commit_linger_max: GROUP_COMMIT_LINGER_MAX_DEFAULT,
            sync_interval: SYNC_INTERVAL_DEFAULT,
            memory_budget: MEMORY_BUDGET_DEFAULT,
            faults: Arc::default(),
            vfs: RealFs::shared(),
            manual: false,
        }
    }

    /// Memory storage.
    pub fn memory() -> Self {
        Self { mode: StorageMode::Memory, ..Self::disk("") }
    }

    /// What the index may hold in memory: its share of the memory budget (disk mode).
    pub(crate) fn index_memory(&self) -> IndexMemory {
        IndexMemory::of_budget(self.memory_budget)
    }

    /// How many contexts may stay resident: the memory budget less the index's share (disk
    /// mode), at [`CONTEXT_RESIDENT_BYTES`] each.
    pub fn contexts_resident_max(&self) -> usize {
        let index = match self.mode {
            StorageMode::Disk(_) => IndexMemory::share(self.memory_budget),
            StorageMode::Memory => 0,
        };
        ((self.memory_budget - index) / CONTEXT_RESIDENT_BYTES).max(1)
    }

    /// How many contexts may come to hold entries only memory holds between two checkpoints:
    /// a quarter of the resident contexts, between [`DIRTY_CONTEXTS_MIN`] and
    /// [`DIRTY_CONTEXTS_MAX`]. A checkpoint runs at half of it.
    pub fn dirty_contexts_max(&self) -> u64 {
        (self.contexts_resident_max() as u64 / 4).clamp(DIRTY_CONTEXTS_MIN, DIRTY_CONTEXTS_MAX)
    }

    fn validate(&self) -> Result<()> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(Error::Config(format!(
                "segment size must be between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX} bytes, got {}",
                self.segment_bytes
            )));
        }
        if self.memory_budget < CONTEXT_RESIDENT_BYTES {
            return Err(Error::Config(format!(
                "the memory budget must be at least {CONTEXT_RESIDENT_BYTES} bytes"
            )));
        }
        if self.sync_interval.is_zero() {
            return Err(Error::Config("the sync interval must be positive".into()));
        }
        if self.checkpoint_bytes == 0 || self.checkpoint_interval.is_zero() {
            return Err(Error::Config("checkpoint size and interval must be positive".into()));
        }
        Ok(())
    }
}

/// Whether a context is in memory, for a lookup.
enum Resident {
    /// It is, and here it is.
    Yes(Arc<Context>),
    /// It is, but not what the caller wants.
    Refused,
    /// It is not.
    No,
}

/// What opening found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// The previous run did not close cleanly (crash or power loss).
    pub unclean_shutdown: bool,
    /// Log records replayed into the index.
    pub replayed_records: u64,
    /// This node (disk mode).
    pub node: Option<NodeIdentity>,
    /// How long opening took.
    pub took: Duration,
}

/// Counters for metrics.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// The log writer's counters (disk mode).
    pub log: Option<LogStatsSnapshot>,
    /// Contexts held in memory.
    pub contexts: usize,
    /// Checkpoints written since open.
    pub checkpoints: u64,
    /// Segment files held open for reads (disk mode).
    pub open_segments: usize,
}

pub(crate) enum Backend {
    Memory,
    /// The log is set once it has opened (contexts made while it replays need the rest).
    Disk {
        log: OnceLock<Arc<DiskLog>>,
        cold: Cold,
    },
}

/// The disk backend, once open.
pub(crate) struct Disk<'a> {
    pub(crate) log: &'a DiskLog,
    pub(crate) cold: &'a Cold,
}

/// What every context of a store shares.
pub(crate) struct Shared {
    backend: Backend,
    next_number: AtomicU64,
    pub(crate) closed: AtomicBool,
    /// The contexts with entries that the cold index does not name yet (all of them in memory
    /// mode), in order: with the index's own `contexts` rows, every context, so a page of
    /// them costs a page (`crate::listing`). A context leaves once a checkpoint names it.
    unindexed: Mutex<BTreeSet<ContextId>>,
    /// Contexts that came to hold entries only memory holds since the last checkpoint began.
    pub(crate) dirty: Dirty,
}

impl Shared {
    fn new(backend: Backend, next_number: u64) -> Self {
        Self {
            backend,
            next_number: AtomicU64::new(next_number),
            closed: AtomicBool::new(false),
            unindexed: Mutex::default(),
            dirty: Dirty::default(),
        }
    }

    pub(crate) fn allocate_number(&self) -> u64 {
        self.next_number.fetch_add(1, Ordering::SeqCst)
    }

    /// Context `id` has entries the cold index does not name it for yet.
    pub(crate) fn unindexed(&self, id: &ContextId) {
        self.unindexed.lock().unwrap_or_else(PoisonError::into_inner).insert(id.clone());
    }

    /// A checkpoint named context `id` in the cold index.
    pub(crate) fn indexed(&self, id: &ContextId) {
        self.unindexed.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }

    /// Up to `limit` ids of contexts the cold index does not name yet, from `start` on, that
    /// begin with `prefix`.
    pub(crate) fn unindexed_page(
        &self,
        start: std::ops::Bound<&ContextId>,
        prefix: &str,
        limit: usize,
    ) -> Vec<ContextId> {
        let set = self.unindexed.lock().unwrap_or_else(PoisonError::into_inner);
        set.range::<ContextId, _>((start, std::ops::Bound::Unbounded))
            .take_while(|id| id.as_str().starts_with(prefix))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The log and index, or `None` in memory mode.
    pub(crate) fn disk(&self) -> Option<Disk<'_>> {
        match &self.backend {
            Backend::Memory => None,
            Backend::Disk { log, cold } => Some(Disk {
                log: log.get().expect("contexts use the log only after it opened"),
                cold,
            }),
        }
    }

    pub(crate) fn cold(&self) -> Option<&Cold> {
        match &self.backend {
            Backend::Memory => None,
            Backend::Disk { cold, .. } => Some(cold),
        }
    }
}

/// A store of contexts. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    contexts: RwLock<HashMap<ContextId, Arc<Context>>>,
    dir: Option<PathBuf>,
    _lock: Option<DirLock>,
    config: StoreConfig,
    report: OpenReport,
    checkpoint_lock: Mutex<()>,
    checkpoints: AtomicU64,
    /// Advanced by each memory-budget pass; a lookup stamps its context with it, so eviction
    /// knows which contexts were used since which pass (a read per lookup, not a write).
    epoch: AtomicU64,
    /// Counts contexts removed from memory (see `load_and_lock`).
    evictions: AtomicU64,
    stop: Mutex<bool>,
    stop_signal: Condvar,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl Store {
    /// Opens a store: in disk mode, locks and recovers the data directory (replaying the log
    /// after the last checkpoint, cutting a torn tail) and starts the log writer and the
    /// checkpointer.
    pub fn open(config: StoreConfig) -> Result<Self> {
        config.validate()?;
        let started = Instant::now();
        let (shared, contexts, dir, lock, mut report) = match &config.mode {
            StorageMode::Memory => {
                let shared = Shared::new(Backend::Memory, 1);
                (Arc::new(shared), HashMap::new(), None, None, OpenReport::default())
            }
            StorageMode::Disk(dir) => {
                let (shared, contexts, lock, report) = open_disk(dir, &config)?;
                (shared, contexts, Some(dir.clone()), Some(lock), report)
            }
        };
        report.took = started.elapsed();
        let inner = Arc::new(Inner {
            shared,
            contexts: RwLock::new(contexts),
            dir,
            _lock: lock,
            config,
            report,
            checkpoint_lock: Mutex::new(()),
            checkpoints: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            stop: Mutex::new(false),
            stop_signal: Condvar::new(),
            checkpointer: Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        if inner.checkpoints_itself() {
            let weak = Arc::downgrade(&inner);
            let handle = std::thread::Builder::new()
                .name("converge-checkpoint".into())
                .spawn(move || checkpoint_loop(&weak))
                .map_err(|e| {
                    Error::io(
                        "starting the checkpointer for",
                        inner.dir.clone().unwrap_or_default(),
                        e,
                    )
                })?;
            *inner.checkpointer.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        }
        Ok(Self { inner })
    }

    /// What opening found.
    pub fn open_report(&self) -> &OpenReport {
        &self.inner.report
    }

    /// The context `id`, created in memory if it does not exist yet (nothing is written until
    /// its first append).
    pub fn context(&self, id: &ContextId) -> Result<Arc<Context>> {
        if let Resident::Yes(context) = self.inner.resident_if(id, |_| true) {
            return Ok(context);
        }
        let (loaded, mut contexts) = self.inner.load_and_lock(id)?;
        let context = contexts.entry(id.clone()).or_insert_with(|| {
            loaded.unwrap_or_else(|| {
                Arc::new(Context::new(id.clone(), Arc::clone(&self.inner.shared)))
            })
        });
        Ok(self.inner.used(context))
    }

    /// The context `id` if anything was ever written to it (without creating it). A context
    /// that is only watched is not handed to readers: it has nothing to read, and a reader
    /// holding it would keep it from being released when its watch ends.
    pub fn find(&self, id: &ContextId) -> Result<Option<Arc<Context>>> {
        match self.inner.resident_if(id, |c| !c.is_unwritten()) {
            Resident::Yes(context) => return Ok(Some(context)),
            Resident::Refused => return Ok(None),
            Resident::No => {}
        }
        let (loaded, mut contexts) = self.inner.load_and_lock(id)?;
        if let Some(context) = contexts.get(id) {
            return Ok((!context.is_unwritten()).then(|| Arc::clone(context)));
        }
        let Some(loaded) = loaded else { return Ok(None) };
        Ok(Some(self.inner.used(contexts.entry(id.clone()).or_insert(loaded))))
    }

    /// Forgets context `id` if nothing was ever written to it and nobody else holds it (a watch
    /// of an unknown context has ended): looking at a context costs nothing after the look.
    pub fn release(&self, id: &ContextId) {
        let mut contexts = self.inner.write_contexts();
        if contexts.get(id).is_some_and(|c| Arc::strong_count(c) == 1 && c.is_unwritten()) {
            contexts.remove(id);
            self.inner.evictions.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Calls `done` once the store has room for one more context holding entries only memory
    /// holds: at once unless [`StoreConfig::dirty_contexts_max`] contexts came to hold such
    /// entries since the last checkpoint began, else when the next one begins. A writer about
    /// to append to a context that holds none ([`Context::is_dirty`]) waits for it, so the
    /// contexts that cannot be evicted stay bounded under load (see [`DIRTY_CONTEXTS_MAX`]).
    /// Without a checkpointer (memory or manual mode), at once.
    pub fn when_room(&self, done: Box<dyn FnOnce() + Send>) {
        if !self.inner.checkpoints_itself() {
            done();
            return;
        }
        self.inner.shared.dirty.when_room(self.inner.config.dirty_contexts_max(), done);
    }

    /// Evicts the least recently used idle contexts while more are resident than the memory
    /// budget allows; returns whether the store is within it. The checkpointer calls this;
    /// contexts holding entries that are not yet checkpointed stay until a checkpoint.
    pub fn enforce_memory_budget(&self) -> bool {
        self.inner.enforce_memory_budget()
    }

    /// Manual mode ([`StoreConfig::manual`]): writes, syncs and completes everything queued,
    /// on this thread; returns whether anything was queued.
    pub fn step(&self) -> bool {
        self.inner.shared.disk().is_some_and(|d| d.log.step())
    }

    /// Makes every append reported so far durable: buffered mode fsyncs the log through its
    /// last reported record (fsync mode and memory mode have nothing to do). Whoever keeps a
    /// durable copy elsewhere (a cluster's Raft log) calls this before it forgets that copy.
    pub fn sync(&self) -> Result<()> {
        let Some(Disk { log, .. }) = self.inner.shared.disk() else { return Ok(()) };
        if let Some(poisoned) = log.poisoned() {
            return Err(poisoned);
        }
        // Not `durable()`: the writer moves that only after it told the sinks, so an append
        // already reported could lie beyond it.
        log.sync_through(log.written())
    }

    /// Writes a checkpoint now (disk mode; memory mode has nothing to checkpoint).
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint()
    }

    /// The id of every context that has entries, sorted.
    pub fn context_ids(&self) -> Result<Vec<ContextId>> {
        let mut ids: std::collections::BTreeSet<ContextId> = self
            .inner
            .read_contexts()
            .iter()
            .filter(|(_, context)| !context.is_unwritten())
            .map(|(id, _)| id.clone())
            .collect();
        if let Some(Disk { cold, .. }) = self.inner.shared.disk() {
            for number in 1..self.inner.shared.next_number.load(Ordering::SeqCst) {
                if let Some(id) = cold.context_name(number)? {
                    ids.insert(id);
                }
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// The page of contexts with entries whose ids begin with `prefix`, in byte order of their
    /// ids, after `after` (or from the first), at most `limit` of them: see
    /// [`crate::listing`]. Listing loads no context into memory.
    pub fn list_contexts(
        &self,
        prefix: &str,
        after: Option<&ContextId>,
        limit: usize,
    ) -> Result<ContextPage> {
        // The map's lock is taken per context, never across the index reads of a page.
        let resident = |id: &ContextId| self.inner.read_contexts().get(id).map(|c| c.summary());
        listing::page(&self.inner.shared, &resident, prefix, after, limit)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            log: self.inner.shared.disk().map(|d| d.log.stats().snapshot()),
            contexts: self.inner.read_contexts().len(),
            checkpoints: self.inner.checkpoints.load(Ordering::Relaxed),
            open_segments: self.inner.shared.disk().map_or(0, |d| d.log.open_segments()),
        }
    }

    /// The storage error every write returns now, if a write or fsync has failed.
    pub fn poisoned(&self) -> Option<Error> {
        self.inner.shared.disk().and_then(|d| d.log.poisoned())
    }

    /// Whether entries are kept in memory only.
    pub fn is_memory(&self) -> bool {
        self.inner.shared.disk().is_none()
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Stops accepting appends, waits for queued ones to become durable (or fail), writes a
    /// final checkpoint and removes the unclean-shutdown marker. Idempotent.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

impl Inner {
    /// Whether a checkpointer thread runs (disk mode, not manual).
    fn checkpoints_itself(&self) -> bool {
        self.shared.disk().is_some() && !self.config.manual
    }

    fn read_contexts(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ContextId, Arc<Context>>> {
        self.contexts.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_contexts(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ContextId, Arc<Context>>> {
        self.contexts.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loads `id` from the cold index without holding the map's lock (reading the index must
    /// not stall every lookup), then takes the lock. If a context was evicted meanwhile, what
    /// was loaded may be older than what that eviction left in the index, so it loads again
    /// under the lock.
    #[expect(clippy::type_complexity, reason = "a pair returned to the two callers")]
    fn load_and_lock(
        &self,
        id: &ContextId,
    ) -> Result<(
        Option<Arc<Context>>,
        std::sync::RwLockWriteGuard<'_, HashMap<ContextId, Arc<Context>>>,
    )> {
        let evictions = self.evictions.load(Ordering::SeqCst);
        let loaded = self.load(id)?;
        let contexts = self.write_contexts();
        if self.evictions.load(Ordering::SeqCst) == evictions {
            return Ok((loaded, contexts));
        }
        Ok((self.load(id)?, contexts))
    }

    /// The context `id` if it is in memory now and `wanted` accepts it. It is looked at
    /// before a reference is taken: a reference taken only to be dropped would make a
    /// concurrent [`Store::release`] see a second holder and keep the context forever.
    fn resident_if(&self, id: &ContextId, wanted: impl Fn(&Context) -> bool) -> Resident {
        let contexts = self.read_contexts();
        let Some(context) = contexts.get(id) else { return Resident::No };
        if !wanted(context) {
            return Resident::Refused;
        }
        Resident::Yes(self.used(context))
    }

    /// A reference to `context` for a caller that uses it, marked used now (for eviction).
    fn used(&self, context: &Arc<Context>) -> Arc<Context> {
        context.touch(self.epoch.load(Ordering::Relaxed));
        Arc::clone(context)
    }

    fn enforce_memory_budget(&self) -> bool {
        // Contexts looked up from now on count as newer than all used before this pass.
        self.epoch.fetch_add(1, Ordering::Relaxed);
        let max = self.config.contexts_resident_max();
        if self.read_contexts().len() <= max {
            return true;
        }
        // Down to 90 %, so eviction runs once per tenth of the budget, not on every lookup.
        let target = max - max / 10;
        let mut idle: Vec<(u64, ContextId)> = self
            .read_contexts()
            .iter()
            .filter(|(_, c)| Arc::strong_count(c) == 1)
            .map(|(id, c)| (c.last_used(), id.clone()))
            .collect();
        idle.sort_unstable_by_key(|(used, _)| *used);
        let mut contexts = self.write_contexts();
        for (_, id) in idle {
            if contexts.len() <= target {
                break;
            }
            // Under the write lock nobody can take a new reference, so a count of one means
            // only the map holds it.
            if contexts.get(&id).is_some_and(|c| Arc::strong_count(c) == 1 && c.evictable()) {
                contexts.remove(&id);
                self.evictions.fetch_add(1, Ordering::SeqCst);
            }
        }
        contexts.len() <= max
    }

    /// Loads a context the cold index knows.
    fn load(&self, id: &ContextId) -> Result<Option<Arc<Context>>> {
        let Some(cold) = self.shared.cold() else { return Ok(None) };
        let Some(number) = cold.context_number(id)? else { return Ok(None) };
        load_context(&self.shared, cold, id.clone(), number).map(|c| Some(Arc::new(c)))
    }

    fn checkpoint(&self) -> Result<()> {
        let Some(Disk { log, cold }) = self.shared.disk() else { return Ok(()) };
        let _one_at_a_time = self.checkpoint_lock.lock().unwrap_or_else(PoisonError::into_inner);
        if log.poisoned().is_some() {
            // Recovery will redo what is missing; never build on a failed log. Appends waiting
            // for room go on to meet the log's refusal.
            self.shared.dirty.shut();
            return Ok(());
        }
        // Read the durable point first: every record up to it is already in the contexts'
        // in-memory index, so the snapshots below cover it.
        let point = log.durable();
        // The index must never name log records a power cut could take away.
        log.sync_through(point)?;
        self.shared.dirty.checkpoint_begins();
        // Only written contexts have anything to checkpoint; taking no reference to the others
        // lets a concurrent release of a context only watched go through.
        let contexts: Vec<Arc<Context>> =
            self.read_contexts().values().filter(|c| !c.is_unwritten()).cloned().collect();
        let snapshots: Vec<_> = contexts
            .iter()
            .filter_map(|c| c.checkpoint_snapshot().map(|s| (Arc::clone(c), s)))
            .collect();
        self.config.faults.before_checkpoint_write();
        let next_context = self.shared.next_number.load(Ordering::SeqCst);
        let started = Instant::now();
        cold.write_checkpoint(snapshots.iter().map(|(_, s)| s), Watermark { point, next_context })?;
        debug!(
            written = snapshots.len(),
            ms = started.elapsed().as_millis(),
            "checkpoint written to the index"
        );
        for (context, snapshot) in snapshots {
            context.checkpointed(snapshot.head.latest());
        }
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.shared.closed.store(true, Ordering::SeqCst);
        *self.stop.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.stop_signal.notify_all();
        self.shared.dirty.shut();
        let handle = self.checkpointer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle
            && handle.thread().id() != std::thread::current().id()
        {
            let _ = handle.join();
        }
        let Some(Disk { log, .. }) = self.shared.disk() else { return Ok(()) };
        log.close();
        if let Some(cause) = log.poisoned() {
            warn!(error = %cause, "closing a poisoned store: the next open replays the log");
            return Ok(());
        }
        self.checkpoint()?;
        if let Some(cold) = self.shared.cold() {
            cold.flush()?;
        }
        if let Some(dir) = &self.dir {
            node::mark_stopped(&*self.config.vfs, dir)?;
        }
        info!("store closed cleanly");
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(err) = self.close() {
            error!(error = %err, "closing the store failed");
        }
    }
}

fn checkpoint_loop(inner: &Weak<Inner>) {
    let mut last_lsn = 0;
    let mut last_bytes = 0;
    let mut last_time = Instant::now();
    loop {
        let Some(store) = inner.upgrade() else { return };
        {
            let stop = store.stop.lock().unwrap_or_else(PoisonError::into_inner);
            let (stop, _) = store
                .stop_signal
                .wait_timeout(stop, CHECKPOINT_POLL)
                .unwrap_or_else(PoisonError::into_inner);
            if *stop {
                return;
            }
        }
        let Some(Disk { log, .. }) = store.shared.disk() else { return };
        let stats = log.stats().snapshot();
        let lsn = log.durable().lsn;
        // Over the memory budget with only unevictable contexts left: a checkpoint makes
        // contexts with entries evictable (at most once a second).
        let over_budget = !store.enforce_memory_budget()
            && lsn != last_lsn
            && last_time.elapsed() >= Duration::from_secs(1);
        let due = over_budget
            || store.shared.dirty.count() >= store.config.dirty_contexts_max() / 2
            || stats.bytes - last_bytes >= store.config.checkpoint_bytes
            || (lsn != last_lsn && last_time.elapsed() >= store.config.checkpoint_interval);
        if due {
            match store.checkpoint() {
                Ok(()) => {
                    last_lsn = lsn;
                    last_bytes = stats.bytes;
                    last_time = Instant::now();
                    if over_budget {
                        store.enforce_memory_budget();
                    }
                }
                Err(err) => {
                    error!(error = %err, "checkpoint failed; the next reopen replays more log");
                }
            }
        }
    }
}

type DiskOpen = (Arc<Shared>, HashMap<ContextId, Arc<Context>>, DirLock, OpenReport);

fn open_disk(dir: &Path, config: &StoreConfig) -> Result<DiskOpen> {
    let vfs = &*config.vfs;
    vfs.create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let lock = lock_dir(vfs, dir)?;
    if vfs.sync_failed(&dir.join("log")) {
        return Err(Error::SyncFailed(dir.to_path_buf()));
    }
    let identity = node::open_identity(vfs, dir)?;
    let unclean = node::mark_running(vfs, dir)?;
    if unclean {
        warn!(dir = %dir.display(), "the previous run did not shut down cleanly; recovering");
    }
    let cold = Cold::open(&dir.join("index"), config.index_memory())?;
    let watermark = cold.watermark()?;
    let shared =
        Arc::new(Shared::new(Backend::Disk { log: OnceLock::new(), cold }, watermark.next_context));
    let mut recovery = Recovery {
        shared: Arc::clone(&shared),
        by_id: HashMap::new(),
        by_number: HashMap::new(),
        replayed: 0,
    };
    let log_config = LogConfig {
        dir: dir.join("log"),
        node: identity.id,
        segment_bytes: config.segment_bytes,
        durability: config.durability,
        linger_max: config.group_commit_linger_max,
        faults: Arc::clone(&config.faults),
        vfs: Arc::clone(&config.vfs),
        sync_interval: config.sync_interval,
        manual: config.manual,
    };
    let log = DiskLog::open(log_config, watermark.point, &mut |record| recovery.replay(&record))?;
    let Backend::Disk { log: slot, .. } = &shared.backend else { unreachable!("disk backend") };
    if slot.set(log).is_err() {
        unreachable!("the log is set once");
    }
    let replayed = recovery.replayed;
    info!(dir = %dir.display(), replayed, node = %identity.id_hex(), incarnation = identity.incarnation, "store opened");
    let report = OpenReport {
        unclean_shutdown: unclean,
        replayed_records: replayed,
        node: Some(identity),
        took: Duration::ZERO,
    };
    Ok((shared, recovery.by_id, lock, report))
}

/// Rebuilds the in-memory index of every context the log after the watermark touches.
struct Recovery {
    shared: Arc<Shared>,
    by_id: HashMap<ContextId, Arc<Context>>,
    by_number: HashMap<u64, Arc<Context>>,
    replayed: u64,
}

impl Recovery {
    fn replay(&mut self, record: &Replayed<'_>) -> Result<()> {
        let corrupt =
            |reason: String| Error::corrupt(record.path, u64::from(record.position.offset), reason);
        match record.header.kind {
            RecordKind::Context => {
                let (number, id) =
                    record::decode_context_body(record.body).map_err(|e| corrupt(e.to_string()))?;
                self.define(number, id).map_err(|e| corrupt(e.to_string()))?;
            }
            RecordKind::Entry => {
                let rec = record::decode_entry_body_with(record.body, PayloadMode::Skip)
                    .map_err(|e| corrupt(e.to_string()))?;
                let context = self.numbered(rec.context).map_err(|e| corrupt(e.to_string()))?;
                context
                    .replay(&rec.entry, rec.append_id.as_ref(), record.position)
                    .map_err(|e| corrupt(format!("context {}: {e}", context.id())))?;
            }
            RecordKind::TruncateAfter | RecordKind::Fence => {
                return Err(corrupt(format!(
                    "a {:?} record, which only replication writes, in a single-node log",
                    record.header.kind
                )));
            }
            RecordKind::Seal | RecordKind::Batch => {}
        }
        self.replayed += 1;
        Ok(())
    }

    fn cold(&self) -> &Cold {
        self.shared.cold().expect("recovery runs in disk mode")
    }

    fn define(&mut self, number: u64, id: ContextId) -> Result<()> {
        self.shared.next_number.fetch_max(number + 1, Ordering::SeqCst);
        if let Some(context) = self.by_id.get(&id) {
            return match context.number() {
                Some(n) if n == number => Ok(()),
                other => Err(Error::corrupt(
                    "log",
                    0,
                    format!("context {id} is defined as {number} but was {other:?}"),
                )),
            };
        }
        let context = match self.cold().context_number(&id)? {
            Some(n) if n == number => load_context(&self.shared, self.cold(), id.clone(), number)?,
            Some(n) => {
                return Err(Error::corrupt(
                    "log",
                    0,
                    format!("context {id} is defined as {number} but the index says {n}"),
                ));
            }
            None => {
                self.shared.unindexed(&id);
                Context::numbered(id.clone(), Arc::clone(&self.shared), number)
            }
        };
        let context = Arc::new(context);
        self.by_number.insert(number, Arc::clone(&context));
        self.by_id.insert(id, context);
        Ok(())
    }

    fn numbered(&mut self, number: u64) -> Result<Arc<Context>> {
        if let Some(context) = self.by_number.get(&number) {
            return Ok(Arc::clone(context));
        }
        let Some(id) = self.cold().context_name(number)? else {
            return Err(Error::corrupt(
                "log",
                0,
                format!("an entry of context number {number}, which is defined nowhere"),
            ));
        };
        self.define(number, id)?;
        Ok(Arc::clone(&self.by_number[&number]))
    }
}

fn lock_dir(vfs: &dyn Vfs, dir: &Path) -> Result<DirLock> {
    vfs.lock_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => Error::Locked(dir.to_path_buf()),
        _ => Error::io("locking", dir.join("LOCK"), e),
    })
}

/// Loads a context from the cold index: its head and the frontier of its tree.
fn load_context(shared: &Arc<Shared>, cold: &Cold, id: ContextId, number: u64) -> Result<Context> {
    match cold_head(cold, &id, number)? {
        Some((head, tree)) => Context::loaded(id, Arc::clone(shared), number, head, tree),
        None => Ok(Context::numbered(id, Arc::clone(shared), number)),
    }
}

/// The checkpointed head of context `number` (`id`) and the frontier of its tree, from the
/// cold index alone: one head row and at most one node per level.
pub(crate) fn cold_head(
    cold: &Cold,
    id: &ContextId,
    number: u64,
) -> Result<Option<(Sequencer, CompactTree)>> {
    let Some(head) = cold.head(number)? else { return Ok(None) };
    let size = TreeSize(head.latest().0);
    let frontier = CompactTree::frontier_ids(size)
        .map(|node| cold_node(cold, number, node))
        .collect::<Result<Vec<Hash>>>()?;
    let tree = CompactTree::from_frontier(size, frontier)
        .map_err(|e| Error::corrupt("index", 0, format!("context {id}: {e}")))?;
    Ok(Some((head, tree)))
}

/// A complete node from the cold index alone.
fn cold_node(cold: &Cold, number: u64, node: NodeId) -> Result<Hash> {
    if node.level < STORED_LEVEL_MIN {
        let leaves = cold.leaf_hashes(number, node.first_leaf() + 1, node.end_leaf())?;
        return Ok(converge_core::merkle::root_of_leaves(&leaves));
    }
    cold.node(number, node)?.ok_or_else(|| {
        Error::corrupt("index", 0, format!("context {number}: Merkle node {node:?} is missing"))
    })
}
