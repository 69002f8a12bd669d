//! One context's storage: the single owner that serialises its appends, and its reads.
//!
//! Each context has one lock. An append takes it to check the append id, stamp the entry
//! (sequence, time, Lamport time), finish its content hash and queue its record — so records
//! of one context enter the log in sequence order — and releases it before the fsync. When the
//! writer reports the record durable, the context applies the entry to its durable head (the
//! Merkle tree readers and proofs see), indexes it, tells its listener, and completes the
//! caller. Different contexts never wait for each other except inside the shared group commit.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use converge_core::merkle::{CompactTree, fold_range, root_of_leaves};
use converge_core::{
    AppendId, ContextHead, ContextId, Entry, EntryParts, Hash, Key, LamportTime, Metadata, NodeId,
    PartialContentHash, Seq, Sequencer, Stamp, Timestamp, TreeHead, TreeSize,
};

use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::index::cold::Cold;
use crate::index::recent::Recent;
use crate::index::{ContextCheckpoint, STORED_LEVEL_MIN};
use crate::log::{LogSink, Position};
use crate::record::{self, FLAG_BATCH_CONTINUES, RecordKind};
use crate::store::{Disk, Shared};

/// Called once when an append is durable (with the entry) or has failed.
pub type Completion = Box<dyn FnOnce(Result<Arc<Entry>>) + Send>;

/// Called with every entry of a context once it is durable, in sequence order, a run of
/// consecutive entries at a time (those made durable together).
pub type Listener = Arc<dyn Fn(&[Arc<Entry>]) + Send + Sync>;

/// An append as the caller asks for it; the context assigns the rest.
pub struct NewEntry {
    /// Key.
    pub key: Key,
    /// Payload.
    pub payload: Bytes,
    /// Metadata.
    pub metadata: Metadata,
    /// The Lamport time received with the request, if any.
    pub received: Option<LamportTime>,
    /// The client's idempotency token, if any.
    pub append_id: Option<AppendId>,
    /// The content hash with context, key and payload absorbed (computed before the lock).
    pub prefix: PartialContentHash,
}

/// What an append did.
#[derive(Debug, Clone)]
pub enum Appended {
    /// A new entry; the completion fires when it is durable.
    New(Arc<Entry>),
    /// The append id was already recorded for this entry; nothing was appended. The
    /// completion fires when that entry is durable (at once if it already is).
    Recorded(Arc<Entry>),
}

/// A read of a range of entries.
#[derive(Debug, Clone)]
pub struct ReadQuery {
    /// Entries after this sequence.
    pub after: Seq,
    /// Only entries before this sequence (`None`: no bound).
    pub before: Option<Seq>,
    /// Highest sequence first: the newest `limit` of the entries that match.
    pub newest_first: bool,
    /// At most this many (`usize::MAX`: no limit).
    pub limit: usize,
    /// Only entries with this key.
    pub key: Option<Key>,
    /// Stop before the entries' stored size passes this many bytes.
    pub bytes_max: usize,
}

/// The entries a read found.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// In the query's order: ascending sequence, or descending when newest first.
    pub entries: Vec<Arc<Entry>>,
    /// The context's latest durable sequence when the read began.
    pub latest: Seq,
    /// The read stopped early because of `bytes_max`.
    pub over_budget: bool,
}

struct InFlight {
    entry: Arc<Entry>,
    append_id: Option<AppendId>,
    lsn: u64,
    done: Vec<Completion>,
}

