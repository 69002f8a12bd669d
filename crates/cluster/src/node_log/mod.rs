//! One Raft log per node: every shard's entries, votes and truncations in one segmented,
//! append-only log, made durable by one sync thread, one fsync per round for all shards.
//!
//! ```text
//! raft/log/segment-NNNNNNNNNN  records (`record.rs`), appended; a new segment is begun when
//!                              the next write would take this one past its size (256 MiB)
//! raft/log/flushed             u32 crc32c ‖ u64 position: every record before it was fsynced
//!                              (replaced atomically, at most once a second, after an fsync)
//! ```
//!
//! A position is a segment number in the high bits and a byte offset in the low 40. Records
//! never span segments, and a segment is fsynced before the next is begun, so every segment
//! but the last is whole.
//!
//! Appends are written at once (so readers see them) and made durable by the sync thread,
//! which fsyncs the last segment once for everything written before it looked, and only then
//! tells openraft the entries are flushed: a follower acknowledges, and a leader counts
//! itself, only for entries on disk. A vote is durable before `save_vote` returns. A
//! truncation is a record, not a cut: nothing written is ever rewritten, so the `flushed`
//! position only rises. (A truncation lost in a power cut takes every later record with it,
//! since it is written before them; the log is then as it was before, and nothing written
//! after it had been reported flushed.)
//!
//! Each shard's log publishes how far it is durable ([`Flushed`]). openraft applies a
//! committed entry as soon as it is in the log, flushed or not, so the state machine waits for
//! this before it applies and before it saves an applied position.
//!
//! Recovery (`recover.rs`) reads every segment in order and stops at the first record that is
//! torn or does not check. In a segment before the last, or before the `flushed` position,
//! that is damage, not a torn write (those bytes were on disk once): the node refuses to start,
//! naming the file and byte, rather than vote or answer with a log that lost what it
//! acknowledged to a leader. After the position it is cut as a torn tail: a write that never
//! completed was never reported flushed. (Damage in the last second's writes cannot be told
//! from a torn write and is cut like one, logged.) The log is never purged (a ledger keeps
//! everything; a new member catches up by replaying it).
//!
//! A data directory from before this log (one log per shard, `raft/shard-N/log`) is copied
//! into it on open (`legacy.rs`).

mod legacy;
mod record;
mod recover;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use converge_storage::vfs::{OpenMode, Vfs, VfsFile};
use openraft::storage::LogFlushed;
use openraft::{AnyError, LogId, StorageIOError, Vote};
use tokio::sync::{oneshot, watch};

pub use record::RECORD_BYTES_MAX;

use crate::log_store::{Flushed, LogStore};
use crate::types::{Entry, NodeId, StorageError, TypeConfig};

/// How large a segment grows before the next write begins another.
const SEGMENT_BYTES: u64 = 256 << 20;
/// How often, at most, the `flushed` position is rewritten (three small fsyncs each time):
/// damage in writes newer than this cannot be told from a torn write.
const MARK_INTERVAL: Duration = Duration::from_secs(1);
/// The file holding the `flushed` position.
const MARK_FILE: &str = "flushed";
/// Bits of a position that hold the offset within its segment.
const OFFSET_BITS: u32 = 40;

/// A segment number and an offset in it, as one ordered number.
type Pos = u64;

fn pos(segment: u32, offset: u64) -> Pos {
    (u64::from(segment) << OFFSET_BITS) | offset
}

fn split(pos: Pos) -> (u32, u64) {
    (
        u32::try_from(pos >> OFFSET_BITS).expect("a segment number fits u32"),
        pos & ((1 << OFFSET_BITS) - 1),
    )
}

fn segment_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("segment-{number:010}"))
}

/// Where a record lies, and its length.
#[derive(Debug, Clone, Copy)]
struct Slot {
    pos: Pos,
    len: u32,
}

/// The node's Raft log. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct NodeLog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Requests for the sync thread.
    requests: Mutex<mpsc::Sender<Request>>,
    /// How far each shard's log is durable.
    flushed: Vec<watch::Sender<Flushed>>,
    /// The durable `flushed` position, and when it was written.
    mark: Mutex<Mark>,
}

