//! Watch responses, each entry encoded once for all the watchers of its context.
//!
//! The ledger hands every watcher of a context the same `Arc<Entry>`; a thousand watchers
//! used to encode it a thousand times. Here each watched context has a [`Recent`]: the
//! encoded events of its newest entries by sequence, shared by the server's watch streams
//! of that context. A stream takes every entry its watch has ready (up to [`BATCH`]), finds
//! their encodings under one lock, encodes the missing ones outside it and stores them for
//! the other watchers. Sending an entry to one more watcher is then a copy of its bytes into
//! the response, which tonic gathers with the rest of what the stream has ready into one
//! HTTP/2 frame.
//!
//! Bounded: a context keeps at most [`RECENT_ENTRIES`] encodings and about
//! [`RECENT_BYTES`] bytes, for as long as one of its watch streams lives. A watcher reading
//! older entries (catching up) encodes them itself and keeps nothing. An encoding is used
//! only for the entry whose content hash it was made from.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use converge_core::{Entry, Hash};
use converge_proto::watch_event::WatchEvent;
use converge_proto::{convert, status};
use tonic::Status;
use tracing::error;

use crate::metrics::Metrics;
use crate::service::{PANIC_MESSAGE, panic_text};

/// Entries a stream takes from its watch at a time.
pub(crate) const BATCH: usize = 64;

/// Encodings a context keeps, newest first.
pub(crate) const RECENT_ENTRIES: usize = 1024;

/// Bytes of encodings a context keeps (the newest one always stays).
pub(crate) const RECENT_BYTES: usize = 4 * 1024 * 1024;

/// The [`Recent`] encodings of every context the server's watch streams follow.
#[derive(Default)]
pub(crate) struct Encodings {
    contexts: Mutex<Contexts>,
}

#[derive(Default)]
struct Contexts {
    by_id: HashMap<String, Weak<Recent>>,
    /// Forgotten contexts are swept once the map reaches this size.
    sweep_at: usize,
}

impl Encodings {
    /// The encodings of `context`, shared with its other watch streams.
    pub(crate) fn of(&self, context: &str) -> Arc<Recent> {
        let mut contexts = self.contexts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(recent) = contexts.by_id.get(context).and_then(Weak::upgrade) {
            return recent;
        }
        if contexts.by_id.len() >= contexts.sweep_at {
            contexts.by_id.retain(|_, recent| recent.strong_count() > 0);
            contexts.sweep_at = (contexts.by_id.len() * 2).max(64);
        }
        let recent = Arc::new(Recent::default());
        contexts.by_id.insert(context.to_string(), Arc::downgrade(&recent));
        recent
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.contexts.lock().unwrap_or_else(PoisonError::into_inner).by_id.len()
    }
}

/// The encoded watch events of one context's newest entries.
#[derive(Default)]
pub(crate) struct Recent {
    window: Mutex<Window>,
}

/// Encodings by sequence: `slots[i]` is entry `first + i`'s, if made.
#[derive(Default)]
struct Window {
    first: u64,
    slots: VecDeque<Option<Encoded>>,
    bytes: usize,
}

struct Encoded {
    content_hash: Hash,
    event: Bytes,
}

impl Recent {
    /// The encoded events of `entries`, in order, into `out`.
    fn encode(&self, entries: &[Arc<Entry>], out: &mut VecDeque<Bytes>) {
        let mut found = 0;
        {
            let window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            for entry in entries {
                let Some(event) = window.get(entry) else { break };
                out.push_back(event);
                found += 1;
            }
        }
        if found == entries.len() {
            return;
        }
        // The first watcher to get an entry encodes it (and, in practice, the ones after it).
        let made: Vec<Bytes> = entries[found..]
            .iter()
            .map(|entry| WatchEvent::encode_entry(&convert::entry_to_wire(entry)))
            .collect();
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        for (entry, event) in entries[found..].iter().zip(&made) {
            window.insert(entry, event.clone());
        }
        drop(window);
        out.extend(made);
    }
}

impl Window {
    fn get(&self, entry: &Entry) -> Option<Bytes> {
        let index = usize::try_from(entry.sequence().0.checked_sub(self.first)?).ok()?;
        let encoded = self.slots.get(index)?.as_ref()?;
        (encoded.content_hash == entry.content_hash()).then(|| encoded.event.clone())
    }