/// Where an append id was found.
enum Found<'a> {
    /// On an entry still in flight, at this index of `in_flight` (the lock still held).
    InFlight(MutexGuard<'a, State>, usize),
    /// On this durable entry.
    Durable(Seq),
    /// Nowhere (the lock still held).
    Absent(MutexGuard<'a, State>),
}

#[derive(Default)]
struct State {
    number: Option<u64>,
    /// Whether the cold index knows this context's number.
    named: bool,
    /// The stamping state, ahead of `durable` by the in-flight appends.
    next: Sequencer,
    /// What is durable: readers, proofs and tree heads see only this.
    durable: ContextHead,
    recent: Recent,
    arena: Arena,
    in_flight: VecDeque<InFlight>,
    in_flight_ids: HashMap<AppendId, Seq>,
    listener: Option<Listener>,
}

/// A context's storage. Cheap to share: the ledger holds one `Arc` per context.
pub struct Context {
    id: ContextId,
    shared: Arc<Shared>,
    state: Mutex<State>,
    /// The store's eviction epoch when this context was last looked up.
    last_used: AtomicU64,
}

impl State {
    /// Applies a durable entry: the durable head (with its tree), the index, the stamping state
    /// when it was not stamped here (recovery).
    fn commit(
        &mut self,
        shared: &Shared,
        entry: &Entry,
        position: Position,
        append_id: Option<&AppendId>,
    ) -> Result<()> {
        if self.recent.is_empty() {
            shared.dirty.dirtied();
        }
        let recent = &mut self.recent;
        self.durable.apply(entry, |id, hash| recent.push_node(id, hash))?;
        self.recent.push(entry, position, append_id);
        if self.next.latest() < entry.sequence() {
            self.next = *self.durable.sequencer();
        }
        Ok(())
    }

    /// Nothing was ever written to the context, nor is being written.
    fn unwritten(&self) -> bool {
        self.number.is_none() && self.next.latest().0 == 0 && self.in_flight.is_empty()
    }

    fn in_flight_index(&self, seq: Seq) -> Option<usize> {
        let front = self.in_flight.front()?.entry.sequence();
        usize::try_from(seq.0.checked_sub(front.0)?).ok().filter(|i| *i < self.in_flight.len())
    }
}

impl Context {
    pub(crate) fn new(id: ContextId, shared: Arc<Shared>) -> Self {
        Self { id, shared, state: Mutex::new(State::default()), last_used: AtomicU64::new(0) }
    }

    /// A context loaded from the cold index: `number`, durable up to `head`, with `tree`.
    pub(crate) fn loaded(
        id: ContextId,
        shared: Arc<Shared>,
        number: u64,
        head: Sequencer,
        tree: CompactTree,
    ) -> Result<Self> {
        let durable = ContextHead::from_parts(head, tree)
            .map_err(|e| Error::corrupt("index", 0, format!("context {id}: {e}")))?;
        let state = State {
            number: Some(number),
            named: true,
            next: head,
            durable,
            recent: Recent::after(head.latest().0),
            ..State::default()
        };
        Ok(Self { id, shared, state: Mutex::new(state), last_used: AtomicU64::new(0) })
    }

    /// A context first seen in a context record during recovery.
    pub(crate) fn numbered(id: ContextId, shared: Arc<Shared>, number: u64) -> Self {
        let state = State { number: Some(number), ..State::default() };
        Self { id, shared, state: Mutex::new(state), last_used: AtomicU64::new(0) }
    }

    /// Marks the context used in the store's eviction `epoch`.
    pub(crate) fn touch(&self, epoch: u64) {
        self.last_used.store(epoch, Ordering::Relaxed);
    }

    /// The store's eviction epoch when the context was last looked up.
    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// Whether forgetting this context's in-memory state loses nothing: nothing is in flight,
    /// nobody listens, and it holds no entry that only memory knows (it has none, or the cold
    /// index has all of them). The store reloads it from the cold index when it is next used.
    pub(crate) fn evictable(&self) -> bool {
        let st = self.lock();
        if !st.in_flight.is_empty() || st.listener.is_some() {
            return false;
        }
        if st.unwritten() {
            return true;
        }
        self.shared.disk().is_some() && st.named && st.recent.is_empty()
    }

    /// Calls `done` once every append in flight now is durable or has failed (at once if
    /// none is).
    pub fn when_settled(&self, done: Box<dyn FnOnce() + Send>) {
        let mut st = self.lock();
        if let Some(last) = st.in_flight.back_mut() {
            last.done.push(Box::new(move |_| done()));
        } else {
            drop(st);
            done();
        }
    }

    /// Whether the context holds entries the cold index does not (until a checkpoint writes
    /// them, it cannot be evicted).
    pub fn is_dirty(&self) -> bool {
        !self.lock().recent.is_empty()
    }

    /// Whether anything was ever written to this context (or is being written).
    pub(crate) fn is_unwritten(&self) -> bool {
        self.lock().unwritten()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The context's id.
    pub fn id(&self) -> &ContextId {
        &self.id
    }

    /// The context's number, once it has one.
    pub fn number(&self) -> Option<u64> {
        self.lock().number
    }

    /// The latest durable sequence (0 for an empty context).
    pub fn latest(&self) -> Seq {
        self.lock().durable.latest()
    }

    /// The latest sequence handed out, durable or not.
    pub fn latest_assigned(&self) -> Seq {
        self.lock().next.latest()
    }

    /// The durable tree head.
    pub fn tree_head(&self) -> TreeHead {
        self.lock().durable.tree_head()
    }

    /// What a listing shows of this context: its durable head and latest time, or `None` while
    /// it holds no durable entry.
    pub(crate) fn summary(&self) -> Option<crate::listing::ContextSummary> {
        let st = self.lock();
        (st.durable.latest().0 > 0).then(|| crate::listing::ContextSummary {
            id: self.id.clone(),
            head: st.durable.tree_head(),
            latest_appended_at: st.durable.sequencer().latest_appended_at(),
        })
    }

    /// Sets (or clears) the listener told about every durable entry.
    pub fn set_listener(&self, listener: Option<Listener>) {
        self.lock().listener = listener;
    }

    /// Appends an entry: checks the append id, stamps it at `now`, and queues it. `done` is
    /// called exactly once on every `Ok` path; on `Err` nothing was appended and `done` is
    /// dropped uncalled.
    pub fn append(
        self: &Arc<Self>,
        mut new: NewEntry,
        now: Timestamp,
        done: Completion,
    ) -> Result<Appended> {
        let mut st = self.lock();
        if let Some(id) = &new.append_id {
            match self.find_id(st, id)? {
                Found::InFlight(mut st, i) => {
                    let entry = Arc::clone(&st.in_flight[i].entry);
                    st.in_flight[i].done.push(done);
                    return Ok(Appended::Recorded(entry));
                }
                Found::Durable(seq) => return self.recorded(seq, done),
                Found::Absent(guard) => st = guard,
            }
        }
        let append_id = new.append_id.take();
        let entry = stamped(&st.next, new, now)?;
        self.submit(&mut st, vec![(Arc::clone(&entry), append_id)], Some(done))?;
        Ok(Appended::New(entry))
    }

    /// The entry `id` was recorded for, durable or still in flight.
    pub fn sequence_of(&self, id: &AppendId) -> Result<Option<Seq>> {
        Ok(match self.find_id(self.lock(), id)? {
            Found::InFlight(st, i) => Some(st.in_flight[i].entry.sequence()),
            Found::Durable(seq) => Some(seq),
            Found::Absent(_) => None,
        })
    }

    /// Looks `id` up in flight, in the recent index, then in the cold index (read without the
    /// lock; `checked` is the checkpoint base it was read at, so it is read again only if a
    /// checkpoint moved ids there meanwhile). Holds the lock again unless the id is durable.
    fn find_id<'a>(&'a self, mut st: MutexGuard<'a, State>, id: &AppendId) -> Result<Found<'a>> {
        let mut checked = None;
        loop {
            if let Some(i) = st.in_flight_ids.get(id).and_then(|seq| st.in_flight_index(*seq)) {
                return Ok(Found::InFlight(st, i));
            }
            if let Some(seq) = st.recent.append_id(id) {
                return Ok(Found::Durable(seq));
            }
            let base = st.recent.base;
            match (st.number, self.shared.disk()) {
                (Some(number), Some(Disk { cold, .. })) if base > 0 && checked != Some(base) => {
                    drop(st);
                    if let Some(seq) = cold.append_id(number, id)? {
                        return Ok(Found::Durable(seq));
                    }
                    checked = Some(base);
                    // Appends may have come meanwhile: look at memory again.
                    st = self.lock();
                }
                _ => return Ok(Found::Absent(st)),
            }
        }
    }

    /// Appends `news` in order as one run: stamped at `now` under one lock, written as one
    /// atomic batch. None may carry an `append_id` (those go through [`Self::append`], which
    /// looks for a recorded one). `done` fires once, when the last is durable.
    pub fn append_batch(
        self: &Arc<Self>,
        news: Vec<NewEntry>,
        now: Timestamp,
        done: Completion,
    ) -> Result<Vec<Arc<Entry>>> {
        debug_assert!(news.iter().all(|n| n.append_id.is_none()), "ids go one at a time");
        let mut st = self.lock();
        let mut next = st.next;
        let mut batch = Vec::with_capacity(news.len());
        for new in news {
            let entry = stamped(&next, new, now)?;
            next.advance(&Stamp::of(&entry))?;
            batch.push((entry, None));
        }
        let entries = batch.iter().map(|(e, _)| Arc::clone(e)).collect();
        if batch.is_empty() {
            drop(st);
            done(Err(Error::OutOfRange("nothing to append".into())));
        } else {
            self.submit(&mut st, batch, Some(done))?;
        }
        Ok(entries)
    }

    /// Appends entries produced elsewhere with every field fixed (a loaded snapshot's suffix;
    /// later, replicated entries), as one atomic batch: after a crash either all of them are
    /// there or none. The context's latest sequence must be `expected_latest`, with nothing in
    /// flight, and the entries must follow it. Each may carry an append id to record (a Load's
    /// `load_id` marks where its entries begin and end). `done` fires when the last one is
    /// durable.
    pub fn append_verified(
        self: &Arc<Self>,
        expected_latest: Seq,
        entries: Vec<(Entry, Option<AppendId>)>,
        done: Completion,
    ) -> Result<()> {
        let mut st = self.lock();
        let (assigned, durable) = (st.next.latest(), st.durable.latest());
        if assigned != expected_latest || durable != expected_latest {
            return Err(Error::Moved {
                context: self.id.to_string(),
                expected: expected_latest.0,
                actual: assigned.0,
            });
        }
        let mut check = st.next;
        for (entry, _) in &entries {
            check.advance(&Stamp::of(entry))?;
        }
        if entries.is_empty() {
            drop(st);
            done(Err(Error::OutOfRange("nothing to append".into())));
            return Ok(());
        }
        let batch = entries.into_iter().map(|(e, id)| (Arc::new(e), id)).collect();
        self.submit(&mut st, batch, Some(done))
    }

    /// Stamped entries into the log (disk) or straight into the index (memory), in order,
    /// under the context lock. `done` fires when the last is durable.
    fn submit(
        self: &Arc<Self>,
        st: &mut MutexGuard<'_, State>,
        batch: Vec<(Arc<Entry>, Option<AppendId>)>,
        done: Option<Completion>,
    ) -> Result<()> {
        match self.shared.disk() {
            None => {
                if self.shared.closed.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(Error::Closed);
                }
                if st.next.latest().0 == 0 {
                    self.shared.unindexed(&self.id);
                }
                for (entry, append_id) in &batch {
                    let len = record::fields_len(entry, append_id.as_ref());
                    let position = st
                        .arena
                        .push(len, |out| record::encode_fields(out, entry, append_id.as_ref()));
                    st.next.advance(&Stamp::of(entry))?;
                    st.commit(&self.shared, entry, position, append_id.as_ref())?;
                }
                if let Some(listener) = &st.listener {
                    let entries: Vec<Arc<Entry>> =
                        batch.iter().map(|(e, _)| Arc::clone(e)).collect();
                    listener(&entries);
                }
                if let (Some(done), Some((last, _))) = (done, batch.last()) {
                    // Callers never hold a lock this one depends on, so completing here is safe.
                    done(Ok(Arc::clone(last)));
                }
                Ok(())
            }
            Some(Disk { log, .. }) => {
                let new_number = if st.number.is_none() {
                    self.shared.unindexed(&self.id);
                    Some(self.shared.allocate_number())
                } else {
                    None
                };
                let number = new_number.or(st.number).expect("assigned above");
                let sink: Arc<dyn LogSink> = Arc::clone(self) as Arc<dyn LogSink>;
                let count = batch.len();
                let lsns = log.append(|records| {
                    if new_number.is_some() {
                        records.push(
                            RecordKind::Context,
                            0,
                            |b| record::encode_context_body(b, number, &self.id),
                            None,
                        );
                    }
                    batch
                        .iter()
                        .enumerate()
                        .map(|(i, (entry, id))| {
                            let flags = if i + 1 < count { FLAG_BATCH_CONTINUES } else { 0 };
                            let body = |b: &mut Vec<u8>| {
                                record::encode_entry_body(b, number, entry, id.as_ref());
                            };
                            records.push(RecordKind::Entry, flags, body, Some(Arc::clone(&sink)))
                        })
                        .collect::<Vec<u64>>()
                })?;
                st.number = Some(number);
                for ((entry, append_id), lsn) in batch.into_iter().zip(lsns) {
                    st.next.advance(&Stamp::of(&entry))?;
                    if let Some(id) = &append_id {
                        st.in_flight_ids.insert(id.clone(), entry.sequence());
                    }
                    st.in_flight.push_back(InFlight { entry, append_id, lsn, done: Vec::new() });
                }
                if let (Some(done), Some(last)) = (done, st.in_flight.back_mut()) {
                    last.done.push(done);
                }
                Ok(())
            }
        }
    }
}

/// `new` as the entry that follows `next`, stamped at `now` (its hash finished).
fn stamped(next: &Sequencer, new: NewEntry, now: Timestamp) -> Result<Arc<Entry>> {
    let stamp = next.stamp(now, new.received)?;
    let hash = new.prefix.finish(stamp.sequence, stamp.appended_at, stamp.lamport, &new.metadata);
    let parts = EntryParts {
        sequence: stamp.sequence,
        key: new.key,
        payload: new.payload,
        appended_at: stamp.appended_at,
        lamport: stamp.lamport,
        metadata: new.metadata,
    };
    Ok(Arc::new(Entry::from_trusted_parts(parts, hash)))
}

impl Context {
    /// The append id was recorded for durable entry `seq`: completes with it.
    fn recorded(&self, seq: Seq, done: Completion) -> Result<Appended> {
        let entry = self.read_one(seq)?;
        done(Ok(Arc::clone(&entry)));
        Ok(Appended::Recorded(entry))
    }

    /// Reads one durable entry (without holding the lock across the disk read).
    fn read_one(&self, seq: Seq) -> Result<Arc<Entry>> {
        let query = ReadQuery {
            after: Seq(seq.0 - 1),
            before: None,
            newest_first: false,
            limit: 1,
            key: None,
            bytes_max: usize::MAX,
        };
        let found = self.read(&query)?.entries.pop().ok_or_else(|| missing(&self.id, seq))?;
        debug_assert_eq!(found.sequence(), seq, "a read of one entry returns that entry");
        Ok(found)
    }

    fn decode_disk(
        &self,
        number: u64,
        seq: Seq,
        bytes: &Bytes,
        position: Position,
    ) -> Result<Entry> {
        let Some(Disk { log, .. }) = self.shared.disk() else { unreachable!("disk only") };
        let corrupt = |reason: String| {
            Error::corrupt(log.segment_path(position.segment), u64::from(position.offset), reason)
        };
        let (header, body, _) = record::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
        if header.kind != RecordKind::Entry {
            return Err(corrupt(format!("expected an entry record, found {:?}", header.kind)));
        }
        let rec =
            record::decode_entry_body(body, Some(bytes)).map_err(|e| corrupt(e.to_string()))?;
        if rec.context != number || rec.entry.sequence() != seq {
            return Err(corrupt(format!(
                "expected entry {seq} of context {number}, found entry {} of context {}",
                rec.entry.sequence(),
                rec.context
            )));
        }
        Ok(rec.entry)
    }

    /// Reads durable entries: those after `query.after` and before `query.before`, with
    /// `query.key` if given, at most `query.limit`, oldest or newest first, stopping early
    /// (and saying so) before `query.bytes_max`.
    pub fn read(&self, query: &ReadQuery) -> Result<ReadResult> {
        let st = self.lock();
        let latest = st.durable.latest();
        let mut result = ReadResult { latest, ..ReadResult::default() };
        // The highest sequence the query can return.
        let top = query.before.map_or(latest, |b| Seq(latest.0.min(b.0.saturating_sub(1))));
        match self.shared.disk() {
            None => {
                let seqs = plan_recent(&st, query, top);
                let mut budget = Budget::new(query.bytes_max);
                for seq in seqs {
                    let position = st.recent.position(seq).ok_or_else(|| missing(&self.id, seq))?;
                    if !budget.take(position.len) {
                        result.over_budget = true;
                        break;
                    }
                    result.entries.push(Arc::new(decode_memory(&st, seq, position)?));
                }
                Ok(result)
            }
            Some(Disk { log, cold }) => {
                let Some(number) = st.number else { return Ok(result) };
                let base = Seq(st.recent.base);
                let recent: Vec<(Seq, Position)> = plan_recent(&st, query, top)
                    .into_iter()
                    .filter_map(|seq| st.recent.position(seq).map(|p| (seq, p)))
                    .collect();
                drop(st);
                let cold_top = Seq(top.0.min(base.0));
                let mut wanted = if query.newest_first {
                    let mut wanted = recent;
                    if wanted.len() < query.limit && query.after < cold_top {
                        let left = query.limit - wanted.len();
                        wanted.extend(plan_cold_newest(cold, number, query, cold_top, left)?);
                    }
                    wanted
                } else {
                    let mut wanted = if query.after < cold_top {
                        plan_cold(cold, number, query, cold_top)?
                    } else {
                        Vec::new()
                    };
                    wanted.extend(recent);
                    wanted
                };
                wanted.truncate(query.limit);
                let mut budget = Budget::new(query.bytes_max);
                let fits = wanted.iter().take_while(|(_, p)| budget.take(p.len)).count();
                result.over_budget = fits < wanted.len();
                wanted.truncate(fits);
                let positions: Vec<Position> = wanted.iter().map(|(_, p)| *p).collect();
                let records = log.read_many(&positions)?;
                for ((seq, position), bytes) in wanted.iter().zip(&records) {
                    result
                        .entries
                        .push(Arc::new(self.decode_disk(number, *seq, bytes, *position)?));
                }
                Ok(result)
            }
        }
    }

    /// Content hashes of durable entries `from..=to`.
    pub fn leaf_hashes(&self, from: Seq, to: Seq) -> Result<Vec<Hash>> {
        let (number, base, tail) = {
            let st = self.lock();
            if to > st.durable.latest() || from.0 == 0 {
                return Err(Error::OutOfRange(format!(
                    "entries {from}..={to} are not all in context {} (latest {})",
                    self.id,
                    st.durable.latest()
                )));
            }
            let base = st.recent.base;
            let start = from.0.max(base + 1);
            let tail: Vec<Hash> = (start..=to.0).filter_map(|s| st.recent.hash(Seq(s))).collect();
            (st.number, base, tail)
        };
        let mut out = Vec::new();
        if from.0 <= base {
            let (Some(Disk { cold, .. }), Some(number)) = (self.shared.disk(), number) else {
                return Err(missing(&self.id, from));
            };
            out = cold.leaf_hashes(number, from.0, to.0.min(base))?;
        }
        out.extend(tail);
        Ok(out)
    }

    /// The hash of a complete node of the durable tree.
    pub fn node_hash(&self, id: NodeId) -> Result<Hash> {
        if id.level < STORED_LEVEL_MIN {
            let leaves = self.leaf_hashes(Seq(id.first_leaf() + 1), Seq(id.end_leaf()))?;
            return Ok(root_of_leaves(&leaves));
        }
        let number = {
            let st = self.lock();
            if let Some(hash) = st.recent.node(id) {
                return Ok(hash);
            }
            st.number
        };
        match (self.shared.disk(), number) {
            (Some(Disk { cold, .. }), Some(number)) => cold.node(number, id)?.ok_or_else(|| {
                Error::corrupt(
                    "index",
                    0,
                    format!("context {}: Merkle node {id:?} is missing", self.id),
                )
            }),
            _ => Err(Error::corrupt(
                "memory",
                0,
                format!("context {}: Merkle node {id:?} is missing", self.id),
            )),
        }
    }

    /// Hashes of complete nodes of the durable tree, in order.
    pub fn node_hashes(&self, ids: &[NodeId]) -> Result<Vec<Hash>> {
        ids.iter().map(|id| self.node_hash(*id)).collect()
    }

    /// The root of the durable tree at `size` (at most the current size).
    pub fn root_at(&self, size: TreeSize) -> Result<Hash> {
        let head = self.tree_head();
        if size == head.root.size {
            return Ok(head.root.hash);
        }
        if size > head.root.size {
            return Err(Error::OutOfRange(format!(
                "tree size {size} is beyond context {} (size {})",
                self.id, head.root.size
            )));
        }
        let ids: Vec<NodeId> = CompactTree::frontier_ids(size).collect();
        Ok(fold_range(&self.node_hashes(&ids)?))
    }

    /// What a checkpoint must write for this context, if anything.
    pub(crate) fn checkpoint_snapshot(&self) -> Option<ContextCheckpoint> {
        let st = self.lock();
        let number = st.number?;
        if st.recent.is_empty() && st.named {
            return None;
        }
        Some(ContextCheckpoint {
            number,
            id: self.id.clone(),
            named: st.named,
            head: *st.durable.sequencer(),
            recent: st.recent.clone(),
        })
    }

    /// The checkpoint holding everything up to `upto` is durable: forget it here.
    pub(crate) fn checkpointed(&self, upto: Seq) {
        let mut st = self.lock();
        if !st.named {
            st.named = true;
            self.shared.indexed(&self.id);
        }
        st.recent.trim(upto.0);
    }

    /// Applies an entry replayed from the log at open, unless the index already has it.
    pub(crate) fn replay(
        &self,
        entry: &Entry,
        append_id: Option<&AppendId>,
        position: Position,
    ) -> Result<()> {
        let mut st = self.lock();
        if entry.sequence() <= st.durable.latest() {
            return Ok(());
        }
        st.commit(&self.shared, entry, position, append_id)
    }
}

impl LogSink for Context {
    fn durable(&self, lsn: u64, position: Position) {
        self.durable_many(&[(lsn, position)]);
    }

    fn durable_many(&self, records: &[(u64, Position)]) {
        let mut completed = Vec::with_capacity(records.len());
        let mut published = Vec::with_capacity(records.len());
        {
            let mut st = self.lock();
            for &(lsn, position) in records {
                let Some(flight) = st.in_flight.pop_front() else {
                    tracing::error!(context = %self.id, lsn, "a durable record has no in-flight append");
                    return;
                };
                debug_assert_eq!(flight.lsn, lsn, "records complete in the order they were queued");
                if let Err(err) =
                    st.commit(&self.shared, &flight.entry, position, flight.append_id.as_ref())
                {
                    // Entries are stamped in order under this lock, so this is a bug, not bad
                    // input.
                    tracing::error!(context = %self.id, error = %err, "a durable entry does not follow its context");
                    completed.push((flight.entry, flight.done, Err(err)));
                    continue;
                }
                if let Some(id) = &flight.append_id {
                    st.in_flight_ids.remove(id);
                }
                if st.listener.is_some() {
                    published.push(Arc::clone(&flight.entry));
                }
                completed.push((flight.entry, flight.done, Ok(())));
            }
            // Under the lock, so the listener hears runs in sequence order.
            if let (Some(listener), false) = (&st.listener, published.is_empty()) {
                listener(&published);
            }
        }
        for (entry, done, outcome) in completed {
            for done in done {
                done(outcome.clone().map(|()| Arc::clone(&entry)));
            }
        }
    }

    fn failed(&self, error: &Error) {
        let flight = {
            let mut st = self.lock();
            let flight = st.in_flight.pop_front();
            if let Some(id) = flight.as_ref().and_then(|f| f.append_id.as_ref()) {
                st.in_flight_ids.remove(id);
            }
            flight
        };
        for done in flight.map(|f| f.done).unwrap_or_default() {
            done(Err(error.clone()));
        }
    }
}

fn decode_memory(st: &State, seq: Seq, position: Position) -> Result<Entry> {
    let corrupt = |reason: String| Error::corrupt("memory", u64::from(position.offset), reason);
    let bytes = st.arena.get(position).ok_or_else(|| corrupt(format!("entry {seq} is missing")))?;
    let fields = record::decode_fields(bytes, None).map_err(|e| corrupt(e.to_string()))?;
    let hash =
        st.recent.hash(seq).ok_or_else(|| corrupt(format!("hash of entry {seq} is missing")))?;
    if fields.parts.sequence != seq {
        return Err(corrupt(format!("expected entry {seq}, found {}", fields.parts.sequence)));
    }
    Ok(Entry::from_trusted_parts(fields.parts, hash))
}

/// Positions a read fetches from the checkpointed index at once.
const PAGE: u64 = 1024;

/// The sequences and positions a query wants among the checkpointed entries up to `top` (at
/// most the checkpoint's base), oldest first, fetched in runs so a huge context is never
/// listed whole.
fn plan_cold(
    cold: &Cold,
    number: u64,
    query: &ReadQuery,
    top: Seq,
) -> Result<Vec<(Seq, Position)>> {
    let mut out = Vec::new();
    let mut budget = Budget::new(query.bytes_max);
    if let Some(key) = &query.key {
        // Page through the key's sequences, so a filter matching millions of entries costs
        // what the response budget allows, not a list of all of them.
        let (mut after, mut left) = (query.after, query.limit);
        while left > 0 && budget.remaining() {
            let want = left.min(PAGE as usize);
            let seqs = cold.key_seqs(number, key, after, want)?;
            let fetched = seqs.len();
            let kept: Vec<Seq> = seqs.into_iter().filter(|s| *s <= top).collect();
            let past_top = kept.len() < fetched;
            let positions = cold.positions_of(number, &kept)?;
            for (seq, position) in kept.into_iter().zip(positions) {
                budget.take(position.len);
                after = seq;
                left -= 1;
                out.push((seq, position));
            }
            if fetched < want || past_top {
                break;
            }
        }
        return Ok(out);
    }
    let mut from = query.after.0 + 1;
    let to = top.0.min(query.after.0.saturating_add(query.limit as u64));
    while from <= to && budget.remaining() {
        let until = to.min(from + PAGE - 1);
        for (i, p) in cold.positions(number, from, until)?.into_iter().enumerate() {
            budget.take(p.len);
            out.push((Seq(from + i as u64), p));
        }
        from = until + 1;
    }
    Ok(out)
}

/// The newest `limit` entries a newest-first query wants among the checkpointed entries up to
/// `top` (the recent ones took the rest of its limit), newest first, fetched a page at a time
/// from the top down: the work is in proportion to what it returns.
fn plan_cold_newest(
    cold: &Cold,
    number: u64,
    query: &ReadQuery,
    top: Seq,
    limit: usize,
) -> Result<Vec<(Seq, Position)>> {
    let mut out = Vec::new();
    let mut budget = Budget::new(query.bytes_max);
    if let Some(key) = &query.key {
        let (mut below, mut left) = (top.0 + 1, limit);
        while left > 0 && budget.remaining() {
            let want = left.min(PAGE as usize);
            let seqs = cold.key_seqs_before(number, key, below, query.after, want)?;
            let positions = cold.positions_of(number, &seqs)?;
            let fetched = seqs.len();
            for (seq, position) in seqs.into_iter().zip(positions) {
                budget.take(position.len);
                below = seq.0;
                left -= 1;
                out.push((seq, position));
            }
            if fetched < want {
                break;
            }
        }
        return Ok(out);
    }
    let bottom = query.after.0 + 1;
    let mut to = top.0;
    let mut left = limit as u64;
    while to >= bottom && left > 0 && budget.remaining() {
        let from = bottom.max(to.saturating_sub(PAGE.min(left) - 1));
        let positions = cold.positions(number, from, to)?;
        for (i, p) in positions.into_iter().enumerate().rev() {
            budget.take(p.len);
            out.push((Seq(from + i as u64), p));
        }
        left -= to - from + 1;
        to = from - 1;
    }
    Ok(out)
}

/// The sequences a query wants among the recent (in memory) entries up to `top`, in the
/// query's order.
fn plan_recent(st: &State, query: &ReadQuery, top: Seq) -> Vec<Seq> {
    let first = Seq(query.after.0.max(st.recent.base));
    if top <= first {
        return Vec::new();
    }
    if let Some(key) = &query.key {
        let seqs = st.recent.key_seqs(key, first);
        let seqs = &seqs[..seqs.partition_point(|s| *s <= top)];
        if query.newest_first {
            seqs.iter().rev().copied().take(query.limit).collect()
        } else {
            seqs.iter().copied().take(query.limit).collect()
        }
    } else {
        let count = (top.0 - first.0).min(query.limit as u64);
        if query.newest_first {
            (top.0 - count + 1..=top.0).rev().map(Seq).collect()
        } else {
            (first.0 + 1..=first.0 + count).map(Seq).collect()
        }
    }
}

fn missing(context: &ContextId, seq: Seq) -> Error {
    Error::corrupt("index", 0, format!("context {context}: entry {seq} is missing from the index"))
}

/// A byte budget for reads.
struct Budget {
    left: usize,
}

impl Budget {
    fn new(bytes_max: usize) -> Self {
        Self { left: bytes_max }
    }

    /// Takes `len` bytes if they fit.
    fn take(&mut self, len: u32) -> bool {
        if let Some(left) = self.left.checked_sub(len as usize) {
            self.left = left;
            true
        } else {
            self.left = 0;
            false
        }
    }

    fn remaining(&self) -> bool {
        self.left > 0
    }
}
