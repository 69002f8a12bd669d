//! Watch: subscribe to a context's live feed first, then read the backlog from storage, then
//! follow the feed — skipping anything already sent — so a watcher sees every entry once, in
//! order, even while appends race with the subscription.
//!
//! A context's live feed ([`Feed`]) exists while someone watches it: a bounded window of the
//! latest entries its storage reported durable, and one wake-up for everyone waiting each time
//! a group commit makes a run of entries durable. Watchers copy runs out of the window by
//! sequence, so a wake-up costs a watcher one short read lock however many entries arrived.
//! The writer never waits for a watcher: one that falls behind the window goes back to reading
//! pages from storage after the last entry it examined, and rejoins the feed. Memory per
//! watcher is bounded by one page; the window is shared by all watchers of the context.
//!
//! The log writer's thread does O(1) work per commit for a watched context, however many
//! watch it: it pushes the run into the window and hands the feed to the ledger's fan-out
//! thread, which wakes the watchers. (Waking them from a runtime task instead would queue
//! them all on that task's worker: p99 delivery rose from under 1 ms to 3 ms in the bench.) The window and each watcher's batch are bounded in bytes
//! as well as entries, so large payloads cannot multiply what is held.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, Weak};

use converge_api::{LedgerError, WatchRequest, WatchStream};
use converge_core::{ContextId, Entry, Key, Seq};
use converge_storage::{Context, ReadQuery, Store};
use tokio::sync::Notify;

use crate::catch_up::CatchUp;
use crate::errors;
use crate::ledger::Inner;
use crate::request;
use crate::run::{Found, Run};

/// Entries read per backlog page.
const PAGE_ENTRIES: usize = 256;

/// Bytes read per backlog page (a single larger entry is still read, alone).
const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Entries a watcher copies out of the live window at a time.
const LIVE_BATCH: usize = 256;

/// Payload bytes a watcher copies out of the live window at a time (at least one entry).
const LIVE_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Payload bytes the live window of one context holds at most (the newest entry always
/// stays): a watcher further behind catches up from storage.
pub const WATCH_WINDOW_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The live window of one watched context.
struct Feed {
    window: RwLock<Run>,
    capacity: usize,
    /// Watchers wait on this.
    notify: Notify,
    /// Whether the feed waits in the fan-out queue (so it is queued once however many runs
    /// arrive before the fan-out thread gets to it).
    queued: AtomicBool,
    fan_out: Arc<FanOut>,
    closed: AtomicBool,
}

/// The ledger's fan-out thread and its queue of feeds with news for their watchers.
#[derive(Default)]
struct FanOut {
    queue: Mutex<FanOutQueue>,
    wake: Condvar,
}

#[derive(Default)]
struct FanOutQueue {
    feeds: VecDeque<Arc<Feed>>,
    started: bool,
    stopped: bool,
}

impl FanOut {
    /// Queues `feed` (waking the thread, started on first use); O(1).
    fn push(self: &Arc<Self>, feed: Arc<Feed>) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.feeds.push_back(feed);
        if !queue.started {
            queue.started = true;
            let fan_out = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("converge-watch-fanout".into())
                .spawn(move || fan_out.run());
            if spawned.is_err() {
                // No thread to be had: wake the watchers here instead.
                queue.started = false;
                for feed in std::mem::take(&mut queue.feeds) {
                    feed.wake_watchers();
                }
                return;
            }
        }
        drop(queue);
        self.wake.notify_one();
    }

    fn run(&self) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(feed) = queue.feeds.pop_front() {
                drop(queue);
                feed.wake_watchers();
                queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            } else if queue.stopped {
                return;
            } else {
                queue = self.wake.wait(queue).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    fn stop(&self) {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).stopped = true;
        self.wake.notify_all();
    }
}

impl Feed {
    fn new(capacity: usize, fan_out: Arc<FanOut>) -> Arc<Self> {
        Arc::new(Self {
            window: RwLock::new(Run::with_capacity(capacity.clamp(1, 4096))),
            capacity: capacity.max(1),
            notify: Notify::new(),
            queued: AtomicBool::new(false),
            fan_out,
            closed: AtomicBool::new(false),
        })
    }

    /// Called on the log writer's thread with each run of durable entries: O(1) per run for
    /// the watchers, whatever their number.
    fn publish(self: &Arc<Self>, entries: &[Arc<Entry>]) {
        {
            let mut window = self.window.write().unwrap_or_else(PoisonError::into_inner);
            for entry in entries {
                window.push(entry);
            }
            // `capacity` is at least 1, so this is: at most `capacity` entries, and over
            // `WATCH_WINDOW_BYTES_MAX` bytes only with the newest entry alone.
            window.trim(self.capacity, WATCH_WINDOW_BYTES_MAX, 1);
        }
        if !self.queued.swap(true, Ordering::SeqCst) {
            self.fan_out.push(Arc::clone(self));
        }
    }

