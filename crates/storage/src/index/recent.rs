//! The in-memory index of a context's entries since its last checkpoint (in memory mode: of
//! all its entries): positions, leaf hashes, key lists, append ids and stored Merkle nodes.

use std::collections::HashMap;

use converge_core::{AppendId, Entry, Hash, Key, NodeId, Seq};

use super::STORED_LEVEL_MIN;
use crate::log::Position;

/// The stored nodes of one level, `first, first + 1, …`, in completion order.
#[derive(Debug, Clone, Default)]
pub(crate) struct LevelNodes {
    pub(crate) first: u64,
    pub(crate) hashes: Vec<Hash>,
}

/// Entries `base + 1 ..= base + len`, and what is looked up about them. Empty, as every idle
/// context's is after a checkpoint, it is two words: most contexts are idle, and each costs
/// what its resident state costs (`tests/resident_bytes.rs`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Recent {
    pub(crate) base: u64,
    data: Option<Box<RecentData>>,
}

/// What a non-empty [`Recent`] holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecentData {
    pub(crate) positions: Vec<Position>,
    pub(crate) hashes: Vec<Hash>,
    pub(crate) keys: HashMap<Key, Vec<Seq>>,
    pub(crate) ids: HashMap<AppendId, Seq>,
    /// Levels `STORED_LEVEL_MIN..`, one per level.
    pub(crate) nodes: Vec<LevelNodes>,
}

impl Recent {
    /// Empty, after `base` entries already indexed elsewhere.
    pub(crate) fn after(base: u64) -> Self {
        Self { base, data: None }
    }

    /// What it holds, unless it is empty.
    pub(crate) fn data(&self) -> Option<&RecentData> {
        self.data.as_deref()
    }

    /// It holds no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.data.as_ref().is_none_or(|d| d.positions.is_empty())
    }

    /// The sequence of the entry recorded with append id `id`, if it is here.
    pub(crate) fn append_id(&self, id: &AppendId) -> Option<Seq> {
        self.data()?.ids.get(id).copied()
    }

    /// The latest sequence indexed here (or the base).
    pub(crate) fn latest(&self) -> u64 {
        self.base + self.data().map_or(0, |d| d.positions.len() as u64)
    }

    /// Adds the next entry.
    pub(crate) fn push(&mut self, entry: &Entry, position: Position, append_id: Option<&AppendId>) {
        debug_assert_eq!(entry.sequence().0, self.latest() + 1);
        let data = self.data.get_or_insert_with(Box::default);
        data.positions.push(position);
        data.hashes.push(entry.content_hash());
        match data.keys.get_mut(entry.key()) {
            Some(seqs) => seqs.push(entry.sequence()),
            None => {
                data.keys.insert(entry.key().clone(), vec![entry.sequence()]);
            }
        }
        if let Some(id) = append_id {
            data.ids.insert(id.clone(), entry.sequence());
        }
    }

    /// Adds a completed node if its level is one that is stored.
    pub(crate) fn push_node(&mut self, id: NodeId, hash: Hash) {
        let Some(slot) = usize::from(id.level).checked_sub(usize::from(STORED_LEVEL_MIN)) else {
            return;
        };
        let nodes = &mut self.data.get_or_insert_with(Box::default).nodes;
        if nodes.len() <= slot {
            nodes.resize_with(slot + 1, LevelNodes::default);
        }
        let level = &mut nodes[slot];
        if level.hashes.is_empty() {
            level.first = id.index;
        }
        debug_assert_eq!(
            id.index,
            level.first + level.hashes.len() as u64,
            "nodes complete in order"
        );
        level.hashes.push(hash);
    }

    fn slot(&self, seq: Seq) -> Option<usize> {
        let i = seq.0.checked_sub(self.base + 1)?;
        (i < self.latest() - self.base).then_some(i as usize)
    }

    /// Where entry `seq` is, if it is indexed here.
    pub(crate) fn position(&self, seq: Seq) -> Option<Position> {
        Some(self.data()?.positions[self.slot(seq)?])
    }

    /// The content hash of entry `seq`, if it is indexed here.
    pub(crate) fn hash(&self, seq: Seq) -> Option<Hash> {
        Some(self.data()?.hashes[self.slot(seq)?])
    }

    /// A stored node, if it is here.
    pub(crate) fn node(&self, id: NodeId) -> Option<Hash> {
        let slot = usize::from(id.level).checked_sub(usize::from(STORED_LEVEL_MIN))?;
        let level = self.data()?.nodes.get(slot)?;
        let i = id.index.checked_sub(level.first)?;
        level.hashes.get(usize::try_from(i).ok()?).copied()
    }

    /// Sequences of entries with `key` after `after`, ascending.
    pub(crate) fn key_seqs(&self, key: &Key, after: Seq) -> &[Seq] {
        let seqs = self.data().and_then(|d| d.keys.get(key)).map_or(&[][..], Vec::as_slice);
        let start = seqs.partition_point(|s| *s <= after);
        &seqs[start..]
    }

    /// Forgets everything up to `new_base`, which is now indexed elsewhere.
    pub(crate) fn trim(&mut self, new_base: u64) {
        let Some(data) = self.data.as_deref_mut() else { return };
        let cut = usize::try_from(new_base.saturating_sub(self.base))
            .unwrap_or(usize::MAX)
            .min(data.positions.len());
        self.base += cut as u64;
        if cut == data.positions.len() {
            // Every stored node covers only leaves up to the latest entry, so none is left
            // either.
            self.data = None;
            return;
        }
        data.positions.drain(..cut);
        data.hashes.drain(..cut);
        let base = Seq(self.base);
        data.keys.retain(|_, seqs| {
            let keep = seqs.partition_point(|s| *s <= base);
            seqs.drain(..keep);
            !seqs.is_empty()
        });
        data.ids.retain(|_, seq| *seq > base);
        for (i, level) in data.nodes.iter_mut().enumerate() {
            let height = u32::from(STORED_LEVEL_MIN) + i as u32;
            // Nodes whose leaves all lie at or below the base are stored elsewhere now.
            let covered = (self.base >> height).saturating_sub(level.first);
            let cut = usize::try_from(covered).unwrap_or(usize::MAX).min(level.hashes.len());
            level.hashes.drain(..cut);
            level.first += cut as u64;
        }
        data.positions.shrink_to_fit();
        data.hashes.shrink_to_fit();
    }
}
