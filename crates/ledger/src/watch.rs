//! Watch: subscribe to a context's live feed first, then read the backlog from storage, then
//! follow the feed — skipping anything already sent — so a watcher sees every entry once, in
//! order, even while appends race with the subscription.
//!
//! A context's live feed (its [`Hub`]) exists while someone watches it: a bounded broadcast of
//! the entries its storage reports durable, in order. The writer never waits for a watcher:
//! one that falls more than the feed's capacity behind is told it lagged, goes back to
//! reading pages from storage after the last entry it sent, and rejoins the feed. Memory per
//! watcher is bounded by one page; the feed's ring is shared by all watchers of the context.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use converge_api::{LedgerError, WatchRequest, WatchStream};
use converge_core::{ContextId, Entry, Key, Seq};
use converge_storage::{Context, ReadQuery};
use tokio::sync::{broadcast, watch};

use crate::errors;
use crate::ledger::Inner;
use crate::request;

/// Entries read per backlog page.
const PAGE_ENTRIES: usize = 256;

/// Bytes read per backlog page (a single larger entry is still read, alone).
const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// The live feed of one watched context.
pub(crate) struct Hub {
    id: ContextId,
    context: Arc<Context>,
    sender: broadcast::Sender<Arc<Entry>>,
    lagging: AtomicUsize,
    registry: Weak<Registry>,
}

#[derive(Default)]
struct Registry {
    hubs: Mutex<HashMap<ContextId, Weak<Hub>>>,
}

/// The hubs of all watched contexts.
#[derive(Default)]
pub(crate) struct Hubs {
    registry: Arc<Registry>,
}

impl Hubs {
    /// The hub of `id` (made, and attached to storage, if nobody watches it yet) and a new
    /// subscription to it. The subscription exists before the caller reads any backlog.
    fn subscribe(
        &self,
        id: &ContextId,
        context: Arc<Context>,
        capacity: usize,
    ) -> (Arc<Hub>, broadcast::Receiver<Arc<Entry>>) {
        let mut hubs = self.registry.hubs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(hub) = hubs.get(id).and_then(Weak::upgrade) {
            let rx = hub.sender.subscribe();
            return (hub, rx);
        }
        let (sender, rx) = broadcast::channel(capacity.max(1));
        let feed = sender.clone();
        context.set_listener(Some(Arc::new(move |entry: &Arc<Entry>| {
            // No receivers is fine: the feed exists only while someone watches.
            let _ = feed.send(Arc::clone(entry));
        })));
        let hub = Arc::new(Hub {
            id: id.clone(),
            context,
            sender,
            lagging: AtomicUsize::new(0),
            registry: Arc::downgrade(&self.registry),
        });
        hubs.insert(id.clone(), Arc::downgrade(&hub));
        (hub, rx)
    }

    /// Contexts with a live feed now (someone watches them).
    pub(crate) fn watched(&self) -> usize {
        let hubs = self.registry.hubs.lock().unwrap_or_else(PoisonError::into_inner);
        hubs.values().filter(|w| w.strong_count() > 0).count()
    }

