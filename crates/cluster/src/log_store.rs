//! One shard's Raft log on disk: an append-only file of checksummed records, and the vote.
//!
//! ```text
//! raft/shard-N/log    records: u32 crc32c (of the rest) ‖ u32 length ‖ LogEntry (protobuf)
//! raft/shard-N/vote   u32 crc32c ‖ Vote (protobuf), replaced atomically (write, fsync, rename)
//! ```
//!
//! Appends are written at once (so readers see them) and made durable by the shard's sync
//! thread, which fsyncs once for everything written since its last fsync and only then tells
//! openraft the entries are flushed: a follower acknowledges, and a leader counts itself, only
//! for entries on disk. A vote is durable before `save_vote` returns.
//!
//! The log also publishes how far it is durable ([`Flushed`]). openraft applies a committed
//! entry as soon as it is in the log, flushed or not, so the state machine waits for this
//! before it saves an applied position: after a power cut the log must still reach as far as
//! the state machine says it applied.
//!
//! ```text
//! raft/shard-N/flushed  u32 crc32c ‖ u64 end: every record before byte `end` of the log was
//!                       fsynced (replaced atomically, at most once a second, after an fsync;
//!                       lowered before a truncation cuts below it)
//! ```
//!
//! Recovery reads the records in order, a bounded chunk at a time, and stops at the first
//! record that is torn or does not check. Before `flushed`'s mark that is damage, not a torn
//! write (those bytes were on disk once): the node refuses to start, naming the file and byte,
//! rather than vote or answer with a log that lost what it acknowledged to a leader. After the
//! mark it is cut as a torn tail: a write that never completed was never reported flushed, so
//! nothing it held was acknowledged. (Damage in the last second's writes cannot be told from a
//! torn write and is cut like one, logged.) The log is never purged (a ledger keeps
//! everything; a new member catches up by replaying it); truncation removes only entries Raft
//! has not committed.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use converge_proto::cluster as pb;
use converge_storage::vfs::{OpenMode, Vfs, VfsFile};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogId, LogState, RaftLogReader, StorageIOError, Vote};
use prost::Message as _;

use crate::types::{Entry, NodeId, StorageError, TypeConfig};
use crate::wire;

/// Bytes before a record's body: checksum and length.
const RECORD_HEADER_BYTES: usize = 8;
/// The largest record, written or read: an entry larger than this is refused before it is
/// written, and a length above it on recovery is damage. It holds a payload at its ceiling,
/// or a load at its ceiling ([`crate::limits::LOAD_BYTES_MAX_CEILING`]), with room for
/// the batch of appends around it.
pub const RECORD_BYTES_MAX: usize = 80 * 1024 * 1024;

/// One shard's Raft log. Cheap to clone; clones share the file.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    file: Arc<dyn VfsFile>,
    state: Mutex<State>,
    /// Flush requests for the sync thread.
    flushes: Mutex<mpsc::Sender<LogFlushed<TypeConfig>>>,
    /// How far the file is durable.
    flushed: watch::Sender<Flushed>,
    /// The durable mark of how far the file was fsynced (`flushed`), and when it was written.
    /// Taken before `state` by whoever takes both.
    mark: Mutex<Mark>,
}

/// What the `flushed` file says, and when this run last wrote it.
struct Mark {
    end: u64,
    written: std::time::Instant,
}

/// How often, at most, the `flushed` mark is rewritten (three small fsyncs each time): damage
/// in writes newer than this cannot be told from a torn write.
const MARK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// The file holding the mark.
const MARK_FILE: &str = "flushed";
/// How much of the log recovery reads at once.
const RECOVERY_CHUNK_BYTES: usize = 1 << 20;

/// How far a shard's Raft log is durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Every entry up to this index is on disk.
    pub upto: Option<u64>,
    /// A write or fsync failed: the log goes no further, and every later write fails too.
    pub failed: Option<String>,
}

struct State {
    /// Index of the first entry in the file (the log is never purged, so 0 or 1).
    first: u64,
    /// Where each entry's record starts, from `first` on.
    offsets: Vec<u64>,
    /// Where the next record goes.
    end: u64,
    last: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    /// Bumped by every truncation: a flush that began before one cannot say how far the
    /// rewritten log is durable.
    truncations: u64,
}

