//! Writing snapshot blobs (layout in the module above).

use crate::entry::Entry;
use crate::merkle::{RootHash, root_of_leaves};
use crate::validate::ContextId;

use super::{FORMAT_VERSION, MAGIC};

/// Writes a snapshot one entry at a time, so a large context is never held twice.
#[derive(Debug)]
pub struct SnapshotEncoder {
    out: Vec<u8>,
    expected: u64,
    written: u64,
}

/// The encoder was given a different number of entries than its tree head promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the snapshot's tree head has {expected} entries but {written} were written")]
pub struct EntryCountMismatch {
    /// Entries promised by the tree head.
    pub expected: u64,
    /// Entries written.
    pub written: u64,
}

impl SnapshotEncoder {
    /// Starts a snapshot of `context` whose tree head is `root`; exactly `root.size` entries
    /// must follow. `capacity_hint` pre-sizes the buffer.
    pub fn new(context: &ContextId, root: RootHash, capacity_hint: usize) -> Self {
        let mut out = Vec::with_capacity(capacity_hint);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        put_bytes(&mut out, context.as_str().as_bytes());
        out.extend_from_slice(&root.size.0.to_be_bytes());
        out.extend_from_slice(&root.size.0.to_be_bytes());
        out.extend_from_slice(root.hash.as_bytes());
        Self { out, expected: root.size.0, written: 0 }
    }

    /// Appends the next entry; entries must come in sequence order.
    pub fn push(&mut self, entry: &Entry) {
        let parts = entry.parts();
        let out = &mut self.out;
        out.extend_from_slice(&parts.sequence.0.to_be_bytes());
        out.extend_from_slice(&parts.appended_at.0.to_be_bytes());
        out.extend_from_slice(&parts.lamport.0.to_be_bytes());
        put_bytes(out, parts.key.as_str().as_bytes());
        put_bytes(out, &parts.payload);
        put_u32(out, parts.metadata.len());
        for (k, v) in parts.metadata.iter() {
            put_bytes(out, k.as_bytes());
            put_bytes(out, v.as_bytes());
        }
        out.extend_from_slice(entry.content_hash().as_bytes());
        self.written += 1;
    }

    /// Bytes written so far (to enforce a response size limit while encoding).
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Whether nothing has been written (never: the header is written at once).
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Appends the checksum and returns the blob.
    pub fn finish(mut self) -> Result<Vec<u8>, EntryCountMismatch> {
        if self.written != self.expected {
            return Err(EntryCountMismatch { expected: self.expected, written: self.written });
        }
        let checksum = crc32c::crc32c(&self.out);
        self.out.extend_from_slice(&checksum.to_be_bytes());
        Ok(self.out)
    }
}

/// The snapshot of `context` holding `entries` (sequences `1..=n`, in order).
pub fn encode(context: &ContextId, entries: &[Entry]) -> Vec<u8> {
    let hashes: Vec<_> = entries.iter().map(Entry::content_hash).collect();
    let root = RootHash {
        size: crate::merkle::TreeSize(entries.len() as u64),
        hash: root_of_leaves(&hashes),
    };
    let size: usize = entries.iter().map(|e| e.payload().len() + 128).sum();
    let mut encoder = SnapshotEncoder::new(context, root, size + 128);
    for entry in entries {
        encoder.push(entry);
    }
    encoder.finish().expect("one entry pushed per leaf")
}

fn put_u32(out: &mut Vec<u8>, value: usize) {
    // Every length written here is bounded by a type or a limit far below 4 GiB.
    let value = u32::try_from(value).expect("snapshot fields are shorter than 4 GiB");
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}
