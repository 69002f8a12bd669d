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

mod arena;
pub mod context;
pub mod durability;
pub mod error;
pub mod fault;
pub mod index;
pub mod log;
pub mod node;
pub mod record;
pub mod store;

pub use durability::Durability;
pub use context::{Appended, Completion, Context, Listener, NewEntry, ReadQuery, ReadResult};
pub use error::{Error, Result};
pub use store::{OpenReport, StorageMode, Store, StoreConfig, StoreStats};