impl LogStore {
    /// Opens (or creates) the log of node `me` in `dir`, recovering it.
    ///
    /// A vote this node committed for itself (it led the shard) is read back uncommitted:
    /// openraft 0.9 would otherwise restore the node as leader of the same term without an
    /// election, and after a power cut that lost the tail of its own log it could then hand
    /// out log ids its followers already hold for other entries. Uncommitted, the node must
    /// win an election in a new term, which a log missing committed entries cannot.
    pub fn open(vfs: Arc<dyn Vfs>, dir: &Path, me: NodeId) -> io::Result<Self> {
        vfs.create_dir_all(dir)?;
        let path = dir.join("log");
        let created = !vfs.exists(&path)?;
        let file =
            vfs.open(&path, if created { OpenMode::CreateNew } else { OpenMode::Existing })?;
        if created {
            file.sync_all()?;
            vfs.sync_dir(dir)?;
        }
        let mark = read_mark(vfs.as_ref(), dir)?;
        let (first, offsets, end, last) = recover(file.as_ref(), &path, mark)?;
        // What the last run wrote may still be only in the page cache.
        file.sync_data()?;
        let vote = read_vote(vfs.as_ref(), dir)?.map(|vote| {
            if vote.committed && vote.leader_id.node_id == me {
                Vote::new(vote.leader_id.term, me)
            } else {
                vote
            }
        });
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            vfs,
            file,
            state: Mutex::new(State { first, offsets, end, last, vote, truncations: 0 }),
            flushes: Mutex::new(tx),
            flushed: watch::Sender::new(Flushed { upto: last.map(|l| l.index), failed: None }),
            mark: Mutex::new(Mark { end: mark.min(end), written: std::time::Instant::now() }),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || sync_loop(&weak, &rx))?;
        Ok(Self { inner })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last entry's index, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.state().last.map(|id| id.index)
    }

    /// The last entry's log id, if any (written, not necessarily durable yet: what this
    /// node's elections compare).
    pub fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.state().last
    }

    /// How far the log is durable, as it changes.
    pub fn flushed(&self) -> watch::Receiver<Flushed> {
        self.inner.flushed.subscribe()
    }

    /// After an fsync that covered every byte before `end`: rewrites the mark if it is due
    /// and no truncation came between (it could have cut below `end`).
    fn advance_mark(&self, end: u64, truncations: u64) {
        let mut mark = self.inner.mark.lock().unwrap_or_else(PoisonError::into_inner);
        if end <= mark.end || mark.written.elapsed() < MARK_INTERVAL {
            return;
        }
        if self.state().truncations != truncations {
            return;
        }
        match write_mark(self.inner.vfs.as_ref(), &self.inner.dir, end) {
            Ok(()) => *mark = Mark { end, written: std::time::Instant::now() },
            // Not fatal: the mark only lags, so less damage can be told from a torn tail.
            Err(e) => tracing::warn!(error = %e, "could not update the Raft log's fsync mark"),
        }
    }

    /// Records that the log stops at a failure: nothing is flushed or written beyond it.
    fn fail(&self, failed: String) {
        self.inner.flushed.send_modify(|f| f.failed = Some(failed));
    }

    fn read_range(&self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let (offsets, file_end) = {
            let st = self.state();
            let start = start.max(st.first);
            let end = end.min(st.first + st.offsets.len() as u64);
            if start >= end {
                return Ok(Vec::new());
            }
            let at = |i: u64| usize::try_from(i - st.first).expect("an index in memory fits usize");
            (
                st.offsets[at(start)..at(end)].to_vec(),
                st.offsets.get(at(end)).copied().unwrap_or(st.end),
            )
        };
        let from = offsets[0];
        let len = usize::try_from(file_end - from).map_err(|e| read_error(&e))?;
        let mut buf = vec![0; len];
        self.inner.file.read_exact_at(&mut buf, from).map_err(|e| read_error(&e))?;
        let mut entries = Vec::with_capacity(offsets.len());
        for offset in offsets {
            let at = usize::try_from(offset - from).map_err(|e| read_error(&e))?;
            let (body, _) = decode_record(&buf[at..])
                .ok_or_else(|| read_error(&Damaged(format!("record at offset {offset}"))))?;
            let entry = pb::LogEntry::decode(body).map_err(|e| read_error(&e))?;
            entries.push(wire::entry_from(entry).map_err(|e| read_error(&e))?);
        }
        Ok(entries)
    }
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

