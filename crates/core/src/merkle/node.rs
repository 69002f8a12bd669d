//! Coordinates in an RFC 6962 tree: [`LeafIndex`], [`TreeSize`], [`NodeId`], and [`RootHash`],
//! a root that travels with the size of the tree it is the root of.

use std::fmt;

use crate::hash::Hash;

/// 0-based position of a leaf (an entry's sequence minus one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeafIndex(pub u64);

/// Number of leaves in a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TreeSize(pub u64);

impl fmt::Display for LeafIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for TreeSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A perfect subtree: the `2^level` leaves starting at `index · 2^level`.
///
/// Level 0 nodes are leaves (their hash is the entry's content hash). A node is *complete* in a
/// tree of size `n` once all its leaves are in the tree; complete nodes never change, which is
/// why storage can keep their hashes and proofs can be assembled from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    /// Height above the leaves, 0 to 63.
    pub level: u8,
    /// Position among the nodes of that level, from the left.
    pub index: u64,
}

impl NodeId {
    /// The leaf at `index`.
    pub const fn leaf(index: LeafIndex) -> Self {
        Self { level: 0, index: index.0 }
    }

    /// The first leaf this node covers.
    pub const fn first_leaf(self) -> u64 {
        self.index << self.level
    }

    /// One past the last leaf this node covers.
    pub const fn end_leaf(self) -> u64 {
        (self.index + 1) << self.level
    }

    /// Whether every leaf of the node is in a tree of `size` leaves.
    pub const fn is_complete_in(self, size: TreeSize) -> bool {
        self.end_leaf() <= size.0
    }
}

/// The root of a tree together with the tree's size: a root means nothing without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RootHash {
    /// Leaves in the tree.
    pub size: TreeSize,
    /// `MTH` of those leaves (RFC 6962 §2.1).
    pub hash: Hash,
}

impl fmt::Display for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (tree size {})", self.hash, self.size)
    }
}

/// The perfect subtrees that make up the leaves `[start, end)`, left to right.
///
/// `start` must be 0 or a multiple of a power of two at least `end − start`, as every range in
/// RFC 6962's recursion is; the nodes are then one per set bit of `end − start`, largest
/// first, and the range's `MTH` is their right-to-left fold ([`fold_range`]). For `[0, n)`
/// these are the roots of the compact range (the "frontier") of a tree of size `n`.
pub fn range_nodes(start: u64, end: u64) -> impl Iterator<Item = NodeId> {
    debug_assert!(start <= end);
    let mut next = start;
    let mut remaining = end - start;
    std::iter::from_fn(move || {
        if remaining == 0 {
            return None;
        }
        // A u64 has at most 64 bits, so the level fits a u8.
        let level = remaining.ilog2();
        debug_assert_eq!(next % (1 << level), 0, "range start must be aligned");
        let node = NodeId { level: u8::try_from(level).unwrap_or(u8::MAX), index: next >> level };
        next += 1 << level;
        remaining -= 1 << level;
        Some(node)
    })
}

/// `MTH` of a range from the hashes of its [`range_nodes`], in order: RFC 6962 §2.1 splits a
/// range at its largest power of two, so the hash is `node(h0, node(h1, … node(hk−1, hk)))`.
/// The empty range hashes to `MTH({})`.
pub fn fold_range(hashes: &[Hash]) -> Hash {
    let Some((last, rest)) = hashes.split_last() else {
        return crate::hash::EMPTY_ROOT;
    };
    rest.iter().rev().fold(*last, |right, left| crate::hash::node_hash(left, &right))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_coordinates() {
        let n = NodeId { level: 3, index: 2 };
        assert_eq!((n.first_leaf(), n.end_leaf()), (16, 24));
        assert!(n.is_complete_in(TreeSize(24)));
        assert!(!n.is_complete_in(TreeSize(23)));
    }

    #[test]
    fn range_nodes_follow_the_set_bits() {
        let ids: Vec<NodeId> = range_nodes(0, 13).collect();
        assert_eq!(
            ids,
            [
                NodeId { level: 3, index: 0 },
                NodeId { level: 2, index: 2 },
                NodeId { level: 0, index: 12 },
            ]
        );
        let ids: Vec<NodeId> = range_nodes(8, 11).collect();
        assert_eq!(ids, [NodeId { level: 1, index: 4 }, NodeId { level: 0, index: 10 }]);
        assert_eq!(range_nodes(5, 5).count(), 0);
    }
}
