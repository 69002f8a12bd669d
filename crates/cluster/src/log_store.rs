//! One shard's Raft log and vote: its part of the node's log ([`NodeLog`]), as openraft's
//! log storage.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use converge_storage::vfs::Vfs;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogId, LogState, RaftLogReader, Vote};
use tokio::sync::watch;

pub use crate::node_log::{NodeLog, RECORD_BYTES_MAX};
use crate::types::{Entry, NodeId, StorageError, TypeConfig};

/// One shard's Raft log. Cheap to clone; clones share the node's log.
#[derive(Clone)]
pub struct LogStore {
    log: NodeLog,
    shard: u32,
}

/// How far a shard's Raft log is durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Every entry up to this index is on disk.
    pub upto: Option<u64>,
    /// A write or fsync failed: the log goes no further, and every later write fails too.
    pub failed: Option<String>,
}

impl LogStore {
    pub(crate) fn new(log: NodeLog, shard: u32) -> Self {
        Self { log, shard }
    }

    /// A node log of a single shard under `raft_dir`, and that shard's log (for tests, and a
    /// cluster of one shard).
    pub fn open(vfs: Arc<dyn Vfs>, raft_dir: &Path, me: NodeId) -> io::Result<Self> {
        Ok(NodeLog::open(vfs, raft_dir, me, 1)?.shard(0))
    }

    /// The last entry's index, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.last_log_id().map(|id| id.index)
    }

    /// The last entry's log id, if any (written, not necessarily durable yet: what this
    /// node's elections compare).
    pub fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.log.last_log_id(self.shard)
    }

    /// How far the log is durable, as it changes.
    pub fn flushed(&self) -> watch::Receiver<Flushed> {
        self.log.flushed(self.shard)
    }

    pub(crate) fn read_range(&self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        self.log.read_range(self.shard, start, end)
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
        Ok(LogState { last_purged_log_id: None, last_log_id: self.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.log.save_vote(self.shard, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.log.vote(self.shard))
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
        self.log.append(self.shard, entries, Some(callback))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.log.truncate(self.shard, log_id)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        // Never purged: the snapshot policy is `Never`, so openraft does not ask. If it did,
        // keeping the entries is always safe.
        tracing::warn!(upto = %log_id, "ignoring a request to purge the Raft log (a ledger keeps everything)");
        Ok(())
    }
}
