//! Which stored nodes an inclusion or consistency proof needs, and how to assemble the proof
//! from their hashes (RFC 6962 §2.1.1 `PATH`, §2.1.2 `PROOF`).
//!
//! Each proof element is `MTH` of a range of leaves. Walking the RFC's recursion from the root
//! down, every range is a perfect subtree — one stored node — except possibly the one range
//! that ends at the tree's right edge when the walk first turns left: that "ragged" range is
//! folded from the few perfect subtrees it consists of ([`range_nodes`]). So a proof costs
//! `O(log n)` node reads and at most `log2(n)` extra node hashes, and the Merkle code never
//! touches storage: [`inclusion_nodes`] and [`consistency_nodes`] say what to fetch,
//! [`ProofNodes::assemble`] builds the proof from what was fetched.

use std::ops::Range;

use crate::hash::Hash;
use crate::merkle::node::{LeafIndex, NodeId, TreeSize, fold_range, range_nodes};

/// Most proof elements: one per level of a tree of up to `2^64 − 1` leaves.
const PROOF_ELEMENTS_MAX: usize = 64;

/// An inclusion proof cannot be made for these coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InclusionProofError {
    /// The leaf is not in a tree of that size.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index asked for.
        index: LeafIndex,
        /// The tree size.
        size: TreeSize,
    },
}

/// A consistency proof cannot be made between these sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyProofError {
    /// A proof from the empty tree proves nothing, so it is never made or accepted.
    #[error("a consistency proof must start from a tree of at least one leaf")]
    FromEmpty,
    /// The older tree is larger than the newer one.
    #[error("cannot prove consistency from size {from} to the smaller size {to}")]
    FromBeyondTo {
        /// The older size.
        from: TreeSize,
        /// The newer size.
        to: TreeSize,
    },
}

/// The number of node hashes handed to [`ProofNodes::assemble`] was not the number asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a proof needs {expected} node hashes, got {actual}")]
pub struct NodeCountMismatch {
    /// Hashes asked for.
    pub expected: usize,
    /// Hashes given.
    pub actual: usize,
}

/// The nodes a proof is assembled from, in proof order (leaf to root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofNodes {
    ids: Vec<NodeId>,
    /// The run of `ids` that folds into one element, if a range was ragged.
    ragged: Option<Range<usize>>,
}

impl ProofNodes {
    fn from_ranges(ranges: &[(u64, u64)]) -> Self {
        let mut ids = Vec::with_capacity(ranges.len() + 1);
        let mut ragged = None;
        // `ranges` were collected root first; proofs list them leaf first.
        for &(start, end) in ranges.iter().rev() {
            let first = ids.len();
            ids.extend(range_nodes(start, end));
            if ids.len() - first > 1 {
                debug_assert!(ragged.is_none(), "at most one range is ragged");
                ragged = Some(first..ids.len());
            }
        }
        Self { ids, ragged }
    }

    /// The complete nodes to fetch, in the order [`assemble`](Self::assemble) wants them.
    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// Number of elements in the assembled proof.
    pub fn proof_len(&self) -> usize {
        self.ids.len() - self.ragged.as_ref().map_or(0, |r| r.len() - 1)
    }

    /// The proof from the hashes of [`ids`](Self::ids), given in the same order.
    pub fn assemble(&self, hashes: &[Hash]) -> Result<Vec<Hash>, NodeCountMismatch> {
        if hashes.len() != self.ids.len() {
            return Err(NodeCountMismatch { expected: self.ids.len(), actual: hashes.len() });
        }
        let Some(ragged) = &self.ragged else {
            return Ok(hashes.to_vec());
        };
        let mut proof = Vec::with_capacity(self.proof_len());
        proof.extend_from_slice(&hashes[..ragged.start]);
        proof.push(fold_range(&hashes[ragged.clone()]));
        proof.extend_from_slice(&hashes[ragged.end..]);
        Ok(proof)
    }
}

/// The largest power of two strictly below `n` (RFC 6962's split point `k`), for `n ≥ 2`.
pub(crate) fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (n - 1).ilog2()
}

/// Visits the ranges of `PATH(index, D[0:size])` root first (RFC 6962 §2.1.1).
fn inclusion_ranges(index: u64, size: u64, mut visit: impl FnMut(u64, u64)) {
    let (mut lo, mut hi) = (0, size);
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index < lo + k {
            visit(lo + k, hi);
            hi = lo + k;
        } else {
            visit(lo, lo + k);
            lo += k;
        }
    }
}