/// The body of the record at the start of `bytes` and the record's length, if it is whole and
/// checks.
fn decode_record(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let header = bytes.get(..RECORD_HEADER_BYTES)?;
    let crc = u32::from_be_bytes(header[..4].try_into().ok()?);
    let len = usize::try_from(u32::from_be_bytes(header[4..8].try_into().ok()?)).ok()?;
    if len > RECORD_BYTES_MAX {
        return None;
    }
    let body = bytes.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len)?;
    (crc32c::crc32c_append(crc32c::crc32c(&header[4..8]), body) == crc)
        .then_some((body, RECORD_HEADER_BYTES + len))
}

/// Appends `entry`'s record to `out`, unless it is longer than recovery would accept.
fn encode_record(out: &mut Vec<u8>, entry: &Entry) -> Result<(), Damaged> {
    let body = wire::entry_to(entry).encode_to_vec();
    if body.len() > RECORD_BYTES_MAX {
        return Err(Damaged(format!(
            "entry {} is {} bytes, over the largest record ({RECORD_BYTES_MAX})",
            entry.log_id.index,
            body.len()
        )));
    }
    let len = u32::try_from(body.len()).expect("RECORD_BYTES_MAX is below 4 GiB").to_be_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &body);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&len);
    out.extend_from_slice(&body);
    Ok(())
}

type Recovered = (u64, Vec<u64>, u64, Option<LogId<NodeId>>);

/// Reads every record, a chunk at a time; cuts a torn tail after the last one that checks,
/// and refuses damage before `mark` (the byte up to which the log was once fsynced).
fn recover(file: &dyn VfsFile, path: &Path, mark: u64) -> io::Result<Recovered> {
    let len = file.len()?;
    let mut chunk = Chunk::default();
    let (mut at, mut offsets, mut first, mut last) = (0u64, Vec::new(), 0, None);
    while at < len {
        let Some((entry, record_len)) = chunk.record(file, at, len)? else { break };
        let index = entry.log_id.index;
        let expected = last.map_or(index, |l: LogId<NodeId>| l.index + 1);
        if index != expected {
            return Err(io::Error::other(format!(
                "{}: entry {index} follows entry {} at byte {at} (the Raft log must be gap-free)",
                path.display(),
                expected.wrapping_sub(1)
            )));
        }
        if last.is_none() {
            first = index;
        }
        offsets.push(at);
        last = Some(entry.log_id);
        at += record_len as u64;
    }
    if len < mark {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the Raft log {} is {len} bytes, shorter than the {mark} bytes it was once fsynced to (its `{MARK_FILE}` file): records it acknowledged are gone. This node refuses to start; restore the disk, or wipe the whole data directory and join as a new node",
                path.display()
            ),
        ));
    }
    if at < len {
        if at < mark {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the Raft log {} is damaged at byte {at}: the record there is torn or fails its checksum, but the log was fsynced up to byte {mark} (its `{MARK_FILE}` file), so the record was once whole. This node refuses to start rather than vote or answer with a log that lost what it acknowledged. Restore the disk, or wipe the whole data directory and join as a new node",
                    path.display()
                ),
            ));
        }
        tracing::warn!(
            path = %path.display(),
            kept = at,
            cut = len - at,
            "the Raft log ends in a torn or damaged record written after its last fsync mark; cutting it (it was never reported flushed)"
        );
        file.set_len(at)?;
        file.sync_all()?;
    }
    Ok((first, offsets, at, last))
}

/// A window of the log file read at once, so recovery reads it in bounded chunks.
#[derive(Default)]
struct Chunk {
    start: u64,
    bytes: Vec<u8>,
}

impl Chunk {
    /// The entry whose record starts at `at` and the record's length, if it is whole, checks
    /// and decodes.
    fn record(
        &mut self,
        file: &dyn VfsFile,
        at: u64,
        len: u64,
    ) -> io::Result<Option<(Entry, usize)>> {
        let Some(header) = self.bytes_at(file, at, RECORD_HEADER_BYTES, len)? else {
            return Ok(None);
        };
        let body_len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if body_len > RECORD_BYTES_MAX {
            return Ok(None);
        }
        let Some(bytes) = self.bytes_at(file, at, RECORD_HEADER_BYTES + body_len, len)? else {
            return Ok(None);
        };
        let Some((body, record_len)) = decode_record(bytes) else { return Ok(None) };
        let entry = pb::LogEntry::decode(body)
            .map_err(io::Error::other)
            .and_then(|e| wire::entry_from(e).map_err(io::Error::other));
        Ok(entry.ok().map(|entry| (entry, record_len)))
    }

