//! Proof verification, exactly RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency).
//!
//! Strict: every hash is a 32-byte [`Hash`] (bytes of another length never become one), a
//! proof must have exactly the length its coordinates imply, a consistency proof from the empty
//! tree is refused, and one between equal sizes must be empty with equal roots.
//!
//! An inclusion proof does not authenticate the tree size on its own: the path for leaf 1 of a
//! 5-leaf tree also checks out as leaf 1 of a 6-leaf tree, because the hash chain is the same.
//! Sizes must come from a tree head the verifier trusts.

use crate::hash::{Hash, node_hash};
use crate::merkle::node::{LeafIndex, RootHash, TreeSize};
use crate::merkle::proof::{
    ConsistencyProofError, InclusionProofError, consistency_proof_len, inclusion_proof_len,
};

/// Why an inclusion proof was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InclusionError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The claimed leaf index.
        index: LeafIndex,
        /// The claimed tree size.
        size: TreeSize,
    },
    /// The proof has the wrong number of hashes for these coordinates.
    #[error(
        "an inclusion proof for leaf {index} in a tree of size {size} has {expected} hashes, got {actual}"
    )]
    WrongLength {
        /// The claimed leaf index.
        index: LeafIndex,
        /// The claimed tree size.
        size: TreeSize,
        /// The length the coordinates imply.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// The proof does not lead from the leaf to the root.
    #[error("the inclusion proof does not lead to root {expected}")]
    RootMismatch {
        /// The root the verifier trusts.
        expected: Hash,
    },
}

/// Why a consistency proof was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    /// A proof from the empty tree proves nothing.
    #[error("a consistency proof must start from a tree of at least one leaf")]
    FromEmpty,
    /// The old tree is larger than the new one.
    #[error("the old tree (size {from}) is larger than the new one (size {to})")]
    FromBeyondTo {
        /// The old size.
        from: TreeSize,
        /// The new size.
        to: TreeSize,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error(
        "a consistency proof from size {from} to size {to} has {expected} hashes, got {actual}"
    )]
    WrongLength {
        /// The old size.
        from: TreeSize,
        /// The new size.
        to: TreeSize,
        /// The length the sizes imply.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// The proof does not reproduce both roots.
    #[error("the consistency proof does not reproduce the old root and the new root")]
    RootMismatch,
}

impl From<InclusionProofError> for InclusionError {
    fn from(err: InclusionProofError) -> Self {
        match err {
            InclusionProofError::IndexOutOfRange { index, size } => {
                Self::IndexOutOfRange { index, size }
            }
        }
    }
}

impl From<ConsistencyProofError> for ConsistencyError {
    fn from(err: ConsistencyProofError) -> Self {
        match err {
            ConsistencyProofError::FromEmpty => Self::FromEmpty,
            ConsistencyProofError::FromBeyondTo { from, to } => Self::FromBeyondTo { from, to },
        }
    }
}

/// Checks that `leaf` is at `index` in the tree whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: LeafIndex,
    root: &RootHash,
    proof: &[Hash],
) -> Result<(), InclusionError> {
    let size = root.size;
    let expected = inclusion_proof_len(index, size)?;
    if proof.len() != expected {
        return Err(InclusionError::WrongLength { index, size, expected, actual: proof.len() });
    }
    // Step 2: fn is the leaf's index, sn the last index; both move up a level per element.
    let (mut fn_, mut sn) = (index.0, size.0 - 1);
    let mut r = *leaf;
    for p in proof {
        // Step 4a: a path longer than the tree is tall.
        if sn == 0 {
            return Err(InclusionError::RootMismatch { expected: root.hash });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            // On the right edge, skip the levels where this subtree has no right sibling.
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn == 0 && r == root.hash {
        Ok(())
    } else {
        Err(InclusionError::RootMismatch { expected: root.hash })
    }
}

/// Checks that the tree with root `old` is a prefix of the tree with root `new`
/// (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old: &RootHash,
    new: &RootHash,
    proof: &[Hash],
) -> Result<(), ConsistencyError> {
    let (from, to) = (old.size, new.size);
    let expected = consistency_proof_len(from, to)?;
    if proof.len() != expected {
        return Err(ConsistencyError::WrongLength { from, to, expected, actual: proof.len() });
    }
    if from == to {
        return if old.hash == new.hash { Ok(()) } else { Err(ConsistencyError::RootMismatch) };
    }
    // Step 2: when the old tree is a perfect subtree, its root is the proof's implicit first
    // element.
    let (first, rest) = if from.0.is_power_of_two() {
        (old.hash, proof)
    } else {
        let (first, rest) = proof.split_first().ok_or(ConsistencyError::RootMismatch)?;
        (*first, rest)
    };
    // Steps 3-4.
    let (mut fn_, mut sn) = (from.0 - 1, to.0 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 5: fr rebuilds the old root, sr the new one.
    let (mut fr, mut sr) = (first, first);
    for c in rest {
        if sn == 0 {
            return Err(ConsistencyError::RootMismatch);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if fr == old.hash && sr == new.hash && sn == 0 {
        Ok(())
    } else {
        Err(ConsistencyError::RootMismatch)
    }
}
