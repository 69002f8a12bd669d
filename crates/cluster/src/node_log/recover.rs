//! Reading the node's Raft log back at open: every segment in order, each shard's entries,
//! truncations and vote; a torn tail cut, damage refused.

use std::io;
use std::path::Path;
use std::sync::Arc;

use converge_storage::vfs::{OpenMode, Vfs, VfsFile};
use openraft::{LogId, Vote};

use super::record::{self, Chunk, Record};
use super::{MARK_FILE, Pos, ShardLog, Slot, create_segment, pos, segment_path, split};
use crate::types::NodeId;

/// The log as recovery found it.
pub(super) struct Recovered {
    pub(super) segments: Vec<Arc<dyn VfsFile>>,
    /// Where the next record goes in the last segment.
    pub(super) end: u64,
    pub(super) shards: Vec<ShardLog>,
    /// How far the log was once fsynced.
    pub(super) mark: Pos,
}

/// Reads the log in `dir` (creating it if there is none) for `shards` shards of node `me`.
pub(super) fn recover(vfs: &dyn Vfs, dir: &Path, me: NodeId, shards: u32) -> io::Result<Recovered> {
    vfs.create_dir_all(dir)?;
    let mark = read_mark(vfs, dir)?;
    let mut segments: Vec<Arc<dyn VfsFile>> = Vec::new();
    let mut number = 1;
    while vfs.exists(&segment_path(dir, number))? {
        segments.push(vfs.open(&segment_path(dir, number), OpenMode::Existing)?);
        number += 1;
    }
    if segments.is_empty() {
        segments.push(create_segment(vfs, dir, 1)?);
        if let Some(parent) = dir.parent() {
            vfs.sync_dir(parent)?;
        }
    }
    let last_number = u32::try_from(segments.len()).expect("segment numbers fit u32");
    let (mark_segment, mark_offset) = split(mark);
    if mark_segment > last_number {
        return Err(damaged(format!(
            "the Raft log in {} was fsynced into segment {mark_segment} (its `{MARK_FILE}` file), but it has only {} segments: records it acknowledged are gone",
            dir.display(),
            segments.len()
        )));
    }
    let mut shard_logs: Vec<Replay> = (0..shards).map(|_| Replay::default()).collect();
    let mut end = 0;
    for (number, file) in (1..).zip(&segments) {
        let path = segment_path(dir, number);
        let len = file.len()?;
        if number == mark_segment && len < mark_offset {
            return Err(damaged(format!(
                "the Raft log segment {} is {len} bytes, shorter than the {mark_offset} bytes it was once fsynced to (its `{MARK_FILE}` file): records it acknowledged are gone",
                path.display()
            )));
        }
        let mut chunk = Chunk::default();
        let mut at = 0u64;
        while at < len {
            let Some((body, record_len)) = chunk.record(file.as_ref(), at, len)? else { break };
            let Some((shard, record)) = record::decode(body) else { break };
            let slot = Slot {
                pos: pos(number, at),
                len: u32::try_from(record_len).expect("a record is under 4 GiB"),
            };
            let log = shard_logs.get_mut(shard as usize).ok_or_else(|| {
                damaged(format!(
                    "{}: the record at byte {at} is for shard {shard}, but the cluster has {shards}",
                    path.display()
                ))
            })?;
            log.replay(record, slot).map_err(|e| {
                damaged(format!("{}: shard {shard}, the record at byte {at}: {e}", path.display()))
            })?;
            at += record_len as u64;
        }
        if at < len {
            if number < last_number || pos(number, at) < mark {
                return Err(damaged(format!(
                    "the Raft log segment {} is damaged at byte {at}: the record there is torn or fails its checksum, but the log was fsynced past it (a sealed segment, or its `{MARK_FILE}` file), so the record was once whole. This node refuses to start rather than vote or answer with a log that lost what it acknowledged. Restore the disk, or wipe the whole data directory and join as a new node",
                    path.display()
                )));
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
        end = at;
    }
    // What the last run wrote may still be only in the page cache.
    segments.last().expect("a segment").sync_data()?;
    let shards = shard_logs.into_iter().map(|r| r.finish(me)).collect();
    Ok(Recovered { segments, end, shards, mark })
}

/// One shard's log as its records are read.
#[derive(Default)]
struct Replay {
    log: ShardLog,
    /// Every entry's id, while recovering (a truncation needs the last one kept).
    ids: Vec<LogId<NodeId>>,
}

impl Replay {
    fn replay(&mut self, record: Record, slot: Slot) -> Result<(), String> {
        match record {
            Record::Entry(entry) => {
                let index = entry.log_id.index;
                if let Some(last) = self.log.last
                    && index != last.index + 1
                {
                    return Err(format!(
                        "entry {index} follows entry {} (the Raft log must be gap-free)",
                        last.index
                    ));
                }
                if self.log.last.is_none() {
                    self.log.first = index;
                }
                self.log.slots.push(slot);
                self.ids.push(entry.log_id);
                self.log.last = Some(entry.log_id);
            }
            Record::Truncate(index) => {
                let keep = index
                    .checked_sub(self.log.first)
                    .and_then(|k| usize::try_from(k).ok())
                    .filter(|k| *k < self.log.slots.len())
                    .ok_or_else(|| format!("a truncation at {index} outside the log"))?;
                self.log.slots.truncate(keep);
                self.ids.truncate(keep);
                self.log.last = self.ids.last().copied();
            }
            Record::Vote(vote) => self.log.vote = Some(vote),
        }
        Ok(())
    }

    /// The shard's log, its own committed vote read back uncommitted (see `NodeLog::open`).
    fn finish(mut self, me: NodeId) -> ShardLog {
        self.log.vote = self.log.vote.map(|vote| {
            if vote.committed && vote.leader_id.node_id == me {
                Vote::new(vote.leader_id.term, me)
            } else {
                vote
            }
        });
        self.log
    }
}

fn damaged(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The position up to which the log was once fsynced, as its mark file says (0 if none).
pub(super) fn read_mark(vfs: &dyn Vfs, dir: &Path) -> io::Result<Pos> {
    let path = dir.join(MARK_FILE);
    if !vfs.exists(&path)? {
        return Ok(0);
    }
    let file = vfs.open(&path, OpenMode::Existing)?;
    let bad = || {
        damaged(format!(
            "{}: the Raft log's fsync mark does not check (it is replaced atomically, so this is damage); restore the disk, or wipe the whole data directory and join as a new node",
            path.display()
        ))
    };
    if file.len()? != 12 {
        return Err(bad());
    }
    let mut buf = [0u8; 12];
    file.read_exact_at(&mut buf, 0)?;
    let crc = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if crc32c::crc32c(&buf[4..]) != crc {
        return Err(bad());
    }
    let mut at = [0u8; 8];
    at.copy_from_slice(&buf[4..]);
    Ok(u64::from_be_bytes(at))
}

/// Replaces the mark: every record before `pos` is on disk.
pub(super) fn write_mark(vfs: &dyn Vfs, dir: &Path, pos: Pos) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(12);
    bytes.extend_from_slice(&crc32c::crc32c(&pos.to_be_bytes()).to_be_bytes());
    bytes.extend_from_slice(&pos.to_be_bytes());
    converge_storage::node::write_atomically(vfs, dir, MARK_FILE, &bytes).map_err(io::Error::other)
}