    /// The `n` bytes at `at`, reading the file from `at` on if the window does not hold them;
    /// `None` if the file (`len` bytes) ends first.
    fn bytes_at(
        &mut self,
        file: &dyn VfsFile,
        at: u64,
        n: usize,
        len: u64,
    ) -> io::Result<Option<&[u8]>> {
        if at + n as u64 > len {
            return Ok(None);
        }
        let held = at >= self.start && at + n as u64 <= self.start + self.bytes.len() as u64;
        if !held {
            let want = n.max(RECOVERY_CHUNK_BYTES).min(usize::try_from(len - at).unwrap_or(n));
            self.bytes.resize(want, 0);
            file.read_exact_at(&mut self.bytes, at)?;
            self.start = at;
        }
        let from = usize::try_from(at - self.start).map_err(io::Error::other)?;
        Ok(self.bytes.get(from..from + n))
    }
}

/// The byte up to which the log was once fsynced, as its mark file says (0 if there is none).
fn read_mark(vfs: &dyn Vfs, dir: &Path) -> io::Result<u64> {
    let path = dir.join(MARK_FILE);
    if !vfs.exists(&path)? {
        return Ok(0);
    }
    let file = vfs.open(&path, OpenMode::Existing)?;
    let mut buf = [0u8; 12];
    if file.len()? != 12 {
        return Err(bad_mark(&path));
    }
    file.read_exact_at(&mut buf, 0)?;
    let crc = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if crc32c::crc32c(&buf[4..]) != crc {
        return Err(bad_mark(&path));
    }
    let mut end = [0u8; 8];
    end.copy_from_slice(&buf[4..]);
    Ok(u64::from_be_bytes(end))
}

fn bad_mark(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{}: the Raft log's fsync mark does not check (it is replaced atomically, so this is damage); restore the disk, or wipe the whole data directory and join as a new node",
            path.display()
        ),
    )
}

/// Replaces the mark: every record before byte `end` is on disk.
fn write_mark(vfs: &dyn Vfs, dir: &Path, end: u64) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(12);
    bytes.extend_from_slice(&crc32c::crc32c(&end.to_be_bytes()).to_be_bytes());
    bytes.extend_from_slice(&end.to_be_bytes());
    converge_storage::node::write_atomically(vfs, dir, MARK_FILE, &bytes).map_err(io::Error::other)
}

fn read_vote(vfs: &dyn Vfs, dir: &Path) -> io::Result<Option<Vote<NodeId>>> {
    let path = dir.join("vote");
    if !vfs.exists(&path)? {
        return Ok(None);
    }
    let file = vfs.open(&path, OpenMode::Existing)?;
    let mut buf = vec![0; usize::try_from(file.len()?).map_err(io::Error::other)?];
    file.read_exact_at(&mut buf, 0)?;
    let bad = || io::Error::other(format!("{}: the vote file does not check", path.display()));
    if buf.len() < 4 {
        return Err(bad());
    }
    let crc = u32::from_be_bytes(buf[..4].try_into().map_err(|_| bad())?);
    if crc32c::crc32c(&buf[4..]) != crc {
        return Err(bad());
    }
    let vote = pb::Vote::decode(&buf[4..]).map_err(|_| bad())?;
    wire::vote_from(Some(&vote)).map(Some).map_err(|_| bad())
}

/// Writes the vote to a new file, fsyncs it, renames it over the old one, fsyncs the
/// directory: afterwards the vote survives a power cut, and a cut before leaves the old one.
fn write_vote(vfs: &dyn Vfs, dir: &Path, vote: &Vote<NodeId>) -> io::Result<()> {
    let body = wire::vote_to(vote).encode_to_vec();
    let mut bytes = crc32c::crc32c(&body).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let tmp = dir.join("vote.tmp");
    let file = vfs.open(&tmp, OpenMode::CreateTruncate)?;
    file.write_all_at(&bytes, 0)?;
    file.sync_all()?;
    vfs.rename(&tmp, &dir.join("vote"))?;
    vfs.sync_dir(dir)
}

