//! Proofs as the API returns them, and their verification (by the core's RFC 9162 verifiers).

use converge_core::Hash;
use converge_core::merkle::{
    ConsistencyError, InclusionError, LeafIndex, RootHash, TreeSize, verify_consistency,
    verify_inclusion,
};

/// An inclusion proof (CONTRACT §1 `InclusionProof`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The entry's leaf index (sequence − 1).
    pub leaf_index: u64,
    /// The size of the tree the proof is for.
    pub tree_size: u64,
    /// The audit path, leaf to root.
    pub hashes: Vec<Hash>,
    /// The root of that tree.
    pub root_hash: Hash,
}

impl InclusionProof {
    /// Checks that `leaf` (an entry's content hash) is in the tree this proof names. The root
    /// and size must themselves come from a tree head the verifier trusts.
    pub fn verify(&self, leaf: &Hash) -> Result<(), InclusionError> {
        let root = RootHash { size: TreeSize(self.tree_size), hash: self.root_hash };
        verify_inclusion(leaf, LeafIndex(self.leaf_index), &root, &self.hashes)
    }
}

/// A consistency proof (CONTRACT §1 `ConsistencyProof`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The older size.
    pub from_size: u64,
    /// The newer size.
    pub to_size: u64,
    /// The proof.
    pub hashes: Vec<Hash>,
    /// The root at the older size.
    pub from_root: Hash,
    /// The root at the newer size.
    pub to_root: Hash,
}

impl ConsistencyProof {
    /// Checks that the older tree is a prefix of the newer one.
    pub fn verify(&self) -> Result<(), ConsistencyError> {
        verify_consistency(
            &RootHash { size: TreeSize(self.from_size), hash: self.from_root },
            &RootHash { size: TreeSize(self.to_size), hash: self.to_root },
            &self.hashes,
        )
    }
}