struct State {
    /// The segments, in order: number `n` is `segments[n - 1]`, the last one is written to.
    segments: Vec<Arc<dyn VfsFile>>,
    /// Where the next record goes in the last segment.
    end: u64,
    shards: Vec<ShardLog>,
    /// A write or fsync failed: nothing more is written.
    failed: Option<String>,
}

/// One shard's part of the log.
#[derive(Debug, Default)]
struct ShardLog {
    /// Index of its first entry (the log is never purged, so 0 or 1).
    first: u64,
    /// Where each entry's record lies, from `first` on.
    slots: Vec<Slot>,
    last: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    /// Bumped by every truncation: a flush that began before one cannot say how far the
    /// shortened log is durable.
    truncations: u64,
}

struct Mark {
    pos: Pos,
    written: Instant,
}

enum Request {
    /// Entries were written: report them flushed after the next fsync.
    Appended(LogFlushed<TypeConfig>),
    /// Answer after the next fsync.
    Sync(oneshot::Sender<io::Result<()>>),
}

#[derive(Debug, thiserror::Error)]
#[error("the Raft log is damaged: {0}")]
struct Damaged(String);

fn read_error<E: std::error::Error + 'static>(e: &E) -> StorageError {
    StorageIOError::read_logs(AnyError::new(e)).into()
}

fn write_error<E: std::error::Error + 'static>(e: &E) -> StorageError {
    StorageIOError::write_logs(AnyError::new(e)).into()
}

impl NodeLog {
    /// Opens (or creates) the Raft log of node `me` under `raft_dir` (in `raft_dir/log`), for
    /// `shards` shards, recovering it, and copying in the per-shard logs of an older data
    /// directory first.
    ///
    /// A vote this node committed for itself (it led a shard) is read back uncommitted:
    /// openraft 0.9 would otherwise restore the node as leader of the same term without an
    /// election, and after a power cut that lost the tail of its own log it could then hand
    /// out log ids its followers already hold for other entries. Uncommitted, the node must
    /// win an election in a new term, which a log missing committed entries cannot.
    pub fn open(vfs: Arc<dyn Vfs>, raft_dir: &Path, me: NodeId, shards: u32) -> io::Result<Self> {
        Self::open_with(vfs, raft_dir, me, shards, SEGMENT_BYTES)
    }

    /// [`Self::open`] with segments of `segment_bytes` (tests use small ones).
    #[doc(hidden)]
    pub fn open_with(
        vfs: Arc<dyn Vfs>,
        raft_dir: &Path,
        me: NodeId,
        shards: u32,
        segment_bytes: u64,
    ) -> io::Result<Self> {
        let dir = raft_dir.join("log");
        let old = legacy::Legacy::find(Arc::clone(&vfs), raft_dir, &dir, shards)?;
        let log = Self::recover(Arc::clone(&vfs), &dir, me, shards, segment_bytes)?;
        let Some(old) = old else { return Ok(log) };
        old.copy_into(&log)?;
        drop(log);
        old.remove()?;
        Self::recover(vfs, &dir, me, shards, segment_bytes)
    }

