//! The per-shard Raft logs of data directories written before the node log, copied into it.
//!
//! ```text
//! raft/shard-N/log      u32 crc32c ‖ u32 length ‖ LogEntry (protobuf), appended
//! raft/shard-N/vote     u32 crc32c ‖ Vote (protobuf)
//! raft/shard-N/flushed  u32 crc32c ‖ u64 byte: the log was once fsynced this far
//! ```
//!
//! The copy is all or nothing: the node log's `copied` file is written (durably, after an
//! fsync of the copy) before any old file is removed, and a copy found without it was cut
//! short and begins again from an empty node log.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use converge_proto::cluster as pb;
use converge_storage::vfs::{OpenMode, Vfs};
use prost::Message as _;

use super::NodeLog;
use super::record::Chunk;
use super::recover::read_mark;
use crate::types::Entry;
use crate::wire;

/// Written in the node log's directory once the old logs are copied into it.
const COPIED: &str = "copied";
/// Entries copied per write.
const BATCH: usize = 1024;

/// Old per-shard logs still on disk.
pub(super) struct Legacy {
    vfs: Arc<dyn Vfs>,
    raft_dir: PathBuf,
    log_dir: PathBuf,
    shards: Vec<u32>,
    copied: bool,
}

fn shard_dir(raft_dir: &Path, shard: u32) -> PathBuf {
    raft_dir.join(format!("shard-{shard}"))
}

fn damaged(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl Legacy {
    /// The old logs under `raft_dir`, if any are left. A copy cut short (no `copied` file) is
    /// undone: the node log's files are removed, so it starts again.
    pub(super) fn find(
        vfs: Arc<dyn Vfs>,
        raft_dir: &Path,
        log_dir: &Path,
        shards: u32,
    ) -> io::Result<Option<Self>> {
        let mut found = Vec::new();
        for shard in 0..shards {
            if vfs.exists(&shard_dir(raft_dir, shard).join("log"))? {
                found.push(shard);
            }
        }
        if found.is_empty() {
            return Ok(None);
        }
        let copied = vfs.exists(&log_dir.join(COPIED))?;
        if !copied && vfs.exists(log_dir)? {
            for name in vfs.list(log_dir)? {
                vfs.remove_file(&log_dir.join(name))?;
            }
            vfs.sync_dir(log_dir)?;
        }
        Ok(Some(Self {
            vfs,
            raft_dir: raft_dir.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            shards: found,
            copied,
        }))
    }

    /// Copies every old log and vote into `log` (empty unless the copy was done already), and
    /// makes the copy durable.
    pub(super) fn copy_into(&self, log: &NodeLog) -> io::Result<()> {
        if self.copied {
            return Ok(());
        }
        for &shard in &self.shards {
            self.copy_shard(log, shard)?;
        }
        log.sync_now()?;
        converge_storage::node::write_atomically(self.vfs.as_ref(), &self.log_dir, COPIED, b"")
            .map_err(io::Error::other)?;
        tracing::info!(
            shards = self.shards.len(),
            "copied the per-shard Raft logs into the node's log"
        );
        Ok(())
    }

    /// Reads one old log as its own recovery did: damage before its fsync mark is refused, a
    /// torn tail after it is left behind.
    fn copy_shard(&self, log: &NodeLog, shard: u32) -> io::Result<()> {
        let dir = shard_dir(&self.raft_dir, shard);
        let path = dir.join("log");
        let vfs = self.vfs.as_ref();
        let mark = read_mark(vfs, &dir)?;
        let file = vfs.open(&path, OpenMode::Existing)?;
        let len = file.len()?;
        if len < mark {
            return Err(damaged(format!(
                "the Raft log {} is {len} bytes, shorter than the {mark} bytes it was once fsynced to: records it acknowledged are gone",
                path.display()
            )));
        }
        let (mut chunk, mut at, mut batch) = (Chunk::default(), 0u64, Vec::<Entry>::new());
        let store = |batch: Vec<Entry>| log.append(shard, batch, None).map_err(io::Error::other);
        while at < len {
            let Some((body, record_len)) = chunk.record(file.as_ref(), at, len)? else { break };
            let Some(entry) =
                pb::LogEntry::decode(body).ok().and_then(|e| wire::entry_from(e).ok())
            else {
                break;
            };
            batch.push(entry);
            if batch.len() == BATCH {
                store(std::mem::take(&mut batch))?;
            }
            at += record_len as u64;
        }
        if at < mark {
            return Err(damaged(format!(
                "the Raft log {} is damaged at byte {at}, before the {mark} bytes it was once fsynced to. Restore the disk, or wipe the whole data directory and join as a new node",
                path.display()
            )));
        }
        store(batch)?;
        if let Some(vote) = read_vote(vfs, &dir)? {
            log.write_vote(shard, &vote).map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// Removes the old files, then the `copied` file.
    pub(super) fn remove(&self) -> io::Result<()> {
        let vfs = self.vfs.as_ref();
        for &shard in &self.shards {
            let dir = shard_dir(&self.raft_dir, shard);
            for name in ["log", "vote", "vote.tmp", "flushed", "flushed.tmp"] {
                if vfs.exists(&dir.join(name))? {
                    vfs.remove_file(&dir.join(name))?;
                }
            }
            vfs.sync_dir(&dir)?;
        }
        vfs.remove_file(&self.log_dir.join(COPIED))?;
        vfs.sync_dir(&self.log_dir)
    }
}

fn read_vote(vfs: &dyn Vfs, dir: &Path) -> io::Result<Option<openraft::Vote<crate::NodeId>>> {
    let path = dir.join("vote");
    if !vfs.exists(&path)? {
        return Ok(None);
    }
    let file = vfs.open(&path, OpenMode::Existing)?;
    let mut buf = vec![0; usize::try_from(file.len()?).map_err(io::Error::other)?];
    file.read_exact_at(&mut buf, 0)?;
    let bad = || damaged(format!("{}: the vote file does not check", path.display()));
    let (crc, body) = buf.split_at_checked(4).ok_or_else(bad)?;
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return Err(bad());
    }
    let vote = pb::Vote::decode(body).map_err(|_| bad())?;
    wire::vote_from(Some(&vote)).map(Some).map_err(|_| bad())
}
