//! The ledger: opening, closing, and the operations of [`LedgerApi`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use converge_api::{
    AppendRequest, ConsistencyProof, GetRequest, GetResponse, InclusionProof, LedgerApi,
    LedgerError, ListContextsRequest, ListContextsResponse, LoadRequest, LoadResponse,
    PendingAppend, SnapshotResponse, TreeHead, WatchRequest, WatchStream,
};
use converge_core::Entry;
use converge_storage::{OpenReport, Store, StoreStats};

use crate::config::LedgerConfig;
use crate::watch::Hubs;
use crate::{append, load, read};

/// An embedded ledger. Cheap to clone; every clone is the same ledger.
#[derive(Clone)]
pub struct Ledger {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) config: LedgerConfig,
    /// Payload KiB of appends in flight.
    pub(crate) admission: crate::admission::Admission,
    pub(crate) hubs: Hubs,
    pub(crate) watchers: AtomicUsize,
    /// Becomes `true` when the ledger starts closing; watch streams end then.
    pub(crate) closing: AtomicBool,
    /// Appends that waited for a checkpoint before making one more context dirty.
    pub(crate) checkpoint_waits: AtomicU64,
}

/// Counts of appends that waited before they were queued ([`Ledger::append_waits`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendWaits {
    /// For room in the append budget (`append_bytes_in_flight_max`).
    pub bytes: u64,
    /// For a checkpoint, before making one more context hold entries only memory holds.
    pub checkpoint: u64,
}

impl Ledger {
    /// Opens a ledger: in disk mode, recovers the data directory first. Blocks while it
    /// recovers; call it before serving, or from `spawn_blocking`.
    pub fn open(config: LedgerConfig) -> Result<Self, converge_storage::Error> {
        config.limits.validate().map_err(|e| converge_storage::Error::Config(e.to_string()))?;
        if config.append_bytes_in_flight_max < config.limits.payload_bytes_max {
            return Err(converge_storage::Error::Config(format!(
                "append_bytes_in_flight_max ({}) must be at least the payload limit ({})",
                config.append_bytes_in_flight_max, config.limits.payload_bytes_max
            )));
        }
        let store = Store::open(config.storage.clone())?;
        let inner = Inner {
            store,
            admission: crate::admission::Admission::new(config.append_bytes_in_flight_max),
            hubs: Hubs::default(),
            watchers: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            checkpoint_waits: AtomicU64::new(0),
            config,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Bytes of the append budget (`append_bytes_in_flight_max`) free now: appends and loads
    /// hold theirs until their entries are durable or have failed.
    pub fn append_bytes_free(&self) -> usize {
        self.inner.admission.available_bytes()
    }

    /// How many appends (and loads) waited so far: for room in the append budget, and for a
    /// checkpoint before making one more context hold entries only memory holds.
    pub fn append_waits(&self) -> AppendWaits {
        AppendWaits {
            bytes: self.inner.admission.waits(),
            checkpoint: self.inner.checkpoint_waits.load(Ordering::Relaxed),
        }
    }

    /// The storage under the ledger, for tools and tests (with [`StoreConfig::manual`], a
    /// test writes the log with `store().step()`). Writing through it bypasses the ledger.
    ///
    /// [`StoreConfig::manual`]: converge_storage::StoreConfig::manual
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// What opening the storage found (unclean shutdown, records replayed, node identity).
    pub fn open_report(&self) -> &OpenReport {
        self.inner.store.open_report()
    }

    /// Storage counters, for metrics.
    pub fn stats(&self) -> StoreStats {
        self.inner.store.stats()
    }

    /// Watch streams open now.
    pub fn watchers(&self) -> usize {
        self.inner.watchers.load(Ordering::Relaxed)
    }

    /// Watchers that have fallen behind their context's live feed and are catching up from
    /// storage, now.
    pub fn lagging_watchers(&self) -> usize {
        self.inner.hubs.lagging()
    }

    /// Contexts someone watches now (each has a live feed).
    pub fn watched_contexts(&self) -> usize {
        self.inner.hubs.watched()
    }

    /// The configuration.
    pub fn config(&self) -> &LedgerConfig {
        &self.inner.config
    }

    /// Starts closing: new appends, loads and watches are refused with `UNAVAILABLE` and open
    /// watch streams end with it, while appends already accepted carry on. A server calls this
    /// when it stops accepting, drains its in-flight requests, then calls [`close`](Self::close).
    pub fn begin_close(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        self.inner.hubs.close_all();
    }

    /// Closes the ledger: watch streams end with `UNAVAILABLE`, new appends are refused,
    /// appends already queued become durable, the index is checkpointed and the data
    /// directory is marked clean. Idempotent.
    pub async fn close(&self) -> Result<(), LedgerError> {
        self.begin_close();
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|e| LedgerError::Internal(format!("closing panicked: {e}")))?
            .map_err(crate::errors::storage)
    }

    /// The storage failure that stops every write, if a write or fsync has failed.
    pub fn storage_poisoned(&self) -> Option<String> {
        self.inner.store.poisoned().map(|e| e.to_string())
    }

    /// Whether [`close`](Self::close) has begun.
    pub fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::SeqCst)
    }

    /// Applies an append that a replicated log already holds: validates it and queues it,
    /// stamped at `now` (its time is `max(now, previous + 1)`), before returning, so appends
    /// applied one after another are stamped in that order and every replica that applies the
    /// same appends at the same times holds the same entries. Returns the entry at once (its
    /// fields are fixed when it is queued; readers see it once it is durable) and the wait for
    /// its durability. No admission and no closing check: refusing here would make this
    /// replica differ from the others.
    pub fn apply_append(
        &self,
        request: AppendRequest,
        now: converge_core::Timestamp,
    ) -> Result<
        (Arc<Entry>, impl std::future::Future<Output = Result<(), LedgerError>> + Send + 'static),
        LedgerError,
    > {
        append::apply(&self.inner, request, now)
    }

    /// Applies a load that a replicated log already holds (see [`apply_append`]).
    ///
    /// [`apply_append`]: Self::apply_append
    pub async fn apply_load(&self, request: LoadRequest) -> Result<LoadResponse, LedgerError> {
        load::apply(&self.inner, request).await
    }

    /// The id of every context that has entries, sorted (a cluster bootstrapped over an
    /// existing data directory brings each into its log).
    pub fn context_ids(&self) -> Result<Vec<String>, LedgerError> {
        let ids = self.inner.store.context_ids().map_err(crate::errors::storage)?;
        Ok(ids.into_iter().map(converge_core::ContextId::into_string).collect())
    }

    /// Makes every entry applied so far durable (see [`Store::sync`]): one fsync in buffered
    /// mode, nothing in fsync mode.
    pub async fn sync(&self) -> Result<(), LedgerError> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.sync())
            .await
            .map_err(|e| LedgerError::Internal(format!("syncing panicked: {e}")))?
            .map_err(crate::errors::storage)
    }

    /// Writes an index checkpoint now (normally the ledger does this on its own).
    pub fn checkpoint(&self) -> Result<(), LedgerError> {
        self.inner.store.checkpoint().map_err(crate::errors::storage)
    }
}

