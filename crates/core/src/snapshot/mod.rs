//! The snapshot blob: a whole context as one self-describing, versioned, verifiable byte string.
//!
//! # Layout, format version 1
//!
//! All integers are big-endian; `bytes(x)` is a u32 length followed by the bytes.
//!
//! ```text
//! offset  size   field
//! 0       8      magic            89 43 56 4C 53 4E 50 0A  ("\x89CVLSNP\n")
//! 8       4      u32 version      1
//! 12      4+c    bytes(context_id)              UTF-8, valid per CONTRACT §2
//! …       8      u64 entry_count  n
//! …       8      u64 tree_size    the tree head's size; equals n
//! …       32     root_hash        the tree head's root: MTH of the n content hashes
//! …              n entries, in sequence order, each:
//!                  u64 sequence          1, 2, …, n
//!                  u64 appended_at_ns
//!                  u64 lamport_clock
//!                  bytes(key)
//!                  bytes(payload)
//!                  u32 n_metadata, then n_metadata × (bytes(k) ‖ bytes(v)), keys ascending
//!                  32  content_hash     CONTRACT §3, for context_id
//! end−4   4      u32 checksum     CRC-32C (Castagnoli) of every byte before it
//! ```
//!
//! The leading `0x89` catches 7-bit transports and the trailing `\n` of the magic catches
//! line-ending conversion, as in PNG. The checksum covers every byte, so any changed, missing or
//! extra byte is refused before anything else is trusted; the content hashes and the root then
//! prove the entries are exactly what the ledger recorded.
//!
//! # Decoding is total
//!
//! [`decode`] returns a [`VerifiedSnapshot`] or a [`SnapshotError`] for any input, never
//! panics, and allocates in proportion to the input: a claimed entry count is checked against
//! the bytes that could hold that many entries before anything is reserved.
//!
//! Format version 1 is the only version; `tests/fixtures/snapshot-v1.bin` pins it, and every
//! later version of the ledger must keep loading that file.

mod decode;
mod encode;

use crate::entry::{ContentHashMismatch, Entry};
use crate::head::{ApplyError, ContextHead, TreeHead};
use crate::merkle::{RootHash, TreeSize};
use crate::seq::Seq;
use crate::validate::{ContextId, ValidationError};

pub use decode::{decode, decode_with};
pub use encode::{SnapshotEncoder, encode};

/// The eight bytes every snapshot starts with.
pub const MAGIC: [u8; 8] = *b"\x89CVLSNP\n";

/// The format version this code writes, and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Magic, version, empty context id, count, size, root, checksum: the smallest header.
const HEADER_BYTES_MIN: usize = 8 + 4 + 4 + 8 + 8 + 32;

/// Bytes of the trailing checksum.
const CHECKSUM_BYTES: usize = 4;

/// The fewest bytes one entry can take: three u64s, a one-byte key, an empty payload, no
/// metadata, the content hash. A claimed entry count is bounded by `remaining / this`.
const ENTRY_BYTES_MIN: usize = 3 * 8 + (4 + 1) + 4 + 4 + 32;

/// A snapshot whose every entry, content hash and root has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSnapshot {
    context: ContextId,
    entries: Vec<Entry>,
    head: ContextHead,
}

impl VerifiedSnapshot {
    /// Builds the head over `entries`, checking each against the one before.
    fn from_entries(context: ContextId, entries: Vec<Entry>) -> Result<Self, SnapshotError> {
        let mut head = ContextHead::new();
        for entry in &entries {
            head.apply(entry, |_, _| {}).map_err(SnapshotError::Order)?;
        }
        Ok(Self { context, entries, head })
    }

    /// The context the entries were hashed for.
    pub fn context(&self) -> &ContextId {
        &self.context
    }