    fn insert(&mut self, entry: &Entry, event: Bytes) {
        let seq = entry.sequence().0;
        if self.slots.is_empty() {
            self.first = seq;
        }
        let Some(mut index) = seq.checked_sub(self.first) else {
            return; // older than every entry kept: a watcher catching up
        };
        if index >= self.slots.len() as u64 + RECENT_ENTRIES as u64 {
            // Far ahead of everything kept: none of it is recent any more.
            self.slots.clear();
            self.bytes = 0;
            self.first = seq;
            index = 0;
        }
        let index = usize::try_from(index).expect("within RECENT_ENTRIES of the end");
        let encoded = Encoded { content_hash: entry.content_hash(), event };
        while self.slots.len() <= index {
            self.slots.push_back(None);
        }
        if let Some(old) = &self.slots[index] {
            self.bytes -= old.event.len();
        }
        self.bytes += encoded.event.len();
        self.slots[index] = Some(encoded);
        while self.slots.len() > RECENT_ENTRIES
            || (self.bytes > RECENT_BYTES && self.slots.len() > 1)
        {
            if let Some(Some(dropped)) = self.slots.pop_front() {
                self.bytes -= dropped.event.len();
            }
            self.first += 1;
        }
    }
}

/// A watch's entries as encoded events; a panic while producing one ends the stream with
/// `INTERNAL`.
pub(crate) struct WatchEventStream {
    entries: converge_api::WatchStream,
    recent: Arc<Recent>,
    metrics: Arc<Metrics>,
    /// Entries taken from the watch, kept to reuse its allocation.
    batch: Vec<Arc<Entry>>,
    /// Encoded events not yet yielded.
    ready: VecDeque<Bytes>,
    /// Whether the watch has ended, and how.
    watch: Watch,
}

/// The state of the watch under a stream.
enum Watch {
    Open,
    /// Ended with this error, to send once the events before it are.
    Failed(Status),
    /// Ended: nothing follows the events already encoded.
    Done,
}

impl WatchEventStream {
    pub(crate) fn new(
        entries: converge_api::WatchStream,
        recent: Arc<Recent>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            entries,
            recent,
            metrics,
            batch: Vec::new(),
            ready: VecDeque::new(),
            watch: Watch::Open,
        }
    }

    /// Takes what the watch has ready and encodes it.
    fn fill(&mut self, cx: &mut Context<'_>) {
        let mut batch = std::mem::take(&mut self.batch);
        while batch.len() < BATCH {
            match self.entries.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(entry))) => batch.push(entry),
                Poll::Ready(Some(Err(err))) => {
                    self.watch = Watch::Failed(status::to_status(&err));
                    break;
                }
                Poll::Ready(None) => {
                    self.watch = Watch::Done;
                    break;
                }
                Poll::Pending => break,
            }
        }
        self.recent.encode(&batch, &mut self.ready);
        batch.clear();
        self.batch = batch;
    }
}