impl LedgerApi for Ledger {
    async fn append(&self, request: AppendRequest) -> Result<Arc<Entry>, LedgerError> {
        append::append(&self.inner, request).await
    }

    async fn append_many(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Vec<Result<Arc<Entry>, LedgerError>> {
        append::many(&self.inner, requests).await
    }

    async fn append_queued(&self, request: AppendRequest) -> PendingAppend {
        match append::queue(&self.inner, request).await {
            Ok(queued) => Box::pin(queued.wait()),
            Err(refused) => Box::pin(std::future::ready(Err(refused))),
        }
    }

    async fn get(&self, request: GetRequest) -> Result<GetResponse, LedgerError> {
        read::get(&self.inner, request).await
    }

    async fn list_contexts(
        &self,
        request: ListContextsRequest,
    ) -> Result<ListContextsResponse, LedgerError> {
        read::list_contexts(&self.inner, request).await
    }

    async fn snapshot(&self, context_id: &str) -> Result<SnapshotResponse, LedgerError> {
        read::snapshot(&self.inner, context_id).await
    }

    async fn load(&self, request: LoadRequest) -> Result<LoadResponse, LedgerError> {
        load::load(&self.inner, request).await
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream, LedgerError> {
        crate::watch::watch(&self.inner, &request)
    }

    async fn tree_head(&self, context_id: &str) -> Result<TreeHead, LedgerError> {
        read::tree_head(&self.inner, context_id)
    }

    async fn prove_inclusion(
        &self,
        context_id: &str,
        sequence: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, LedgerError> {
        read::prove_inclusion(&self.inner, context_id, sequence, tree_size)
    }

    async fn prove_consistency(
        &self,
        context_id: &str,
        from_size: u64,
        to_size: u64,
    ) -> Result<ConsistencyProof, LedgerError> {
        read::prove_consistency(&self.inner, context_id, from_size, to_size)
    }
}
