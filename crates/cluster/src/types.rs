//! The types openraft is instantiated with, and the shard a context belongs to (the core's
//! [`shard_of`]).

use std::io::Cursor;

use converge_proto::cluster as pb;

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

pub use converge_core::shard_of;

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
