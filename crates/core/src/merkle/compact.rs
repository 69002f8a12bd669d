//! The incremental RFC 6962 tree: only the frontier is kept.
//!
//! A tree of `n` leaves is a sequence of perfect subtrees, one per set bit of `n`, largest
//! first (the "compact range" `[0, n)`, [`range_nodes`]). Appending a leaf merges equal-sized
//! subtrees like a binary counter carries, so it costs one node hash amortised and never more
//! than `log2(n)`. The root folds the frontier right to left (RFC 6962 §2.1 splits at the
//! largest power of two), at most `log2(n)` node hashes, and is cached until the next append.
//!
//! Every node completed by an append is reported to the caller, so storage can keep the
//! hashes that proofs are later assembled from; the tree itself never touches storage.

use std::sync::OnceLock;

use crate::hash::{EMPTY_ROOT, Hash, node_hash};
use crate::merkle::node::{LeafIndex, NodeId, RootHash, TreeSize, fold_range, range_nodes};

/// An RFC 6962 Merkle tree that keeps only its frontier.
#[derive(Debug, Clone, Default)]
pub struct CompactTree {
    size: u64,
    /// Roots of the perfect subtrees of the compact range `[0, size)`, largest first.
    frontier: Vec<Hash>,
    root: OnceLock<Hash>,
}

/// A frontier handed to [`CompactTree::from_frontier`] does not fit the tree size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a tree of size {size} has a frontier of {expected} hashes, got {actual}")]
pub struct FrontierError {
    /// The tree size.
    pub size: TreeSize,
    /// Hashes it needs: the number of set bits of the size.
    pub expected: usize,
    /// Hashes given.
    pub actual: usize,
}

/// The tree is full: it already has `u64::MAX` leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the tree already holds 2^64 - 1 leaves")]
pub struct TreeFull;

impl PartialEq for CompactTree {
    fn eq(&self, other: &Self) -> bool {
        self.size == other.size && self.frontier == other.frontier
    }
}

impl Eq for CompactTree {}

impl CompactTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree of `size` leaves from the hashes of its frontier nodes, [`Self::frontier_ids`].
    pub fn from_frontier(size: TreeSize, frontier: Vec<Hash>) -> Result<Self, FrontierError> {
        let expected = size.0.count_ones() as usize;
        if frontier.len() != expected {
            return Err(FrontierError { size, expected, actual: frontier.len() });
        }
        Ok(Self { size: size.0, frontier, root: OnceLock::new() })
    }

    /// The tree over `leaves`, built leaf by leaf.
    pub fn from_leaves(leaves: &[Hash]) -> Self {
        let mut tree = Self::new();
        for leaf in leaves {
            tree.push(*leaf);
        }
        tree
    }

    /// The nodes whose hashes make up the frontier of a tree of `size` leaves.
    pub fn frontier_ids(size: TreeSize) -> impl Iterator<Item = NodeId> {
        range_nodes(0, size.0)
    }

    /// Number of leaves.
    pub fn size(&self) -> TreeSize {
        TreeSize(self.size)
    }

    /// Hashes of the frontier nodes, largest subtree first.
    pub fn frontier(&self) -> &[Hash] {
        &self.frontier
    }

    /// The root, `MTH` of all leaves; `MTH({})` for the empty tree. Computed from the frontier
    /// in at most `log2(n)` node hashes the first time it is asked for after an append.
    pub fn root(&self) -> Hash {
        *self.root.get_or_init(
            || {
                if self.size == 0 { EMPTY_ROOT } else { fold_range(&self.frontier) }
            },
        )
    }

    /// The root with the tree size.
    pub fn root_hash(&self) -> RootHash {
        RootHash { size: self.size(), hash: self.root() }
    }

    /// Appends a leaf hash, reporting every node it completes to `completed`: the leaf itself
    /// first, then each parent up to the largest new perfect subtree.
    pub fn append(
        &mut self,
        leaf: Hash,
        mut completed: impl FnMut(NodeId, Hash),
    ) -> Result<LeafIndex, TreeFull> {
        let index = self.size;
        let size = index.checked_add(1).ok_or(TreeFull)?;
        completed(NodeId::leaf(LeafIndex(index)), leaf);
        let mut hash = leaf;
        let mut node = NodeId::leaf(LeafIndex(index));
        // While the new subtree is a right child, merge it with its left sibling: the carry of
        // incrementing a binary counter.
        while node.index & 1 == 1 {
            // The frontier has one hash per set bit of `index`, and the low bits of `index`
            // that are set are exactly the siblings to merge with.
            let left = self.frontier.pop().expect("frontier holds the left sibling");
            hash = node_hash(&left, &hash);
            node = NodeId { level: node.level + 1, index: node.index >> 1 };
            completed(node, hash);
        }
        self.frontier.push(hash);
        self.size = size;
        self.root = OnceLock::new();
        Ok(LeafIndex(index))
    }

    /// Appends a leaf hash, discarding the completed nodes.
    pub fn push(&mut self, leaf: Hash) {
        // 2^64 - 1 leaves cannot be reached by pushing one at a time.
        let _ = self.append(leaf, |_, _| {});
    }
}

/// `MTH` of `leaves` recomputed from scratch: `n − 1` node hashes, no allocation beyond the
/// `log2(n)` frontier.
pub fn root_of_leaves(leaves: &[Hash]) -> Hash {
    CompactTree::from_leaves(leaves).root()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(CompactTree::new().root(), EMPTY_ROOT);
        let l = leaves(1);
        assert_eq!(root_of_leaves(&l), l[0], "a one-leaf tree's root is its leaf");
    }

    #[test]
    fn reports_completed_nodes() {
        let mut tree = CompactTree::new();
        let mut seen = Vec::new();
        for leaf in leaves(4) {
            tree.append(leaf, |id, _| seen.push((id.level, id.index))).unwrap();
        }
        assert_eq!(seen, [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (1, 1), (2, 0)]);
        assert_eq!(tree.frontier().len(), 1);
    }

    #[test]
    fn frontier_round_trip() {
        let tree = CompactTree::from_leaves(&leaves(13));
        let rebuilt = CompactTree::from_frontier(tree.size(), tree.frontier().to_vec()).unwrap();
        assert_eq!(rebuilt, tree);
        assert_eq!(rebuilt.root(), tree.root());
        let err = CompactTree::from_frontier(TreeSize(13), vec![]).unwrap_err();
        assert_eq!(err, FrontierError { size: TreeSize(13), expected: 3, actual: 0 });
    }

    #[test]
    fn root_cache_is_reset_by_append() {
        let mut tree = CompactTree::from_leaves(&leaves(3));
        let before = tree.root();
        tree.push(leaf_hash(b"more"));
        assert_ne!(tree.root(), before);
    }

    #[test]
    fn full_tree_refuses_to_grow() {
        let mut full =
            CompactTree::from_frontier(TreeSize(u64::MAX), vec![Hash::default(); 64]).unwrap();
        assert_eq!(full.append(Hash::default(), |_, _| {}), Err(TreeFull));
        assert_eq!(full.size(), TreeSize(u64::MAX));
    }
}