/// Visits the ranges of `PROOF(from, D[0:to])` root first (RFC 6962 §2.1.2 `SUBPROOF` with
/// `b = true`), for `0 < from ≤ to`.
fn consistency_ranges(from: u64, to: u64, mut visit: impl FnMut(u64, u64)) {
    let (mut lo, mut hi) = (0, to);
    let mut whole_old_tree = true;
    loop {
        if from == hi {
            // SUBPROOF(m, D[m], b): nothing if this is the old tree itself, else its hash.
            if !whole_old_tree {
                visit(lo, hi);
            }
            return;
        }
        let k = split(hi - lo);
        if from <= lo + k {
            visit(lo + k, hi);
            hi = lo + k;
        } else {
            visit(lo, lo + k);
            lo += k;
            whole_old_tree = false;
        }
    }
}

fn check_inclusion(index: LeafIndex, size: TreeSize) -> Result<(), InclusionProofError> {
    if index.0 >= size.0 {
        return Err(InclusionProofError::IndexOutOfRange { index, size });
    }
    Ok(())
}

fn check_consistency(from: TreeSize, to: TreeSize) -> Result<(), ConsistencyProofError> {
    if from.0 == 0 {
        return Err(ConsistencyProofError::FromEmpty);
    }
    if from > to {
        return Err(ConsistencyProofError::FromBeyondTo { from, to });
    }
    Ok(())
}

/// The nodes of the inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn inclusion_nodes(
    index: LeafIndex,
    size: TreeSize,
) -> Result<ProofNodes, InclusionProofError> {
    check_inclusion(index, size)?;
    let mut ranges = Vec::with_capacity(PROOF_ELEMENTS_MAX);
    inclusion_ranges(index.0, size.0, |lo, hi| ranges.push((lo, hi)));
    Ok(ProofNodes::from_ranges(&ranges))
}

/// The nodes of the consistency proof from the tree of `from` leaves to the tree of `to`
/// leaves. Equal sizes have the empty proof.
pub fn consistency_nodes(
    from: TreeSize,
    to: TreeSize,
) -> Result<ProofNodes, ConsistencyProofError> {
    check_consistency(from, to)?;
    let mut ranges = Vec::with_capacity(PROOF_ELEMENTS_MAX);
    consistency_ranges(from.0, to.0, |lo, hi| ranges.push((lo, hi)));
    Ok(ProofNodes::from_ranges(&ranges))
}

/// Length of the inclusion proof of `index` in a tree of `size` (no allocation).
pub(crate) fn inclusion_proof_len(
    index: LeafIndex,
    size: TreeSize,
) -> Result<usize, InclusionProofError> {
    check_inclusion(index, size)?;
    let mut len = 0;
    inclusion_ranges(index.0, size.0, |_, _| len += 1);
    Ok(len)
}

/// Length of the consistency proof from `from` to `to` (no allocation).
pub(crate) fn consistency_proof_len(
    from: TreeSize,
    to: TreeSize,
) -> Result<usize, ConsistencyProofError> {
    check_consistency(from, to)?;
    let mut len = 0;
    consistency_ranges(from.0, to.0, |_, _| len += 1);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_largest_power_of_two_below() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (u64::MAX, 1 << 63)] {
            assert_eq!(split(n), k, "n = {n}");
        }
    }

    #[test]
    fn inclusion_plan_of_a_small_tree() {
        // Tree of 7 leaves, leaf 2: siblings are leaf 3, node [0,2), then ragged [4,7).
        let plan = inclusion_nodes(LeafIndex(2), TreeSize(7)).unwrap();
        assert_eq!(
            plan.ids(),
            [
                NodeId { level: 0, index: 3 },
                NodeId { level: 1, index: 0 },
                NodeId { level: 1, index: 2 },
                NodeId { level: 0, index: 6 },
            ]
        );
        assert_eq!(plan.proof_len(), 3);
        assert_eq!(inclusion_proof_len(LeafIndex(2), TreeSize(7)), Ok(3));
    }

    #[test]
    fn refuses_impossible_proofs() {
        assert_eq!(
            inclusion_nodes(LeafIndex(5), TreeSize(5)),
            Err(InclusionProofError::IndexOutOfRange { index: LeafIndex(5), size: TreeSize(5) })
        );
        assert_eq!(
            consistency_nodes(TreeSize(0), TreeSize(3)),
            Err(ConsistencyProofError::FromEmpty)
        );
        assert_eq!(
            consistency_nodes(TreeSize(0), TreeSize(0)),
            Err(ConsistencyProofError::FromEmpty)
        );
        assert_eq!(
            consistency_nodes(TreeSize(4), TreeSize(3)),
            Err(ConsistencyProofError::FromBeyondTo { from: TreeSize(4), to: TreeSize(3) })
        );
        assert_eq!(consistency_nodes(TreeSize(3), TreeSize(3)).unwrap().ids(), []);
    }

    #[test]
    fn assemble_checks_the_count() {
        let plan = inclusion_nodes(LeafIndex(0), TreeSize(2)).unwrap();
        assert_eq!(plan.assemble(&[]), Err(NodeCountMismatch { expected: 1, actual: 0 }));
    }
}
