//! The RFC 6962 Merkle tree of a context, storage-agnostic.
//!
//! - [`node`]: coordinates ([`LeafIndex`], [`TreeSize`], [`NodeId`]) and [`RootHash`].
//! - [`compact`]: [`CompactTree`], the incremental tree that keeps only its frontier.
//! - [`proof`]: which stored nodes a proof needs, and assembling it from their hashes.
//! - [`verify`]: RFC 9162 §2.1.3.2 / §2.1.4.2 verification.
//!
//! Leaf hashes are entry content hashes; interior nodes are `SHA-256(0x01 ‖ left ‖ right)`.

pub mod compact;
pub mod node;
pub mod proof;
pub mod verify;

pub use compact::{CompactTree, FrontierError, TreeFull, root_of_leaves};
pub use node::{LeafIndex, NodeId, RootHash, TreeSize, fold_range, range_nodes};
pub use proof::{
    ConsistencyProofError, InclusionProofError, NodeCountMismatch, ProofNodes, consistency_nodes,
    inclusion_nodes,
};
pub use verify::{ConsistencyError, InclusionError, verify_consistency, verify_inclusion};