    fn recover(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        me: NodeId,
        shards: u32,
        segment_bytes: u64,
    ) -> io::Result<Self> {
        let recovered = recover::recover(vfs.as_ref(), dir, me, shards)?;
        let flushed = recovered
            .shards
            .iter()
            .map(|s| watch::Sender::new(Flushed { upto: s.last.map(|l| l.index), failed: None }))
            .collect();
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            vfs,
            segment_bytes,
            state: Mutex::new(State {
                segments: recovered.segments,
                end: recovered.end,
                shards: recovered.shards,
                failed: None,
            }),
            requests: Mutex::new(tx),
            flushed,
            mark: Mutex::new(Mark { pos: recovered.mark, written: Instant::now() }),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || sync_loop(&weak, &rx))?;
        Ok(Self { inner })
    }

    /// Whether `raft_dir` holds a node log (its first segment: none is ever removed).
    pub fn exists(vfs: &dyn Vfs, raft_dir: &Path) -> io::Result<bool> {
        vfs.exists(&segment_path(&raft_dir.join("log"), 1))
    }

    /// Shard `shard`'s log, for its Raft group.
    ///
    /// # Panics
    /// If the log was opened for fewer shards.
    pub fn shard(&self, shard: u32) -> LogStore {
        assert!((shard as usize) < self.inner.flushed.len(), "shard {shard} is not in this log");
        LogStore::new(self.clone(), shard)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn last_log_id(&self, shard: u32) -> Option<LogId<NodeId>> {
        self.state().shards[shard as usize].last
    }

    pub(crate) fn flushed(&self, shard: u32) -> watch::Receiver<Flushed> {
        self.inner.flushed[shard as usize].subscribe()
    }

    pub(crate) fn vote(&self, shard: u32) -> Option<Vote<NodeId>> {
        self.state().shards[shard as usize].vote
    }

    /// Writes `bytes` (whole records) at the end of the log, beginning a new segment first if
    /// they would take the last one past its size; returns where they begin.
    fn write(&self, st: &mut State, bytes: &[u8]) -> Result<Pos, StorageError> {
        if let Some(failed) = &st.failed {
            return Err(write_error(&Damaged(failed.clone())));
        }
        if st.end > 0
            && st.end + bytes.len() as u64 > self.inner.segment_bytes
            && let Err(e) = self.begin_segment(st)
        {
            self.fail(st, &format!("beginning a Raft log segment failed: {e}"));
            return Err(write_error(&e));
        }
        let file = st.segments.last().expect("the log has a segment");
        if let Err(e) = file.write_all_at(bytes, st.end) {
            self.fail(st, &format!("write to the Raft log failed: {e}"));
            return Err(write_error(&e));
        }
        let at = pos(segment_number(st), st.end);
        st.end += bytes.len() as u64;
        Ok(at)
    }

    /// Seals the last segment (fsynced, so every segment but the last is whole) and begins
    /// the next, durably named.
    fn begin_segment(&self, st: &mut State) -> io::Result<()> {
        st.segments.last().expect("the log has a segment").sync_data()?;
        let number = segment_number(st) + 1;
        let file = create_segment(self.inner.vfs.as_ref(), &self.inner.dir, number)?;
        st.segments.push(file);
        st.end = 0;
        Ok(())
    }

    /// Records that the log stops at a failure: nothing is flushed or written beyond it.
    fn fail(&self, st: &mut State, failed: &str) {
        st.failed = Some(failed.to_string());
        for flushed in &self.inner.flushed {
            flushed.send_modify(|f| f.failed = Some(failed.to_string()));
        }
    }

    fn request(&self, request: Request) -> Result<(), StorageError> {
        let tx = self.inner.requests.lock().unwrap_or_else(PoisonError::into_inner).clone();
        tx.send(request).map_err(|_| write_error(&Damaged("the sync thread is gone".into())))
    }

    /// Writes `entries` to `shard`'s log; `callback` hears once they are durable.
    pub(crate) fn append(
        &self,
        shard: u32,
        entries: impl IntoIterator<Item = Entry>,
        callback: Option<LogFlushed<TypeConfig>>,
    ) -> Result<(), StorageError> {
        let mut bytes = Vec::new();
        let mut records = Vec::new();
        let mut ids = Vec::new();
        for entry in entries {
            let len = record::encode_entry(&mut bytes, shard, &entry)
                .map_err(|e| write_error(&Damaged(format!("entry {}: {e}", entry.log_id.index))))?;
            records.push(u32::try_from(len).expect("a record is under 4 GiB"));
            ids.push(entry.log_id);
        }
        let mut st = self.state();
        let log = &st.shards[shard as usize];
        let mut expected = log.last.map(|l| l.index + 1);
        for id in &ids {
            if expected.is_some_and(|e| e != id.index) {
                return Err(write_error(&Damaged(format!(
                    "shard {shard}: entry {} appended after entry {}",
                    id.index,
                    expected.unwrap_or(0).wrapping_sub(1)
                ))));
            }
            expected = Some(id.index + 1);
        }
        if !ids.is_empty() {
            let mut at = self.write(&mut st, &bytes)?;
            let log = &mut st.shards[shard as usize];
            if log.last.is_none() {
                log.first = ids[0].index;
            }
            for len in records {
                log.slots.push(Slot { pos: at, len });
                at += u64::from(len);
            }
            log.last = ids.last().copied();
        }
        drop(st);
        match callback {
            Some(callback) => self.request(Request::Appended(callback)),
            None => Ok(()),
        }
    }

    /// Removes `shard`'s entries from `log_id` on (uncommitted ones: a new leader's differ).
    pub(crate) fn truncate(&self, shard: u32, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let mut st = self.state();
        let log = &st.shards[shard as usize];
        if log_id.index < log.first {
            return Err(write_error(&Damaged(format!(
                "shard {shard}: truncating at {} before the first entry {}",
                log_id.index, log.first
            ))));
        }
        let keep = usize::try_from(log_id.index - log.first).map_err(|e| write_error(&e))?;
        if keep >= log.slots.len() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        record::encode_truncate(&mut bytes, shard, log_id.index);
        self.write(&mut st, &bytes)?;
        let log = &mut st.shards[shard as usize];
        log.slots.truncate(keep);
        log.truncations += 1;
        let kept = if keep > 0 { log_id.index.checked_sub(1) } else { None };
        self.inner.flushed[shard as usize].send_modify(|f| f.upto = f.upto.min(kept));
        drop(st);
        // The last kept entry's id is read back rather than kept for every entry in memory.
        let last = match kept {
            Some(previous) => {
                self.read_range(shard, previous, log_id.index)?.pop().map(|e| e.log_id)
            }
            None => None,
        };
        self.state().shards[shard as usize].last = last;
        Ok(())
    }

    /// Writes a record making `vote` `shard`'s vote (durable at the next fsync).
    pub(crate) fn write_vote(&self, shard: u32, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let mut bytes = Vec::new();
        record::encode_vote(&mut bytes, shard, vote);
        let mut st = self.state();
        self.write(&mut st, &bytes).map(drop)
    }

    /// Makes `vote` `shard`'s vote, durably before it returns.
    pub(crate) async fn save_vote(
        &self,
        shard: u32,
        vote: &Vote<NodeId>,
    ) -> Result<(), StorageError> {
        self.write_vote(shard, vote)?;
        let (tx, rx) = oneshot::channel();
        self.request(Request::Sync(tx))?;
        let synced = rx.await.unwrap_or_else(|_| Err(io::Error::other("the sync thread is gone")));
        if let Err(e) = synced {
            return Err(StorageIOError::write_vote(AnyError::new(&e)).into());
        }
        self.state().shards[shard as usize].vote = Some(*vote);
        Ok(())
    }

    /// Fsyncs what was written so far, here and now (the copy of an old data directory).
    fn sync_now(&self) -> io::Result<()> {
        let file = Arc::clone(self.state().segments.last().expect("a segment"));
        file.sync_data()
    }

    /// `shard`'s entries with indexes in `start..end`.
    pub(crate) fn read_range(
        &self,
        shard: u32,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let (slots, first_segment, segments) = {
            let st = self.state();
            let log = &st.shards[shard as usize];
            let start = start.max(log.first);
            let end = end.min(log.first + log.slots.len() as u64);
            if start >= end {
                return Ok(Vec::new());
            }
            let at =
                |i: u64| usize::try_from(i - log.first).expect("an index in memory fits usize");
            let slots = log.slots[at(start)..at(end)].to_vec();
            // Only the segments these records lie in (a long log has many).
            let first = split(slots[0].pos).0;
            let last = split(slots[slots.len() - 1].pos).0;
            let files = st.segments[first as usize - 1..last as usize].to_vec();
            (slots, first, files)
        };
        let mut entries = Vec::with_capacity(slots.len());
        let mut buf = Vec::new();
        // Records that lie next to each other are read at once.
        for run in slots.chunk_by(|a, b| a.pos + u64::from(a.len) == b.pos) {
            let (segment, offset) = split(run[0].pos);
            let bytes: u64 = run.iter().map(|s| u64::from(s.len)).sum();
            buf.resize(usize::try_from(bytes).map_err(|e| read_error(&e))?, 0);
            let file = segments
                .get((segment - first_segment) as usize)
                .ok_or_else(|| read_error(&Damaged(format!("segment {segment} is not open"))))?;
            file.read_exact_at(&mut buf, offset).map_err(|e| read_error(&e))?;
            let mut at = 0;
            for slot in run {
                let damaged = || {
                    read_error(&Damaged(format!(
                        "shard {shard}: the record at segment {segment}, byte {}",
                        offset + at as u64
                    )))
                };
                let (body, len) = record::check(&buf[at..]).ok_or_else(damaged)?;
                match record::decode(body) {
                    Some((s, record::Record::Entry(entry))) if s == shard => entries.push(entry),
                    _ => return Err(damaged()),
                }
                at += len;
                debug_assert_eq!(len, slot.len as usize);
            }
        }
        Ok(entries)
    }

    /// Rewrites the `flushed` position after an fsync that covered everything before `pos`,
    /// if it is due.
    fn advance_mark(&self, pos: Pos) {
        let mut mark = self.inner.mark.lock().unwrap_or_else(PoisonError::into_inner);
        if pos <= mark.pos || mark.written.elapsed() < MARK_INTERVAL {
            return;
        }
        match recover::write_mark(self.inner.vfs.as_ref(), &self.inner.dir, pos) {
            Ok(()) => *mark = Mark { pos, written: Instant::now() },
            // Not fatal: the mark only lags, so less damage can be told from a torn tail.
            Err(e) => tracing::warn!(error = %e, "could not update the Raft log's fsync mark"),
        }
    }
}