    /// The entries, sequences `1..=n`.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Unwraps the entries.
    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }

    /// The head after the last entry.
    pub fn head(&self) -> &ContextHead {
        &self.head
    }

    /// The tree head: size, root and latest Lamport time.
    pub fn tree_head(&self) -> TreeHead {
        self.head.tree_head()
    }

    /// The same entries for another context: every field is kept, and the content hashes and
    /// root are recomputed, because the context id is part of each hash (CONTRACT §2 Load).
    #[must_use]
    pub fn rehash_for(self, context: ContextId) -> Self {
        self.rehash_for_with(context, |entries, rehash| rehash(entries))
    }

    /// [`rehash_for`](Self::rehash_for), letting the caller split the work: `run` receives the
    /// entries and a function that rehashes any slice of them in place, and must call it on
    /// every entry exactly once (a shell can hand halves to two threads; the core spawns none).
    #[must_use]
    pub fn rehash_for_with(
        self,
        context: ContextId,
        run: impl FnOnce(&mut [Entry], &(dyn Fn(&mut [Entry]) + Sync)),
    ) -> Self {
        if context == self.context {
            return self;
        }
        let mut entries = self.entries;
        let rehash = |slice: &mut [Entry]| {
            for entry in slice {
                entry.reseal(&context);
            }
        };
        run(&mut entries, &rehash);
        let mut head = ContextHead::new();
        for entry in &entries {
            // Rehashing changes no field that `apply` checks, so the order still holds.
            head.apply(entry, |_, _| {}).expect("rehashed entries keep their order");
        }
        Self { context, entries, head }
    }
}

/// Why a snapshot blob was refused. Each message says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Too short to hold even an empty snapshot.
    #[error("snapshot is {len} bytes, too short to be a snapshot (at least {min} bytes)")]
    TooShort {
        /// Its length.
        len: usize,
        /// The smallest possible snapshot.
        min: usize,
    },
    /// The first eight bytes are not the snapshot magic.
    #[error("not a Converge Ledger snapshot (wrong magic bytes)")]
    BadMagic,
    /// A format version this code does not read.
    #[error(
        "snapshot format version {found} is not supported (this ledger reads version {supported})"
    )]
    UnsupportedVersion {
        /// The blob's version.
        found: u32,
        /// The version this code reads.
        supported: u32,
    },
    /// The trailing checksum does not match: some byte was changed, lost or added.
    #[error(
        "snapshot checksum mismatch (stored {stored:08x}, computed {computed:08x}): the blob is damaged or truncated"
    )]
    ChecksumMismatch {
        /// The checksum in the blob.
        stored: u32,
        /// The checksum of its bytes.
        computed: u32,
    },
    /// The bytes end, or a length points, where a field should be.
    #[error("snapshot is malformed at byte {offset}: {what}")]
    Malformed {
        /// Where decoding stopped.
        offset: usize,
        /// What was expected there.
        what: &'static str,
    },
    /// More entries claimed than the blob's bytes could hold.
    #[error(
        "snapshot claims {claimed} entries but its {bytes} remaining bytes hold at most {possible}"
    )]
    EntryCount {
        /// The claimed count.
        claimed: u64,
        /// Bytes left for entries.
        bytes: usize,
        /// The most entries that fit.
        possible: usize,
    },
    /// The context id is invalid.
    #[error("snapshot context_id is invalid: {0}")]
    Context(ValidationError),
    /// An entry field breaks a rule of CONTRACT §2.
    #[error("snapshot entry {sequence} is invalid: {source}")]
    Field {
        /// The entry's sequence.
        sequence: Seq,
        /// What is wrong.
        source: ValidationError,
    },
    /// An entry's payload is larger than this ledger accepts.
    #[error(
        "snapshot entry {sequence} has a {len}-byte payload; this ledger's limit is {max} bytes"
    )]
    PayloadTooLarge {
        /// The entry's sequence.
        sequence: Seq,
        /// The payload length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// Entries out of order: a gap in sequences, or time or clock not increasing.
    #[error("snapshot entries are out of order: {0}")]
    Order(ApplyError),
    /// An entry's content hash does not match its fields.
    #[error("snapshot {0}")]
    ContentHash(ContentHashMismatch),
    /// The header's tree size is not the number of entries.
    #[error("snapshot tree head says {tree_size} entries but it holds {entries}")]
    TreeSize {
        /// The header's size.
        tree_size: TreeSize,
        /// Entries present.
        entries: u64,
    },
    /// The entries do not hash to the header's root.
    #[error("snapshot root mismatch: the header says {stored} but the entries hash to {computed}")]
    RootMismatch {
        /// The header's root.
        stored: RootHash,
        /// The root of the entries.
        computed: RootHash,
    },
    /// Bytes left over after the last entry.
    #[error("snapshot has {count} unexpected bytes after the last entry, at byte {offset}")]
    TrailingBytes {
        /// Where they start.
        offset: usize,
        /// How many.
        count: usize,
    },
}
