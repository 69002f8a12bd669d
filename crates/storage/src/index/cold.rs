//! The checkpointed index, in fjall: everything up to each context's base.
//!
//! # Keyspaces and rows
//!
//! Integers are big-endian, so rows of one context sort by sequence.
//!
//! ```text
//! contexts  context id                          → u64 context number
//! names     u64 number                          → context id
//! heads     u64 number                          → u64 latest ‖ u64 appended_at_ns ‖ u64 lamport
//! entries   u64 number ‖ u64 first seq          → run of (u32 segment ‖ u32 offset ‖ u32 len ‖ [32] hash)
//! nodes     u64 number ‖ u8 level ‖ u64 first   → run of [32] hashes (levels ≥ STORED_LEVEL_MIN)
//! keys      u64 number ‖ u16 len ‖ key ‖ u64 first seq → run of u64 seqs
//! ids       u64 number ‖ append id              → u64 seq
//! meta      "watermark"                         → u64 lsn ‖ u32 segment ‖ u32 offset
//!           "next_context"                      → u64
//!           "format"                            → u32 version (1)
//! ```
//!
//! A *run* holds consecutive items starting at the sequence (or node index) in its key; runs
//! are written once, at a checkpoint, and never rewritten. The row holding item `x` is the last
//! row whose first item is at most `x`: one reverse seek.
//!
//! Everything a checkpoint writes, the watermark included, goes in one atomic batch followed
//! by a `SyncAll` persist; the index never refers to log records that are not durable (they
//! were fsynced before their checkpoint began). On reopen, only the log after the watermark is
//! replayed, so the index is never fsynced per append.

use std::path::Path;

use converge_core::{
    AppendId, ContextId, Hash, Key, LamportTime, NodeId, Seq, Sequencer, Timestamp,
};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{ContextCheckpoint, RUN_ITEMS_MAX};
use crate::error::{Error, Result};
use crate::log::{LogPoint, Position};

/// The index format this code writes and reads.
const INDEX_FORMAT: u32 = 1;

/// The largest memtable of the `ids` keyspace (fjall's default is 64 MiB). Every append that
/// carries an `append_id` the context has not recorded since its checkpoint looks it up here,
/// and almost always misses: in a memtable that is a skiplist search, in a sealed table a
/// Bloom filter test. At 64 MiB the searches were 10 % of a three-node cluster's CPU (every
/// append there carries an id, and every node applies it); at 4 MiB 2 %, and the cluster
/// appended 1.17× as fast (ARCHITECTURE.md, "Append ids").
const IDS_MEMTABLE_BYTES_MAX: u64 = 4 << 20;

/// The largest memtable of any keyspace. fjall's default is 64 MiB, which for eight keyspaces
/// would let the index hold half a gigabyte outside the memory budget; the store sizes them
/// from its budget ([`IndexMemory`]) up to this.
const MEMTABLE_BYTES_MAX: u64 = 8 << 20;

/// The smallest memtable fjall is given.
const MEMTABLE_BYTES_MIN: u64 = 1 << 20;

/// The smallest block cache fjall is given.
const CACHE_BYTES_MIN: u64 = 1 << 20;

/// The number of keyspaces, each with its own memtable.
const KEYSPACES: u64 = 8;

/// What the index may hold in memory: fjall's block cache, and the largest memtable of each
/// keyspace (a full memtable is sealed and flushed in the background while a new one fills).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexMemory {
    pub(crate) cache_bytes: u64,
    pub(crate) memtable_bytes: u64,
}

impl IndexMemory {
    /// What the index may hold of a memory budget of `budget` bytes: its share
    /// ([`IndexMemory::share`]), half of it for the block cache, half for the keyspaces'
    /// memtables (within fjall's limits).
    pub(crate) fn of_budget(budget: usize) -> Self {
        let share = Self::share(budget) as u64;
        let memtable_bytes = (share / 2 / KEYSPACES).clamp(MEMTABLE_BYTES_MIN, MEMTABLE_BYTES_MAX);
        Self { cache_bytes: (share / 2).max(CACHE_BYTES_MIN), memtable_bytes }
    }

    /// The index's share of a memory budget of `budget` bytes, one part in [`INDEX_SHARE`];
    /// contexts take the rest.
    pub(crate) fn share(budget: usize) -> usize {
        budget / INDEX_SHARE
    }
}