    /// On the fan-out thread: wakes every watcher waiting for news.
    fn wake_watchers(&self) {
        // Cleared first, so a publish from now on queues the feed again.
        self.queued.store(false, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Copies entries after `last` from the window into `out` (see [`Run::copy_after`]).
    fn read_after(
        &self,
        last: Seq,
        max: usize,
        bytes_max: usize,
        out: &mut VecDeque<Arc<Entry>>,
    ) -> Found {
        self.window
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .copy_after(last, max, bytes_max, out)
    }
}

/// The feed of one watched context, held by its watchers.
pub(crate) struct Hub {
    id: ContextId,
    /// Taken when the hub drops, so the store can forget a context nobody wrote to.
    context: Option<Arc<Context>>,
    store: Store,
    feed: Arc<Feed>,
    /// What its watchers catching up last read from storage.
    catch_up: CatchUp,
    lagging: AtomicUsize,
    registry: Weak<Registry>,
}

impl Hub {
    fn context(&self) -> &Context {
        self.context.as_ref().expect("taken only on drop")
    }
}

#[derive(Default)]
struct Registry {
    hubs: Mutex<HashMap<ContextId, Weak<Hub>>>,
}

/// The hubs of all watched contexts.
#[derive(Default)]
pub(crate) struct Hubs {
    registry: Arc<Registry>,
    fan_out: Arc<FanOut>,
}

impl Drop for Hubs {
    fn drop(&mut self) {
        self.fan_out.stop();
    }
}

impl Hubs {
    /// The hub of `id`, made and attached to storage if nobody watches it yet. The caller
    /// reads its backlog only after this returns, so nothing durable afterwards is missed.
    fn hub(&self, id: &ContextId, store: &Store, capacity: usize) -> Result<Arc<Hub>, LedgerError> {
        let mut hubs = self.registry.hubs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(hub) = hubs.get(id).and_then(Weak::upgrade) {
            return Ok(hub);
        }
        let context = store.context(id).map_err(errors::storage)?;
        let feed = Feed::new(capacity, Arc::clone(&self.fan_out));
        let publisher = Arc::clone(&feed);
        context.set_listener(Some(Arc::new(move |entries: &[Arc<Entry>]| {
            publisher.publish(entries);
        })));
        let hub = Arc::new(Hub {
            id: id.clone(),
            context: Some(context),
            store: store.clone(),
            feed,
            catch_up: CatchUp::default(),
            lagging: AtomicUsize::new(0),
            registry: Arc::downgrade(&self.registry),
        });
        hubs.insert(id.clone(), Arc::downgrade(&hub));
        Ok(hub)
    }

    fn live(&self) -> Vec<Arc<Hub>> {
        let hubs = self.registry.hubs.lock().unwrap_or_else(PoisonError::into_inner);
        hubs.values().filter_map(Weak::upgrade).collect()
    }

    /// Contexts with a live feed now (someone watches them).
    pub(crate) fn watched(&self) -> usize {
        self.live().len()
    }

    /// Watchers catching up from storage now, across all contexts.
    pub(crate) fn lagging(&self) -> usize {
        self.live().iter().map(|h| h.lagging.load(Ordering::Relaxed)).sum()
    }

    /// Ends every watch stream (the ledger is closing).
    pub(crate) fn close_all(&self) {
        for hub in self.live() {
            hub.feed.close();
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let Some(registry) = self.registry.upgrade() else { return };
        let mut hubs = registry.hubs.lock().unwrap_or_else(PoisonError::into_inner);
        // Only if no newer hub replaced this one meanwhile.
        if hubs.get(&self.id).is_some_and(|w| w.strong_count() == 0) {
            hubs.remove(&self.id);
            self.context().set_listener(None);
            // A watch of a context nobody wrote to leaves nothing behind.
            drop(self.context.take());
            self.store.release(&self.id);
        }
    }
}

/// Counts a watcher for as long as it lives.
struct WatcherSlot {
    inner: Arc<Inner>,
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.inner.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) fn watch(inner: &Arc<Inner>, req: &WatchRequest) -> Result<WatchStream, LedgerError> {
    let id = request::context_id(&req.context_id)?;
    let key = request::key_filter(req.key.as_deref())?;
    if inner.closing.load(Ordering::SeqCst) {
        return Err(shutting_down());
    }
    let max = inner.config.watchers_max;
    if inner.watchers.fetch_add(1, Ordering::SeqCst) >= max {
        inner.watchers.fetch_sub(1, Ordering::SeqCst);
        return Err(LedgerError::ResourceExhausted(format!(
            "this ledger already serves {max} watchers, its limit; close some or raise watchers_max"
        )));
    }
    let slot = WatcherSlot { inner: Arc::clone(inner) };
    let hub = inner.hubs.hub(&id, &inner.store, inner.config.watch_buffer_entries)?;
    if inner.closing.load(Ordering::SeqCst) {
        // Closing began while the hub was made: `close_all` may have missed it.
        hub.feed.close();
    }
    // Every watch starts by catching up (from its first sequence to the latest).
    hub.catch_up.reader_started();
    let watcher = Watcher {
        hub,
        key,
        last: Seq(req.from_sequence),
        backlog: VecDeque::new(),
        caught_up: false,
        lagging: false,
        finished: false,
        slot,
    };
    Ok(Box::pin(futures_util::stream::unfold(watcher, |mut w| async move {
        let item = w.next().await?;
        Some((item, w))
    })))
}

fn shutting_down() -> LedgerError {
    LedgerError::Unavailable(
        "the ledger is shutting down; resume the watch from the last sequence received".into(),
    )
}

struct Watcher {
    hub: Arc<Hub>,
    key: Option<Key>,
    /// Every entry up to here has been examined (sent, or skipped by the key filter).
    last: Seq,
    backlog: VecDeque<Arc<Entry>>,
    /// The backlog has been read up to the context's latest entry at some point after the
    /// subscription, so the live feed carries the rest.
    caught_up: bool,
    lagging: bool,
    finished: bool,
    slot: WatcherSlot,
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<Arc<Entry>, LedgerError>> {
        loop {
            if let Some(entry) = self.backlog.pop_front() {
                return Some(Ok(entry));
            }
            if self.finished {
                return None;
            }
            if self.hub.feed.closed.load(Ordering::SeqCst)
                || self.slot.inner.closing.load(Ordering::SeqCst)
            {
                self.finished = true;
                return Some(Err(shutting_down()));
            }
            if !self.caught_up {
                if let Err(err) = self.read_page() {
                    self.finished = true;
                    return Some(Err(err));
                }
                continue;
            }
            // Register for the next wake-up before looking, so a publish in between is seen.
            let feed = Arc::clone(&self.hub.feed);
            let notified = feed.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut run = VecDeque::new();
            match feed.read_after(self.last, LIVE_BATCH, LIVE_BATCH_BYTES, &mut run) {
                Found::Lagged => self.fall_behind(),
                Found::Copied(0) => {
                    if !feed.closed.load(Ordering::SeqCst) {
                        notified.await;
                    }
                }
                Found::Copied(_) => self.take_run(run),
            }
        }
    }

    /// Consecutive entries after `last` from the live window: pass them through the key filter.
    fn take_run(&mut self, run: VecDeque<Arc<Entry>>) {
        if let Some(last) = run.back() {
            self.last = last.sequence();
        }
        match &self.key {
            Some(key) => self.backlog.extend(run.into_iter().filter(|e| e.key() == key)),
            None => self.backlog = run,
        }
    }

    fn fall_behind(&mut self) {
        self.caught_up = false;
        self.hub.catch_up.reader_started();
        if !self.lagging {
            self.lagging = true;
            self.hub.lagging.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads the next page of the backlog after `last`: from what another watcher catching up
    /// just read, if it holds the next entry, otherwise from storage.
    fn read_page(&mut self) -> Result<(), LedgerError> {
        if self.key.is_none() {
            let copied = self.hub.catch_up.read_after(
                self.last,
                PAGE_ENTRIES,
                PAGE_BYTES,
                &mut self.backlog,
            );
            if copied > 0 {
                self.last = self.backlog.back().expect("copied").sequence();
                return Ok(());
            }
        }
        let mut query = ReadQuery {
            after: self.last,
            before: None,
            newest_first: false,
            limit: PAGE_ENTRIES,
            key: self.key.clone(),
            bytes_max: PAGE_BYTES,
        };
        let mut page = self.hub.context().read(&query).map_err(errors::storage)?;
        if page.entries.is_empty() && page.over_budget {
            // One entry larger than a page: read it alone.
            query.limit = 1;
            query.bytes_max = usize::MAX;
            page = self.hub.context().read(&query).map_err(errors::storage)?;
        }
        if self.key.is_none() {
            self.hub.catch_up.keep(&page.entries);
        }
        let full = page.entries.len() == PAGE_ENTRIES || page.over_budget;
        if let Some(last) = page.entries.last() {
            self.last = last.sequence();
        }
        if !full {
            // Everything up to the context's latest entry (when the read began) was examined.
            self.last = self.last.max(page.latest);
            self.caught_up = true;
            self.hub.catch_up.reader_done();
            if self.lagging {
                self.lagging = false;
                self.hub.lagging.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.backlog.extend(page.entries);
        Ok(())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if !self.caught_up {
            self.hub.catch_up.reader_done();
        }
        if self.lagging {
            self.hub.lagging.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