    /// Watchers catching up from storage now, across all contexts.
    pub(crate) fn lagging(&self) -> usize {
        let hubs = self.registry.hubs.lock().unwrap_or_else(PoisonError::into_inner);
        hubs.values().filter_map(Weak::upgrade).map(|h| h.lagging.load(Ordering::Relaxed)).sum()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let Some(registry) = self.registry.upgrade() else { return };
        let mut hubs = registry.hubs.lock().unwrap_or_else(PoisonError::into_inner);
        // Only if no newer hub replaced this one meanwhile.
        if hubs.get(&self.id).is_some_and(|w| w.strong_count() == 0) {
            hubs.remove(&self.id);
            self.context.set_listener(None);
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
    if *inner.closing.borrow() {
        return Err(LedgerError::Unavailable(
            "the ledger is shutting down; retry against a running node".into(),
        ));
    }
    let max = inner.config.watchers_max;
    if inner.watchers.fetch_add(1, Ordering::SeqCst) >= max {
        inner.watchers.fetch_sub(1, Ordering::SeqCst);
        return Err(LedgerError::ResourceExhausted(format!(
            "this ledger already serves {max} watchers, its limit; close some or raise watchers_max"
        )));
    }
    let slot = WatcherSlot { inner: Arc::clone(inner) };
    let context = inner.store.context(&id).map_err(errors::storage)?;
    let (hub, live) = inner.hubs.subscribe(&id, context, inner.config.watch_buffer_entries);
    let watcher = Watcher {
        hub,
        live,
        key,
        last: Seq(req.from_sequence),
        backlog: VecDeque::new(),
        caught_up: false,
        lagging: false,
        closing: inner.closing.subscribe(),
        finished: false,
        _slot: slot,
    };
    Ok(Box::pin(futures_util::stream::unfold(watcher, |mut w| async move {
        let item = w.next().await?;
        Some((item, w))
    })))
}

struct Watcher {
    hub: Arc<Hub>,
    live: broadcast::Receiver<Arc<Entry>>,
    key: Option<Key>,
    /// Every entry up to here has been examined (sent, or skipped by the key filter).
    last: Seq,
    backlog: VecDeque<Arc<Entry>>,
    /// The backlog has been read up to the context's latest entry at some point after the
    /// subscription, so the live feed carries the rest.
    caught_up: bool,
    lagging: bool,
    closing: watch::Receiver<bool>,
    finished: bool,
    _slot: WatcherSlot,
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<Arc<Entry>, LedgerError>> {
        loop {
            if self.finished {
                return None;
            }
            if *self.closing.borrow() {
                return Some(Err(self.finish(LedgerError::Unavailable(
                    "the ledger is shutting down; resume the watch from the last sequence received"
                        .into(),
                ))));
            }
            if let Some(entry) = self.backlog.pop_front() {
                return Some(Ok(entry));
            }
            if !self.caught_up {
                if let Err(err) = self.read_page() {
                    return Some(Err(self.finish(err)));
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = self.closing.changed() => {}
                received = self.live.recv() => match received {
                    Ok(entry) => {
                        if let Some(entry) = self.accept(entry) {
                            return Some(Ok(entry));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.fall_behind(),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }

    fn finish(&mut self, err: LedgerError) -> LedgerError {
        self.finished = true;
        err
    }

    /// An entry from the live feed: skip what was already examined, go back to storage on a
    /// gap (a lag the feed could not report), pass it through the key filter.
    fn accept(&mut self, entry: Arc<Entry>) -> Option<Arc<Entry>> {
        let seq = entry.sequence();
        if seq <= self.last {
            return None;
        }
        if seq.0 != self.last.0 + 1 {
            self.fall_behind();
            return None;
        }
        self.last = seq;
        match &self.key {
            Some(key) if entry.key() != key => None,
            _ => Some(entry),
        }
    }

    fn fall_behind(&mut self) {
        self.caught_up = false;
        if !self.lagging {
            self.lagging = true;
            self.hub.lagging.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads the next page of the backlog after `last`.
    fn read_page(&mut self) -> Result<(), LedgerError> {
        let mut query = ReadQuery {
            after: self.last,
            limit: PAGE_ENTRIES,
            key: self.key.clone(),
            bytes_max: PAGE_BYTES,
        };
        let mut page = self.hub.context.read(&query).map_err(errors::storage)?;
        if page.entries.is_empty() && page.over_budget {
            // One entry larger than a page: read it alone.
            query.limit = 1;
            query.bytes_max = usize::MAX;
            page = self.hub.context.read(&query).map_err(errors::storage)?;
        }
        let full = page.entries.len() == PAGE_ENTRIES || page.over_budget;
        if let Some(last) = page.entries.last() {
            self.last = last.sequence();
        }
        if !full {
            // Everything up to the context's latest entry (when the read began) was examined.
            self.last = self.last.max(page.latest);
            self.caught_up = true;
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
        if self.lagging {
            self.hub.lagging.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