/// The index takes one part in this many of the memory budget. A checkpoint's batch and a
/// memtable being flushed come on top, for the length of a checkpoint (bounded by the
/// checkpoint size).
const INDEX_SHARE: usize = 4;

/// The journal fjall keeps before it flushes the memtables that pin its oldest file (fjall's
/// default is 512 MiB, the least it allows 64 MiB). A reopen after a crash replays the whole
/// journal into memtables: at 512 MiB that took 15 s with 10^6 contexts.
const JOURNAL_BYTES: u64 = 64 << 20;

/// The journal a clean close leaves to be replayed rather than flush: replaying it takes
/// milliseconds, while a flush waits for fjall's flush workers (a tenth of a second; the
/// power-cut test, which closes stores thousands of times, took ten times as long).
const FLUSH_JOURNAL_BYTES: u64 = 4 << 20;

/// Bytes of one entry-run item.
const ENTRY_ITEM_BYTES: usize = 12 + 32;

/// The fjall database and its keyspaces.
pub(crate) struct Cold {
    db: Database,
    contexts: Keyspace,
    names: Keyspace,
    heads: Keyspace,
    entries: Keyspace,
    nodes: Keyspace,
    keys: Keyspace,
    ids: Keyspace,
    meta: Keyspace,
}

/// What the index says about the log.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Watermark {
    /// Every record up to this point is in the index.
    pub(crate) point: LogPoint,
    /// The next context number to hand out.
    pub(crate) next_context: u64,
}

fn ks(db: &Database, name: &str, memtable_bytes: u64) -> Result<Keyspace> {
    Ok(db.keyspace(name, || KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes))?)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(b)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}

fn hash_at(bytes: &[u8], at: usize) -> Hash {
    let mut b = [0; 32];
    b.copy_from_slice(&bytes[at..at + 32]);
    Hash::from_bytes(b)
}

fn key2(number: u64, x: u64) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&number.to_be_bytes());
    k[8..].copy_from_slice(&x.to_be_bytes());
    k
}

fn node_prefix(number: u64, level: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.extend_from_slice(&number.to_be_bytes());
    k.push(level);
    k
}

fn key_prefix(number: u64, key: &Key) -> Vec<u8> {
    let bytes = key.as_str().as_bytes();
    let mut k = Vec::with_capacity(8 + 2 + bytes.len() + 8);
    k.extend_from_slice(&number.to_be_bytes());
    // Keys are at most 1 KiB.
    k.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    k.extend_from_slice(bytes);
    k
}

fn with_suffix(prefix: &[u8], x: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&x.to_be_bytes());
    k
}

