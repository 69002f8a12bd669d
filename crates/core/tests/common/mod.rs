//! Helpers shared by the integration tests: hex, the vector files, a reference tree.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod entries;
pub mod reference;
pub mod vectors;

use std::collections::HashMap;

use converge_core::hash::{Hash, leaf_hash};
use converge_core::merkle::{CompactTree, NodeId, ProofNodes};

/// Bytes from hex text; panics on bad test data.
pub fn unhex(text: &str) -> Vec<u8> {
    converge_core::hex::decode(text).expect("test data is hex")
}

/// A hash from hex text, or `None` if it is not 32 bytes (a strict verifier rejects it).
pub fn hash(text: &str) -> Option<Hash> {
    Hash::try_from_slice(&unhex(text)).ok()
}

/// Leaf hashes `leaf_hash(i as 8 big-endian bytes)` for `i < n`.
pub fn leaves(n: usize) -> Vec<Hash> {
    (0..n as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

/// What storage would hold: the tree's frontier plus every completed node.
pub struct StoredTree {
    pub tree: CompactTree,
    pub nodes: HashMap<NodeId, Hash>,
}

impl StoredTree {
    pub fn new(leaves: &[Hash]) -> Self {
        let mut tree = CompactTree::new();
        let mut nodes = HashMap::new();
        for leaf in leaves {
            tree.append(*leaf, |id, h| {
                assert!(nodes.insert(id, h).is_none(), "node {id:?} completed twice");
            })
            .unwrap();
        }
        Self { tree, nodes }
    }

    /// Fetches a plan's nodes and assembles the proof, as the ledger does.
    pub fn assemble(&self, plan: &ProofNodes) -> Vec<Hash> {
        let hashes: Vec<Hash> = plan.ids().iter().map(|id| self.nodes[id]).collect();
        plan.assemble(&hashes).unwrap()
    }
}
