//! The pure core of Converge Ledger.
//!
//! What it is: the rules every other part of the ledger stands on, as plain functions and
//! types — entries and their content hashes (CONTRACT §3), the RFC 6962 Merkle tree with its
//! proofs, Lamport clocks, the limits and validation of CONTRACT §2, the append rules of a
//! context's head, and the snapshot blob codec.
//!
//! What it is not: it does no IO, spawns nothing, never reads a clock and never blocks. Its
//! dependencies (`sha2`, `crc32c`, `bytes`, `thiserror`) are the proof. Time, storage and
//! networking are the shell's business; the shell passes `now` in and persists what the core
//! returns.
//!
//! Main modules:
//! - [`entry`]: [`Entry`], canonical leaf input, content hash, id.
//! - [`merkle`]: the incremental tree, proof plans over stored nodes, RFC 9162 verification.
//! - [`head`]: [`ContextHead`], the next sequence, time and Lamport time of a context.
//! - [`lamport`]: Lamport clocks ([`LamportClock`]).
//! - [`validate`] and [`limits`]: checked names and the bounds of CONTRACT §2.
//! - [`snapshot`]: the versioned snapshot blob, encoded and verified.
//! - [`shard`]: the shard of a context in a cluster.
//! - [`codec`]: the bounds-checked cursor every binary decoder reads untrusted bytes with.
#![deny(clippy::unwrap_used)]

pub mod codec;
pub mod entry;
pub mod hash;
pub mod head;
pub mod hex;
pub mod lamport;
pub mod limits;
pub mod merkle;
pub mod seq;
pub mod shard;
pub mod snapshot;
pub mod validate;

pub use entry::{Entry, EntryId, EntryParts, PartialContentHash};
pub use hash::{EMPTY_ROOT, HASH_BYTES, Hash};
pub use head::{ContextHead, Sequencer, Stamp, TreeHead};
pub use lamport::{LamportClock, LamportTime};
pub use limits::Limits;
pub use merkle::{LeafIndex, NodeId, RootHash, TreeSize};
pub use seq::{Seq, Timestamp};
pub use shard::shard_of;
pub use validate::{AppendId, ContextId, Key, Metadata, ValidationError};
