//! Replicated contexts (CONTRACT §5): each shard of contexts is one Raft group, run by
//! openraft, with this node's ledger as its state machine. The only crate that names openraft.
//!
//! - [`types`]: openraft's type configuration and the context-to-shard mapping.
//! - `node_log`: the node's one Raft log on disk, every shard's entries and votes in it.
//! - [`log_store`]: one shard's part of it, as openraft's log storage.
//! - [`state_machine`]: applying committed commands to the ledger, deterministically.
//! - `propose`: proposing on a shard's leader; appends proposed together ride one entry.
//! - [`spread`]: shard leaders spread over the nodes.
//! - [`network`] and `peer`: the internal gRPC service between nodes, both ends.
//! - [`Cluster`]: a node's shards, started, joined, serving the same [`LedgerApi`] as the
//!   embedded ledger (writes through Raft, forwarded to the leader; reads from applied state).
//!
//! What it is not: storage and the ledger know nothing of Raft; this crate decides nothing
//! about entries either (the ledger's rules apply on every replica alike).
//!
//! [`LedgerApi`]: converge_api::LedgerApi

#![allow(
    clippy::result_large_err,
    reason = "openraft's StorageError is what its storage traits return; our helpers return it as is"
)]

mod api;
mod floor;
mod forward;
pub mod limits;
pub mod log_store;
mod metrics;
pub mod network;
mod node;
mod node_log;
mod peer;
mod propose;
pub mod spread;
mod stand;
pub mod state_machine;
pub mod types;
mod wire;

pub use network::PeerTls;
pub use node::{Cluster, ClusterConfig, ClusterError, Start, Timing, ledger_storage, node_id};
pub use types::{NodeId, node_name, shard_of};
