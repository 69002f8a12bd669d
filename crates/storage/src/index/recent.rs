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

/// Entries `base + 1 ..= base + len`, and what is looked up about them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recent {
    pub(crate) base: u64,
    pub(crate) positions: Vec<Position>,
    pub(crate) hashes: Vec<Hash>,
    pub(crate) keys: HashMap<Key, Vec<Seq>>,
    pub(crate) ids: HashMap<AppendId, Seq>,
    /// Levels `STORED_LEVEL_MIN..`, one per level.
    pub(crate) nodes: Vec<LevelNodes>,
}

impl Recent {
    /// Empty, after `base` entries already indexed elsewhere; `node_counts[i]` nodes of level
    /// `STORED_LEVEL_MIN + i` are already indexed elsewhere too.
    pub(crate) fn after(base: u64) -> Self {
        Self { base, ..Self::default() }
    }

    /// The latest sequence indexed here (or the base).
    pub(crate) fn latest(&self) -> u64 {
        self.base + self.positions.len() as u64
    }

    /// Adds the next entry.
    pub(crate) fn push(&mut self, entry: &Entry, position: Position, append_id: Option<&AppendId>) {
        debug_assert_eq!(entry.sequence().0, self.latest() + 1);
        self.positions.push(position);
        self.hashes.push(entry.content_hash());
        match self.keys.get_mut(entry.key()) {
            Some(seqs) => seqs.push(entry.sequence()),
            None => {
                self.keys.insert(entry.key().clone(), vec![entry.sequence()]);
            }
        }
        if let Some(id) = append_id {
            self.ids.insert(id.clone(), entry.sequence());
        }
    }

    /// Adds a completed node if its level is one that is stored.
    pub(crate) fn push_node(&mut self, id: NodeId, hash: Hash) {
        let Some(slot) = usize::from(id.level).checked_sub(usize::from(STORED_LEVEL_MIN)) else {
            return;
        };
        if self.nodes.len() <= slot {
            self.nodes.resize_with(slot + 1, LevelNodes::default);
        }
        let level = &mut self.nodes[slot];
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
        (i < self.positions.len() as u64).then_some(i as usize)
    }

    /// Where entry `seq` is, if it is indexed here.
    pub(crate) fn position(&self, seq: Seq) -> Option<Position> {
        self.slot(seq).map(|i| self.positions[i])
    }

    /// The content hash of entry `seq`, if it is indexed here.
    pub(crate) fn hash(&self, seq: Seq) -> Option<Hash> {
        self.slot(seq).map(|i| self.hashes[i])
    }

    /// A stored node, if it is here.
    pub(crate) fn node(&self, id: NodeId) -> Option<Hash> {
        let slot = usize::from(id.level).checked_sub(usize::from(STORED_LEVEL_MIN))?;
        let level = self.nodes.get(slot)?;
        let i = id.index.checked_sub(level.first)?;
        level.hashes.get(usize::try_from(i).ok()?).copied()
    }

    /// Sequences of entries with `key` after `after`, ascending.
    pub(crate) fn key_seqs(&self, key: &Key, after: Seq) -> &[Seq] {
        let seqs = self.keys.get(key).map_or(&[][..], Vec::as_slice);
        let start = seqs.partition_point(|s| *s <= after);
        &seqs[start..]
    }

    /// Forgets everything up to `new_base`, which is now indexed elsewhere.
    pub(crate) fn trim(&mut self, new_base: u64) {
        let cut = usize::try_from(new_base.saturating_sub(self.base))
            .unwrap_or(usize::MAX)
            .min(self.positions.len());
        self.positions.drain(..cut);
        self.hashes.drain(..cut);
        self.base += cut as u64;
        let base = Seq(self.base);
        self.keys.retain(|_, seqs| {
            let keep = seqs.partition_point(|s| *s <= base);
            seqs.drain(..keep);
            !seqs.is_empty()
        });
        self.ids.retain(|_, seq| *seq > base);
        for (i, level) in self.nodes.iter_mut().enumerate() {
            let height = u32::from(STORED_LEVEL_MIN) + i as u32;
            // Nodes whose leaves all lie at or below the base are stored elsewhere now.
            let covered = (self.base >> height).saturating_sub(level.first);
            let cut = usize::try_from(covered).unwrap_or(usize::MAX).min(level.hashes.len());
            level.hashes.drain(..cut);
            level.first += cut as u64;
        }
        self.positions.shrink_to_fit();
        self.hashes.shrink_to_fit();
    }
}