impl futures_core::Stream for WatchEventStream {
    type Item = Result<WatchEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ready.is_empty() && matches!(this.watch, Watch::Open) {
            let filled = std::panic::catch_unwind(AssertUnwindSafe(|| this.fill(cx)));
            if let Err(panic) = filled {
                this.watch = Watch::Done;
                this.ready.clear();
                this.metrics.panicked();
                error!(panic = panic_text(panic.as_ref()), "watch stream panicked");
                return Poll::Ready(Some(Err(Status::internal(PANIC_MESSAGE))));
            }
        }
        if let Some(event) = this.ready.pop_front() {
            return Poll::Ready(Some(Ok(WatchEvent::encoded(event))));
        }
        match std::mem::replace(&mut this.watch, Watch::Done) {
            Watch::Open => {
                this.watch = Watch::Open;
                Poll::Pending
            }
            Watch::Failed(status) => Poll::Ready(Some(Err(status))),
            Watch::Done => Poll::Ready(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use converge_core::{ContextId, EntryParts, Key, LamportTime, Metadata, Seq, Timestamp};
    use converge_proto::v1;
    use futures_util::StreamExt as _;
    use prost::Message as _;

    use super::*;

    fn entry(seq: u64, payload: &str) -> Arc<Entry> {
        let parts = EntryParts {
            sequence: Seq(seq),
            key: Key::try_new("facts").unwrap(),
            payload: Bytes::from(payload.to_string()),
            appended_at: Timestamp(seq),
            lamport: LamportTime(seq),
            metadata: Metadata::default(),
        };
        Arc::new(Entry::seal(&ContextId::try_new("c").unwrap(), parts))
    }

    fn decoded(event: &Bytes) -> v1::Entry {
        WatchEvent::decode(event.as_ref()).unwrap().entry.unwrap()
    }

    fn events(recent: &Recent, entries: &[Arc<Entry>]) -> Vec<Bytes> {
        let mut out = VecDeque::new();
        recent.encode(entries, &mut out);
        out.into()
    }

    #[test]
    fn watchers_of_a_context_share_each_entrys_encoding() {
        let encodings = Encodings::default();
        let (a, b) = (encodings.of("c"), encodings.of("c"));
        let entries: Vec<_> = (1..=3).map(|s| entry(s, "x")).collect();
        let first = events(&a, &entries);
        let second = events(&b, &entries[1..]);
        for (event, entry) in first.iter().zip(&entries) {
            assert_eq!(decoded(event), convert::entry_to_wire(entry));
        }
        // The same bytes, not another encoding of them.
        assert_eq!(second[0].as_ptr(), first[1].as_ptr());
        assert_eq!(second[1].as_ptr(), first[2].as_ptr());
        // Another context has its own.
        let other = events(&encodings.of("d"), &entries[..1]);
        assert_ne!(other[0].as_ptr(), first[0].as_ptr());
    }

    #[test]
    fn an_encoding_serves_only_the_entry_it_was_made_from() {
        let recent = Recent::default();
        let made = events(&recent, &[entry(1, "x")]);
        let other = events(&recent, &[entry(1, "y")]);
        assert_ne!(made[0], other[0]);
        assert_eq!(decoded(&other[0]).payload, "y");
    }

    #[test]
    fn only_the_newest_entries_are_kept_and_older_ones_still_encode() {
        let recent = Recent::default();
        let total = RECENT_ENTRIES as u64 + 10;
        for seq in 1..=total {
            events(&recent, &[entry(seq, "x")]);
        }
        let window = recent.window.lock().unwrap();
        assert_eq!(window.slots.len(), RECENT_ENTRIES);
        assert_eq!(window.first, 11);
        drop(window);
        // An entry older than the window is encoded for its watcher and not kept.
        let old = events(&recent, &[entry(3, "x")]);
        assert_eq!(decoded(&old[0]).sequence, 3);
        assert_eq!(recent.window.lock().unwrap().first, 11);
        // A jump far ahead starts over rather than filling the gap.
        events(&recent, &[entry(total + 5 * RECENT_ENTRIES as u64, "x")]);
        let window = recent.window.lock().unwrap();
        assert_eq!(window.slots.len(), 1);
        assert_eq!(window.first, total + 5 * RECENT_ENTRIES as u64);
    }

    #[test]
    fn a_window_holds_about_its_byte_budget() {
        let recent = Recent::default();
        let big = "x".repeat(1024 * 1024);
        for seq in 1..=10 {
            events(&recent, &[entry(seq, &big)]);
        }
        let window = recent.window.lock().unwrap();
        assert!(window.bytes <= RECENT_BYTES, "{}", window.bytes);
        assert_eq!(window.slots.len(), 3);
        assert_eq!(window.first, 8);
    }

    #[test]
    fn forgotten_contexts_are_swept() {
        let encodings = Encodings::default();
        for i in 0..1000 {
            drop(encodings.of(&format!("c{i}")));
        }
        let kept = encodings.of("kept");
        assert!(encodings.tracked() <= 65, "{}", encodings.tracked());
        assert!(Arc::ptr_eq(&kept, &encodings.of("kept")));
    }

    #[tokio::test]
    async fn a_stream_yields_every_entry_then_the_watchs_error() {
        let items: Vec<Result<Arc<Entry>, converge_api::LedgerError>> = vec![
            Ok(entry(1, "a")),
            Ok(entry(2, "b")),
            Err(converge_api::LedgerError::Unavailable("closing".into())),
        ];
        let watch: converge_api::WatchStream = Box::pin(futures_util::stream::iter(items));
        let mut stream =
            WatchEventStream::new(watch, Arc::new(Recent::default()), Arc::new(Metrics::default()));
        let first = stream.next().await.unwrap().unwrap().encode_to_vec();
        assert_eq!(WatchEvent::decode(first.as_slice()).unwrap().entry.unwrap().sequence, 1);
        assert!(stream.next().await.unwrap().is_ok());
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(stream.next().await.is_none());
    }
}
