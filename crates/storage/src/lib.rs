//! Where Converge Ledger entries live.
//!
//! What it is: a segmented append-only log shared by all contexts (the data path, with group
//! commit), an index in fjall for what is looked up (positions, keys, Merkle nodes, heads),
//! recovery that replays only the log after the index's last checkpoint, and a memory mode with
//! the same behaviour and no files.
//!
//! What it is not: it knows nothing of gRPC, async runtimes or watchers. Completions are
//! callbacks; the embedded ledger turns them into futures and streams.
#![deny(clippy::unwrap_used)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "storage requires a 64-bit target (checked below), so u64 offsets and lengths fit usize; narrowing to u32 and smaller is bounded by the record, segment and key limits each site names"
)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("converge-storage requires a 64-bit target: segment offsets and lengths are u64");

mod arena;
pub mod context;
mod dirty;
pub mod durability;
pub mod error;
pub mod fault;
pub mod index;
pub mod listing;
pub mod log;
pub mod node;
pub mod record;
pub mod store;
pub mod vfs;

pub use context::{Appended, Completion, Context, Listener, NewEntry, ReadQuery, ReadResult};
pub use durability::Durability;
pub use error::{Error, Result};
pub use listing::{ContextPage, ContextSummary};
pub use store::{OpenReport, StorageMode, Store, StoreConfig, StoreStats};
