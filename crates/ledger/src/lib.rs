//! The embedded Converge Ledger: what an engine links to keep its contexts in-process.
//!
//! What it is: [`Ledger::open`] gives a ledger with the five operations of CONTRACT §2
//! (`append`, `get`, `snapshot`, `load`, `watch`) and the integrity queries (`tree_head`,
//! `prove_inclusion`, `prove_consistency`), durable by default, through the
//! [`converge_api::LedgerApi`] trait the remote client implements too. The gRPC server is a
//! thin shell over it, so everything a user depends on is decided here.
//!
//! What it is not: it speaks no network protocol and reads no configuration files. It takes
//! the wall-clock time once per append (through [`Clock`]) and leaves every rule to the core.
//!
//! Main modules:
//! - `ledger`: opening, closing, and the operations.
//! - `append`, `read`, `load`: the operations' logic over storage.
//! - `watch`: the per-context live feed and the gap-free watch stream.
//! - `errors`: every error mapped to the API's kinds in one place.
#![deny(clippy::unwrap_used)]

mod admission;
mod append;
mod catch_up;
mod config;
mod errors;
mod ledger;
mod load;
mod read;
mod request;
mod run;
mod watch;

pub use admission::{Admission, Admitted};
pub use append::check as check_append;
pub use config::{
    APPEND_BYTES_IN_FLIGHT_MAX_DEFAULT, Clock, LedgerConfig, SystemClock,
    WATCH_BUFFER_ENTRIES_DEFAULT, WATCHERS_MAX_DEFAULT,
};
pub use converge_api::{
    AppendRequest, ConsistencyProof, ContextInfo, GetRequest, GetResponse, InclusionProof,
    LedgerApi, LedgerError, ListContextsRequest, ListContextsResponse, LoadRequest, LoadResponse,
    SnapshotResponse, TreeHead, WatchRequest, WatchStream,
};
pub use converge_storage::store::{
    CONTEXT_RESIDENT_BYTES, MEMORY_BUDGET_DEFAULT, SYNC_INTERVAL_DEFAULT,
};
pub use converge_storage::{Durability, StorageMode, StoreConfig};
pub use ledger::{AppendWaits, Ledger};
pub use load::check as check_load;
pub use watch::WATCH_WINDOW_BYTES_MAX;