/// The sync thread: waits for flush requests, fsyncs once for all of them, reports.
fn sync_loop(inner: &std::sync::Weak<Inner>, rx: &mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let Some(inner) = inner.upgrade() else { return };
        let store = LogStore { inner };
        // Everything written up to `last` (and byte `end`) is in the file before this fsync
        // starts.
        let (last, end, truncations) = {
            let st = store.state();
            (st.last.map(|l| l.index), st.end, st.truncations)
        };
        let result = store.inner.file.sync_data();
        if result.is_ok() {
            store.advance_mark(end, truncations);
        }
        let st = store.state();
        match &result {
            Ok(()) if st.truncations == truncations => {
                store.inner.flushed.send_if_modified(|f| {
                    let further = f.upto < last;
                    f.upto = f.upto.max(last);
                    further
                });
            }
            Ok(()) => {}
            Err(e) => store.fail(format!("fsync of the Raft log failed: {e}")),
        }
        drop(st);
        for flushed in waiting {
            flushed.log_io_completed(
                result.as_ref().copied().map_err(|e| io::Error::new(e.kind(), e.to_string())),
            );
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i + 1,
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        self.read_range(start, end)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last = self.state().last;
        Ok(LogState { last_purged_log_id: None, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        write_vote(self.inner.vfs.as_ref(), &self.inner.dir, vote)
            .map_err(|e| StorageError::from(StorageIOError::write_vote(AnyError::new(&e))))?;
        self.state().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.state().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut st = self.state();
        if let Some(failed) = self.inner.flushed.borrow().failed.clone() {
            return Err(write_error(&Damaged(failed)));
        }
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        let mut last = st.last;
        for entry in entries {
            let expected = last.map_or(entry.log_id.index, |l| l.index + 1);
            if entry.log_id.index != expected {
                return Err(write_error(&Damaged(format!(
                    "entry {} appended after entry {}",
                    entry.log_id.index,
                    expected.wrapping_sub(1)
                ))));
            }
            offsets.push(st.end + bytes.len() as u64);
            encode_record(&mut bytes, &entry).map_err(|e| write_error(&e))?;
            last = Some(entry.log_id);
        }
        if let Err(e) = self.inner.file.write_all_at(&bytes, st.end) {
            self.fail(format!("write to the Raft log failed: {e}"));
            return Err(write_error(&e));
        }
        if st.last.is_none() {
            st.first = last.map_or(0, |l| l.index + 1 - offsets.len() as u64);
        }
        st.end += bytes.len() as u64;
        st.offsets.extend(offsets);
        st.last = last;
        drop(st);
        let tx = self.inner.flushes.lock().unwrap_or_else(PoisonError::into_inner).clone();
        tx.send(callback).map_err(|_| write_error(&Damaged("the sync thread is gone".into())))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        // The mark is lowered first, durably: the bytes cut will be written again, unsynced,
        // and must not be taken for damage after a power cut.
        let mut mark = self.inner.mark.lock().unwrap_or_else(PoisonError::into_inner);
        let cut_at = {
            let st = self.state();
            let keep = log_id.index.saturating_sub(st.first);
            usize::try_from(keep).ok().and_then(|k| st.offsets.get(k).copied())
        };
        if let Some(cut_at) = cut_at
            && mark.end > cut_at
        {
            if let Err(e) = write_mark(self.inner.vfs.as_ref(), &self.inner.dir, cut_at) {
                self.fail(format!("lowering the Raft log's fsync mark failed: {e}"));
                return Err(write_error(&e));
            }
            mark.end = cut_at;
        }
        let mut st = self.state();
        if log_id.index < st.first {
            return Err(write_error(&Damaged(format!(
                "truncating at {} before the first entry {}",
                log_id.index, st.first
            ))));
        }
        let keep = usize::try_from(log_id.index - st.first).map_err(|e| write_error(&e))?;
        if keep >= st.offsets.len() {
            return Ok(());
        }
        let end = st.offsets[keep];
        // Durable before it returns: a truncated entry must not come back after a crash and
        // join entries appended after it.
        let cut = self.inner.file.set_len(end).and_then(|()| self.inner.file.sync_all());
        if let Err(e) = cut {
            self.fail(format!("truncating the Raft log failed: {e}"));
            return Err(write_error(&e));
        }
        st.offsets.truncate(keep);
        st.end = end;
        st.truncations += 1;
        // The fsync above made every entry kept durable, and no more are left.
        let kept = if keep > 0 { log_id.index.checked_sub(1) } else { None };
        self.inner.flushed.send_modify(|f| f.upto = kept);
        drop(st);
        // The last kept entry's id is read back rather than kept for every entry in memory.
        let last = match log_id.index.checked_sub(1) {
            Some(previous) if keep > 0 => {
                self.read_range(previous, log_id.index)?.pop().map(|e| e.log_id)
            }
            _ => None,
        };
        self.state().last = last;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        // Never purged: the snapshot policy is `Never`, so openraft does not ask. If it did,
        // keeping the entries is always safe.
        tracing::warn!(upto = %log_id, "ignoring a request to purge the Raft log (a ledger keeps everything)");
        Ok(())
    }
}