fn segment_number(st: &State) -> u32 {
    u32::try_from(st.segments.len()).expect("segment numbers fit u32")
}

/// Creates segment `number` in `dir`, empty and durably named.
fn create_segment(vfs: &dyn Vfs, dir: &Path, number: u32) -> io::Result<Arc<dyn VfsFile>> {
    let file = vfs.open(&segment_path(dir, number), OpenMode::CreateNew)?;
    file.sync_all()?;
    vfs.sync_dir(dir)?;
    Ok(file)
}

/// The sync thread: waits for requests, fsyncs once for all of them, reports.
fn sync_loop(inner: &std::sync::Weak<Inner>, rx: &mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let Some(inner) = inner.upgrade() else { return };
        let log = NodeLog { inner };
        // Everything written before this look is in the last segment, or in an earlier one,
        // fsynced when it was sealed.
        let (file, end, lasts) = {
            let st = log.state();
            let lasts: Vec<_> =
                st.shards.iter().map(|s| (s.last.map(|l| l.index), s.truncations)).collect();
            (
                Arc::clone(st.segments.last().expect("a segment")),
                pos(segment_number(&st), st.end),
                lasts,
            )
        };
        let result = file.sync_data();
        if result.is_ok() {
            log.advance_mark(end);
        }
        {
            let mut st = log.state();
            match &result {
                Ok(()) => {
                    for (shard, (last, truncations)) in lasts.into_iter().enumerate() {
                        if st.shards[shard].truncations == truncations {
                            log.inner.flushed[shard].send_if_modified(|f| {
                                let further = f.upto < last;
                                f.upto = f.upto.max(last);
                                further
                            });
                        }
                    }
                }
                Err(e) => log.fail(&mut st, &format!("fsync of the Raft log failed: {e}")),
            }
        }
        let copy = || result.as_ref().copied().map_err(|e| io::Error::new(e.kind(), e.to_string()));
        for request in waiting {
            match request {
                Request::Appended(flushed) => flushed.log_io_completed(copy()),
                Request::Sync(tx) => {
                    let _gone = tx.send(copy());
                }
            }
        }
    }
}
