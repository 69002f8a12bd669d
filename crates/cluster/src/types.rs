//! The types openraft is instantiated with, and the shard a context belongs to.

use std::io::Cursor;

use converge_proto::cluster as pb;
use sha2::{Digest as _, Sha256};

openraft::declare_raft_types!(
    /// Converge's Raft: commands are appends and loads, node ids are the first eight bytes of
    /// each node's random identity, nodes are known by their advertised address.
    pub TypeConfig:
        D = pb::Command,
        R = pb::Outcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node's id in the cluster.
pub type NodeId = u64;
/// A Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// One shard's Raft.
pub type Raft = openraft::Raft<TypeConfig>;
/// Storage errors as openraft wants them.
pub type StorageError = openraft::StorageError<NodeId>;

/// The shard of `context_id` among `shards` (CONTRACT §5): the first eight bytes of
/// SHA-256(context id), big-endian, modulo the shard count.
pub fn shard_of(context_id: &str, shards: u32) -> u32 {
    let digest = Sha256::digest(context_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let shard = u64::from_be_bytes(first) % u64::from(shards.max(1));
    u32::try_from(shard).expect("a remainder modulo a u32 fits a u32")
}

/// A node id as status output and logs print it: sixteen hex digits.
pub fn node_name(id: NodeId) -> String {
    format!("{id:016x}")
}

/// The item of `shard` in a per-shard list (the node's Rafts, batchers, gates).
pub(crate) fn of_shard<T>(shard: u32, items: &[T]) -> Result<&T, tonic::Status> {
    usize::try_from(shard).ok().and_then(|s| items.get(s)).ok_or_else(|| {
        tonic::Status::invalid_argument(format!(
            "shard {shard} does not exist (the cluster has {})",
            items.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_follow_the_contract() {
        // SHA-256("a") = ca978112ca1bbdca…; 0xca978112ca1bbdca mod 8 = 2.
        assert_eq!(shard_of("a", 8), 2);
        assert_eq!(shard_of("a", 1), 0);
        let spread: std::collections::BTreeSet<u32> =
            (0..200).map(|i| shard_of(&format!("ctx-{i}"), 8)).collect();
        assert_eq!(spread.len(), 8, "200 contexts land on every one of 8 shards");
    }
}
