//! What is looked up: per context, where each entry is, its content hash, which entries have
//! a given key, which append ids were recorded, and the Merkle nodes proofs are built from.
//!
//! Two tiers. [`recent::Recent`] holds, in memory, a context's entries since its last
//! checkpoint (in memory mode, all of them); `cold::Cold` holds everything before, in fjall.
//! A checkpoint moves recent data into fjall in one atomic, fsynced batch together with the
//! log watermark it covers, then trims the recent tier. Appends never touch fjall, so the index
//! costs the data path nothing but a few vector pushes; reopening replays only the log after
//! the watermark.
//!
//! Merkle nodes are stored from level [`STORED_LEVEL_MIN`] up. A node below that level covers
//! at most `2^(STORED_LEVEL_MIN − 1)` leaves and is recomputed from their content hashes (one
//! range read and at most 7 node hashes), which keeps stored nodes to one per eight entries.

pub(crate) mod cold;
pub(crate) mod recent;

use converge_core::{ContextId, Sequencer};

/// The lowest Merkle level whose nodes are stored; lower ones are recomputed from leaves.
pub const STORED_LEVEL_MIN: u8 = 4;

/// Items per row of a run in the cold index.
pub(crate) const RUN_ITEMS_MAX: usize = 256;

/// What a checkpoint writes for one context.
#[derive(Debug, Clone)]
pub(crate) struct ContextCheckpoint {
    pub(crate) number: u64,
    pub(crate) id: ContextId,
    /// Whether an earlier checkpoint already wrote the context's id and number.
    pub(crate) named: bool,
    /// The durable head at the snapshot.
    pub(crate) head: Sequencer,
    /// The entries since the previous checkpoint, up to the head.
    pub(crate) recent: recent::Recent,
}