impl Cold {
    /// Opens (or creates) the index in `dir`, holding at most `memory` in memory.
    pub(crate) fn open(dir: &Path, memory: IndexMemory) -> Result<Self> {
        let db = Database::builder(dir)
            .manual_journal_persist(true)
            .max_journaling_size(JOURNAL_BYTES)
            .cache_size(memory.cache_bytes)
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => Error::Locked(dir.to_path_buf()),
                other => other.into(),
            })?;
        let m = memory.memtable_bytes;
        let cold = Self {
            contexts: ks(&db, "contexts", m)?,
            names: ks(&db, "names", m)?,
            heads: ks(&db, "heads", m)?,
            entries: ks(&db, "entries", m)?,
            nodes: ks(&db, "nodes", m)?,
            keys: ks(&db, "keys", m)?,
            ids: ks(&db, "ids", m.min(IDS_MEMTABLE_BYTES_MAX))?,
            meta: ks(&db, "meta", m)?,
            db,
        };
        match cold.meta.get("format")? {
            None => {
                cold.meta.insert("format", INDEX_FORMAT.to_be_bytes())?;
                cold.db.persist(PersistMode::SyncAll)?;
            }
            Some(v) if v.len() == 4 && u32_at(&v, 0) == INDEX_FORMAT => {}
            Some(_) => {
                return Err(Error::corrupt(
                    dir,
                    0,
                    format!(
                        "the index has a format this build does not read (it reads format {INDEX_FORMAT})"
                    ),
                ));
            }
        }
        Ok(cold)
    }

    /// Writes every memtable out to tables, so the next open has no journal to replay (a
    /// clean close calls this after its last checkpoint), unless the journal is under
    /// [`FLUSH_JOURNAL_BYTES`]. fjall keeps this call out of its documentation: it is the one
    /// way to flush a keyspace on demand.
    pub(crate) fn flush(&self) -> Result<()> {
        if self.db.journal_disk_space()? < FLUSH_JOURNAL_BYTES {
            return Ok(());
        }
        for keyspace in [
            &self.contexts,
            &self.names,
            &self.heads,
            &self.entries,
            &self.nodes,
            &self.keys,
            &self.ids,
            &self.meta,
        ] {
            keyspace.rotate_memtable_and_wait()?;
        }
        Ok(())
    }

    /// The watermark of the last checkpoint.
    pub(crate) fn watermark(&self) -> Result<Watermark> {
        let point = match self.meta.get("watermark")? {
            Some(v) if v.len() == 16 => {
                LogPoint { lsn: u64_at(&v, 0), segment: u32_at(&v, 8), offset: u32_at(&v, 12) }
            }
            Some(_) => return Err(Error::corrupt("index", 0, "malformed watermark")),
            None => LogPoint::default(),
        };
        let next_context = match self.meta.get("next_context")? {
            Some(v) if v.len() == 8 => u64_at(&v, 0),
            _ => 1,
        };
        Ok(Watermark { point, next_context })
    }

    /// The number of a context, if it has been checkpointed.
    pub(crate) fn context_number(&self, id: &ContextId) -> Result<Option<u64>> {
        Ok(self.contexts.get(id.as_str())?.filter(|v| v.len() == 8).map(|v| u64_at(&v, 0)))
    }

    /// Up to `limit` checkpointed contexts, in byte order of their ids, from `start` on, that
    /// begin with `prefix`: ids and numbers. One seek and `limit` rows, however many
    /// contexts there are.
    pub(crate) fn context_page(
        &self,
        start: std::ops::Bound<&ContextId>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(ContextId, u64)>> {
        let start = start.map(|id| id.as_str().as_bytes());
        let mut out = Vec::new();
        for guard in self.contexts.range::<&[u8], _>((start, std::ops::Bound::Unbounded)) {
            if out.len() == limit {
                break;
            }
            let (k, v) = guard.into_inner()?;
            let text = std::str::from_utf8(&k)
                .map_err(|_| Error::corrupt("index", 0, "a context id is not UTF-8"))?;
            if !text.starts_with(prefix) {
                break;
            }
            if v.len() != 8 {
                return Err(Error::corrupt(
                    "index",
                    0,
                    format!("malformed number of context {text}"),
                ));
            }
            let id =
                ContextId::try_new(text).map_err(|e| Error::corrupt("index", 0, e.to_string()))?;
            out.push((id, u64_at(&v, 0)));
        }
        Ok(out)
    }

    /// The id of context `number`.
    pub(crate) fn context_name(&self, number: u64) -> Result<Option<ContextId>> {
        let Some(v) = self.names.get(number.to_be_bytes())? else { return Ok(None) };
        let text = std::str::from_utf8(&v)
            .map_err(|_| Error::corrupt("index", 0, "context name is not UTF-8"))?;
        ContextId::try_new(text).map(Some).map_err(|e| Error::corrupt("index", 0, e.to_string()))
    }

    /// The checkpointed head of context `number`.
    pub(crate) fn head(&self, number: u64) -> Result<Option<Sequencer>> {
        let Some(v) = self.heads.get(number.to_be_bytes())? else { return Ok(None) };
        if v.len() != 24 {
            return Err(Error::corrupt("index", 0, format!("malformed head of context {number}")));
        }
        Ok(Some(Sequencer::at(
            Seq(u64_at(&v, 0)),
            Timestamp(u64_at(&v, 8)),
            LamportTime(u64_at(&v, 16)),
        )))
    }

    /// Visits the entry items of `number` from `from` to `to` inclusive, in order.
    fn entry_items(
        &self,
        number: u64,
        from: u64,
        to: u64,
        mut visit: impl FnMut(u64, &[u8]),
    ) -> Result<()> {
        if from > to {
            return Ok(());
        }
        let start = Self::run_start(&self.entries, &number.to_be_bytes(), from)?.unwrap_or(from);
        for guard in self.entries.range(key2(number, start)..=key2(number, to)) {
            let (k, v) = guard.into_inner()?;
            let first = u64_at(&k, 8);
            for (i, item) in v.chunks_exact(ENTRY_ITEM_BYTES).enumerate() {
                let seq = first + i as u64;
                if seq > to {
                    return Ok(());
                }
                if seq >= from {
                    visit(seq, item);
                }
            }
        }
        Ok(())
    }

    /// The first item of the run that holds `x`, if any run starts at or before it.
    fn run_start(ks: &Keyspace, prefix: &[u8], x: u64) -> Result<Option<u64>> {
        let low = with_suffix(prefix, 0);
        let high = with_suffix(prefix, x);
        match ks.range(low..=high).next_back() {
            Some(guard) => {
                let k = guard.key()?;
                Ok(Some(u64_at(&k, k.len() - 8)))
            }
            None => Ok(None),
        }
    }

    /// Positions of entries `from..=to` of `number`.
    pub(crate) fn positions(&self, number: u64, from: u64, to: u64) -> Result<Vec<Position>> {
        let mut out = Vec::with_capacity((to.saturating_sub(from) + 1).min(1 << 16) as usize);
        self.entry_items(number, from, to, |_, item| {
            out.push(Position {
                segment: u32_at(item, 0),
                offset: u32_at(item, 4),
                len: u32_at(item, 8),
            });
        })?;
        check_count(number, "positions", from, to, out.len())?;
        Ok(out)
    }

    /// Positions of the given entries (ascending sequences).
    pub(crate) fn positions_of(&self, number: u64, seqs: &[Seq]) -> Result<Vec<Position>> {
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            out.extend(self.positions(number, seq.0, seq.0)?);
        }
        Ok(out)
    }

    /// Content hashes of entries `from..=to` of `number`.
    pub(crate) fn leaf_hashes(&self, number: u64, from: u64, to: u64) -> Result<Vec<Hash>> {
        let mut out = Vec::with_capacity((to.saturating_sub(from) + 1).min(1 << 16) as usize);
        self.entry_items(number, from, to, |_, item| out.push(hash_at(item, 12)))?;
        check_count(number, "leaf hashes", from, to, out.len())?;
        Ok(out)
    }

    /// A stored node of `number`.
    pub(crate) fn node(&self, number: u64, id: NodeId) -> Result<Option<Hash>> {
        let prefix = node_prefix(number, id.level);
        let Some(first) = Self::run_start(&self.nodes, &prefix, id.index)? else { return Ok(None) };
        let Some(v) = self.nodes.get(with_suffix(&prefix, first))? else { return Ok(None) };
        let i = (id.index - first) as usize;
        Ok(v.get(i * 32..(i + 1) * 32).map(|b| hash_at(b, 0)))
    }

    /// Sequences of entries of `number` with `key` after `after`, at most `limit`.
    pub(crate) fn key_seqs(
        &self,
        number: u64,
        key: &Key,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Seq>> {
        let prefix = key_prefix(number, key);
        let start = Self::run_start(&self.keys, &prefix, after.0)?.unwrap_or(after.0);
        let mut out = Vec::new();
        for guard in self.keys.range(with_suffix(&prefix, start)..=with_suffix(&prefix, u64::MAX)) {
            let v = guard.into_inner()?.1;
            for item in v.chunks_exact(8) {
                let seq = Seq(u64_at(item, 0));
                if seq > after {
                    if out.len() == limit {
                        return Ok(out);
                    }
                    out.push(seq);
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` sequences of `number`'s entries with `key`, below `below` and after
    /// `after`, newest first: reads the key's runs backwards from `below`, so the work is in
    /// proportion to what it returns (and one run), not to the context's length.
    pub(crate) fn key_seqs_before(
        &self,
        number: u64,
        key: &Key,
        below: u64,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Seq>> {
        let prefix = key_prefix(number, key);
        let mut out = Vec::new();
        let runs = self.keys.range(with_suffix(&prefix, 0)..with_suffix(&prefix, below));
        for guard in runs.rev() {
            let v = guard.into_inner()?.1;
            for item in v.chunks_exact(8).rev() {
                let seq = Seq(u64_at(item, 0));
                if seq.0 >= below {
                    continue;
                }
                if seq <= after || out.len() == limit {
                    return Ok(out);
                }
                out.push(seq);
            }
        }
        Ok(out)
    }

    /// The entry an append id was recorded for.
    pub(crate) fn append_id(&self, number: u64, id: &AppendId) -> Result<Option<Seq>> {
        let mut k = number.to_be_bytes().to_vec();
        k.extend_from_slice(id.as_str().as_bytes());
        Ok(self.ids.get(k)?.filter(|v| v.len() == 8).map(|v| Seq(u64_at(&v, 0))))
    }

    /// Writes a checkpoint atomically and durably.
    pub(crate) fn write_checkpoint<'a>(
        &self,
        contexts: impl IntoIterator<Item = &'a ContextCheckpoint>,
        watermark: Watermark,
    ) -> Result<()> {
        let mut batch = self.db.batch();
        for c in contexts {
            self.write_context(&mut batch, c);
        }
        let mut w = Vec::with_capacity(16);
        w.extend_from_slice(&watermark.point.lsn.to_be_bytes());
        w.extend_from_slice(&watermark.point.segment.to_be_bytes());
        w.extend_from_slice(&watermark.point.offset.to_be_bytes());
        batch.insert(&self.meta, "watermark", w);
        batch.insert(&self.meta, "next_context", watermark.next_context.to_be_bytes());
        batch.commit()?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    fn write_context(&self, batch: &mut fjall::OwnedWriteBatch, c: &ContextCheckpoint) {
        let number = c.number;
        if !c.named {
            batch.insert(&self.contexts, c.id.as_str(), number.to_be_bytes());
            batch.insert(&self.names, number.to_be_bytes(), c.id.as_str());
        }
        let mut head = Vec::with_capacity(24);
        head.extend_from_slice(&c.head.latest().0.to_be_bytes());
        head.extend_from_slice(&c.head.latest_appended_at().0.to_be_bytes());
        head.extend_from_slice(&c.head.latest_lamport().0.to_be_bytes());
        batch.insert(&self.heads, number.to_be_bytes(), head);

        let Some(recent) = c.recent.data() else { return };
        let items = recent.positions.iter().zip(&recent.hashes);
        let mut seq = c.recent.base + 1;
        let pairs: Vec<_> = items.collect();
        for chunk in pairs.chunks(RUN_ITEMS_MAX) {
            let mut v = Vec::with_capacity(chunk.len() * ENTRY_ITEM_BYTES);
            for (p, h) in chunk {
                v.extend_from_slice(&p.segment.to_be_bytes());
                v.extend_from_slice(&p.offset.to_be_bytes());
                v.extend_from_slice(&p.len.to_be_bytes());
                v.extend_from_slice(h.as_bytes());
            }
            batch.insert(&self.entries, key2(number, seq), v);
            seq += chunk.len() as u64;
        }
        for (key, seqs) in &recent.keys {
            let prefix = key_prefix(number, key);
            for chunk in seqs.chunks(RUN_ITEMS_MAX) {
                let v: Vec<u8> = chunk.iter().flat_map(|s| s.0.to_be_bytes()).collect();
                batch.insert(&self.keys, with_suffix(&prefix, chunk[0].0), v);
            }
        }
        for (id, seq) in &recent.ids {
            let mut k = number.to_be_bytes().to_vec();
            k.extend_from_slice(id.as_str().as_bytes());
            batch.insert(&self.ids, k, seq.0.to_be_bytes());
        }
        for (i, level) in recent.nodes.iter().enumerate() {
            let prefix = node_prefix(number, super::STORED_LEVEL_MIN + i as u8);
            let mut first = level.first;
            for chunk in level.hashes.chunks(RUN_ITEMS_MAX) {
                let v: Vec<u8> = chunk.iter().flat_map(|h| *h.as_bytes()).collect();
                batch.insert(&self.nodes, with_suffix(&prefix, first), v);
                first += chunk.len() as u64;
            }
        }
    }
}

fn check_count(number: u64, what: &str, from: u64, to: u64, found: usize) -> Result<()> {
    let expected = to.saturating_sub(from) + 1;
    if from <= to && found as u64 != expected {
        return Err(Error::corrupt(
            "index",
            0,
            format!(
                "context {number}: the index holds {found} {what} for sequences {from}..={to}, expected {expected}"
            ),
        ));
    }
    Ok(())
}
